//! Heap bytes per flag of each part of the view, for flags of
//! `benches/restart.sh`'s shape (issue 13): the definition tree, the compiled
//! form, and the whole view built from records. Exact (counting allocator).
//! With a dump file as second argument, also what applying one FLAG.IMPORT
//! of it holds: the parsed dump, the new view, and the changes and audit
//! records handed to storage.
//! `cargo run --release --example heap_parts -- [flags] [dump.json]`

use flagstaff::flag::{compile_flag, parse_flag, Allocations};
use flagstaff::metrics::alloc::{allocated_bytes, Counting};
use flagstaff::store::records::{FlagRecord, StateImage};
use flagstaff::store::StateView;

#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting(std::alloc::System);

const SHAPE: &str = r#"{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","rules":[{"id":"eu","clauses":[{"attribute":"country","op":"in","values":["DE","FR"]}],"serve":{"rollout":[{"variation":"on","weight":5000},{"variation":"off","weight":5000}]}}],"fallthrough":{"variation":"off"}}"#;

fn live() -> i64 {
    allocated_bytes().unwrap_or(0) as i64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(10_000), |a| a.parse())?;
    let keys: Vec<String> = (0..n).map(|i| format!("prod:flag-{i:06}")).collect();
    let base = live();
    let defs = keys
        .iter()
        .map(|k| parse_flag(k, SHAPE.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "definition tree  {:6} B per flag",
        (live() - base) / n as i64
    );
    let base = live();
    let none = Allocations::new();
    let compiled = keys
        .iter()
        .zip(&defs)
        .map(|(k, d)| compile_flag(k, d, &none, &|_| false))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "compiled form    {:6} B per flag",
        (live() - base) / n as i64
    );
    drop(compiled);
    let image = StateImage {
        flags: keys
            .iter()
            .zip(defs)
            .map(|(k, d)| FlagRecord {
                key: k.clone(),
                allocations: flagstaff::flag::compile::allocations_for(k, &d, &none),
                definition: d,
                version: 1,
                revision: 2,
                updated_at: 1_700_000_000_000,
                updated_by: "default".into(),
            })
            .collect(),
        revision: 2,
        ..StateImage::default()
    };
    let base = live();
    let record_bytes = base;
    let view = StateView::from_owned_image(image)?;
    let with_view = live();
    println!(
        "records          {:6} B per flag (before the view)",
        record_bytes / n as i64
    );
    println!(
        "view (net)       {:6} B per flag",
        (with_view - base) / n as i64
    );
    let before = live();
    drop(view);
    println!(
        "view alone       {:6} B per flag",
        (before - live()) / n as i64
    );
    let Some(path) = std::env::args().nth(2) else {
        return Ok(());
    };
    let document = std::fs::read_to_string(path)?;
    let base = live();
    let dump = flagstaff::store::parse_dump(&document).map_err(|e| e.to_string())?;
    let m = dump.flags.len().max(1) as i64;
    println!(
        "parsed dump      {:6} B per flag ({m} flags)",
        (live() - base) / m
    );
    drop(dump);
    let base = live();
    let req = flagstaff::store::WriteRequest::single(
        "default",
        flagstaff::store::WriteOp::Import {
            document,
            reason: None,
        },
    );
    let empty = StateView::default();
    let applied = flagstaff::store::apply(&empty, 1, 0, &req).map_err(|e| format!("{e:?}"))?;
    let total = live() - base;
    let view = applied.view.clone();
    let before = live();
    let changes = applied.changes.clone();
    println!("import changes   {:6} B per flag", (live() - before) / m);
    drop(changes);
    let before = live();
    let audit = applied.audit.clone();
    println!("import audit     {:6} B per flag", (live() - before) / m);
    drop(audit);
    drop(view);
    println!(
        "applied import   {:6} B per flag (view + changes + audit)",
        total / m
    );
    Ok(())
}
