//! Load generator: POSTs delivery requests to ingestion with a fixed number of
//! concurrent connections for a bounded time / count, reports accepted
//! requests/s and latency percentiles, then waits (bounded) until every
//! accepted request reached a final state and reports end-to-end completed
//! deliveries/s and lost requests.
//!
//! ```text
//! loadgen [--spawn | --ingestion URL --delivery URL] [--duration SECS] [--max-requests N]
//!         [--concurrency C] [--drain-timeout SECS] [--client raw|hyper] [--json]
//! ```
//! `--spawn` starts redis + all services on free loopback ports (binaries from
//! the same target directory as this program). `--buffer-first` (with
//! `--spawn`) stops the workflow while sending and restarts it afterwards:
//! ingestion is measured alone (load levelling: requests are only queued),
//! then the backlog drain measures the end-to-end processing rate.
//!
//! Besides the rates, it reports what one delivery costs, so runs on machines
//! of different speed compare: the machine's busy CPU time (`/proc/stat`, all
//! processes) per completed delivery and, with `--spawn`, the Redis commands
//! per completed delivery (`INFO commandstats`, commands inside scripts included), and
//! the load generator's own CPU per request (its client: `--client raw`, the default, or
//! `hyper`; see the note above [`Client`]).
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    spawn: bool,
    ingestion: String,
    delivery: String,
    duration: f64,
    max_requests: u64,
    concurrency: usize,
    drain_timeout: f64,
    json: bool,
    buffer_first: bool,
    client: Client,
}

fn parse_args() -> Args {
    let mut a = Args {
        spawn: false,
        ingestion: String::new(),
        delivery: String::new(),
        duration: 10.0,
        max_requests: 200_000,
        concurrency: 64,
        drain_timeout: 120.0,
        json: false,
        buffer_first: false,
        client: Client::Raw,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--spawn" => a.spawn = true,
            "--json" => a.json = true,
            "--buffer-first" => a.buffer_first = true,
            "--client" => {
                a.client = match val().as_str() {
                    "raw" => Client::Raw,
                    "hyper" => Client::Hyper,
                    other => panic!("--client raw|hyper, not {other}"),
                }
            }
            "--ingestion" => a.ingestion = val(),
            "--delivery" => a.delivery = val(),
            "--duration" => a.duration = val().parse().expect("--duration SECS"),
            "--max-requests" => a.max_requests = val().parse().expect("--max-requests N"),
            "--concurrency" => a.concurrency = val().parse().expect("--concurrency C"),
            "--drain-timeout" => a.drain_timeout = val().parse().expect("--drain-timeout SECS"),
            "-h" | "--help" => {
                println!("loadgen [--spawn | --ingestion URL --delivery URL] [--duration SECS] [--max-requests N] [--concurrency C] [--drain-timeout SECS] [--client raw|hyper] [--json]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a.duration = a.duration.clamp(0.1, 600.0);
    a.drain_timeout = a.drain_timeout.clamp(1.0, 900.0);
    a
}

async fn stats(c: &reqwest::Client, delivery: &str) -> Value {
    match c.get(format!("{delivery}/api/deliveries/stats")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let _stack;
    let (ingestion, delivery) = if args.spawn {
        let mut opts = e2e::StackOptions {
            redis_args: vec![
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "everysec".into(),
                "--rdbcompression".into(),
                "no".into(),
                // As deployed (dronectl.yaml): the append-only file is the persistence,
                // no RDB snapshots on top.
                "--save".into(),
                "".into(),
                // The manifest's policy (noeviction, applied by the harness) with room
                // for a whole run: about 3.6 kB per delivery stays in Redis for the
                // retention (MAX_REQUESTS 500,000 ~ 1.8 GB), more than dronectl.yaml's
                // bound for a 512 MiB container.
                "--maxmemory".into(),
                "4gb".into(),
            ],
            redis_nice: Some(-10),
            ..Default::default()
        }
        .env("FLEET_SIZE", "20000")
        .env("MIN_LEG_MS", "500")
        .env("MAX_LEG_MS", "1000")
        .env("POSITION_EVENTS_MS", "0")
        .env("CONSUMER_CONCURRENCY", "1024")
        .env("CONSUMER_BATCH", "512")
        .env("BULKHEAD_MAX", "512")
        .env("HTTP_TIMEOUT_MS", "10000")
        .env("MAX_BODY_BYTES", "65536");
        // Optional: e.g. LOADGEN_SERVICE_THREADS=1 gives every service a 1-thread runtime.
        if let Ok(t) = std::env::var("LOADGEN_SERVICE_THREADS") {
            opts = opts.env("TOKIO_WORKER_THREADS", &t);
        }
        // Optional: LOADGEN_REDIS_ARGS="--appendonly no" adds redis-server arguments (experiments).
        if let Ok(extra) = std::env::var("LOADGEN_REDIS_ARGS") {
            opts.redis_args.extend(extra.split_whitespace().map(str::to_string));
        }
        // Optional: LOADGEN_SERVICE_ENV="BATCH_MAX=64,CONSUMER_CONCURRENCY=2048" overrides
        // the services' settings above (experiments).
        if let Ok(list) = std::env::var("LOADGEN_SERVICE_ENV") {
            for kv in list.split(',').filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').expect("LOADGEN_SERVICE_ENV: K=V[,K=V...]");
                opts = opts.env(k.trim(), v.trim());
            }
        }
        let s = Arc::new(
            tokio::task::spawn_blocking(move || e2e::Stack::start(opts))
                .await
                .expect("start stack"),
        );
        // Never leave processes behind, even when interrupted.
        let s2 = s.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            eprintln!("interrupted; stopping the stack");
            s2.shutdown();
            std::process::exit(130);
        });
        let urls = (s.url("ingestion"), s.url("delivery"));
        eprintln!("stack started (logs in {})", s.dir.display());
        _stack = Some(s);
        urls
    } else {
        _stack = None;
        assert!(
            !args.ingestion.is_empty() && !args.delivery.is_empty(),
            "--ingestion and --delivery (or --spawn) are required"
        );
        (args.ingestion.clone(), args.delivery.clone())
    };
    // Only for the stats endpoint; the load itself goes through `Conn`.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let before = stats(&client, &delivery).await;
    let redis = _stack
        .as_ref()
        .and_then(|s| redis::Client::open(s.redis_url.as_str()).ok());
    let redis_before = command_stats(redis.as_ref()).await;
    let cpu_before = machine_cpu();
    let own_before = own_cpu_ticks();
    if args.buffer_first {
        _stack.as_ref().expect("--buffer-first needs --spawn").kill("workflow");
    }
    let sent = Arc::new(AtomicU64::new(0));
    let target = HttpTarget::new(&ingestion, "/api/deliveryrequests");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let target = target.clone();
        let sent = sent.clone();
        let max = args.max_requests;
        let client = args.client;
        workers.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 14);
            let (mut ok, mut err) = (0u64, 0u64);
            let mut conn: Option<Conn> = None;
            let mut i = 0u64;
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                // The original load test's request, with a distinct owner id.
                let body = format!(
                    r#"{{"confirmationRequired":"None","deadline":"","dropOffLocation":"0,36.778261,-119.41793200000001","expedited":true,"ownerId":"owner-{w}-{i}","packageInfo":{{"packageId":"mypackage","size":"Small","tag":"mytag","weight":10}},"pickupLocation":"0,36.778261,-119.41793200000001","pickupTime":"2019-05-08T20:00:00.000Z"}}"#
                );
                i += 1;
                let t = Instant::now();
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::open(&target, client).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            err += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    c.post(&target, body.as_bytes()),
                )
                .await
                .unwrap_or_else(|_| Err(invalid("timed out")));
                match answer {
                    Ok((status, keep_alive)) => {
                        if status == 202 {
                            ok += 1;
                            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        } else {
                            err += 1;
                        }
                        if !keep_alive {
                            conn = None;
                        }
                    }
                    Err(_) => {
                        err += 1;
                        conn = None;
                    }
                }
            }
            (ok, err, lat)
        }));
    }
    let (mut accepted, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    for w in workers {
        let (o, e, l) = w.await.unwrap();
        accepted += o;
        errors += e;
        lat.extend(l);
    }
    let send_secs = start.elapsed().as_secs_f64();
    // This process's CPU while sending: what the client costs per request.
    let own_cpu_secs = own_cpu_ticks()
        .zip(own_before)
        .map(|(b, a)| b.saturating_sub(a) as f64 / 100.0);
    let loadgen_cpu_us = own_cpu_secs.map(|s| s * 1e6 / (accepted + errors).max(1) as f64);
    let at_send_end = stats(&client, &delivery).await;
    lat.sort_unstable();
    let drain_start = Instant::now();
    if args.buffer_first {
        let s = _stack.as_ref().unwrap();
        s.spawn("workflow", &[]);
    }
    // Drain: wait until every accepted request is final (completed / failed / cancelled).
    let base_final = n(&before, "completed") + n(&before, "failed") + n(&before, "cancelled");
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    let mut last = at_send_end.clone();
    while Instant::now() < drain_deadline {
        last = stats(&client, &delivery).await;
        let fin = n(&last, "completed") + n(&last, "failed") + n(&last, "cancelled") - base_final;
        if fin >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_secs = start.elapsed().as_secs_f64();
    let cpu = machine_cpu().zip(cpu_before).map(|(b, a)| b.since(&a));
    let redis_after = command_stats(redis.as_ref()).await;
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let completed = n(&last, "completed") - n(&before, "completed");
    let failed = n(&last, "failed") - n(&before, "failed");
    let created = n(&last, "created") - n(&before, "created");
    let completed_during_send = n(&at_send_end, "completed") - n(&before, "completed");
    let lost = accepted.saturating_sub(completed + failed);
    let per_delivery = |x: f64| if completed > 0 { x / completed as f64 } else { 0.0 };
    let redis_calls = calls_since(&redis_before, &redis_after);
    let redis_total: u64 = redis_calls.iter().map(|(_, c)| c).sum();
    let report = json!({
        "accepted": accepted,
        "errors": errors,
        "send_seconds": send_secs,
        "ingestion_accepted_per_sec": accepted as f64 / send_secs,
        "latency_ms": {"p50": pct(&lat, 0.50), "p90": pct(&lat, 0.90), "p99": pct(&lat, 0.99), "max": pct(&lat, 1.0)},
        "concurrency": args.concurrency,
        "client": format!("{:?}", args.client).to_lowercase(),
        "loadgen_cpu_us_per_request": loadgen_cpu_us,
        "completed": completed,
        "failed": failed,
        "created": created,
        "completed_during_send": completed_during_send,
        "end_to_end_seconds": total_secs,
        "completed_per_sec_end_to_end": completed as f64 / total_secs,
        "completed_per_sec_during_send": completed_during_send as f64 / send_secs,
        "drain_seconds": drain_secs,
        "completed_per_sec_backlog_drain": (completed - completed_during_send) as f64 / drain_secs,
        "buffer_first": args.buffer_first,
        "lost": lost,
        "drained": lost == 0,
        // Machine-wide, from the first request to the last final state: what one
        // delivery costs on this machine, whatever its speed.
        "cpu_busy_cores": cpu.map(|c| c.busy_cores()),
        "cpu_steal_percent": cpu.map(|c| c.steal_pct()),
        "cpu_us_per_delivery": cpu.map(|c| per_delivery(c.busy_secs() * 1e6)),
        "redis_commands_per_delivery": per_delivery(redis_total as f64),
        "redis_commands": redis_calls
            .iter()
            .take(12)
            .map(|(k, c)| (k.clone(), json!((per_delivery(*c as f64) * 100.0).round() / 100.0)))
            .collect::<serde_json::Map<_, _>>(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "accepted requests:        {accepted} in {send_secs:.2}s ({:.0} req/s), non-202: {errors}",
            accepted as f64 / send_secs
        );
        println!(
            "ingestion latency:        p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (concurrency {})",
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            pct(&lat, 1.0),
            args.concurrency
        );
        println!("completed deliveries:     {completed} (failed {failed}) in {total_secs:.2}s from first request ({:.0}/s end to end; {:.0}/s while sending)", completed as f64 / total_secs, completed_during_send as f64 / send_secs);
        println!(
            "backlog after sending:    {} drained in {drain_secs:.2}s ({:.0} completed/s)",
            completed - completed_during_send,
            (completed - completed_during_send) as f64 / drain_secs
        );
        if let Some(us) = loadgen_cpu_us {
            println!(
                "load generator CPU:       {us:.1} µs per request while sending ({:?} client)",
                args.client
            );
        }
        if let Some(c) = cpu {
            println!(
                "machine CPU:              {:.2} of {} cores busy, {:.0} µs per completed delivery (steal {:.1} %)",
                c.busy_cores(),
                c.cores,
                per_delivery(c.busy_secs() * 1e6),
                c.steal_pct()
            );
        }
        if redis_total > 0 {
            let top: Vec<String> = redis_calls
                .iter()
                .take(8)
                .map(|(k, c)| format!("{k} {:.1}", per_delivery(*c as f64)))
                .collect();
            println!(
                "redis commands:           {:.1} per completed delivery ({})",
                per_delivery(redis_total as f64),
                top.join(", ")
            );
        }
        println!(
            "lost requests:            {lost}{}",
            if lost == 0 {
                ""
            } else {
                " (not final before --drain-timeout)"
            }
        );
        println!("{report}");
    }
    if let Some(s) = &_stack {
        s.shutdown();
    }
    drop(_stack);
    if lost > 0 {
        std::process::exit(1);
    }
}

/// Machine-wide CPU time from `/proc/stat` (in USER_HZ ticks, 100 per second).
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    busy: u64,
    /// Time the hypervisor gave this VM's CPUs to someone else: high on a busy host.
    steal: u64,
    total: u64,
    cores: usize,
}

impl CpuTimes {
    /// Parse the aggregate `cpu` line (user nice system idle iowait irq softirq
    /// steal …): busy is user, nice, system, irq and softirq.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let f = |i: usize| v.get(i).copied().unwrap_or(0);
        let total: u64 = (0..8).map(f).sum();
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        Some(Self {
            busy: f(0) + f(1) + f(2) + f(5) + f(6),
            steal: f(7),
            total,
            cores: cores.max(1),
        })
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
            cores: self.cores,
        }
    }

    fn busy_secs(&self) -> f64 {
        self.busy as f64 / 100.0
    }

    /// Busy cores on average over the interval.
    fn busy_cores(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.busy as f64 / self.total as f64 * self.cores as f64
    }

    /// Share of the interval stolen by the hypervisor, in percent.
    fn steal_pct(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.steal as f64 / self.total as f64 * 100.0
    }
}

/// This process's user + system CPU time in ticks (`/proc/self/stat` fields 14 and 15).
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn machine_cpu() -> Option<CpuTimes> {
    CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// `INFO commandstats` of the spawned stack's Redis: calls per command (empty
/// without a stack, or if Redis does not answer within 5 s).
async fn command_stats(redis: Option<&redis::Client>) -> Vec<(String, u64)> {
    let Some(client) = redis else {
        return Vec::new();
    };
    let fetch = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut c)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), fetch).await {
        Ok(Ok(text)) => parse_command_stats(&text),
        _ => Vec::new(),
    }
}

/// `cmdstat_xadd:calls=12,usec=...` lines to `[("xadd", 12), ...]`.
fn parse_command_stats(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Calls per command between two snapshots, most frequent first.
fn calls_since(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = after
        .iter()
        .map(|(k, c)| {
            let b = before.iter().find(|(bk, _)| bk == k).map_or(0, |(_, b)| *b);
            (k.clone(), c.saturating_sub(b))
        })
        .filter(|(_, c)| *c > 0)
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

// The client. Why a hand-written one: measured on 2026-12-02 against the same loopback
// upstream (an axum server answering 202 like ingestion, the one now committed as
// `examples/sink.rs`, which was built outside the repository for that run), 16 connections, 4 s per run, 10 runs of each interleaved on a loaded
// 2-core machine (load average 9-10): this client spent 9.4-11.0 µs of the load
// generator's CPU per request (median 9.8), hyper's own HTTP/1.1 client
// (`hyper::client::conn::http1`, one connection per worker, `--client hyper`) 12.2-15.2
// µs (median 13.0; driving the connection in the worker's task instead of a spawned one
// was no cheaper), reqwest 76 µs in an earlier run. Requests per second did not differ
// beyond the noise (raw 18-37k, hyper 11-31k). On a machine where the app under test
// shares the cores, the generator's CPU is taken from the app, so the leaner client stays;
// `--client hyper` keeps the comparison reproducible (see docs/benchmarks.md).

/// Longest wait for one answer; the connection is dropped after it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests go, and the head of every request (built once: all that
/// changes per request is the body and its length).
#[derive(Clone)]
struct HttpTarget {
    addr: String,
    path: String,
    head: String,
}

impl HttpTarget {
    fn new(base: &str, path: &str) -> Self {
        let url = reqwest::Url::parse(base).unwrap_or_else(|e| panic!("bad URL {base}: {e}"));
        assert_eq!(url.scheme(), "http", "the load generator speaks plain HTTP: {base}");
        let host = url.host_str().unwrap_or_else(|| panic!("no host in {base}"));
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = format!("{host}:{port}");
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: ");
        Self {
            addr,
            path: path.to_string(),
            head,
        }
    }
}

/// Which HTTP client sends the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// [`RawConn`], the default.
    Raw,
    /// hyper's HTTP/1.1 connection client, for comparison.
    Hyper,
}

/// Body of a request through hyper.
type HyperBody = http_body_util::Full<bytes::Bytes>;

/// One keep-alive HTTP/1.1 connection with one request in flight, like wrk.
enum Conn {
    Raw(RawConn),
    Hyper(hyper::client::conn::http1::SendRequest<HyperBody>),
}

/// The request is written as bytes and the answer's head parsed by `httparse` without
/// allocating, so the generator spends as little of the shared CPU as it can.
struct RawConn {
    stream: TcpStream,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(t: &HttpTarget, client: Client) -> std::io::Result<Self> {
        let stream = TcpStream::connect(&t.addr).await?;
        stream.set_nodelay(true)?;
        Ok(match client {
            Client::Raw => Conn::Raw(RawConn {
                stream,
                out: Vec::with_capacity(1024),
                buf: Vec::with_capacity(4096),
            }),
            Client::Hyper => {
                let io = hyper_util::rt::TokioIo::new(stream);
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(hyper_error)?;
                tokio::spawn(connection);
                Conn::Hyper(sender)
            }
        })
    }

    /// POST `body` (JSON) to the target; the answer's status and whether the
    /// connection stays open.
    async fn post(&mut self, t: &HttpTarget, body: &[u8]) -> std::io::Result<(u16, bool)> {
        match self {
            Conn::Raw(c) => {
                use std::io::Write;
                c.out.clear();
                c.out.extend_from_slice(t.head.as_bytes());
                write!(c.out, "{}\r\n\r\n", body.len())?;
                c.out.extend_from_slice(body);
                c.stream.write_all(&c.out).await?;
                read_response(&mut c.stream, &mut c.buf).await
            }
            Conn::Hyper(sender) => {
                use http_body_util::BodyExt;
                sender.ready().await.map_err(hyper_error)?;
                let request = hyper::Request::post(&t.path)
                    .header(hyper::header::HOST, &t.addr)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(HyperBody::new(bytes::Bytes::copy_from_slice(body)))
                    .map_err(|e| invalid(&e.to_string()))?;
                let response = sender.send_request(request).await.map_err(hyper_error)?;
                let status = response.status().as_u16();
                response.into_body().collect().await.map_err(hyper_error)?;
                Ok((status, !sender.is_closed()))
            }
        }
    }
}

fn hyper_error(e: hyper::Error) -> std::io::Error {
    invalid(&e.to_string())
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Read one HTTP/1.1 response (head, then a `Content-Length` body, which is
/// skipped) from `r`; `buf` is scratch space. Returns the status and whether
/// the connection may be reused.
async fn read_response<R: tokio::io::AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    buf.clear();
    let (head_len, status, len, keep_alive) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let (mut len, mut keep_alive) = (None, resp.version == Some(1));
                for h in resp.headers.iter() {
                    let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = Some(v.parse::<usize>().map_err(|_| invalid("bad Content-Length"))?);
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !v.eq_ignore_ascii_case("close");
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(invalid("chunked answers are not expected from ingestion"));
                    }
                }
                break (n, resp.code.unwrap_or(0), len, keep_alive);
            }
            Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => return Err(invalid("response head too large")),
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(invalid(&format!("bad answer: {e}"))),
        }
        if r.read_buf(buf).await? == 0 {
            return Err(invalid("connection closed"));
        }
    };
    let Some(len) = len else {
        // No length: the body runs to the end of the connection.
        return Ok((status, false));
    };
    let mut have = buf.len() - head_len;
    while have < len {
        buf.clear();
        let n = r.read_buf(buf).await?;
        if n == 0 {
            return Err(invalid("connection closed in the body"));
        }
        have += n;
    }
    if have > len {
        return Err(invalid("more bytes than one response (no pipelining)"));
    }
    Ok((status, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_responses_split_anywhere() {
        let whole = b"HTTP/1.1 202 Accepted\r\nlocation: /x\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 1..whole.len() {
            let (mut a, mut b) = tokio::io::duplex(64);
            let (x, y) = (whole[..cut].to_vec(), whole[cut..].to_vec());
            tokio::spawn(async move {
                a.write_all(&x).await.unwrap();
                tokio::task::yield_now().await;
                a.write_all(&y).await.unwrap();
            });
            let mut buf = Vec::new();
            assert_eq!(
                read_response(&mut b, &mut buf).await.unwrap(),
                (202, true),
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn connection_close_and_bad_answers() {
        let mut buf = Vec::new();
        let mut r: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read_response(&mut r, &mut buf).await.unwrap(), (503, false));
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        assert!(read_response(&mut r, &mut buf).await.is_err());
        let mut r: &[u8] = b"garbage\r\n\r\n";
        assert!(read_response(&mut r, &mut buf).await.is_err());
    }

    #[tokio::test]
    async fn both_clients_post_over_one_kept_connection() {
        use axum::routing::post;
        let app = axum::Router::new().route(
            "/api/deliveryrequests",
            post(|body: String| async move {
                let status = if body == "{}" { 202 } else { 400 };
                (axum::http::StatusCode::from_u16(status).unwrap(), "ok")
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let target = HttpTarget::new(&base, "/api/deliveryrequests");
        for client in [Client::Raw, Client::Hyper] {
            let mut conn = Conn::open(&target, client).await.unwrap();
            assert_eq!(conn.post(&target, b"{}").await.unwrap(), (202, true), "{client:?}");
            assert_eq!(conn.post(&target, b"[]").await.unwrap(), (400, true), "{client:?}");
        }
    }

    #[test]
    fn cpu_times_and_command_stats() {
        let a = CpuTimes::parse("cpu  100 0 50 800 50 0 0 10 0 0\ncpu0 1\ncpu1 1\nintr 5\n").unwrap();
        let b = CpuTimes::parse("cpu  200 0 100 900 50 0 0 35 7 0\ncpu0 1\ncpu1 1\n").unwrap();
        let d = b.since(&a);
        assert_eq!((d.busy, d.steal, d.total, d.cores), (150, 25, 275, 2));
        assert!((d.busy_cores() - 300.0 / 275.0).abs() < 1e-9);
        assert!((d.busy_secs() - 1.5).abs() < 1e-9);
        assert!((d.steal_pct() - 2500.0 / 275.0).abs() < 1e-9);
        let before = parse_command_stats(
            "# Commandstats\r\ncmdstat_xadd:calls=10,usec=5,usec_per_call=0.5,rejected_calls=0\r\n",
        );
        let after = parse_command_stats(
            "# Commandstats\r\ncmdstat_xadd:calls=30,usec=9\r\ncmdstat_hset:calls=40,usec=1\r\ncmdstat_info:calls=0\r\n",
        );
        assert_eq!(
            calls_since(&before, &after),
            vec![("hset".to_string(), 40), ("xadd".to_string(), 20)]
        );
    }

    #[test]
    fn targets() {
        let t = HttpTarget::new("http://127.0.0.1:8080", "/api/deliveryrequests");
        assert_eq!(t.addr, "127.0.0.1:8080");
        assert!(t
            .head
            .starts_with("POST /api/deliveryrequests HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert_eq!(HttpTarget::new("http://localhost/", "/").addr, "localhost:80");
    }
}
