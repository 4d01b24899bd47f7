//! The UI's errors. A handler returns a [`UiError`]; the response it makes carries the
//! status and the message, and the error middleware renders it as an HTML page or, under
//! `/api/`, as JSON `{"error": kind, "message": text}`. Nothing is ever a 5xx but a store
//! that fails to read.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum UiError {
    /// A malformed request: a bad name, pathspec part, cursor, filter or form field.
    #[error("{0}")]
    BadRequest(String),
    /// Something looked for does not exist (the message says what does).
    #[error("{0}")]
    NotFound(String),
    /// The server needs a token and the request has none, or a wrong one.
    #[error("this server needs a token: send `Authorization: Bearer TOKEN`, or open any page once with `?token=TOKEN`")]
    Unauthorized,
    /// A state-changing request without a valid CSRF token, or from another site.
    #[error("{0}")]
    Forbidden(String),
    /// The store could not be read (or written).
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What an error response carries for the middleware to render.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub kind: &'static str,
    pub message: String,
}

impl UiError {
    pub fn status(&self) -> StatusCode {
        match self {
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Unauthorized => StatusCode::UNAUTHORIZED,
            UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            UiError::BadRequest(_) => "bad_request",
            UiError::NotFound(_) => "not_found",
            UiError::Unauthorized => "unauthorized",
            UiError::Forbidden(_) => "forbidden",
            UiError::Store { .. } => "store",
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        UiError::BadRequest(message.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::Store { .. } = &self {
            tracing::error!(error = %self, "braid ui: store read failed");
        }
        let mut r = self.status().into_response();
        r.extensions_mut().insert(ErrorInfo { kind: self.kind(), message: self.to_string() });
        r
    }
}

impl From<braid_client::Error> for UiError {
    fn from(e: braid_client::Error) -> Self {
        use braid_client::Error as E;
        if e.is_not_found() {
            return UiError::NotFound(e.to_string());
        }
        match e {
            E::Invalid(_)
            | E::WrongDepth { .. }
            | E::NotOneTask { .. }
            | E::AmbiguousIndex { .. }
            | E::NotForeach { .. }
            | E::NoForeachLevel { .. } => UiError::BadRequest(e.to_string()),
            E::Store { ref source, .. } if matches!(**source, braid_store::Error::Invalid { .. }) => {
                UiError::BadRequest(e.to_string())
            }
            e => UiError::Store { context: "cannot read the store".to_owned(), source: Box::new(e) },
        }
    }
}

impl From<braid_core::Error> for UiError {
    fn from(e: braid_core::Error) -> Self {
        UiError::BadRequest(e.to_string())
    }
}

impl From<crate::inspect::Error> for UiError {
    fn from(e: crate::inspect::Error) -> Self {
        use crate::inspect::Error as E;
        match e {
            E::Client(c) => c.into(),
            E::Usage(m) => UiError::BadRequest(m),
            E::Failed(m) => UiError::BadRequest(m),
            e => UiError::Store { context: "cannot write to the store".to_owned(), source: Box::new(e) },
        }
    }
}

pub type UiResult<T> = Result<T, UiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_4xx_by_variant() {
        let nf: UiError = braid_client::Error::NoRuns { flow: "f".into() }.into();
        assert_eq!(nf.status(), StatusCode::NOT_FOUND);
        let bad: UiError = braid_core::FlowName::new("../etc").map(|_| ()).unwrap_err().into();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let bad: UiError = braid_client::Error::NotOneTask { step: "f/r/s".into(), count: 3 }.into();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }
}
