use std::collections::BTreeMap;

use crate::{ImageError, Result};

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercased).
    pub scheme: String,
    /// Parameters such as `realm`, `service`, `scope` (names lowercased).
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` header value (RFC 7235: one or more
/// challenges, each a scheme followed by comma-separated `name=value` or
/// `name="quoted value"` parameters).
pub fn parse_www_authenticate(header: &str) -> Result<Vec<Challenge>> {
    let _ = header;
    Err(ImageError::invalid("WWW-Authenticate", "not implemented yet"))
}
