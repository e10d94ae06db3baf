//! The routing step for `model="auto"`: classification, candidates, funnel, receipt.
//!
//! `cargo bench -p kairos-core --bench route`. The gateway is configured with OpenAI, Anthropic
//! and Gemini providers (no network is touched: routing is pure), so ~40 catalog models compete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kairos_api::openai::{ChatCompletionRequest, ChatMessage, Role};
use kairos_core::catalog::Catalog;
use kairos_core::config::FileConfig;
use kairos_core::env::MapEnv;
use kairos_core::gateway::Gateway;
use kairos_core::routing::RouteOptions;
use kairos_store::{LedgerWriter, LedgerWriterConfig, Store};
use secrecy::SecretString;

fn gateway(rt: &tokio::runtime::Runtime) -> Gateway {
    let env = MapEnv::from([
        ("OPENAI_API_KEY", "sk-x"),
        ("ANTHROPIC_API_KEY", "sk-y"),
        ("GEMINI_API_KEY", "g"),
    ]);
    let cfg = FileConfig::from_env(&env).validate(&env).unwrap();
    rt.block_on(async {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let (ledger, writer) = LedgerWriter::spawn(store, LedgerWriterConfig::default());
        std::mem::forget(writer);
        Gateway::new(
            &cfg,
            Catalog::builtin(),
            &SecretString::from("master-key-0123456789"),
            ledger,
        )
        .unwrap()
    })
}

fn request(prompt_bytes: usize) -> ChatCompletionRequest {
    let sentence =
        "Please summarize the following report about quarterly revenue and the new product line. ";
    let mut text = String::new();
    while text.len() < prompt_bytes {
        text.push_str(sentence);
    }
    text.truncate(prompt_bytes);
    ChatCompletionRequest {
        model: "auto".into(),
        messages: vec![
            ChatMessage::new(Role::System, "You are a helpful assistant."),
            ChatMessage::new(Role::User, text),
        ],
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gw = gateway(&rt);
    let mut g = c.benchmark_group("route_auto");
    for size in [200usize, 2_048, 20_480] {
        let req = request(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("decide", size), &req, |b, req| {
            b.iter(|| {
                let r = gw.route_auto(black_box(req), &RouteOptions::default(), "bench");
                black_box(r.is_ok())
            })
        });
        g.bench_with_input(
            BenchmarkId::new("decide+receipt_json", size),
            &req,
            |b, req| {
                b.iter(|| {
                    let (_, receipt) = gw
                        .route_auto(black_box(req), &RouteOptions::default(), "bench")
                        .map_err(|_| ())
                        .unwrap();
                    black_box(serde_json::to_vec(&receipt).unwrap().len())
                })
            },
        );
    }
    g.finish();
    learned(c, &gw);
}

/// Routing on learned state: the workspace holds the learner's maximum of embedded outcomes
/// (`[routing.learning] max_points`, 4,096) spread over every candidate, so the neighbour
/// search scans its whole ring; 5% of decisions explore (a second funnel run). Prints p50/p99
/// over 20,000 single decisions as well (the target is p99 ≤ 100 µs for a 2 KB prompt).
fn learned(c: &mut Criterion, gw: &Gateway) {
    use kairos_router::TaskType;
    use kairos_router::learn::{ObsKey, Observation};
    let learner = gw.learner();
    let models: Vec<String> = gw
        .route_auto(&request(200), &RouteOptions::default(), "probe")
        .map(|(_, r)| r.candidates.iter().map(|c| c.model.clone()).collect())
        .unwrap();
    let dim = kairos_router::embed::Embedder::builtin().dim();
    let max = learner.config().max_points;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    for i in 0..max {
        let mut e: Vec<f32> = (0..dim).map(|_| next()).collect();
        let n = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        e.iter_mut().for_each(|x| *x /= n);
        learner.observe(&Observation {
            key: ObsKey {
                request_id: format!("r{i}"),
                metric: "score".into(),
                model: models[i % models.len()].clone(),
            },
            workspace: "bench".into(),
            task: Some(TaskType::ALL[i % 12]),
            embedding: Some(e),
            score: f64::from(next() + 0.5),
            weight: 1.0,
        });
    }
    let opts = RouteOptions {
        workspace: "bench".into(),
        ..RouteOptions::default()
    };
    let mut g = c.benchmark_group("route_auto_learned");
    for size in [200usize, 2_048] {
        let req = request(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("decide", size), &req, |b, req| {
            b.iter(|| {
                let r = gw.route_auto(black_box(req), &opts, "bench");
                black_box(r.is_ok())
            })
        });
        let mut lat: Vec<u64> = (0..20_000)
            .map(|_| {
                let t = std::time::Instant::now();
                let r = gw.route_auto(black_box(&req), &opts, "bench");
                black_box(r.is_ok());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        lat.sort_unstable();
        let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e3;
        println!(
            "route_auto_learned/{size}: {} outcomes in the workspace, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
            max,
            q(0.50),
            q(0.99),
            q(0.999)
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
