//! Prometheus metrics, in the text exposition format, served on a listener
//! of their own (`--metrics-listen`, loopback by default; [`app`]): nodes
//! (known and online), map messages pushed, enrolment failures, STUN
//! responses and API latency (a histogram by method, route and status
//! class).
//!
//! Every label value comes from a fixed set, so that no request, however
//! made up, can add a series: the method is one of RFC 9110's nine or
//! PATCH, else `other`; the route is the router's template (the matched
//! path, never the request's) or `unmatched`; the status is its class
//! (`1xx`…`5xx`, else `other`).
//!
//! Plain atomics rather than a metrics registry: a bounded set of series,
//! rendered on scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use wgmesh_proto::stun::ResponseKind;

use crate::service::Service;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The `method` label: the methods of RFC 9110 §9 and PATCH (RFC 5789),
/// and `other` for any other token a client sends.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The `code` label: the status class (RFC 9110 §15).
pub fn code_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// STUN responses by (`result`, `version`): success or error, to RFC 8489
/// or RFC 3489 clients.
const STUN_LABELS: [(&str, &str); 4] = [
    ("success", "rfc8489"),
    ("success", "rfc3489"),
    ("error", "rfc8489"),
    ("error", "rfc3489"),
];

#[derive(Debug, Default)]
pub struct Metrics {
    map_pushes: AtomicU64,
    enrolment_failures: AtomicU64,
    /// Indexed as [`STUN_LABELS`].
    stun_responses: [AtomicU64; 4],
    /// (method, route template, status class) → latency; each part from
    /// a fixed set (see the module doc).
    latency: Mutex<BTreeMap<(&'static str, String, &'static str), Histogram>>,
}

impl Metrics {
    pub fn map_pushes(&self, n: usize) {
        self.map_pushes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn enrolment_failed(&self) {
        self.enrolment_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A STUN response went out.
    pub fn stun_answered(&self, kind: ResponseKind, rfc3489: bool) {
        let result = match kind {
            ResponseKind::Success => 0,
            _ => 2,
        };
        let i = result + usize::from(rfc3489);
        self.stun_responses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one API request. `route` is the matched route's template
    /// (`None`: no route matched), which the router bounds; the method
    /// and status are reduced to their labels here.
    pub fn observe(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        took: Duration,
    ) {
        let secs = took.as_secs_f64();
        let key = (
            method_label(method),
            route.unwrap_or(UNMATCHED).to_owned(),
            code_label(status),
        );
        let mut all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.entry(key).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn render(&self, nodes: usize, online: usize) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "wgmesh_nodes",
            "Enrolled nodes.",
            "gauge",
            nodes as u64,
        );
        gauge(
            &mut out,
            "wgmesh_nodes_online",
            "Nodes with a map stream open.",
            "gauge",
            online as u64,
        );
        gauge(
            &mut out,
            "wgmesh_map_pushes_total",
            "Network map messages (full or delta) queued to agents.",
            "counter",
            self.map_pushes.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "wgmesh_enrolment_failures_total",
            "Enrolments refused (bad, expired or used-up setup key, bad request).",
            "counter",
            self.enrolment_failures.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP wgmesh_stun_responses_total STUN Binding responses sent: success, or error (420), to RFC 8489 or RFC 3489 clients.\n# TYPE wgmesh_stun_responses_total counter"
        );
        for ((result, version), n) in STUN_LABELS.iter().zip(&self.stun_responses) {
            let _ = writeln!(
                out,
                "wgmesh_stun_responses_total{{result=\"{result}\",version=\"{version}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wgmesh_api_request_duration_seconds API request latency.\n# TYPE wgmesh_api_request_duration_seconds histogram"
        );
        let all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, code), h) in all.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\",code=\"{code}\"");
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "wgmesh_api_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "wgmesh_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\nwgmesh_api_request_duration_seconds_sum{{{labels}}} {}\nwgmesh_api_request_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
        out
    }
}

/// The metrics listener's app: `GET /metrics`, and 404 for anything
/// else. Plain HTTP: it listens on loopback unless the operator says
/// otherwise (docs/server.md, "Metrics").
pub fn app(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(svc)
}

async fn scrape(State(svc): State<Arc<Service>>) -> impl IntoResponse {
    let (nodes, online) = svc.node_counts().await;
    (
        [("content-type", "text/plain; version=0.0.4")],
        svc.metrics.render(nodes, online),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_sets() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for junk in ["get", "M1", "BREW", "X-ANYTHING"] {
            assert_eq!(
                method_label(&Method::from_bytes(junk.as_bytes()).unwrap()),
                "other"
            );
        }
        assert_eq!(code_label(StatusCode::OK), "2xx");
        assert_eq!(code_label(StatusCode::METHOD_NOT_ALLOWED), "4xx");
        assert_eq!(code_label(StatusCode::from_u16(999).unwrap()), "other");
        let m = Metrics::default();
        for i in 0..100u16 {
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            let status = if i % 2 == 0 { 404 } else { 503 };
            m.observe(
                &method,
                None,
                StatusCode::from_u16(status).unwrap(),
                Duration::ZERO,
            );
        }
        let text = m.render(0, 0);
        let series = text
            .lines()
            .filter(|l| l.starts_with("wgmesh_api_request_duration_seconds"))
            .count();
        // One (other, unmatched, 4xx) and one (other, unmatched, 5xx)
        // histogram: 9 buckets, +Inf, sum and count each.
        assert_eq!(series, 2 * 12, "{text}");
    }
}
