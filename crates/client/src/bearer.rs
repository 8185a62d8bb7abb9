//! The tenant token on a request: every Build call carries it as a bearer
//! credential in the `authorization` header.

use anyhow::Context as _;

/// `msg` with the tenant token as its bearer credential.
pub fn authorized<T>(msg: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().context("the token has characters a header cannot carry")?);
    Ok(r)
}
