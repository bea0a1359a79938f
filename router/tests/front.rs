//! The HTTP/1 front end over raw sockets: what it serves itself (pipelining, heads arriving
//! in pieces, `Connection: close`, `HEAD`, the router's own answers, chunked bodies), what
//! it passes on to hyper's server mid-connection (bodies, malformed heads), and shutdown.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that reads responses one by one (several may be in `buf`).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(r: &TestRouter) -> Conn {
        Conn {
            stream: TcpStream::connect(r.data).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).await.unwrap();
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(T, self.stream.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response (its body left out for a `HEAD` request).
    async fn response(&mut self, head_only: bool) -> Raw {
        let (status, headers, at) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(n) = res.parse(&self.buf).unwrap() {
                let headers = res
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (res.code.unwrap(), headers, n);
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        self.buf.drain(..at);
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 {
            return raw;
        }
        if let Some(n) = raw.header("content-length") {
            let n: usize = n.parse().unwrap();
            while self.buf.len() < n {
                assert!(self.fill().await, "connection closed inside a body");
            }
            raw.body = self.buf.drain(..n).collect();
            return raw;
        }
        assert_eq!(raw.header("transfer-encoding"), Some("chunked"), "{raw:?}");
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill().await, "connection closed inside a chunk size");
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap(), 16)
                    .unwrap();
            while self.buf.len() < line_end + 2 + size + 2 {
                assert!(self.fill().await, "connection closed inside a chunk");
            }
            let chunk: Vec<u8> = self.buf.drain(..line_end + 2 + size + 2).collect();
            assert_eq!(&chunk[chunk.len() - 2..], b"\r\n");
            if size == 0 {
                return raw;
            }
            raw.body
                .extend_from_slice(&chunk[line_end + 2..line_end + 2 + size]);
        }
    }

    /// True when the router closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

async fn one_service() -> (Upstream, TestRouter) {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(json!({"services": {
        "orders": svc(&[("v1", 100, vec![a.ep()])]),
    }}))
    .await;
    (a, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (a, r) = one_service().await;
    let mut c = Conn::open(&r).await;
    let mut all = Vec::new();
    for i in 0..5 {
        all.extend_from_slice(&get("orders", &format!("/p{i}")));
    }
    c.send(&all).await;
    for i in 0..5 {
        let res = c.response(false).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, b"a");
        assert_eq!(res.header("x-seen-path"), Some(format!("/p{i}").as_str()));
        assert_eq!(res.header("x-dronectl-version"), Some("v1"));
        // Hop-by-hop fields of the service's response do not reach the client.
        assert_eq!(res.header("keep-alive"), None);
        assert_eq!(res.header("connection"), None);
    }
    assert_eq!(a.hits(), 5);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_arriving_byte_by_byte_is_served() {
    let (_a, r) = one_service().await;
    let mut c = Conn::open(&r).await;
    for b in get("orders", "/slowly") {
        c.send(&[b]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let res = c.response(false).await;
    assert_eq!(
        (res.status, res.header("x-seen-path")),
        (200, Some("/slowly"))
    );
    // And the connection is still good for the next one.
    c.send(&get("orders", "/again")).await;
    assert_eq!(
        c.response(false).await.header("x-seen-path"),
        Some("/again")
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_moves_to_hyper_at_its_first_request_with_a_body() {
    let (a, r) = one_service().await;
    let mut c = Conn::open(&r).await;
    c.send(&get("orders", "/first")).await;
    assert_eq!(
        c.response(false).await.header("x-seen-path"),
        Some("/first")
    );
    // A body (and, in the same write, the request after it): hyper serves both.
    c.send(
        b"POST /body HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\nHost: orders\r\n\r\n",
    )
    .await;
    let res = c.response(false).await;
    assert_eq!((res.status, res.header("x-body-len")), (200, Some("5")));
    assert_eq!(res.header("x-seen-path"), Some("/body"));
    let res = c.response(false).await;
    assert_eq!(
        (res.status, res.header("x-seen-path")),
        (200, Some("/after"))
    );
    // Chunked request bodies too.
    c.send(b"PUT /chunked HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    let res = c.response(false).await;
    assert_eq!((res.status, res.header("x-body-len")), (200, Some("3")));
    assert_eq!(a.hits(), 4);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_and_head_requests() {
    let (_a, r) = one_service().await;
    let mut c = Conn::open(&r).await;
    c.send(b"HEAD /h HTTP/1.1\r\nHost: orders\r\n\r\n").await;
    let res = c.response(true).await;
    assert_eq!(res.status, 200);
    // The service's length of the body it would send; no body follows.
    assert_eq!(res.header("content-length"), Some("1"));
    c.send(b"GET /last HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
        .await;
    let res = c.response(false).await;
    assert_eq!((res.status, res.body.as_slice()), (200, &b"a"[..]));
    assert_eq!(res.header("connection"), Some("close"));
    assert!(
        c.closed().await,
        "the router closes after Connection: close"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_own_answers_are_framed_and_dated() {
    let (_a, r) = one_service().await;
    let mut c = Conn::open(&r).await;
    c.send(&get("nobody", "/x")).await;
    let res = c.response(false).await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(
        res.header("content-length"),
        Some(res.body.len().to_string().as_str())
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&res.body).unwrap(),
        json!({"error": "no route"})
    );
    let date = res.header("date").expect("a date field");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    // A refused path, then a service answer, on the same connection.
    c.send(&get("orders", "/a%2Fb")).await;
    assert_eq!(c.response(false).await.status, 400);
    c.send(&get("orders", "/ok")).await;
    assert_eq!(c.response(false).await.status, 200);
    r.stop().await;
}

/// An upstream that answers every request with `resp`.
async fn fixed_upstream(resp: &'static [u8]) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_service_bodies_reach_the_client_chunked() {
    // Two chunks and a trailer.
    let (ep, task) = fixed_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n").await;
    let r = TestRouter::start(json!({"services": {
        "stream": svc(&[("v1", 100, vec![ep])]),
    }}))
    .await;
    let mut c = Conn::open(&r).await;
    for _ in 0..3 {
        c.send(&get("stream", "/")).await;
        let res = c.response(false).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, b"hello world");
        assert_eq!(res.header("content-length"), None);
    }
    r.stop().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_fields_pass_as_sent_and_the_router_sets_its_own_once() {
    for (resp, correlation) in [
        // Kept raw: written as the service spelled them, its correlation id kept.
        (
            &b"HTTP/1.1 200 OK\r\nX-Mixed-Case: 1\r\nConnection: keep-alive\r\nX-Correlation-Id: from-service\r\nContent-Length: 2\r\n\r\nok"[..],
            Some("from-service"),
        ),
        // A service that sets the router's version field: the router's replaces it.
        (
            b"HTTP/1.1 200 OK\r\nX-Mixed-Case: 1\r\nX-Dronectl-Version: forged\r\nContent-Length: 2\r\n\r\nok",
            None,
        ),
    ] {
        let (ep, task) = fixed_upstream(resp).await;
        let r = TestRouter::start(json!({"services": {
            "fixed": svc(&[("v1", 100, vec![ep])]),
        }}))
        .await;
        let mut c = Conn::open(&r).await;
        for _ in 0..2 {
            c.send(&get("fixed", "/")).await;
            let res = c.response(false).await;
            assert_eq!((res.status, res.body.as_slice()), (200, &b"ok"[..]));
            let count = |n: &str| res.headers.iter().filter(|(h, _)| h == n).count();
            assert_eq!(count("x-dronectl-version"), 1, "{res:?}");
            assert_eq!(res.header("x-dronectl-version"), Some("v1"));
            assert_eq!(count("x-correlation-id"), 1, "{res:?}");
            assert_eq!(count("content-length"), 1, "{res:?}");
            assert_eq!(count("connection"), 0, "{res:?}");
            assert_eq!(res.header("x-mixed-case"), Some("1"));
            assert!(res.header("date").is_some());
            if let Some(id) = correlation {
                assert_eq!(res.header("x-correlation-id"), Some(id));
            }
        }
        r.stop().await;
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_are_refused_and_two_framings_close_the_connection() {
    let (a, r) = one_service().await;
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: orders\r\nbad name: 1\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: orders\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: orders\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let mut c = Conn::open(&r).await;
        c.send(raw).await;
        let res = c.response(false).await;
        assert_eq!(res.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert!(c.closed().await);
    }
    // More fields than the front end parses: hyper's server answers 431.
    let mut many = b"GET / HTTP/1.1\r\nHost: orders\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut c = Conn::open(&r).await;
    c.send(&many).await;
    assert_eq!(c.response(false).await.status, 431);
    assert_eq!(a.hits(), 0, "nothing reached the service");
    // Both framings: the body is read as chunked (Transfer-Encoding wins, RFC 9112 6.3),
    // the request answered, and the connection closed (6.1), so what the client put behind
    // the body under the other framing is never taken as a request.
    for raw in [
        &b"POST /te HTTP/1.1\r\nHost: orders\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: orders\r\n\r\n"[..],
        b"GET /te HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: orders\r\n\r\n",
    ] {
        let mut c = Conn::open(&r).await;
        c.send(raw).await;
        let res = c.response(false).await;
        assert_eq!(res.status, 200, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(res.header("x-seen-path"), Some("/te"));
        assert_eq!(res.header("x-body-len"), Some("0"));
        assert!(c.closed().await, "{:?}", String::from_utf8_lossy(raw));
    }
    assert_eq!(a.hits(), 2, "/smuggled never reached the service");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_finishes_the_request_in_flight() {
    let (_a, mut r) = one_service().await;
    let mut idle = Conn::open(&r).await;
    idle.send(&get("orders", "/warm")).await;
    assert_eq!(idle.response(false).await.status, 200);
    let mut busy = Conn::open(&r).await;
    busy.send(&get("orders", "/slow?ms=500")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let serve = r.begin_stop();
    assert!(
        idle.closed().await,
        "an idle connection is closed on shutdown"
    );
    let res = busy.response(false).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(busy.closed().await);
    tokio::time::timeout(T, serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_abandons_its_request() {
    let (a, r) = one_service().await;
    let mut c = Conn::open(&r).await;
    c.send(&get("orders", "/slow?ms=5000")).await;
    let in_flight = || {
        r.handle
            .endpoints()
            .iter()
            .map(|e| e.in_flight)
            .sum::<u64>()
    };
    let started = std::time::Instant::now();
    while in_flight() == 0 {
        assert!(started.elapsed() < T, "the request never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(c);
    // The router gives the attempt up at once rather than when the service answers.
    while in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "the abandoned request is still in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.hits(), 1);
    // Pipelined bytes that arrive while a request waits are kept for after it.
    let mut c = Conn::open(&r).await;
    c.send(&get("orders", "/slow?ms=200")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&get("orders", "/next")).await;
    assert_eq!(
        c.response(false).await.header("x-seen-path"),
        Some("/slow?ms=200")
    );
    assert_eq!(c.response(false).await.header("x-seen-path"), Some("/next"));
    r.stop().await;
}
