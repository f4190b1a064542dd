//! Prometheus metrics, in the text exposition format at `/metrics`:
//! nodes (known and online), map messages pushed, enrolment failures and
//! API latency (a histogram by route).
//!
//! Plain atomics rather than a metrics registry: a handful of series,
//! rendered on scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    map_pushes: AtomicU64,
    enrolment_failures: AtomicU64,
    stun_responses: AtomicU64,
    /// (method, route template) → latency
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl Metrics {
    pub fn map_pushes(&self, n: usize) {
        self.map_pushes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn enrolment_failed(&self) {
        self.enrolment_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stun_answered(&self) {
        self.stun_responses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe(&self, method: &str, route: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = all
            .entry((method.to_owned(), route.to_owned()))
            .or_default();
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
        gauge(
            &mut out,
            "wgmesh_stun_responses_total",
            "STUN binding responses sent.",
            "counter",
            self.stun_responses.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP wgmesh_api_request_duration_seconds API request latency.\n# TYPE wgmesh_api_request_duration_seconds histogram"
        );
        let all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route), h) in all.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
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
