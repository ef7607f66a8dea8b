//! Loaded ELF images seen through the dump's memory: a module's headers sit in its first page,
//! which snapdump keeps in every mode (and the kernel keeps by coredump_filter bit 4), and its
//! PT_NOTE segment usually sits in that page too: that is where the build id comes from.

use object::elf::{NT_GNU_BUILD_ID, PT_LOAD, PT_NOTE};

use crate::bytes::{u16_at, u32_at, u64_at};
use crate::memory::Memory;

/// The program headers of the image loaded at `base`, read from the dump's memory.
pub fn program_headers(memory: &dyn Memory, base: u64) -> Option<Vec<ProgramHeader>> {
    let header = memory.read_vec(base, 64)?;
    if header[..4] != crate::input::ELF_MAGIC || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let phoff = u64_at(&header, 32)?;
    let phentsize = u16_at(&header, 54)? as usize;
    let phnum = (u16_at(&header, 56)? as usize).min(256);
    if phentsize < 56 {
        return None;
    }
    let table = memory.read_vec(base.checked_add(phoff)?, phentsize * phnum)?;
    Some(
        table
            .chunks_exact(phentsize)
            .filter_map(ProgramHeader::parse)
            .collect(),
    )
}

#[derive(Clone, Copy, Debug)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_filesz: u64,
}

impl ProgramHeader {
    fn parse(b: &[u8]) -> Option<ProgramHeader> {
        Some(ProgramHeader {
            p_type: u32_at(b, 0)?,
            p_offset: u64_at(b, 8)?,
            p_vaddr: u64_at(b, 16)?,
            p_filesz: u64_at(b, 32)?,
        })
    }
}

/// The load bias of an image at `base`: where its address 0 is mapped. `base` is the start of
/// the mapping of file offset 0, which holds the PT_LOAD with offset 0.
pub fn load_bias(phdrs: &[ProgramHeader], base: u64) -> u64 {
    let first = phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .min_by_key(|p| p.p_vaddr);
    match first {
        Some(p) => base.wrapping_sub(p.p_vaddr.wrapping_sub(p.p_offset) & !0xfff),
        None => base,
    }
}

/// The GNU build id of the image loaded at `base`, from its notes in the dump's memory.
pub fn build_id_in_memory(memory: &dyn Memory, base: u64) -> Option<Vec<u8>> {
    let phdrs = program_headers(memory, base)?;
    let bias = load_bias(&phdrs, base);
    phdrs
        .iter()
        .filter(|p| p.p_type == PT_NOTE && p.p_filesz <= 1 << 16)
        .find_map(|p| {
            let notes = memory.read_vec(bias.wrapping_add(p.p_vaddr), p.p_filesz as usize)?;
            build_id_in_notes(&notes)
        })
}

/// Walks notes (4-byte aligned, as GNU notes are) for NT_GNU_BUILD_ID.
pub fn build_id_in_notes(notes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let namesz = u32_at(notes, at)? as usize;
        let descsz = u32_at(notes, at + 4)? as usize;
        let kind = u32_at(notes, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at.checked_add(namesz.checked_next_multiple_of(4)?)?;
        let next = desc_at.checked_add(descsz.checked_next_multiple_of(4)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc.to_vec());
        }
        at = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_walk() {
        let mut notes = Vec::new();
        // An unrelated note, then the build id.
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&16u32.to_le_bytes());
        notes.extend_from_slice(&5u32.to_le_bytes());
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0; 16]);
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&3u32.to_le_bytes());
        notes.extend_from_slice(&3u32.to_le_bytes());
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0xab, 0xcd, 0xef, 0]);
        assert_eq!(build_id_in_notes(&notes), Some(vec![0xab, 0xcd, 0xef]));
        assert_eq!(build_id_in_notes(&notes[..notes.len() - 4]), None);
        let mut huge = notes.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(build_id_in_notes(&huge), None);
    }
}
