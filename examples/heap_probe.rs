//! Heap bytes of the in-memory view, deterministic under any CPU load:
//! opens a stopped server's `state` directory (copy it first: sled takes it
//! over), loads the records and builds the view as a restart does, and
//! prints live bytes after each step (issue 13, memory per flag).
//! `cargo run --release --example heap_probe -- <data-dir>/state`

use flagstaff::metrics::alloc::{allocated_bytes, Counting};
use flagstaff::store::storage::{SledStorage, StateStorage};
use flagstaff::store::StateView;

#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting(std::alloc::System);

fn mb() -> f64 {
    allocated_bytes().unwrap_or(0) as f64 / 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: heap_probe <data-dir>/state")?;
    let t = std::time::Instant::now();
    let storage = SledStorage::open(std::path::Path::new(&dir))?;
    println!("sled open     {:8.1} MB {:?}", mb(), t.elapsed());
    let image = storage.load()?;
    println!("image loaded  {:8.1} MB {:?}", mb(), t.elapsed());
    let n = image.flags.len().max(1);
    let view = StateView::from_image(&image)?;
    println!("view built    {:8.1} MB {:?}", mb(), t.elapsed());
    drop(image);
    drop(storage);
    let before = mb();
    drop(view);
    println!(
        "view alone    {:8.1} MB = {:.0} B per flag ({n} flags)",
        before - mb(),
        (before - mb()) * 1e6 / n as f64
    );
    Ok(())
}
