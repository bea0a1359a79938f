//! dronectl's L7 HTTP traffic router.
//!
//! One router runs per app on its Docker network; every service name resolves to it, so all
//! external and service-to-service traffic passes through it. Its internal data port routes
//! by `Host` (`<service>`, `<service>-preview`) or by public path prefix; its public data port
//! (the only one published on the host) routes by public path prefix only. It splits each
//! service's traffic between versions by weight, retries connection failures on other
//! endpoints, and exposes an admin API (config, stats, metrics, endpoints) that only the
//! holder of the admin token can use. See `docs/router.md`.
//!
//! Library use (dronectl embeds it as `dronectl router`):
//!
//! ```no_run
//! # async fn demo() -> Result<(), dronectl_router::RouterError> {
//! let router = dronectl_router::bind(dronectl_router::RouterOptions::default())?;
//! println!("data on {}, admin on {}", router.data_addr(), router.admin_addr());
//! router.serve(async { /* wait for SIGTERM */ }).await
//! # }
//! ```
//!
//! The library installs no global tracing subscriber and keeps no process-global state: every
//! [`Router`] owns its table, counters and upstream connection pool.

mod admin;
mod affinity;
pub mod auth;
mod body;
mod busy_poll;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
mod date;
mod fields;
mod front;
mod metrics;
mod mirror;
pub mod network;
mod path;
mod placement;
mod proxy;
pub mod select;
pub mod stats;
mod table;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tracing::{debug, info, warn};

pub use auth::{AdminToken, TokenError};
pub use config::{
    ConfigError, MatchRule, Mirror, RouterConfig, ServiceConfig, ValueMatch, VersionConfig,
};
pub use metrics::EndpointInfo;
pub use network::{BindNetwork, BindNetworkError};
pub use proxy::{CORRELATION_HEADER, TOKEN_HEADER, VERSION_HEADER};
pub use stats::{LatencyHistogram, ServiceStats, Stats, VersionStats, LATENCY_BUCKETS};

use body::ReqBody;
use metrics::Metrics;
use proxy::Listener;
use table::Table;

/// How a router instance listens and behaves.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Internal data port (HTTP/1.1 keep-alive, and HTTP/2 prior-knowledge h2c): `Host`
    /// routing, preview host, `x-dronectl-version`, then public routes. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Public data port, if any: public path routes only (`Host` is ignored for choosing the
    /// service), `x-dronectl-version` only with the admin token. Default none.
    pub public_listen: Option<SocketAddr>,
    /// Admin API port. Default `0.0.0.0:9901`.
    pub admin_listen: SocketAddr,
    /// The token every admin call must present (`Authorization: Bearer`). Without one, the
    /// admin API answers 401 to everything. Default none.
    pub admin_token: Option<AdminToken>,
    /// Routing table to start with (otherwise empty: everything is 404 until `PUT /config`).
    pub initial_config: Option<RouterConfig>,
    /// Per attempt: time allowed until the upstream response head arrives (504 after).
    /// Default 30 s.
    pub upstream_timeout: Duration,
    /// Time allowed to establish an upstream TCP connection before trying another endpoint.
    /// Default 2 s.
    pub connect_timeout: Duration,
    /// Largest accepted request body (413 above). Default 10 MiB.
    pub max_body_bytes: u64,
    /// On shutdown, how long in-flight requests may take to finish. Default 30 s.
    pub drain_timeout: Duration,
    /// How long an upgraded connection (WebSocket, any `Connection: Upgrade`) may stay open
    /// once its endpoint has left the routing table; it is closed then. Default 10 s.
    pub upgrade_grace: Duration,
    /// Data-plane worker threads, each with its own single-threaded runtime, accept loop
    /// and upstream connection pool. 0 (the default): one per available core.
    pub workers: usize,
    /// Pin worker `i` to the `i`-th CPU the process may use, when there are at least as
    /// many such CPUs as workers (see `docs/router.md`, "Performance"). Default true.
    pub pin_workers: bool,
    /// How long a worker that has run out of work keeps polling its sockets (giving the
    /// CPU to any other ready thread between polls) before it sleeps, counted from the
    /// start of its last request; zero: it sleeps at once. Saves the kernel's sleep and
    /// wake-up between a request and its response (see `docs/router.md`, "Performance").
    /// Default zero: it trades p99 latency for throughput (measured there).
    pub busy_poll: Duration,
    /// A new connection goes to the first worker holding fewer than this many open
    /// connections whose thread used at most half a CPU lately, and to the one holding the
    /// fewest once no worker is below both: up to 16 connections or so one worker serves
    /// them with less CPU time than two (it sleeps less often; see `docs/router.md`,
    /// "Performance"). 0: spread from the first connection. Default 16.
    pub pack_connections: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_listen: None,
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9901)),
            admin_token: None,
            initial_config: None,
            upstream_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            max_body_bytes: 10 * 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            upgrade_grace: Duration::from_secs(10),
            workers: 0,
            pin_workers: true,
            busy_poll: Duration::ZERO,
            pack_connections: 16,
        }
    }
}

impl RouterOptions {
    /// Moves the admin API and the public data port (their ports kept) to this host's
    /// address on `network`, so that only what reaches that network reaches them (see
    /// [`BindNetwork::local_address`]). Returns the address.
    pub fn bind_host_facing(
        &mut self,
        network: &BindNetwork,
        wait: Duration,
    ) -> Result<std::net::IpAddr, BindNetworkError> {
        let ip = network.local_address(wait)?;
        self.admin_listen.set_ip(ip);
        if let Some(public) = &mut self.public_listen {
            public.set_ip(ip);
        }
        Ok(ip)
    }
}

/// Errors of starting or running a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read router config {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid router config{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Config {
        path: Option<PathBuf>,
        source: ConfigError,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    BindNetwork(#[from] BindNetworkError),
    #[error("router I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads and validates a JSON routing table from a file (`--config`).
pub fn load_config_file(path: &Path) -> Result<RouterConfig, RouterError> {
    let bytes = std::fs::read(path).map_err(|source| RouterError::ConfigFile {
        path: path.to_path_buf(),
        source,
    })?;
    RouterConfig::from_json(&bytes).map_err(|source| RouterError::Config {
        path: Some(path.to_path_buf()),
        source,
    })
}

pub(crate) struct Inner {
    pub(crate) table: ArcSwap<Table>,
    pub(crate) metrics: Metrics,
    pub(crate) connect_timeout: Duration,
    pub(crate) upstream_timeout: Duration,
    pub(crate) upgrade_grace: Duration,
    pub(crate) max_body_bytes: u64,
    pub(crate) draining: AtomicBool,
    pub(crate) admin_token: Option<AdminToken>,
    /// Mirrored requests in flight (bounded: see `mirror.rs`).
    pub(crate) mirrors: mirror::Limiter,
    /// Open data-port connections per worker, and which worker gets the next one.
    placement: placement::Placement,
    apply_lock: Mutex<()>,
}

/// The upstream HTTP/1.1 client: pooled keep-alive connections with `TCP_NODELAY`. One per
/// worker thread, so a worker's requests and its upstream connections stay on its thread.
pub(crate) type UpstreamClient = Client<HttpConnector, ReqBody>;

impl Inner {
    fn upstream_client(&self) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Below the 30 s after which hyper-based services close idle keep-alive
            // connections, so the router drops a pooled connection before the service does.
            .pool_idle_timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(256)
            .build(connector)
    }
}

/// What one data-plane worker thread hands every request: the shared state and the
/// worker's own upstream client.
pub(crate) struct Worker {
    pub(crate) inner: Arc<Inner>,
    pub(crate) client: UpstreamClient,
}

/// A cheap, cloneable handle on a router's state: apply configs and read counters in-process
/// (the admin API does exactly this).
#[derive(Clone)]
pub struct RouterHandle(Arc<Inner>);

impl RouterHandle {
    /// Validates and atomically applies a routing table; returns the applied generation.
    /// Compare-and-set: a generation not above the current one (0 and absent included) is
    /// rejected, so writers that read generation `g` and write `g + 1` never overwrite each
    /// other, and no writer can skip the check.
    /// In-flight requests finish where they were sent; only new requests see the new table.
    pub fn apply(&self, cfg: RouterConfig) -> Result<u64, ConfigError> {
        cfg.validate()?;
        let inner = &self.0;
        let _serialise = inner.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = inner.table.load().generation();
        if cfg.generation == 0 {
            return Err(ConfigError::GenerationRequired { current });
        }
        if cfg.generation <= current {
            return Err(ConfigError::StaleGeneration {
                got: cfg.generation,
                current,
            });
        }
        let table = Arc::new(Table::compile(cfg, &inner.metrics));
        let generation = table.generation();
        inner.table.store(table.clone());
        inner.metrics.gc_endpoints(&|a| table.has_endpoint(a));
        info!(generation, "routing table applied");
        Ok(generation)
    }

    /// The routing table in force.
    pub fn config(&self) -> Arc<RouterConfig> {
        self.0.table.load().config.clone()
    }

    /// Generation of the routing table in force.
    pub fn generation(&self) -> u64 {
        self.0.table.load().generation()
    }

    /// Snapshot of the cumulative per-version counters (what `GET /stats` serves).
    pub fn stats(&self) -> Stats {
        self.0.metrics.stats(self.generation())
    }

    /// In-flight requests per endpoint (what `GET /endpoints` serves).
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        let table = self.0.table.load_full();
        self.0.metrics.endpoints(&|a| table.has_endpoint(a))
    }

    /// Prometheus text exposition (what `GET /metrics` serves).
    pub fn metrics_text(&self) -> String {
        let mut out = self.0.metrics.prometheus(self.generation());
        self.0.placement.prometheus(&mut out);
        out
    }
}

/// A router whose sockets are bound but which does not serve yet.
pub struct Router {
    data: std::net::TcpListener,
    public: Option<std::net::TcpListener>,
    admin: std::net::TcpListener,
    data_addr: SocketAddr,
    public_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    drain_timeout: Duration,
    workers: usize,
    pin_workers: bool,
    busy_poll: Duration,
    inner: Arc<Inner>,
}

/// Binds the ports (use port 0 to let the OS choose) and applies the initial config (whose
/// generation 0 or absent becomes 1). Needs no async runtime; [`Router::serve`] must run
/// inside a Tokio runtime.
pub fn bind(opts: RouterOptions) -> Result<Router, RouterError> {
    let listen = |addr: SocketAddr| -> Result<(std::net::TcpListener, SocketAddr), RouterError> {
        let l = std::net::TcpListener::bind(addr)
            .map_err(|source| RouterError::Bind { addr, source })?;
        l.set_nonblocking(true)?;
        let local = l.local_addr()?;
        Ok((l, local))
    };
    let (data, data_addr) = listen(opts.listen)?;
    let (public, public_addr) = match opts.public_listen {
        Some(addr) => {
            let (l, a) = listen(addr)?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    let (admin, admin_addr) = listen(opts.admin_listen)?;

    let workers = match opts.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let metrics = Metrics::default();
    let inner = Arc::new(Inner {
        table: ArcSwap::from_pointee(Table::compile(RouterConfig::default(), &metrics)),
        metrics,
        connect_timeout: opts.connect_timeout,
        upstream_timeout: opts.upstream_timeout,
        upgrade_grace: opts.upgrade_grace,
        max_body_bytes: opts.max_body_bytes,
        draining: AtomicBool::new(false),
        admin_token: opts.admin_token,
        mirrors: mirror::Limiter::default(),
        placement: placement::Placement::new(workers, opts.pack_connections),
        apply_lock: Mutex::new(()),
    });
    if let Some(mut cfg) = opts.initial_config {
        cfg.generation = cfg.generation.max(1);
        RouterHandle(inner.clone())
            .apply(cfg)
            .map_err(|source| RouterError::Config { path: None, source })?;
    }
    Ok(Router {
        data,
        public,
        admin,
        data_addr,
        public_addr,
        admin_addr,
        drain_timeout: opts.drain_timeout,
        workers,
        pin_workers: opts.pin_workers,
        busy_poll: opts.busy_poll,
        inner,
    })
}

/// Binds and serves until `shutdown` completes, then drains (see [`Router::serve`]).
pub async fn run(
    opts: RouterOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RouterError> {
    bind(opts)?.serve(shutdown).await
}

impl Router {
    /// The bound internal data address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The bound public data address, if there is a public port.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A handle for in-process config changes and counters.
    pub fn handle(&self) -> RouterHandle {
        RouterHandle(self.inner.clone())
    }

    /// Serves every port until `shutdown` completes. Then: readiness turns 503, the data
    /// ports stop accepting, idle keep-alive connections are closed, in-flight requests are
    /// drained (up to the drain timeout), and the admin port is closed last.
    ///
    /// Connections to the data ports are accepted here and handed to the router's own
    /// worker threads (see [`RouterOptions::workers`]; which one: see
    /// [`RouterOptions::pack_connections`]), each a single-threaded Tokio runtime with its own upstream connection
    /// pool, which serves them to the end, pinned to a CPU of its own unless
    /// [`RouterOptions::pin_workers`] is off.
    /// The admin port and `shutdown` run on the caller's runtime. Dropping this future
    /// stops the workers too (they drain as on shutdown).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RouterError> {
        let data = tokio::net::TcpListener::from_std(self.data)?;
        let public = self
            .public
            .map(tokio::net::TcpListener::from_std)
            .transpose()?;
        let admin = tokio::net::TcpListener::from_std(self.admin)?;
        let inner = self.inner;
        if inner.admin_token.is_none() {
            warn!("no admin token: the admin API refuses every request");
        }

        let pins = if self.pin_workers {
            affinity::plan(self.workers, &affinity::allowed_cpus())
        } else {
            None
        };
        let mut workers = tokio::task::JoinSet::new();
        let mut queues = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let cpu = pins.as_ref().map(|p| p[i]);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), RouterError>>();
            let (inner, drain, busy_poll) = (inner.clone(), self.drain_timeout, self.busy_poll);
            std::thread::Builder::new()
                .name(format!("router-worker-{i}"))
                .spawn(move || {
                    metrics::set_shard(i);
                    if let Some(cpu) = cpu {
                        if let Err(e) = affinity::pin_current_thread(cpu) {
                            warn!(worker = i, cpu, error = %e, "cannot pin the worker thread to its CPU");
                        }
                    }
                    inner.placement.register_worker_thread(i);
                    let res = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(RouterError::Io)
                        .map(|rt| rt.block_on(worker_loop(rx, inner, drain, busy_poll)));
                    let _ = done_tx.send(res);
                })?;
            workers.spawn(async move { done_rx.await.unwrap_or(Ok(())) });
            queues.push(tx);
        }
        info!(
            data = %self.data_addr,
            public = %self.public_addr.map_or("none".to_string(), |a| a.to_string()),
            admin = %self.admin_addr,
            workers = self.workers,
            pinned = pins.is_some(),
            "router listening"
        );

        let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(admin_loop(admin, inner.clone(), admin_stop_rx));

        let mut shutdown = std::pin::pin!(shutdown);
        let accept_public = || async {
            match &public {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        let mut result = Ok(());
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                // A worker only ends early if it could not start its runtime.
                Some(done) = workers.join_next() => {
                    result = done.unwrap_or(Ok(()));
                    break;
                }
                res = async { tokio::select! {
                    r = data.accept() => r.map(|c| (c, Listener::Internal)),
                    r = accept_public() => r.map(|c| (c, Listener::Public)),
                } } => match res {
                    Ok(((stream, remote), listener)) => {
                        let _ = stream.set_nodelay(true);
                        match stream.into_std() {
                            Ok(stream) => {
                                let (i, open) = inner.placement.place();
                                let _ = queues[i].send((stream, remote, listener, open));
                            }
                            Err(e) => warn!(error = %e, "accepted connection unusable"),
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }

        inner.draining.store(true, Relaxed);
        drop(data);
        drop(public);
        info!("shutting down: draining in-flight requests");
        // Closing the queues tells the workers to stop and drain.
        drop(queues);
        while let Some(done) = workers.join_next().await {
            if let Ok(Err(e)) = done {
                result = result.and(Err(e));
            }
        }
        let _ = admin_stop_tx.send(());
        let _ = admin_task.await;
        result
    }
}

/// A connection accepted on a data port, on its way to a worker, counted as open there.
type Accepted = (
    std::net::TcpStream,
    SocketAddr,
    Listener,
    placement::OpenConnection,
);

/// One data-plane worker: serves the connections it is handed on this thread until its
/// queue closes, then drains like [`Router::serve`] describes.
async fn worker_loop(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    inner: Arc<Inner>,
    drain_timeout: Duration,
    busy_poll: Duration,
) {
    let worker = Arc::new(Worker {
        client: inner.upstream_client(),
        inner,
    });
    let mut first = auto::Builder::new(TokioExecutor::new());
    first
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // No header read timeout: hyper would start it when a keep-alive connection goes
        // idle and then close it under a client about to reuse it (a lost request).
        .header_read_timeout(None);
    let fallback = Arc::new(front::Fallback {
        http1: first.clone().http1_only(),
        first,
    });
    // Turns true when the worker drains; every connection holds a receiver, so the
    // channel closes when the last connection has ended.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Polls before it sleeps (see `busy_poll.rs`); aborted when the worker drains.
    let poller = (!busy_poll.is_zero()).then(|| tokio::spawn(busy_poll::poller(busy_poll)));
    while let Some((stream, remote, listener, open)) = queue.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot register an accepted connection");
                continue;
            }
        };
        let peer = Arc::new(proxy::Peer::new(worker.clone(), remote.ip(), listener));
        let (fallback, stopped) = (fallback.clone(), stopped.clone());
        // The connection's own upstream connection is used from this same task (by its
        // requests and their response bodies) and closed with it.
        tokio::spawn(async move {
            let dedicated = peer.dedicated.clone();
            front::serve(stream, peer, &fallback, stopped).await;
            dedicated.clear();
            // Named so that the task owns it: the connection counts as open until here.
            drop(open);
        });
    }
    if let Some(poller) = poller {
        poller.abort();
    }
    drop(stopped);
    let _ = stop.send(true);
    tokio::select! {
        _ = stop.closed() => debug!("worker drained"),
        _ = tokio::time::sleep(drain_timeout) => warn!("drain timeout reached; closing remaining connections"),
    }
}

async fn admin_loop(
    listener: tokio::net::TcpListener,
    inner: Arc<Inner>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let inner = inner.clone();
                    let svc = service_fn(move |req| admin::handle(inner.clone(), req));
                    let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}
