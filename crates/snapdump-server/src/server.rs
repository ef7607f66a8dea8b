//! Running the API: listeners from `--urls`, TLS through rustls (a self-signed certificate
//! made at start when none is configured, its fingerprint printed so clients can pin it),
//! authentication from the config and flags, the config's collection rules, graceful shutdown
//! on SIGINT and SIGTERM.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use snapdump::snapshot::guard::GuardianCommand;

use crate::auth::{self, Auth, BadHash};
use crate::config::{Config, ConfigError, TlsConfig};
use crate::egress::{EgressError, EgressProvider};
use crate::rules::{Rule, RuleError};
use crate::{AppState, app};

/// Where the server listens when neither `--urls` nor the config say.
pub const DEFAULT_URL: &str = "https://127.0.0.1:52323";

/// How long shutdown waits for connections and cancelled dumps.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything `snapdump serve` was asked for.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--urls`; empty: the config's, else [`DEFAULT_URL`].
    pub urls: Vec<String>,
    pub config: Config,
    /// `--egress NAME=URL`, added to (and replacing same-named) config providers.
    pub egress: Vec<(String, String)>,
    pub temp_apikey: bool,
    pub no_auth: bool,
    /// `--max-concurrent-dumps`; else the config's, else 1.
    pub max_concurrent_dumps: Option<usize>,
    /// The snapshot guardian ([`AppState::snapshot_guardian`]): `snapdump serve` gives
    /// `snapdump __snapshot-guard`; `None` (tests in process) runs no guardian.
    pub snapshot_guardian: Option<GuardianCommand>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error(transparent)]
    Hash(#[from] BadHash),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(
        "no API key is configured: run `snapdump generatekey` and add the hash it prints to \
         the config file's [authentication] api_key_hashes, or pass --temp-apikey for a \
         one-time key (or --no-auth, which lets anyone who can connect dump processes)"
    )]
    NoKeys,
    #[error("--no-auth and API keys exclude each other: drop one")]
    NoAuthWithKeys,
    #[error("URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

struct Bound {
    https: bool,
    listener: TcpListener,
    url: String,
}

/// A server with its listeners bound, not yet serving.
pub struct Server {
    state: AppState,
    bound: Vec<Bound>,
    tls: Option<RustlsConfig>,
    /// The one-time key of `--temp-apikey`.
    pub temp_key: Option<String>,
    /// SHA-256 of the TLS certificate, `AB:CD:…`.
    pub fingerprint: Option<String>,
    /// Whether the certificate was made at start.
    pub self_signed: bool,
}

/// `scheme://host:port` → (https, addresses).
fn parse_url(text: &str) -> Result<(bool, Vec<SocketAddr>), ServeError> {
    let bad = |reason: &str| ServeError::BadUrl {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| bad("expected http://HOST:PORT or https://HOST:PORT"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return Err(bad("give no path: the API is served at the root"));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad("give a port, e.g. :52323"))?;
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "*" | "+" | "0.0.0.0" => "0.0.0.0",
        other => other,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve the host: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("the host has no address"));
    }
    Ok((https, addrs))
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate and key PEMs, from the config or made now for the listening hosts.
fn certificate(
    tls: Option<&TlsConfig>,
    hosts: &[String],
) -> Result<(Vec<u8>, Vec<u8>, String, bool), ServeError> {
    match tls {
        Some(tls) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
            };
            let cert = read(&tls.certificate)?;
            let key = read(&tls.private_key)?;
            let first = CertificateDer::pem_slice_iter(&cert)
                .next()
                .ok_or_else(|| {
                    ServeError::Tls(format!("no certificate in {}", tls.certificate.display()))
                })?
                .map_err(|e| ServeError::Tls(format!("{}: {e}", tls.certificate.display())))?;
            let print = fingerprint(&first);
            Ok((cert, key, print, false))
        }
        None => {
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            for host in hosts {
                if !names.contains(host) && host != "0.0.0.0" {
                    names.push(host.clone());
                }
            }
            let made = rcgen::generate_simple_self_signed(names)
                .map_err(|e| ServeError::Tls(format!("cannot make a certificate: {e}")))?;
            let print = fingerprint(made.cert.der());
            Ok((
                made.cert.pem().into_bytes(),
                made.signing_key.serialize_pem().into_bytes(),
                print,
                true,
            ))
        }
    }
}

impl Server {
    /// Checks the settings, sets up authentication, egress and TLS, and binds every URL.
    pub async fn bind(settings: Settings) -> Result<Server, ServeError> {
        let Settings {
            urls,
            config,
            egress,
            temp_apikey,
            no_auth,
            max_concurrent_dumps,
            snapshot_guardian,
        } = settings;
        let hashes = &config.authentication.api_key_hashes;
        let mut temp_key = None;
        let auth = if no_auth {
            if temp_apikey || !hashes.is_empty() {
                return Err(ServeError::NoAuthWithKeys);
            }
            Auth::Disabled
        } else {
            let mut auth = Auth::from_hashes(hashes.iter().map(String::as_str))?;
            if temp_apikey {
                let key = auth::generate_key();
                auth.add_key(&key);
                temp_key = Some(key);
            }
            if matches!(&auth, Auth::Keys(keys) if keys.is_empty()) {
                return Err(ServeError::NoKeys);
            }
            auth
        };

        let mut providers = config.egress.clone();
        for (name, url) in egress {
            providers.insert(
                name,
                crate::config::EgressConfig {
                    url,
                    options: Default::default(),
                },
            );
        }
        let providers = providers
            .iter()
            .map(|(name, p)| EgressProvider::new(name, &p.url, &p.options))
            .collect::<Result<Vec<_>, _>>()?;
        let rules = config
            .collection_rules
            .iter()
            .map(|(name, rule)| {
                Rule::new(name, rule, |egress| {
                    providers.iter().any(|p| p.name == egress)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let urls = if !urls.is_empty() {
            urls
        } else if !config.urls.is_empty() {
            config.urls.clone()
        } else {
            vec![DEFAULT_URL.to_owned()]
        };
        let mut bound = Vec::new();
        for url in &urls {
            let (https, addrs) = parse_url(url)?;
            for addr in addrs {
                let listener =
                    TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
                let local = listener.local_addr()?;
                let scheme = if https { "https" } else { "http" };
                bound.push(Bound {
                    https,
                    listener,
                    url: format!("{scheme}://{local}"),
                });
            }
        }

        let (mut tls, mut print, mut self_signed) = (None, None, false);
        if bound.iter().any(|b| b.https) {
            // object_store's HTTP client and the listeners both use aws-lc-rs.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let hosts: Vec<String> = bound
                .iter()
                .filter_map(|b| b.listener.local_addr().ok())
                .map(|a| a.ip().to_string())
                .collect();
            let (cert, key, fp, made) = certificate(config.tls.as_ref(), &hosts)?;
            tls = Some(
                RustlsConfig::from_pem(cert, key)
                    .await
                    .map_err(|e| ServeError::Tls(e.to_string()))?,
            );
            print = Some(fp);
            self_signed = made;
        }

        let limit = max_concurrent_dumps
            .or(config.max_concurrent_dumps)
            .unwrap_or(1);
        let state = AppState::new(auth, providers, limit)
            .with_rules(rules)
            .with_snapshot_guardian(snapshot_guardian);
        Ok(Server {
            state,
            bound,
            tls,
            temp_key,
            fingerprint: print,
            self_signed,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The URLs listened on, ports resolved (`http://127.0.0.1:40123`).
    pub fn urls(&self) -> Vec<String> {
        self.bound.iter().map(|b| b.url.clone()).collect()
    }

    /// What the operator must see at start, one line each: listening URLs, the certificate,
    /// the one-time key, and the warning of `--no-auth`.
    pub fn announcement(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.state.auth.is_disabled() {
            lines.push(
                "WARNING: authentication is DISABLED (--no-auth): anyone who can connect can \
                 dump every process this server can trace, with all the secrets in their memory"
                    .to_owned(),
            );
        }
        for url in self.urls() {
            lines.push(format!("Now listening on: {url}"));
        }
        if let Some(print) = &self.fingerprint {
            let origin = if self.self_signed {
                "self-signed, made at start"
            } else {
                "from the config"
            };
            lines.push(format!(
                "TLS certificate ({origin}) SHA-256 fingerprint: {print}"
            ));
        }
        if let Some(key) = &self.temp_key {
            lines.push(format!("Authorization: Bearer {key}"));
        }
        lines
    }

    /// Starts the collection rules and serves until `shutdown` resolves, then stops the rules
    /// and cancels running dumps (releasing their targets and removing partial uploads) and
    /// closes the connections.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let router = app(self.state.clone());
        self.state.rules.start(&self.state);
        let mut handles = Vec::new();
        let mut servers = tokio::task::JoinSet::new();
        for bound in self.bound {
            let handle = axum_server::Handle::new();
            handles.push(handle.clone());
            let service = router.clone().into_make_service();
            match (&self.tls, bound.https) {
                (Some(tls), true) => {
                    let server =
                        axum_server::from_tcp_rustls(bound.listener, tls.clone())?.handle(handle);
                    servers.spawn(server.serve(service));
                }
                _ => {
                    let server = axum_server::from_tcp(bound.listener)?.handle(handle);
                    servers.spawn(server.serve(service));
                }
            }
        }
        let failure = tokio::select! {
            () = shutdown => None,
            Some(result) = servers.join_next() => Some(result),
        };
        self.state.rules.stop();
        let cancelled = self.state.operations.cancel_all();
        tracing::info!(cancelled, "shutting down");
        for handle in &handles {
            handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while (self.state.operations.running() > 0 || self.state.rules.running_threads() > 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while servers.join_next().await.is_some() {}
        tracing::debug!("listeners closed");
        match failure {
            Some(Ok(Err(e))) => Err(ServeError::Io(e)),
            Some(Err(e)) => Err(ServeError::Io(std::io::Error::other(e))),
            _ => Ok(()),
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// `snapdump serve`: binds, prints the announcement on stdout, serves until SIGINT or SIGTERM.
pub fn run_blocking(settings: Settings) -> Result<(), ServeError> {
    // A collection rule's watcher waits for SIGCHLD (its tracee stopped) in its own thread;
    // with SIGCHLD blocked everywhere else no other thread takes it first. (Threads inherit
    // the mask; child processes start with a clean one.)
    let _ = snapdump::sys::watch::block_sigchld();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("snapdump-serve")
        .on_thread_start(|| {
            let _ = snapdump::sys::watch::block_sigchld();
        })
        .build()?;
    let result = runtime.block_on(async {
        let server = Server::bind(settings).await?;
        for line in server.announcement() {
            if line.starts_with("WARNING") {
                tracing::warn!("{line}");
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        server.run(shutdown_signal()).await
    });
    // Dumps were cancelled and waited for; nothing left to finish.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (https, addrs) = parse_url("https://127.0.0.1:52323").unwrap();
        assert!(https);
        assert_eq!(addrs, vec!["127.0.0.1:52323".parse().unwrap()]);
        let (https, addrs) = parse_url("http://[::1]:0/").unwrap();
        assert!(!https);
        assert_eq!(addrs[0].port(), 0);
        assert_eq!(
            parse_url("http://*:80").unwrap().1[0].ip().to_string(),
            "0.0.0.0"
        );
        for bad in [
            "127.0.0.1:80",
            "ftp://h:1",
            "http://h",
            "http://h:x",
            "http://h:1/api",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_look_like_openssl_s() {
        let print = fingerprint(b"x");
        assert_eq!(print.len(), 32 * 3 - 1);
        assert!(print.chars().all(|c| c == ':' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn certificates_are_made() {
        let (cert, key, print, made) = certificate(None, &["10.0.0.1".into()]).unwrap();
        assert!(made);
        assert!(
            String::from_utf8(cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(String::from_utf8(key).unwrap().contains("PRIVATE KEY"));
        assert_eq!(print.len(), 95);
    }
}
