//! Cost of the intent journal on the request path: one `Journal::begin` (JSON line, one
//! `write(2)` under a mutex) and its `release`. `cargo bench -p kairos-store --bench journal`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kairos_store::LedgerRow;
use kairos_store::journal::Journal;

fn row() -> LedgerRow {
    LedgerRow {
        id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        ts_ms: 1_763_700_000_000,
        key_id: "key_0193a1b2c3d47e5f8a9b0c1d2e3f4a5b".into(),
        workspace: Some("ws_0193a1b2c3d47e5f8a9b0c1d2e3f4a5b".into()),
        route: "chat".into(),
        inbound_api: "openai".into(),
        requested_model: "gpt-4o-mini".into(),
        served_model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        usage_source: "none".into(),
        trace_id: "0193a1b2c3d47e5f8a9b0c1d2e3f4a5b".into(),
        ..LedgerRow::default()
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let r = row();
    c.bench_function("journal begin + release", |b| {
        b.iter(|| {
            let g = j.begin(black_box(&r)).unwrap();
            j.release(g);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
