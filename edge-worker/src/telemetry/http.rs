//! Signals of the HTTP layer.

use std::time::Duration;

/// A request was answered.
pub(crate) struct RequestCompleted<'a> {
    /// The matched route template, such as `/v1/batch` (bounded).
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub duration: Duration,
}

impl RequestCompleted<'_> {
    pub(crate) fn emit(self) {
        let status = self.status.to_string();
        metrics::counter!(
            "waymark_http_requests_total",
            "route" => self.route.to_owned(),
            "method" => self.method.to_owned(),
            "status" => status,
        )
        .increment(1);
        metrics::histogram!("waymark_http_request_duration_seconds", "route" => self.route.to_owned())
            .record(self.duration.as_secs_f64());
    }
}

/// A 5xx answer, with the internal detail kept out of the body.
pub(crate) struct ServerError<'a> {
    pub route: &'a str,
    pub detail: &'a str,
}

impl ServerError<'_> {
    pub(crate) fn emit(self) {
        tracing::error!(route = self.route, error = %self.detail, "Request failed.");
    }
}
