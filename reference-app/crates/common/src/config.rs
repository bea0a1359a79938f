//! Configuration read only from environment variables.
use std::str::FromStr;

/// Read `name`, falling back to `default` when unset or unparsable.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Read a string variable with a default.
pub fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// URL of a dependency `X` from `X_URL` (X upper-cased, `-` -> `_`), trailing `/` removed.
pub fn dependency_url(dep: &str, default: &str) -> String {
    let var = format!("{}_URL", dep.to_ascii_uppercase().replace('-', "_"));
    env_str(&var, default).trim_end_matches('/').to_string()
}

/// Default of `RETENTION_SECS`: three days.
pub const DEFAULT_RETENTION_SECS: u64 = 3 * 24 * 3600;

/// `RETENTION_SECS`: how long a finished delivery's hot state (delivery) and
/// an accepted request's marker (ingestion) are kept before Redis expires
/// them, in milliseconds (at least one second).
pub fn retention_ms() -> u64 {
    env_or("RETENTION_SECS", DEFAULT_RETENTION_SECS).max(1) * 1000
}

/// Whether a boolean flag variable is set to a true value.
pub fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).unwrap_or_default().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_url_uses_upper_snake_case() {
        std::env::set_var("DRONE_SCHED_TEST_URL", "http://x:1/");
        assert_eq!(dependency_url("drone-sched-test", "d"), "http://x:1");
        assert_eq!(dependency_url("missing-dep", "http://m"), "http://m");
    }

    #[test]
    fn retention_defaults_to_three_days() {
        std::env::remove_var("RETENTION_SECS");
        assert_eq!(retention_ms(), 259_200_000);
    }

    #[test]
    fn env_or_falls_back() {
        std::env::set_var("ENV_OR_TEST", "12");
        assert_eq!(env_or("ENV_OR_TEST", 3u32), 12);
        std::env::set_var("ENV_OR_TEST_BAD", "x");
        assert_eq!(env_or("ENV_OR_TEST_BAD", 3u32), 3);
    }
}
