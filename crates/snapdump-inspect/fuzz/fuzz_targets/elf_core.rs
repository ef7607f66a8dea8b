//! The ELF core reader on arbitrary bytes: libFuzzer mutates the seeds in corpus/elf_core
//! (a snapdump mini core cut down to its headers, notes and ELF header pages). Every input
//! gets the ELF magic so the fuzzer spends its time inside the reader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = b"\x7fELF".to_vec();
    input.extend_from_slice(data.get(4..).unwrap_or_default());
    if let Ok(report) = snapdump_inspect::inspect_bytes(&input, &Default::default()) {
        let _ = snapdump_inspect::text::render(&report, &Default::default());
        let _ = report.write_json(std::io::sink());
    }
});
