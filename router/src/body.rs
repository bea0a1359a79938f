//! Request and response body wrappers.
//!
//! [`ReqBody`] lets a request be re-sent to another endpoint when connecting failed: the
//! client's body is parked in a shared slot and only taken out when the upstream connection
//! first polls it, so "slot still full" proves no body byte left the router. It also enforces
//! the request body size limit on streamed (chunked) bodies.
//!
//! [`RespBody`] streams the upstream response and holds the endpoint's in-flight guard until
//! the body is finished (or the client goes away).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::metrics::InFlightGuard;
use crate::upstream::{LeanBody, RawFields};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub(crate) struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds the router's limit")
    }
}
impl std::error::Error for BodyTooLarge {}

pub(crate) struct BodySlot {
    body: Mutex<Option<Incoming>>,
    hint: SizeHint,
    max: u64,
    pub(crate) too_large: AtomicBool,
    /// A copy of the body for a mirrored request, if any (see `mirror.rs`).
    tee: Option<crate::mirror::Tee>,
}

impl BodySlot {
    /// Parks `body`; with a `tee`, copies it there as it streams to the upstream.
    pub(crate) fn with_tee(body: Incoming, max: u64, tee: Option<crate::mirror::Tee>) -> Arc<Self> {
        Arc::new(BodySlot {
            hint: body.size_hint(),
            body: Mutex::new(Some(body)),
            max,
            too_large: AtomicBool::new(false),
            tee,
        })
    }

    /// True while no attempt has started reading the body.
    pub(crate) fn intact(&self) -> bool {
        self.body
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

pub(crate) enum ReqBody {
    Empty,
    /// A body held in memory (a mirrored request's copy).
    Full(Option<Bytes>),
    Shared {
        slot: Arc<BodySlot>,
        taken: Option<Incoming>,
        seen: u64,
    },
}

impl ReqBody {
    pub(crate) fn shared(slot: &Arc<BodySlot>) -> Self {
        ReqBody::Shared {
            slot: slot.clone(),
            taken: None,
            seen: 0,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Shared { slot, taken, seen } => {
                if taken.is_none() {
                    *taken = slot.body.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if taken.is_none() {
                        return Poll::Ready(Some(Err("request body already consumed".into())));
                    }
                }
                let inner = taken.as_mut().expect("taken above");
                match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            *seen += d.len() as u64;
                            if *seen > slot.max {
                                slot.too_large.store(true, Relaxed);
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                            }
                            if let Some(tee) = &slot.tee {
                                tee.push(d, inner.is_end_stream());
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(None) => {
                        if let Some(tee) = &slot.tee {
                            tee.finish();
                        }
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Shared { taken, .. } => taken.as_ref().is_some_and(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Shared { slot, .. } => slot.hint,
        }
    }
}

pub(crate) struct RespBody {
    kind: RespKind,
    guard: Option<InFlightGuard>,
}

enum RespKind {
    Full(Option<Bytes>),
    Upstream(Incoming),
    /// From the connection's dedicated upstream connection (see `upstream.rs`).
    Lean(LeanBody),
}

/// An upstream response body: from the pooled hyper client or the dedicated connection.
pub(crate) enum Upstream {
    Pooled(Incoming),
    Lean(LeanBody),
}

impl Upstream {
    /// The service's response fields, when the dedicated connection kept them raw.
    pub(crate) fn raw_mut(&mut self) -> Option<&mut RawFields> {
        match self {
            Upstream::Lean(b) => b.raw_mut(),
            Upstream::Pooled(_) => None,
        }
    }
}

impl RespBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        RespBody {
            kind: RespKind::Full(Some(b.into())),
            guard: None,
        }
    }

    pub(crate) fn empty() -> Self {
        RespBody {
            kind: RespKind::Full(None),
            guard: None,
        }
    }

    pub(crate) fn upstream(body: Upstream, guard: InFlightGuard) -> Self {
        let (kind, done) = match body {
            Upstream::Pooled(b) => {
                let done = b.is_end_stream();
                (RespKind::Upstream(b), done)
            }
            Upstream::Lean(b) => {
                let done = b.is_end_stream();
                (RespKind::Lean(b), done)
            }
        };
        RespBody {
            kind,
            guard: (!done).then_some(guard),
        }
    }
}

impl RespBody {
    /// The service's response fields, when the dedicated connection kept them raw for the
    /// front end to write (see `upstream::RawFields`).
    pub(crate) fn take_raw(&mut self) -> Option<Box<RawFields>> {
        match &mut self.kind {
            RespKind::Lean(b) => b.take_raw(),
            _ => None,
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            RespKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespKind::Upstream(body) => {
                let res = Pin::new(&mut *body).poll_frame(cx);
                match &res {
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.guard = None,
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => this.guard = None,
                    _ => {}
                }
                res.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
            }
            RespKind::Lean(body) => {
                let res = Pin::new(&mut *body).poll_frame(cx);
                match &res {
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.guard = None,
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => this.guard = None,
                    _ => {}
                }
                res
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RespKind::Full(b) => b.is_none(),
            RespKind::Upstream(b) => b.is_end_stream(),
            RespKind::Lean(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RespKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespKind::Upstream(b) => b.size_hint(),
            RespKind::Lean(b) => b.size_hint(),
        }
    }
}
