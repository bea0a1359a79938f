//! The data ports' HTTP/1 front end: the common request served without hyper's server.
//!
//! Every accepted connection starts here. The front end reads and parses request heads
//! itself (`httparse`, as hyper does) and serves a request when it is *plain*: HTTP/1.1,
//! origin-form target, no body (no `Transfer-Encoding`, `Content-Length` absent or exactly
//! `0`), no `Expect`, no `Upgrade` field and no `upgrade` token in `Connection`. It hands the
//! request to [`proxy::forward`] like hyper's server would, and
//! writes the response head and body straight to the socket: one write for a response whose
//! body came with its head, the head first (then the body as it streams) otherwise.
//!
//! Anything else goes to hyper's server for the rest of the connection, with the bytes read
//! so far put back in front of the socket (see [`Rewind`]): an HTTP/2 preface (h2c prior
//! knowledge), a request with a body, an upgrade (WebSocket), HTTP/1.0, `CONNECT`, an
//! absolute-form or `*` target, a head longer than [`MAX_HEAD`], more than 100 fields, and
//! any head `httparse` or the `http` types refuse. hyper then answers exactly as it did when
//! it served every connection (400, 431, the h2 connection, the tunnel), so the front end
//! never has to be lenient where hyper is strict: what it does not know it passes on before
//! consuming a byte of it.
//!
//! Shutdown: between requests, a stop signal closes an idle connection; a request in progress
//! is finished and answered with `connection: close`, as hyper's graceful shutdown does. A
//! client that closes its side while its request waits for the service abandons it, as
//! under hyper's server.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use crate::body::RespBody;
use crate::fields::Spans;
use crate::proxy::{self, Peer};

/// Most request header fields the front end parses (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Longest request head the front end parses; a longer one goes to hyper, which allows more.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// A response body frame up to this size is copied after the head (or the previous frame)
/// and written with it; a larger one is written on its own.
const COALESCE: usize = 16 * 1024;
/// What an HTTP/2 prior-knowledge connection starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's servers for what the front end passes on: `first` for a connection passed on
/// before its first request (HTTP/1 or HTTP/2), `http1` after one or more requests.
pub(crate) struct Fallback {
    pub(crate) first: auto::Builder<TokioExecutor>,
    pub(crate) http1: auto::Builder<TokioExecutor>,
}

/// Serves one accepted data-port connection to its end: plain requests here, the rest of
/// the connection through hyper from the first request that is not plain. `stop` turns
/// true when the worker drains.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: Arc<Peer>,
    fallback: &Fallback,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Front {
        stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
        wbuf: Vec::with_capacity(1024),
        served: 0,
    };
    if conn.run(&peer, &stop).await == Outcome::Done {
        return;
    }
    let Front {
        stream,
        buf,
        served,
        ..
    } = conn;
    let builder = if served == 0 {
        &fallback.first
    } else {
        &fallback.http1
    };
    let io = TokioIo::new(Rewind {
        prefix: buf.freeze(),
        stream,
    });
    let svc = service_fn(move |req| proxy::handle(peer.clone(), req));
    let hyper = builder.serve_connection_with_upgrades(io, svc);
    let mut hyper = std::pin::pin!(hyper);
    let mut stopping = *stop.borrow();
    if stopping {
        hyper.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = hyper.as_mut() => {
                if let Err(e) = res {
                    debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            // A closed channel (the worker is gone) counts as a stop.
            _ = stop.changed(), if !stopping => {
                stopping = true;
                hyper.as_mut().graceful_shutdown();
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The connection is closed (or to be closed: dropping it closes it).
    Done,
    /// The request at the start of `buf` and the rest of the connection go to hyper.
    PassOn,
}

struct Front {
    stream: TcpStream,
    /// Bytes read and not consumed yet (the start of the next request).
    buf: BytesMut,
    /// The response being written (kept for its capacity).
    wbuf: Vec<u8>,
    /// Requests served so far.
    served: u64,
}

/// A request head the front end serves.
#[derive(Debug)]
struct Plain {
    parts: http::request::Parts,
    /// The client asked to close the connection after this request.
    close: bool,
}

// Returned and taken apart at once: boxing the request would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Parsed {
    Plain(Plain),
    /// The head is not complete yet.
    Partial,
    /// Not one the front end serves: hyper's server takes it, and the connection.
    PassOn,
}

impl Front {
    async fn run(&mut self, peer: &Peer, stop: &watch::Receiver<bool>) -> Outcome {
        // One wait for the stop signal for the connection's life: registering a new one
        // for every keep-alive wait cost about 575 instructions per request (callgrind).
        let mut waiter = stop.clone();
        let stop_signal = async move {
            let _ = waiter.changed().await;
        };
        let mut stop_signal = std::pin::pin!(stop_signal);
        let mut signalled = false;
        loop {
            let req = loop {
                if !self.buf.is_empty() {
                    match parse(&mut self.buf) {
                        Parsed::Plain(req) => break req,
                        Parsed::Partial if self.buf.len() < MAX_HEAD => {}
                        Parsed::Partial | Parsed::PassOn => return Outcome::PassOn,
                    }
                }
                let idle = self.buf.is_empty();
                if idle && (signalled || *stop.borrow()) {
                    return Outcome::Done;
                }
                self.buf.reserve(READ_CHUNK);
                tokio::select! {
                    biased;
                    read = self.stream.read_buf(&mut self.buf) => match read {
                        Ok(0) | Err(_) => return Outcome::Done,
                        Ok(_) => {}
                    },
                    // Between requests only: a request that started arriving is read and
                    // answered. A closed channel (the worker is gone) counts as a stop.
                    _ = stop_signal.as_mut(), if idle && !signalled => signalled = true,
                }
            };
            self.served += 1;
            let head_only = req.parts.method == Method::HEAD;
            // Pinned where it is made: moved by value into `unless_client_leaves`, the
            // forward future (large: it holds the state of every await in `forward`) was
            // copied twice per request (callgrind: `memcpy`).
            let forward = std::pin::pin!(proxy::forward(peer, req.parts, None, true));
            let Some(resp) = self.unless_client_leaves(forward).await else {
                debug!("client closed its connection before the response; request abandoned");
                return Outcome::Done;
            };
            let keep = !req.close && !signalled && !*stop.borrow();
            match self.respond(resp, head_only, keep).await {
                Ok(true) if keep => {}
                _ => {
                    let _ = self.stream.shutdown().await;
                    return Outcome::Done;
                }
            }
        }
    }

    /// `fut`, or `None` once the client has closed its side (hyper's server drops the
    /// request then too, and so the upstream attempt: its connection is given up). Bytes
    /// the client sends meanwhile (pipelined requests) are kept for later, up to
    /// [`MAX_HEAD`] of them; beyond that the socket is left unread until the response.
    async fn unless_client_leaves<F: std::future::Future>(
        &mut self,
        mut fut: Pin<&mut F>,
    ) -> Option<F::Output> {
        let (stream, buf) = (&self.stream, &mut self.buf);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while buf.len() < MAX_HEAD {
                match stream.poll_read_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(())) => {}
                }
                buf.reserve(READ_CHUNK);
                match stream.try_read_buf(buf) {
                    Ok(0) => return Poll::Ready(None),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(None),
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `resp` (without its body for a `HEAD` request). `Ok(true)` when the body was
    /// complete, so the connection can take another request.
    async fn respond(
        &mut self,
        resp: Response<RespBody>,
        head_only: bool,
        keep: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let no_body = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let w = &mut self.wbuf;
        w.clear();
        let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
        if status == StatusCode::OK && reason.is_none() {
            w.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            w.extend_from_slice(b"HTTP/1.1 ");
            w.extend_from_slice(status.as_str().as_bytes());
            w.push(b' ');
            match reason {
                Some(r) => w.extend_from_slice(r.as_bytes()),
                // As hyper: a reason must be written, many parsers expect one.
                None => {
                    w.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes())
                }
            }
            w.extend_from_slice(b"\r\n");
        }
        let mut declared: Option<u64> = None;
        let (mut has_date, mut closes) = (false, false);
        // The service's fields as it sent them, when they were kept raw (nothing in them
        // to strip: see `upstream::RawFields`); the map then holds what the proxy added.
        if let Some(raw) = body.take_raw() {
            for (name, value) in raw.fields() {
                w.extend_from_slice(name);
                w.extend_from_slice(b": ");
                w.extend_from_slice(value);
                w.extend_from_slice(b"\r\n");
            }
            declared = raw.length;
            has_date = raw.date;
        }
        for (name, value) in &parts.headers {
            if name == header::CONTENT_LENGTH {
                let n = content_length(value)
                    .ok_or_else(|| io::Error::other("invalid content-length in a response"))?;
                if declared.is_some_and(|d| d != n) {
                    return Err(io::Error::other("conflicting content-length in a response"));
                }
                declared = Some(n);
            } else if name == header::TRANSFER_ENCODING {
                // The front end frames the body itself (hop-by-hop fields are stripped
                // before a response gets here; this is for safety).
                continue;
            } else if name == header::DATE {
                has_date = true;
            } else if name == header::CONNECTION {
                // A response that ends the connection is honoured, as hyper does.
                closes |= value.as_bytes().eq_ignore_ascii_case(b"close");
            }
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if !has_date {
            w.extend_from_slice(b"date: ");
            crate::date::extend(w);
            w.extend_from_slice(b"\r\n");
        }
        let keep = keep && !closes;
        if !keep && !closes {
            w.extend_from_slice(b"connection: close\r\n");
        }
        let hint = body.size_hint().exact();
        // How the body is delimited: its length, or chunked.
        let length = match (no_body, declared, hint) {
            (true, _, _) => {
                if head_only && declared.is_none() {
                    if let Some(n) = hint.filter(|&n| n > 0) {
                        push_length(w, n);
                    }
                }
                Some(0)
            }
            (false, Some(n), _) => Some(n),
            (false, None, Some(n)) => {
                push_length(w, n);
                Some(n)
            }
            (false, None, None) => {
                w.extend_from_slice(b"transfer-encoding: chunked\r\n");
                None
            }
        };
        w.extend_from_slice(b"\r\n");
        if no_body {
            drop(body);
            self.stream.write_all(&self.wbuf).await?;
            return Ok(keep);
        }

        let mut sent: u64 = 0;
        let complete = loop {
            // The head (and what is buffered) goes out before waiting for more of the body,
            // so a streamed body (server-sent events) is never held back.
            let now = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
            let frame = match now.await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if !self.wbuf.is_empty() {
                        self.stream.write_all(&self.wbuf).await?;
                        self.wbuf.clear();
                    }
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    // Trailers (not forwarded to HTTP/1 clients, as hyper) and empty frames.
                    _ => continue,
                },
                Some(Err(e)) => {
                    debug!(error = %e, "response body failed; closing the client connection");
                    break false;
                }
            };
            let data = match length {
                Some(n) => {
                    let room = n - sent;
                    if data.len() as u64 > room {
                        debug!(
                            "response body longer than its length; closing the client connection"
                        );
                        self.push_data(data.slice(..room as usize), false).await?;
                        break false;
                    }
                    sent += data.len() as u64;
                    data
                }
                None => data,
            };
            self.push_data(data, length.is_none()).await?;
        };
        let complete = complete && length.is_none_or(|n| sent == n);
        if complete && length.is_none() {
            self.wbuf.extend_from_slice(b"0\r\n\r\n");
        }
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(complete && keep)
    }

    /// Queues a body frame after what is buffered, or writes both when it is large.
    async fn push_data(&mut self, data: Bytes, chunked: bool) -> io::Result<()> {
        if chunked {
            self.wbuf
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if self.wbuf.len() + data.len() <= COALESCE {
            self.wbuf.extend_from_slice(&data);
        } else {
            if !self.wbuf.is_empty() {
                self.stream.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
            self.stream.write_all(&data).await?;
        }
        if chunked {
            self.wbuf.extend_from_slice(b"\r\n");
        }
        Ok(())
    }
}

fn push_length(w: &mut Vec<u8>, n: u64) {
    w.extend_from_slice(b"content-length: ");
    w.extend_from_slice(n.to_string().as_bytes());
    w.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits, or the same digits repeated in a list.
fn content_length(v: &HeaderValue) -> Option<u64> {
    let mut n = None;
    for part in v.to_str().ok()?.split(',').map(str::trim) {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let p: u64 = part.parse().ok()?;
        if n.is_some_and(|n| n != p) {
            return None;
        }
        n = Some(p);
    }
    n
}

/// Parses the request head at the start of `buf`. A plain request is consumed from `buf`;
/// anything else leaves `buf` as it was.
fn parse(buf: &mut BytesMut) -> Parsed {
    let preface = buf.len().min(H2_PREFACE.len());
    if buf[..preface] == H2_PREFACE[..preface] {
        return if preface < H2_PREFACE.len() {
            Parsed::Partial
        } else {
            Parsed::PassOn
        };
    }
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::PassOn,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::PassOn;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return Parsed::PassOn;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::PassOn;
    };
    let mut spans = Spans::new(buf);
    let target = (spans.offset(path.as_bytes()), path.len());
    let (mut close, mut length_seen) = (false, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if length_seen || h.value != b"0" {
                return Parsed::PassOn;
            }
            length_seen = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::PassOn;
        } else if name.eq_ignore_ascii_case(b"connection") {
            let Ok(v) = std::str::from_utf8(h.value) else {
                return Parsed::PassOn;
            };
            for t in v.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.eq_ignore_ascii_case("upgrade") {
                    return Parsed::PassOn;
                }
            }
        }
        spans.push(h);
    }
    // From here the head is consumed; if the `http` types refuse it after all, it is put
    // back for hyper.
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1));
    // Room for the fields the proxy adds (host, correlation id, forwarded-for).
    let headers = spans.to_map(&head, 3);
    let (Ok(uri), Some(headers)) = (uri, headers) else {
        let mut back = BytesMut::with_capacity(head.len() + buf.len());
        back.extend_from_slice(&head);
        back.extend_from_slice(buf);
        *buf = back;
        return Parsed::PassOn;
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parsed::Plain(Plain { parts, close })
}

/// The socket, with bytes already read from it put back in front (for hyper's server).
struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let p = parse(&mut buf);
        (p, buf)
    }

    fn plain(raw: &[u8]) -> Plain {
        match parsed(raw) {
            (Parsed::Plain(p), _) => p,
            (other, _) => panic!("{other:?} for {:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn a_plain_request_is_parsed_and_consumed() {
        let raw = b"GET /a/b?x=1 HTTP/1.1\r\nHost: orders\r\nX-A: 1\r\nx-a: 2\r\nConnection: keep-alive\r\n\r\nGET /next";
        let (p, rest) = parsed(raw);
        let Parsed::Plain(p) = p else { panic!() };
        assert_eq!(p.parts.method, Method::GET);
        assert_eq!(p.parts.uri, "/a/b?x=1");
        assert_eq!(p.parts.version, Version::HTTP_11);
        assert_eq!(p.parts.headers["host"], "orders");
        assert_eq!(p.parts.headers.get_all("x-a").iter().count(), 2);
        assert!(!p.close);
        assert_eq!(&rest[..], b"GET /next");

        let p =
            plain(b"HEAD / HTTP/1.1\r\nconnection: Keep-Alive, Close\r\ncontent-length: 0\r\n\r\n");
        assert!(p.close);
        assert_eq!(p.parts.method, Method::HEAD);
        let p = plain(b"DELETE /x HTTP/1.1\r\nConnection: x-secret\r\nx-secret: 1\r\n\r\n");
        assert!(!p.close);
    }

    #[test]
    fn what_is_not_plain_is_passed_on_untouched() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0, 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"CONNECT orders:80 HTTP/1.1\r\n\r\n",
            b"GET http://orders/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nx: a\r\n folded\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            H2_PREFACE,
        ] {
            let (p, rest) = parsed(raw);
            assert!(
                matches!(p, Parsed::PassOn),
                "{p:?} for {:?}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(&rest[..], raw);
        }
    }

    #[test]
    fn too_many_fields_are_passed_on() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            raw.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let (p, rest) = parsed(&raw);
        assert!(matches!(p, Parsed::PassOn));
        assert_eq!(&rest[..], &raw[..]);
    }

    #[test]
    fn incomplete_heads_and_preface_prefixes_wait_for_more() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n"[..],
            b"GET / HT",
            b"P",
            b"PRI * HTTP/2.0\r\n",
        ] {
            let (p, rest) = parsed(raw);
            assert!(matches!(p, Parsed::Partial), "{raw:?}");
            assert_eq!(&rest[..], raw);
        }
        // A method that starts like the preface and then differs is an HTTP/1 request.
        assert_eq!(plain(b"PUT / HTTP/1.1\r\n\r\n").parts.method, Method::PUT);
        assert_eq!(
            plain(b"PATCH / HTTP/1.1\r\n\r\n").parts.method,
            Method::PATCH
        );
    }

    #[test]
    fn content_length_values() {
        let v = |s: &'static str| content_length(&HeaderValue::from_static(s));
        assert_eq!(v("12"), Some(12));
        assert_eq!(v("5, 5"), Some(5));
        assert_eq!(v("5, 6"), None);
        assert_eq!(v("-1"), None);
        assert_eq!(v(""), None);
        assert_eq!(v("1 2"), None);
    }
}
