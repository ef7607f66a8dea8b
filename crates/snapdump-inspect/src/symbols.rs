//! Function names for addresses: DWARF through `addr2line` (inlined functions, file and
//! line), else the ELF symbol table (`.symtab`, or `.dynsym` in stripped libraries). Names
//! are demangled (Rust and C++).
//!
//! Folklore: Debian's libraries are stripped; their debug info, when installed (`-dbg`
//! packages), lives at /usr/lib/debug/.build-id/xx/rest.debug, found by build id.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol};

/// What one address resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbol {
    pub function: Option<String>,
    /// Inlined into `function`, innermost first.
    pub inlined: Vec<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A module's symbols.
pub enum ModuleSymbols {
    File {
        main: Box<addr2line::Loader>,
        /// Separate debug info found by build id.
        debug: Option<Box<addr2line::Loader>>,
    },
    /// An image read from the dump (the vDSO): its symbol table only.
    Image(Vec<(u64, String)>),
}

impl ModuleSymbols {
    pub fn from_file(path: &Path, build_id: Option<&str>, sysroot: Option<&Path>) -> Option<Self> {
        let main = addr2line::Loader::new(path).ok()?;
        let debug = build_id
            .and_then(|id| debug_file(id, sysroot))
            .and_then(|p| addr2line::Loader::new(p).ok());
        Some(ModuleSymbols::File {
            main: Box::new(main),
            debug: debug.map(Box::new),
        })
    }

    pub fn from_image(bytes: &[u8]) -> Option<Self> {
        let file = object::File::parse(bytes).ok()?;
        let mut symbols: Vec<(u64, String)> = file
            .dynamic_symbols()
            .chain(file.symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            .filter_map(|s| Some((s.address(), s.name().ok()?.to_string())))
            .collect();
        symbols.sort();
        symbols.dedup_by_key(|s| s.0);
        Some(ModuleSymbols::Image(symbols))
    }

    /// The symbol at `svma` (an address as stated in the module's file).
    pub fn lookup(&self, svma: u64) -> Symbol {
        match self {
            ModuleSymbols::File { main, debug } => {
                let from_dwarf = debug
                    .as_deref()
                    .and_then(|d| dwarf_lookup(d, svma))
                    .or_else(|| dwarf_lookup(main, svma));
                let symbol_name = || {
                    debug
                        .as_deref()
                        .and_then(|d| d.find_symbol(svma))
                        .or_else(|| main.find_symbol(svma))
                        .map(demangle)
                };
                match from_dwarf {
                    Some(mut symbol) => {
                        if symbol.function.is_none() {
                            symbol.function = symbol_name();
                        }
                        symbol
                    }
                    None => Symbol {
                        function: symbol_name(),
                        ..Symbol::default()
                    },
                }
            }
            ModuleSymbols::Image(symbols) => {
                let i = symbols.partition_point(|s| s.0 <= svma);
                Symbol {
                    function: i.checked_sub(1).map(|i| demangle(&symbols[i].1)),
                    ..Symbol::default()
                }
            }
        }
    }
}

fn dwarf_lookup(loader: &addr2line::Loader, svma: u64) -> Option<Symbol> {
    let mut frames = loader.find_frames(svma).ok()?;
    // Innermost first; the last is the function the code physically belongs to, and its
    // location is the line in it (the others' are lines inside the inlined functions).
    let mut names = Vec::new();
    let mut location = None;
    while let Ok(Some(frame)) = frames.next() {
        if let Some(l) = &frame.location {
            location = Some((l.file.map(str::to_string), l.line));
        }
        if let Some(name) = frame.function.as_ref().and_then(|f| f.demangle().ok()) {
            names.push(name.into_owned());
        }
    }
    if names.is_empty() && location.is_none() {
        return None;
    }
    let function = names.pop();
    names.retain(|n| Some(n) != function.as_ref());
    let (file, line) = location.unwrap_or_default();
    Some(Symbol {
        function,
        inlined: names,
        file,
        line,
    })
}

fn demangle(name: &str) -> String {
    addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned()
}

/// `/usr/lib/debug/.build-id/ab/cdef….debug`, under the sysroot first.
fn debug_file(build_id: &str, sysroot: Option<&Path>) -> Option<PathBuf> {
    if build_id.len() < 3 || !build_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let relative = format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &build_id[..2],
        &build_id[2..]
    );
    let mut candidates = Vec::new();
    if let Some(root) = sysroot {
        candidates.push(root.join(&relative));
    }
    candidates.push(Path::new("/").join(&relative));
    candidates.into_iter().find(|p| p.is_file())
}
