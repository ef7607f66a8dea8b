//! The dynamic linker's list of loaded objects: auxv → program headers → `PT_DYNAMIC` →
//! `DT_DEBUG` → `r_debug` → `r_map` → `l_next`...
//!
//! Debuggers find shared libraries in a core through this list. Its nodes and their names live
//! in memory the loader allocated, so a mini dump must carry those bytes explicitly, or gdb says
//! "No shared libraries loaded" and shows `??` frames.

use super::memory::ProcessMemory;

pub const AT_PHDR: u64 = 3;
pub const AT_PHENT: u64 = 4;
pub const AT_PHNUM: u64 = 5;
pub const AT_BASE: u64 = 7;
pub const AT_ENTRY: u64 = 9;
pub const AT_SYSINFO_EHDR: u64 = 33;

const PT_DYNAMIC: u32 = 2;
const PT_PHDR: u32 = 6;
const DT_NULL: u64 = 0;
const DT_DEBUG: u64 = 21;

/// Size of the public part of `struct link_map` (l_addr, l_name, l_ld, l_next, l_prev).
pub const LINK_MAP_SIZE: u64 = 40;
/// Size of `struct r_debug` (with padding) on x86_64.
pub const R_DEBUG_SIZE: u64 = 40;
/// No loader keeps more objects than this; a longer list is a cycle or garbage.
const MAX_OBJECTS: usize = 16 * 1024;

/// One `struct link_map` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkMapEntry {
    /// Where the node itself lives.
    pub node_addr: u64,
    /// `l_addr`: the load bias.
    pub load_bias: u64,
    /// `l_name` and the bytes it points at (empty for the executable).
    pub name_addr: u64,
    pub name: Vec<u8>,
    /// `l_ld`: the object's dynamic section.
    pub dynamic: u64,
}

/// What the walk found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkMap {
    pub r_debug: Option<u64>,
    /// The executable's `PT_DYNAMIC` address and size.
    pub exe_dynamic: Option<(u64, u64)>,
    pub entries: Vec<LinkMapEntry>,
}

impl LinkMap {
    /// The byte ranges a debugger needs to walk the list, for dumps that keep little else.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        if let Some(r_debug) = self.r_debug {
            ranges.push((r_debug, r_debug + R_DEBUG_SIZE));
        }
        if let Some((addr, size)) = self.exe_dynamic {
            ranges.push((addr, addr + size));
        }
        for entry in &self.entries {
            ranges.push((entry.node_addr, entry.node_addr + LINK_MAP_SIZE));
            if entry.name_addr != 0 {
                ranges.push((
                    entry.name_addr,
                    entry.name_addr + entry.name.len() as u64 + 1,
                ));
            }
        }
        ranges
    }
}

/// Parse `/proc/PID/auxv` into (type, value) pairs, stopping at `AT_NULL`.
pub fn parse_auxv(auxv: &[u8]) -> Vec<(u64, u64)> {
    auxv.chunks_exact(16)
        .map(|pair| {
            let key = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
            let value = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
            (key, value)
        })
        .take_while(|&(key, _)| key != 0)
        .collect()
}

pub fn auxv_value(auxv: &[(u64, u64)], key: u64) -> Option<u64> {
    auxv.iter().find(|&&(k, _)| k == key).map(|&(_, v)| v)
}

/// Walk the loader's list. Anything unreadable ends the walk with what was found so far.
pub fn read_link_map(memory: &dyn ProcessMemory, auxv: &[(u64, u64)]) -> LinkMap {
    let mut map = LinkMap::default();
    let Some((dynamic, size)) = exe_dynamic_section(memory, auxv) else {
        return map;
    };
    map.exe_dynamic = Some((dynamic, size));
    let Some(bytes) = memory.read_vec(dynamic, size.min(64 * 1024) as usize) else {
        return map;
    };
    let r_debug = bytes
        .chunks_exact(16)
        .map(|d| {
            (
                u64::from_le_bytes(d[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(d[8..].try_into().expect("8 bytes")),
            )
        })
        .take_while(|&(tag, _)| tag != DT_NULL)
        .find(|&(tag, _)| tag == DT_DEBUG)
        .map(|(_, value)| value)
        .filter(|&value| value != 0);
    let Some(r_debug) = r_debug else {
        return map;
    };
    map.r_debug = Some(r_debug);
    let mut node = memory.read_u64(r_debug + 8).unwrap_or(0);
    while node != 0 && map.entries.len() < MAX_OBJECTS {
        if map.entries.iter().any(|e| e.node_addr == node) {
            break;
        }
        let Some(raw) = memory.read_vec(node, LINK_MAP_SIZE as usize) else {
            break;
        };
        let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8"));
        let name_addr = word(1);
        map.entries.push(LinkMapEntry {
            node_addr: node,
            load_bias: word(0),
            name_addr,
            name: read_c_string(memory, name_addr, 4096),
            dynamic: word(2),
        });
        node = word(3);
    }
    map
}

/// The executable's dynamic section, found through its program headers in memory.
fn exe_dynamic_section(memory: &dyn ProcessMemory, auxv: &[(u64, u64)]) -> Option<(u64, u64)> {
    let phdr = auxv_value(auxv, AT_PHDR)?;
    let phent = auxv_value(auxv, AT_PHENT).unwrap_or(56);
    let phnum = auxv_value(auxv, AT_PHNUM)?;
    if phent < 56 || phnum == 0 || phnum > 4096 {
        return None;
    }
    let table = memory.read_vec(phdr, (phent * phnum) as usize)?;
    let headers: Vec<(u32, u64, u64)> = table
        .chunks_exact(phent as usize)
        .map(|h| {
            let p_type = u32::from_le_bytes(h[0..4].try_into().expect("4"));
            let p_vaddr = u64::from_le_bytes(h[16..24].try_into().expect("8"));
            let p_memsz = u64::from_le_bytes(h[40..48].try_into().expect("8"));
            (p_type, p_vaddr, p_memsz)
        })
        .collect();
    // The load bias: where PT_PHDR landed against where it asked to be.
    let bias = headers
        .iter()
        .find(|h| h.0 == PT_PHDR)
        .map(|h| phdr.wrapping_sub(h.1))
        .unwrap_or(0);
    headers
        .iter()
        .find(|h| h.0 == PT_DYNAMIC)
        .map(|h| (bias.wrapping_add(h.1), h.2))
}

/// A NUL-terminated string of at most `max` bytes, read a page at a time.
pub fn read_c_string(memory: &dyn ProcessMemory, addr: u64, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if addr == 0 {
        return out;
    }
    let mut cursor = addr;
    while out.len() < max {
        let chunk = (4096 - (cursor % 4096)) as usize;
        let Some(bytes) = memory.read_vec(cursor, chunk.min(max - out.len())) else {
            break;
        };
        if let Some(nul) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..nul]);
            return out;
        }
        out.extend_from_slice(&bytes);
        cursor += bytes.len() as u64;
    }
    out
}
