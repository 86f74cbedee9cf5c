//! Fuzz target: see `flagstaff::fuzzing::context` for the input format and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flagstaff::fuzzing::context(data));
