//! Egress providers: where `/dump?egressProvider=NAME` sends a dump, through object_store.
//!
//! - `file:///dir`: a folder. object_store writes `NAME#N` and renames it into place when the
//!   upload completes (and removes it on abort); the metadata goes beside the dump in
//!   `NAME.metadata.json`, as a folder has nowhere else to keep it.
//! - `s3://bucket/prefix`: credentials, region and endpoint from the `AWS_*` variables, then
//!   the provider's `options` (object_store keys: `aws_endpoint`, `aws_access_key_id`…).
//! - `az://container/prefix`: the `AZURE_STORAGE_*` variables, then `options`
//!   (`azure_storage_account_name`, `azure_storage_access_key`, `azure_storage_endpoint`…).
//!
//! Uploads are multipart and streamed: at most a few parts are in memory whatever the dump's
//! size. A dump that fails or is cancelled aborts its upload, so no partial object is left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutPayload, WriteMultipart,
};

/// Parts of this size are sent as they fill (S3 needs at least 5 MiB but for the last).
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// A provider that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress provider name {0:?}: use letters, digits, '-' and '_'")]
    BadName(String),
    #[error("egress provider {name}: {url:?} is not a URL ({reason})")]
    BadUrl {
        name: String,
        url: String,
        reason: String,
    },
    #[error(
        "egress provider {name}: unsupported scheme {scheme:?}: use file:///dir, \
         s3://bucket/prefix or az://container/prefix"
    )]
    UnsupportedScheme { name: String, scheme: String },
    #[error("egress provider {name}: unknown option {key:?} for {scheme}://")]
    UnknownOption {
        name: String,
        scheme: &'static str,
        key: String,
    },
    #[error("egress provider {name}: {source}")]
    Store {
        name: String,
        source: object_store::Error,
    },
    #[error("egress provider {name}: cannot create {path}: {source}")]
    Folder {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--egress {0:?}: expected NAME=URL")]
    BadArgument(String),
}

/// Which kind of store a provider writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressKind {
    File { root: PathBuf },
    S3,
    Azure,
}

/// What the object's metadata says about the dump.
#[derive(Clone, Debug, Default)]
pub struct DumpMetadata {
    pub operation_id: String,
    pub pid: i32,
    pub process_name: String,
    pub mode: String,
    pub format: String,
    pub tags: Vec<String>,
}

impl DumpMetadata {
    /// Key/value pairs: keys are valid C# identifiers (Azure's rule), values printable ASCII
    /// (they travel in HTTP headers).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let ascii = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        vec![
            ("operation_id", self.operation_id.clone()),
            ("pid", self.pid.to_string()),
            ("process_name", ascii(&self.process_name)),
            ("mode", self.mode.clone()),
            ("format", self.format.clone()),
            ("tags", ascii(&self.tags.join(","))),
        ]
    }
}

/// One named destination for dumps.
pub struct EgressProvider {
    pub name: String,
    /// The URL as configured, without a trailing `/`.
    pub url: String,
    pub kind: EgressKind,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for EgressProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProvider")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Splits `NAME=URL` from the command line.
pub fn parse_argument(text: &str) -> Result<(String, String), EgressError> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| EgressError::BadArgument(text.to_owned()))?;
    Ok((name.trim().to_owned(), url.trim().to_owned()))
}

impl EgressProvider {
    /// Sets a provider up (no connection is made until the first upload).
    pub fn new(
        name: &str,
        url: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<EgressProvider, EgressError> {
        if !valid_name(name) {
            return Err(EgressError::BadName(name.to_owned()));
        }
        let bad_url = |reason: String| EgressError::BadUrl {
            name: name.to_owned(),
            url: url.to_owned(),
            reason,
        };
        let store_error = |source| EgressError::Store {
            name: name.to_owned(),
            source,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad_url(e.to_string()))?;
        let prefix = parsed.path().trim_matches('/').to_owned();
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let unknown = |scheme, key: &str| EgressError::UnknownOption {
            name: name.to_owned(),
            scheme,
            key: key.to_owned(),
        };
        let (kind, store): (EgressKind, Arc<dyn ObjectStore>) = match parsed.scheme() {
            "file" => {
                let root = parsed
                    .to_file_path()
                    .map_err(|()| bad_url("not a local folder".into()))?;
                if let Some(key) = options.keys().next() {
                    return Err(unknown("file", key));
                }
                std::fs::create_dir_all(&root).map_err(|source| EgressError::Folder {
                    name: name.to_owned(),
                    path: root.clone(),
                    source,
                })?;
                let store = LocalFileSystem::new_with_prefix(&root)
                    .map_err(store_error)?
                    .with_fsync(true);
                (EgressKind::File { root }, Arc::new(store))
            }
            "s3" | "s3a" => {
                if host.is_empty() {
                    return Err(bad_url("no bucket".into()));
                }
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&host);
                for (key, value) in options {
                    let key = AmazonS3ConfigKey::from_str(key).map_err(|_| unknown("s3", key))?;
                    builder = builder.with_config(key, value);
                }
                let store = builder.build().map_err(store_error)?;
                (EgressKind::S3, with_prefix(store, &prefix))
            }
            "az" | "azure" | "adl" => {
                if host.is_empty() {
                    return Err(bad_url("no container".into()));
                }
                let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(&host);
                for (key, value) in options {
                    let key = AzureConfigKey::from_str(key).map_err(|_| unknown("az", key))?;
                    builder = builder.with_config(key, value);
                }
                let store = builder.build().map_err(store_error)?;
                (EgressKind::Azure, with_prefix(store, &prefix))
            }
            other => {
                return Err(EgressError::UnsupportedScheme {
                    name: name.to_owned(),
                    scheme: other.to_owned(),
                });
            }
        };
        Ok(EgressProvider {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            kind,
            store,
        })
    }

    /// Where an object of this provider can be found: a file path, or `s3://…`, `az://…`.
    pub fn resource_location(&self, object: &str) -> String {
        match &self.kind {
            EgressKind::File { root } => root.join(object).display().to_string(),
            _ => format!("{}/{object}", self.url),
        }
    }

    /// `stem.ext`, or `stem_N.ext` for the first N not yet taken in the store.
    pub async fn unique_name(&self, stem: &str, ext: &str) -> String {
        for n in 0..1000 {
            let name = match n {
                0 => format!("{stem}.{ext}"),
                n => format!("{stem}_{n}.{ext}"),
            };
            match self.store.head(&ObjectPath::from(name.as_str())).await {
                Err(object_store::Error::NotFound { .. }) => return name,
                Err(e) => {
                    tracing::debug!(provider = %self.name, "cannot check {name}: {e}");
                    return name;
                }
                Ok(_) => continue,
            }
        }
        format!("{stem}_{}.{ext}", uuid::Uuid::new_v4().simple())
    }

    /// Starts a multipart upload of `object` carrying `metadata`.
    pub async fn begin(
        &self,
        object: &str,
        metadata: &DumpMetadata,
    ) -> Result<Upload, object_store::Error> {
        let path = ObjectPath::from(object);
        let mut attributes = Attributes::new();
        if !matches!(self.kind, EgressKind::File { .. }) {
            attributes.insert(
                Attribute::ContentType,
                AttributeValue::from("application/octet-stream"),
            );
            for (key, value) in metadata.pairs() {
                attributes.insert(Attribute::Metadata(key.into()), AttributeValue::from(value));
            }
        }
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let upload = self.store.put_multipart_opts(&path, options).await?;
        Ok(Upload {
            writer: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            store: self.store.clone(),
            path,
            sidecar: matches!(self.kind, EgressKind::File { .. }).then(|| metadata.clone()),
            bytes: 0,
        })
    }
}

fn with_prefix(store: impl ObjectStore, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// An upload under way; [`Upload::finish`] makes the object appear, [`Upload::abort`] leaves
/// nothing behind.
pub struct Upload {
    writer: WriteMultipart,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    sidecar: Option<DumpMetadata>,
    bytes: u64,
}

impl Upload {
    /// Queues `chunk`, first waiting until few enough parts are in flight.
    pub async fn put(&mut self, chunk: Bytes) -> Result<(), object_store::Error> {
        self.writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        self.bytes += chunk.len() as u64;
        self.writer.put(chunk);
        Ok(())
    }

    /// Completes the upload; returns the bytes uploaded.
    pub async fn finish(self) -> Result<u64, object_store::Error> {
        self.writer.finish().await?;
        if let Some(metadata) = &self.sidecar {
            let json: serde_json::Map<String, serde_json::Value> = metadata
                .pairs()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
                .collect();
            let sidecar = ObjectPath::from(format!("{}.metadata.json", self.path));
            let body = serde_json::to_vec_pretty(&json).unwrap_or_default();
            if let Err(e) = self.store.put(&sidecar, PutPayload::from(body)).await {
                tracing::warn!("dump stored, but its metadata file could not be written: {e}");
            }
        }
        Ok(self.bytes)
    }

    /// Abandons the upload and removes what was sent.
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!("aborting the upload of {} failed: {e}", self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/sub", dir.path().display());
        let file = EgressProvider::new("local", &url, &BTreeMap::new()).unwrap();
        assert_eq!(
            file.kind,
            EgressKind::File {
                root: dir.path().join("sub")
            }
        );
        assert!(dir.path().join("sub").is_dir());
        assert_eq!(
            file.resource_location("a.core"),
            dir.path().join("sub/a.core").display().to_string()
        );

        let options: BTreeMap<String, String> = [
            ("aws_endpoint", "http://127.0.0.1:1"),
            ("aws_access_key_id", "k"),
            ("aws_secret_access_key", "s"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s3 = EgressProvider::new("s3", "s3://bucket/some/prefix/", &options).unwrap();
        assert_eq!(s3.kind, EgressKind::S3);
        assert_eq!(
            s3.resource_location("x.core"),
            "s3://bucket/some/prefix/x.core"
        );

        let bad = |name: &str, url: &str| EgressProvider::new(name, url, &BTreeMap::new());
        assert!(matches!(
            bad("a b", "file:///tmp"),
            Err(EgressError::BadName(_))
        ));
        assert!(matches!(
            bad("x", "gs://b"),
            Err(EgressError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            bad("x", "not a url"),
            Err(EgressError::BadUrl { .. })
        ));
        let mut wrong = BTreeMap::new();
        wrong.insert("aws_nonsense".to_owned(), "1".to_owned());
        assert!(matches!(
            EgressProvider::new("x", "s3://b", &wrong),
            Err(EgressError::UnknownOption { .. })
        ));
        assert_eq!(
            parse_argument("name=s3://b/p").unwrap(),
            ("name".to_owned(), "s3://b/p".to_owned())
        );
        assert!(parse_argument("nothing").is_err());
    }

    #[test]
    fn metadata_is_header_safe() {
        let metadata = DumpMetadata {
            process_name: "naïve\nname".into(),
            tags: vec!["a".into(), "b".into()],
            ..DumpMetadata::default()
        };
        let pairs = metadata.pairs();
        let name = &pairs.iter().find(|p| p.0 == "process_name").unwrap().1;
        assert_eq!(name, "na_ve_name");
        assert_eq!(pairs.iter().find(|p| p.0 == "tags").unwrap().1, "a,b");
    }
}
