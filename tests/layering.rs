//! The rooms depend downward only (DESIGN.md): a lower module never names an
//! upper one. This reads the sources, so a new upward import fails here
//! before it becomes a tangle.

use std::path::Path;

/// Each room and the rooms above it, which it must not name.
const RULES: &[(&str, &[&str])] = &[
    (
        "flag",
        &[
            "store",
            "raft",
            "pubsub",
            "command",
            "server",
            "protocol",
            "metrics",
            "http",
            "analytics",
        ],
    ),
    (
        "store",
        &[
            "raft",
            "pubsub",
            "command",
            "server",
            "protocol",
            "http",
            "analytics",
        ],
    ),
    ("raft", &["command", "server", "http", "analytics"]),
    // Analytics sits beside store and raft: it reads flags, nothing above or beside.
    (
        "analytics",
        &[
            "store", "raft", "pubsub", "command", "server", "protocol", "http",
        ],
    ),
    ("pubsub", &["command", "server", "store", "raft", "http"]),
    // HTTP sits beside the command room: both below the server, neither names the other's upper.
    ("http", &["server"]),
    ("command", &["server", "http"]),
    (
        "protocol",
        &["command", "server", "store", "raft", "pubsub", "flag"],
    ),
    (
        "clock.rs",
        &[
            "command", "server", "store", "raft", "pubsub", "flag", "protocol",
        ],
    ),
    (
        "glob.rs",
        &[
            "command", "server", "store", "raft", "pubsub", "flag", "protocol",
        ],
    ),
];

fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            sources(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn lower_rooms_never_name_upper_rooms() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (room, above) in RULES {
        let mut files = Vec::new();
        sources(&src.join(room), &mut files);
        assert!(!files.is_empty(), "room {room} has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for upper in *above {
                    if line.contains(&format!("crate::{upper}::"))
                        || line.contains(&format!("crate::{upper};"))
                        || line.contains(&format!("crate::{upper}::{{"))
                    {
                        violations.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}
