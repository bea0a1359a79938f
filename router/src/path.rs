//! Request paths are normalised before routing, so that what the router matches against the
//! public routes is exactly what the service receives: `/api/public/../internal` cannot
//! reach `/api/internal` behind a route that only publishes `/api/public`.
//!
//! RFC 3986 normalisation: percent-encoded unreserved characters are decoded (6.2.2.2, so
//! `%2e%2e` is `..`), empty segments are merged (`//` → `/`) and dot-segments are removed
//! (5.2.4 `remove_dot_segments`; `..` above the root stays at the root). Refused (400):
//! a path that does not start with `/`, an encoded `/` or `\` (`%2F`, `%5C`), a literal `\`,
//! an encoded control character (`%00`–`%1F`, `%7F`), a malformed escape, and a segment that
//! is a dot-segment followed by parameters (`..;x`, `.;x`), which some servers treat as a
//! dot-segment.

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path contains an encoded '/' or '\\', or a '\\'")]
    Separator,
    #[error("the request path contains an encoded control character")]
    Control,
    #[error("the request path contains a malformed percent-escape")]
    BadEscape,
    #[error("the request path contains a dot-segment with parameters")]
    DotParameters,
}

/// The normalised form of `path`, or `None` when it is normal already (the common case,
/// which allocates nothing).
pub(crate) fn normalize(path: &str) -> Result<Option<String>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // One pass over the bytes: a path without `%`, `\\`, `//` or any `.` is in normal form
    // (most are); one with a `.` is checked segment by segment.
    let bytes = path.as_bytes();
    let mut dot = false;
    let mut odd = false;
    let mut prev = 0u8;
    for &c in bytes {
        dot |= c == b'.';
        odd |= c == b'%' || c == b'\\' || (c == b'/' && prev == b'/');
        prev = c;
    }
    let plain = !odd && (!dot || path.split('/').all(|s| !is_dot_like(s)));
    if plain {
        return Ok(None);
    }
    let decoded = decode_unreserved(path)?;
    let mut out: Vec<&str> = Vec::new();
    let mut segments = decoded.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(PathError::DotParameters)
            }
            s => out.push(s),
        }
        if last {
            trailing_slash = matches!(segment, "" | "." | "..");
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    Ok((normal != path).then_some(normal))
}

fn is_dot_like(segment: &str) -> bool {
    segment == "." || segment == ".." || segment.starts_with(".;") || segment.starts_with("..;")
}

/// Decodes `%XX` of unreserved characters, keeps other escapes (upper-cased), refuses
/// escapes of separators and control characters, and a literal `\`.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Separator),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
                let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(PathError::BadEscape);
                }
                match value {
                    b'/' | b'\\' => return Err(PathError::Separator),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                        out.push(char::from(c))
                    }
                    c => {
                        out.push('%');
                        out.push_str(&format!("{c:02X}"));
                    }
                }
                i += 3;
            }
            _ => {
                // The path is a `&str`: copy the whole UTF-8 sequence that starts here.
                let len = path[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&path[i..i + len]);
                i += len;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(|o| o.unwrap_or_else(|| p.to_string()))
    }

    #[test]
    fn normal_paths_are_left_alone() {
        for p in ["/", "/api/orders", "/api/orders/", "/a/b.c/..x/.x", "/x?y"] {
            assert_eq!(normalize(p), Ok(None), "{p}");
        }
    }

    #[test]
    fn removes_dot_segments_and_merges_slashes() {
        let cases = [
            ("/api/x/../internal", "/api/internal"),
            ("/api/x/./y", "/api/x/y"),
            ("/api/x/..", "/api/"),
            ("/api/x/.", "/api/x/"),
            ("/..", "/"),
            ("/../../etc", "/etc"),
            ("//api//x", "/api/x"),
            ("/api/x/", "/api/x/"),
            ("/api/%2e%2e/internal", "/internal"),
            ("/api/x/%2E%2e/y", "/api/y"),
            ("/api/x/.%2e/y", "/api/y"),
            ("/api/%7Euser/%41", "/api/~user/A"),
            ("/api/a%20b", "/api/a%20b"),
            ("/api/a%3f", "/api/a%3F"),
            ("/api/é/../x", "/api/x"),
        ];
        for (input, want) in cases {
            assert_eq!(n(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn refuses_ambiguous_paths() {
        let cases = [
            ("*", PathError::NotAbsolute),
            ("api", PathError::NotAbsolute),
            ("/api/x%2f..%2finternal", PathError::Separator),
            ("/api/x%5C..", PathError::Separator),
            ("/api\\..\\x", PathError::Separator),
            ("/api/%00", PathError::Control),
            ("/api/%7f", PathError::Control),
            ("/api/%2", PathError::BadEscape),
            ("/api/%zz", PathError::BadEscape),
            ("/api/%+1", PathError::BadEscape),
            ("/api/..;/internal", PathError::DotParameters),
            ("/api/.;x/y", PathError::DotParameters),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), Err(want), "{input}");
        }
    }
}
