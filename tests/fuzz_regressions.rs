//! Replays the fuzzers' seed corpora (`fuzz/seeds/<target>/`) and every input
//! a fuzzer ever crashed on (`tests/fuzz-regressions/<target>/`) through the
//! same entry points the fuzz targets call, so `cargo test` keeps each found
//! bug fixed and the harness code compiled. See docs/fuzzing.md.

use std::path::{Path, PathBuf};

use flagstaff::fuzzing;

/// Runs `target` on every input saved for `name`; fails naming each input
/// that panicked.
fn replay(name: &str, target: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs: Vec<PathBuf> = [
        root.join("fuzz/seeds").join(name),
        root.join("tests/fuzz-regressions").join(name),
    ]
    .iter()
    .filter_map(|dir| std::fs::read_dir(dir).ok())
    .flatten()
    .map(|e| e.unwrap().path())
    .filter(|p| p.is_file())
    .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no saved inputs for {name}");
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| target(&data)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{name} panicked on {failed:#?}");
}

#[test]
fn request_decoder_inputs_decode_the_same_in_any_pieces() {
    replay("request_decoder", fuzzing::request_decoder);
}

#[test]
fn validated_definitions_compile_and_evaluate() {
    replay("flag_definition", fuzzing::flag_definition);
}

#[test]
fn contexts_parse_exactly_as_json_objects() {
    replay("context", fuzzing::context);
}

#[test]
fn write_ahead_log_replays_arbitrary_segment_files() {
    replay("wal_replay", fuzzing::wal_replay);
}
