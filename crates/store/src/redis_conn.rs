//! How rbk talks to Redis, shared by everything that may lose it (the
//! existence cache here, the coordinator's build-event fan-out): Redis is
//! an optional speed-up, so a connection must never hang its caller, and a
//! URL's password must never reach a log line.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;

/// `redis://user:password@host/` without the password, for messages.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://<redacted>@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A connection manager that gives up within `timeout` (connect and each
/// response), retries once, and reconnects lazily: Redis down costs at most
/// `timeout` per call, never a stuck build.
pub fn bounded_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(timeout)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("redis://u:hunter2@r:6379/0"), "redis://<redacted>@r:6379/0");
        assert_eq!(redact("redis://:hunter2@cache:6379/0"), "redis://<redacted>@cache:6379/0");
        assert_eq!(redact("redis://r:6379"), "redis://r:6379");
    }
}
