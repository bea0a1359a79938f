//! A self-signed certificate for `localhost`, made by the `openssl` command. Used by the
//! integration tests (`common::tls`) and by dronectl's own unit tests (src/http.rs includes
//! this file), so there is one recipe for both.

use std::path::{Path, PathBuf};

/// Writes `cert.pem` and `key.pem` (EC P-256, 2 days, `CN=localhost`, SAN `DNS:localhost`,
/// not a CA) into `dir`; returns their paths (cert, key).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
