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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
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
