//! `chorus_http_request_seconds{method, route}`: the API's latency, live
//! (observed by `api::latency` as each response's head is ready).
//!
//! One family for the process: a daemon serves one API. Tests that run
//! several daemons in one process see their requests together.

use std::sync::LazyLock;
use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use chorus_engine::replica::stats::LATENCY_BOUNDS_US;

/// Both labels come from a bounded set: a client cannot grow the number of
/// series (unknown methods are `other`, unknown paths `unmatched`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    method: &'static str,
    /// The route's pattern (`/v1/rooms/{room}`), never the path itself.
    route: String,
}

type Requests = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The engine's buckets (0.5 ms to 30 s), so that API and write latencies
/// read against the same bounds.
fn new_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS_US.iter().map(|&us| us as f64 / 1e6))
}

pub(crate) static REQUESTS: LazyLock<Requests> =
    LazyLock::new(|| Family::new_with_constructor(new_histogram as fn() -> Histogram));

/// The label for `method`: the methods the API routes, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Records one request: `route` is the matched route's pattern (`None`:
/// no route matched).
pub fn observe_request(method: &Method, route: Option<&str>, elapsed: Duration) {
    let labels = RequestLabels {
        method: method_label(method),
        route: route.unwrap_or("unmatched").to_owned(),
    };
    REQUESTS
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&odd), "other");
    }
}
