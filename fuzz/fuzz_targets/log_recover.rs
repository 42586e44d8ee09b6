#![no_main]
// Placeholder until the log module lands (issue 3).
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
