//! Fuzz target: see `flagstaff::fuzzing::wal_replay` for the input format and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flagstaff::fuzzing::wal_replay(data));
