//! The TOML configuration file.
//!
//! ```toml
//! urls = ["https://127.0.0.1:52323"]
//! max_concurrent_dumps = 1
//!
//! [authentication]
//! api_key_hashes = ["sha256:…"]          # from `snapdump generatekey`
//!
//! [tls]                                   # without it a self-signed certificate is made
//! certificate = "/etc/snapdump/cert.pem"
//! private_key = "/etc/snapdump/key.pem"
//!
//! [egress.dumps]
//! url = "s3://bucket/prefix"              # or az://container/prefix, file:///dir
//! options = { aws_endpoint = "http://127.0.0.1:9000", aws_allow_http = "true" }
//! ```
//!
//! `options` are object_store's configuration keys (`aws_*`, `azure_*`), applied on top of the
//! standard `AWS_*` / `AZURE_STORAGE_*` environment variables.
//!
//! ## Collection rules
//!
//! The rules of `snapdump watch`, run by the server for as long as it runs: each dump a rule
//! takes goes straight to a named egress provider ([`crate::rules`]).
//!
//! ```toml
//! [collection_rules.high-cpu]
//! process = { name = "myservice" }       # or { pid = 1234 }
//! triggers = { cpu_above = 90, mem_above = "2GiB" }
//! type = "WithHeap"                       # Mini | WithHeap (default) | Triage | Full
//! format = "elf"                          # elf (default) | minidump
//! egress = "dumps"                        # a provider of [egress.NAME] or --egress (required)
//! count = 1                               # dumps before the rule is Finished (default 1)
//! spacing = "30s"                         # the least time between two dumps (default 10s)
//! poll = "1s"                             # how often thresholds are sampled (default 1s)
//! duration = "8h"                         # stop watching after this long (default: never)
//! tags = ["incident-42"]                  # added to each operation (with rule:NAME)
//! ```
//!
//! Triggers, any combination (the first to fire takes the dump):
//!
//! | key | fires when |
//! |---|---|
//! | `cpu_above`, `cpu_below` | CPU use over the polling interval, percent of one core |
//! | `mem_above`, `mem_below` | resident memory: bytes, or `"512MiB"`, `"2G"`… |
//! | `threads_above`, `fds_above` | at least this many threads, open file descriptors |
//! | `signal = ["SIGUSR1", …]` | the process is about to receive the signal (then gets it) |
//! | `on_crash = true` | the process is about to die of a crash signal |
//! | `on_exit = true` | the process is exiting |
//! | `every = "10m"` | no event: a dump at once, then every so often (alone only) |
//!
//! `process = { name = … }` waits for such a process to appear and follows it when it
//! restarts; `{ pid = … }` watches that process until it ends. Signals, crashes and exits trace
//! the process with ptrace (never stopping it but to dump); thresholds only read `/proc`.
//! Durations are numbers of seconds or text like `"500ms"`, `"30s"`, `"10m"`, `"1h"`.
//! Every rule is checked when the server starts: an unknown egress provider, an unknown
//! signal, a rule without triggers or a bad value is a config error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen: `https://HOST:PORT` or `http://HOST:PORT`.
    #[serde(default)]
    pub urls: Vec<String>,
    /// How many dumps may be under way at once; more get 429 (default 1).
    pub max_concurrent_dumps: Option<usize>,
    #[serde(default)]
    pub authentication: AuthConfig,
    pub tls: Option<TlsConfig>,
    /// Named egress providers.
    #[serde(default)]
    pub egress: BTreeMap<String, EgressConfig>,
    /// Named collection rules: watch triggers whose dumps go to an egress provider.
    #[serde(default)]
    pub collection_rules: BTreeMap<String, RuleConfig>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `sha256:<hex>` hashes of the accepted API keys.
    #[serde(default)]
    pub api_key_hashes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file with the certificate chain.
    pub certificate: PathBuf,
    /// A PEM file with the private key.
    pub private_key: PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// `file:///dir`, `s3://bucket/prefix` or `az://container/prefix`.
    pub url: String,
    /// object_store configuration keys and values (`aws_endpoint`, `azure_storage_account_name`…).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// One `[collection_rules.NAME]` table, as written; [`crate::rules::Rule::new`] checks it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub process: ProcessConfig,
    #[serde(default)]
    pub triggers: TriggersConfig,
    /// Mini, WithHeap (default), Triage or Full.
    #[serde(rename = "type")]
    pub dump_type: Option<String>,
    /// elf (default) or minidump.
    pub format: Option<String>,
    /// The egress provider the dumps go to.
    pub egress: String,
    /// Dumps to take before the rule is finished (default 1).
    pub count: Option<u32>,
    /// The least time between two dumps (default 10 s).
    pub spacing: Option<DurationValue>,
    /// How often thresholds are sampled (default 1 s).
    pub poll: Option<DurationValue>,
    /// Stop watching after this long (default: for as long as the server runs).
    pub duration: Option<DurationValue>,
    /// Tags for each operation, besides `rule:NAME`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The process a rule watches: `{ pid = N }` or `{ name = "x" }`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    pub pid: Option<i32>,
    pub name: Option<String>,
}

/// A rule's triggers, as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    pub cpu_above: Option<f64>,
    pub cpu_below: Option<f64>,
    pub mem_above: Option<SizeValue>,
    pub mem_below: Option<SizeValue>,
    pub threads_above: Option<u64>,
    pub fds_above: Option<u64>,
    /// Signal names or numbers: `"SIGUSR1"`, `"USR1"`, `10`.
    #[serde(default)]
    pub signal: Vec<SignalValue>,
    #[serde(default)]
    pub on_crash: bool,
    #[serde(default)]
    pub on_exit: bool,
    /// No event: a dump at once, then one every so often.
    pub every: Option<DurationValue>,
}

/// Bytes, or text with a unit: `"512MiB"`, `"2G"`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// Seconds, or text with a unit: `"500ms"`, `"30s"`, `"10m"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(f64),
    Text(String),
}

/// A signal's number or name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SignalValue {
    Number(i32),
    Name(String),
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let text = r#"
            urls = ["http://127.0.0.1:0"]
            max_concurrent_dumps = 3
            [authentication]
            api_key_hashes = ["sha256:00"]
            [tls]
            certificate = "c.pem"
            private_key = "k.pem"
            [egress.s3]
            url = "s3://bucket/p"
            options = { aws_endpoint = "http://127.0.0.1:9000" }
            [egress.local]
            url = "file:///tmp"
        "#;
        let config = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.max_concurrent_dumps, Some(3));
        assert_eq!(config.egress.len(), 2);
        assert_eq!(
            config.egress["s3"].options["aws_endpoint"],
            "http://127.0.0.1:9000"
        );
        assert_eq!(config.tls.unwrap().private_key, PathBuf::from("k.pem"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::parse("max_dumps = 2", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("max_dumps"), "{err}");
    }
}
