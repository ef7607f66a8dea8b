//! Egress to Azure Blob (against azurite) and to S3 (against s3s-fs), both run here on a
//! loopback port by the tests. `ci-setup.sh` installs them; a missing emulator fails the test
//! with that advice (CI installs it: never a silent skip).
//!
//! Each test dumps a real target to the store, downloads the object back and checks that its
//! bytes are the dump's (the size and SHA-256 the operation reports, as streamed by the
//! engine), that gdb reads it, and that the object carries the dump's metadata.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine as _;
use common::*;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, ObjectStore, ObjectStoreExt};
use snapdump_server::egress::EgressProvider;
use snapdump_test_support::{Target, assert_running_untraced};

/// Azurite's well-known development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn tools_dir() -> PathBuf {
    std::env::var_os("SNAPDUMP_SERVER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/snapdump-server-tools")
        })
}

fn tool(relative: &str) -> PathBuf {
    let path = tools_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run crates/snapdump-server/ci-setup.sh",
        path.display()
    );
    path
}

/// An emulator process, killed and reaped on drop.
struct Emulator {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts `command` and waits for a line announcing `http://…` after `marker`.
    fn start(mut command: Command, marker: &str, dir: tempfile::TempDir) -> Emulator {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    // Keep draining after the marker so the emulator never blocks on a pipe.
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("{command:?} did not start ({e}):\n{}", seen.join("\n"))
            });
            if let Some(at) = line.find(marker) {
                let rest = &line[at + marker.len()..];
                let start = rest.find("http://").expect("a URL after the marker");
                let url: String = rest[start..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                break url;
            }
            seen.push(line);
        };
        Emulator {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn azurite() -> Emulator {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(tool("azurite/node_modules/.bin/azurite-blob"));
    command
        .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
        .args(["--inMemoryPersistence", "--extentMemoryLimit", "1024"])
        .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
        .current_dir(dir.path());
    Emulator::start(command, "successfully listens on", dir)
}

fn s3s_fs(access_key: &str, secret_key: &str) -> Emulator {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(tool("s3s/bin/s3s-fs"));
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--access-key", access_key, "--secret-key", secret_key])
        .arg(dir.path());
    Emulator::start(command, "server is running at", dir)
}

/// `PUT ?restype=container` with a SharedKey signature: object_store cannot make containers.
async fn create_container(account_url: &str, container: &str) {
    use hmac::{KeyInit, Mac};
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let string_to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(format!("{account_url}/{container}?restype=container"))
        .header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("content-length", "0")
        .header(
            "authorization",
            format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
        )
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "create container: {status}: {}",
        response.text().await.unwrap_or_default()
    );
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Dumps `target` to `provider` through the API, downloads the object from `store` (which
/// sees the provider's prefix as `prefix`) and checks it.
async fn dump_and_check(
    target: &Target,
    provider: EgressProvider,
    store: &dyn ObjectStore,
    url_prefix: &str,
    prefix: &str,
) {
    let name = provider.name.clone();
    let (state, key) = state_with_key(1, vec![provider]);
    let app = router(&state);
    let reply = get(
        &app,
        &format!(
            "/dump?pid={}&egressProvider={name}&tags=ci,cloud",
            target.pid()
        ),
        &key,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    let op = wait_finished(&app, &reply.location(), &key, Duration::from_secs(120)).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_running_untraced(target.pid());
    let location = op["resourceLocation"].as_str().unwrap();
    let object = location
        .strip_prefix(url_prefix)
        .unwrap_or_else(|| panic!("{location} is not under {url_prefix}"));
    let path = ObjectPath::from(format!("{prefix}/{object}"));

    let got = store.get(&path).await.unwrap();
    let attributes = got.attributes.clone();
    let bytes = got.bytes().await.unwrap();
    assert_eq!(op["resourceBytes"], bytes.len(), "size of the object");
    assert_eq!(
        op["resourceSha256"],
        sha256_hex(&bytes),
        "bytes of the object"
    );
    assert_elf_core(&bytes);
    let metadata = |key: &'static str| {
        attributes
            .get(&Attribute::Metadata(key.into()))
            .map(|v| v.as_ref().to_owned())
            .unwrap_or_else(|| panic!("no metadata {key}: {attributes:?}"))
    };
    assert_eq!(metadata("pid"), target.pid().to_string());
    assert_eq!(metadata("process_name"), "snapdump-test-t");
    assert_eq!(metadata("mode"), "heap");
    assert_eq!(metadata("format"), "elf");
    assert_eq!(metadata("tags"), "ci,cloud");

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("downloaded.core");
    std::fs::write(&core, &bytes).unwrap();
    gdb_sees_threads(&target.exe_path(), &core, &target.ready().tids);

    // Exactly one object: no leftover parts or temporary names.
    let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_to_azure_blob_against_azurite() {
    // 32 MiB of touched memory: the dump spans several blocks.
    let target = Target::spawn(&["--touch-mb", "32"]);
    let emulator = azurite();
    let account_url = format!("{}/{AZURITE_ACCOUNT}", emulator.url);
    create_container(&account_url, "dumps").await;
    let opts = options(&[
        ("azure_storage_account_name", AZURITE_ACCOUNT),
        ("azure_storage_account_key", AZURITE_KEY),
        ("azure_storage_endpoint", &account_url),
        ("azure_allow_http", "true"),
    ]);
    let provider = EgressProvider::new("azure", "az://dumps/snapdump/ci", &opts).unwrap();
    let mut builder =
        object_store::azure::MicrosoftAzureBuilder::new().with_container_name("dumps");
    for (k, v) in &opts {
        builder = builder.with_config(k.parse().unwrap(), v);
    }
    let store = builder.build().unwrap();
    dump_and_check(
        &target,
        provider,
        &store,
        "az://dumps/snapdump/ci/",
        "snapdump/ci",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_to_s3_against_s3s_fs() {
    let target = Target::spawn(&["--touch-mb", "32"]);
    let emulator = s3s_fs("snapdump-access", "snapdump-secret");
    // s3s-fs keeps a bucket as a folder of its root.
    let root = emulator._dir.path();
    std::fs::create_dir(root.join("dumps")).unwrap();
    let opts = options(&[
        ("aws_endpoint", &emulator.url),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "snapdump-access"),
        ("aws_secret_access_key", "snapdump-secret"),
        ("aws_region", "us-east-1"),
        ("aws_virtual_hosted_style_request", "false"),
    ]);
    let provider = EgressProvider::new("s3", "s3://dumps/snapdump/ci", &opts).unwrap();
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name("dumps");
    for (k, v) in &opts {
        builder = builder.with_config(k.parse().unwrap(), v);
    }
    let store = builder.build().unwrap();
    dump_and_check(
        &target,
        provider,
        &store,
        "s3://dumps/snapdump/ci/",
        "snapdump/ci",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_fails_the_operation_and_releases_the_target() {
    let target = Target::spawn(&[]);
    // A wrong secret: the store refuses the upload.
    let emulator = s3s_fs("snapdump-access", "snapdump-secret");
    std::fs::create_dir(emulator._dir.path().join("dumps")).unwrap();
    let opts = options(&[
        ("aws_endpoint", &emulator.url),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "snapdump-access"),
        ("aws_secret_access_key", "not-the-secret"),
        ("aws_region", "us-east-1"),
    ]);
    let provider = EgressProvider::new("s3", "s3://dumps/x", &opts).unwrap();
    let (state, key) = state_with_key(1, vec![provider]);
    let app = router(&state);
    let reply = get(
        &app,
        &format!("/dump?pid={}&egressProvider=s3", target.pid()),
        &key,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let op = wait_finished(&app, &reply.location(), &key, Duration::from_secs(120)).await;
    assert_eq!(op["status"], "Failed", "{op}");
    assert_eq!(op["error"]["code"], "egress_failed", "{op}");
    assert_eq!(op["resourceLocation"], serde_json::Value::Null);
    assert_running_untraced(target.pid());
    assert_eq!(state.dumps_in_progress(), 0);
}
