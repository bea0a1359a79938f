//! The data plane: normalise the path, route one request, pick a version and an endpoint,
//! forward it, retry on connection failures, and account for it.
//!
//! Two listeners share it. The internal one (on the app network) routes by `Host` first and
//! honours `x-dronectl-version`; the public one (the port published on the host) routes by
//! public path only and honours `x-dronectl-version` only with the admin token in
//! `x-dronectl-token`. That header never reaches a service.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, info, warn};

use crate::body::{BodySlot, ReqBody, RespBody, Upstream};
use crate::metrics::{ErrorKind, InFlightGuard};
use crate::table::{ServiceEntry, Table, Target};
use crate::upstream::{Dedicated, UpstreamError};
use crate::Worker;

/// Request header forcing a version; response header naming the version that served.
pub const VERSION_HEADER: &str = "x-dronectl-version";
/// Correlation id header, forwarded or generated.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// Request header carrying the admin token on the public port (to force a version there).
/// Always removed before forwarding.
pub const TOKEN_HEADER: &str = "x-dronectl-token";

/// Which data port a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The app network: `Host` routing, preview host, version header.
    Internal,
    /// Published on the host: public path routes only.
    Public,
}

const MAX_ATTEMPTS: usize = 4;

/// One accepted connection: its worker and client side, computed once per connection
/// rather than per request, and shared by its requests (one reference count each).
pub(crate) struct Peer {
    pub(crate) worker: Arc<Worker>,
    /// The client's IP address as a header value, for `X-Forwarded-For`.
    ip_value: HeaderValue,
    listener: Listener,
    /// The connection's own upstream connection (see [`crate::upstream`]).
    pub(crate) dedicated: Dedicated,
    /// The upstream timeout's timer, kept between the connection's requests (see
    /// [`Peer::timed`]).
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Peer {
    pub(crate) fn new(worker: Arc<Worker>, ip: IpAddr, listener: Listener) -> Peer {
        let ip_value = ip_header(ip);
        Peer {
            worker,
            ip_value,
            listener,
            dedicated: Dedicated::default(),
            timer: Mutex::new(None),
        }
    }

    /// `fut`, or `None` if it has not completed by `deadline`. The timer is the
    /// connection's own, re-armed for each request rather than created and dropped: a
    /// worker whose timer wheel went empty would otherwise wake its own event loop (an
    /// `eventfd` write and one more `epoll_wait`) for the first timer of every loop
    /// iteration. Concurrent requests (HTTP/2) use a timer of their own.
    ///
    /// `fut` is pinned by the caller: an attempt future moved in by value was copied twice.
    pub(crate) async fn timed<F: Future>(
        &self,
        deadline: tokio::time::Instant,
        mut fut: Pin<&mut F>,
    ) -> Option<F::Output> {
        let kept = self.timer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut sleep = match kept {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await;
        *self.timer.lock().unwrap_or_else(|e| e.into_inner()) = Some(sleep);
        out
    }
}

/// The client's IP address as an `X-Forwarded-For` value.
fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

static X_VERSION: HeaderName = HeaderName::from_static(VERSION_HEADER);
static X_CORRELATION: HeaderName = HeaderName::from_static(CORRELATION_HEADER);
static X_TOKEN: HeaderName = HeaderName::from_static(TOKEN_HEADER);
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A request as hyper's server hands it over (HTTP/2, and HTTP/1 connections the front end
/// passed on: see `front.rs`).
pub(crate) async fn handle(
    peer: Arc<Peer>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = (!body.is_end_stream()).then_some(body);
    Ok(forward(&peer, parts, body, false).await)
}

/// Routes and forwards one request (`body`: `None` when it has none) and accounts for it.
/// `raw`: the caller writes the response itself and can take the service's fields raw from
/// the body (see [`RespBody::take_raw`]); hyper's server cannot.
pub(crate) async fn forward(
    peer: &Peer,
    mut parts: http::request::Parts,
    body: Option<Incoming>,
    raw: bool,
) -> Response<RespBody> {
    let start = Instant::now();
    crate::busy_poll::activity();
    let worker = &peer.worker;
    let inner = &worker.inner;
    let listener = peer.listener;

    // 0. The path is routed (and forwarded) in its normal form, or refused.
    match crate::path::normalize(parts.uri.path()) {
        Ok(None) => {}
        Ok(Some(normal)) => match with_path(&parts.uri, &normal) {
            Some(uri) => parts.uri = uri,
            None => return json_error(StatusCode::BAD_REQUEST, "invalid request path"),
        },
        Err(e) => {
            debug!(path = parts.uri.path(), error = %e, "refused path");
            return json_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    }
    // Which of the fields looked up below the request has at all: one pass over its
    // names instead of a hash lookup for each one it does not have (most have none).
    let has = Present::scan(&parts.headers);
    let token_ok = listener == Listener::Internal
        || (has.token
            && parts.headers.get(&X_TOKEN).is_some_and(|v| {
                inner
                    .admin_token
                    .as_ref()
                    .is_some_and(|t| t.matches(v.as_bytes()))
            }));
    if has.token {
        parts.headers.remove(&X_TOKEN);
    }

    // 1. Route to a service (the table guard is dropped before any await).
    let routed = {
        let table = inner.table.load();
        route(&table, &parts.headers, &parts.uri, listener).map(|(s, p)| (s.clone(), p))
    };
    let Some((svc, preview)) = routed else {
        inner.metrics.no_route.fetch_add(1, Relaxed);
        debug!(path = parts.uri.path(), "no route");
        return json_error(StatusCode::NOT_FOUND, "no route");
    };

    // 2. Pick a version: forced by header (internal port, or with the token), the preview,
    // or by weight.
    let forced = has
        .version
        .then(|| parts.headers.get(&X_VERSION))
        .flatten()
        .filter(|_| token_ok)
        .and_then(|v| svc.version_by_name(v.as_bytes()));
    let choice = crate::select::choose(&svc, &parts.headers, forced, preview);
    let (version, weighted) = (choice.version, choice.weighted);
    let Some(first) = version.and_then(|v| svc.first_target(v)) else {
        svc.unroutable.fetch_add(1, Relaxed);
        let msg = match (version, preview) {
            (None, true) => format!("service {} has no preview version", svc.name),
            (None, false) => format!(
                "service {} has no version with weight and endpoints",
                svc.name
            ),
            (Some(v), _) => format!(
                "version {} of service {} has no endpoints",
                svc.versions[v].name, svc.name
            ),
        };
        debug!(service = %svc.name, "{msg}");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, &msg);
    };

    // 3. Request body: size limit, and a replayable holder for retries.
    let too_big = has
        .content_length
        .then(|| parts.headers.get(header::CONTENT_LENGTH))
        .flatten()
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > inner.max_body_bytes);
    if too_big {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let (mirror, tee) = match choice.mirror {
        Some(m) => crate::mirror::prepare(inner, &svc, m, &parts.headers, body.is_some())
            .map_or((None, None), |(job, tee)| (Some(job), tee)),
        None => (None, None),
    };
    let slot = body.map(|body| BodySlot::with_tee(body, inner.max_body_bytes, tee));

    // 4. Upstream request head. An upgrade (WebSocket or any other `Connection: Upgrade`,
    // HTTP/1.1 only) keeps its `Connection` and `Upgrade` headers and the client's side of
    // the connection for the tunnel.
    let mut client_upgrade = has
        .connection
        .then(|| upgrade_protocol(&parts.headers))
        .flatten()
        .filter(|_| parts.version == Version::HTTP_11)
        .and_then(|proto| Some((proto, parts.extensions.remove::<OnUpgrade>()?)));
    let host = if has.host {
        None
    } else {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    };
    strip_hop_by_hop(&mut parts.headers);
    if let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
    if let Some((proto, _)) = &client_upgrade {
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        parts.headers.insert(header::UPGRADE, proto.clone());
    }
    let correlation = match has
        .correlation
        .then(|| parts.headers.get(&X_CORRELATION))
        .flatten()
    {
        Some(v) => v.clone(),
        None => {
            let id = new_correlation_id();
            parts.headers.insert(X_CORRELATION.clone(), id.clone());
            id
        }
    };
    if has.forwarded_for {
        append_forwarded_for(&mut parts.headers, &peer.ip_value);
    } else {
        parts
            .headers
            .insert(X_FORWARDED_FOR.clone(), peer.ip_value.clone());
    }
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let may_retry = svc.endpoint_count() > 1;
    if let Some(job) = mirror {
        let headers = parts.headers.clone();
        job.spawn(
            inner.clone(),
            worker.client.clone(),
            svc.clone(),
            parts.method.clone(),
            pq.clone(),
            headers,
        );
    }
    let dedicated_ok = client_upgrade.is_none() && parts.version <= Version::HTTP_11;

    // 5. Attempts.
    let mut tried: [Target; MAX_ATTEMPTS] = [(usize::MAX, usize::MAX); MAX_ATTEMPTS];
    let mut n = 0;
    let mut target = first;
    loop {
        tried[n] = target;
        n += 1;
        let ver = &svc.versions[target.0];
        let ep = &ver.endpoints[target.1];

        let guard = InFlightGuard::new(&ep.state);
        // The first attempt starts with the request (one clock read less); a retry reads
        // the clock.
        let attempt_start = if n == 1 { start } else { Instant::now() };
        let lean = dedicated_ok && slot.is_none();
        let headers = &mut parts.headers;
        let method = &parts.method;
        let attempt = async {
            // HTTP/1 downstream, no upgrade, no body: the connection's own upstream
            // connection, written straight from the request's headers, when it can take the
            // request; else the pool.
            if lean {
                let sent = peer
                    .dedicated
                    .send(
                        attempt_start,
                        raw,
                        &ep.addr,
                        &ep.authority,
                        inner.connect_timeout,
                        method,
                        &pq,
                        headers,
                    )
                    .await;
                if let Some(res) = sent {
                    return res.map(|r| r.map(Upstream::Lean));
                }
            }
            let body = match &slot {
                None => ReqBody::Empty,
                Some(s) => ReqBody::shared(s),
            };
            let mut ureq = Request::new(body);
            *ureq.method_mut() = method.clone();
            let mut uparts = http::uri::Parts::default();
            uparts.scheme = Some(Scheme::HTTP);
            uparts.authority = Some(ep.authority.clone());
            uparts.path_and_query = Some(pq.clone());
            *ureq.uri_mut() = Uri::from_parts(uparts).expect("scheme, authority and path are set");
            *ureq.version_mut() = Version::HTTP_11;
            *ureq.headers_mut() = if may_retry && n < MAX_ATTEMPTS {
                headers.clone()
            } else {
                std::mem::take(headers)
            };
            if !ureq.headers().contains_key(header::HOST) {
                if let Ok(h) = HeaderValue::from_str(ep.authority.as_str()) {
                    ureq.headers_mut().insert(header::HOST, h);
                }
            }
            worker
                .client
                .request(ureq)
                .await
                .map(|r| r.map(Upstream::Pooled))
                .map_err(UpstreamError::Pooled)
        };
        let deadline = tokio::time::Instant::from_std(attempt_start) + inner.upstream_timeout;
        let attempt = std::pin::pin!(attempt);
        let res = peer.timed(deadline, attempt).await;
        let (kind, err) = match res {
            Some(Ok(mut resp)) => {
                let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                let upstream_upgrade = match &client_upgrade {
                    Some(_) if switched => Some((
                        resp.headers().get(header::UPGRADE).cloned(),
                        hyper::upgrade::on(&mut resp),
                    )),
                    _ => None,
                };
                let (mut rp, mut rb) = resp.into_parts();
                // The same fields either way: added after the service's raw fields (which
                // hold nothing to strip or replace), or set in the response's map.
                if let Some(raw) = rb.raw_mut() {
                    raw.add(X_VERSION.clone(), ver.header.clone());
                    if let Some(cookie) = &choice.set_cookie {
                        raw.add(header::SET_COOKIE, cookie.clone());
                    }
                    if !raw.correlation {
                        raw.add(X_CORRELATION.clone(), correlation.clone());
                    }
                } else {
                    strip_hop_by_hop(&mut rp.headers);
                    rp.headers.insert(X_VERSION.clone(), ver.header.clone());
                    if let Some(cookie) = &choice.set_cookie {
                        rp.headers.append(header::SET_COOKIE, cookie.clone());
                    }
                    if !rp.headers.contains_key(&X_CORRELATION) {
                        rp.headers
                            .insert(X_CORRELATION.clone(), correlation.clone());
                    }
                }
                let elapsed = start.elapsed();
                ver.metrics.response(rp.status.as_u16());
                ver.metrics.observe(elapsed);
                debug!(
                    service = %svc.name,
                    version = %ver.name,
                    endpoint = %ep.addr,
                    method = %parts.method,
                    path = pq.path(),
                    status = rp.status.as_u16(),
                    attempts = n,
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    correlation_id = correlation.to_str().unwrap_or(""),
                    "request"
                );
                if let (Some((proto, upstream)), Some((_, client))) =
                    (upstream_upgrade, client_upgrade.take())
                {
                    rp.headers.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
                    if let Some(p) = proto {
                        rp.headers.insert(header::UPGRADE, p);
                    }
                    drop(rb);
                    tokio::spawn(tunnel(client, upstream, guard, inner.upgrade_grace));
                    return Response::from_parts(rp, RespBody::empty());
                }
                return Response::from_parts(rp, RespBody::upstream(rb, guard));
            }
            Some(Err(e)) => (e.kind(), e.message()),
            None => (ErrorKind::Timeout, "upstream timeout".to_string()),
        };
        drop(guard);
        ver.metrics.upstream_error(kind);

        if slot.as_ref().is_some_and(|s| s.too_large.load(Relaxed)) {
            ver.metrics.response(413);
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        let replayable = slot.as_ref().is_none_or(|s| s.intact());
        let retry = match kind {
            ErrorKind::Connect => replayable,
            ErrorKind::Reset => replayable && idempotent,
            ErrorKind::Timeout | ErrorKind::Other => false,
        };
        if retry && n < MAX_ATTEMPTS {
            if let Some(next) = svc.next_target(first, &tried[..n], weighted) {
                debug!(
                    service = %svc.name,
                    version = %ver.name,
                    endpoint = %ep.addr,
                    error = %err,
                    "upstream attempt failed; retrying on another endpoint"
                );
                target = next;
                continue;
            }
        }
        let status = if kind == ErrorKind::Timeout {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        ver.metrics.response(status.as_u16());
        ver.metrics.observe(start.elapsed());
        warn!(
            service = %svc.name,
            version = %ver.name,
            endpoint = %ep.addr,
            attempts = n,
            error = %err,
            correlation_id = correlation.to_str().unwrap_or(""),
            "upstream request failed"
        );
        let mut resp = json_error(status, &format!("upstream {}: {err}", kind_word(kind)));
        resp.headers_mut()
            .insert(X_VERSION.clone(), ver.header.clone());
        resp.headers_mut()
            .insert(X_CORRELATION.clone(), correlation.clone());
        return resp;
    }
}

/// Which of the request fields that [`forward`] reads are present (before it changes any).
/// A field found absent is not looked up; one found present still is (it may have been
/// removed since, e.g. by being named in `Connection`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Present {
    token: bool,
    version: bool,
    content_length: bool,
    connection: bool,
    host: bool,
    correlation: bool,
    forwarded_for: bool,
}

impl Present {
    fn scan(h: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in h.keys() {
            if name == header::HOST {
                p.host = true;
            } else if name == header::CONTENT_LENGTH {
                p.content_length = true;
            } else if name == header::CONNECTION {
                p.connection = true;
            } else if name == X_CORRELATION {
                p.correlation = true;
            } else if name == X_FORWARDED_FOR {
                p.forwarded_for = true;
            } else if name == X_VERSION {
                p.version = true;
            } else if name == X_TOKEN {
                p.token = true;
            }
        }
        p
    }
}

fn kind_word(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::Connect => "connect error",
        ErrorKind::Reset => "connection error",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Other => "error",
    }
}

/// The same URI with another path (the query is kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Internal port: host routing first (`<service>`, `<service>-preview`, any port), then
/// public routes. Public port: public routes only. Returns the service and whether the
/// preview version was asked for.
fn route<'t>(
    table: &'t Table,
    headers: &HeaderMap,
    uri: &Uri,
    listener: Listener,
) -> Option<(&'t Arc<ServiceEntry>, bool)> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let lower;
    let name = match host.map(strip_port) {
        Some(name) if name.bytes().any(|c| c.is_ascii_uppercase()) => {
            lower = name.to_ascii_lowercase();
            Some(lower.as_str())
        }
        name => name,
    };
    if let Some(name) = name.filter(|_| listener == Listener::Internal) {
        if let Some(s) = table.by_host(name) {
            return Some((s, false));
        }
        if let Some(base) = name.strip_suffix("-preview") {
            if let Some(s) = table.by_host(base) {
                return Some((s, true));
            }
        }
    }
    table.by_path(name, uri.path()).map(|s| (s, false))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host; // an IPv6 literal is never a service name
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The hop-by-hop headers removed from every forwarded message (besides those that
/// `Connection` names).
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHORIZATION,
    &header::PROXY_AUTHENTICATE,
];

/// Removes the hop-by-hop headers. One pass over the message's names (a standard name
/// compares as an enum, no hashing) finds which are present; only those are looked up and
/// removed, and most requests carry none. The names listed in `Connection` are removed
/// without being parsed into owned header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| *n == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    // `Connection` is the first entry. Its value is cloned (a reference count) so that the
    // map can be changed while its tokens are read.
    if present[0] {
        let mut values = h.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        // Empty (no allocation) unless the message repeats `Connection`.
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for conn in first.into_iter().chain(rest) {
            if let Ok(s) = conn.to_str() {
                for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    // `&str` keys are matched case-insensitively; an invalid name matches
                    // nothing.
                    h.remove(token);
                }
            }
        }
    }
    for (name, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            h.remove(*name);
        }
    }
}

fn append_forwarded_for(h: &mut HeaderMap, remote: &HeaderValue) {
    let value = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            match HeaderValue::from_str(&format!("{prev}, {}", remote.to_str().unwrap_or(""))) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        _ => remote.clone(),
    };
    h.insert(X_FORWARDED_FOR.clone(), value);
}

static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// The protocol a request asks to switch to: its `Upgrade` header when `Connection` names
/// the `upgrade` token.
fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Copies both ways between the client's and the endpoint's upgraded connections until
/// either side closes, or until the endpoint has been out of the routing table for `grace`.
/// The endpoint's in-flight guard is held all along (`GET /endpoints` shows the tunnel).
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, guard: InFlightGuard, grace: Duration) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    let removed = guard.0.removed();
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = res {
                debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        _ = removed_for(removed, grace) => {
            info!(grace_ms = grace.as_millis() as u64, "closing an upgraded connection: its endpoint left the routing table");
        }
    }
    drop(guard);
}

/// Completes once the endpoint has been out of the routing table for `grace` without
/// coming back.
async fn removed_for(mut removed: tokio::sync::watch::Receiver<bool>, grace: Duration) {
    loop {
        let closed = removed.wait_for(|r| *r).await.is_err();
        if closed {
            return std::future::pending().await;
        }
        let closed = tokio::select! {
            _ = tokio::time::sleep(grace) => return,
            back = removed.wait_for(|r| !*r) => back.is_err(),
        };
        if closed {
            return std::future::pending().await;
        }
    }
}

/// A random (version 4) UUID, as the services' own middleware generates.
pub(crate) fn new_correlation_id() -> HeaderValue {
    /// Where each of the 16 bytes goes in `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&fastrand::u64(..).to_ne_bytes());
    r[8..].copy_from_slice(&fastrand::u64(..).to_ne_bytes());
    r[6] = (r[6] & 0x0F) | 0x40; // version 4
    r[8] = (r[8] & 0x3F) | 0x80; // variant 10
    let mut out = [b'-'; 36];
    for (byte, at) in r.iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xF)];
    }
    HeaderValue::from_bytes(&out).expect("hex and dashes are valid header bytes")
}

pub(crate) fn json_error(status: StatusCode, msg: &str) -> Response<RespBody> {
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut r = Response::new(RespBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_look_like_uuid_v4() {
        let a = new_correlation_id();
        let b = new_correlation_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(s.matches('-').count(), 4);
        for (i, c) in s.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{s}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{s}");
            }
        }
        // Every hex digit position takes more than one value over a few ids (no byte is
        // left constant by the layout), besides the fixed version digit.
        let ids: Vec<String> = (0..64)
            .map(|_| new_correlation_id().to_str().unwrap().to_string())
            .collect();
        for i in (0..36).filter(|i| !matches!(i, 8 | 13 | 14 | 18 | 23)) {
            let first = ids[0].as_bytes()[i];
            assert!(
                ids.iter().any(|id| id.as_bytes()[i] != first),
                "position {i}"
            );
        }
    }

    #[test]
    fn strips_ports_and_hop_by_hop() {
        assert_eq!(strip_port("orders:8080"), "orders");
        assert_eq!(strip_port("orders"), "orders");
        assert_eq!(strip_port("[::1]:80"), "[::1]:80");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn strips_connection_tokens_in_any_case_and_every_connection_header() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-One"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-two, bad name"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("orders"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h[header::HOST], "orders");

        // Nothing hop-by-hop: the map is left as it is.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("orders"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn present_fields_are_found_in_any_case() {
        let mut h = HeaderMap::new();
        assert_eq!(Present::scan(&h), Present::default());
        h.insert(header::HOST, HeaderValue::from_static("orders"));
        h.insert("X-Correlation-Id", HeaderValue::from_static("a"));
        h.insert("x-dronectl-token", HeaderValue::from_static("t"));
        h.insert("x-other", HeaderValue::from_static("1"));
        assert_eq!(
            Present::scan(&h),
            Present {
                host: true,
                correlation: true,
                token: true,
                ..Present::default()
            }
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-dronectl-version", HeaderValue::from_static("v1"));
        let all = Present::scan(&h);
        assert!(all.content_length && all.connection && all.forwarded_for && all.version);
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ip_header("10.0.0.1".parse().unwrap()));
        append_forwarded_for(&mut h, &HeaderValue::from_static("10.0.0.2"));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2");
    }

    #[test]
    fn upgrade_needs_the_connection_token() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
        h.remove(header::UPGRADE);
        assert_eq!(upgrade_protocol(&h), None);
    }
}
