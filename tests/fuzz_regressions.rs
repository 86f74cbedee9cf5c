//! Replays the fuzzers' seed corpora (`fuzz/seeds/<target>/`) and every input
//! a fuzzer ever crashed on (`tests/fuzz-regressions/<target>/`) through the
//! same entry points the fuzz targets call, so `cargo test` keeps each found
//! bug fixed and the harness code compiled. See docs/fuzzing.md.

mod common;

use std::path::{Path, PathBuf};

use flagstaff::fuzzing;
use serde_json::json;

use common::{cmd_err, cmd_str, serial, Server};

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

/// Found by the `flag_definition` harness: an imported allocation whose
/// ranges overlap was kept, so one variation served every user of a 50/50
/// rollout; one with a reversed range overflowed. The server now refuses it,
/// naming the allocation, and changes nothing.
#[test]
fn an_import_whose_allocation_does_not_split_the_buckets_is_refused() {
    let _guard = serial();
    let s = Server::start(&[]);
    let mut con = s.conn();
    let flag = |ranges: serde_json::Value| {
        json!({"flags": {"prod:half": {
            "on": true,
            "variations": [{"name": "a", "value": 1}, {"name": "b", "value": 2}],
            "off_variation": "a",
            "fallthrough": {"rollout": [{"variation": "a", "weight": 5000},
                                        {"variation": "b", "weight": 5000}]},
            "allocations": {"fallthrough": {"salt": "prod:half", "bucket_by": "key",
                                            "ranges": ranges}}
        }}})
        .to_string()
    };
    for (ranges, why) in [
        (
            json!({"a": [[0, 5000]], "b": [[0, 5000]]}),
            "bucket 0 is in two ranges",
        ),
        (
            json!({"a": [[0, 5000]], "b": [[9000, 4000], [0, 9000]]}),
            "\"b\" has range [9000, 4000]",
        ),
        (
            json!({"a": [[0, 5000]], "b": [[6000, 10000]]}),
            "bucket 5000 is in no range",
        ),
    ] {
        let err = cmd_err(&mut con, &["FLAG.IMPORT", &flag(ranges)]);
        assert!(
            err.starts_with("INVALID flags[\"prod:half\"].allocations.fallthrough: ")
                && err.contains(why),
            "{err}"
        );
        let stored: Option<String> = redis::cmd("FLAG.GET")
            .arg("prod:half")
            .query(&mut con)
            .unwrap();
        assert_eq!(stored, None, "a refused import stored the flag");
    }
    // A well-formed allocation is still kept as it was exported.
    let kept = json!({"a": [[0, 2000], [7000, 10000]], "b": [[2000, 7000]]});
    let n: i64 = redis::cmd("FLAG.IMPORT")
        .arg(flag(kept.clone()))
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let got: serde_json::Value =
        serde_json::from_str(&cmd_str(&mut con, &["FLAG.GET", "prod:half"]).unwrap()).unwrap();
    assert_eq!(got["allocations"]["fallthrough"]["ranges"], kept);
}
