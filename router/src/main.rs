//! `dronectl-router`: the router as a standalone binary (what the router container runs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// dronectl's L7 HTTP traffic router (internal and public data ports + admin API).
#[derive(Debug, Parser)]
#[command(name = "dronectl-router", version, about)]
struct Args {
    /// Internal data port address (HTTP/1.1 and h2c): Host routing, preview, version header.
    #[arg(long, env = "ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Public data port address: public path routes only.
    #[arg(long, env = "ROUTER_PUBLIC_LISTEN")]
    public_listen: Option<SocketAddr>,
    /// Admin API address.
    #[arg(long, env = "ROUTER_ADMIN_LISTEN", default_value = "0.0.0.0:9901")]
    admin_listen: SocketAddr,
    /// File holding the admin token (without it the admin API refuses every request).
    #[arg(long, env = "ROUTER_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Bind the admin API and the public port to this host's address on the network with
    /// this gateway (GATEWAY/PREFIX, e.g. 172.20.0.1/16) instead of their given IPs.
    #[arg(long, env = "ROUTER_BIND_NETWORK")]
    bind_network: Option<dronectl_router::BindNetwork>,
    /// JSON routing table to start with (same schema as `PUT /config`).
    #[arg(long, env = "ROUTER_CONFIG")]
    config: Option<PathBuf>,
    /// Per-attempt time to the upstream response head, in milliseconds (504 after).
    #[arg(long, env = "ROUTER_UPSTREAM_TIMEOUT_MS", default_value_t = 30_000)]
    upstream_timeout_ms: u64,
    /// Upstream TCP connect timeout in milliseconds (then another endpoint is tried).
    #[arg(long, env = "ROUTER_CONNECT_TIMEOUT_MS", default_value_t = 2_000)]
    connect_timeout_ms: u64,
    /// Largest accepted request body in bytes (413 above).
    #[arg(long, env = "ROUTER_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: u64,
    /// On SIGTERM, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "ROUTER_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    drain_timeout_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();

    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dronectl_router::run(opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "router failed");
            ExitCode::FAILURE
        }
    }
}

fn options(args: &Args) -> Result<dronectl_router::RouterOptions, dronectl_router::RouterError> {
    let initial_config = match &args.config {
        Some(path) => Some(dronectl_router::load_config_file(path)?),
        None => None,
    };
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(dronectl_router::AdminToken::from_file(path)?),
        None => None,
    };
    let mut opts = dronectl_router::RouterOptions {
        listen: args.listen,
        public_listen: args.public_listen,
        admin_listen: args.admin_listen,
        admin_token,
        initial_config,
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        max_body_bytes: args.max_body_bytes,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
    };
    if let Some(network) = &args.bind_network {
        opts.bind_host_facing(network, Duration::from_secs(5))?;
    }
    Ok(opts)
}

/// JSON lines on stdout; level from `LOG_LEVEL` (default info), `RUST_LOG` also honoured.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("LOG_LEVEL").ok())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}
