//! Heap bytes and CPU time of a restart's load, deterministic in bytes under
//! any CPU load: opens a stopped server's `state` directory (copy it first:
//! sled takes it over), loads the records and builds the view, and prints
//! after each step the live heap, the highest live heap so far (sampled
//! every millisecond), wall and CPU time (issue 13, memory per flag and
//! restart).
//!
//! `stream` (the default) builds the view as a restart does
//! (`StateView::from_stored` over the stored bytes); `image` as restarts did
//! before it: every record decoded into a `StateImage`, then the view.
//! `cargo run --release --example heap_probe -- <data-dir>/state [stream|image]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flagstaff::metrics::alloc::{allocated_bytes, Counting};
use flagstaff::store::storage::{SledStorage, StateStorage};
use flagstaff::store::StateView;

#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting(std::alloc::System);

static PEAK: AtomicU64 = AtomicU64::new(0);

fn live() -> u64 {
    allocated_bytes().unwrap_or(0)
}

/// User + system CPU time of the whole process so far.
fn cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given,
    // which points to a zeroed value of that type.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn report(step: &str, t: Instant, cpu0: Duration) {
    PEAK.fetch_max(live(), Ordering::Relaxed);
    println!(
        "{step:<13} live {:8.1} MB  peak {:8.1} MB  wall {:6.3} s  cpu {:6.3} s",
        live() as f64 / 1e6,
        PEAK.load(Ordering::Relaxed) as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        (cpu() - cpu0).as_secs_f64()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: heap_probe <data-dir>/state [stream|image]")?;
    let mode = std::env::args().nth(2).unwrap_or_else(|| "stream".into());
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(), Box<dyn std::error::Error>> {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                PEAK.fetch_max(live(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let result = probe(&dir, &mode);
        done.store(true, Ordering::Relaxed);
        result
    })
}

fn probe(dir: &str, mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (t, cpu0) = (Instant::now(), cpu());
    let storage = SledStorage::open(std::path::Path::new(dir))?;
    report("sled open", t, cpu0);
    let view = match mode {
        "image" => {
            let image = storage.load()?;
            report("image loaded", t, cpu0);
            StateView::from_owned_image(image)?
        }
        "stream" => {
            let image = storage.load_without_flags()?;
            StateView::from_stored(image, storage.flag_records())?
        }
        other => return Err(format!("unknown mode {other:?}: stream or image").into()),
    };
    report("view built", t, cpu0);
    let n = view.flags.len().max(1);
    drop(storage);
    let before = live();
    drop(view);
    let alone = before - live();
    println!(
        "view alone    {:8.1} MB = {:.0} B per flag ({n} flags)",
        alone as f64 / 1e6,
        alone as f64 / n as f64
    );
    Ok(())
}
