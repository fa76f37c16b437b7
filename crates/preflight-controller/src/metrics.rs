//! What `/metrics` and `GetStatus` report: fleet counts read from the store at scrape time, and
//! per-method RPC counters and latency histograms kept by a tower layer in front of every route.
//! Small on purpose: a mutex around a bounded map, rendered in the Prometheus text format
//! (version 0.0.4) by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use preflight_store::{AgentRecord, StoreError};

use crate::Shared;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// At most this many distinct method labels; further ones count as "other" so that a client
/// sending made-up paths cannot grow the map.
const MAX_METHODS: usize = 128;

#[derive(Default, Clone)]
struct MethodStats {
    count: u64,
    errors: u64,
    buckets: [u64; BUCKETS_S.len()],
    sum_s: f64,
}

/// Counters of the running controller.
pub(crate) struct Metrics {
    /// When the controller started, from its clock.
    pub started_at_ms: i64,
    methods: Mutex<BTreeMap<String, MethodStats>>,
}

impl Metrics {
    pub fn new(started_at_ms: i64) -> Self {
        Self {
            started_at_ms,
            methods: Mutex::new(BTreeMap::new()),
        }
    }

    fn record(&self, method: &str, elapsed: Duration, error: bool) {
        let mut m = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        let key = if m.contains_key(method) || m.len() < MAX_METHODS {
            method
        } else {
            "other"
        };
        let s = m.entry(key.to_string()).or_default();
        let secs = elapsed.as_secs_f64();
        s.count += 1;
        s.errors += u64::from(error);
        s.sum_s += secs;
        for (b, le) in s.buckets.iter_mut().zip(BUCKETS_S) {
            if secs <= le {
                *b += 1;
            }
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, fleet: &Fleet, version: &str) -> String {
        let mut o = String::new();
        family(
            &mut o,
            "preflight_build_info",
            "gauge",
            "Version of the running controller (always 1).",
        );
        let _ = writeln!(
            o,
            "preflight_build_info{{version=\"{}\"}} 1",
            escape(version)
        );
        family(
            &mut o,
            "preflight_start_time_seconds",
            "gauge",
            "Unix time at which the controller started.",
        );
        let _ = writeln!(
            o,
            "preflight_start_time_seconds {}",
            self.started_at_ms as f64 / 1000.0
        );
        family(
            &mut o,
            "preflight_agents",
            "gauge",
            "Enrolled agents by state (offline: no heartbeat within three intervals).",
        );
        for (state, n) in [
            ("online", fleet.online),
            ("offline", fleet.offline),
            ("revoked", fleet.revoked),
        ] {
            let _ = writeln!(o, "preflight_agents{{state=\"{state}\"}} {n}");
        }
        family(
            &mut o,
            "preflight_agents_outdated",
            "gauge",
            "Agents (not revoked) whose version differs from the controller's.",
        );
        let _ = writeln!(o, "preflight_agents_outdated {}", fleet.outdated.len());
        family(
            &mut o,
            "preflight_sweeps",
            "gauge",
            "Stored readiness sweep runs by state.",
        );
        for state in ["running", "finished", "interrupted", "cancelled"] {
            let n = fleet.sweeps.get(state).copied().unwrap_or(0);
            let _ = writeln!(o, "preflight_sweeps{{state=\"{state}\"}} {n}");
        }

        let methods = self
            .methods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        family(
            &mut o,
            "preflight_rpc_requests_total",
            "counter",
            "Requests served, by gRPC method or HTTP route.",
        );
        for (m, s) in &methods {
            let _ = writeln!(
                o,
                "preflight_rpc_requests_total{{method=\"{}\"}} {}",
                escape(m),
                s.count
            );
        }
        family(
            &mut o,
            "preflight_rpc_errors_total",
            "counter",
            "Requests answered with an error status (gRPC status in the response headers, or HTTP 5xx).",
        );
        for (m, s) in &methods {
            let _ = writeln!(
                o,
                "preflight_rpc_errors_total{{method=\"{}\"}} {}",
                escape(m),
                s.errors
            );
        }
        family(
            &mut o,
            "preflight_rpc_duration_seconds",
            "histogram",
            "Time until the response headers, by gRPC method or HTTP route.",
        );
        for (m, s) in &methods {
            let m = escape(m);
            for (le, n) in BUCKETS_S.iter().zip(s.buckets) {
                let _ = writeln!(
                    o,
                    "preflight_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                o,
                "preflight_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                o,
                "preflight_rpc_duration_seconds_sum{{method=\"{m}\"}} {}",
                s.sum_s
            );
            let _ = writeln!(
                o,
                "preflight_rpc_duration_seconds_count{{method=\"{m}\"}} {}",
                s.count
            );
        }
        o
    }
}

/// The HELP and TYPE lines of a metric family.
fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The label for a request path: `preflight.v1.Service/Method` for gRPC, the route for HTTP.
fn label(path: &str) -> String {
    if let Some(rpc) = path.strip_prefix("/preflight.v1.") {
        let ok = rpc.len() <= 80
            && rpc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_');
        if ok {
            return format!("preflight.v1.{rpc}");
        }
        return "other".into();
    }
    match path {
        "/install.sh" | "/metrics" | "/healthz" | "/ca.pem" => path.into(),
        p if p.starts_with("/agent/") => "/agent/*".into(),
        _ => "other".into(),
    }
}

/// The fleet as `preflight status` and `/metrics` show it.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    /// Enrolled, not revoked.
    pub total: u32,
    pub online: u32,
    pub offline: u32,
    pub revoked: u32,
    /// (agent id, reported version) of agents not on the controller's version.
    pub outdated: Vec<(String, String)>,
    /// Stored sweep runs by state (`running`, `finished`, `interrupted`, `cancelled`).
    pub sweeps: BTreeMap<String, u32>,
}

/// Is the agent online: not revoked and heard from within three heartbeat intervals?
pub(crate) fn is_online(shared: &Shared, a: &AgentRecord, now_ms: i64) -> bool {
    let offline_after = 3 * shared.cfg.heartbeat_interval.as_millis() as i64;
    !a.revoked && a.last_heartbeat_ms > 0 && now_ms - a.last_heartbeat_ms <= offline_after
}

/// Does the agent run another version than the controller?
pub(crate) fn is_outdated(a: &AgentRecord) -> bool {
    !a.revoked && a.version != crate::VERSION
}

/// Counts the fleet and the sweep runs from the store (both bounded by what the store holds).
pub(crate) fn fleet(shared: &Shared) -> Result<Fleet, StoreError> {
    let now = shared.now_ms();
    let mut f = Fleet::default();
    for a in shared.store.agents()? {
        if a.revoked {
            f.revoked += 1;
            continue;
        }
        f.total += 1;
        if is_online(shared, &a, now) {
            f.online += 1;
        } else {
            f.offline += 1;
        }
        if is_outdated(&a) {
            f.outdated.push((a.id.clone(), a.version.clone()));
        }
    }
    for r in shared.store.sweeps(None)? {
        if let Some(n) = f.sweeps.get_mut(&r.state) {
            *n += 1;
        } else if f.sweeps.len() < 8 {
            f.sweeps.insert(r.state, 1);
        }
    }
    Ok(f)
}

/// Counts every request by method and times it until its response headers.
#[derive(Clone)]
pub(crate) struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsSvc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsSvc {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone)]
pub(crate) struct MetricsSvc<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsSvc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFut<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = label(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let r = fut.await;
            let error = match &r {
                Ok(resp) => {
                    resp.status().is_server_error()
                        || resp
                            .headers()
                            .get("grpc-status")
                            .is_some_and(|v| v.as_bytes() != b"0")
                }
                Err(_) => true,
            };
            metrics.record(&method, start.elapsed(), error);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            label("/preflight.v1.Controller/ListAgents"),
            "preflight.v1.Controller/ListAgents"
        );
        assert_eq!(label("/preflight.v1.X/a\"b"), "other");
        assert_eq!(label("/agent/linux-x86_64.sha256"), "/agent/*");
        assert_eq!(label("/etc/passwd"), "other");
        let m = Metrics::new(0);
        for i in 0..(MAX_METHODS + 10) {
            m.record(&format!("m{i}"), Duration::from_millis(1), false);
        }
        let map = m.methods.lock().unwrap();
        assert_eq!(map.len(), MAX_METHODS + 1, "the extra ones share \"other\"");
        assert_eq!(map["other"].count, 10);
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new(0);
        m.record("a", Duration::from_millis(3), false);
        m.record("a", Duration::from_millis(300), true);
        m.record("a", Duration::from_secs(60), false);
        let text = m.render(&Fleet::default(), "1.2.3");
        assert!(text.contains("preflight_rpc_duration_seconds_bucket{method=\"a\",le=\"0.005\"} 1"));
        assert!(text.contains("preflight_rpc_duration_seconds_bucket{method=\"a\",le=\"0.5\"} 2"));
        assert!(text.contains("preflight_rpc_duration_seconds_bucket{method=\"a\",le=\"30\"} 2"));
        assert!(text.contains("preflight_rpc_duration_seconds_bucket{method=\"a\",le=\"+Inf\"} 3"));
        assert!(text.contains("preflight_rpc_errors_total{method=\"a\"} 1"));
        assert!(text.contains("preflight_build_info{version=\"1.2.3\"} 1"));
    }
}
