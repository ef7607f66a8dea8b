//! The minidump reader on arbitrary bytes: libFuzzer mutates the seeds in corpus/minidump
//! (a minidump-writer mini dump of the test target). Every input gets the MDMP magic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = b"MDMP".to_vec();
    input.extend_from_slice(data.get(4..).unwrap_or_default());
    if let Ok(report) = snapdump_inspect::inspect_bytes(&input, &Default::default()) {
        let _ = snapdump_inspect::text::render(&report, &Default::default());
        let _ = report.write_json(std::io::sink());
    }
});
