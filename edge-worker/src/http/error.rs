//! The one error shape of the HTTP API.
//!
//! Every 4xx has the body `{"errors":[{"field": …, "problem": …}]}` (ingest
//! adds `index`, `messageId` and `code` per rejected event). A 5xx body
//! never carries internal text: the detail rides in a response extension
//! and is logged by [`log_server_errors`], so `into_response` has no side
//! effects.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::telemetry::http::{RequestCompleted, ServerError};

/// One problem in an error body.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Position of the event in the batch, for per-event errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The event's `messageId`, when it had one.
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The field (or header) at fault.
    pub field: String,
    /// What is wrong and what to do.
    pub problem: String,
    /// Stable reason code, for per-event errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

impl Problem {
    /// A request-level problem.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Problem {
        Problem {
            index: None,
            message_id: None,
            field: field.into(),
            problem: problem.into(),
            code: None,
        }
    }
}

/// An API error: a status and its problems, or an internal failure.
#[derive(Debug)]
pub enum ApiError {
    /// A client error with problems to report.
    Client {
        /// 4xx status.
        status: StatusCode,
        /// What is wrong.
        problems: Vec<Problem>,
        /// Seconds to wait before retrying, for 429/503.
        retry_after: Option<u32>,
    },
    /// The server could not do its part; the detail is logged, not sent.
    Internal {
        /// 5xx status.
        status: StatusCode,
        /// For the log only.
        detail: String,
    },
}

impl ApiError {
    /// A 4xx with one problem.
    #[cold]
    pub fn client(
        status: StatusCode,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> ApiError {
        ApiError::Client {
            status,
            problems: vec![Problem::new(field, problem)],
            retry_after: None,
        }
    }

    /// A 503 the client should retry: the store is unavailable.
    #[cold]
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::Internal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: detail.into(),
        }
    }
}

/// The detail of a 5xx, carried to [`log_server_errors`].
#[derive(Debug, Clone)]
struct InternalDetail(String);

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: &'a [Problem],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client {
                status,
                problems,
                retry_after,
            } => {
                let mut response = (status, Json(ErrorBody { errors: &problems })).into_response();
                if let Some(secs) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", HeaderValue::from(secs));
                }
                response
            }
            ApiError::Internal { status, detail } => {
                let problems = [Problem::new(
                    "server",
                    "temporarily unavailable; retry with backoff",
                )];
                let mut response = (status, Json(ErrorBody { errors: &problems })).into_response();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    response
                        .headers_mut()
                        .insert("retry-after", HeaderValue::from_static("1"));
                }
                response.extensions_mut().insert(InternalDetail(detail));
                response
            }
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    #[cold]
    fn from(e: crate::storage::StorageError) -> Self {
        ApiError::unavailable(e.to_string())
    }
}

/// Logs 5xx details and records request metrics by route and status.
pub async fn log_server_errors(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
        ServerError {
            route: &route,
            detail,
        }
        .emit();
    }
    RequestCompleted {
        route: &route,
        method: &method,
        status: response.status().as_u16(),
        duration: started.elapsed(),
    }
    .emit();
    response
}
