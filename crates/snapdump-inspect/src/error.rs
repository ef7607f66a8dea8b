//! Errors that stop a dump from being read at all. Damage inside a dump that could be read
//! in part is not an error: it goes to [`crate::Report::errors`].

use std::io;

/// Why nothing could be read from a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Io {
        path: String,
        kind: io::ErrorKind,
        message: String,
    },
    #[error("the file is empty")]
    Empty,
    #[error(
        "not an ELF core or a minidump (the file starts with {magic}; expected 7f 45 4c 46 \
         for an ELF core or 4d 44 4d 50 (\"MDMP\") for a minidump)"
    )]
    UnknownFormat { magic: String },
    #[error("an ELF file but not a core (e_type {e_type}: {what}); inspect reads ET_CORE files")]
    NotACore { e_type: u16, what: &'static str },
    #[error("unsupported dump: {0}")]
    Unsupported(String),
    #[error("truncated {what}: the file has {have} bytes, {needed} are needed")]
    Truncated {
        what: &'static str,
        have: u64,
        needed: u64,
    },
    #[error("damaged {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("cannot decompress the zstd stream: {0}")]
    Decompress(String),
}

impl Error {
    /// A stable name for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Error::Io { .. } => "Io",
            Error::Empty => "Empty",
            Error::UnknownFormat { .. } => "UnknownFormat",
            Error::NotACore { .. } => "NotACore",
            Error::Unsupported(_) => "Unsupported",
            Error::Truncated { .. } => "Truncated",
            Error::Malformed { .. } => "Malformed",
            Error::Decompress(_) => "Decompress",
        }
    }

    pub(crate) fn io(path: &std::path::Path, error: &io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
