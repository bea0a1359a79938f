//! Registry credentials, looked up as `docker push` does:
//!
//! 1. `DRONECTL_REGISTRY_USERNAME` / `DRONECTL_REGISTRY_PASSWORD`;
//! 2. the Docker config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!    the registry's `credHelpers` entry, else `credsStore`, run as
//!    `docker-credential-<helper> get` (server address on stdin, JSON
//!    `{ServerURL, Username, Secret}` on stdout), else its `auths` entry (`auth` =
//!    base64 `user:password`, `identitytoken`, or `username`/`password`).
//!
//! A config entry that cannot be used — a helper that is missing, fails or answers
//! nonsense, an `auths` entry that does not decode, a config file that is not JSON — is an
//! [`AuthError`] naming it, never a silent anonymous push. Secrets are handed to the engine
//! only; [`RegistryAuth`]'s `Debug` redacts them and [`RegistryAuth::redact`] scrubs them
//! from any text (an engine error) before it is reported.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use bollard::auth::DockerCredentials;

/// What credential helpers print when they hold nothing for the server
/// (docker-credential-helpers' `ErrCredentialsNotFound`).
const NOT_FOUND: &str = "credentials not found in native keychain";

/// The user name helpers return when `Secret` is an identity token (docker's convention).
const TOKEN_USERNAME: &str = "<token>";

/// The registry host of an image repository or registry setting
/// (`127.0.0.1:5000/drone` → `127.0.0.1:5000`).
pub fn registry_host(registry: &str) -> &str {
    let registry = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    registry.split('/').next().unwrap_or(registry)
}

/// Why the credentials for a registry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the Docker config file {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Docker config file {} is not valid JSON: {source}", path.display())]
    ParseConfig {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} {entry} cannot be used: {why}", path.display())]
    BadEntry {
        path: PathBuf,
        /// `auths["host"]`, `credsStore`, `credHelpers["host"]`.
        entry: String,
        why: String,
    },
    #[error("credential helper `docker-credential-{helper}` ({entry} in {}) {why}", path.display())]
    Helper {
        helper: String,
        path: PathBuf,
        entry: String,
        why: String,
    },
}

/// Credentials for one registry, and where they came from. `Debug` shows the source and
/// the user name, never a secret.
#[derive(Clone)]
pub struct RegistryAuth {
    credentials: DockerCredentials,
    /// Where they came from, for a note (`credHelpers["host"] in ~/.docker/config.json`).
    pub source: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("RegistryAuth")
            .field("source", &self.source)
            .field("username", &self.credentials.username)
            .field("password", &secret(&self.credentials.password))
            .field("identitytoken", &secret(&self.credentials.identitytoken))
            .field("serveraddress", &self.credentials.serveraddress)
            .finish()
    }
}

impl RegistryAuth {
    /// The credentials to hand to the engine (its `X-Registry-Auth` header).
    pub fn docker_credentials(&self) -> DockerCredentials {
        self.credentials.clone()
    }

    /// `text` with every secret of these credentials (and their base64 forms) replaced by
    /// `<redacted>`: for engine and registry messages before they are reported.
    pub fn redact(&self, text: &str) -> String {
        let c = &self.credentials;
        let mut secrets: Vec<String> = [&c.password, &c.identitytoken, &c.registrytoken]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            secrets
                .push(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
        }
        for s in secrets.clone() {
            secrets.push(base64::engine::general_purpose::STANDARD.encode(&s));
        }
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for s in &secrets {
            out = out.replace(s.as_str(), "<redacted>");
        }
        out
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup {
    Found(RegistryAuth),
    /// No credentials: push anonymously. The text says where dronectl looked, for a note.
    Anonymous(String),
}

/// Credentials for `registry` (see the module docs).
pub fn credentials(registry: &str) -> Result<Lookup, AuthError> {
    let host = registry_host(registry).to_string();
    if let (Ok(username), Ok(password)) = (
        std::env::var("DRONECTL_REGISTRY_USERNAME"),
        std::env::var("DRONECTL_REGISTRY_PASSWORD"),
    ) {
        return Ok(Lookup::Found(RegistryAuth {
            credentials: DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: Some(host),
                ..Default::default()
            },
            source: "DRONECTL_REGISTRY_USERNAME/DRONECTL_REGISTRY_PASSWORD".into(),
        }));
    }
    let Some(path) = docker_config_path() else {
        return Ok(Lookup::Anonymous(format!(
            "no credentials for {host}: DRONECTL_REGISTRY_USERNAME/PASSWORD are not set and neither DOCKER_CONFIG nor HOME is"
        )));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Lookup::Anonymous(format!(
                "no credentials for {host}: DRONECTL_REGISTRY_USERNAME/PASSWORD are not set and {} does not exist",
                path.display()
            )))
        }
        Err(source) => return Err(AuthError::ReadConfig { path, source }),
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| AuthError::ParseConfig {
            path: path.clone(),
            source,
        })?;
    from_config(&config, &path, &host)
}

/// The lookup in a parsed Docker config file.
fn from_config(config: &serde_json::Value, path: &Path, host: &str) -> Result<Lookup, AuthError> {
    let bad = |entry: String, why: &str| AuthError::BadEntry {
        path: path.to_path_buf(),
        entry,
        why: why.to_string(),
    };
    let section =
        |name: &str| -> Result<Option<&serde_json::Map<String, serde_json::Value>>, AuthError> {
            match config.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Object(map)) => Ok(Some(map)),
                Some(_) => Err(bad(name.to_string(), "it is not an object")),
            }
        };
    let entry_for = |map: &'_ serde_json::Map<String, serde_json::Value>| {
        map.iter()
            .find(|(key, _)| registry_host(key) == host)
            .map(|(k, v)| (k.clone(), v.clone()))
    };
    if let Some((key, helper)) = section("credHelpers")?.and_then(entry_for) {
        let entry = format!("credHelpers[{key:?}]");
        let helper = helper
            .as_str()
            .ok_or_else(|| bad(entry.clone(), "the helper name is not a string"))?;
        return match run_helper(helper, host, path, &entry)? {
            Some(auth) => Ok(Lookup::Found(auth)),
            None => Err(AuthError::Helper {
                helper: helper.to_string(),
                path: path.to_path_buf(),
                entry,
                why: format!("has no credentials for {host}; log in with `docker login {host}`"),
            }),
        };
    }
    match config.get("credsStore") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(store)) if store.is_empty() => {}
        Some(serde_json::Value::String(store)) => {
            return Ok(
                match run_helper(store, host, path, "credsStore")? {
                    Some(auth) => Lookup::Found(auth),
                    None => Lookup::Anonymous(format!(
                        "no credentials for {host} in credential store `docker-credential-{store}` (credsStore in {})",
                        path.display()
                    )),
                },
            );
        }
        Some(_) => return Err(bad("credsStore".into(), "it is not a string")),
    }
    let Some((key, entry)) = section("auths")?.and_then(entry_for) else {
        return Ok(Lookup::Anonymous(format!(
            "no credentials for {host}: DRONECTL_REGISTRY_USERNAME/PASSWORD are not set and {} has no entry for it",
            path.display()
        )));
    };
    let name = format!("auths[{key:?}]");
    let field = |f: &str| -> Result<Option<String>, AuthError> {
        match entry.get(f) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(name.clone(), &format!("`{f}` is not a string"))),
        }
    };
    let mut credentials = DockerCredentials {
        serveraddress: Some(host.to_string()),
        ..Default::default()
    };
    if let Some(auth) = field("auth")? {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad(name.clone(), "`auth` is not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(name.clone(), "`auth` does not decode to text"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad(name.clone(), "`auth` does not decode to `user:password`"))?;
        credentials.username = Some(user.to_string());
        credentials.password = Some(pass.to_string());
    } else if let Some(token) = field("identitytoken")? {
        credentials.identitytoken = Some(token);
    } else {
        match (field("username")?, field("password")?) {
            (Some(user), Some(pass)) => {
                credentials.username = Some(user);
                credentials.password = Some(pass);
            }
            (None, None) => {
                return Err(bad(
                    name,
                    "it holds no `auth`, `identitytoken` or `username`/`password` (log in again with `docker login`)",
                ))
            }
            _ => return Err(bad(name, "it has only one of `username` and `password`")),
        }
    }
    Ok(Lookup::Found(RegistryAuth {
        credentials,
        source: format!("{name} in {}", path.display()),
    }))
}

/// Runs `docker-credential-<helper> get` for `host`: `Some` credentials, `None` when the
/// helper holds none for it.
fn run_helper(
    helper: &str,
    host: &str,
    path: &Path,
    entry: &str,
) -> Result<Option<RegistryAuth>, AuthError> {
    let fail = |why: String| AuthError::Helper {
        helper: helper.to_string(),
        path: path.to_path_buf(),
        entry: entry.to_string(),
        why,
    };
    // The name becomes part of a program name looked up on PATH: never a path.
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || helper.starts_with('.')
    {
        return Err(fail(
            "is not a valid helper name (letters, digits, `-`, `_`, `.`)".into(),
        ));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(if e.kind() == std::io::ErrorKind::NotFound {
                format!("is not installed: `{program}` is not on PATH")
            } else {
                format!("cannot be run: {e}")
            })
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is reported by its exit status below.
        let _ = stdin.write_all(host.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot be run: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.trim() == NOT_FOUND {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = [stdout.trim(), stderr.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(fail(format!(
            "failed for {host} ({}){}",
            output.status,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        )));
    }
    // Never echo the answer: it holds the secret.
    let credentials = helper_answer(&output.stdout, host).map_err(|()| {
        fail(format!(
            "answered `get` for {host} with something that is not {{\"ServerURL\", \"Username\", \"Secret\"}} JSON"
        ))
    })?;
    Ok(credentials.map(|credentials| RegistryAuth {
        credentials,
        source: format!("{entry} (`{program}`) in {}", path.display()),
    }))
}

/// A helper's answer to `get`: `None` for an empty secret; `Username` `<token>` makes the
/// secret an identity token.
fn helper_answer(stdout: &[u8], host: &str) -> Result<Option<DockerCredentials>, ()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(stdout).map_err(|_| ())?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    let mut credentials = DockerCredentials {
        serveraddress: Some(host.to_string()),
        ..Default::default()
    };
    if answer.username == TOKEN_USERNAME {
        credentials.identitytoken = Some(answer.secret);
    } else {
        credentials.username = Some(answer.username);
        credentials.password = Some(answer.secret);
    }
    Ok(Some(credentials))
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
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

    const HOST: &str = "reg.example:5000";

    fn lookup(config: serde_json::Value) -> Result<Lookup, AuthError> {
        from_config(&config, Path::new("/cfg/config.json"), HOST)
    }

    fn found(config: serde_json::Value) -> DockerCredentials {
        match lookup(config) {
            Ok(Lookup::Found(auth)) => auth.credentials,
            other => panic!("{other:?}"),
        }
    }

    fn error(config: serde_json::Value) -> String {
        match lookup(config) {
            Err(e) => e.to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn auths_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:pa:ss");
        let c =
            found(serde_json::json!({"auths": {"https://reg.example:5000/v1/": {"auth": auth}}}));
        assert_eq!(c.username.as_deref(), Some("ci"));
        assert_eq!(c.password.as_deref(), Some("pa:ss"));
        let c = found(serde_json::json!({"auths": {HOST: {"identitytoken": "tok"}}}));
        assert_eq!(c.identitytoken.as_deref(), Some("tok"));
        assert!(matches!(
            lookup(serde_json::json!({"auths": {"other.example": {"auth": auth}}})),
            Ok(Lookup::Anonymous(_))
        ));
    }

    #[test]
    fn unusable_entries_are_errors_that_name_them() {
        let e = error(serde_json::json!({"auths": {HOST: {"auth": "%%% not base64"}}}));
        assert!(
            e.contains("/cfg/config.json") && e.contains(HOST) && e.contains("base64"),
            "{e}"
        );
        let no_colon = base64::engine::general_purpose::STANDARD.encode("justuser");
        let e = error(serde_json::json!({"auths": {HOST: {"auth": no_colon}}}));
        assert!(e.contains("user:password"), "{e}");
        let e = error(serde_json::json!({"auths": {HOST: {}}}));
        assert!(e.contains("holds no `auth`"), "{e}");
        let e = error(serde_json::json!({"auths": {HOST: {"username": "u"}}}));
        assert!(e.contains("only one"), "{e}");
        let e = error(serde_json::json!({"credsStore": "no-such-helper-dronectl"}));
        assert!(
            e.contains("docker-credential-no-such-helper-dronectl")
                && e.contains("not installed")
                && e.contains("credsStore"),
            "{e}"
        );
        let e = error(serde_json::json!({"credHelpers": {HOST: "../../bin/sh"}}));
        assert!(
            e.contains("not a valid helper name") && e.contains(HOST),
            "{e}"
        );
        let e = error(serde_json::json!({"credsStore": 3}));
        assert!(
            e.contains("credsStore") && e.contains("not a string"),
            "{e}"
        );
    }

    #[test]
    fn helper_answers() {
        let c = helper_answer(br#"{"ServerURL":"h","Username":"u","Secret":"s"}"#, HOST)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some("s"))
        );
        assert_eq!(c.serveraddress.as_deref(), Some(HOST));
        let c = helper_answer(
            br#"{"ServerURL":"h","Username":"<token>","Secret":"t"}"#,
            HOST,
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.username, c.identitytoken.as_deref()), (None, Some("t")));
        assert!(helper_answer(br#"{"Username":"u","Secret":""}"#, HOST)
            .unwrap()
            .is_none());
        assert!(helper_answer(b"user=u secret=s", HOST).is_err());
    }

    #[test]
    fn debug_and_redact_hide_secrets() {
        let auth = RegistryAuth {
            credentials: DockerCredentials {
                username: Some("ci".into()),
                password: Some("hunter2-SECRET".into()),
                identitytoken: Some("idtok-SECRET".into()),
                ..Default::default()
            },
            source: "test".into(),
        };
        let debug = format!("{auth:?}");
        assert!(!debug.contains("SECRET") && debug.contains("ci"), "{debug}");
        let b64 = base64::engine::general_purpose::STANDARD.encode("ci:hunter2-SECRET");
        let text = format!("unauthorized: hunter2-SECRET {b64} idtok-SECRET");
        let redacted = auth.redact(&text);
        assert!(!redacted.contains("SECRET"), "{redacted}");
        assert!(!redacted.contains(&b64), "{redacted}");
    }
}
