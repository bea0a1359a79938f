//! A downstream connection's own upstream connection, spoken directly on the socket.
//!
//! Every accepted HTTP/1 connection keeps one dedicated upstream HTTP/1.1 connection (to the
//! endpoint its first request went to). A request without a body is written to it as one
//! buffer, the response head is read and parsed in the request's own future (`httparse`, as
//! hyper does), and the response body is read from the socket by the body that hyper's
//! server polls: no client connection task, no request channel, no response channel and no
//! body channel per request, and the request, its upstream exchange and the response never
//! leave the downstream connection's task. When the body is complete the connection goes
//! back to the slot for the next request of the same downstream connection.
//!
//! Whatever it cannot take goes through the worker's pooled hyper client as before: a
//! request with a body (body parking, the size limit and mirroring's tee stay hyper's), a
//! `CONNECT`, another endpoint than the connection's, a request while the connection is
//! busy (HTTP/2 is never sent here), an upgrade, and a request that could not be written
//! (the connection closed under it). A dedicated connection idle for longer than the
//! pool's idle timeout, or that became readable while idle (the service closed it), is
//! replaced rather than reused, so a service's own idle timeout never races a request on
//! it; it closes with its downstream connection.

use std::future::Future as _;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::fields::Spans;
use crate::metrics::ErrorKind;

/// Longest idle time after which the dedicated connection is not reused (as the pool's).
pub(crate) const IDLE_REUSE: Duration = Duration::from_secs(15);
/// Most response header fields accepted (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted (hyper's default read buffer limit).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;

/// An open upstream connection and its buffers.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not consumed yet.
    rbuf: BytesMut,
    /// The request head being written (kept for its capacity).
    wbuf: Vec<u8>,
    /// When the last request on it started (or it was opened): the connection has been
    /// idle for at most the time since. Taken from the request's own start rather than
    /// read from the clock again when the response ends, so an idle connection is judged
    /// a little older than it is (replaced earlier, never later).
    idle_since: Instant,
}

impl Conn {
    /// Whether an idle connection can take a request: not idle too long, and nothing to
    /// read (a readable idle connection was closed by the service, or sent bytes nobody
    /// asked for). Tokio clears a socket's read readiness when a read drained it, so this
    /// costs no system call.
    fn reusable(&self, now: Instant) -> bool {
        if !self.rbuf.is_empty() || now.saturating_duration_since(self.idle_since) >= IDLE_REUSE {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }
}

#[derive(Default)]
struct Slot {
    /// The endpoint (`host:port` as in the table) the dedicated connection belongs to;
    /// `None`: none yet (or the last one closed).
    addr: Option<Arc<str>>,
    /// The connection while no request uses it.
    idle: Option<Conn>,
    /// A request or its response body is using the connection.
    busy: bool,
}

/// Shared between the downstream connection's task (which clears it when the connection
/// ends) and its requests and response bodies (which use the connection in turn).
#[derive(Default, Clone)]
pub(crate) struct Dedicated(Arc<Mutex<Slot>>);

/// What an upstream attempt failed with.
pub(crate) enum UpstreamError {
    Pooled(hyper_util::client::legacy::Error),
    Connect(io::Error),
    /// Reading from or writing to the dedicated connection failed.
    Io(io::Error),
    /// The dedicated connection closed before the response head was complete.
    Closed,
    /// The service's response could not be parsed.
    Invalid(&'static str),
}

impl UpstreamError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            UpstreamError::Pooled(e) if e.is_connect() => ErrorKind::Connect,
            UpstreamError::Connect(_) => ErrorKind::Connect,
            UpstreamError::Pooled(e) => classify(e),
            UpstreamError::Io(e) => classify(e),
            UpstreamError::Closed => ErrorKind::Reset,
            UpstreamError::Invalid(_) => ErrorKind::Other,
        }
    }

    pub(crate) fn message(&self) -> String {
        let e: &(dyn std::error::Error + 'static) = match self {
            UpstreamError::Pooled(e) => e,
            UpstreamError::Connect(e) | UpstreamError::Io(e) => e,
            UpstreamError::Closed => return "connection closed before message completed".into(),
            UpstreamError::Invalid(what) => return format!("invalid HTTP response: {what}"),
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
        if let Some(io) = s.downcast_ref::<io::Error>() {
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

/// Gives the slot up (no connection, not busy) when dropped armed: a failed attempt, a
/// timeout dropping the attempt, or a response body dropped before its end.
struct Release<'a>(Option<&'a Dedicated>);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.0 {
            d.release();
        }
    }
}

impl Dedicated {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No connection and not busy: the next request opens a fresh connection.
    fn release(&self) {
        let mut s = self.lock();
        s.busy = false;
        s.idle = None;
        s.addr = None;
    }

    /// The response is complete and the connection can take the next request.
    fn put_back(&self, conn: Conn) {
        let mut s = self.lock();
        s.busy = false;
        s.idle = Some(conn);
    }

    /// Drops an idle connection (the downstream connection ended). A response body still
    /// streaming gives the slot up when it ends.
    pub(crate) fn clear(&self) {
        let mut s = self.lock();
        s.idle = None;
        if !s.busy {
            s.addr = None;
        }
    }

    /// Sends a request without a body (`method`, origin-form `target`, `headers`, and
    /// `Host: authority` when the headers have none) to `addr` on the dedicated connection
    /// when it can take it (opening it for the first endpoint this connection uses).
    /// `None` when it cannot, or could not write the request: the pooled client may send it.
    /// `now` is the time the request started (no clock read here). With `raw`, the caller
    /// writes the response to its client itself (the front end) and takes the response
    /// fields from [`LeanBody::take_raw`] when they could be kept raw (the response's map
    /// is empty then).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send(
        &self,
        now: Instant,
        raw: bool,
        addr: &str,
        authority: &Authority,
        connect_timeout: Duration,
        method: &Method,
        target: &PathAndQuery,
        headers: &HeaderMap,
    ) -> Option<Result<Response<LeanBody>, UpstreamError>> {
        if method == Method::CONNECT {
            return None;
        }
        let idle = {
            let mut s = self.lock();
            if s.busy || s.addr.as_deref().is_some_and(|a| a != addr) {
                return None;
            }
            s.busy = true;
            if s.addr.is_none() {
                s.addr = Some(Arc::from(addr));
            }
            s.idle.take()
        };
        // Until the response body owns the connection, failing or being dropped (a
        // timeout) gives the slot up rather than leaving it busy for good.
        let release = Release(Some(self));
        let mut conn = match idle.filter(|c| c.reusable(now)) {
            Some(conn) => conn,
            None => match open(addr, connect_timeout, now).await {
                Ok(conn) => conn,
                Err(e) => return Some(Err(e)),
            },
        };

        let mut wbuf = std::mem::take(&mut conn.wbuf);
        wbuf.clear();
        encode_head(method, target, headers, authority, &mut wbuf);
        let mut written = 0;
        while written < wbuf.len() {
            match conn.stream.write(&wbuf[written..]).await {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if written == 0 => {
                    tracing::debug!(error = %e, "dedicated upstream connection unusable");
                    break;
                }
                Err(e) => return Some(Err(UpstreamError::Io(e))),
            }
        }
        if written < wbuf.len() {
            // Not (fully) written: the pooled client may send it.
            return None;
        }
        conn.wbuf = wbuf;
        conn.idle_since = now;

        let head = match read_head(&mut conn, raw).await {
            Ok(head) => head,
            Err(e) => return Some(Err(e)),
        };
        let framing = match framing(method, &head) {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        let keep_alive = framing != Framing::Eof && keeps_alive(&head);
        std::mem::forget(release);
        let mut body = LeanBody::new(conn, framing, keep_alive, self.clone());
        body.raw = head.raw;
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            resp.extensions_mut().insert(reason);
        }
        Some(Ok(resp))
    }
}

async fn open(addr: &str, connect_timeout: Duration, now: Instant) -> Result<Conn, UpstreamError> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Err(_) => {
            return Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timeout",
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        wbuf: Vec::with_capacity(1024),
        idle_since: now,
    })
}

/// The request line and header fields, as hyper's client writes them for a request
/// without a body (the headers as they are: `Content-Length: 0` if the client sent it),
/// with `Host: authority` when the headers have no `Host`.
fn encode_head(
    method: &Method,
    target: &PathAndQuery,
    headers: &HeaderMap,
    authority: &Authority,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    /// The fields, unless they are kept raw (then empty).
    headers: HeaderMap,
    /// The fields as the service sent them, when the caller takes them raw and they can be
    /// (boxed: the spans are large, and the head and body are moved several times).
    raw: Option<Box<RawFields>>,
    /// The reason phrase when it is not the status code's canonical one (hyper keeps it).
    reason: Option<hyper::ext::ReasonPhrase>,
    /// `Connection` named `close` / `keep-alive` (read before those fields are dropped).
    close: bool,
    keep: bool,
    /// `Transfer-Encoding` was sent: whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// The `Content-Length` (every value the same), or why it is invalid.
    length: Result<Option<u64>, &'static str>,
}

/// A response's header fields as the service sent them, for the front end to write to the
/// client as they are (see `front.rs`) rather than through a [`HeaderMap`]: every field
/// but `Connection` and `Keep-Alive`. Only for a response without any other hop-by-hop
/// field (so there is nothing else to strip), without `Transfer-Encoding` and with a valid
/// `Content-Length` or none.
pub(crate) struct RawFields {
    head: Bytes,
    spans: Spans,
    /// The service set `x-correlation-id`.
    pub(crate) correlation: bool,
    /// The service set `Date`.
    pub(crate) date: bool,
    /// The service's `Content-Length`.
    pub(crate) length: Option<u64>,
    /// Fields the proxy adds after the service's (its version, a cookie, a correlation id).
    added: [Option<(HeaderName, HeaderValue)>; 3],
}

impl RawFields {
    /// Each field's name (as the service spelled it) and value, then the added ones.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let added = self.added.iter().flatten();
        self.spans
            .fields(&self.head)
            .chain(added.map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())))
    }

    /// Adds a field after the service's. At most three (what the proxy adds).
    pub(crate) fn add(&mut self, name: HeaderName, value: HeaderValue) {
        let free = self.added.iter_mut().find(|slot| slot.is_none());
        *free.expect("the proxy adds at most three fields") = Some((name, value));
    }
}

/// Reads until a final (non-1xx) response head is complete; informational responses are
/// skipped, as hyper's client does. With `raw`, the fields are kept raw when they can be.
async fn read_head(conn: &mut Conn, raw: bool) -> Result<Head, UpstreamError> {
    loop {
        if !conn.rbuf.is_empty() {
            if let Some(head) = parse_head(&mut conn.rbuf, raw)? {
                match head.status.as_u16() {
                    101 => return Err(UpstreamError::Invalid("unexpected 101 response")),
                    100..=199 => continue,
                    _ => return Ok(head),
                }
            }
            if conn.rbuf.len() >= MAX_HEAD {
                return Err(UpstreamError::Invalid("response head too large"));
            }
        }
        conn.rbuf.reserve(READ_CHUNK);
        match conn.stream.read_buf(&mut conn.rbuf).await {
            Ok(0) => return Err(UpstreamError::Closed),
            Ok(_) => {}
            Err(e) => return Err(UpstreamError::Io(e)),
        }
    }
}

/// The response fields the parse looks at, by name (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Connection,
    KeepAlive,
    TransferEncoding,
    ContentLength,
    Correlation,
    Date,
    /// Another hop-by-hop field (RFC 9110 7.6.1 and the proxy's own list).
    HopByHop,
    /// `x-dronectl-version`, which the proxy replaces with its own.
    Version,
    Other,
}

fn field(name: &str) -> Field {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 if is("te") => Field::HopByHop,
        4 if is("date") => Field::Date,
        7 if is("trailer") || is("upgrade") => Field::HopByHop,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::KeepAlive,
        14 if is("content-length") => Field::ContentLength,
        16 if is(crate::proxy::CORRELATION_HEADER) => Field::Correlation,
        16 if is("proxy-connection") => Field::HopByHop,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        18 if is("proxy-authenticate") => Field::HopByHop,
        18 if is(crate::proxy::VERSION_HEADER) => Field::Version,
        19 if is("proxy-authorization") => Field::HopByHop,
        _ => Field::Other,
    }
}

/// Parses a response head at the start of `buf` and consumes it; `None` if incomplete.
/// Header values share the read buffer's memory (no copy). With `raw`, the fields are kept
/// as [`RawFields`] when they can be, and the map stays empty.
fn parse_head(buf: &mut BytesMut, raw: bool) -> Result<Option<Head>, UpstreamError> {
    // Uninitialised field slots, as hyper's own parser uses: zeroing 100 of them (3.2 KB)
    // for every response cost more than parsing it.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Invalid("too many header fields"))
        }
        Err(_) => return Err(UpstreamError::Invalid("malformed response head")),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(UpstreamError::Invalid("invalid status code"))?;
    let version = match res.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each field is in `buf`, so that the fields can share `buf`'s memory once it is
    // frozen (the parse borrows it until then).
    let mut spans = Spans::new(buf);
    let reason = res
        .reason
        .filter(|r| !r.is_empty() && Some(*r) != status.canonical_reason())
        .map(|r| (spans.offset(r.as_bytes()), r.len()));
    // One pass reads what framing and the proxy need. `Connection` as almost every
    // service sends it (`keep-alive` or `close`, nothing else) and `Keep-Alive` are
    // hop-by-hop: they are left out of the fields, so the proxy finds nothing to strip. A
    // `Connection` naming other fields keeps them all for the proxy's strip.
    // `other_hop`: a field that only the map path strips or replaces.
    let (mut close, mut keep, mut names_others, mut other_hop) = (false, false, false, false);
    let (mut correlation, mut date) = (false, false);
    let mut chunked = None;
    let mut length: Result<Option<u64>, &'static str> = Ok(None);
    // Each field's kind, for the second pass (the first `MAX_HEADERS` cover them all).
    let mut kinds = [Field::Other; MAX_HEADERS];
    for (h, kind) in res.headers.iter().zip(kinds.iter_mut()) {
        *kind = field(h.name);
        match *kind {
            Field::Connection => {
                for t in std::str::from_utf8(h.value).unwrap_or("").split(',') {
                    let t = t.trim();
                    if t.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case("keep-alive") {
                        keep = true;
                    } else if !t.is_empty() {
                        names_others = true;
                    }
                }
            }
            Field::TransferEncoding => {
                let last = std::str::from_utf8(h.value)
                    .unwrap_or("")
                    .rsplit(',')
                    .next()
                    .map(str::trim);
                chunked = Some(last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")));
            }
            Field::ContentLength => {
                if let Ok(seen) = length {
                    length = content_length(h.value, seen);
                }
            }
            Field::Correlation => correlation = true,
            Field::Date => date = true,
            // Fields the proxy removes or replaces: the map does that.
            Field::HopByHop | Field::Version => other_hop = true,
            Field::KeepAlive | Field::Other => {}
        }
    }
    for (h, kind) in res.headers.iter().zip(kinds) {
        let dropped = !names_others && matches!(kind, Field::Connection | Field::KeepAlive);
        if !dropped {
            spans.push(h);
        }
    }
    let head = buf.split_to(len).freeze();
    let reason =
        reason.and_then(|(at, n)| hyper::ext::ReasonPhrase::try_from(head.slice(at..at + n)).ok());
    let (headers, raw) = match length {
        Ok(length) if raw && !names_others && !other_hop && chunked.is_none() => {
            let raw = RawFields {
                head,
                spans,
                correlation,
                date,
                length,
                added: [None, None, None],
            };
            (HeaderMap::new(), Some(Box::new(raw)))
        }
        // Room for the fields the proxy adds (version, correlation id, a cookie).
        _ => match spans.to_map(&head, 3) {
            Some(map) => (map, None),
            None => return Err(UpstreamError::Invalid("invalid header field")),
        },
    };
    Ok(Some(Head {
        status,
        version,
        headers,
        raw,
        reason,
        close,
        keep,
        chunked,
        length,
    }))
}

/// A `Content-Length` value (a number, or a list of the same number) after the values
/// `seen` before it.
fn content_length(value: &[u8], mut seen: Option<u64>) -> Result<Option<u64>, &'static str> {
    let s = std::str::from_utf8(value).map_err(|_| "invalid content-length")?;
    for part in s.split(',').map(str::trim) {
        let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u64>().ok())
            .flatten()
            .ok_or("invalid content-length")?;
        if seen.is_some_and(|l| l != n) {
            return Err("conflicting content-length");
        }
        seen = Some(n);
    }
    Ok(seen)
}

/// How the response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the connection closes (the connection cannot be reused).
    Eof,
}

fn framing(method: &Method, head: &Head) -> Result<Framing, UpstreamError> {
    let code = head.status.as_u16();
    if method == Method::HEAD || code == 204 || code == 304 {
        return Ok(Framing::Length(0));
    }
    match head.chunked {
        Some(true) => return Ok(Framing::Chunked),
        Some(false) => return Ok(Framing::Eof),
        None => {}
    }
    let length = head.length.map_err(UpstreamError::Invalid)?;
    Ok(length.map_or(Framing::Eof, Framing::Length))
}

/// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
fn keeps_alive(head: &Head) -> bool {
    !head.close && (head.version == Version::HTTP_11 || head.keep)
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Eof,
    Done,
}

/// A response body read from the dedicated connection; it hands the connection back when
/// its last byte has been read (before that byte is even polled when the whole body came
/// with the head), and gives the slot up if dropped before.
pub(crate) struct LeanBody {
    conn: Option<Conn>,
    state: State,
    /// The whole body, when it was already read with the head.
    ready: Option<Bytes>,
    keep_alive: bool,
    home: Dedicated,
    /// The response's fields, when they were kept raw.
    raw: Option<Box<RawFields>>,
}

impl LeanBody {
    /// The response's fields when they were kept raw (see [`Dedicated::send`]).
    pub(crate) fn raw_mut(&mut self) -> Option<&mut RawFields> {
        self.raw.as_deref_mut()
    }

    /// Takes the response's raw fields, to write them.
    pub(crate) fn take_raw(&mut self) -> Option<Box<RawFields>> {
        self.raw.take()
    }

    fn new(mut conn: Conn, framing: Framing, keep_alive: bool, home: Dedicated) -> LeanBody {
        let (state, ready) = match framing {
            Framing::Length(0) => (State::Done, None),
            Framing::Length(n) if conn.rbuf.len() as u64 >= n => {
                (State::Done, Some(conn.rbuf.split_to(n as usize).freeze()))
            }
            Framing::Length(n) => (State::Length(n), None),
            Framing::Chunked => (State::Chunked(Chunk::Size), None),
            Framing::Eof => (State::Eof, None),
        };
        let mut body = LeanBody {
            conn: Some(conn),
            state,
            ready,
            keep_alive,
            home,
            raw: None,
        };
        if body.state == State::Done {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to the slot if it can be reused.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.rbuf.is_empty() {
                self.home.put_back(conn);
            } else {
                self.home.release();
            }
        }
    }

    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.keep_alive = false;
        self.finish();
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for LeanBody {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.home.release();
        }
    }
}

/// One step of decoding a chunked body from `buf`.
enum Step {
    Data(Bytes),
    /// Needs more bytes.
    More,
    End,
}

fn decode_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match *chunk {
            Chunk::Size => {
                let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                    return if buf.len() > MAX_LINE {
                        Err("chunk size line too long")
                    } else {
                        Ok(Step::More)
                    };
                };
                let line = &buf[..nl];
                let digits = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                let rest = &line[digits..];
                let rest_ok = match rest.first() {
                    None => true,
                    Some(b';' | b' ' | b'\t') => true,
                    Some(b'\r') => rest.len() == 1,
                    Some(_) => false,
                };
                if digits == 0 || digits > 16 || !rest_ok {
                    return Err("invalid chunk size line");
                }
                let size = std::str::from_utf8(&line[..digits])
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or("invalid chunk size")?;
                buf.advance(nl + 1);
                *chunk = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = left.min(buf.len() as u64);
                let data = buf.split_to(n as usize).freeze();
                *chunk = if n == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n)
                };
                return Ok(Step::Data(data));
            }
            Chunk::DataEnd => match buf.first() {
                None => return Ok(Step::More),
                Some(b'\n') => {
                    buf.advance(1);
                    *chunk = Chunk::Size;
                }
                Some(b'\r') if buf.len() < 2 => return Ok(Step::More),
                Some(b'\r') if buf[1] == b'\n' => {
                    buf.advance(2);
                    *chunk = Chunk::Size;
                }
                Some(_) => return Err("missing CRLF after chunk data"),
            },
            Chunk::Trailers => {
                let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                    return if buf.len() > MAX_LINE {
                        Err("trailer line too long")
                    } else {
                        Ok(Step::More)
                    };
                };
                let empty = nl == 0 || (nl == 1 && buf[0] == b'\r');
                buf.advance(nl + 1);
                if empty {
                    return Ok(Step::End);
                }
            }
        }
    }
}

impl Body for LeanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let n = (*left).min(conn.rbuf.len() as u64);
                        let data = conn.rbuf.split_to(n as usize).freeze();
                        *left -= n;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Eof => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(chunk) => match decode_chunked(chunk, &mut conn.rbuf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(what) => return this.fail(what.into()),
                },
            }
            conn.rbuf.reserve(READ_CHUNK);
            let read = {
                let fut = conn.stream.read_buf(&mut conn.rbuf);
                std::pin::pin!(fut).poll(cx)
            };
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.state == State::Eof => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return this.fail(Box::new(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection before the end of the body",
                    )))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(Box::new(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && (self.state == State::Done || self.state == State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        let ready = self.ready.as_ref().map_or(0, |b| b.len() as u64);
        match self.state {
            State::Done => SizeHint::with_exact(ready),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::Eof => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[&[u8]]) -> Result<Vec<u8>, &'static str> {
        let mut chunk = Chunk::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in input {
            buf.extend_from_slice(part);
            loop {
                match decode_chunked(&mut chunk, &mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::More => break,
                    Step::End => return Ok(out),
                }
            }
        }
        Err("incomplete")
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let body: &[u8] = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for at in 0..body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(
                decode_all(&[a, b]).unwrap(),
                b"hello world",
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode_all(&bytes).unwrap(), b"hello world");
        assert!(decode_all(&[b"zz\r\n"]).is_err());
        assert!(decode_all(&[b"2\r\nabX"]).is_err());
    }

    fn head(raw: &[u8]) -> Head {
        let mut buf = BytesMut::from(raw);
        let head = parse_head(&mut buf, false)
            .ok()
            .flatten()
            .expect("a complete head");
        assert!(buf.is_empty());
        head
    }

    #[test]
    fn every_field_of_a_long_head_is_kept_in_order() {
        // More fields than the parse keeps on its stack: the rest spill, in order.
        let mut raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n".to_vec();
        for i in 0..40 {
            raw.extend_from_slice(format!("x-f{}: v{i}\r\nx-same: {i}\r\n", i % 7).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let h = head(&raw);
        assert_eq!(h.headers.len(), 80);
        assert!(!h.headers.contains_key(header::CONNECTION));
        let values = |name: &str| -> Vec<String> {
            h.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        let same = values("x-same");
        assert_eq!(same, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
        let f3 = values("x-f3");
        assert_eq!(f3, ["v3", "v10", "v17", "v24", "v31", "v38"]);
    }

    #[test]
    fn response_heads_parse_and_frame() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nx-a: c\r\n\r\n");
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.reason.is_none());
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(framing(&Method::GET, &h).ok(), Some(Framing::Length(5)));
        assert_eq!(framing(&Method::HEAD, &h).ok(), Some(Framing::Length(0)));
        assert!(keeps_alive(&h));

        let h = head(b"HTTP/1.1 201 Made It\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n");
        assert_eq!(
            h.reason.as_ref().map(|r| r.as_bytes()),
            Some(&b"Made It"[..])
        );
        assert_eq!(framing(&Method::GET, &h).ok(), Some(Framing::Chunked));
        assert!(!keeps_alive(&h));

        let h = head(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(framing(&Method::GET, &h).ok(), Some(Framing::Eof));
        assert!(!keeps_alive(&h));
        let h = head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(keeps_alive(&h));

        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert!(framing(&Method::GET, &h).is_err());
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(framing(&Method::GET, &h).ok(), Some(Framing::Length(5)));
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n");
        assert!(framing(&Method::GET, &h).is_err());

        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(matches!(parse_head(&mut partial, false), Ok(None)));
        let mut bad = BytesMut::from(&b"HTTX/1.1 200 OK\r\n\r\n"[..]);
        assert!(parse_head(&mut bad, false).is_err());
    }

    fn raw_head(raw: &[u8]) -> Head {
        let mut buf = BytesMut::from(raw);
        let head = parse_head(&mut buf, true)
            .ok()
            .flatten()
            .expect("a complete head");
        assert!(buf.is_empty());
        head
    }

    #[test]
    fn plain_response_fields_are_kept_raw_in_order() {
        let h = raw_head(
            b"HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\nX-Correlation-Id: c1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        );
        assert!(h.headers.is_empty());
        let raw = h.raw.as_ref().expect("kept raw");
        let fields: Vec<(&[u8], &[u8])> = raw.fields().collect();
        assert_eq!(
            fields,
            [
                (&b"Server"[..], &b"s"[..]),
                (b"Content-Length", b"5"),
                (b"X-Correlation-Id", b"c1"),
                (b"Set-Cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
            ]
        );
        assert!(raw.correlation && !raw.date);
        assert_eq!(raw.length, Some(5));
        assert_eq!(framing(&Method::GET, &h).ok(), Some(Framing::Length(5)));
        assert!(keeps_alive(&h));
        let h = raw_head(b"HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
        let raw = h.raw.as_ref().expect("kept raw");
        assert!(raw.date && !raw.correlation && raw.length.is_none());
    }

    #[test]
    fn responses_with_more_to_strip_or_other_framing_get_a_map() {
        for text in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nx-secret: 1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTrailer: x-t\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Dronectl-Version: not-the-router\r\nContent-Length: 0\r\n\r\n",
        ] {
            let h = raw_head(text);
            assert!(h.raw.is_none(), "{}", String::from_utf8_lossy(text));
            assert!(!h.headers.is_empty(), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn request_heads_are_written_as_hyper_writes_them() {
        let target = PathAndQuery::from_static("/a/b?c=d");
        let authority = Authority::from_static("10.0.0.1:8080");
        let mut headers = HeaderMap::new();
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_head(&Method::GET, &target, &headers, &authority, &mut out);
        assert_eq!(
            out,
            b"GET /a/b?c=d HTTP/1.1\r\nhost: 10.0.0.1:8080\r\nx-many: 1\r\nx-many: 2\r\n\r\n"
        );
        headers.insert(header::HOST, HeaderValue::from_static("orders"));
        out.clear();
        encode_head(&Method::DELETE, &target, &headers, &authority, &mut out);
        assert_eq!(
            out,
            b"DELETE /a/b?c=d HTTP/1.1\r\nx-many: 1\r\nx-many: 2\r\nhost: orders\r\n\r\n"
        );
    }
}
