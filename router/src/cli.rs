//! The router's command line, shared by its two entry points: the standalone
//! `dronectl-router` binary and `dronectl router` (which the local target's router
//! container runs). Both flatten the same [`Args`], install the same log subscriber with
//! [`Args::init_logging`], build their options with [`Args::options`] and serve with
//! [`serve`], so they accept the same flags and environment variables and log the same way.
//!
//! Behind the `cli` feature (clap, tracing-subscriber and Tokio's signal handling).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::{AdminToken, BindNetwork, RouterError, RouterOptions};

/// How long `--bind-network` waits for the router's interface on that network.
const BIND_NETWORK_WAIT: Duration = Duration::from_secs(5);

/// The router's flags (each also read from its environment variable).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Args {
    /// Internal data port address (HTTP/1.1 and h2c): Host routing, preview, version header
    #[arg(long, env = "ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Public data port address: public path routes only
    #[arg(long, env = "ROUTER_PUBLIC_LISTEN")]
    pub public_listen: Option<SocketAddr>,
    /// Admin API address
    #[arg(long, env = "ROUTER_ADMIN_LISTEN", default_value = "0.0.0.0:9901")]
    pub admin_listen: SocketAddr,
    /// File holding the admin token (without it the admin API refuses every request)
    #[arg(long, value_name = "FILE", env = "ROUTER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Bind the admin API and the public port to this host's address on the network with
    /// this gateway (GATEWAY/PREFIX, e.g. 172.20.0.1/16) instead of their given IPs
    #[arg(long, value_name = "GATEWAY/PREFIX", env = "ROUTER_BIND_NETWORK")]
    pub bind_network: Option<BindNetwork>,
    /// JSON routing table to start with (same schema as `PUT /config`)
    #[arg(long, value_name = "FILE", env = "ROUTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Per-attempt time to the upstream response head, in milliseconds (504 after)
    #[arg(long, env = "ROUTER_UPSTREAM_TIMEOUT_MS", default_value_t = 30_000)]
    pub upstream_timeout_ms: u64,
    /// Upstream TCP connect timeout in milliseconds (then another endpoint is tried)
    #[arg(long, env = "ROUTER_CONNECT_TIMEOUT_MS", default_value_t = 2_000)]
    pub connect_timeout_ms: u64,
    /// Largest accepted request body in bytes (413 above)
    #[arg(long, env = "ROUTER_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// On SIGTERM, how long in-flight requests may take to finish, in seconds
    #[arg(long, env = "ROUTER_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// How long an upgraded connection (WebSocket) stays open after its endpoint left the
    /// routing table, in milliseconds
    #[arg(long, env = "ROUTER_UPGRADE_GRACE_MS", default_value_t = 10_000)]
    pub upgrade_grace_ms: u64,
    /// Data-plane worker threads (0: one per available core)
    #[arg(long, env = "ROUTER_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Pin each worker thread to a CPU of its own (when there are at least as many CPUs
    /// the process may use as workers)
    #[arg(
        long,
        env = "ROUTER_PIN_WORKERS",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub pin_workers: bool,
    /// How long a worker out of work keeps polling before it sleeps, in microseconds
    /// after its last request started (0: it sleeps at once)
    #[arg(long, env = "ROUTER_BUSY_POLL_US", default_value_t = 0)]
    pub busy_poll_us: u64,
    /// Open connections a worker is given before the next worker is used (0: spread
    /// connections over all workers from the first)
    #[arg(long, env = "ROUTER_PACK_CONNECTIONS", default_value_t = 16)]
    pub pack_connections: usize,
    /// Log filter: a level (error, warn, info, debug, trace) or `RUST_LOG` directives
    /// (e.g. `info,dronectl_router=debug`) [default: $RUST_LOG, else $LOG_LEVEL, else info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format, on stderr
    #[arg(long, value_enum, env = "ROUTER_LOG_FORMAT", default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line
    Json,
    /// Human-readable lines
    Text,
}

/// Why the router's command line could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid log filter {filter:?} (from {origin}): {source}")]
    LogFilter {
        filter: String,
        origin: &'static str,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot install the log subscriber: {0}")]
    Logging(Box<dyn std::error::Error + Send + Sync>),
    /// A flag, the token file, the config file or the bind network is unusable: nothing
    /// was started.
    #[error(transparent)]
    Options(RouterError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The router started and then failed (a port already in use, an I/O error).
    #[error(transparent)]
    Serve(RouterError),
}

impl CliError {
    /// Whether the error is bad input (exit code 2) rather than a failure to run (1).
    pub fn is_usage(&self) -> bool {
        matches!(self, CliError::LogFilter { .. } | CliError::Options(_))
    }
}

impl Args {
    /// The log filter in force: `--log-level`, else `RUST_LOG`, else `LOG_LEVEL`, else `info`.
    pub fn log_filter(&self) -> Result<EnvFilter, CliError> {
        let env = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        let (filter, origin) = if let Some(f) = &self.log_level {
            (f.clone(), "--log-level")
        } else if let Some(f) = env("RUST_LOG") {
            (f, "RUST_LOG")
        } else if let Some(f) = env("LOG_LEVEL") {
            (f, "LOG_LEVEL")
        } else {
            ("info".to_string(), "the default")
        };
        EnvFilter::builder()
            .parse(&filter)
            .map_err(|source| CliError::LogFilter {
                filter,
                origin,
                source,
            })
    }

    /// Installs the process-wide log subscriber: lines on stderr, in `--log-format`,
    /// filtered by [`Args::log_filter`]. Call once, before anything that logs.
    pub fn init_logging(&self) -> Result<(), CliError> {
        let filter = self.log_filter()?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let installed = match self.log_format {
            LogFormat::Json => builder
                .json()
                .with_current_span(false)
                .with_span_list(false)
                .try_init(),
            LogFormat::Text => builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init(),
        };
        installed.map_err(CliError::Logging)
    }

    /// The router options these flags ask for: reads the token and config files and, with
    /// `--bind-network`, waits (up to 5 s, blocking) for the address on that network.
    pub fn options(&self) -> Result<RouterOptions, CliError> {
        let initial_config = match &self.config {
            Some(path) => Some(crate::load_config_file(path).map_err(CliError::Options)?),
            None => None,
        };
        let admin_token = match &self.admin_token_file {
            Some(path) => Some(
                AdminToken::from_file(path).map_err(|e| CliError::Options(RouterError::from(e)))?,
            ),
            None => None,
        };
        let mut opts = RouterOptions {
            listen: self.listen,
            public_listen: self.public_listen,
            admin_listen: self.admin_listen,
            admin_token,
            initial_config,
            upstream_timeout: Duration::from_millis(self.upstream_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_body_bytes: self.max_body_bytes,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            upgrade_grace: Duration::from_millis(self.upgrade_grace_ms),
            workers: self.workers,
            pin_workers: self.pin_workers,
            busy_poll: Duration::from_micros(self.busy_poll_us),
            pack_connections: self.pack_connections,
        };
        if let Some(network) = &self.bind_network {
            let ip = opts
                .bind_host_facing(network, BIND_NETWORK_WAIT)
                .map_err(|e| CliError::Options(RouterError::from(e)))?;
            tracing::info!(network = %network, address = %ip, "admin and public ports bound to the host-facing network");
        }
        Ok(opts)
    }
}

/// Serves `opts` until SIGTERM or SIGINT, then drains (see [`crate::Router::serve`]).
/// The signal handlers are installed before the ports are bound, so a signal is never
/// missed once the router logs that it listens. Must run inside a Tokio runtime with I/O,
/// time and signals enabled; the data ports are served by the router's own worker threads.
pub async fn serve(opts: RouterOptions) -> Result<(), CliError> {
    let shutdown = shutdown_signal();
    crate::run(opts, shutdown).await.map_err(CliError::Serve)?;
    tracing::info!("router stopped");
    Ok(())
}

/// A Tokio runtime for [`serve`]: single-threaded, as it only runs the admin API and the
/// signal handlers (the data plane has its own worker threads).
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either (on Ctrl-C
/// when the Unix handlers cannot be installed).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape both entry points give the shared flags.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("router").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_router_options() {
        let args = parse(&[
            "--listen=127.0.0.1:1",
            "--public-listen=127.0.0.1:2",
            "--admin-listen=127.0.0.1:3",
            "--upstream-timeout-ms=1500",
            "--connect-timeout-ms=250",
            "--max-body-bytes=1024",
            "--drain-timeout-secs=7",
            "--upgrade-grace-ms=250",
            "--workers=3",
            "--pin-workers=false",
            "--busy-poll-us=25",
            "--pack-connections=4",
            "--log-format=text",
        ])
        .unwrap();
        assert_eq!(args.log_format, LogFormat::Text);
        let opts = args.options().unwrap();
        assert_eq!(opts.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(opts.public_listen, Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(opts.admin_listen, "127.0.0.1:3".parse().unwrap());
        assert_eq!(opts.upstream_timeout, Duration::from_millis(1500));
        assert_eq!(opts.connect_timeout, Duration::from_millis(250));
        assert_eq!(opts.max_body_bytes, 1024);
        assert_eq!(opts.drain_timeout, Duration::from_secs(7));
        assert_eq!(opts.upgrade_grace, Duration::from_millis(250));
        assert_eq!(opts.workers, 3);
        assert!(!opts.pin_workers);
        assert_eq!(opts.busy_poll, Duration::from_micros(25));
        assert_eq!(opts.pack_connections, 4);
        assert!(opts.admin_token.is_none() && opts.initial_config.is_none());
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let opts = parse(&[]).unwrap().options().unwrap();
        let lib = RouterOptions::default();
        assert_eq!(
            (
                opts.listen,
                opts.public_listen,
                opts.admin_listen,
                opts.upstream_timeout,
                opts.connect_timeout,
                opts.max_body_bytes,
                opts.drain_timeout,
                opts.upgrade_grace,
                opts.workers,
                opts.pin_workers,
                opts.busy_poll,
                opts.pack_connections
            ),
            (
                lib.listen,
                lib.public_listen,
                lib.admin_listen,
                lib.upstream_timeout,
                lib.connect_timeout,
                lib.max_body_bytes,
                lib.drain_timeout,
                lib.upgrade_grace,
                lib.workers,
                lib.pin_workers,
                lib.busy_poll,
                lib.pack_connections
            )
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(parse(&["--bind-network", "172.20.0.1"]).is_err());
        assert!(parse(&["--max-body-bytes", "-1"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());

        let bad_filter = parse(&["--log-level", "info,=x=y"]).unwrap();
        let err = bad_filter.log_filter().unwrap_err();
        assert!(err.is_usage(), "{err}");
        assert!(err.to_string().contains("--log-level"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-token");
        let args = parse(&["--admin-token-file", missing.to_str().unwrap()]).unwrap();
        let err = args.options().unwrap_err();
        assert!(err.is_usage(), "{err}");
        let table = dir.path().join("table.json");
        std::fs::write(&table, b"{\"services\": {\"Bad\": {}}}").unwrap();
        let args = parse(&["--config", table.to_str().unwrap()]).unwrap();
        let err = args.options().unwrap_err();
        assert!(err.is_usage(), "{err}");
    }

    #[test]
    fn the_log_level_flag_is_the_filter() {
        let args = parse(&["--log-level", "debug"]).unwrap();
        assert_eq!(args.log_filter().unwrap().to_string(), "debug");
    }
}
