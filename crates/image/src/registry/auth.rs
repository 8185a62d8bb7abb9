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
/// `name="quoted value"` parameters; quoted values may hold commas, as
/// registries' `scope="repository:a:pull,push"` does).
pub fn parse_www_authenticate(header: &str) -> Result<Vec<Challenge>> {
    let bad = |why: &str| ImageError::invalid(format!("WWW-Authenticate header {header:?}"), why.to_owned());
    let s = header.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t' || s[*i] == b',') {
            *i += 1;
        }
    };
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b);
    loop {
        skip_ws(&mut i);
        if i >= s.len() {
            break;
        }
        // A token: either a new scheme, or a parameter name of the current one.
        let start = i;
        while i < s.len() && is_token(s[i]) {
            i += 1;
        }
        if start == i {
            return Err(bad(&format!("unexpected character at byte {i}")));
        }
        let token = &header[start..i];
        let mut j = i;
        while j < s.len() && s[j] == b' ' {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' && !out.is_empty() && !(j + 1 < s.len() && s[j + 1] == b'=') {
            // name=value
            i = j + 1;
            while i < s.len() && s[i] == b' ' {
                i += 1;
            }
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = String::new();
                loop {
                    match s.get(i) {
                        None => return Err(bad("unterminated quoted value")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if i + 1 < s.len() => {
                            v.push(s[i + 1] as char);
                            i += 2;
                        }
                        Some(_) => {
                            let ch = header[i..].chars().next().expect("inside the string");
                            v.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                v
            } else {
                let vs = i;
                while i < s.len() && s[i] != b',' && s[i] != b' ' {
                    i += 1;
                }
                header[vs..i].to_owned()
            };
            out.last_mut().expect("checked above").params.insert(token.to_ascii_lowercase(), value);
        } else {
            out.push(Challenge { scheme: token.to_ascii_lowercase(), params: BTreeMap::new() });
        }
    }
    if out.is_empty() {
        return Err(bad("no challenge"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_a_comma_in_the_scope() {
        let c = parse_www_authenticate(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["service"], "registry.example");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn several_challenges_and_unquoted_values() {
        let c = parse_www_authenticate(r#"Basic realm="Registry Realm", Bearer realm=https://t/x,service=s"#).unwrap();
        assert_eq!(c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["basic", "bearer"]);
        assert_eq!(c[0].params["realm"], "Registry Realm");
        assert_eq!(c[1].params["realm"], "https://t/x");
        assert_eq!(c[1].params["service"], "s");
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(parse_www_authenticate("").is_err());
        assert!(parse_www_authenticate(r#"Bearer realm="unterminated"#).is_err());
    }
}
