//! `kairos`: the KairosRoute gateway.
//!
//! ```text
//! kairos serve [--config kairos.toml] [--demo]   run the gateway
//! kairos config check kairos.toml                validate a config file, report every problem
//! kairos mock-upstream [--listen ADDR]           run the mock provider (tests, benchmarks, demo)
//! kairos eval routing --data FILE.jsonl          replay a dataset through the router (offline)
//! kairos workspaces create|list|show|delete      manage workspaces through the admin API
//! kairos keys create|list|show|revoke            manage virtual keys through the admin API
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kairos_core::config::FileConfig;
use kairos_core::env::ProcessEnv;
use kairos_server::admin_cli::{self, CredentialsCmd, KeysCmd, WorkspacesCmd};
use kairos_server::eval_cmd::EvalCmd;
use kairos_server::startup::{StartOptions, start};

/// mimalloc instead of glibc malloc: allocator calls were ~15% of the gateway's CPU under load
/// in a profile (`perf record`, c64 non-streaming), most of it in glibc's free-list upkeep.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "KairosRoute: an LLM router and observability gateway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve {
        /// TOML config file. Without one, providers come from OPENAI_API_KEY, ANTHROPIC_API_KEY,
        /// GEMINI_API_KEY, ... (see docs/config.md).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Add the built-in demo upstream (a mock speaking the OpenAI, Anthropic and Gemini APIs)
        /// serving a few catalog models at their real prices: try everything with no provider key.
        #[arg(long)]
        demo: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Print a routing receipt readably (reads the ledger database of the given config).
    Receipt {
        /// The request id (`x-kairos-receipt-id`).
        id: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Manage workspaces through a running gateway's admin API.
    Workspaces {
        #[command(flatten)]
        conn: admin_cli::Conn,
        #[command(subcommand)]
        cmd: WorkspacesCmd,
    },
    /// Manage virtual keys through a running gateway's admin API.
    Keys {
        #[command(flatten)]
        conn: admin_cli::Conn,
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Maintain stored provider credentials through a running gateway's admin API.
    Credentials {
        #[command(flatten)]
        conn: admin_cli::Conn,
        #[command(subcommand)]
        cmd: CredentialsCmd,
    },
    /// Offline evaluation.
    Eval {
        #[command(subcommand)]
        cmd: EvalCmd,
    },
    /// Run the mock upstream on its own (benchmarks, manual tests).
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: String,
        /// Delay before response headers, ms.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Streams: delay before the first content event, ms.
        #[arg(long, default_value_t = 0)]
        ttft_ms: u64,
        /// Streams: delay between events, ms.
        #[arg(long, default_value_t = 0)]
        itl_ms: u64,
        /// Number of content chunks in a streamed answer.
        #[arg(long, default_value_t = 10)]
        chunks: usize,
        /// Keep the request log and billing ledger (off by default: benchmarks).
        #[arg(long)]
        record: bool,
        /// Answer this share of requests (0-1) with `--fault-status`: a flapping provider.
        #[arg(long, default_value_t = 0.0)]
        fault_rate: f64,
        #[arg(long, default_value_t = 503)]
        fault_status: u16,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a config file; exit 1 and list every problem with its path if it is invalid.
    Check { file: PathBuf },
}

fn out(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

fn err(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

fn init_tracing(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // On one CPU (e.g. pinned with taskset, or a 1-vCPU container) a multi-thread runtime only
    // adds cross-thread queue and wake-up costs: use the current-thread scheduler there.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu && !kairos_core::env::multi_thread_forced() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            err(&format!("kairos: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.cmd {
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => {
            let result = FileConfig::load(&file).and_then(|f| f.validate(&ProcessEnv));
            match result {
                Ok(cfg) => {
                    out(&format!(
                        "{}: OK ({} provider{}, {} custom model{})",
                        file.display(),
                        cfg.providers.len(),
                        if cfg.providers.len() == 1 { "" } else { "s" },
                        cfg.models.len(),
                        if cfg.models.len() == 1 { "" } else { "s" },
                    ));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    err(&format!("{}: {e}", file.display()));
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::MockUpstream {
            listen,
            latency_ms,
            ttft_ms,
            itl_ms,
            chunks,
            record,
            fault_rate,
            fault_status,
        } => {
            init_tracing("warn", false);
            let listener = match tokio::net::TcpListener::bind(&listen).await {
                Ok(l) => l,
                Err(e) => {
                    err(&format!(
                        "kairos mock-upstream: cannot listen on {listen}: {e}"
                    ));
                    return ExitCode::FAILURE;
                }
            };
            let mut cfg = kairos_testkit::MockConfig {
                record,
                fault_rate: fault_rate.clamp(0.0, 1.0),
                fault_status,
                ..Default::default()
            };
            cfg.defaults.headers_delay_ms = latency_ms;
            cfg.defaults.ttft_ms = ttft_ms;
            cfg.defaults.itl_ms = itl_ms;
            cfg.defaults.chunks = chunks;
            out(&format!(
                "mock upstream on http://{} (OpenAI /v1/chat/completions, Anthropic /v1/messages, Gemini /v1beta/models/...)",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or(listen)
            ));
            match kairos_testkit::serve(listener, cfg, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    err(&format!("kairos mock-upstream: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Serve { config, demo } => serve(config, demo).await,
        Cmd::Receipt { id, config, json } => receipt(&id, config, json).await,
        Cmd::Eval { cmd } => kairos_server::eval_cmd::run(cmd),
        Cmd::Workspaces { conn, cmd } => {
            admin_cli::run(&conn, admin_cli::Command::Workspaces(cmd)).await
        }
        Cmd::Keys { conn, cmd } => admin_cli::run(&conn, admin_cli::Command::Keys(cmd)).await,
        Cmd::Credentials { conn, cmd } => {
            admin_cli::run(&conn, admin_cli::Command::Credentials(cmd)).await
        }
    }
}

async fn serve(config: Option<PathBuf>, demo: bool) -> ExitCode {
    let file = match &config {
        Some(path) => FileConfig::load(path),
        None => Ok(FileConfig::from_env(&ProcessEnv)),
    };
    let cfg = match file.and_then(|f| f.validate(&ProcessEnv)) {
        Ok(c) => c,
        Err(e) => {
            err(&format!(
                "kairos: {}{e}",
                config
                    .as_ref()
                    .map(|p| format!("{}: ", p.display()))
                    .unwrap_or_default()
            ));
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&cfg.logging.level, cfg.logging.json);
    // Zero-config first run: no config file and no provider key -> the demo upstream, so that a
    // new user sees the whole product at once.
    let demo = demo || (config.is_none() && cfg.providers.is_empty());
    if demo && cfg.providers.is_empty() {
        tracing::info!(
            "no provider key set (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, ...): serving demo models from the built-in demo upstream"
        );
    } else if cfg.providers.is_empty() {
        tracing::warn!("no provider configured in the config file");
    }
    let mut running = match start(cfg, StartOptions { demo }).await {
        Ok(r) => r,
        Err(e) => {
            err(&format!("kairos: {e}"));
            return ExitCode::FAILURE;
        }
    };
    out(&format!("KairosRoute listening on http://{}", running.addr));
    out(&format!("  OpenAI base_url:    http://{}/v1", running.addr));
    out(&format!("  Anthropic base_url: http://{}", running.addr));
    out(&format!(
        "  providers: {}; {} models; store: {}",
        if running.providers.is_empty() {
            "none".to_owned()
        } else {
            running.providers.join(", ")
        },
        running.models,
        running.store_backend
    ));
    if let Some(d) = &running.demo_upstream {
        out(&format!("  demo upstream: {d}"));
    }
    match (&running.generated_master_key, &running.master_key_file) {
        (Some(k), Some(f)) => {
            out(&format!(
                "  master key (generated now, shown once, stored in {}):",
                f.display()
            ));
            out(&format!("    {k}"));
        }
        (None, Some(f)) => out(&format!("  master key: stored in {}", f.display())),
        _ => out("  master key: from KAIROS_MASTER_KEY / config"),
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests and the ledger");
    running.trigger();
    let (drain, stats) = running.wait().await;
    tracing::info!(
        aborted = drain.aborted,
        written = stats.written,
        spooled = stats.spooled,
        dropped = stats.dropped,
        "stopped"
    );
    ExitCode::SUCCESS
}

async fn receipt(id: &str, config: Option<PathBuf>, json: bool) -> ExitCode {
    let file = match &config {
        Some(path) => FileConfig::load(path),
        None => Ok(FileConfig::from_env(&ProcessEnv)),
    };
    let cfg = match file.and_then(|f| f.validate(&ProcessEnv)) {
        Ok(c) => c,
        Err(e) => {
            err(&format!("kairos: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let url = kairos_server::startup::database_url(&cfg);
    let store = match kairos_store::Store::connect(&url).await {
        Ok(s) => s,
        Err(e) => {
            err(&format!("kairos: cannot open the ledger: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut catalog = kairos_core::catalog::Catalog::builtin();
    for m in &cfg.models {
        catalog.insert(m.clone());
    }
    let row = match store.get_request(id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            err(&format!("kairos: no request `{id}` in the ledger"));
            return ExitCode::FAILURE;
        }
        Err(e) => {
            err(&format!("kairos: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let Some(r) = kairos_core::routing::receipt_from_row(&row, &catalog) else {
        err(&format!(
            "kairos: request `{id}` was not routed (model `{}`): no receipt",
            row.requested_model
        ));
        return ExitCode::FAILURE;
    };
    if json {
        out(&serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        out(&format!("receipt {id}"));
        out(&r.summary());
    }
    ExitCode::SUCCESS
}
