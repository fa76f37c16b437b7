//! The security model end to end, with the real binaries: who an agent accepts, what a join
//! token allows, what a wrong CA pin or a revoked agent gets, and certificate renewal.

use std::path::Path;
use std::time::{Duration, SystemTime};

use preflight_pki::{CertificateAuthority, Identity};
use preflight_proto::v1 as pb;
use preflight_tests::cluster::{enroll_cmd, eventually, Agent, Controller};
use preflight_tests::grpc::{agent_channel, ca_of, controller_channel, rt};

type CallError = (Option<tonic::Code>, String);

/// Calls GetInventory on the agent at `addr` as `who`; Err carries the failure.
fn call_agent(
    addr: &str,
    ca_pem: &str,
    who: Option<&Identity>,
    agent_id: &str,
) -> Result<(), CallError> {
    rt().block_on(async {
        let ch = agent_channel(addr, ca_pem, who, agent_id)
            .await
            .map_err(|e| (None, format!("{e:?}")))?;
        let mut c = pb::agent_client::AgentClient::new(ch);
        c.get_inventory(pb::GetInventoryRequest {})
            .await
            .map(|_| ())
            .map_err(|s| (Some(s.code()), s.message().to_string()))
    })
}

#[test]
fn agent_accepts_only_the_controller_certificate() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "sec-1", "127.0.0.21").unwrap();
    a.start().unwrap();
    let addr = ctl.wait_online("sec-1").to_string();
    let ca = ca_of(&ctl);
    let ca_pem = ca.cert_pem().to_string();

    // Positive control: a controller certificate from our CA is served.
    let good = ca.issue_controller(&[], Duration::from_secs(600)).unwrap();
    call_agent(&addr, &ca_pem, Some(&good), "sec-1").expect("controller certificate accepted");

    // No client certificate.
    call_agent(&addr, &ca_pem, None, "sec-1").expect_err("no client certificate refused");

    // A controller certificate from another CA.
    let other = CertificateAuthority::generate("other").unwrap();
    let foreign = other
        .issue_controller(&[], Duration::from_secs(600))
        .unwrap();
    call_agent(&addr, &ca_pem, Some(&foreign), "sec-1").expect_err("foreign CA refused");

    // An expired controller certificate from our CA.
    let past = SystemTime::now() - Duration::from_secs(3 * 3600);
    let expired = ca
        .issue_controller_at(&[], past, Duration::from_secs(3600))
        .unwrap();
    call_agent(&addr, &ca_pem, Some(&expired), "sec-1").expect_err("expired certificate refused");

    // A valid agent-role certificate from our CA: authenticated, but not allowed.
    let e = call_agent(&addr, &ca_pem, Some(&a.identity().unwrap()), "sec-1").unwrap_err();
    assert_eq!(e.0, Some(tonic::Code::PermissionDenied), "{e:?}");
    assert!(e.1.contains("only the controller"), "{e:?}");

    // The server name is checked too: this agent cannot pass for another one.
    call_agent(&addr, &ca_pem, Some(&good), "sec-2").expect_err("agent verified by its id");
}

fn no_enrollment_written(state: &Path) {
    assert!(
        !state.join("agent.toml").exists(),
        "agent.toml written in {}",
        state.display()
    );
    assert!(
        !state.join("identity.pem").exists(),
        "identity written in {}",
        state.display()
    );
}

#[test]
fn join_token_works_once_and_not_after_ttl_and_pin_is_checked() {
    // The dev clock moves time past the token's TTL: no waiting on the wall clock.
    let ctl = Controller::start(&["--dev-clock"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let token = ctl.join_token("10m").unwrap();
    let enroll = |name: &str, token: &str, pin: &str| {
        let state = base.path().join(name);
        let o = enroll_cmd(&[
            "--controller",
            &ctl.url,
            "--token",
            token,
            "--ca-sha256",
            pin,
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
        (o, state)
    };
    let (o, state) = enroll("tok-a", &token, &ctl.pin);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(state.join("agent.toml").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.join("identity.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "private key file mode");

    let (o, state) = enroll("tok-b", &token, &ctl.pin);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("already used"), "{err}");
    no_enrollment_written(&state);

    let short = ctl.join_token("1m").unwrap();
    ctl.run(&["dev", "clock", "advance", "61s"]).unwrap();
    let (o, state) = enroll("tok-c", &short, &ctl.pin);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("expired"), "{err}");
    no_enrollment_written(&state);

    let fresh = ctl.join_token("10m").unwrap();
    let wrong_pin = CertificateAuthority::generate("x").unwrap().pin();
    let (o, state) = enroll("tok-d", &fresh, &wrong_pin);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("CA pin mismatch") && err.contains(&ctl.pin) && err.contains(&wrong_pin),
        "{err}"
    );
    no_enrollment_written(&state);
    // The pin mismatch stopped before the token was sent: it still works.
    let (o, _) = enroll("tok-d", &fresh, &ctl.pin);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn revoked_agent_is_refused_by_the_controller() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "rev-1", "127.0.0.22").unwrap();
    a.start().unwrap();
    ctl.wait_online("rev-1");
    ctl.run(&["inventory", "rev-1"])
        .expect("inventory before revocation");
    ctl.run(&["agents", "revoke", "rev-1"]).unwrap();

    // Its own certificate no longer gets it anywhere at the controller.
    let id = a.identity().unwrap();
    let r = rt().block_on(async {
        let ch = controller_channel(&ctl, Some(&id)).await.unwrap();
        pb::registry_client::RegistryClient::new(ch)
            .heartbeat(pb::HeartbeatRequest {
                agent_version: "x".into(),
                listen_addr: "127.0.0.22:1".into(),
                ..Default::default()
            })
            .await
    });
    let s = r.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    assert!(s.message().contains("revoked"), "{}", s.message());

    let o = ctl.cli().args(["inventory", "rev-1"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("revoked"));
    let agents = ctl.agents().unwrap();
    let rec = agents.iter().find(|x| x["id"] == "rev-1").unwrap();
    assert_eq!(rec["revoked"], true);
    assert_eq!(rec["online"], false);
}

#[test]
fn certificates_are_renewed_before_expiry() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s", "--agent-cert-ttl", "9s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "ren-1", "127.0.0.23").unwrap();
    let first = a.identity().unwrap();
    let first_fp = first.fingerprint().unwrap();
    let first_expiry = first.not_after_unix().unwrap();
    a.start().unwrap();
    ctl.wait_online("ren-1");
    let renewed = eventually(Duration::from_secs(15), "a renewed certificate", || {
        let id = a.identity().ok()?;
        (id.fingerprint().ok()? != first_fp).then_some(id)
    });
    assert!(renewed.not_after_unix().unwrap() > first_expiry);
    // Past the first certificate's expiry the agent still serves and heartbeats.
    // Certificate expiry is checked by TLS on the wall clock (the dev clock cannot move it).
    eventually(
        Duration::from_secs(20),
        "the first certificate expired",
        || (preflight_pki::unix_now() > first_expiry + 1).then_some(()),
    );
    ctl.run(&["inventory", "ren-1"])
        .expect("inventory after the first certificate expired");
    ctl.wait_online("ren-1");
}

/// Heartbeat as the holder of `id` (the agent's own listen address, so nothing changes).
fn heartbeat_as(ctl: &Controller, id: &Identity, listen: &str) -> Result<(), tonic::Status> {
    rt().block_on(async {
        let ch = controller_channel(ctl, Some(id)).await.unwrap();
        pb::registry_client::RegistryClient::new(ch)
            .heartbeat(pb::HeartbeatRequest {
                agent_version: env!("CARGO_PKG_VERSION").into(),
                listen_addr: listen.into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    })
}

#[test]
fn an_old_certificate_copy_is_refused_after_renewal() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s", "--agent-cert-ttl", "9s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "ren-2", "127.0.0.24").unwrap();
    // The copy an attacker took before the renewal: certificate and key.
    let old = a.identity().unwrap();
    let old_fp = old.fingerprint().unwrap();
    a.start().unwrap();
    let listen = ctl.wait_online("ren-2").to_string();
    heartbeat_as(&ctl, &old, &listen).expect("the current certificate is accepted");
    eventually(Duration::from_secs(15), "a renewed certificate", || {
        let id = a.identity().ok()?;
        (id.fingerprint().ok()? != old_fp).then_some(())
    });
    // Once the agent uses its new certificate (its next heartbeat), the old one is retired.
    let refusal = eventually(
        Duration::from_secs(15),
        "the old certificate refused",
        || heartbeat_as(&ctl, &old, &listen).err(),
    );
    assert_eq!(refusal.code(), tonic::Code::PermissionDenied, "{refusal:?}");
    assert!(
        refusal.message().contains("not its current one") && refusal.message().contains(&old_fp),
        "{}",
        refusal.message()
    );
    // Nor can it renew itself a fresh certificate.
    let r = rt().block_on(async {
        let ch = controller_channel(&ctl, Some(&old)).await.unwrap();
        let (csr_pem, _key) = preflight_pki::make_csr("ren-2").unwrap();
        pb::registry_client::RegistryClient::new(ch)
            .renew(pb::RenewRequest { csr_pem })
            .await
    });
    let s = r.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("not its current one"),
        "{}",
        s.message()
    );
    // The refusals are logged with their source.
    let logged = eventually(Duration::from_secs(5), "the refusal logged", || {
        let l = ctl.log_lines_with("agent request refused");
        (!l.is_empty()).then_some(l)
    });
    assert!(logged.iter().any(|l| l.contains("127.0.0.1")), "{logged:?}");
    // The agent itself, on its current certificate, carries on.
    let cur = a.identity().unwrap();
    heartbeat_as(&ctl, &cur, &listen).expect("the current certificate is accepted");
    ctl.run(&["inventory", "ren-2"])
        .expect("inventory after renewal");

    // An impostor serving the old copy at the agent's address: the controller refuses it.
    a.proc = None; // killed
    let imp = base.path().join("impostor");
    std::fs::create_dir(&imp).unwrap();
    for f in ["agent.toml", "ca.pem"] {
        std::fs::copy(a.state.join(f), imp.join(f)).unwrap();
    }
    preflight_pki::fsutil::write_atomic(
        &imp.join("identity.pem"),
        format!("{}{}", old.cert_pem, old.key_pem).as_bytes(),
        0o600,
    )
    .unwrap();
    let serving = |state: &Path| {
        let p = preflight_tests::cluster::Proc(
            std::process::Command::new(preflight_tests::cluster::bin("preflight-agent"))
                .args(["run", "--listen", &listen, "--state-dir"])
                .arg(state)
                .env("PREFLIGHT_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        eventually(Duration::from_secs(15), "the agent port open", || {
            std::net::TcpStream::connect(&listen).ok()
        });
        p
    };
    let impostor = serving(&imp);
    let o = ctl.cli().args(["inventory", "ren-2"]).output().unwrap();
    assert!(
        !o.status.success(),
        "the impostor was believed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("not its current one"), "{e}");
    drop(impostor);
    // Positive control: the real agent back on the same address is believed again.
    let _real = serving(&a.state);
    eventually(
        Duration::from_secs(20),
        "inventory from the real agent",
        || ctl.run(&["inventory", "ren-2"]).ok(),
    );
}
