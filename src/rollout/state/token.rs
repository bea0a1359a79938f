//! The router's admin token, kept in the app's state directory.

use std::path::Path;

/// The file, in an app's state directory, holding the admin token of the app's router.
pub const ROUTER_TOKEN_FILE: &str = "router.token";

/// Reads the router admin token kept in `dir`; `None` when there is none. The file is opened
/// without following a symlink and must be a regular file that only its owner can access.
pub fn read_router_token(dir: &Path) -> anyhow::Result<Option<dronectl_router::AdminToken>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = dir.join(ROUTER_TOKEN_FILE);
    let recover = "remove it and run `dronectl up`, which makes a new token and router";
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => anyhow::bail!(
            "{} is a symbolic link; the router token is never read through one ({recover})",
            path.display()
        ),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} must be a regular file that only you can read (mode 0600); {recover}",
            path.display()
        );
    }
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    dronectl_router::AdminToken::new(text.trim_end())
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{} is damaged: {e}; {recover}", path.display()))
}

/// The router admin token kept in `dir`, made when there is none: 32 bytes from the OS
/// random generator as 64 hex digits, written to a 0600 file that appears atomically and
/// never replaces an existing one. Returns the token and whether it was made now.
pub fn ensure_router_token(dir: &Path) -> anyhow::Result<(dronectl_router::AdminToken, bool)> {
    use std::io::Write;
    if let Some(token) = read_router_token(dir)? {
        return Ok((token, false));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the OS random generator failed: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = dronectl_router::AdminToken::new(hex)?;
    // tempfile creates the file 0600 with O_EXCL; persisting never overwrites.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(format!("{}\n", token.expose()).as_bytes())?;
    tmp.as_file().sync_all()?;
    let path = dir.join(ROUTER_TOKEN_FILE);
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok((token, true)),
        // Another dronectl made one in the meantime: use that.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let token = read_router_token(dir)?
                .ok_or_else(|| anyhow::anyhow!("{} vanished", path.display()))?;
            Ok((token, false))
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot write {}: {}",
            path.display(),
            e.error
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_token_is_made_once_private_and_never_read_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(read_router_token(dir.path()).unwrap().is_none());
        let (token, made) = ensure_router_token(dir.path()).unwrap();
        assert!(made);
        assert_eq!(token.expose().len(), 64);
        assert!(token.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        let file = dir.path().join(ROUTER_TOKEN_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, made) = ensure_router_token(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(again, token);
        // Another app's token is different (it is random).
        let other = tempfile::tempdir().unwrap();
        assert_ne!(ensure_router_token(other.path()).unwrap().0, token);

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_router_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("mode 0600"), "{err}");
        assert!(!err.contains(token.expose()));

        std::fs::remove_file(&file).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, format!("{}\n", token.expose())).unwrap();
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let err = read_router_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(ensure_router_token(dir.path()).is_err());
    }
}
