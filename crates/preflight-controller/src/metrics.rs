//! What `/metrics` and `GetStatus` report: fleet counts read from the store at scrape time, and
//! per-method RPC counters and latency histograms kept by a tower layer in front of every route.
//! Encoded by `prometheus-client` in the OpenMetrics text format (which Prometheus scrapes);
//! the method labels are bounded so that made-up paths cannot grow the families.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use preflight_store::{AgentRecord, StoreError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Shared;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// At most this many distinct method labels; further ones count as "other" so that a client
/// sending made-up paths cannot grow the families.
const MAX_METHODS: usize = 128;

/// The one label of the per-request families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// The one label of the per-state gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The one label of the build-info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS_S)
}

/// Counters of the running controller.
pub(crate) struct Metrics {
    /// When the controller started, from its clock.
    pub started_at_ms: i64,
    /// The method labels handed out so far (bounded by [`MAX_METHODS`]).
    methods: Mutex<BTreeSet<String>>,
    requests: Family<MethodLabel, Counter>,
    errors: Family<MethodLabel, Counter>,
    durations: Family<MethodLabel, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new(started_at_ms: i64) -> Self {
        Self {
            started_at_ms,
            methods: Mutex::new(BTreeSet::new()),
            requests: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(latency_histogram),
        }
    }

    fn record(&self, method: &str, elapsed: Duration, error: bool) {
        let label = {
            let mut m = self.methods.lock().unwrap_or_else(|p| p.into_inner());
            if m.contains(method) || m.len() < MAX_METHODS {
                m.insert(method.to_string());
                method.to_string()
            } else {
                "other".to_string()
            }
        };
        let label = MethodLabel { method: label };
        self.requests.get_or_create(&label).inc();
        // Every method gets its error series (at 0) as soon as it is seen.
        let errors = self.errors.get_or_create(&label);
        if error {
            errors.inc();
        }
        self.durations
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition of everything (OpenMetrics text, which Prometheus reads too). The fleet
    /// gauges are made per scrape from what the store holds; the request families live on.
    pub fn render(&self, fleet: &Fleet, version: &str) -> String {
        let mut r = Registry::default();
        let info = Family::<VersionLabel, Gauge>::default();
        info.get_or_create(&VersionLabel {
            version: version.to_string(),
        })
        .set(1);
        r.register(
            "preflight_build_info",
            "Version of the running controller (always 1)",
            info,
        );
        let start = Gauge::<f64, AtomicU64>::default();
        start.set(self.started_at_ms as f64 / 1000.0);
        r.register(
            "preflight_start_time_seconds",
            "Unix time at which the controller started",
            start,
        );
        let agents = Family::<StateLabel, Gauge>::default();
        for (state, n) in [
            ("online", fleet.online),
            ("offline", fleet.offline),
            ("revoked", fleet.revoked),
        ] {
            agents.get_or_create(&state_label(state)).set(i64::from(n));
        }
        r.register(
            "preflight_agents",
            "Enrolled agents by state (offline: no heartbeat within three intervals)",
            agents,
        );
        let outdated = Gauge::<i64>::default();
        outdated.set(fleet.outdated.len() as i64);
        r.register(
            "preflight_agents_outdated",
            "Agents (not revoked) whose version differs from the controller's",
            outdated,
        );
        let sweeps = Family::<StateLabel, Gauge>::default();
        for state in ["running", "finished", "interrupted", "cancelled"] {
            let n = fleet.sweeps.get(state).copied().unwrap_or(0);
            sweeps.get_or_create(&state_label(state)).set(i64::from(n));
        }
        r.register(
            "preflight_sweeps",
            "Stored readiness sweep runs by state",
            sweeps,
        );
        r.register(
            "preflight_rpc_requests",
            "Requests served, by gRPC method or HTTP route",
            self.requests.clone(),
        );
        r.register(
            "preflight_rpc_errors",
            "Requests answered with an error status (gRPC status in the response headers, or HTTP 5xx)",
            self.errors.clone(),
        );
        r.register(
            "preflight_rpc_duration_seconds",
            "Time until the response headers, by gRPC method or HTTP route",
            self.durations.clone(),
        );
        let mut o = String::new();
        // Writing into a String cannot fail; the families are well-formed by construction.
        let _ = prometheus_client::encoding::text::encode(&mut o, &r);
        o
    }
}

fn state_label(state: &str) -> StateLabel {
    StateLabel {
        state: state.to_string(),
    }
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
        let text = m.render(&Fleet::default(), "1");
        let series = text
            .lines()
            .filter(|l| l.starts_with("preflight_rpc_requests_total{"))
            .count();
        assert_eq!(series, MAX_METHODS + 1, "the extra ones share \"other\"");
        assert!(text.contains("preflight_rpc_requests_total{method=\"other\"} 10\n"));
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new(0);
        m.record("a", Duration::from_millis(3), false);
        m.record("a", Duration::from_millis(300), true);
        m.record("a", Duration::from_secs(60), false);
        let text = m.render(&Fleet::default(), "1.2.3");
        for want in [
            "preflight_rpc_duration_seconds_bucket{le=\"0.005\",method=\"a\"} 1",
            "preflight_rpc_duration_seconds_bucket{le=\"0.5\",method=\"a\"} 2",
            "preflight_rpc_duration_seconds_bucket{le=\"30.0\",method=\"a\"} 2",
            "preflight_rpc_duration_seconds_bucket{le=\"+Inf\",method=\"a\"} 3",
            "preflight_rpc_duration_seconds_count{method=\"a\"} 3",
            "preflight_rpc_errors_total{method=\"a\"} 1",
            "preflight_build_info{version=\"1.2.3\"} 1",
            "# TYPE preflight_rpc_duration_seconds histogram",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
