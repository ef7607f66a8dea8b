//! The syscall layer: every raw call into the kernel that the engine makes lives here, behind
//! small safe functions. This is the only module allowed to contain `unsafe`; everything above
//! it is safe Rust.
//!
//! The functions return `nix::Result` so callers can match on the errno (ESRCH means "the thread
//! is gone", EPERM "not allowed") and turn it into a user-facing error with context.

pub mod inject;
pub mod watch;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

pub use nix::errno::Errno;
pub use nix::sys::signal::Signal;
pub use nix::sys::wait::WaitStatus;
pub use nix::unistd::Pid;

use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, waitpid};

/// `NT_PRSTATUS`: the general-purpose registers (`user_regs_struct`, 216 bytes on x86_64).
pub const NT_PRSTATUS: u32 = 1;
/// `NT_PRFPREG`: the legacy FXSAVE area (512 bytes).
pub const NT_PRFPREG: u32 = 2;
/// `NT_X86_XSTATE`: the XSAVE area, as large as the CPU's enabled features need.
pub const NT_X86_XSTATE: u32 = 0x202;

/// Attach to one thread without stopping it and without queueing a SIGSTOP.
pub fn seize(tid: Pid, options: ptrace::Options) -> nix::Result<()> {
    ptrace::seize(tid, options)
}

/// Ask a seized thread to enter a ptrace stop (reported as `PTRACE_EVENT_STOP`).
pub fn interrupt(tid: Pid) -> nix::Result<()> {
    ptrace::interrupt(tid)
}

/// Let a thread go, delivering `signal` to it if it was stopped on its way to one.
pub fn detach(tid: Pid, signal: Option<Signal>) -> nix::Result<()> {
    ptrace::detach(tid, signal)
}

/// Wait for a state change of one traced thread (`__WALL`, so threads and processes alike).
pub fn wait_thread(tid: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Non-blocking form of [`wait_thread`]: `Ok(None)` when nothing has happened yet.
pub fn poll_thread(tid: Pid) -> nix::Result<Option<WaitStatus>> {
    match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG))? {
        WaitStatus::StillAlive => Ok(None),
        status => Ok(Some(status)),
    }
}

/// `PTRACE_GETREGSET` for one register set of a stopped thread. `max_len` is the buffer
/// offered; the kernel shortens it to the set's real size, which is what is returned.
pub fn get_regset(tid: Pid, note_type: u32, max_len: usize) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; max_len];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is live, writable and `max_len` bytes long for the
    // whole call; the kernel writes at most `iov_len` bytes and updates `iov_len`.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid.as_raw(),
            note_type as usize as *mut libc::c_void,
            &mut iov as *mut libc::iovec as *mut libc::c_void,
        )
    };
    Errno::result(ret)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Where one XSAVE state component sits in this CPU's *standard* (non-compacted) XSAVE format,
/// the format `PTRACE_GETREGSET(NT_X86_XSTATE)` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XsaveComponent {
    pub offset: usize,
    pub size: usize,
}

/// CPUID leaf 0xD, sub-leaf `n` for every XCR0 bit `n`: each user state component's offset and
/// size in the standard format (`None` for supervisor or unknown components). Read once. The
/// offsets differ between CPUs: with MPX (Intel) the AVX-512 state starts at 1088, without it
/// (AMD Zen 4) at 832.
pub fn xsave_components() -> &'static [Option<XsaveComponent>; 64] {
    static TABLE: std::sync::OnceLock<[Option<XsaveComponent>; 64]> = std::sync::OnceLock::new();
    TABLE.get_or_init(read_xsave_components)
}

#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)] // `__cpuid` is an `unsafe fn` before Rust 1.87 (our MSRV is 1.85)
fn read_xsave_components() -> [Option<XsaveComponent>; 64] {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let mut table = [None; 64];
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification registers; leaf 0
    // gives the highest leaf, so leaf 0xD is only asked for where it exists.
    if unsafe { __cpuid(0) }.eax < 0xd {
        return table;
    }
    // The first two components (x87, SSE) live in the fixed legacy area, not in a sub-leaf.
    for (n, slot) in table.iter_mut().enumerate().skip(2) {
        // SAFETY: as above; leaf 0xD exists (checked), and a sub-leaf for a component the CPU
        // does not have just reads as zeros.
        let r = unsafe { __cpuid_count(0xd, n as u32) };
        // EAX: size, EBX: offset in the standard format, ECX bit 0: supervisor component
        // (never in the user area, its EBX is 0).
        if r.eax != 0 && r.ecx & 1 == 0 {
            *slot = Some(XsaveComponent {
                offset: r.ebx as usize,
                size: r.eax as usize,
            });
        }
    }
    table
}

#[cfg(not(target_arch = "x86_64"))]
fn read_xsave_components() -> [Option<XsaveComponent>; 64] {
    [None; 64]
}

/// `PTRACE_SETREGSET`: write one register set back (used to restore a borrowed thread).
pub fn set_regset(tid: Pid, note_type: u32, data: &[u8]) -> nix::Result<()> {
    let mut copy = data.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr().cast(),
        iov_len: copy.len(),
    };
    // SAFETY: `iov` describes `copy`, live and readable for the whole call; the kernel only
    // reads from it.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid.as_raw(),
            note_type as usize as *mut libc::c_void,
            &mut iov as *mut libc::iovec as *mut libc::c_void,
        )
    };
    Errno::result(ret).map(drop)
}

/// `PTRACE_GETSIGINFO` as the raw 128-byte `siginfo_t` the ELF `NT_SIGINFO` note stores.
pub fn get_siginfo(tid: Pid) -> nix::Result<[u8; 128]> {
    let mut buf = [0u8; 128];
    // SAFETY: the kernel writes exactly sizeof(siginfo_t) == 128 bytes into `buf`, which is
    // 128 bytes long and live for the call.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            tid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            buf.as_mut_ptr() as *mut libc::c_void,
        )
    };
    Errno::result(ret)?;
    Ok(buf)
}

/// Read another process's memory with one `process_vm_readv` call. Returns the bytes read,
/// which may be short when a page in the range is not mapped or not readable.
pub fn read_process_memory(pid: Pid, addr: u64, buf: &mut [u8]) -> nix::Result<usize> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let mut local = [std::io::IoSliceMut::new(buf)];
    process_vm_readv(pid, &mut local, &remote)
}

/// Read another process's memory through its `/proc/PID/mem` file.
pub fn read_mem_file(mem: &File, addr: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    mem.read_at(buf, addr)
}

/// One run of pages with the same categories, as `PAGEMAP_SCAN` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRun {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// Page categories of the `PAGEMAP_SCAN` ioctl (include/uapi/linux/fs.h).
pub mod page_category {
    pub const WRITTEN: u64 = 1 << 1;
    pub const FILE: u64 = 1 << 2;
    pub const PRESENT: u64 = 1 << 3;
    pub const SWAPPED: u64 = 1 << 4;
    pub const PFNZERO: u64 = 1 << 5;
}

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;

/// List the runs of pages in `[start, end)` that have any of `anyof` categories, with the
/// `report` categories of each, using the `PAGEMAP_SCAN` ioctl on `/proc/PID/pagemap`
/// (Linux 6.7+). Fails with `ENOTTY`/`EINVAL` on kernels without it.
pub fn pagemap_scan(
    pagemap: &File,
    start: u64,
    end: u64,
    anyof: u64,
    report: u64,
) -> nix::Result<Vec<PageRun>> {
    const BATCH: usize = 512;
    let mut out = Vec::new();
    let mut regions = vec![PageRegion::default(); BATCH];
    let mut cursor = start;
    while cursor < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: cursor,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: BATCH as u64,
            category_anyof_mask: anyof,
            return_mask: report,
            ..Default::default()
        };
        // SAFETY: `arg` is a correctly sized pm_scan_arg; `vec` points at `regions`, which
        // holds `vec_len` writable page_region entries and outlives the call.
        let ret = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        let filled = Errno::result(ret)? as usize;
        out.extend(regions[..filled].iter().map(|r| PageRun {
            start: r.start,
            end: r.end,
            categories: r.categories,
        }));
        if arg.walk_end <= cursor {
            break;
        }
        cursor = arg.walk_end;
    }
    Ok(out)
}

/// The calling thread's own id.
pub fn gettid() -> Pid {
    nix::unistd::gettid()
}

/// Send a signal to a whole process.
pub fn kill(pid: Pid, signal: Signal) -> nix::Result<()> {
    nix::sys::signal::kill(pid, signal)
}

/// Free and total bytes of the filesystem holding `path`, as an unprivileged user sees them.
pub fn filesystem_space(path: &std::path::Path) -> nix::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    let block = stat.fragment_size();
    Ok((stat.blocks_available() * block, stat.blocks() * block))
}

/// Rename `from` to `to` unless `to` exists (`RENAME_NOREPLACE`), so a finished dump never
/// replaces a file that appeared meanwhile.
pub fn rename_no_replace(from: &std::path::Path, to: &std::path::Path) -> nix::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
}

/// Alignment of buffer address, file offset and length that `O_DIRECT` writes need here (the
/// largest logical block size in use; 512-byte devices accept it too).
pub const DIRECT_ALIGN: usize = 4096;

/// A second descriptor on `file` that writes with `O_DIRECT`: straight from the caller's pages
/// to the disk, with no copy into the page cache and no writeback to do later. Only where the
/// filesystem reports direct I/O (statx `STATX_DIOALIGN`, Linux 6.1+) with alignments that
/// [`DIRECT_ALIGN`] meets: on NFS, FUSE or overlayfs each direct write would wait for the
/// server or be emulated, slower than the page cache.
pub fn open_direct(file: &File) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let unsupported = || std::io::Error::from(std::io::ErrorKind::Unsupported);
    let (memory, offset) = direct_io_alignment(file).ok_or_else(unsupported)?;
    if memory as usize > DIRECT_ALIGN || offset as usize > DIRECT_ALIGN {
        return Err(unsupported());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// The alignments direct I/O on `file` needs, (buffer address, file offset), as statx's
/// `STATX_DIOALIGN` reports them; `None` where the filesystem does not report direct I/O.
pub fn direct_io_alignment(file: &File) -> Option<(u32, u32)> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx writes at most one `struct statx` into `stx`, which is that size; the empty
    // path with AT_EMPTY_PATH names the descriptor itself, owned by `file` for the call.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: zeroed, then filled by the kernel; every field is a plain integer.
    let stx = unsafe { stx.assume_init() };
    let reported = stx.stx_mask & libc::STATX_DIOALIGN != 0;
    (reported && stx.stx_dio_mem_align > 0 && stx.stx_dio_offset_align > 0)
        .then_some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
}

/// Start writing `[offset, offset + len)` of `file` to disk without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the final fsync finds little left to do.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> nix::Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is owned by
    // `file`, which outlives the call.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// Wait until `[offset, offset + len)` of `file` is on disk, then drop it from the page cache
/// (`posix_fadvise(DONTNEED)`): a dump must not push the host's useful cache out.
pub fn drop_written(file: &File, offset: u64, len: u64) -> nix::Result<()> {
    // SAFETY: as above: integers and a descriptor owned by `file`.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    nix::errno::Errno::result(rc)?;
    nix::fcntl::posix_fadvise(
        file,
        offset as libc::off_t,
        len as libc::off_t,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
}

/// Give an unnamed `O_TMPFILE` file the name `to`; fails with `EEXIST` if `to` exists.
pub fn link_unnamed_file(file: &File, to: &std::path::Path) -> nix::Result<()> {
    use nix::fcntl::{AT_FDCWD, AtFlags};
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    nix::unistd::linkat(
        AT_FDCWD,
        proc_path.as_str(),
        AT_FDCWD,
        to,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
}
