//! The routing step for `model="auto"`: classification, candidates, funnel, receipt.
//!
//! `cargo bench -p kairos-core --bench route`. The gateway is configured with OpenAI, Anthropic
//! and Gemini providers (no network is touched: routing is pure), so ~40 catalog models compete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
