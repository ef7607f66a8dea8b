//! The module list: one entry per mapped ELF file (and the vDSO), with its GNU build id.
//!
//! A module's base is the start of the file's mapping at offset 0, its size the span of the
//! file's consecutive mappings, its name the path the process mapped. The build id is read
//! from the ELF notes in the process's memory (the first page of every ELF file is in every
//! plan), else from the file (through `/proc/PID/root` or `/proc/PID/map_files`); files without
//! one get Breakpad's fallback identifier, the first 4 KiB of `.text` folded into 16 bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use object::elf::FileHeader64;
use object::elf::{NT_GNU_BUILD_ID, PT_NOTE};
use object::read::ReadCache;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection};

use crate::capture::Capture;
use crate::process::memory::ProcessMemory;
use crate::process::procfs::{Backing, Mapping};
use crate::select::is_shared_anonymous;

/// Breakpad's name for the vDSO.
pub const VDSO_NAME: &str = "linux-gate.so";
/// No ELF file has notes larger than this; a bigger PT_NOTE is garbage.
const MAX_NOTES: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub base: u64,
    pub end: u64,
    pub name: String,
    /// The GNU build id (or the fallback identifier); `None` when neither could be read.
    pub identifier: Option<Vec<u8>>,
    /// Index of the mapping at `base`.
    pub first_mapping: usize,
    /// Whether any of its mappings is executable (a file mapped only as data is no module).
    pub has_code: bool,
}

impl Module {
    pub fn size(&self) -> u64 {
        self.end - self.base
    }
}

/// Same file: device, inode and path.
fn same_file(a: &Mapping, b: &Mapping) -> bool {
    a.dev_major == b.dev_major
        && a.dev_minor == b.dev_minor
        && a.inode == b.inode
        && a.file_path() == b.file_path()
}

fn is_elf_file(capture: &Capture, mapping: &Mapping, memory: &dyn ProcessMemory) -> bool {
    const MAGIC: &[u8] = b"\x7fELF";
    if mapping.perms.read && memory.read_vec(mapping.start, 4).as_deref() == Some(MAGIC) {
        return true;
    }
    // Unreadable in memory (or not yet faulted in): ask the file.
    open_mapped_file(capture.pid, mapping).is_some_and(|mut file| {
        let mut magic = [0u8; 4];
        Read::read_exact(&mut file, &mut magic).is_ok() && magic == MAGIC
    })
}

/// The mapped file, opened as the process sees it.
pub fn open_mapped_file(pid: i32, mapping: &Mapping) -> Option<File> {
    let path = mapping.file_path()?;
    let root = crate::process::memory_dir(pid).join("root");
    File::open(root.join(path.strip_prefix("/").unwrap_or(path)))
        .ok()
        .or_else(|| {
            // Only /proc/PID has map_files (no task/TID copy).
            File::open(crate::process::proc_path(
                pid,
                &format!("map_files/{:x}-{:x}", mapping.start, mapping.end),
            ))
            .ok()
        })
}

/// Find the modules; the executable first, the rest in address order.
pub fn find_modules(capture: &Capture, memory: &dyn ProcessMemory) -> Vec<Module> {
    let mut modules: Vec<Module> = Vec::new();
    // The module the last file-backed mappings belong to.
    let mut open: Option<usize> = None;
    for (index, mapping) in capture.mappings.iter().enumerate() {
        if mapping.is_empty() {
            continue;
        }
        if mapping.backing == Backing::Vdso {
            open = None;
            modules.push(Module {
                base: mapping.start,
                end: mapping.end,
                name: VDSO_NAME.to_owned(),
                identifier: None,
                first_mapping: index,
                has_code: true,
            });
            continue;
        }
        let Some(path) = mapping.file_path() else {
            // Anonymous memory between a library's mappings (its .bss) does not end it.
            continue;
        };
        if is_shared_anonymous(mapping) {
            continue;
        }
        if let Some(current) = open {
            let first = &capture.mappings[modules[current].first_mapping];
            if same_file(first, mapping) && mapping.offset != 0 {
                modules[current].end = modules[current].end.max(mapping.end);
                modules[current].has_code |= mapping.perms.exec;
                continue;
            }
        }
        open = None;
        if mapping.offset == 0 && is_elf_file(capture, mapping, memory) {
            open = Some(modules.len());
            modules.push(Module {
                base: mapping.start,
                end: mapping.end,
                name: path.to_string_lossy().into_owned(),
                identifier: None,
                first_mapping: index,
                has_code: mapping.perms.exec,
            });
        }
    }
    modules.retain(|m| m.has_code);
    for module in &mut modules {
        let mapping = &capture.mappings[module.first_mapping];
        module.identifier = identifier_from_memory(memory, mapping).or_else(|| {
            let file = open_mapped_file(capture.pid, mapping)?;
            identifier(&ReadCache::new(file))
        });
    }
    if let Some(exe) = &capture.exe
        && let Some(position) = modules.iter().position(|m| Path::new(&m.name) == exe)
    {
        let module = modules.remove(position);
        modules.insert(0, module);
    }
    modules
}

/// The process's memory seen as the file mapped at offset 0: file offset `x` is at
/// `mapping.start + x`, up to the mapping's end.
struct MappedImage<'a> {
    memory: &'a dyn ProcessMemory,
    base: u64,
    len: u64,
    pos: u64,
}

impl Read for MappedImage<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if self.memory.read_into(self.base + self.pos, &mut buf[..n]) != 0 {
            return Err(std::io::Error::other("unreadable memory"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for MappedImage<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| std::io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

fn identifier_from_memory(memory: &dyn ProcessMemory, mapping: &Mapping) -> Option<Vec<u8>> {
    if !mapping.perms.read {
        return None;
    }
    identifier(&ReadCache::new(MappedImage {
        memory,
        base: mapping.start,
        len: mapping.len(),
        pos: 0,
    }))
}

/// The GNU build id, else Breakpad's fallback from `.text`.
fn identifier<R: object::read::ReadCacheOps>(cache: &ReadCache<R>) -> Option<Vec<u8>> {
    if let Some(id) = build_id_from_notes(cache) {
        return Some(id);
    }
    // Without a PT_NOTE build id: the section headers (whole files, and the vDSO, whose image
    // is entirely in memory).
    let file = ElfFile64::<Endianness, _>::parse(cache).ok()?;
    if let Ok(Some(id)) = file.build_id() {
        return Some(id.to_vec());
    }
    let text = file.section_by_name(".text")?;
    let data = text
        .data_range(text.address(), text.size().min(4096))
        .ok()??;
    Some(fold_text(data))
}

/// The GNU build id from the PT_NOTE segments (found by file offset).
fn build_id_from_notes<R: object::read::ReadCacheOps>(cache: &ReadCache<R>) -> Option<Vec<u8>> {
    let header = FileHeader64::<Endianness>::parse(cache).ok()?;
    let endian = header.endian().ok()?;
    for phdr in header.program_headers(endian, cache).ok()? {
        if phdr.p_type(endian) != PT_NOTE || phdr.p_filesz(endian) > MAX_NOTES {
            continue;
        }
        let Ok(Some(mut notes)) = phdr.notes(endian, cache) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"GNU" && note.n_type(endian) == NT_GNU_BUILD_ID {
                let id = note.desc();
                if !id.is_empty() {
                    return Some(id.to_vec());
                }
            }
        }
    }
    None
}

/// Breakpad's identifier for ELF files without a build id: the first page of `.text` XORed
/// into 16 bytes.
pub fn fold_text(text: &[u8]) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    for chunk in text.chunks(16) {
        for (slot, byte) in id.iter_mut().zip(chunk) {
            *slot ^= byte;
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes(Vec<u8>, u64);

    impl ProcessMemory for Bytes {
        fn read_into(&self, addr: u64, buf: &mut [u8]) -> u64 {
            let mut missing = 0;
            for (i, slot) in buf.iter_mut().enumerate() {
                match addr
                    .checked_sub(self.1)
                    .and_then(|o| self.0.get(o as usize + i))
                {
                    Some(&b) => *slot = b,
                    None => {
                        *slot = 0;
                        missing += 1;
                    }
                }
            }
            missing
        }
    }

    #[test]
    fn build_id_of_this_test_binary_matches_objects_reading() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let expected = object::File::parse(&*exe)
            .unwrap()
            .build_id()
            .unwrap()
            .map(<[u8]>::to_vec);
        // Lay the file out as if mapped at offset 0.
        let memory = Bytes(exe.clone(), 0x5555_0000_0000);
        let cache = ReadCache::new(MappedImage {
            memory: &memory,
            base: 0x5555_0000_0000,
            len: exe.len() as u64,
            pos: 0,
        });
        assert_eq!(build_id_from_notes(&cache), expected);
    }

    #[test]
    fn garbage_has_no_build_id() {
        let memory = Bytes(b"\x7fELF not really".to_vec(), 0x1000);
        let cache = ReadCache::new(MappedImage {
            memory: &memory,
            base: 0x1000,
            len: 15,
            pos: 0,
        });
        assert_eq!(build_id_from_notes(&cache), None);
    }

    #[test]
    fn text_folds_into_sixteen_bytes() {
        let mut text = vec![0u8; 40];
        text[0] = 1;
        text[16] = 2;
        text[33] = 4;
        assert_eq!(
            fold_text(&text),
            [3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
