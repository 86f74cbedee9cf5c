//! Fuzz target: see `flagstaff::fuzzing::request_decoder` for the input format and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flagstaff::fuzzing::request_decoder(data));
