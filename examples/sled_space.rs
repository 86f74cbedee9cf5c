//! sled's space use (issue 13, disk): where a stopped server's state
//! storage spends its bytes, and how sled holds one big batch against many
//! small ones. Load-independent byte counts (timings are printed too).
//! - `cargo run --release --example sled_space -- live <copy of data-dir/state>`:
//!   keys, key bytes and value bytes per key prefix, and sled's file size.
//! - `cargo run --release --example sled_space -- batches <n> <batches> <scratch dir>`:
//!   writes `n` flag records of ~500 bytes in that many `apply_batch`es,
//!   then prints the file size and the time to reopen and scan them;
//!   `batches <n> <batches> rewrite <dir>` then writes the same values again
//!   in batches of 1,000 before reopening.
//! - `... -- rewrite <copy of data-dir/state> f:,a:,x:`: writes the values
//!   under those prefixes again, 1,000 per batch (then time a restart of it,
//!   e.g. with `examples/heap_probe.rs`).

use std::collections::BTreeMap;
use std::time::Instant;

type Res = Result<(), Box<dyn std::error::Error>>;

fn open(dir: &str) -> sled::Result<(sled::Db, sled::Tree)> {
    // As `SledStorage::open` configures it.
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 * 1024 * 1024)
        .flush_every_ms(Some(1000))
        .open()?;
    let tree = db.open_tree("state")?;
    Ok((db, tree))
}

fn live(dir: &str) -> Res {
    let (db, tree) = open(dir)?;
    let mut by: BTreeMap<Vec<u8>, (usize, usize, usize)> = BTreeMap::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let e = by.entry(k[..k.len().min(2)].to_vec()).or_default();
        *e = (e.0 + 1, e.1 + k.len(), e.2 + v.len());
    }
    let mut total = 0;
    for (prefix, (n, kb, vb)) in &by {
        println!(
            "{:4} {n:9} keys {kb:11} B keys {vb:12} B values ({:.0} B per value)",
            String::from_utf8_lossy(prefix),
            *vb as f64 / *n as f64
        );
        total += kb + vb;
    }
    println!(
        "live {:.1} MB, sled's file {:.1} MB",
        total as f64 / 1e6,
        db.size_on_disk()? as f64 / 1e6
    );
    Ok(())
}

fn batches(n: usize, count: usize, rewrite: bool, dir: &str) -> Res {
    let _ = std::fs::remove_dir_all(dir);
    let (db, tree) = open(dir)?;
    let per = n.div_ceil(count.max(1));
    let mut live = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(per) {
        let mut b = sled::Batch::default();
        for i in chunk {
            let key = format!("f:prod:flag-{i:06}");
            let value = format!(
                r#"{{"key":"prod:flag-{i:06}","definition":{{"on":true,"variations":[{{"name":"off","value":false}},{{"name":"on","value":true}}],"off_variation":"off","rules":[{{"id":"eu","clauses":[{{"attribute":"country","op":"in","values":["DE","FR"]}}],"serve":{{"rollout":[{{"variation":"on","weight":5000}},{{"variation":"off","weight":5000}}]}}}}],"fallthrough":{{"variation":"off"}}}},"allocations":{{}},"version":1,"revision":{i},"updated_at":1764660000000,"updated_by":"default"}}"#
            );
            live += key.len() + value.len();
            b.insert(key.into_bytes(), value.into_bytes());
        }
        tree.apply_batch(b)?;
    }
    db.flush()?;
    if rewrite {
        // The same values again, 1,000 per batch: the content never changes.
        let written: Vec<_> = tree.scan_prefix(b"f:").collect::<Result<_, _>>()?;
        for chunk in written.chunks(1000) {
            let mut b = sled::Batch::default();
            for (k, v) in chunk {
                b.insert(k.clone(), v.clone());
            }
            tree.apply_batch(b)?;
        }
        db.flush()?;
    }
    println!(
        "{n} records in {count} batches: live {:.1} MB, sled's file {:.1} MB ({:.2}x)",
        live as f64 / 1e6,
        db.size_on_disk()? as f64 / 1e6,
        db.size_on_disk()? as f64 / live as f64
    );
    drop((tree, db));
    let t = Instant::now();
    let (_db, tree) = open(dir)?;
    let opened = t.elapsed();
    let mut read = 0;
    for item in tree.scan_prefix(b"f:") {
        read += item?.1.len();
    }
    println!(
        "reopen {opened:?}, + scan {:?} ({:.1} MB read)",
        t.elapsed(),
        read as f64 / 1e6
    );
    Ok(())
}

/// Writes the values under `prefixes` of an existing state dir again, 1,000
/// per batch (what a persister could do after a large commit).
fn rewrite(dir: &str, prefixes: &str) -> Res {
    let (db, tree) = open(dir)?;
    let t = Instant::now();
    let mut n = 0;
    for prefix in prefixes.split(',') {
        let written: Vec<_> = tree
            .scan_prefix(prefix.as_bytes())
            .collect::<Result<_, _>>()?;
        for chunk in written.chunks(1000) {
            let mut b = sled::Batch::default();
            for (k, v) in chunk {
                b.insert(k.clone(), v.clone());
            }
            tree.apply_batch(b)?;
        }
        n += written.len();
    }
    db.flush()?;
    println!(
        "rewrote {n} values in {:?}; sled's file {:.1} MB",
        t.elapsed(),
        db.size_on_disk()? as f64 / 1e6
    );
    Ok(())
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["live", dir] => live(dir),
        ["batches", n, count, dir] => batches(n.parse()?, count.parse()?, false, dir),
        ["rewrite", dir, prefixes] => rewrite(dir, prefixes),
        ["batches", n, count, "rewrite", dir] => batches(n.parse()?, count.parse()?, true, dir),
        _ => Err(
            "usage: sled_space live <state dir> | batches <n> <batches> [rewrite] <scratch dir> | rewrite <state dir> <prefixes>"
                .into(),
        ),
    }
}
