//! A downstream connection's own upstream connection.
//!
//! Every accepted HTTP/1 connection keeps one dedicated upstream HTTP/1.1 connection (to the
//! endpoint its first request went to), driven in the same task as the downstream
//! connection: the request, its upstream exchange and the response body never cross tasks,
//! which saves the pooled client's checkout, its connection task and the wake-ups between
//! them. Whatever the dedicated connection cannot take — another endpoint, a request while
//! it is busy (HTTP/2 multiplexing), an upgrade — goes through the worker's pooled client as
//! before. The dedicated connection closes with the downstream connection, or is replaced
//! when it has been idle longer than the pool's idle timeout (so a service's own idle
//! timeout never races a request on it).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::body::ReqBody;
use crate::metrics::ErrorKind;

/// Longest idle time after which the dedicated connection is not reused (as the pool's).
pub(crate) const IDLE_REUSE: Duration = Duration::from_secs(15);

type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Default)]
struct Slot {
    /// The endpoint (`host:port` as in the table) the connection goes to; `None`: no
    /// connection.
    addr: Option<Arc<str>>,
    /// The sender, absent while a request uses it.
    sender: Option<http1::SendRequest<ReqBody>>,
    conn: Option<ConnFuture>,
    idle_since: Option<Instant>,
    /// The connection task's waker, to poll a newly installed connection.
    waker: Option<Waker>,
}

/// Shared between the downstream connection's task (which drives the connection through
/// [`Dedicated::drive`]) and its requests (which send on it).
#[derive(Default, Clone)]
pub(crate) struct Dedicated(Arc<Mutex<Slot>>);

/// What an upstream attempt failed with.
pub(crate) enum UpstreamError {
    Pooled(hyper_util::client::legacy::Error),
    Connect(std::io::Error),
    Hyper(hyper::Error),
}

impl UpstreamError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            UpstreamError::Pooled(e) if e.is_connect() => ErrorKind::Connect,
            UpstreamError::Connect(_) => ErrorKind::Connect,
            UpstreamError::Pooled(e) => classify(e),
            UpstreamError::Hyper(e) => classify(e),
        }
    }

    pub(crate) fn message(&self) -> String {
        let e: &(dyn std::error::Error + 'static) = match self {
            UpstreamError::Pooled(e) => e,
            UpstreamError::Connect(e) => e,
            UpstreamError::Hyper(e) => e,
        };
        let mut out = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            out.push_str(": ");
            out.push_str(&s.to_string());
            src = s.source();
        }
        out
    }
}

fn classify(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_canceled() || h.is_closed() || h.is_incomplete_message() {
                return ErrorKind::Reset;
            }
            if h.is_user() || h.is_body_write_aborted() {
                return ErrorKind::Other;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
            ) {
                return ErrorKind::Reset;
            }
        }
        src = s.source();
    }
    ErrorKind::Other
}

impl Dedicated {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls the dedicated connection, if any; never completes. Run it beside the
    /// downstream connection in the same task.
    pub(crate) async fn drive(&self) {
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if let Some(conn) = s.conn.as_mut() {
                if conn.as_mut().poll(cx).is_ready() {
                    s.conn = None;
                    s.sender = None;
                    s.addr = None;
                }
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            Poll::<()>::Pending
        })
        .await
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr` on the dedicated connection when
    /// it can take it (opening it for the first endpoint this connection uses); gives the
    /// request back when it cannot, for the pooled client.
    pub(crate) async fn send(
        &self,
        addr: &str,
        connect_timeout: Duration,
        req: Request<ReqBody>,
    ) -> Result<Result<Response<Incoming>, UpstreamError>, Request<ReqBody>> {
        enum Take {
            Use(http1::SendRequest<ReqBody>),
            Open,
            Busy,
        }
        let take = {
            let mut s = self.lock();
            match s.addr.as_deref() {
                None => Take::Open,
                Some(a) if a != addr => Take::Busy,
                Some(_) => match s.sender.take() {
                    Some(sender)
                        if !sender.is_closed()
                            && s.idle_since.is_some_and(|t| t.elapsed() < IDLE_REUSE) =>
                    {
                        Take::Use(sender)
                    }
                    Some(_) => {
                        // Closed or idle too long: drop it and open a fresh one.
                        s.conn = None;
                        s.addr = None;
                        Take::Open
                    }
                    None => Take::Busy,
                },
            }
        };
        let mut sender = match take {
            Take::Busy => return Err(req),
            Take::Use(sender) => sender,
            Take::Open => {
                let key: Arc<str> = Arc::from(addr);
                // Reserve the slot so that concurrent requests use the pool meanwhile.
                self.lock().addr = Some(key.clone());
                match self.open(addr, connect_timeout).await {
                    Ok((sender, conn)) => {
                        let mut s = self.lock();
                        s.conn = Some(conn);
                        if let Some(w) = s.waker.take() {
                            w.wake();
                        }
                        sender
                    }
                    Err(e) => {
                        self.lock().addr = None;
                        return Ok(Err(e));
                    }
                }
            }
        };
        // Until the sender is back in the slot, dropping this future (a timeout) gives the
        // slot up rather than leaving it busy for good.
        let in_use = ClearOnDrop(Some(self));
        if sender.ready().await.is_err() {
            return Err(req);
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                std::mem::forget(in_use);
                let mut s = self.lock();
                s.sender = Some(sender);
                s.idle_since = Some(Instant::now());
                Ok(Ok(resp))
            }
            Err(mut e) => {
                drop(in_use);
                match e.take_message() {
                    // Never written: the pooled client may send it.
                    Some(req) => Err(req),
                    None => Ok(Err(UpstreamError::Hyper(e.into_error()))),
                }
            }
        }
    }

    pub(crate) fn clear(&self) {
        let mut s = self.lock();
        s.addr = None;
        s.sender = None;
        s.conn = None;
    }

    async fn open(
        &self,
        addr: &str,
        connect_timeout: Duration,
    ) -> Result<(http1::SendRequest<ReqBody>, ConnFuture), UpstreamError> {
        let stream =
            match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
                Err(_) => {
                    return Err(UpstreamError::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timeout",
                    )))
                }
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Hyper)?;
        let conn: ConnFuture = Box::pin(async move {
            let _ = conn.await;
        });
        Ok((sender, conn))
    }
}

struct ClearOnDrop<'a>(Option<&'a Dedicated>);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.0 {
            d.clear();
        }
    }
}
