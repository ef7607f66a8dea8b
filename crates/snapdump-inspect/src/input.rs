//! Getting at a dump's bytes: plain files are read in place (positioned reads, never the whole
//! file); zstd streams are decompressed first, to an unnamed temporary file (cores can be far
//! larger than memory) or, for in-memory input, to memory with a cap.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
pub const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
pub const MINIDUMP_MAGIC: [u8; 4] = *b"MDMP";

/// Decompressed in-memory input larger than this is cut (and reported): only
/// [`crate::inspect_bytes`] decompresses to memory, and it serves fuzzing and tests.
pub const MAX_IN_MEMORY: usize = 256 << 20;

/// Random access to the dump's bytes.
pub trait ReadAt {
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads from `offset` until `buf` is full or the input ends; returns the bytes read.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize;

    /// `len` bytes at `offset`, or fewer when the input ends first.
    fn read_vec(&self, offset: u64, len: usize) -> Vec<u8> {
        let available = self.len().saturating_sub(offset).min(len as u64) as usize;
        let mut buf = vec![0u8; available];
        let n = self.read_at(offset, &mut buf);
        buf.truncate(n);
        buf
    }
}

impl ReadAt for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let Ok(start) = usize::try_from(offset) else {
            return 0;
        };
        let Some(rest) = self.get(start..) else {
            return 0;
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }
}

/// A file read with positioned reads.
pub struct FileInput {
    file: File,
    len: u64,
}

impl FileInput {
    pub fn new(file: File) -> io::Result<FileInput> {
        let len = file.metadata()?.len();
        Ok(FileInput { file, len })
    }
}

impl ReadAt for FileInput {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        done
    }
}

/// The dump's bytes after decompression, and what decompression found.
pub struct Opened {
    /// The (decompressed) file, positioned anywhere.
    pub file: File,
    /// A path that reaches the same bytes (the original file, or a named temporary file that
    /// lives as long as this value): the minidump reader maps it.
    pub path: std::path::PathBuf,
    pub compressed: bool,
    /// A damaged or truncated zstd stream: what was decompressed is kept, and this says why it
    /// ends there.
    pub decompress_error: Option<String>,
    _temp: Option<tempfile::TempPath>,
}

/// The first four bytes, or fewer.
pub fn magic_of(src: &dyn ReadAt) -> Vec<u8> {
    src.read_vec(0, 4)
}

/// Opens `path`; a zstd stream is decompressed into a temporary file first.
pub fn open(path: &Path) -> Result<Opened> {
    let mut file = File::open(path).map_err(|e| Error::io(path, &e))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::io(
            path,
            &io::Error::new(io::ErrorKind::IsADirectory, "a folder, not a dump"),
        ));
    }
    let mut magic = [0u8; 4];
    let n = FileInput::new(file.try_clone().map_err(|e| Error::io(path, &e))?)
        .map_err(|e| Error::io(path, &e))?
        .read_at(0, &mut magic);
    if n < 4 || magic != ZSTD_MAGIC {
        return Ok(Opened {
            file,
            path: path.to_path_buf(),
            compressed: false,
            decompress_error: None,
            _temp: None,
        });
    }
    let mut temp = tempfile::NamedTempFile::new().map_err(|e| Error::Io {
        path: "a temporary file for the decompressed dump (set TMPDIR)".into(),
        kind: e.kind(),
        message: e.to_string(),
    })?;
    let decompress_error = match decompress_into(&mut file, temp.as_file_mut()) {
        Ok(error) => error,
        Err(WriteFailed(e)) => {
            return Err(Error::Io {
                path: format!("{} (the decompressed dump)", temp.path().display()),
                kind: e.kind(),
                message: e.to_string(),
            });
        }
    };
    let (file, temp_path) = temp.into_parts();
    Ok(Opened {
        file,
        path: temp_path.to_path_buf(),
        compressed: true,
        decompress_error,
        _temp: Some(temp_path),
    })
}

struct WriteFailed(io::Error);

/// Streams a zstd file into `out`. A read or decode failure stops the stream and is returned
/// as `Ok(Some(message))` with what was decoded so far kept in `out`; failing to write
/// `out` is an error.
fn decompress_into(input: &mut File, out: &mut File) -> Result<Option<String>, WriteFailed> {
    let mut decoder = match zstd::stream::read::Decoder::new(io::BufReader::new(input)) {
        Ok(d) => d,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut sink = io::BufWriter::new(out);
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => sink.write_all(&buf[..n]).map_err(WriteFailed)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                sink.flush().map_err(WriteFailed)?;
                return Ok(Some(e.to_string()));
            }
        }
    }
    sink.flush().map_err(WriteFailed)?;
    Ok(None)
}

/// In-memory input: zstd is decompressed to memory (at most [`MAX_IN_MEMORY`] bytes).
pub fn from_bytes(bytes: &[u8]) -> (std::borrow::Cow<'_, [u8]>, bool, Option<String>) {
    if bytes.len() < 4 || bytes[..4] != ZSTD_MAGIC {
        return (std::borrow::Cow::Borrowed(bytes), false, None);
    }
    let mut out = Vec::new();
    let error = match zstd::stream::read::Decoder::new(bytes) {
        Err(e) => Some(e.to_string()),
        Ok(decoder) => {
            let mut limited = decoder.take(MAX_IN_MEMORY as u64 + 1);
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match limited.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(e.to_string()),
                }
            }
        }
    };
    let error = if out.len() > MAX_IN_MEMORY {
        out.truncate(MAX_IN_MEMORY);
        Some(format!(
            "more than {MAX_IN_MEMORY} bytes decompressed in memory: cut there"
        ))
    } else {
        error
    };
    (std::borrow::Cow::Owned(out), true, error)
}
