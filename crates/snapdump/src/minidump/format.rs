//! On-disk helpers: the minidump's metadata (header, directory, streams, strings) is built in
//! one buffer whose offsets are the file's offsets, serialised with `scroll` from
//! `minidump-common`'s format definitions. Memory contents are not held here: they are streamed
//! after it.

use minidump_common::format::{MINIDUMP_LOCATION_DESCRIPTOR, RVA};
use scroll::ctx::{SizeWith, TryIntoCtx};
use scroll::{Endian, LE, Pwrite};

use crate::error::{Error, Result};

/// Bytes of `T` as written (the declared fields, no padding).
pub fn size_of<T: SizeWith<Endian>>() -> usize {
    T::size_with(&LE)
}

/// The minidump's metadata, from file offset 0 on.
#[derive(Debug, Default)]
pub struct Blob {
    bytes: Vec<u8>,
}

impl Blob {
    pub fn new() -> Blob {
        Blob::default()
    }

    /// The file offset the next byte goes to.
    pub fn pos(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Pad with zeros to a multiple of `align`.
    pub fn align(&mut self, align: usize) {
        let len = self.bytes.len().div_ceil(align) * align;
        self.bytes.resize(len, 0);
    }

    /// Reserve `len` zero bytes; returns their offset.
    pub fn reserve(&mut self, len: usize) -> u64 {
        let at = self.pos();
        self.bytes.resize(self.bytes.len() + len, 0);
        at
    }

    /// Append one structure; returns its offset.
    pub fn put<T>(&mut self, value: T) -> u64
    where
        T: TryIntoCtx<Endian, Error = scroll::Error> + SizeWith<Endian>,
    {
        let at = self.reserve(size_of::<T>());
        self.put_at(at, value);
        at
    }

    /// Write one structure over reserved bytes.
    pub fn put_at<T>(&mut self, at: u64, value: T)
    where
        T: TryIntoCtx<Endian, Error = scroll::Error> + SizeWith<Endian>,
    {
        let at = at as usize;
        let end = at + size_of::<T>();
        // The bytes were reserved with `size_of::<T>()`, so this cannot fail.
        self.bytes[at..end]
            .pwrite_with(value, 0, LE)
            .expect("structure fits its reserved bytes");
    }

    /// Append raw bytes; returns where they are.
    pub fn put_bytes(&mut self, data: &[u8]) -> MINIDUMP_LOCATION_DESCRIPTOR {
        let at = self.pos();
        self.bytes.extend_from_slice(data);
        location(at, data.len() as u64)
    }

    /// Append a `MINIDUMP_STRING`: the byte length (without the terminator), the UTF-16LE
    /// text and a NUL. Returns its offset.
    pub fn put_string(&mut self, text: &str) -> u64 {
        self.align(4);
        let units: Vec<u16> = text.encode_utf16().collect();
        let at = self.put((units.len() * 2) as u32);
        for unit in units.iter().chain(std::iter::once(&0)) {
            self.bytes.extend_from_slice(&unit.to_le_bytes());
        }
        at
    }

    /// The finished metadata; fails when it outgrew 32-bit offsets.
    pub fn finish(self) -> Result<Vec<u8>> {
        if self.bytes.len() as u64 > u64::from(u32::MAX) {
            return Err(too_large("the minidump's streams"));
        }
        Ok(self.bytes)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A location in the metadata (which stays under 4 GiB, checked by [`Blob::finish`]).
pub fn location(at: u64, size: u64) -> MINIDUMP_LOCATION_DESCRIPTOR {
    MINIDUMP_LOCATION_DESCRIPTOR {
        data_size: size.min(u64::from(u32::MAX)) as u32,
        rva: rva(at),
    }
}

/// A 32-bit offset; 0 (nothing) for offsets past 4 GiB, which the layout avoids.
pub fn rva(at: u64) -> RVA {
    u32::try_from(at).unwrap_or(0)
}

pub fn too_large(what: &str) -> Error {
    Error::Io {
        context: format!("laying out the minidump: {what} do not fit 32-bit offsets"),
        source: std::io::Error::from(std::io::ErrorKind::FileTooLarge),
    }
}

/// Bytes as text for the UTF-16 strings minidumps hold (invalid UTF-8 replaced).
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use minidump_common::format::MINIDUMP_DIRECTORY;

    #[test]
    fn strings_are_length_prefixed_utf16_with_a_terminator() {
        let mut blob = Blob::new();
        blob.put_bytes(b"x");
        let at = blob.put_string("ab");
        assert_eq!(at, 4, "strings are 4-aligned");
        let bytes = blob.finish().unwrap();
        assert_eq!(&bytes[4..], &[4, 0, 0, 0, b'a', 0, b'b', 0, 0, 0]);
    }

    #[test]
    fn structures_are_packed_as_declared() {
        let mut blob = Blob::new();
        let at = blob.put(MINIDUMP_DIRECTORY {
            stream_type: 7,
            location: location(0x20, 0x38),
        });
        assert_eq!(at, 0);
        assert_eq!(size_of::<MINIDUMP_DIRECTORY>(), 12);
        assert_eq!(
            blob.finish().unwrap(),
            [7, 0, 0, 0, 0x38, 0, 0, 0, 0x20, 0, 0, 0]
        );
    }
}
