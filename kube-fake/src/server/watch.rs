//! Watch streams: filters, resumption from a resourceVersion (410 Expired when compacted),
//! bookmarks, timeouts.

use super::*;

pub(super) struct WatchFilter {
    group: String,
    plural: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    meta_only: bool,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        self.labels.matches(&util::labels_of(o)) && self.fields.matches(o)
    }
    fn line(&self, etype: &str, obj: &Value) -> Bytes {
        let obj = if self.meta_only {
            to_partial(obj)
        } else {
            obj.clone()
        };
        let mut s =
            serde_json::to_string(&json!({"type": etype, "object": obj})).unwrap_or_default();
        s.push('\n');
        Bytes::from(s)
    }
    fn render(&self, ev: &WatchEvent) -> Option<Bytes> {
        if ev.group != self.group || ev.plural != self.plural {
            return None;
        }
        if let Some(ns) = &self.ns {
            if &ev.ns != ns {
                return None;
            }
        }
        let new_m = self.matches(&ev.object);
        let etype = match ev.etype {
            "MODIFIED" => {
                let old_m = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (old_m, new_m) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
            t if new_m => t,
            _ => return None,
        };
        Some(self.line(etype, &ev.object))
    }
}

pub(super) struct WatchStream {
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    pending: VecDeque<Bytes>,
    deadline: Option<Instant>,
    filter: WatchFilter,
    done: bool,
}

pub(super) fn expired_line(msg: &str) -> Bytes {
    let e = ApiError::new(410, "Expired", msg.to_string());
    let mut s = serde_json::to_string(&json!({"type": "ERROR", "object": e.status_json()}))
        .unwrap_or_default();
    s.push('\n');
    Bytes::from(s)
}

pub(super) fn watch(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    rt: &ResourceType,
    ns: Option<String>,
) -> Response {
    let (labels, fields) = match selectors(ctx) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let filter = WatchFilter {
        group: rt.group.clone(),
        plural: rt.plural.clone(),
        ns: ns.clone(),
        labels,
        fields,
        meta_only: ctx.meta_only(),
    };
    let send_initial = ctx.q("sendInitialEvents") == Some("true");
    let bookmarks = ctx.q("allowWatchBookmarks") == Some("true");
    let rv_param = ctx.q("resourceVersion").unwrap_or("").to_string();
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0);
    let mut pending = VecDeque::new();
    let mut done = false;
    let st = sh.lock();
    let rx = st.tx.subscribe();
    if send_initial || rv_param.is_empty() || rv_param == "0" {
        for o in st.list(rt, ns.as_deref()) {
            if filter.matches(&o) {
                pending.push_back(filter.line("ADDED", &o));
            }
        }
        if send_initial && bookmarks {
            let bm = json!({
                "kind": rt.kind, "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
            });
            let mut s = serde_json::to_string(&json!({"type": "BOOKMARK", "object": bm}))
                .unwrap_or_default();
            s.push('\n');
            pending.push_back(Bytes::from(s));
        }
    } else {
        let Ok(from) = rv_param.parse::<u64>() else {
            return error_response(&ApiError::bad_request(format!(
                "invalid resourceVersion {rv_param:?}"
            )));
        };
        if from < st.history_floor {
            pending.push_back(expired_line(&format!(
                "too old resource version: {from} ({})",
                st.history_floor + 1
            )));
            done = true;
        } else {
            for ev in st.history.iter().filter(|e| e.rv > from) {
                if let Some(l) = filter.render(ev) {
                    pending.push_back(l);
                }
            }
        }
    }
    drop(st);
    let state = WatchStream {
        rx,
        pending,
        deadline: timeout.map(|t| Instant::now() + std::time::Duration::from_secs(t)),
        filter,
        done,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(b), s));
            }
            if s.done {
                return None;
            }
            let far = Instant::now() + std::time::Duration::from_secs(365 * 24 * 3600);
            let deadline = s.deadline.unwrap_or(far);
            tokio::select! {
                r = s.rx.recv() => match r {
                    Ok(ev) => {
                        if let Some(l) = s.filter.render(&ev) {
                            s.pending.push_back(l);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        s.pending.push_back(expired_line("watch channel lagged; too old resource version"));
                        s.done = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
