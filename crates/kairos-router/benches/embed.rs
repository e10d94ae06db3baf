//! Prompt embedding latency: `cargo bench -p kairos-router --bench embed`.
//!
//! Criterion measures the mean time per `Embedder::embed` call on English prompts of 200 B and
//! 2 KB (the budget: well under 50 µs at 2 KB), plus 20 KB to show the cost is flat past the
//! 8 KiB cap, and a 2 KB prompt of accented/CJK text (the slow, non-ASCII path); and the one-off
//! cost of parsing the table (paid on the first use of `Embedder::builtin`). After the criterion
//! groups, a plain loop times 20,000 single calls and prints p50/p99/p99.9.

use std::hint::black_box;
use std::io::Write as _;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use kairos_router::embed::Embedder;

const PARAGRAPH: &str = "The regional transit authority published its annual report on Monday, \
    describing a year in which ridership recovered to ninety-two percent of its earlier peak. \
    Buses on the northern corridor ran more often after the new depot opened in March, and the \
    average delay on the light rail line fell from six minutes to just under four. The report \
    also notes that fare revenue covered forty-one percent of operating costs, that two hundred \
    new drivers were hired, and that the board still expects a funding gap next year unless the \
    state renews its grant. Riders surveyed in the autumn asked mainly for cleaner stations, \
    better real-time information and later evening service on weekends.\n\n";

const NON_ASCII: &str = "Résumé de l'été : la façade du café a été rénovée, Ünïcode naïve \
    coöperation. Überprüfen Sie die Größe. 東京の天気は晴れです。北京今天下雨。Ελληνικά κείμενα. \
    Привет, как дела? ";

/// `head` followed by `body` repeated, cut to `size` bytes at a char boundary.
fn prompt(head: &str, body: &str, size: usize) -> String {
    let mut s = String::from(head);
    while s.len() < size {
        s.push_str(body);
    }
    let mut cut = size;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn english(size: usize) -> String {
    prompt(
        "Summarize the following report in three bullet points:\n\n",
        PARAGRAPH,
        size,
    )
}

fn bench_embed(c: &mut Criterion) {
    let emb = Embedder::builtin();
    let mut out = vec![0.0f32; emb.dim()];
    let mut group = c.benchmark_group("embed");
    for size in [200usize, 2_048, 20_480] {
        let text = english(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("english", size), &text, |b, text| {
            b.iter(|| emb.embed(black_box(text), black_box(&mut out)))
        });
    }
    let text = prompt("Traduisez : ", NON_ASCII, 2_048);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_with_input(BenchmarkId::new("non_ascii", 2_048), &text, |b, text| {
        b.iter(|| emb.embed(black_box(text), black_box(&mut out)))
    });
    group.finish();
}

fn bench_load(c: &mut Criterion) {
    let bytes: &[u8] = include_bytes!("../data/embed.bin");
    let mut group = c.benchmark_group("embed_load");
    group.sample_size(10);
    group.bench_function("from_bytes", |b| {
        b.iter(|| Embedder::from_bytes(black_box(bytes)))
    });
    group.finish();
}

fn percentiles() {
    let emb = Embedder::builtin();
    let mut v = vec![0.0f32; emb.dim()];
    let mut out = std::io::stdout().lock();
    for size in [200usize, 2_048] {
        let text = english(size);
        for _ in 0..2_000 {
            emb.embed(black_box(&text), black_box(&mut v));
        }
        let mut ns: Vec<u128> = (0..20_000)
            .map(|_| {
                let t = Instant::now();
                emb.embed(black_box(&text), black_box(&mut v));
                t.elapsed().as_nanos()
            })
            .collect();
        ns.sort_unstable();
        let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)] as f64 / 1000.0;
        let _ = writeln!(
            out,
            "embed/{size} B ({} tokens) single-call latency over {} calls: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs",
            emb.tokens(&text).len(),
            ns.len(),
            q(0.50),
            q(0.99),
            q(0.999),
            q(1.0)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_embed(&mut c);
    bench_load(&mut c);
    c.final_summary();
    percentiles();
}
