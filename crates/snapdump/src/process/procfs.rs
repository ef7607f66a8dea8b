//! Parsers for the `/proc/PID` files the engine reads.
//!
//! They work on bytes, not strings: a process name may hold `)` or spaces, a mapped file's path
//! may be any bytes but NUL (newlines come escaped as `\012`), and one odd name must never make
//! a dump fail. Each parser is a pure function, tested below on hostile input.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The fields of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) the engine uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The name between the parentheses, as bytes (it may contain `)` and spaces).
    pub comm: Vec<u8>,
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// The kernel's task flags (`PF_*`); `PF_KTHREAD` marks kernel threads.
    pub flags: u64,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    pub nice: i64,
    pub num_threads: i64,
    pub starttime: u64,
    /// Where the argument strings (`argv[0]\0argv[1]\0…`) and the environment strings sit in
    /// the process's memory, at the top of the main thread's stack (fields 48–51, Linux 3.5+);
    /// 0 when the kernel withholds or lacks them.
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// `PF_KTHREAD` from include/linux/sched.h.
pub const PF_KTHREAD: u64 = 0x0020_0000;
/// `PF_EXITING` from include/linux/sched.h: the thread is in `do_exit`.
pub const PF_EXITING: u64 = 0x0000_0004;

/// Parse `/proc/PID/stat`. The name is everything between the first `(` and the *last* `)`.
pub fn parse_stat(bytes: &[u8]) -> Option<Stat> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = std::str::from_utf8(&bytes[..open])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = bytes[open + 1..close].to_vec();
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 of proc(5) (state); field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    let num = |n: usize| field(n).and_then(|f| f.parse::<i64>().ok());
    let address = |n: usize| field(n).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Some(Stat {
        pid,
        comm,
        state: *field(3)?.as_bytes().first()?,
        ppid: num(4)? as i32,
        pgrp: num(5)? as i32,
        session: num(6)? as i32,
        flags: field(9)?.parse().ok()?,
        utime: num(14)? as u64,
        stime: num(15)? as u64,
        cutime: num(16)? as u64,
        cstime: num(17)? as u64,
        nice: num(19)?,
        num_threads: num(20)?,
        starttime: num(22)? as u64,
        arg_start: address(48),
        arg_end: address(49),
        env_start: address(50),
        env_end: address(51),
    })
}

/// The fields of `/proc/PID/status` the engine uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub name: Vec<u8>,
    pub tracer_pid: i32,
    /// The thread group (process) id; differs from the pid for a thread's status file.
    pub tgid: i32,
    pub uid: u32,
    pub gid: u32,
    pub sig_pending: u64,
    pub sig_blocked: u64,
    /// `NSpid`: this pid as seen in each nested pid namespace, outermost first.
    pub ns_pids: Vec<i32>,
}

/// Parse `/proc/PID/status`. Unknown and malformed lines are skipped.
pub fn parse_status(bytes: &[u8]) -> Status {
    let mut status = Status::default();
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let key = &line[..colon];
        let value = &line[colon + 1..];
        let text = String::from_utf8_lossy(value);
        let text = text.trim();
        let first = text.split_ascii_whitespace().next().unwrap_or("");
        match key {
            // The name is escaped by the kernel; keep its bytes apart from the leading tab.
            b"Name" => status.name = trim_ascii(value).to_vec(),
            b"TracerPid" => status.tracer_pid = first.parse().unwrap_or(0),
            b"Tgid" => status.tgid = first.parse().unwrap_or(0),
            b"Uid" => status.uid = first.parse().unwrap_or(0),
            b"Gid" => status.gid = first.parse().unwrap_or(0),
            b"SigPnd" => status.sig_pending = u64::from_str_radix(first, 16).unwrap_or(0),
            b"SigBlk" => status.sig_blocked = u64::from_str_radix(first, 16).unwrap_or(0),
            b"NSpid" => {
                status.ns_pids = text
                    .split_ascii_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            }
            _ => {}
        }
    }
    status
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

/// Permissions of a mapping, from the `rwxp`/`rwxs` column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
}

/// What backs a mapping, from the last column of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    Anonymous,
    Heap,
    /// The main thread's stack (`[stack]`).
    Stack,
    Vdso,
    Vvar,
    Vsyscall,
    /// A file; `deleted` when the kernel appended ` (deleted)`.
    File {
        path: PathBuf,
        deleted: bool,
    },
    /// Any other pseudo name (`[anon:...]`, `[uprobes]`, ...).
    Other(OsString),
}

/// The `VmFlags` of `/proc/PID/smaps` the engine acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmFlags {
    /// `sh`: shared mapping.
    pub shared: bool,
    /// `io`: memory-mapped I/O; never read.
    pub io: bool,
    /// `dd`: MADV_DONTDUMP.
    pub dont_dump: bool,
    /// `dc`: MADV_DONTFORK; a fork child does not see it.
    pub dont_fork: bool,
    /// `wf`: MADV_WIPEONFORK; a fork child sees zeros.
    pub wipe_on_fork: bool,
    /// `ht`: hugetlb.
    pub hugetlb: bool,
    /// `pf`: pure PFN range (VM_PFNMAP); never read.
    pub pfn_map: bool,
    /// `um`, `uw` or `ui`: registered with a userfaultfd (missing, write-protect or minor
    /// faults); a fork may wait for the userfaultfd's monitor.
    pub userfaultfd: bool,
}

impl VmFlags {
    fn parse(text: &[u8]) -> VmFlags {
        let mut flags = VmFlags::default();
        for word in text.split(|b| b.is_ascii_whitespace()) {
            match word {
                b"sh" => flags.shared = true,
                b"io" => flags.io = true,
                b"dd" => flags.dont_dump = true,
                b"dc" => flags.dont_fork = true,
                b"wf" => flags.wipe_on_fork = true,
                b"ht" => flags.hugetlb = true,
                b"pf" => flags.pfn_map = true,
                b"um" | b"uw" | b"ui" => flags.userfaultfd = true,
                _ => {}
            }
        }
        flags
    }
}

/// One line of `/proc/PID/maps`, with the `smaps` details when they were read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub backing: Backing,
    pub vm_flags: VmFlags,
    /// smaps `Anonymous`: bytes of private copies (written pages of file mappings included).
    pub anonymous_bytes: u64,
    /// smaps `Rss`.
    pub rss_bytes: u64,
    /// smaps `Swap`.
    pub swap_bytes: u64,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// A private read-write mapping of `backing` with no smaps details (for tests that build
    /// processes by hand).
    #[cfg(test)]
    pub(crate) fn private_rw(start: u64, end: u64, backing: Backing) -> Mapping {
        Mapping {
            start,
            end,
            perms: Perms {
                read: true,
                write: true,
                exec: false,
                shared: false,
            },
            offset: 0,
            dev_major: 0,
            dev_minor: 0,
            inode: 0,
            backing,
            vm_flags: VmFlags::default(),
            anonymous_bytes: 0,
            rss_bytes: 0,
            swap_bytes: 0,
        }
    }

    /// The mapped file's path, for file-backed mappings.
    pub fn file_path(&self) -> Option<&std::path::Path> {
        match &self.backing {
            Backing::File { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Parse `/proc/PID/maps` or `/proc/PID/smaps` (the extra smaps lines are folded into the
/// mapping they follow). Lines that do not parse are skipped rather than failing the dump.
pub fn parse_maps(bytes: &[u8]) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if let Some(mapping) = parse_maps_line(line) {
            maps.push(mapping);
            continue;
        }
        let Some(last) = maps.last_mut() else {
            continue;
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        let kb = || {
            String::from_utf8_lossy(value)
                .split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                .saturating_mul(1024)
        };
        match key {
            b"VmFlags" => last.vm_flags = VmFlags::parse(value),
            b"Anonymous" => last.anonymous_bytes = kb(),
            b"Rss" => last.rss_bytes = kb(),
            b"Swap" => last.swap_bytes = kb(),
            _ => {}
        }
    }
    maps
}

fn parse_maps_line(line: &[u8]) -> Option<Mapping> {
    let mut rest = line;
    let mut next_field = || -> Option<&[u8]> {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(field)
    };
    let range = std::str::from_utf8(next_field()?).ok()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start {
        return None;
    }
    let perms = next_field()?;
    if perms.len() != 4 {
        return None;
    }
    let perms = Perms {
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
    };
    let offset = u64::from_str_radix(std::str::from_utf8(next_field()?).ok()?, 16).ok()?;
    let dev = std::str::from_utf8(next_field()?).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let dev_major = u32::from_str_radix(major, 16).ok()?;
    let dev_minor = u32::from_str_radix(minor, 16).ok()?;
    let inode = std::str::from_utf8(next_field()?).ok()?.parse().ok()?;
    let name_start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let name = &rest[name_start..];
    Some(Mapping {
        start,
        end,
        perms,
        offset,
        dev_major,
        dev_minor,
        inode,
        backing: parse_backing(name, inode),
        vm_flags: VmFlags::default(),
        anonymous_bytes: 0,
        rss_bytes: 0,
        swap_bytes: 0,
    })
}

fn parse_backing(name: &[u8], inode: u64) -> Backing {
    match name {
        b"" => Backing::Anonymous,
        b"[heap]" => Backing::Heap,
        b"[stack]" => Backing::Stack,
        b"[vdso]" => Backing::Vdso,
        b"[vvar]" | b"[vvar_vclock]" => Backing::Vvar,
        b"[vsyscall]" => Backing::Vsyscall,
        _ if name.first() == Some(&b'/') || inode != 0 => {
            const DELETED: &[u8] = b" (deleted)";
            let (path, deleted) = match name.strip_suffix(DELETED) {
                Some(path) => (path, true),
                None => (name, false),
            };
            Backing::File {
                path: PathBuf::from(OsString::from_vec(unescape_newlines(path))),
                deleted,
            }
        }
        _ => Backing::Other(OsString::from_vec(name.to_vec())),
    }
}

/// The kernel writes a newline inside a path as `\012`; undo that.
fn unescape_newlines(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i..].starts_with(b"\\012") {
            out.push(b'\n');
            i += 4;
        } else {
            out.push(path[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_name_with_parens_and_spaces() {
        let line = b"42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 3 0 12345 1000 10";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.pid, 42);
        assert_eq!(stat.comm, b"a) b (c");
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.flags, 4194560);
        assert_eq!((stat.utime, stat.stime), (7, 3));
        assert_eq!(stat.nice, 0);
        assert_eq!(stat.num_threads, 3);
        assert_eq!(stat.starttime, 12345);
    }

    #[test]
    fn stat_argument_and_environment_addresses() {
        let line = b"9 (t) S 1 9 9 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 \
18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4 5 6 \
140737488346000 140737488346100 140737488346100 140737488347000 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.starttime, 5);
        assert_eq!(
            (stat.arg_start, stat.arg_end),
            (140737488346000, 140737488346100)
        );
        assert_eq!(
            (stat.env_start, stat.env_end),
            (140737488346100, 140737488347000)
        );
        // An older kernel's shorter line: no addresses, still parsed.
        let short = parse_stat(b"9 (t) S 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0").unwrap();
        assert_eq!((short.arg_start, short.env_end), (0, 0));
    }

    #[test]
    fn stat_name_with_newline_and_non_utf8() {
        let mut line = b"7 (x\n\xff)".to_vec();
        line.extend_from_slice(b" R 1 7 7 0 -1 2097152 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat.comm, b"x\n\xff");
        assert_eq!(stat.flags & PF_KTHREAD, PF_KTHREAD);
    }

    #[test]
    fn stat_truncated_is_none() {
        assert_eq!(parse_stat(b"12 (x) S 1 2"), None);
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b")("), None);
    }

    #[test]
    fn status_fields() {
        let text = b"Name:\tmy prog\nState:\tS (sleeping)\nTgid:\t900\nTracerPid:\t77\nUid:\t1000\t1000\t1000\t1000\nGid:\t50\t50\t50\t50\nNSpid:\t900\t1\nSigPnd:\t0000000000000100\nSigBlk:\tfffffffe7ffbfeff\n";
        let status = parse_status(text);
        assert_eq!(status.name, b"my prog");
        assert_eq!(status.tracer_pid, 77);
        assert_eq!(status.tgid, 900);
        assert_eq!((status.uid, status.gid), (1000, 50));
        assert_eq!(status.ns_pids, vec![900, 1]);
        assert_eq!(status.sig_pending, 0x100);
        assert_eq!(status.sig_blocked, 0xfffffffe7ffbfeff);
    }

    #[test]
    fn maps_paths_with_spaces_deleted_newlines_and_bytes() {
        let mut text = b"55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234                       /usr/bin/my prog\n".to_vec();
        text.extend_from_slice(
            b"7f0000000000-7f0000001000 rw-s 00001000 00:05 99   /tmp/a\\012b (deleted)\n",
        );
        text.extend_from_slice(
            b"7f0000002000-7f0000003000 r-xp 00000000 08:01 5 /opt/\xff\xfe.so\n",
        );
        text.extend_from_slice(
            b"7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n",
        );
        text.extend_from_slice(
            b"7ffd00100000-7ffd00101000 rw-p 00000000 00:00 0 [anon:my region]\n",
        );
        text.extend_from_slice(b"7ffd00200000-7ffd00201000 rw-p 00000000 00:00 0\n");
        let maps = parse_maps(&text);
        assert_eq!(maps.len(), 6);
        assert_eq!(
            maps[0].file_path().unwrap().to_str(),
            Some("/usr/bin/my prog")
        );
        assert_eq!(maps[0].start, 0x55d0c0a00000);
        assert_eq!(maps[0].len(), 0x2000);
        assert!(maps[1].perms.shared && maps[1].perms.write);
        assert_eq!(maps[1].offset, 0x1000);
        assert_eq!(
            maps[1].backing,
            Backing::File {
                path: PathBuf::from("/tmp/a\nb"),
                deleted: true
            }
        );
        assert_eq!(
            maps[2].file_path().unwrap().as_os_str().as_encoded_bytes(),
            b"/opt/\xff\xfe.so"
        );
        assert_eq!(maps[3].backing, Backing::Stack);
        assert!(matches!(maps[4].backing, Backing::Other(_)));
        assert_eq!(maps[5].backing, Backing::Anonymous);
    }

    #[test]
    fn smaps_details_fold_into_their_mapping() {
        let text = b"00400000-00401000 rw-p 00000000 08:01 7 /bin/x\nSize:                  4 kB\nRss:                   4 kB\nAnonymous:             4 kB\nSwap:                  0 kB\nVmFlags: rd wr mr mw me dd dc wf \n7f0000000000-7f0000001000 rw-s 00000000 00:01 3 /dev/zero (deleted)\nVmFlags: rd wr sh mr mw me ms io pf\n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].anonymous_bytes, 4096);
        assert_eq!(maps[0].rss_bytes, 4096);
        assert!(maps[0].vm_flags.dont_dump && maps[0].vm_flags.dont_fork);
        assert!(maps[0].vm_flags.wipe_on_fork && !maps[0].vm_flags.shared);
        assert!(maps[1].vm_flags.shared && maps[1].vm_flags.io && maps[1].vm_flags.pfn_map);
    }

    #[test]
    fn absurd_sizes_saturate() {
        // Found by the fuzzer: a kB value whose byte count overflows u64.
        let maps = parse_maps(b"1000-2000 rw-p 0 00:00 0\nRss: 99999999999999999 kB\n");
        assert_eq!(maps[0].rss_bytes, u64::MAX);
    }

    #[test]
    fn huge_maps_parse_whole() {
        let mut text = Vec::new();
        for i in 0..200_000u64 {
            let start = 0x1000_0000 + i * 0x2000;
            text.extend_from_slice(
                format!(
                    "{start:x}-{:x} rw-p 00000000 00:00 0\nVmFlags: rd wr\n",
                    start + 0x1000
                )
                .as_bytes(),
            );
        }
        let maps = parse_maps(&text);
        assert_eq!(maps.len(), 200_000);
        assert_eq!(maps[199_999].start, 0x1000_0000 + 199_999 * 0x2000);
    }

    #[test]
    fn maps_garbage_is_skipped_not_fatal() {
        let maps = parse_maps(
            b"zzzz\nVmFlags: dd\n1000-2000 rw-p 0 00:00 0\n\xff\xff\n1-\n3000-2000 rw-p 0 00:00 0\n",
        );
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].start, 0x1000);
        assert!(!maps[0].vm_flags.dont_dump);
    }
}
