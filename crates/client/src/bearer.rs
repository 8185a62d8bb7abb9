//! The tenant token on a request: every Build call carries it as a bearer
//! credential in the `authorization` header.

use crate::error::BadToken;

/// `msg` with the tenant token as its bearer credential.
pub fn authorized<T>(msg: T, token: &str) -> Result<tonic::Request<T>, BadToken> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().map_err(|_| BadToken)?);
    Ok(r)
}
