//! The admin token: the shared secret that every admin API call must carry
//! (`Authorization: Bearer <token>`), and that unlocks `x-dronectl-version` on the public
//! data port (`x-dronectl-token: <token>`).
//!
//! Presented tokens are compared in constant time; the token never appears in `Debug`
//! output or in any error message.

use std::path::Path;

use subtle::ConstantTimeEq;

/// Fewest characters a token may have (dronectl makes 64 hex digits: 32 random bytes).
pub const MIN_TOKEN_LEN: usize = 32;
/// Most characters a token may have.
pub const MAX_TOKEN_LEN: usize = 1024;

/// A validated admin token.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why a token was refused (the message never contains the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the admin token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} visible ASCII characters (it has {0} characters)")]
    Length(usize),
    #[error(
        "the admin token must be visible ASCII characters only (no spaces or control characters)"
    )]
    Characters,
    #[error("cannot read the admin token file {path}: {reason}")]
    File { path: String, reason: String },
}

impl AdminToken {
    /// Checks the shape: `MIN_TOKEN_LEN..=MAX_TOKEN_LEN` visible ASCII characters.
    pub fn new(token: impl Into<String>) -> Result<AdminToken, TokenError> {
        let token = token.into();
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
            return Err(TokenError::Length(token.len()));
        }
        if !token.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(TokenError::Characters);
        }
        Ok(AdminToken(token))
    }

    /// Reads a token file (one line; a trailing newline is ignored).
    pub fn from_file(path: &Path) -> Result<AdminToken, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        AdminToken::new(line.strip_suffix('\r').unwrap_or(line))
    }

    /// The token itself, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub(crate) fn matches_bearer(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(value) = header else {
            return false;
        };
        let bytes = value.as_bytes();
        let scheme = b"bearer ";
        if bytes.len() < scheme.len() || !bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return false;
        }
        self.matches(bytes[scheme.len()..].trim_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const T: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn validates_shape_without_echoing_the_token() {
        assert!(AdminToken::new(T).is_ok());
        assert_eq!(AdminToken::new("short"), Err(TokenError::Length(5)));
        let spaced = format!("{T} x");
        let err = AdminToken::new(spaced.clone()).unwrap_err().to_string();
        assert!(!err.contains(&spaced));
        assert_eq!(
            format!("{:?}", AdminToken::new(T).unwrap()),
            "AdminToken(<redacted>)"
        );
    }

    #[test]
    fn bearer_header_must_carry_exactly_the_token() {
        let t = AdminToken::new(T).unwrap();
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(t.matches_bearer(Some(&h(&format!("Bearer {T}")))));
        assert!(t.matches_bearer(Some(&h(&format!("bearer  {T} ")))));
        assert!(!t.matches_bearer(None));
        assert!(!t.matches_bearer(Some(&h(T))));
        assert!(!t.matches_bearer(Some(&h(&format!("Basic {T}")))));
        assert!(!t.matches_bearer(Some(&h(&format!("Bearer {T}0")))));
        assert!(!t.matches_bearer(Some(&h(&format!("Bearer {}", &T[1..])))));
        assert!(!t.matches_bearer(Some(&h("Bearer "))));
    }

    #[test]
    fn reads_a_token_file() {
        let dir = std::env::temp_dir().join(format!("router-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, format!("{T}\n")).unwrap();
        assert!(AdminToken::from_file(&file).unwrap().matches(T.as_bytes()));
        std::fs::write(&file, "x\n").unwrap();
        assert_eq!(AdminToken::from_file(&file), Err(TokenError::Length(1)));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            AdminToken::from_file(&file),
            Err(TokenError::File { .. })
        ));
    }
}
