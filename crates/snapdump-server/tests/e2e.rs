//! End to end: a real server on a loopback port, a real target, real clients.
//!
//! Most tests run the server inside the test process. Those that must hold a dump at an exact
//! phase use the engine's stall hook (`SNAPDUMP_STALL_AT`, see `snapdump::fault`), which is
//! read from the environment: they run the server in a child process, this very test binary
//! started again on [`child_server_helper`] with the variables set.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{assert_elf_core, gdb_sees_threads, sha256_hex};
use reqwest::StatusCode;
use serde_json::Value;
use snapdump::snapshot::guard::GuardianCommand;
use snapdump_server::config::{Config, TlsConfig};
use snapdump_server::server::{Server, Settings};
use snapdump_test_support::{Target, assert_running_untraced, children_of};

/// A server running in this process until dropped or stopped.
struct Running {
    urls: Vec<String>,
    key: Option<String>,
    fingerprint: Option<String>,
    announcement: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), snapdump_server::server::ServeError>>,
}

impl Running {
    async fn start(settings: Settings) -> Running {
        let server = Server::bind(settings).await.expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let urls = server.urls();
        let key = server.temp_key.clone();
        let fingerprint = server.fingerprint.clone();
        let announcement = server.announcement();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            urls,
            key,
            fingerprint,
            announcement,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.urls[0])
    }

    fn key(&self) -> &str {
        self.key.as_deref().expect("a temp key")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the server stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

fn loopback(scheme: &str) -> Settings {
    Settings {
        urls: vec![format!("{scheme}://127.0.0.1:0")],
        temp_apikey: true,
        ..Settings::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = client.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// Writes a response body to `path` as it arrives.
async fn save_body(mut response: reqwest::Response, path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut total = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        file.write_all(&chunk).unwrap();
        total += chunk.len() as u64;
    }
    total
}

async fn assert_problem(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_processes_and_a_streamed_core_that_gdb_reads() {
    let target = Target::spawn(&[]);
    let server = Running::start(loopback("http")).await;
    assert!(server.urls[0].starts_with("http://127.0.0.1:"));
    assert!(
        server
            .announcement
            .iter()
            .any(|l| l == &format!("Authorization: Bearer {}", server.key()))
    );
    let client = client();

    let live = get(&client, &server.url("/livez"), None).await;
    assert_eq!(live.status(), StatusCode::OK);
    for key in [None, Some("wrong-key")] {
        let reply = get(&client, &server.url("/processes"), key).await;
        assert_eq!(
            reply.headers()["www-authenticate"],
            "Bearer realm=\"snapdump\""
        );
        assert_problem(reply, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    let list: Value = get(&client, &server.url("/processes"), Some(server.key()))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == target.pid() && p["dumpable"] == true),
        "the target is not listed"
    );

    let reply = get(
        &client,
        &server.url(&format!("/dump?pid={}", target.pid())),
        Some(server.key()),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["transfer-encoding"], "chunked");
    assert!(reply.headers().get("content-length").is_none());
    let location = reply.headers()["location"].to_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("streamed.core");
    let bytes = save_body(reply, &core).await;
    assert!(bytes > 0);
    assert_running_untraced(target.pid());
    gdb_sees_threads(&target.exe_path(), &core, &target.ready().tids);

    let op: Value = get(&client, &server.url(&location), Some(server.key()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_eq!(
        op["resourceSha256"],
        sha256_hex(&std::fs::read(&core).unwrap())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_full_dumps_give_200_and_429() {
    // 256 MiB of memory: the first dump cannot finish while its body is left unread, so the
    // second always meets it under way.
    let target = Target::spawn(&["--touch-mb", "256"]);
    let server = Running::start(loopback("http")).await;
    let client = client();
    let url = server.url(&format!("/dump?pid={}&type=Full", target.pid()));

    let first = get(&client, &url, Some(server.key())).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = get(&client, &url, Some(server.key())).await;
    assert_problem(second, StatusCode::TOO_MANY_REQUESTS, "too_many_dumps").await;

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("full.core");
    let bytes = save_body(first, &core).await;
    assert!(bytes > 256 << 20, "a Full dump holds the 256 MiB: {bytes}");
    assert_running_untraced(target.pid());
    gdb_sees_threads(&target.exe_path(), &core, &target.ready().tids);
    server.stop().await;
}

fn fingerprint_of(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_self_signed_certificate_whose_fingerprint_is_printed() {
    let server = Running::start(loopback("https")).await;
    assert!(server.urls[0].starts_with("https://127.0.0.1:"));
    let printed = server.fingerprint.clone().unwrap();
    assert!(
        server
            .announcement
            .iter()
            .any(|l| l.contains("self-signed") && l.ends_with(&printed)),
        "{:?}",
        server.announcement
    );
    let client = client();
    let reply = get(&client, &server.url("/info"), Some(server.key())).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let tls = reply.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    assert_eq!(fingerprint_of(tls.peer_certificate().unwrap()), printed);
    let reply = get(&client, &server.url("/info"), None).await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut settings = loopback("https");
    settings.config = Config {
        tls: Some(TlsConfig {
            certificate: cert,
            private_key: key,
        }),
        ..Config::default()
    };
    let server = Running::start(settings).await;
    let expected = fingerprint_of(made.cert.der());
    assert_eq!(server.fingerprint.as_deref(), Some(expected.as_str()));
    let reply = get(&client(), &server.url("/livez"), None).await;
    let tls = reply.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    assert_eq!(fingerprint_of(tls.peer_certificate().unwrap()), expected);
    server.stop().await;
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused() {
    use snapdump_server::server::ServeError;
    let no_key = Settings {
        urls: vec!["http://127.0.0.1:0".into()],
        ..Settings::default()
    };
    assert!(matches!(
        Server::bind(no_key).await,
        Err(ServeError::NoKeys)
    ));
    let both = Settings {
        no_auth: true,
        ..loopback("http")
    };
    assert!(matches!(
        Server::bind(both).await,
        Err(ServeError::NoAuthWithKeys)
    ));
    let bad_url = Settings {
        urls: vec!["ftp://127.0.0.1:0".into()],
        ..loopback("http")
    };
    assert!(matches!(
        Server::bind(bad_url).await,
        Err(ServeError::BadUrl { .. })
    ));
    let no_auth = Settings {
        no_auth: true,
        temp_apikey: false,
        ..loopback("http")
    };
    let server = Server::bind(no_auth).await.unwrap();
    assert!(server.announcement()[0].starts_with("WARNING: authentication is DISABLED"));
}

// ---------------------------------------------------------------------------------------------
// Collection rules
// ---------------------------------------------------------------------------------------------

/// A server whose config has a `file://` egress `local` into `egress` and these rule tables.
async fn server_with_rules(egress: &Path, rules: &str) -> Running {
    let text = format!(
        "[egress.local]\nurl = \"file://{}\"\n{rules}",
        egress.display()
    );
    let mut settings = loopback("http");
    settings.config = Config::parse(&text, Path::new("rules.toml")).unwrap();
    Running::start(settings).await
}

async fn json_of(client: &reqwest::Client, server: &Running, path: &str) -> Value {
    let reply = get(client, &server.url(path), Some(server.key())).await;
    assert_eq!(reply.status(), StatusCode::OK, "{path}");
    reply.json().await.unwrap()
}

/// Polls `/collectionrules/{name}` until `done` says so (10 s at most).
async fn wait_rule(
    client: &reqwest::Client,
    server: &Running,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rule = json_of(client, server, &format!("/collectionrules/{name}")).await;
        if done(&rule) {
            return rule;
        }
        assert!(Instant::now() < deadline, "rule {name} is still: {rule}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one operation tagged `rule:NAME`: succeeded, its file in `egress` an ELF core with the
/// size and digest the operation gives. Returns the operation and the file.
async fn assert_rule_dump_stored(
    client: &reqwest::Client,
    server: &Running,
    name: &str,
    trigger: &str,
    pid: i32,
    egress: &Path,
) -> (Value, PathBuf) {
    let doc = json_of(client, server, "/openapi.json").await;
    let ops = json_of(client, server, &format!("/operations?tags=rule:{name}")).await;
    let ops = ops.as_array().unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    let op = &ops[0];
    common::validate(&doc, &doc["components"]["schemas"]["Operation"], op, "op").unwrap();
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_eq!(op["process"]["pid"], pid);
    assert_eq!(op["egressProviderName"], "local");
    assert_eq!(op["type"], "Mini");
    let tags: Vec<&str> = op["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tags.contains(&format!("rule:{name}").as_str()), "{tags:?}");
    assert!(
        tags.contains(&format!("trigger:{trigger}").as_str()),
        "{tags:?}"
    );
    let file = PathBuf::from(op["resourceLocation"].as_str().unwrap());
    assert!(file.starts_with(egress), "{}", file.display());
    let bytes = std::fs::read(&file).unwrap();
    assert_elf_core(&bytes);
    assert_eq!(op["resourceBytes"], bytes.len());
    assert_eq!(op["resourceSha256"], sha256_hex(&bytes));
    (op.clone(), file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_rule_dumps_to_its_egress_and_stops_with_the_server() {
    let target = Target::spawn(&[]);
    let pid = target.pid();
    let egress = tempfile::tempdir().unwrap();
    let rules = format!(
        r#"
        [collection_rules.timer]
        process = {{ pid = {pid} }}
        triggers = {{ every = "1h" }}
        type = "Mini"
        egress = "local"
        tags = ["e2e"]

        [collection_rules.waiting]
        process = {{ name = "snapdump-no-such-process" }}
        triggers = {{ cpu_above = 50 }}
        egress = "local"
        "#
    );
    let server = server_with_rules(egress.path(), &rules).await;
    let client = client();

    // No trigger but the timer: a dump at once, and with count 1 the rule is done.
    let rule = wait_rule(&client, &server, "timer", |r| r["state"] != "Running").await;
    assert_eq!(rule["state"], "Finished", "{rule}");
    assert_eq!(rule["dumpsTaken"], 1, "{rule}");
    assert_eq!(rule["dumpsStored"], 1, "{rule}");
    assert_eq!(rule["lastError"], Value::Null, "{rule}");
    assert_eq!(rule["stateReason"], "1 of 1 dumps taken");
    let (op, core) =
        assert_rule_dump_stored(&client, &server, "timer", "timer", pid, egress.path()).await;
    assert_eq!(rule["lastOperationId"], op["operationId"]);
    gdb_sees_threads(&target.exe_path(), &core, &target.ready().tids);
    assert!(op["tags"].as_array().unwrap().contains(&"e2e".into()));
    assert_running_untraced(pid);

    let waiting = wait_rule(&client, &server, "waiting", |r| {
        r["stateReason"]
            .as_str()
            .is_some_and(|s| s.starts_with("waiting for a process named"))
    })
    .await;
    assert_eq!(waiting["state"], "Running");
    assert_eq!(waiting["triggers"], "cpu >= 50%");
    let doc = json_of(&client, &server, "/openapi.json").await;
    let list = json_of(&client, &server, "/collectionrules").await;
    let names: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["name"])
        .collect();
    assert_eq!(names, ["timer", "waiting"]);
    let schema = &doc["paths"]["/collectionrules"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    common::validate(&doc, schema, &list, "rules").unwrap();

    let metrics = get(&client, &server.url("/metrics"), Some(server.key()))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("snapdump_collection_rule_dumps_total{rule=\"timer\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("snapdump_dumps_total{status=\"succeeded\"} 1\n"),
        "{metrics}"
    );

    // The waiting rule's thread stops at once with the server.
    let stopping = Instant::now();
    server.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert_running_untraced(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_rule_dumps_then_delivers_the_signal() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    target.command_expect("handle-usr1", "handling usr1");
    let egress = tempfile::tempdir().unwrap();
    let rules = format!(
        r#"
        [collection_rules.usr1]
        process = {{ pid = {pid} }}
        triggers = {{ signal = ["SIGUSR1"] }}
        type = "Mini"
        egress = "local"
        "#
    );
    let server = server_with_rules(egress.path(), &rules).await;
    let client = client();
    let rule = wait_rule(&client, &server, "usr1", |r| {
        r["stateReason"]
            .as_str()
            .is_some_and(|s| s.ends_with(", traced"))
    })
    .await;
    assert_eq!(rule["process"]["pid"], pid, "{rule}");
    assert_eq!(rule["triggers"], "signal SIGUSR1");
    assert_eq!(target.command("usr1"), "usr1 0");

    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let rule = wait_rule(&client, &server, "usr1", |r| r["state"] != "Running").await;
    assert_eq!(rule["state"], "Finished", "{rule}");
    assert_eq!(
        (rule["dumpsTaken"].as_u64(), rule["dumpsStored"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, core) =
        assert_rule_dump_stored(&client, &server, "usr1", "signal", pid, egress.path()).await;
    let gdb = snapdump_test_support::tools::gdb(&target.exe_path(), &core, &["info threads"]);
    assert!(
        gdb.contains("Program terminated with signal SIGUSR1"),
        "{gdb}"
    );

    // The signal was delivered after the dump, once; the target runs on, untraced.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = target.command("usr1");
        if line == "usr1 1" {
            break;
        }
        assert!(Instant::now() < deadline, "{line}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_running_untraced(pid);
    server.stop().await;
}

#[tokio::test]
async fn rules_that_cannot_work_are_refused_at_start() {
    use snapdump_server::server::ServeError;
    let egress = tempfile::tempdir().unwrap();
    for (rule, expected) in [
        (
            r#"process = { pid = 1 }
               triggers = { cpu_above = 90 }
               egress = "nowhere""#,
            "collection rule \"bad\": no egress provider named \"nowhere\"",
        ),
        (
            r#"process = { pid = 1 }
               triggers = { signal = ["SIGNOPE"] }
               egress = "local""#,
            "collection rule \"bad\": triggers.signal",
        ),
        (
            r#"process = { pid = 1 }
               egress = "local""#,
            "collection rule \"bad\": no triggers",
        ),
    ] {
        let text = format!(
            "[egress.local]\nurl = \"file://{}\"\n[collection_rules.bad]\n{rule}",
            egress.path().display()
        );
        let mut settings = loopback("http");
        settings.config = Config::parse(&text, Path::new("rules.toml")).unwrap();
        match Server::bind(settings).await {
            Err(e @ ServeError::Rule(_)) => {
                assert!(e.to_string().starts_with(expected), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted: {rule}"),
        }
    }
    // An unknown key in a rule is the TOML parser's error.
    let err = Config::parse(
        "[collection_rules.x]\nprocess = { pid = 1 }\negress = \"local\"\ncpu = 5",
        Path::new("rules.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("cpu"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// A server in a child process, for the stall hook
// ---------------------------------------------------------------------------------------------

const CHILD: &str = "SNAPDUMP_SERVER_TEST_CHILD";
const CHILD_KEY_HASH: &str = "SNAPDUMP_SERVER_TEST_KEY_HASH";
const CHILD_EGRESS: &str = "SNAPDUMP_SERVER_TEST_EGRESS";
/// Set: the child server runs this test binary as its snapshot guardian
/// ([`snapshot_guard_helper`]), as `snapdump serve` runs `snapdump __snapshot-guard`.
const CHILD_GUARDIAN: &str = "SNAPDUMP_SERVER_TEST_GUARDIAN";

/// Not a test of its own: the body of the child server (does nothing without `CHILD` set).
/// Serves until SIGTERM/SIGINT or until its stdin closes (the parent test went away).
#[test]
fn child_server_helper() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut config = Config::default();
    config.authentication.api_key_hashes = vec![std::env::var(CHILD_KEY_HASH).unwrap()];
    let egress = std::env::var(CHILD_EGRESS)
        .ok()
        .map(|url| vec![("local".to_owned(), url)])
        .unwrap_or_default();
    let snapshot_guardian = std::env::var_os(CHILD_GUARDIAN).map(|_| GuardianCommand {
        program: std::env::current_exe().unwrap(),
        args: ["--exact", "snapshot_guard_helper", "--test-threads=1"]
            .map(String::from)
            .to_vec(),
    });
    let settings = Settings {
        urls: vec!["http://127.0.0.1:0".into()],
        config,
        egress,
        snapshot_guardian,
        ..Settings::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = Server::bind(settings).await.unwrap();
        println!("LISTENING {}", server.urls()[0]);
        let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
            let _ = eof_tx.send(());
        });
        server
            .run(async {
                tokio::select! {
                    () = snapdump_server::server::shutdown_signal() => {}
                    _ = eof_rx => {}
                }
            })
            .await
            .unwrap();
        println!("STOPPED");
    });
}

/// Not a test of its own: the snapshot guardian of a child server started with
/// `CHILD_GUARDIAN` (it inherits the variable); reads its instructions on stdin.
#[test]
fn snapshot_guard_helper() {
    if std::env::var_os(CHILD_GUARDIAN).is_none() {
        return;
    }
    let outcome = snapdump::snapshot::guard::serve(std::io::stdin());
    eprintln!("guardian: {outcome}");
}

/// The child server: its URL, a key, and its stderr lines.
struct ChildServer {
    child: Child,
    url: String,
    key: String,
    stderr: Receiver<String>,
    /// Kept so the child's stdout stays open until it exits.
    _stdout: Receiver<String>,
}

impl ChildServer {
    fn spawn(envs: &[(&str, String)]) -> ChildServer {
        let key = snapdump_server::auth::generate_key();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_server_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env(CHILD_KEY_HASH, snapdump_server::auth::hash_key(&key))
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |stream: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        // The harness prints `test child_server_helper ... ` before it, on the same line.
        let line = wait_line(&stdout, "LISTENING ", Duration::from_secs(60));
        let url = line[line.find("LISTENING ").unwrap() + 10..]
            .trim()
            .to_owned();
        ChildServer {
            child,
            url,
            key,
            stderr,
            _stdout: stdout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Waits for the engine to say it stalled.
    fn wait_stalled(&self, phase: &str) {
        wait_line(
            &self.stderr,
            &format!("snapdump: stalled at {phase}"),
            Duration::from_secs(60),
        );
    }

    /// What the server wrote on stderr and nobody read yet.
    fn stderr_so_far(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then the exit status (at most 30 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first line containing `needle`.
fn wait_line(lines: &Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no line with {needle:?}: {e}"),
        }
    }
}

async fn operation(client: &reqwest::Client, server: &ChildServer, location: &str) -> Value {
    get(client, &server.url(location), Some(&server.key))
        .await
        .json()
        .await
        .unwrap()
}

async fn wait_finished(client: &reqwest::Client, server: &ChildServer, location: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let op = operation(client, server, location).await;
        if op["status"] != "Running" {
            return op;
        }
        assert!(Instant::now() < deadline, "still running: {op}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// A child server stalling dumps at `writing`, uploading to a fresh folder.
fn stalling_server(egress: &Path, release: Option<&Path>) -> ChildServer {
    let mut envs = vec![
        (snapdump::fault::STALL_AT, "writing".to_owned()),
        (CHILD_EGRESS, format!("file://{}", egress.display())),
    ];
    if let Some(release) = release {
        envs.push((
            snapdump::fault::STALL_RELEASE,
            release.display().to_string(),
        ));
    }
    ChildServer::spawn(&envs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_to_a_folder_goes_running_then_succeeded() {
    let target = Target::spawn(&[]);
    let egress = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let release = work.path().join("release");
    let server = stalling_server(egress.path(), Some(&release));
    let client = client();

    let reply = get(
        &client,
        &server.url(&format!("/dump?pid={}&egressProvider=local", target.pid())),
        Some(&server.key),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::ACCEPTED);
    let location = reply.headers()["location"].to_str().unwrap().to_owned();
    assert!(reply.bytes().await.unwrap().is_empty());

    server.wait_stalled("writing");
    let op = operation(&client, &server, &location).await;
    assert_eq!(op["status"], "Running", "{op}");
    assert_eq!(op["isStoppable"], true);
    assert_eq!(op["resourceLocation"], Value::Null);
    // Only the staging file exists while the dump is under way.
    let staged = files_in(egress.path());
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(staged[0].to_string_lossy().ends_with("#1"), "{staged:?}");

    std::fs::write(&release, b"").unwrap();
    let op = wait_finished(&client, &server, &location).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    let path = PathBuf::from(op["resourceLocation"].as_str().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    assert_elf_core(&bytes);
    assert_eq!(op["resourceSha256"], sha256_hex(&bytes));
    assert_eq!(
        files_in(egress.path()).len(),
        2,
        "the dump and its metadata"
    );
    assert_running_untraced(target.pid());
    gdb_sees_threads(&target.exe_path(), &path, &target.ready().tids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_egress_leaves_no_partial_object() {
    let target = Target::spawn(&[]);
    let egress = tempfile::tempdir().unwrap();
    let server = stalling_server(egress.path(), None);
    let client = client();

    let reply = get(
        &client,
        &server.url(&format!(
            "/dump?pid={}&egressProvider=local&type=Full",
            target.pid()
        )),
        Some(&server.key),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::ACCEPTED);
    let location = reply.headers()["location"].to_str().unwrap().to_owned();
    server.wait_stalled("writing");
    assert_eq!(
        operation(&client, &server, &location).await["status"],
        "Running"
    );

    let cancel = client
        .delete(server.url(&location))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let op = wait_finished(&client, &server, &location).await;
    assert_eq!(op["status"], "Cancelled", "{op}");
    assert_eq!(op["error"]["code"], "cancelled");
    assert_eq!(op["resourceLocation"], Value::Null);
    assert_eq!(files_in(egress.path()), Vec::<PathBuf>::new());
    assert_running_untraced(target.pid());

    let again = client
        .delete(server.url(&location))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_problem(again, StatusCode::BAD_REQUEST, "operation_not_running").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_stream_before_its_first_byte_answers_503() {
    let target = Target::spawn(&[]);
    let egress = tempfile::tempdir().unwrap();
    let server = stalling_server(egress.path(), None);
    let client = client();
    let url = server.url(&format!("/dump?pid={}&type=Mini", target.pid()));
    let key = server.key.clone();
    let pending = tokio::spawn({
        let client = client.clone();
        async move { get(&client, &url, Some(&key)).await }
    });
    server.wait_stalled("writing");
    let ops: Value = get(&client, &server.url("/operations"), Some(&server.key))
        .await
        .json()
        .await
        .unwrap();
    let id = ops[0]["operationId"].as_str().unwrap();
    let cancel = client
        .delete(server.url(&format!("/operations/{id}")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let reply = pending.await.unwrap();
    assert_problem(reply, StatusCode::SERVICE_UNAVAILABLE, "cancelled").await;
    let op = wait_finished(&client, &server, &format!("/operations/{id}")).await;
    assert_eq!(op["status"], "Cancelled");
    assert_running_untraced(target.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_running_dumps_and_stops_gracefully() {
    let target = Target::spawn(&[]);
    let egress = tempfile::tempdir().unwrap();
    let mut server = stalling_server(egress.path(), None);
    let client = client();
    let reply = get(
        &client,
        &server.url(&format!("/dump?pid={}&egressProvider=local", target.pid())),
        Some(&server.key),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::ACCEPTED);
    server.wait_stalled("writing");
    let status = server.terminate();
    assert!(status.success(), "{status}:\n{}", server.stderr_so_far());
    assert_eq!(files_in(egress.path()), Vec::<PathBuf>::new());
    assert_running_untraced(target.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_leaves_no_snapshot_clone_in_the_target() {
    let target = Target::spawn(&[]);
    let pid = target.pid();
    let egress = tempfile::tempdir().unwrap();
    let mut server = ChildServer::spawn(&[
        (snapdump::fault::STALL_AT, "writing".to_owned()),
        (CHILD_EGRESS, format!("file://{}", egress.path().display())),
        (CHILD_GUARDIAN, "1".to_owned()),
    ]);
    let reply = get(
        &client(),
        &server.url(&format!(
            "/dump?pid={pid}&type=WithHeap&egressProvider=local"
        )),
        Some(&server.key),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::ACCEPTED);
    server.wait_stalled("writing");
    // Heap dumps are written from a snapshot: its clone is a child of the target now.
    assert_eq!(children_of(pid).len(), 1, "no snapshot clone");

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // The kernel killed the clone with its tracer; the guardian reaps its zombie.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !children_of(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the clone's zombie stays in the target: {:?}\n{}",
            children_of(pid),
            server.stderr_so_far()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_running_untraced(pid);
}
