//! Cost of analytics on the read path: evaluation with and without the
//! counters, exposure dedup for an experiment flag, and memory per exposed
//! unit (printed once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use flagstaff::analytics::lab::Lab;
use flagstaff::flag::compile::allocations_for;
use flagstaff::flag::{
    compile_flag, evaluate, parse_flag, CompiledFlag, CompiledSegment, Context, FlagSource,
};
use serde_json::json;

/// The system allocator, counting the bytes live (asked for, not rounded
/// up to size classes), so memory per unit is counted exactly.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct NoFlags;

impl FlagSource for NoFlags {
    fn flag(&self, _: &str) -> Option<&CompiledFlag> {
        None
    }
    fn segment(&self, _: &str) -> Option<&CompiledSegment> {
        None
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn benches(c: &mut Criterion) {
    let def = json!({"on": true, "variations": [{"name": "off", "value": false}, {"name": "on", "value": true}],
                     "off_variation": "off", "fallthrough": {"variation": "on"}});
    let def = parse_flag("prod:plain", def.to_string().as_bytes()).unwrap();
    let alloc = allocations_for("prod:plain", &def, &Default::default());
    let flag = compile_flag("prod:plain", &def, &alloc, &|_| false).unwrap();
    let ctx_json = br#"{"key":"user-4242"}"#.to_vec();
    let ctx = Context::parse(&ctx_json).unwrap();

    c.bench_function("analytics/eval_without_counters", |b| {
        b.iter(|| evaluate(black_box(&flag), black_box(&ctx), &NoFlags, 0.0).variation)
    });
    c.bench_function("analytics/eval_with_counters", |b| {
        b.iter(|| {
            let e = evaluate(black_box(&flag), black_box(&ctx), &NoFlags, 0.0);
            flag.counters.record(e.variation, &e.reason);
            e.variation
        })
    });

    let lab = Lab::default();
    let exp: Arc<str> = "prod:exp@1".into();
    let on: Arc<str> = "on".into();
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    for u in &users {
        lab.expose(&exp, u, &on, 1);
    }
    let mut i = 0usize;
    c.bench_function("analytics/exposure_dedup_already_exposed", |b| {
        b.iter(|| {
            i = (i + 7919) % users.len();
            lab.expose(black_box(&exp), black_box(&users[i]), &on, 2)
        })
    });

    // Appending a track event to flagstaff:events (memory only: no writer
    // thread started, so this is the cost on the command path).
    let log = flagstaff::analytics::events::EventLog::new(
        &std::env::temp_dir(),
        flagstaff::analytics::events::Retention {
            max_age_ms: u64::MAX / 2,
            max_len: 100_000,
        },
    );
    let mut n = 0u64;
    c.bench_function("analytics/events_append_track", |b| {
        b.iter(|| {
            n += 1;
            let e = flagstaff::analytics::events::Event {
                kind: flagstaff::analytics::events::EventType::Track,
                flag: None,
                experiment: None,
                unit: Some("user-4242".to_string()),
                variation: None,
                reason: None,
                event: Some("purchase".to_string()),
                value: Some(9.99),
                ts: 1_700_000_000_000 + n / 1000,
                node: 1,
            };
            log.append(black_box(e), 1_700_000_000_000 + n / 1000)
        })
    });

    // Memory per exposed unit: RSS growth over one million fresh units.
    let lab = Lab::default();
    let keys: Vec<String> = (0..1_000_000).map(|i| format!("user-{i:07}")).collect();
    let before = rss_bytes();
    let live_before = LIVE.load(Ordering::Relaxed);
    for k in &keys {
        lab.expose(&exp, k, &on, 1);
    }
    let live_after = LIVE.load(Ordering::Relaxed);
    let after = rss_bytes();
    eprintln!(
        "analytics/memory_per_exposed_unit: {:.1} bytes allocated (counted), {:.1} bytes RSS growth, over 1,000,000 units with 12-byte keys",
        live_after.saturating_sub(live_before) as f64 / 1e6,
        (after.saturating_sub(before)) as f64 / 1e6
    );
    black_box(&lab);
}

criterion_group!(analytics, benches);
criterion_main!(analytics);
