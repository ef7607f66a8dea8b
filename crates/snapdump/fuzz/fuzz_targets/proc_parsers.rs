//! The /proc parsers on arbitrary bytes: they may reject input, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapdump::process::{link_map, procfs};

fuzz_target!(|data: &[u8]| {
    let maps = procfs::parse_maps(data);
    // Every mapping the parser accepts is a real range (len() underflows otherwise).
    let total: u64 = maps.iter().map(|m| m.len()).fold(0, u64::wrapping_add);
    std::hint::black_box(total);
    let _ = procfs::parse_stat(data);
    let _ = procfs::parse_status(data);
    let _ = link_map::parse_auxv(data);
});
