//! Backtraces: framehop walks each thread's stack with the modules' CFI (`.eh_frame`,
//! `.eh_frame_hdr`, `.debug_frame`), falling back to frame pointers where a module has none;
//! when it stops short, the stack is scanned for a word that is a return address (it points
//! into a module's code, right after a call instruction) and the walk goes on from there, as
//! Breakpad does.
//!
//! Stack bytes come from the dump; code and unwind tables from the module files on this
//! machine (the vDSO from the dump). A module whose file has another build id than the dump
//! records is not used: its CFI would describe other code.

use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Unwinder};
use object::{Object, ObjectSection, ObjectSegment};

use crate::Options;
use crate::bytes::hex;
use crate::memory::Memory;
use crate::model::{Frame, Hex, Report, Stack};
use crate::symbols::ModuleSymbols;

/// The vDSO: `[vdso]` in ELF cores (NT_FILE does not list it), `linux-vdso.so.1` in
/// Breakpad's module lists. Its image is read from the dump.
fn is_vdso(path: &str) -> bool {
    path == "[vdso]" || path.starts_with("linux-vdso.so") || path.starts_with("linux-gate.so")
}

/// Frames per thread at most (deep recursion is cut there).
const MAX_FRAMES: usize = 256;
/// How far above the stack pointer scanning looks for a return address.
const SCAN_BYTES: u64 = 16 << 10;
/// Module files larger than this are not read for unwinding.
const MAX_MODULE_FILE: u64 = 1 << 30;

/// A module ready for unwinding and symbols.
struct Loaded {
    path: String,
    start: u64,
    end: u64,
    /// avma − svma.
    bias: u64,
    /// The file's (or image's) bytes, and its executable segments as (svma, size, offset).
    image: Arc<Vec<u8>>,
    code: Vec<(u64, u64, u64)>,
    symbols: Option<ModuleSymbols>,
}

impl Loaded {
    fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Up to `len` code bytes ending at `avma` (exclusive), when `avma` is in executable code.
    fn code_before(&self, avma: u64, len: u64) -> Option<&[u8]> {
        let svma = avma.wrapping_sub(self.bias);
        let &(start, _, offset) = self
            .code
            .iter()
            .find(|&&(start, size, _)| start < svma && svma <= start.saturating_add(size))?;
        let within = svma - start;
        let take = within.min(len);
        let to = usize::try_from(offset.checked_add(within)?).ok()?;
        let from = to - take as usize;
        self.image.get(from..to)
    }
}

/// Fills `report.stacks` (and the modules' `symbol_file`), adding warnings for modules that
/// cannot be used.
pub fn stacks(report: &mut Report, memory: &dyn Memory, options: &Options) {
    let mut unwinder: UnwinderX86_64<Vec<u8>> = UnwinderX86_64::new();
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut missing = Vec::new();
    for module in &mut report.modules {
        if module.size == 0 {
            continue;
        }
        let end = module.base.0.saturating_add(module.size);
        let found = if is_vdso(&module.path) {
            memory
                .read_vec(module.base.0, module.size.min(1 << 20) as usize)
                .map(|bytes| (bytes, None))
        } else {
            let mut found = None;
            for candidate in crate::module_file_candidates(&module.path, options.sysroot.as_deref())
            {
                let Ok(meta) = std::fs::metadata(&candidate) else {
                    continue;
                };
                // Paths come from the dump: only regular, non-empty files of a sane size (an
                // empty size is what /proc files claim, and they may never end).
                if !meta.is_file() || meta.len() == 0 || meta.len() > MAX_MODULE_FILE {
                    continue;
                }
                let mut bytes = Vec::new();
                let read = std::fs::File::open(&candidate).and_then(|f| {
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(f, MAX_MODULE_FILE),
                        &mut bytes,
                    )
                });
                if read.is_ok() {
                    found = Some((bytes, Some(candidate)));
                    break;
                }
            }
            found
        };
        let Some((bytes, path)) = found else {
            // A vDSO the dump does not hold (Breakpad's mini dumps) costs little: frames are
            // rarely in it.
            if !is_vdso(&module.path) {
                missing.push(module.path.clone());
            }
            continue;
        };
        let Ok(file) = object::File::parse(bytes.as_slice()) else {
            report.warnings.push(format!(
                "{}: not an ELF file on this machine: no names or CFI for it",
                module.path
            ));
            continue;
        };
        let file_id = file.build_id().ok().flatten().map(hex);
        match (&module.build_id, &file_id) {
            (Some(dumped), Some(on_disk)) if dumped != on_disk && path.is_some() => {
                report.warnings.push(format!(
                    "{}: the file on this machine has build id {on_disk}, the dump {dumped}: \
                     not used (another build)",
                    module.path
                ));
                continue;
            }
            (None, Some(on_disk)) => {
                module.build_id = Some(on_disk.clone());
                module.build_id_source = Some("file".into());
            }
            _ => {}
        }
        // The mapping of file offset 0 is at `base`; the segment holding offset 0 says which
        // svma that is.
        let first = file
            .segments()
            .min_by_key(|s| s.address())
            .map_or(0, |s| s.address().wrapping_sub(s.file_range().0) & !0xfff);
        let bias = module.base.0.wrapping_sub(first);
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            Some((
                s.address()..s.address().saturating_add(s.size()),
                s.uncompressed_data().ok()?.into_owned(),
            ))
        };
        let text = section(".text");
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr = section(".eh_frame_hdr");
        let got = file
            .section_by_name(".got")
            .map(|s| s.address()..s.address().saturating_add(s.size()));
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: text.as_ref().map(|t| t.0.clone()),
            text: text.map(|t| t.1),
            got_svma: got,
            eh_frame_svma: eh_frame.as_ref().map(|t| t.0.clone()),
            eh_frame: eh_frame.map(|t| t.1),
            eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|t| t.0.clone()),
            eh_frame_hdr: eh_frame_hdr.map(|t| t.1),
            debug_frame: section(".debug_frame").map(|t| t.1),
            ..Default::default()
        };
        unwinder.add_module(framehop::Module::new(
            module.path.clone(),
            module.base.0..end,
            bias,
            info,
        ));
        let code = file
            .segments()
            .filter(|s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0))
            .map(|s| (s.address(), s.file_range().1, s.file_range().0))
            .collect();
        let symbols = match &path {
            Some(p) => {
                ModuleSymbols::from_file(p, module.build_id.as_deref(), options.sysroot.as_deref())
            }
            None => ModuleSymbols::from_image(&bytes),
        };
        module.symbol_file = Some(match &path {
            Some(p) => p.display().to_string(),
            None => "(the dump's memory)".into(),
        });
        loaded.push(Loaded {
            path: module.path.clone(),
            start: module.base.0,
            end,
            bias,
            image: Arc::new(bytes),
            code,
            symbols,
        });
    }
    if !missing.is_empty() {
        report.warnings.push(format!(
            "{} module files are not on this machine{}: their frames have no names and are \
             unwound by frame pointers or scanning: {}",
            missing.len(),
            if options.sysroot.is_some() {
                " (nor under --sysroot)"
            } else {
                " (use --sysroot)"
            },
            missing.join(", ")
        ));
    }

    let all: Vec<(u64, u64, String)> = report
        .modules
        .iter()
        .map(|m| (m.base.0, m.base.0.saturating_add(m.size), m.path.clone()))
        .collect();
    let walker = Walker {
        unwinder: &unwinder,
        memory,
        modules: &loaded,
        all: &all,
    };
    let mut cache = CacheX86_64::<_>::new();
    let stacks = report
        .threads
        .iter()
        .map(|thread| {
            let mut stack = walker.walk(&mut cache, thread.ip.0, thread.sp.0, thread.bp.0);
            stack.tid = thread.tid;
            stack
        })
        .collect();
    report.stacks = Some(stacks);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    Context,
    Cfi,
    Scan,
}

/// What every thread's walk shares.
struct Walker<'a> {
    unwinder: &'a UnwinderX86_64<Vec<u8>>,
    memory: &'a dyn Memory,
    /// The modules with files (or images) loaded.
    modules: &'a [Loaded],
    /// Every module as (start, end, path), for naming frames in modules without a file.
    all: &'a [(u64, u64, String)],
}

impl Walker<'_> {
    fn walk(&self, cache: &mut CacheX86_64, ip: u64, sp: u64, bp: u64) -> Stack {
        let (unwinder, memory, modules, all) = (self.unwinder, self.memory, self.modules, self.all);
        let mut stack = Stack::default();
        let mut found: Vec<(u64, Trust)> = vec![(ip, Trust::Context)];
        let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut address = FrameAddress::from_instruction_pointer(ip);
        let mut read_stack = |addr: u64| memory.read_u64(addr).ok_or(());
        loop {
            if found.len() >= MAX_FRAMES {
                stack.incomplete = Some(format!("cut at {MAX_FRAMES} frames"));
                break;
            }
            let sp_before = regs.sp();
            let step = unwinder.unwind_frame(address, &mut regs, cache, &mut read_stack);
            let failure = match step {
                Ok(Some(ra)) if ra != 0 && regs.sp() > sp_before => {
                    found.push((ra, Trust::Cfi));
                    match FrameAddress::from_return_address(ra) {
                        Some(a) => {
                            address = a;
                            continue;
                        }
                        None => break,
                    }
                }
                Ok(Some(0)) | Ok(None) => break,
                Ok(Some(_)) => "the stack pointer did not move up".to_string(),
                Err(e) => e.to_string(),
            };
            // Scan from where the failed frame's stack pointer was.
            match scan(memory, modules, sp_before) {
                Some((ra, slot)) => {
                    found.push((ra, Trust::Scan));
                    regs.set_sp(slot.saturating_add(8));
                    regs.set_ip(ra);
                    match FrameAddress::from_return_address(ra) {
                        Some(a) => address = a,
                        None => break,
                    }
                }
                None => {
                    stack.incomplete = Some(failure);
                    break;
                }
            }
        }
        stack.frames = found
            .into_iter()
            .enumerate()
            .map(|(index, (addr, trust))| symbolize(modules, all, index, addr, trust))
            .collect();
        stack
    }
}

/// The first word at or above `sp` that looks like a return address.
fn scan(memory: &dyn Memory, modules: &[Loaded], sp: u64) -> Option<(u64, u64)> {
    let mut slot = sp;
    let end = sp.saturating_add(SCAN_BYTES);
    while slot < end {
        let value = memory.read_u64(slot)?;
        if let Some(module) = modules.iter().find(|m| m.contains(value))
            && module.code_before(value, 7).is_some_and(ends_with_call)
        {
            return Some((value, slot));
        }
        slot = slot.saturating_add(8);
    }
    None
}

/// Whether `code` ends with a call instruction (so its end is a return address).
fn ends_with_call(code: &[u8]) -> bool {
    let at = |back: usize| code.len().checked_sub(back).map(|i| code[i]);
    let modrm_is_call = |m: u8| (m >> 3) & 7 == 2;
    // call rel32
    if at(5) == Some(0xe8) {
        return true;
    }
    // call r/m64: FF /2 with 0, 1 or 4 displacement bytes, an optional SIB.
    for (len, mods) in [
        (2usize, 3u8),
        (2, 0),
        (3, 1),
        (3, 0),
        (4, 1),
        (6, 2),
        (6, 0),
        (7, 2),
    ] {
        if at(len) == Some(0xff)
            && let Some(m) = at(len - 1)
            && modrm_is_call(m)
            && (m >> 6) == mods
        {
            return true;
        }
    }
    false
}

fn symbolize(
    modules: &[Loaded],
    all: &[(u64, u64, String)],
    index: usize,
    addr: u64,
    trust: Trust,
) -> Frame {
    let mut frame = Frame {
        index,
        address: Hex(addr),
        trust: match trust {
            Trust::Context => "context",
            Trust::Cfi => "cfi",
            Trust::Scan => "scan",
        }
        .into(),
        ..Frame::default()
    };
    // A return address points after the call: look the call itself up.
    let probe = if index == 0 {
        addr
    } else {
        addr.wrapping_sub(1)
    };
    let Some(module) = modules.iter().find(|m| m.contains(probe)) else {
        if let Some((start, _, path)) = all.iter().find(|m| m.0 <= probe && probe < m.1) {
            frame.module = Some(path.clone());
            frame.module_offset = Some(Hex(addr.wrapping_sub(*start)));
        }
        return frame;
    };
    frame.module = Some(module.path.clone());
    frame.module_offset = Some(Hex(addr.wrapping_sub(module.start)));
    if let Some(symbols) = &module.symbols {
        let symbol = symbols.lookup(probe.wrapping_sub(module.bias));
        frame.function = symbol.function;
        frame.inlined = symbol.inlined;
        frame.file = symbol.file;
        frame.line = symbol.line;
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_instructions() {
        assert!(ends_with_call(&[0x90, 0x90, 0xe8, 1, 2, 3, 4]));
        assert!(ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0xd0])); // call rax
        assert!(ends_with_call(&[0x90, 0xff, 0x15, 1, 2, 3, 4])); // call [rip+x]
        assert!(ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0xff, 0x50, 0x08])); // call [rax+8]
        assert!(!ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0xe0])); // jmp rax
        assert!(!ends_with_call(&[0x90; 7]));
        assert!(!ends_with_call(&[]));
    }
}
