//! `ferry-faultproxy --listen ADDR --upstream HOST:PORT --control ADDR [--rules FILE]`:
//! the fault proxy as a process, driven over its control API (see `ferry_testkit::proxy`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ferry_testkit::proxy::{FaultProxy, Rule, serve_control};

#[derive(Parser)]
#[command(about = "A fault-injecting HTTP proxy for S3 endpoints (ferry's test tool)")]
struct Args {
    /// Where clients connect.
    #[arg(long)]
    listen: SocketAddr,
    /// The S3 server behind it, as host:port.
    #[arg(long)]
    upstream: String,
    /// The control API (PUT /rules, GET /stats, GET /events, POST /release).
    #[arg(long)]
    control: SocketAddr,
    /// Rules to start with (a JSON array).
    #[arg(long)]
    rules: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let proxy = match FaultProxy::bind(args.listen, &args.upstream).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("ferry-faultproxy: listening on {}: {e}", args.listen);
            return std::process::ExitCode::from(1);
        }
    };
    if let Some(path) = &args.rules {
        let rules: Vec<Rule> = match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "ferry-faultproxy: reading rules from {}: {e}",
                    path.display()
                );
                return std::process::ExitCode::from(2);
            }
        };
        proxy.set_rules(rules);
    }
    eprintln!(
        "ferry-faultproxy: {} -> {} (control on {})",
        proxy.addr(),
        args.upstream,
        args.control
    );
    if let Err(e) = serve_control(proxy, args.control).await {
        eprintln!("ferry-faultproxy: control API on {}: {e}", args.control);
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
