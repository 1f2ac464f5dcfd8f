//! The API's error shape, `{code, message}` with a 4xx or 5xx status, and
//! extractors whose rejections answer in that shape (axum's own answer in
//! plain text).

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use chorus_engine::Error as EngineError;

/// An API error: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the replica is shutting down or overloaded",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

pub(crate) fn engine_error(err: EngineError) -> ApiError {
    use EngineError as E;
    let message = err.to_string();
    let (status, code) = match err {
        E::InvalidId(_) | E::Invalid { .. } | E::Automerge(_) => {
            (StatusCode::BAD_REQUEST, "invalid")
        }
        E::ImportTooLarge { .. } | E::DecompressedTooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        }
        E::Refused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
        E::UnknownRoom(_) | E::UnknownSession { .. } | E::UnknownTrack { .. } => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        E::RoomExists(_) => (StatusCode::CONFLICT, "exists"),
        E::RoomEnded(_) | E::RoomPurged(_) => (StatusCode::CONFLICT, "ended"),
        E::DuplicateSession { .. } | E::SessionLeft { .. } => (StatusCode::CONFLICT, "session"),
        E::StaleOwner { .. } => (StatusCode::CONFLICT, "stale_owner"),
        E::OverCapacity { .. } => (StatusCode::CONFLICT, "over_capacity"),
        E::NotPermitted { .. } => (StatusCode::FORBIDDEN, "not_permitted"),
        E::ResumeRefused { .. } => (StatusCode::FORBIDDEN, "resume_refused"),
        E::Stopped(_) | E::Network(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError::new(status, code, message)
}

/// An extractor's rejection as a JSON error, keeping axum's status.
fn rejected(status: StatusCode, message: String) -> ApiError {
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else if status.is_server_error() {
        // A route whose extractor does not fit its path: a bug here.
        "internal"
    } else {
        "invalid"
    };
    ApiError::new(status, code, message)
}

/// JSON bodies whose rejections are `{code, message}` 4xx errors.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// A raw body whose rejections (too large, unreadable) are JSON errors.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// Path parameters whose rejections (a segment that is not UTF-8 once
/// percent-decoded, a number that does not parse) are JSON errors.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// A query string whose rejections (unknown or missing fields, values that
/// do not parse) are JSON errors.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}
