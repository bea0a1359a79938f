//! Registry credentials: `DRONECTL_REGISTRY_USERNAME`/`DRONECTL_REGISTRY_PASSWORD`, else the
//! Docker config file's `auths` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
//! Credentials are handed to the engine and never reported or printed.

use std::path::PathBuf;

use base64::Engine as _;
use bollard::auth::DockerCredentials;

/// The registry host of an image repository or registry setting
/// (`127.0.0.1:5000/drone` → `127.0.0.1:5000`).
pub fn registry_host(registry: &str) -> &str {
    let registry = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    registry.split('/').next().unwrap_or(registry)
}

/// Credentials for `registry`, or `None` to push anonymously. Where they came from is
/// returned too (for a note that names the source, never the secret).
pub fn credentials(registry: &str) -> Option<(DockerCredentials, String)> {
    let host = registry_host(registry).to_string();
    if let (Ok(username), Ok(password)) = (
        std::env::var("DRONECTL_REGISTRY_USERNAME"),
        std::env::var("DRONECTL_REGISTRY_PASSWORD"),
    ) {
        return Some((
            DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: Some(host),
                ..Default::default()
            },
            "DRONECTL_REGISTRY_USERNAME/DRONECTL_REGISTRY_PASSWORD".into(),
        ));
    }
    let path = docker_config_path()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = auths
        .iter()
        .find_map(|(key, value)| (registry_host(key) == host).then_some(value))?;
    let mut creds = DockerCredentials {
        serveraddress: Some(host),
        ..Default::default()
    };
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        creds.username = Some(user.to_string());
        creds.password = Some(pass.to_string());
    } else if let Some(token) = entry.get("identitytoken").and_then(|a| a.as_str()) {
        creds.identitytoken = Some(token.to_string());
    } else {
        creds.username = entry.get("username")?.as_str().map(str::to_string);
        creds.password = entry.get("password")?.as_str().map(str::to_string);
    }
    Some((creds, path.display().to_string()))
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(registry_host("127.0.0.1:5000/drone"), "127.0.0.1:5000");
        assert_eq!(
            registry_host("https://registry.example.com/v1/"),
            "registry.example.com"
        );
        assert_eq!(registry_host("ghcr.io"), "ghcr.io");
    }
}
