//! Load shedding on both real servers: given a tiny in-flight bound (the hidden `--max-inflight` of `serve` and `run`),
//! a flood of concurrent requests over separate TLS connections gets some RESOURCE_EXHAUSTED
//! answers quickly, never another error, and the server serves normally afterwards.

use std::time::{Duration, Instant};

use preflight_proto::v1 as pb;
use preflight_tests::cluster::{Agent, Controller};
use tonic::transport::Channel;

const FLOOD: usize = 48;
const LIMIT: &str = "2";

fn rt() -> tokio::runtime::Runtime {
    preflight_pki::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Counts of a flood's outcomes, and the slowest shed answer.
#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    shed: usize,
    other: Vec<String>,
    slowest_shed: Duration,
}

/// Fires one request per channel at the same moment (the connections are made first) and
/// tallies the answers.
async fn flood<F, Fut>(channels: Vec<Channel>, call: F) -> Outcome
where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(channels.len()));
    let mut tasks = Vec::new();
    for ch in channels {
        let fut = call(ch);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            (fut.await, t.elapsed())
        }));
    }
    let mut o = Outcome::default();
    for t in tasks {
        match t.await.unwrap() {
            (Ok(()), _) => o.ok += 1,
            (Err(s), d) if s.code() == tonic::Code::ResourceExhausted => {
                assert!(s.message().contains("over capacity"), "{s:?}");
                o.shed += 1;
                o.slowest_shed = o.slowest_shed.max(d);
            }
            (Err(s), _) => o.other.push(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    o
}

fn check(what: &str, o: &Outcome) {
    eprintln!("{what}: {o:?}");
    assert!(
        o.other.is_empty(),
        "{what}: unexpected errors {:?}",
        o.other
    );
    assert!(
        o.shed > 0,
        "{what}: nothing shed with {FLOOD} requests over a bound of {LIMIT}: {o:?}"
    );
    assert!(o.ok > 0, "{what}: nothing served: {o:?}");
    assert!(
        o.slowest_shed < Duration::from_secs(2),
        "{what}: shedding must answer at once: {o:?}"
    );
}

#[test]
fn both_servers_shed_load_with_resource_exhausted_and_recover() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s", "--max-inflight", LIMIT]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "shed-1", "127.0.0.41").unwrap();
    a.start_with(&["--max-inflight", LIMIT]).unwrap();
    let agent_addr = ctl.wait_online("shed-1").to_string();

    let ca_pem = std::fs::read_to_string(ctl.data().join("ca.pem")).unwrap();
    let ca = preflight_pki::CertificateAuthority::from_pem(
        &ca_pem,
        &std::fs::read_to_string(ctl.data().join("ca.key")).unwrap(),
    )
    .unwrap();
    let controller_id = ca.issue_controller(&[], Duration::from_secs(600)).unwrap();
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", ctl.admin_token).parse().unwrap();
    let ctl_addr = ctl.addr.to_string();

    rt().block_on(async {
        let to_controller = || async {
            let tls = preflight_pki::client_config(&ca_pem, None).unwrap();
            preflight_pki::transport::connect(
                &ctl_addr,
                tls,
                preflight_pki::controller_server_name(),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
        };
        let to_agent = || async {
            let tls = preflight_pki::client_config(&ca_pem, Some(&controller_id)).unwrap();
            preflight_pki::transport::connect(
                &agent_addr,
                tls,
                preflight_pki::agent_server_name("shed-1").unwrap(),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
        };
        let inventory_via_controller = |ch: Channel| {
            let token = token.clone();
            async move {
                let mut req = tonic::Request::new(pb::GetAgentInventoryRequest {
                    agent_id: "shed-1".into(),
                });
                req.metadata_mut().insert("authorization", token);
                pb::controller_client::ControllerClient::new(ch)
                    .get_agent_inventory(req)
                    .await
                    .map(|_| ())
            }
        };
        let inventory_at_agent = |ch: Channel| async move {
            pb::agent_client::AgentClient::new(ch)
                .get_inventory(pb::GetInventoryRequest {})
                .await
                .map(|_| ())
        };

        // The controller.
        let mut chans = Vec::new();
        for _ in 0..FLOOD {
            chans.push(to_controller().await);
        }
        let o = flood(chans, inventory_via_controller).await;
        check("controller", &o);
        // It recovers: one request at a time is served.
        for _ in 0..3 {
            inventory_via_controller(to_controller().await)
                .await
                .expect("controller serves again after the flood");
        }

        // The agent, called directly with a controller certificate.
        let mut chans = Vec::new();
        for _ in 0..FLOOD {
            chans.push(to_agent().await);
        }
        let o = flood(chans, inventory_at_agent).await;
        check("agent", &o);
        for _ in 0..3 {
            inventory_at_agent(to_agent().await)
                .await
                .expect("agent serves again after the flood");
        }
    });
    // The agent kept heartbeating through it (or caught up right after).
    ctl.wait_online("shed-1");
}
