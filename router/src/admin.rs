//! The admin API (separate port): config, health, metrics, stats, endpoints. Every request
//! must carry `Authorization: Bearer <admin token>`; anything else is 401, before the path
//! is even looked at.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::config::{ConfigError, RouterConfig};
use crate::{Inner, RouterHandle};

/// Largest accepted `PUT /config` body.
const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

pub(crate) async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let authorized = inner
        .admin_token
        .as_ref()
        .is_some_and(|t| t.matches_bearer(req.headers().get(header::AUTHORIZATION)));
    if !authorized {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "the admin API needs the app's admin token (Authorization: Bearer …)".to_string(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"dronectl-router\""),
        );
        return Ok(r);
    }
    let handle = RouterHandle(inner.clone());
    let path = req.uri().path().to_string();
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if inner.draining.load(Relaxed) {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "not ready", "reason": "draining"}),
                )
            } else {
                json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ready", "generation": handle.generation()}),
                )
            }
        }
        (&Method::GET, "/config") => json(StatusCode::OK, &*handle.config()),
        (&Method::PUT, "/config") => put_config(&handle, req).await,
        (&Method::GET, "/stats") => json(StatusCode::OK, &handle.stats()),
        (&Method::GET, "/endpoints") => json(
            StatusCode::OK,
            &serde_json::json!({"generation": handle.generation(), "endpoints": handle.endpoints()}),
        ),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(handle.metrics_text())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, "/healthz" | "/readyz" | "/config" | "/stats" | "/endpoints" | "/metrics") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no admin endpoint {path}")),
    };
    Ok(resp)
}

async fn put_config(handle: &RouterHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_CONFIG_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("could not read config body: {e}"),
            )
        }
    };
    let cfg = match serde_json::from_slice::<RouterConfig>(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                ConfigError::Json(e.to_string()).to_string(),
            )
        }
    };
    match handle.apply(cfg) {
        Ok(generation) => json(
            StatusCode::OK,
            &serde_json::json!({"generation": generation}),
        ),
        Err(e @ (ConfigError::StaleGeneration { .. } | ConfigError::GenerationRequired { .. })) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": msg }))
}
