//! Where dumps go: a `.partial` file renamed into place only when complete, written with large
//! positioned writes that leave long zero runs as holes, watched for free space.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

const PAGE: usize = 4096;
/// Bytes collected before one `pwrite`.
const WRITE_BUFFER: usize = 4 << 20;
/// Pieces at least this large are written from the caller's buffer, not copied into ours.
const WRITE_DIRECT_FROM: usize = 256 << 10;
/// How often (in bytes written) the free space is checked again.
/// The shortest run of zeros that becomes a hole.
pub const MIN_HOLE: usize = 4 * PAGE;
const SPACE_CHECK_EVERY: u64 = 64 << 20;

/// A dump being written. It has no name until it is complete: an unnamed `O_TMPFILE` file in
/// the destination folder, linked to its final name by [`DumpFile::commit`], so a dumper killed
/// mid-write (even by SIGKILL) leaves nothing behind. Filesystems without `O_TMPFILE` get a
/// visible `NAME.partial` instead, removed on every failure the dumper lives through. Dumps are
/// created `0600`: they hold the target's memory.
#[derive(Debug)]
pub struct DumpFile {
    file: Option<File>,
    /// The visible `.partial` path, when `O_TMPFILE` was not available.
    partial: Option<PathBuf>,
    destination: PathBuf,
    overwrite: bool,
}

impl DumpFile {
    /// Start a dump that will be named `destination`. Refuses when `destination` exists,
    /// unless `overwrite`.
    pub fn create(destination: &Path, overwrite: bool) -> Result<DumpFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = parent_dir(destination);
        if !dir.is_dir() {
            return Err(Error::OutputDirMissing { path: dir });
        }
        if !overwrite && destination.symlink_metadata().is_ok() {
            return Err(Error::OutputExists {
                path: destination.to_owned(),
            });
        }
        let not_writable = |source: std::io::Error| Error::OutputNotWritable {
            path: dir.clone(),
            source,
        };
        let unnamed = OpenOptions::new()
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        let (file, partial) = match unnamed {
            Ok(file) => (file, None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                let mut partial = destination.as_os_str().to_owned();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&partial)
                    .map_err(|source| match source.kind() {
                        std::io::ErrorKind::AlreadyExists => Error::OutputExists {
                            path: partial.clone(),
                        },
                        _ => not_writable(source),
                    })?;
                (file, Some(partial))
            }
            Err(e) => return Err(not_writable(e)),
        };
        Ok(DumpFile {
            file: Some(file),
            partial,
            destination: destination.to_owned(),
            overwrite,
        })
    }

    pub fn file(&self) -> &File {
        self.file.as_ref().expect("dump file used after commit")
    }

    /// The visible partial file, if this filesystem needed one.
    pub fn partial_path(&self) -> Option<&Path> {
        self.partial.as_deref()
    }

    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// fsync and give the file its name. Without `overwrite` a file that appeared meanwhile
    /// is never replaced.
    pub fn commit(mut self) -> Result<PathBuf> {
        let file = self.file.take().expect("committed once");
        file.sync_all()
            .map_err(|e| Error::io("syncing the dump", e))?;
        // On disk now: its pages need not stay in the host's page cache (advice only).
        let _ = sys::drop_written(&file, 0, 0);
        let exists = |_| Error::OutputExists {
            path: self.destination.clone(),
        };
        let failed = |what: &str, errno: sys::Errno| {
            Error::io(
                format!("{what} {}", self.destination.display()),
                errno.into(),
            )
        };
        match (&self.partial, self.overwrite) {
            (None, false) => {
                sys::link_unnamed_file(&file, &self.destination).map_err(|e| match e {
                    sys::Errno::EEXIST => exists(e),
                    e => failed("naming", e),
                })?
            }
            (None, true) => {
                // Link under a temporary name, then rename over the old file atomically.
                let mut temp = self.destination.as_os_str().to_owned();
                temp.push(format!(".{}.tmp", std::process::id()));
                let temp = PathBuf::from(temp);
                sys::link_unnamed_file(&file, &temp).map_err(|e| failed("naming", e))?;
                if let Err(e) = std::fs::rename(&temp, &self.destination) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(Error::io(
                        format!("replacing {}", self.destination.display()),
                        e,
                    ));
                }
            }
            (Some(partial), false) => {
                sys::rename_no_replace(partial, &self.destination).map_err(|e| match e {
                    sys::Errno::EEXIST => exists(e),
                    e => failed("renaming to", e),
                })?
            }
            (Some(partial), true) => std::fs::rename(partial, &self.destination)
                .map_err(|e| Error::io(format!("renaming to {}", self.destination.display()), e))?,
        }
        drop(file);
        // Make the new name itself durable.
        if let Ok(dir) = File::open(parent_dir(&self.destination)) {
            let _ = dir.sync_all();
        }
        self.partial = None;
        Ok(self.destination.clone())
    }
}

impl Drop for DumpFile {
    fn drop(&mut self) {
        if let Some(partial) = &self.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// The folder a path is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Keeps a reserve of free space on the dump's filesystem.
#[derive(Clone, Debug)]
pub struct SpaceGuard {
    pub dir: PathBuf,
    /// Bytes that must stay free.
    pub min_free: u64,
}

impl SpaceGuard {
    /// `min_free` default: 5% of the filesystem or 1 GiB, whichever is smaller.
    pub fn with_default_reserve(dir: &Path) -> SpaceGuard {
        let total = sys::filesystem_space(dir).map(|(_, t)| t).unwrap_or(0);
        SpaceGuard {
            dir: dir.to_owned(),
            min_free: (total / 20).min(1 << 30),
        }
    }

    /// Fail if writing `more` bytes would eat into the reserve.
    pub fn check(&self, more: u64) -> Result<()> {
        let Ok((available, _)) = sys::filesystem_space(&self.dir) else {
            return Ok(());
        };
        if available < more.saturating_add(self.min_free) {
            return Err(Error::InsufficientSpace {
                path: self.dir.clone(),
                needed: more,
                available,
                min_free: self.min_free,
            });
        }
        Ok(())
    }
}

/// Where a [`SparseWriter`]'s bytes go.
enum Sink<'a> {
    /// A file written with positioned writes; skipped ranges stay holes.
    File(&'a File),
    /// A zstd stream into a file; skipped ranges are compressed zeros.
    Zstd(Box<zstd::stream::write::Encoder<'static, std::io::BufWriter<&'a File>>>),
    /// Any byte stream (a pipe, an HTTP body); skipped ranges are written as zeros.
    Stream(Box<dyn Write + Send + 'a>),
}

impl std::fmt::Debug for Sink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::File(_) => "File",
            Sink::Zstd(_) => "Zstd",
            Sink::Stream(_) => "Stream",
        })
    }
}

/// Sequential writer of a dump in file order. On a plain file, all-zero pages and skipped
/// ranges become holes; on a stream (zstd, a pipe) they are written as zeros.
#[derive(Debug)]
pub struct SparseWriter<'a> {
    sink: Sink<'a>,
    buf: AlignedBuf,
    /// Stream offset of `buf[0]`.
    buf_start: u64,
    /// Bytes handed on (holes excluded).
    written: u64,
    guard: Option<SpaceGuard>,
    /// Bytes still expected, for the guard's checks.
    remaining_estimate: u64,
    since_check: u64,
    write_behind: Option<WriteBehind>,
    /// An `O_DIRECT` descriptor on the file, for the pieces aligned for it.
    direct: Option<File>,
}

/// Write-behind on a plain file: each window written is sent to disk at once, the window
/// before it waited for and dropped from the page cache. The final fsync then has little left
/// to do, and a dump of gigabytes neither piles up dirty pages nor pushes the host's cache out.
#[derive(Debug)]
struct WriteBehind {
    /// Writeback was started up to here.
    started: u64,
    /// On disk and dropped from the cache up to here.
    dropped: u64,
}

/// How much is written before its writeback starts.
const WRITE_BEHIND_WINDOW: u64 = 32 << 20;

impl<'a> SparseWriter<'a> {
    pub fn new(file: &'a File, guard: Option<SpaceGuard>, estimate: u64) -> SparseWriter<'a> {
        SparseWriter::with_sink(Sink::File(file), guard, estimate)
    }

    /// A zstd-compressed stream into `file` at `level` (1 is fast; 3 is zstd's default).
    pub fn compressed(
        file: &'a File,
        level: i32,
        guard: Option<SpaceGuard>,
        estimate: u64,
    ) -> Result<SparseWriter<'a>> {
        let encoder = zstd::stream::write::Encoder::new(
            std::io::BufWriter::with_capacity(WRITE_BUFFER, file),
            level,
        )
        .map_err(|e| Error::io("starting zstd", e))?;
        Ok(SparseWriter::with_sink(
            Sink::Zstd(Box::new(encoder)),
            guard,
            estimate,
        ))
    }

    /// Into any byte stream, e.g. an HTTP response body.
    pub fn stream(stream: Box<dyn Write + Send + 'a>) -> SparseWriter<'a> {
        SparseWriter::with_sink(Sink::Stream(stream), None, 0)
    }

    fn with_sink(sink: Sink<'a>, guard: Option<SpaceGuard>, estimate: u64) -> SparseWriter<'a> {
        SparseWriter {
            sink,
            buf: AlignedBuf::new(WRITE_BUFFER),
            buf_start: 0,
            written: 0,
            guard,
            remaining_estimate: estimate,
            since_check: 0,
            write_behind: None,
            direct: None,
        }
    }

    /// Send written data to disk as the dump goes and keep it out of the page cache (plain
    /// files only). Large page-aligned pieces (memory) are written with `O_DIRECT` where the
    /// filesystem has it: no copy into the cache, no writeback later, which on a dense dump
    /// is about a quarter of the kernel's work. The rest is sent a window behind and dropped
    /// from the cache. Either way the dump is paced by the disk, which is faster than letting
    /// dirty pages pile up until the kernel throttles the writer.
    pub fn write_behind(mut self) -> SparseWriter<'a> {
        if let Sink::File(file) = self.sink {
            self.write_behind = Some(WriteBehind {
                started: 0,
                dropped: 0,
            });
            self.direct = sys::open_direct(file).ok();
        }
        self
    }

    /// The offset the next byte goes to.
    pub fn position(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Bytes written so far (holes excluded; before compression).
    pub fn written(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Append bytes as they are.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        // Large pieces (memory, read in batches) go out from the caller's buffer: copying them
        // through ours first cost 7% of a dense dump's CPU.
        if data.len() >= WRITE_DIRECT_FROM {
            self.flush()?;
            return self.emit(data);
        }
        while !data.is_empty() {
            let take = self.buf.room().min(data.len());
            self.buf.extend(&data[..take]);
            data = &data[take..];
            if self.buf.room() == 0 {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Append memory contents; runs of at least [`MIN_HOLE`] zero bytes (whole pages) become
    /// holes, shorter ones are written: on ext4 every hole splits the file into another extent,
    /// which costs more than writing a few zero pages.
    pub fn write_sparse(&mut self, data: &[u8]) -> Result<()> {
        let mut written_to = 0;
        let mut offset = 0;
        while offset < data.len() {
            let zero_start = offset;
            while offset < data.len() && is_zero(&data[offset..(offset + PAGE).min(data.len())]) {
                offset = (offset + PAGE).min(data.len());
            }
            if offset - zero_start >= MIN_HOLE {
                self.write(&data[written_to..zero_start])?;
                self.skip((offset - zero_start) as u64)?;
                written_to = offset;
            }
            offset = (offset + PAGE).min(data.len());
        }
        self.write(&data[written_to..])
    }

    /// Leave a hole of `len` bytes.
    pub fn skip(&mut self, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if let Sink::File(_) = self.sink {
            self.flush()?;
            self.buf_start += len;
            return Ok(());
        }
        // Streams have no holes: zeros (cheap to compress).
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Pad with a hole up to `offset`.
    pub fn skip_to(&mut self, offset: u64) -> Result<()> {
        let position = self.position();
        assert!(offset >= position, "writer moved backwards");
        self.skip(offset - position)
    }

    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::replace(&mut self.buf, AlignedBuf::new(0));
        let result = self.emit(buf.as_slice());
        self.buf = buf;
        self.buf.clear();
        result
    }

    /// Hand `data` to the sink at the current position.
    fn emit(&mut self, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        self.since_check += len;
        if let Some(guard) = &self.guard
            && self.since_check >= SPACE_CHECK_EVERY
        {
            self.since_check = 0;
            guard.check(self.remaining_estimate.saturating_sub(self.written))?;
        }
        let at = self.buf_start;
        let result = match &mut self.sink {
            Sink::File(file) => write_file_at(file, &mut self.direct, data, at),
            Sink::Zstd(encoder) => encoder.write_all(data),
            Sink::Stream(stream) => stream.write_all(data),
        };
        result.map_err(|e| self.write_error(e))?;
        self.written += len;
        self.buf_start += len;
        if let (Sink::File(file), Some(behind)) = (&self.sink, &mut self.write_behind) {
            let end = self.buf_start;
            if end >= behind.started + WRITE_BEHIND_WINDOW {
                // Advice: a failure here shows again, as an error, at the final fsync.
                let _ = sys::start_writeback(file, behind.started, end - behind.started);
                if behind.started > behind.dropped {
                    let _ =
                        sys::drop_written(file, behind.dropped, behind.started - behind.dropped);
                    behind.dropped = behind.started;
                }
                behind.started = end;
            }
        }
        Ok(())
    }

    fn write_error(&self, e: std::io::Error) -> Error {
        match (e.raw_os_error(), &self.guard) {
            (Some(libc::ENOSPC), Some(guard)) => Error::InsufficientSpace {
                path: guard.dir.clone(),
                needed: self.remaining_estimate.saturating_sub(self.written),
                available: 0,
                min_free: guard.min_free,
            },
            _ => Error::io("writing the dump", e),
        }
    }

    /// Flush and close the stream, or set the file's length (a trailing hole needs it).
    /// Returns the dump's length before compression.
    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        let len = self.buf_start;
        let result = match self.sink {
            Sink::File(file) => file.set_len(len),
            Sink::Zstd(encoder) => encoder.finish().and_then(|mut w| w.flush()),
            Sink::Stream(mut stream) => stream.flush(),
        };
        result.map_err(|e| Error::io("finishing the dump", e))?;
        Ok(len)
    }
}

/// Write `data` at `offset`: through `direct` when buffer, offset and length suit `O_DIRECT`,
/// else (or when the filesystem turns it down) through the page cache.
fn write_file_at(
    file: &File,
    direct: &mut Option<File>,
    data: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    let aligned = |n: usize| n.is_multiple_of(sys::DIRECT_ALIGN);
    if let Some(fd) = direct
        && aligned(data.as_ptr() as usize)
        && aligned(data.len())
        && aligned(offset as usize)
    {
        match fd.write_all_at(data, offset) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                *direct = None
            }
            done => return done,
        }
    }
    file.write_all_at(data, offset)
}

/// What copying memory into a dump found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes copied.
    pub done: u64,
    /// Bytes that could not be read (handed on as zeros).
    pub unreadable: u64,
}

/// A byte buffer of fixed capacity whose first byte is aligned for `O_DIRECT` writes.
/// Allocated (zeroed) once and reused: what it held before is not cleared.
#[derive(Debug)]
struct AlignedBuf {
    mem: Vec<u8>,
    /// Offset of the aligned start in `mem`.
    base: usize,
    len: usize,
    capacity: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> AlignedBuf {
        if capacity == 0 {
            return AlignedBuf {
                mem: Vec::new(),
                base: 0,
                len: 0,
                capacity: 0,
            };
        }
        let mem = vec![0; capacity + sys::DIRECT_ALIGN];
        AlignedBuf {
            base: mem.as_ptr().align_offset(sys::DIRECT_ALIGN),
            mem,
            len: 0,
            capacity,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn room(&self) -> usize {
        self.capacity - self.len
    }

    fn as_slice(&self) -> &[u8] {
        &self.mem[self.base..self.base + self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn extend(&mut self, data: &[u8]) {
        self.grow(data.len()).copy_from_slice(data);
    }

    /// The next `n` bytes, now part of the buffer, holding whatever they held before.
    fn grow(&mut self, n: usize) -> &mut [u8] {
        assert!(n <= self.room(), "AlignedBuf overflow");
        let at = self.base + self.len;
        self.len += n;
        &mut self.mem[at..at + n]
    }
}

/// Up to [`crate::elf::READ_CHUNK`] bytes read in one go: several small runs, or part of a
/// large one.
struct Batch {
    buf: AlignedBuf,
    /// `(address, length)` of each piece in `buf`, in order.
    pieces: Vec<(u64, usize)>,
    unreadable: u64,
}

/// Batches in flight: one being read, one queued, one being written. The dumper's memory
/// stays at a few of them whatever the target's size.
const BATCHES: usize = 3;

/// Copy the `runs` of `memory` into `out`, reading on a thread of its own while this thread
/// writes. `locate` gives the file offset of an address, asked in the order of `runs` (which
/// is file order). Reading (a page walk and a copy in the kernel) and writing then take the
/// time of the slower, not of both. Pieces that follow each other in the file are written in
/// one call straight from the read buffer, so thousands of scattered pages laid end to end
/// cost one large (direct) write. Cancelling stops the reader at its next chunk.
pub fn copy_memory(
    memory: &dyn crate::process::memory::ProcessMemory,
    runs: impl Iterator<Item = (u64, u64)> + Send,
    locate: &mut dyn FnMut(u64) -> u64,
    out: &mut SparseWriter<'_>,
    progress: &mut dyn FnMut(u64),
    cancel: &crate::Cancel,
) -> Result<CopyStats> {
    use std::sync::mpsc;
    let chunk = crate::elf::READ_CHUNK;
    let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(1);
    let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
    for _ in 0..BATCHES {
        let _ = empty_tx.send(Batch {
            buf: AlignedBuf::new(chunk),
            pieces: Vec::new(),
            unreadable: 0,
        });
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<()> {
            // A closed channel means the writer stopped (an error): stop too.
            let Ok(mut batch) = empty_rx.recv() else {
                return Ok(());
            };
            for (start, end) in runs {
                let mut addr = start;
                while addr < end {
                    cancel.check()?;
                    let len = ((end - addr) as usize).min(chunk);
                    if batch.buf.room() < len {
                        if full_tx.send(batch).is_err() {
                            return Ok(());
                        }
                        let Ok(next) = empty_rx.recv() else {
                            return Ok(());
                        };
                        batch = next;
                    }
                    // No zeroing first: read_into sets what it cannot read to zero.
                    batch.unreadable += memory.read_into(addr, batch.buf.grow(len));
                    batch.pieces.push((addr, len));
                    addr += len as u64;
                }
            }
            if !batch.pieces.is_empty() {
                let _ = full_tx.send(batch);
            }
            Ok(())
        });
        let mut stats = CopyStats::default();
        let mut write = || -> Result<()> {
            for mut batch in full_rx.iter() {
                let data = batch.buf.as_slice();
                // (file offset, start in `data`, length) of pieces contiguous in the file.
                let mut span: Option<(u64, usize, usize)> = None;
                let mut at = 0;
                for &(addr, len) in &batch.pieces {
                    let offset = locate(addr);
                    match &mut span {
                        Some((start, _, span_len)) if *start + *span_len as u64 == offset => {
                            *span_len += len
                        }
                        _ => {
                            if let Some((start, from, span_len)) = span {
                                out.skip_to(start)?;
                                out.write_sparse(&data[from..from + span_len])?;
                            }
                            span = Some((offset, at, len));
                        }
                    }
                    at += len;
                    stats.done += len as u64;
                }
                if let Some((start, from, span_len)) = span {
                    out.skip_to(start)?;
                    out.write_sparse(&data[from..from + span_len])?;
                }
                stats.unreadable += batch.unreadable;
                progress(stats.done);
                // The reader may be done already: the writer answers a cancel too.
                cancel.check()?;
                batch.buf.clear();
                batch.pieces.clear();
                batch.unreadable = 0;
                let _ = empty_tx.send(batch);
            }
            Ok(())
        };
        let written = write();
        // Unblock a reader waiting to send or for a buffer.
        drop(full_rx);
        drop(empty_tx);
        let read = match reader.join() {
            Ok(read) => read,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        written?;
        read?;
        Ok(stats)
    })
}

fn is_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .all(|w| w == 0)
        && tail.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::{ByteFn, ProcessMemory};
    use std::os::unix::fs::MetadataExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("snapdump-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn zero_pages_become_holes() {
        let dir = temp_dir("sparse");
        let path = dir.join("x.core");
        let dump = DumpFile::create(&path, false).unwrap();
        let mut writer = SparseWriter::new(dump.file(), None, 0);
        writer.write(b"head").unwrap();
        writer.skip_to(4096).unwrap();
        let mut data = vec![0u8; 64 * 4096];
        data[0] = 1;
        // A zero page between two written ones is written: too short to be worth a hole.
        data[2 * 4096] = 3;
        data[63 * 4096 + 5] = 2;
        writer.write_sparse(&data).unwrap();
        writer.skip(1 << 20).unwrap();
        assert_eq!(writer.written(), 4 + 4 * 4096);
        writer.finish().unwrap();
        let final_path = dump.commit().unwrap();
        let meta = std::fs::metadata(&final_path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 4096 + 64 * 4096 + (1 << 20));
        assert!(
            meta.blocks() * 512 < 64 * 4096,
            "not sparse: {}",
            meta.blocks()
        );
        let back = std::fs::read(&final_path).unwrap();
        assert_eq!(&back[..4], b"head");
        assert_eq!(&back[4096..4096 + data.len()], &data[..]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Every byte reads as a function of its address; one page in seven reads as zeros.
    const PATTERN: ByteFn<fn(u64) -> u8> = ByteFn(|a| {
        if (a / PAGE as u64) % 7 == 3 {
            0
        } else {
            (a % 253) as u8 | 1
        }
    });

    #[test]
    fn scattered_pages_laid_end_to_end_read_back_whole() {
        let dir = temp_dir("direct");
        let path = dir.join("x.core");
        let dump = DumpFile::create(&path, false).unwrap();
        let mut writer = SparseWriter::new(dump.file(), None, 0).write_behind();
        let direct_at_start = writer.direct.is_some();
        writer.write(b"header").unwrap();
        let data_offset = 8192u64;
        // 3000 single pages (every third one, as a sparse heap), then a run of 8 MiB: more
        // than one read batch, both ways.
        let page = PAGE as u64;
        let mut runs: Vec<(u64, u64)> = (0..3000u64)
            .map(|i| (0x10_0000 + 3 * i * page, 0x10_0000 + (3 * i + 1) * page))
            .collect();
        runs.push((0x4000_0000, 0x4000_0000 + (8 << 20)));
        // File offset of each run's first byte: laid end to end after the header.
        let mut starts = Vec::new();
        let mut cursor = data_offset;
        for &(start, end) in &runs {
            starts.push((start, end, cursor));
            cursor += end - start;
        }
        let total = cursor;
        let mut current = 0;
        let mut locate = |addr: u64| {
            while addr >= starts[current].1 {
                current += 1;
            }
            starts[current].2 + (addr - starts[current].0)
        };
        writer.skip_to(data_offset).unwrap();
        let stats = copy_memory(
            &PATTERN,
            runs.clone().into_iter(),
            &mut locate,
            &mut writer,
            &mut |_| {},
            &crate::Cancel::default(),
        )
        .unwrap();
        assert_eq!(stats.done, total - data_offset);
        // Where the filesystem has direct I/O, the aligned pieces did not fall back.
        assert_eq!(writer.direct.is_some(), direct_at_start);
        assert_eq!(writer.finish().unwrap(), total);
        let final_path = dump.commit().unwrap();
        let back = std::fs::read(&final_path).unwrap();
        assert_eq!(back.len() as u64, total);
        assert_eq!(&back[..6], b"header");
        for &(start, end) in &runs {
            let offset = locate_in(&runs, data_offset, start) as usize;
            let mut expected = vec![0u8; (end - start) as usize];
            PATTERN.read_into(start, &mut expected);
            assert!(
                back[offset..offset + expected.len()] == expected[..],
                "run at {start:#x} differs"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn locate_in(runs: &[(u64, u64)], data_offset: u64, addr: u64) -> u64 {
        let mut cursor = data_offset;
        for &(start, end) in runs {
            if addr < end {
                return cursor + (addr - start);
            }
            cursor += end - start;
        }
        unreachable!()
    }

    #[test]
    fn compressed_dumps_decompress_to_the_same_bytes() {
        let dir = temp_dir("zstd");
        let path = dir.join("x.core.zst");
        let dump = DumpFile::create(&path, false).unwrap();
        let mut writer = SparseWriter::compressed(dump.file(), 1, None, 0).unwrap();
        writer.write(b"head").unwrap();
        writer.skip_to(4096).unwrap();
        writer.write_sparse(&[7u8; 8192]).unwrap();
        writer.skip(1 << 20).unwrap();
        assert_eq!(writer.finish().unwrap(), 4096 + 8192 + (1 << 20));
        dump.commit().unwrap();
        let packed = std::fs::read(&path).unwrap();
        assert!(packed.len() < 4096, "{} bytes", packed.len());
        let plain = zstd::decode_all(&packed[..]).unwrap();
        assert_eq!(plain.len(), 4096 + 8192 + (1 << 20));
        assert_eq!(&plain[..4], b"head");
        assert!(plain[4..4096].iter().all(|&b| b == 0));
        assert!(plain[4096..4096 + 8192].iter().all(|&b| b == 7));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn existing_files_are_kept_and_partials_removed() {
        let dir = temp_dir("exists");
        let path = dir.join("x.core");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            DumpFile::create(&path, false),
            Err(Error::OutputExists { .. })
        ));
        {
            let _dump = DumpFile::create(&path, true).unwrap();
            // Dropped without commit: a failure.
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "a partial file remains"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        assert!(matches!(
            DumpFile::create(&dir.join("missing/x.core"), false),
            Err(Error::OutputDirMissing { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commit_does_not_replace_a_file_that_appeared() {
        let dir = temp_dir("race");
        let path = dir.join("x.core");
        let dump = DumpFile::create(&path, false).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        assert!(matches!(dump.commit(), Err(Error::OutputExists { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "a partial file remains"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
