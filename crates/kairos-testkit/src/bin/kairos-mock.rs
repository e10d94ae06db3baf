//! `kairos-mock`: the mock upstream as a process, for load benchmarks and manual runs.
//!
//! ```text
//! kairos-mock [--listen 127.0.0.1:9100] [--config mock.json] [--demo] [--no-record]
//! ```
//!
//! `--config` reads a JSON `MockConfig`. The bound address is printed on stdout as
//! `listening on http://ADDR`. Stops on Ctrl-C.

use std::io::Write as _;

use kairos_testkit::MockConfig;

const USAGE: &str =
    "usage: kairos-mock [--listen ADDR] [--config FILE.json] [--demo] [--no-record]\n";

fn fail(msg: &str) -> std::io::Result<()> {
    let mut err = std::io::stderr();
    writeln!(err, "kairos-mock: {msg}")?;
    err.write_all(USAGE.as_bytes())?;
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut cfg = MockConfig::default();
    let mut demo = false;
    let mut no_record = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => match args.next() {
                Some(v) => listen = v,
                None => return fail("--listen needs an address"),
            },
            "--config" => {
                let Some(path) = args.next() else {
                    return fail("--config needs a file");
                };
                let text = std::fs::read_to_string(&path)?;
                cfg = match serde_json::from_str(&text) {
                    Ok(c) => c,
                    Err(e) => return fail(&format!("{path}: {e}")),
                };
            }
            "--demo" => demo = true,
            "--no-record" => no_record = true,
            "-h" | "--help" => {
                std::io::stdout().write_all(USAGE.as_bytes())?;
                return Ok(());
            }
            other => return fail(&format!("unknown argument {other}")),
        }
    }
    if demo {
        cfg.demo = true;
        if cfg.defaults == kairos_testkit::Behavior::default() {
            cfg.defaults = kairos_testkit::Behavior::demo_latency();
        }
    }
    if no_record {
        cfg.record = false;
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on http://{}", listener.local_addr()?)?;
    out.flush()?;
    kairos_testkit::serve(listener, cfg, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
