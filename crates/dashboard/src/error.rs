//! What a dashboard request can fail with, and the page each answers.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// No session, or its token was revoked: sign in again.
    #[error("sign in first")]
    SignIn,
    /// Signed in, but this page is not for this kind of session.
    #[error("{0}")]
    Forbidden(String),
    /// Not there, or another tenant's (which is the same answer).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The coordinator could not do it now (no quorum, stopped).
    #[error("{0}")]
    Unavailable(String),
    #[error("rendering {page}: {message}")]
    Render { page: &'static str, message: String },
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let code = match &self {
            DashboardError::SignIn => return Redirect::to("/login").into_response(),
            DashboardError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DashboardError::Render { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if code.is_server_error() {
            tracing::warn!("dashboard: {self}");
        }
        let text = crate::html::escape(&self.to_string());
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>rbk: {code}</title>\
             <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main><h1>{code}</h1>\
             <p role=\"alert\" class=\"error\">{text}</p><p><a href=\"/builds\">Builds</a></p></main></body></html>"
        );
        (code, Html(body)).into_response()
    }
}
