//! Classifier latency: `cargo bench -p kairos-router --bench classifier`.
//!
//! Criterion measures the mean time per `classify` call for prompts of 200 B up to 100 KB (the
//! featuriser reads at most 8 KB + 2 KB of the user message, so the time grows linearly up to
//! ~10 KB and is flat after). After the criterion groups, a plain loop times 20,000 single calls
//! on the 2 KB prompt and prints p50/p99/p99.9, since the budget is a p99 (30 µs at 2 KB).

use std::hint::black_box;
use std::io::Write as _;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use kairos_router::classifier::{Classifier, ClassifierInput};

const PARAGRAPH: &str = "The regional transit authority published its annual report on Monday, \
    describing a year in which ridership recovered to ninety-two percent of its earlier peak. \
    Buses on the northern corridor ran more often after the new depot opened in March, and the \
    average delay on the light rail line fell from six minutes to just under four. The report \
    also notes that fare revenue covered forty-one percent of operating costs, that two hundred \
    new drivers were hired, and that the board still expects a funding gap next year unless the \
    state renews its grant. Riders surveyed in the autumn asked mainly for cleaner stations, \
    better real-time information and later evening service on weekends.\n\n";

/// A summarization request whose user message is `size` bytes long.
fn prompt(size: usize) -> String {
    let mut s = String::from("Summarize the following report in three bullet points:\n\n");
    while s.len() < size {
        s.push_str(PARAGRAPH);
    }
    let mut cut = size;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn input(text: &str) -> ClassifierInput<'_> {
    ClassifierInput {
        system: "You are a helpful assistant.",
        last_user: text,
        context_chars: text.len() + 28,
        n_messages: 2,
        has_tools: false,
        json_mode: false,
        has_images: false,
    }
}

fn bench_classify(c: &mut Criterion) {
    let clf = Classifier::builtin();
    let mut group = c.benchmark_group("classify");
    for size in [200usize, 2_048, 5_120, 10_240, 20_480, 102_400] {
        let text = prompt(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &text, |b, text| {
            b.iter(|| clf.classify(black_box(&input(text))))
        });
    }
    group.finish();
}

fn percentiles() {
    let clf = Classifier::builtin();
    let mut out = std::io::stdout().lock();
    for size in [200usize, 2_048, 20_480] {
        let text = prompt(size);
        let inp = input(&text);
        for _ in 0..2_000 {
            black_box(clf.classify(black_box(&inp)));
        }
        let mut ns: Vec<u128> = (0..20_000)
            .map(|_| {
                let t = Instant::now();
                black_box(clf.classify(black_box(&inp)));
                t.elapsed().as_nanos()
            })
            .collect();
        ns.sort_unstable();
        let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)] as f64 / 1000.0;
        let _ = writeln!(
            out,
            "classify/{size} B single-call latency over {} calls: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs",
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
    bench_classify(&mut c);
    c.final_summary();
    percentiles();
}
