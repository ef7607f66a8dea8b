//! .NET support against a real runtime: Python hosting .NET Core 3.1 (the `dotnetcore2`
//! wheel, through pythonnet; `tests/dotnet/setup.sh` makes the environment, and runs here once
//! when it is missing). The host allocates 100000 managed strings "managed-string-N".
//!
//! .NET Core 3.1 answers `UnknownCommand` to ProcessInfo (a .NET 5 command) and to
//! GenerateCoreDump 2 and 3 (.NET 6 and 7): those answers, and the fallbacks they trigger, are
//! checked against the real runtime; the newer commands' payloads against a scripted server.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use snapdump::dotnet::ipc::{self, Message, hresult};
use snapdump::dotnet::{self, DotnetError, DumpType, InfoSource};
use snapdump::{DumpRequest, Mode, TargetSpec};
use snapdump_test_support::{find_subsequence, tools};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn dotnet_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dotnet")
}

/// The Python that hosts the runtime: `$SNAPDUMP_DOTNET_PYTHON`, or the one `setup.sh`
/// prints (it creates the environment the first time).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("SNAPDUMP_DOTNET_PYTHON") {
                return PathBuf::from(p);
            }
            let setup = dotnet_test_dir().join("setup.sh");
            let output = Command::new("bash")
                .arg(&setup)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", setup.display()));
            assert!(
                output.status.success(),
                "{} failed ({}): the .NET tests need Python with dotnetcore2 and pythonnet \
                 from PyPI",
                setup.display(),
                output.status
            );
            let text = String::from_utf8_lossy(&output.stdout);
            PathBuf::from(
                text.lines()
                    .last()
                    .expect("setup.sh prints the python")
                    .trim(),
            )
        })
        .clone()
}

/// A Python process hosting the .NET runtime; killed and reaped on drop.
struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The host's pid here (for a namespaced host: the Python process, not `unshare`).
    pid: i32,
    /// The pid the host sees for itself (differs in a pid namespace).
    own_pid: i32,
    /// Its diagnostics socket, which a killed runtime leaves behind.
    socket: Option<PathBuf>,
    runtime: String,
}

impl Host {
    fn spawn() -> Host {
        let mut command = Command::new(python());
        command.arg(dotnet_test_dir().join("host.py"));
        Host::start(command, false)
    }

    /// In its own mount and pid namespaces, as in a container, with `$TMPDIR` set to
    /// `private`, where it mounts its own tmpfs: its socket is visible only through
    /// `/proc/PID/root`.
    fn spawn_namespaced(private: &Path) -> Host {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--pid", "--fork", "--mount-proc", "--kill-child"])
            .args(["sh", "-c"])
            .arg("mount -t tmpfs snapdump-test \"$TMPDIR\" && exec \"$0\" \"$1\"")
            .arg(python())
            .arg(dotnet_test_dir().join("host.py"))
            .env("TMPDIR", private);
        Host::start(command, true)
    }

    fn start(mut command: Command, namespaced: bool) -> Host {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let mut stderr_pipe = child.stderr.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // createdump writes its progress to the target's output: keep both pipes drained.
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut host = Host {
            pid: child.id() as i32,
            own_pid: 0,
            socket: None,
            child,
            stdin: None,
            lines,
            stderr,
            runtime: String::new(),
        };
        host.stdin = host.child.stdin.take();
        let line = host.expect_line("READY ", READY_TIMEOUT);
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_owned()
        };
        host.runtime = field("runtime=");
        let own_pid: i32 = field("pid=").parse().expect("pid");
        host.own_pid = own_pid;
        if namespaced {
            host.pid = python_descendant(host.child.id() as i32)
                .unwrap_or_else(|| panic!("no python under unshare {}", host.child.id()));
            assert_ne!(
                host.pid, own_pid,
                "the host should see another pid for itself"
            );
        } else {
            assert_eq!(own_pid, host.pid);
            host.socket = dotnet::find_socket(host.pid).ok();
        }
        host
    }

    fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {prefix:?} line within {timeout:?}; stderr: {}",
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the host exited before {prefix:?} ({:?}); stderr: {}",
                    self.child.try_wait(),
                    self.stderr()
                ),
            }
        }
    }

    /// The host still runs and its runtime still works: a GC answers.
    fn assert_alive(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "gc").and_then(|_| stdin.flush()).unwrap();
        self.expect_line("GC", Duration::from_secs(30));
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The host's executable, for gdb.
    fn exe(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/exe", self.pid)).expect("host exe")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stdin = None;
        if self.pid != self.child.id() as i32 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// The first descendant of `pid` whose executable is a Python.
fn python_descendant(pid: i32) -> Option<i32> {
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            let exe = std::fs::read_link(format!("/proc/{child}/exe")).unwrap_or_default();
            if exe.to_string_lossy().contains("python") {
                return Some(child);
            }
            queue.push(child);
        }
    }
    None
}

/// A fresh folder for one test's dumps, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("snapdump-dotnet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn assert_gdb_opens(exe: &Path, core: &Path, pid: i32) {
    let out = tools::gdb(exe, core, &["info threads"]);
    assert!(
        out.contains(&format!("LWP {pid}")),
        "gdb does not show the main thread of {pid} in {}:\n{out}",
        core.display()
    );
}

fn request_for(pid: i32, dir: &Path) -> DumpRequest {
    let mut request = DumpRequest::new(TargetSpec::Pid(pid)).output(dir);
    // The test machine's disk may be small: keep the default reserve out of the way.
    request.min_free = Some(0);
    request
}

#[test]
fn detects_the_runtime_and_what_it_answers() {
    let host = Host::spawn();
    assert!(host.runtime.starts_with("3.1."), "{}", host.runtime);
    let found = dotnet::detect(host.pid).expect("the host is a .NET process");
    assert_eq!(found.pid, host.pid);
    let socket_name = found.socket.file_name().unwrap().to_string_lossy();
    assert!(
        socket_name.starts_with(&format!("dotnet-diagnostic-{}-", host.pid)),
        "{socket_name}"
    );
    assert_eq!(
        found.runtime_version.as_deref(),
        Some(host.runtime.as_str())
    );
    assert!(found.command_line.contains("host.py"), "{found:?}");
    assert!(found.coreclr.ends_with("libcoreclr.so"));
    if cfg!(target_arch = "x86_64") {
        assert_eq!(found.arch, "x64");
    }
    assert_eq!(found.os, "Linux");
    // .NET Core 3.1 has no ProcessInfo (a .NET 5 command), hence no instance cookie: the
    // details came from /proc, after the runtime said so, and the uid is snapdump's, made from
    // the socket's pid and key, the same at every look.
    assert_eq!(found.source, InfoSource::Proc);
    assert!(found.cookie_synthesized);
    let cookie = found.instance_cookie.clone().expect("a synthesized uid");
    assert_eq!(
        Some(cookie.as_str()),
        dotnet::synthesized_cookie(&found.socket).as_deref()
    );
    assert!(
        cookie.starts_with(&format!("{:08x}-7364-8", host.pid)),
        "{cookie}"
    );
    assert_eq!(
        dotnet::detect(host.pid).and_then(|d| d.instance_cookie),
        Some(cookie)
    );
    let asked = dotnet::process_info(&found.socket, Duration::from_secs(5));
    match asked {
        Err(DotnetError::UnsupportedCommand { command, .. }) => assert_eq!(command, "ProcessInfo"),
        other => panic!("3.1 answered ProcessInfo? {other:?}"),
    }

    // Processes without the runtime are not .NET.
    let me = std::process::id() as i32;
    assert!(dotnet::detect(me).is_none());
    match dotnet::detect_with_timeout(me, Duration::from_secs(1)) {
        Err(e @ DotnetError::NotDotnet { .. }) => {
            assert!(e.to_string().contains("libcoreclr.so"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn runtime_dumps_of_each_type_open_in_gdb() {
    let mut host = Host::spawn();
    let dir = TempDir::new("types");
    let exe = host.exe();
    let mut sizes = Vec::new();
    for dump_type in [
        DumpType::Mini,
        DumpType::WithHeap,
        DumpType::Triage,
        DumpType::Full,
    ] {
        let target = dir.0.join(format!("{dump_type}.core"));
        let report = dotnet::runtime_dump_request(&request_for(host.pid, &target), dump_type)
            .unwrap_or_else(|e| panic!("{dump_type}: {e}; host stderr: {}", host.stderr()));
        assert_eq!(report.path, target);
        // 3.1 knows only the first GenerateCoreDump.
        assert_eq!(report.command_id, 1);
        assert!(!report.staged);
        assert_eq!(report.dump_type, dump_type);
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), report.file_len);
        let head = std::fs::read(&target).unwrap();
        assert_eq!(&head[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([head[16], head[17]]), 4, "ET_CORE");
        drop(head);
        assert_gdb_opens(&exe, &target, host.pid);
        sizes.push((dump_type, report.file_len));
        eprintln!(
            "runtime {dump_type}: {} bytes, createdump {:?}",
            report.file_len, report.runtime_elapsed
        );
    }
    // No partial file is left, and the heap types are the big ones.
    assert_eq!(
        dir.files(),
        ["Full.core", "Mini.core", "Triage.core", "WithHeap.core"]
    );
    let size = |t: DumpType| sizes.iter().find(|s| s.0 == t).unwrap().1;
    assert!(
        size(DumpType::WithHeap) > 10 * size(DumpType::Mini),
        "{sizes:?}"
    );
    assert!(size(DumpType::Full) > size(DumpType::WithHeap), "{sizes:?}");

    // A default name in a folder, compressed, and never over an existing file.
    let mut request = request_for(host.pid, &dir.0);
    request.compress = Some(1);
    let report = dotnet::runtime_dump_request(&request, DumpType::Mini).unwrap();
    let name = report
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.contains(&format!("_{}_", host.pid)) && name.ends_with(".core.zst"),
        "{name}"
    );
    assert!(report.staged);
    let plain = zstd::decode_all(std::fs::File::open(&report.path).unwrap()).unwrap();
    assert_eq!(&plain[..4], b"\x7fELF");
    let existing = dir.0.join("Mini.core");
    let before = std::fs::metadata(&existing).unwrap().modified().unwrap();
    match dotnet::runtime_dump_request(&request_for(host.pid, &existing), DumpType::Mini) {
        Err(DotnetError::Engine(snapdump::Error::OutputExists { path })) => {
            assert_eq!(path, existing)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::metadata(&existing).unwrap().modified().unwrap(),
        before
    );
    let mut again = request_for(host.pid, &existing);
    again.overwrite = true;
    dotnet::runtime_dump_request(&again, DumpType::Mini).unwrap();
    assert!(
        !dir.files().iter().any(|f| f.contains("partial")),
        "{:?}",
        dir.files()
    );
    host.assert_alive();
}

#[test]
fn heap_dump_keeps_managed_strings_and_images_and_is_smaller_than_full() {
    let mut host = Host::spawn();
    let dir = TempDir::new("heap");
    let exe = host.exe();

    let started = Instant::now();
    let heap = snapdump::dump(&request_for(host.pid, &dir.0.join("heap.core")).mode(Mode::Heap))
        .expect("heap dump");
    let heap_time = started.elapsed();
    assert!(
        heap.snapshot,
        "heap dumps are snapshots: {:?}",
        heap.snapshot_refused
    );
    host.assert_alive();
    let bytes = std::fs::read(&heap.path).unwrap();
    for n in [0, 4242, 99_999] {
        let text = format!("managed-string-{n}");
        assert!(
            find_subsequence(&bytes, &utf16(&text)).is_some(),
            "{text} (UTF-16) is not in the heap dump"
        );
    }
    // The managed images are in: a page from inside System.Private.CoreLib.dll's mapping.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", host.pid)).unwrap();
    let (corelib, offset, len) = maps
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields.get(5)?;
            if !path.ends_with("System.Private.CoreLib.dll") {
                return None;
            }
            let (start, end) = fields[0].split_once('-')?;
            let len = u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?;
            let offset = u64::from_str_radix(fields[2], 16).ok()?;
            Some((PathBuf::from(path), offset, len))
        })
        .max_by_key(|m| m.2)
        .expect("System.Private.CoreLib.dll is mapped");
    // A busy page of its largest mapping (code and metadata, read-only), past the first.
    let image = std::fs::read(&corelib).unwrap();
    let (offset, page) = (offset as usize + 4096..(offset + len) as usize)
        .step_by(4096)
        .filter(|&at| at + 4096 <= image.len())
        .map(|at| (at, &image[at..at + 4096]))
        .find(|(_, page)| page.iter().filter(|&&b| b != 0).count() > 3000)
        .expect("a busy page in System.Private.CoreLib.dll");
    assert!(
        find_subsequence(&bytes, page).is_some(),
        "the heap dump lacks System.Private.CoreLib.dll's page at file offset {offset:#x}"
    );
    drop(bytes);
    assert_gdb_opens(&exe, &heap.path, host.pid);

    let runtime = |dump_type: DumpType| {
        let path = dir.0.join(format!("runtime-{dump_type}.core"));
        let report = dotnet::runtime_dump_request(&request_for(host.pid, &path), dump_type)
            .unwrap_or_else(|e| panic!("{e}"));
        (report.disk_bytes, report.elapsed)
    };
    let (with_heap, with_heap_time) = runtime(DumpType::WithHeap);
    let (full, full_time) = runtime(DumpType::Full);
    eprintln!(
        "sizes on disk: snapdump heap {} ({heap_time:?}, paused {:?}), runtime WithHeap \
         {with_heap} ({with_heap_time:?}), runtime Full {full} ({full_time:?})",
        heap.disk_bytes, heap.pause.total
    );
    assert!(
        heap.disk_bytes < full,
        "our heap dump ({}) should be smaller than the full dump ({full})",
        heap.disk_bytes
    );
}

#[test]
fn clear_errors_for_wrong_sockets_dead_runtimes_and_unknown_commands() {
    let dir = TempDir::new("errors");
    let ping = Message::new(ipc::command_set::PROCESS, 0x00, Vec::new());
    let wait = ipc::Wait::timeout(Duration::from_secs(5));

    // A wrong socket path.
    let wrong = dir.0.join("dotnet-diagnostic-1-1-socket");
    let error = ipc::request(&wrong, &ping, wait, &mut ipc::keep_waiting).unwrap_err();
    assert!(
        matches!(error, DotnetError::SocketMissing { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("no diagnostics socket at"),
        "{error}"
    );

    // A dead runtime: the socket file is there, nobody listens.
    let stale = dir.0.join("stale-socket");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let error = ipc::request(&stale, &ping, wait, &mut ipc::keep_waiting).unwrap_err();
    assert!(
        matches!(error, DotnetError::NotListening { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("nobody listens"), "{error}");

    // A file that is not a socket.
    let plain = dir.0.join("plain");
    std::fs::write(&plain, b"").unwrap();
    let error = ipc::request(&plain, &ping, wait, &mut ipc::keep_waiting).unwrap_err();
    assert!(
        matches!(
            error,
            DotnetError::NotListening { .. } | DotnetError::NotASocket { .. }
        ),
        "{error:?}"
    );

    // An unknown command, a real runtime's createdump failing, and a non-.NET target.
    let mut host = Host::spawn();
    let socket = dotnet::find_socket(host.pid).unwrap();
    let bogus = Message::new(ipc::command_set::PROCESS, 0x7F, Vec::new());
    let error =
        dotnet::command(&socket, "Bogus", &bogus, wait, &mut ipc::keep_waiting).unwrap_err();
    assert!(
        matches!(
            error,
            DotnetError::UnsupportedCommand {
                command_id: 0x7F,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("does not support Bogus"),
        "{error}"
    );
    let error = dotnet::runtime_dump(
        host.pid,
        Path::new("/nonexistent-folder/x.core"),
        DumpType::Mini,
    )
    .unwrap_err();
    match &error {
        DotnetError::Runtime { hresult, .. } => assert_eq!(*hresult, hresult::FAIL),
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("createdump failed"), "{error}");
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let error =
        dotnet::runtime_dump_request(&request_for(sleeper.id() as i32, &dir.0), DumpType::Mini)
            .unwrap_err();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(matches!(error, DotnetError::NotDotnet { .. }), "{error:?}");
    host.assert_alive();
    assert!(dir.files().iter().all(|f| !f.contains("partial")));
}

#[test]
fn cancelling_stops_createdump_and_leaves_nothing() {
    let mut host = Host::spawn();
    let dir = TempDir::new("cancel");
    let request = request_for(host.pid, &dir.0);
    let cancel = request.cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cancel.cancel();
    });
    let result = dotnet::runtime_dump_request(&request, DumpType::Full);
    canceller.join().unwrap();
    match result {
        Err(DotnetError::Engine(snapdump::Error::Interrupted)) => eprintln!("cancelled"),
        // A machine fast enough to finish a full dump in 300 ms.
        Ok(report) => eprintln!("finished before the cancel: {report:?}"),
        Err(e) => panic!("{e:?}"),
    }
    if dir.files().is_empty() {
        // createdump is gone (once the runtime has reaped it) and the runtime carries on.
        let createdump_left = || {
            snapdump::process::find::all_pids().into_iter().any(|p| {
                snapdump::process::read_stat(p)
                    .is_ok_and(|s| s.ppid == host.pid && s.comm == b"createdump" && s.state != b'Z')
            })
        };
        // SIGKILLed, it may take a moment to let go of the target and exit.
        let deadline = Instant::now() + Duration::from_secs(10);
        while createdump_left() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !createdump_left(),
            "createdump still runs 10 s after the cancel"
        );
    }
    assert!(
        dir.files().iter().all(|f| !f.contains("partial")),
        "{:?}",
        dir.files()
    );
    host.assert_alive();
}

#[test]
fn a_runtime_in_its_own_mount_and_pid_namespaces() {
    let dir = TempDir::new("container");
    let private = TempDir::new("container-tmp");
    let mut host = Host::spawn_namespaced(&private.0);
    let found = dotnet::detect(host.pid).expect("the namespaced host is .NET");
    // Its socket is in its private $TMPDIR, named after the pid it sees for itself.
    assert!(private.files().is_empty(), "{:?}", private.files());
    let socket = found.socket.to_string_lossy().into_owned();
    assert!(
        socket.starts_with(&format!(
            "/proc/{}/root{}/dotnet-diagnostic-",
            host.pid,
            private.0.display()
        )),
        "{socket}"
    );
    assert!(!socket.contains(&format!("-{}-", host.pid)), "{socket}");
    let report = dotnet::runtime_dump_request(&request_for(host.pid, &dir.0), DumpType::Mini)
        .unwrap_or_else(|e| panic!("{e}; host stderr: {}", host.stderr()));
    assert!(report.staged, "written in the container and copied out");
    assert_eq!(report.path.parent(), Some(dir.0.as_path()));
    // createdump ran inside: the threads carry the ids the namespace gives them.
    assert_gdb_opens(&host.exe(), &report.path, host.own_pid);
    // The runtime's file in the container's $TMPDIR was removed.
    let container_tmp = format!("/proc/{}/root{}", host.pid, private.0.display());
    let left: Vec<String> = std::fs::read_dir(&container_tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapdump-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    host.assert_alive();
}

/// A scripted diagnostics server: answers each connection with the next canned response and
/// records what it was asked.
struct FakeRuntime {
    socket: PathBuf,
    asked: Arc<Mutex<Vec<Message>>>,
    _dir: TempDir,
}

impl FakeRuntime {
    fn start(name: &str, answers: Vec<Message>) -> FakeRuntime {
        let dir = TempDir::new(name);
        let socket = dir.0.join("dotnet-diagnostic-1-1-socket");
        let listener = UnixListener::bind(&socket).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = asked.clone();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut header = [0u8; ipc::HEADER_LEN];
                stream.read_exact(&mut header).unwrap();
                let (set, id, len) = Message::decode_header(&header).unwrap();
                let mut payload = vec![0; len];
                stream.read_exact(&mut payload).unwrap();
                record.lock().unwrap().push(Message::new(set, id, payload));
                stream.write_all(&answer.encode().unwrap()).unwrap();
            }
        });
        FakeRuntime {
            socket,
            asked,
            _dir: dir,
        }
    }
}

fn error_message(hr: u32) -> Message {
    Message::new(0xFF, 0xFF, hr.to_le_bytes().to_vec())
}

fn process_info_payload(v2: bool) -> Vec<u8> {
    let mut payload = 4321u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&[
        0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56,
        0x78,
    ]);
    let mut strings = vec!["/app/app --urls http://+:80", "Linux", "arm64"];
    if v2 {
        strings.extend(["app", "8.0.11"]);
    }
    for s in strings {
        ipc::write_string(&mut payload, s);
    }
    payload
}

#[test]
fn newer_runtimes_commands_against_a_scripted_server() {
    // ProcessInfo2 (.NET 6+): cookie, version, entry point.
    let fake = FakeRuntime::start(
        "info2",
        vec![Message::new(0xFF, 0x00, process_info_payload(true))],
    );
    let (info, source) = dotnet::process_info(&fake.socket, Duration::from_secs(5)).unwrap();
    assert_eq!(source, InfoSource::ProcessInfo2);
    assert_eq!(info.pid, 4321);
    assert_eq!(info.cookie_string(), "12345678-1234-5678-9abc-def012345678");
    assert_eq!(info.runtime_version.as_deref(), Some("8.0.11"));
    assert_eq!(info.entry_assembly.as_deref(), Some("app"));
    assert_eq!(info.arch, "arm64");
    let asked = fake.asked.lock().unwrap().clone();
    assert_eq!(asked, [Message::new(0x04, 0x04, vec![])]);

    // A socket path longer than a socket address holds (as through /proc/PID/root/...).
    let fake = FakeRuntime::start(
        "long",
        vec![Message::new(0xFF, 0x00, process_info_payload(true))],
    );
    let deep = fake._dir.0.join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    let long = deep.join("dotnet-diagnostic-1-1-socket");
    std::fs::rename(&fake.socket, &long).unwrap();
    assert!(long.as_os_str().len() > 108);
    let (info, _) = dotnet::process_info(&long, Duration::from_secs(5)).unwrap();
    assert_eq!(info.pid, 4321);

    // .NET 5: ProcessInfo2 unknown, ProcessInfo answers.
    let fake = FakeRuntime::start(
        "info1",
        vec![
            error_message(hresult::UNKNOWN_COMMAND),
            Message::new(0xFF, 0x00, process_info_payload(false)),
        ],
    );
    let (info, source) = dotnet::process_info(&fake.socket, Duration::from_secs(5)).unwrap();
    assert_eq!(source, InfoSource::ProcessInfo);
    assert_eq!(info.runtime_version, None);
    assert_eq!(info.command_line, "/app/app --urls http://+:80");

    // GenerateCoreDump: 3 unknown (.NET 6), 2 answers; the payload is path, type, flags.
    let fake = FakeRuntime::start(
        "dump2",
        vec![
            error_message(hresult::UNKNOWN_COMMAND),
            Message::new(0xFF, 0x00, 0u32.to_le_bytes().to_vec()),
        ],
    );
    let id = dotnet::runtime_dump::generate_core_dump(
        &fake.socket,
        Path::new("/dumps/a.core"),
        DumpType::Triage,
        ipc::Wait::timeout(Duration::from_secs(5)),
        &mut ipc::keep_waiting,
    )
    .unwrap();
    assert_eq!(id, 2);
    let asked = fake.asked.lock().unwrap().clone();
    assert_eq!(
        asked
            .iter()
            .map(|m| (m.command_set, m.command_id))
            .collect::<Vec<_>>(),
        [(0x01, 0x03), (0x01, 0x02)]
    );
    let mut reader = ipc::Reader::new(&asked[1].payload);
    assert_eq!(reader.string("path").unwrap(), "/dumps/a.core");
    assert_eq!(reader.u32("type").unwrap(), 3);
    assert_eq!(reader.u32("flags").unwrap(), 0);
    assert_eq!(reader.remaining(), 0);

    // GenerateCoreDump3's failures carry createdump's message.
    let mut failure = hresult::FAIL.to_le_bytes().to_vec();
    ipc::write_string(
        &mut failure,
        "Could not open output /dumps/a.core: Permission denied",
    );
    let fake = FakeRuntime::start("dump3", vec![Message::new(0xFF, 0xFF, failure)]);
    let error = dotnet::runtime_dump::generate_core_dump(
        &fake.socket,
        Path::new("/dumps/a.core"),
        DumpType::Full,
        ipc::Wait::timeout(Duration::from_secs(5)),
        &mut ipc::keep_waiting,
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("GenerateCoreDump3") && text.contains("Permission denied"),
        "{text}"
    );

    // A runtime that never answers times out; one that hangs up is said to have closed.
    let dir = TempDir::new("silent");
    let silent = dir.0.join("socket");
    let listener = UnixListener::bind(&silent).unwrap();
    let error = ipc::request(
        &silent,
        &Message::new(0x04, 0x00, vec![]),
        ipc::Wait::timeout(Duration::from_millis(300)),
        &mut ipc::keep_waiting,
    )
    .unwrap_err();
    assert!(matches!(error, DotnetError::Timeout { .. }), "{error:?}");
    drop(listener);
    let hangs_up = dir.0.join("hangs-up");
    let listener = UnixListener::bind(&hangs_up).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; ipc::HEADER_LEN];
        let _ = stream.read_exact(&mut request);
        drop(stream);
    });
    let error = ipc::request(
        &hangs_up,
        &Message::new(0x04, 0x00, vec![]),
        ipc::Wait::timeout(Duration::from_secs(5)),
        &mut ipc::keep_waiting,
    )
    .unwrap_err();
    assert!(matches!(error, DotnetError::Closed { .. }), "{error:?}");
    assert!(error.to_string().contains("closed"), "{error}");
}
