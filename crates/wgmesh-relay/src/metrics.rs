//! The relay's Prometheus metrics: [`render`] turns the loop's [`Stats`]
//! into the text exposition format, and [`serve`] answers `GET /metrics`
//! with it on the metrics listener (`--metrics-listen`, plain HTTP,
//! loopback by default; anything else is a 404).
//!
//! Every label value comes from a fixed set: the transport a frame was
//! forwarded on (`udp`, `ws`), why one was dropped, what a STUN response
//! was. Nothing a client sends becomes a label.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wgmesh_proto::stun::ResponseKind;

use crate::serve::{Cmd, Stats};

/// STUN responses by (`result`, `version`), in [`Stats::stun_responses`].
const STUN_LABELS: [(&str, &str); 4] = [
    ("success", "rfc8489"),
    ("success", "rfc3489"),
    ("error", "rfc8489"),
    ("error", "rfc3489"),
];

/// Where a STUN response of `kind` is counted in [`Stats::stun_responses`].
pub(crate) fn stun_index(kind: ResponseKind, rfc3489: bool) -> usize {
    let result = match kind {
        ResponseKind::Success => 0,
        _ => 2,
    };
    result + usize::from(rfc3489)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, v: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {v}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// The text exposition format (version 0.0.4) of `s`.
pub fn render(s: &Stats) -> String {
    let c = &s.core;
    let mut out = String::new();
    let one = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        family(out, name, kind, help);
        sample(out, name, "", v);
    };
    one(
        &mut out,
        "wgmesh_relay_members",
        "gauge",
        "Node keys allowed to register (the network's members).",
        s.members as u64,
    );
    one(
        &mut out,
        "wgmesh_relay_registrations",
        "gauge",
        "Nodes registered now, over UDP or WebSocket.",
        s.registered as u64,
    );
    family(
        &mut out,
        "wgmesh_relay_forwarded_packets_total",
        "counter",
        "Packets forwarded, by the transport they went out on.",
    );
    let udp_frames = c.frames_forwarded.saturating_sub(c.frames_forwarded_stream);
    sample(
        &mut out,
        "wgmesh_relay_forwarded_packets_total",
        "transport=\"udp\"",
        udp_frames,
    );
    sample(
        &mut out,
        "wgmesh_relay_forwarded_packets_total",
        "transport=\"ws\"",
        c.frames_forwarded_stream,
    );
    family(
        &mut out,
        "wgmesh_relay_forwarded_bytes_total",
        "counter",
        "Payload bytes forwarded, by the transport they went out on.",
    );
    let udp_bytes = c.bytes_forwarded.saturating_sub(c.bytes_forwarded_stream);
    sample(
        &mut out,
        "wgmesh_relay_forwarded_bytes_total",
        "transport=\"udp\"",
        udp_bytes,
    );
    sample(
        &mut out,
        "wgmesh_relay_forwarded_bytes_total",
        "transport=\"ws\"",
        c.bytes_forwarded_stream,
    );
    family(
        &mut out,
        "wgmesh_relay_dropped_total",
        "counter",
        "Frames dropped, by reason (rate_limited: over the sender's --rate-limit-kbps).",
    );
    for (reason, v) in [
        ("rate_limited", c.dropped_rate_limited),
        ("not_member", c.dropped_not_member),
        ("bad_hello", c.dropped_bad_hello),
        ("not_registered", c.dropped_not_registered),
        ("no_destination", c.dropped_no_destination),
        ("malformed", c.dropped_malformed),
        ("ws_queue_full", s.ws_queue_full),
    ] {
        sample(
            &mut out,
            "wgmesh_relay_dropped_total",
            &format!("reason=\"{reason}\""),
            v,
        );
    }
    one(
        &mut out,
        "wgmesh_relay_hellos_accepted_total",
        "counter",
        "Hellos that registered a node.",
        c.hellos_accepted,
    );
    one(
        &mut out,
        "wgmesh_relay_keepalives_total",
        "counter",
        "Keepalives answered.",
        c.keepalives,
    );
    one(
        &mut out,
        "wgmesh_relay_ws_connections_total",
        "counter",
        "WebSocket connections opened.",
        s.ws_connections,
    );
    one(
        &mut out,
        "wgmesh_relay_udp_ignored_total",
        "counter",
        "UDP datagrams that were neither relay frames nor STUN requests.",
        s.udp_ignored,
    );
    family(
        &mut out,
        "wgmesh_relay_stun_responses_total",
        "counter",
        "STUN Binding responses sent: success, or error (420), to RFC 8489 or RFC 3489 clients.",
    );
    for ((result, version), v) in STUN_LABELS.iter().zip(s.stun_responses) {
        sample(
            &mut out,
            "wgmesh_relay_stun_responses_total",
            &format!("result=\"{result}\",version=\"{version}\""),
            v,
        );
    }
    out
}

/// Serves `GET /metrics` on `listener` until the task is aborted. It
/// holds the loop's command channel weakly, so that it does not keep a
/// stopping relay's loop alive.
pub(crate) async fn serve(listener: TcpListener, cmd: mpsc::Sender<Cmd>) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(cmd.downgrade());
    drop(cmd);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("wgmesh relay: metrics listener: {e}");
    }
}

async fn scrape(State(cmd): State<mpsc::WeakSender<Cmd>>) -> Response {
    let stats = match cmd.upgrade() {
        Some(cmd) => crate::serve::stats(&cmd).await,
        None => Err(anyhow::anyhow!("the relay loop has stopped")),
    };
    match stats {
        Ok(s) => ([("content-type", "text/plain; version=0.0.4")], render(&s)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_forwarding_by_transport_and_labels_are_fixed() {
        let mut s = Stats::default();
        s.core.frames_forwarded = 10;
        s.core.bytes_forwarded = 1000;
        s.core.frames_forwarded_stream = 3;
        s.core.bytes_forwarded_stream = 300;
        s.core.dropped_rate_limited = 4;
        s.stun_responses[stun_index(ResponseKind::UnknownAttribute, true)] = 2;
        let text = render(&s);
        for line in [
            "wgmesh_relay_forwarded_packets_total{transport=\"udp\"} 7",
            "wgmesh_relay_forwarded_packets_total{transport=\"ws\"} 3",
            "wgmesh_relay_forwarded_bytes_total{transport=\"udp\"} 700",
            "wgmesh_relay_forwarded_bytes_total{transport=\"ws\"} 300",
            "wgmesh_relay_dropped_total{reason=\"rate_limited\"} 4",
            "wgmesh_relay_stun_responses_total{result=\"error\",version=\"rfc3489\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }
}
