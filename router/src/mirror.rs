//! Mirroring (shadow traffic): a copy of a request goes to another version of the service,
//! in its own task, after the real request has left; its response is read and discarded.
//!
//! The real request never waits for the copy and never fails because of it: the copy's body
//! is taken from the real body as it streams to its upstream ([`Tee`]), a body above
//! [`MIRROR_BODY_LIMIT`] is not copied at all (the copy is skipped, not truncated), and at most
//! [`MAX_MIRRORS_IN_FLIGHT`] copies are in flight per router (a slow mirror version sheds
//! copies instead of piling them up). The copy's status and latency are counted in the mirror
//! version's stats (`requests`, `errors_5xx`, `latency`, plus `mirrored`), so an analysis
//! measures a candidate that serves nobody yet.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version};
use http_body_util::BodyExt as _;
use tokio::sync::oneshot;
use tracing::debug;

use crate::body::ReqBody;
use crate::metrics::{ErrorKind, InFlightGuard};
use crate::table::ServiceEntry;
use crate::Inner;

/// Largest request body copied to a mirror; a request with a larger body is not mirrored.
pub const MIRROR_BODY_LIMIT: u64 = 1024 * 1024;
/// Mirrored requests in flight at once, per router; copies beyond it are skipped.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;
/// Request header every mirrored copy carries (`true`), so a service can tell shadow traffic.
pub const MIRROR_HEADER: &str = "x-dronectl-mirror";

static X_MIRROR: HeaderName = HeaderName::from_static(MIRROR_HEADER);

/// Counts mirrored requests in flight.
#[derive(Default)]
pub(crate) struct Limiter(Arc<AtomicUsize>);

pub(crate) struct Permit(Arc<AtomicUsize>);

impl Limiter {
    fn try_acquire(&self) -> Option<Permit> {
        let n = self.0.fetch_add(1, Relaxed);
        if n >= MAX_MIRRORS_IN_FLIGHT {
            self.0.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Permit(self.0.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Collects the real body's bytes for the copy as they pass; gives up (the copy is
/// dropped) above the limit or when the real body ends in an error.
pub(crate) struct Tee(Mutex<TeeState>);

struct TeeState {
    buf: BytesMut,
    tx: Option<oneshot::Sender<Bytes>>,
}

impl Tee {
    pub(crate) fn push(&self, data: &Bytes, end: bool) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.tx.is_none() {
            return;
        }
        if (s.buf.len() + data.len()) as u64 > MIRROR_BODY_LIMIT {
            s.tx = None;
            s.buf = BytesMut::new();
            return;
        }
        s.buf.extend_from_slice(data);
        if end {
            Self::send(&mut s);
        }
    }

    pub(crate) fn finish(&self) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::send(&mut s);
    }

    fn send(s: &mut TeeState) {
        if let Some(tx) = s.tx.take() {
            let _ = tx.send(std::mem::take(&mut s.buf).freeze());
        }
    }
}

/// A copy about to be sent.
pub(crate) struct Job {
    version: usize,
    body: Option<oneshot::Receiver<Bytes>>,
    _permit: Permit,
}

/// Prepares the copy of a request for `version` of `svc`: `None` (and counted as skipped)
/// when its declared body is above the bound or too many copies are in flight. With a body,
/// also returns the [`Tee`] to attach to the real body.
pub(crate) fn prepare(
    inner: &Inner,
    svc: &ServiceEntry,
    version: usize,
    headers: &HeaderMap,
    has_body: bool,
) -> Option<(Job, Option<Tee>)> {
    let skip = || {
        svc.versions[version].metrics.mirror_skipped();
        None
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MIRROR_BODY_LIMIT) {
        return skip();
    }
    let Some(permit) = inner.mirrors.try_acquire() else {
        return skip();
    };
    let (tee, body) = if has_body {
        let (tx, rx) = oneshot::channel();
        let tee = Tee(Mutex::new(TeeState {
            buf: BytesMut::new(),
            tx: Some(tx),
        }));
        (Some(tee), Some(rx))
    } else {
        (None, None)
    };
    Some((
        Job {
            version,
            body,
            _permit: permit,
        },
        tee,
    ))
}

impl Job {
    /// Sends the copy in its own task (the real request's `headers` as forwarded, plus
    /// [`MIRROR_HEADER`]); the response is read and dropped.
    pub(crate) fn spawn(
        self,
        inner: Arc<Inner>,
        client: crate::UpstreamClient,
        svc: Arc<ServiceEntry>,
        method: Method,
        pq: PathAndQuery,
        mut headers: HeaderMap,
    ) {
        headers.insert(X_MIRROR.clone(), HeaderValue::from_static("true"));
        tokio::spawn(async move {
            let timeout = inner.upstream_timeout;
            let ver = &svc.versions[self.version];
            let body = match self.body {
                None => ReqBody::Empty,
                Some(rx) => match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(bytes)) => ReqBody::Full(Some(bytes)),
                    // The real body was too large, failed, or was never read.
                    _ => {
                        ver.metrics.mirror_skipped();
                        return;
                    }
                },
            };
            let Some((_, e)) = svc.first_target(self.version) else {
                ver.metrics.mirror_skipped();
                return;
            };
            let ep = &ver.endpoints[e];
            let mut uparts = http::uri::Parts::default();
            uparts.scheme = Some(Scheme::HTTP);
            uparts.authority = Some(ep.authority.clone());
            uparts.path_and_query = Some(pq);
            let Ok(uri) = Uri::from_parts(uparts) else {
                return;
            };
            let mut req = Request::new(body);
            *req.method_mut() = method;
            *req.uri_mut() = uri;
            *req.version_mut() = Version::HTTP_11;
            *req.headers_mut() = headers;
            let _guard = InFlightGuard::new(&ep.state);
            let start = Instant::now();
            let status = match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    ver.metrics.observe(start.elapsed());
                    // Read to the end (bounded) so the connection can be reused.
                    let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
                    status
                }
                Ok(Err(e)) => {
                    ver.metrics.upstream_error(if e.is_connect() {
                        ErrorKind::Connect
                    } else {
                        ErrorKind::Other
                    });
                    ver.metrics.observe(start.elapsed());
                    debug!(service = %svc.name, version = %ver.name, error = %e, "mirrored request failed");
                    502
                }
                Err(_) => {
                    ver.metrics.upstream_error(ErrorKind::Timeout);
                    ver.metrics.observe(start.elapsed());
                    504
                }
            };
            ver.metrics.response(status);
            ver.metrics.mirrored();
        });
    }
}
