//! The `Date` field of the responses the front end writes when the response has none (the
//! router's own answers: 404, 502, ...), formatted at most once a second per thread, as
//! hyper's server does.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second formatted last, and its text.
    static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn extend(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            c.1 = httpdate::fmt_http_date(now);
            c.0 = secs;
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_an_http_date_of_now() {
        let mut out = Vec::new();
        super::extend(&mut out);
        let text = String::from_utf8(out).unwrap();
        let parsed = httpdate::parse_http_date(&text).unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(age.as_secs() <= 2, "{text}");
        assert!(text.ends_with(" GMT") && text.len() == 29, "{text}");
    }
}
