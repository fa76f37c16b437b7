//! The security matrix, end to end with the real binaries and real TLS:
//!
//! - every RPC of the controller's services for people × every role, plus no token, a wrong
//!   token and an expired user token. The methods come from the service descriptors compiled
//!   from `proto/`, the expected answer from the one role table
//!   (`preflight_core::role::rpc_roles`): a new RPC without an entry fails this test. A refusal
//!   must be PERMISSION_DENIED / UNAUTHENTICATED; an allowed call must get past authentication
//!   (an empty request may then be INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION...);
//! - the Registry (agents' own service) refuses callers without an agent certificate, a
//!   controller certificate and a revoked agent's certificate;
//! - every Agent RPC × (no client certificate, a foreign CA, an expired certificate, an
//!   agent-role certificate, a revoked agent's certificate) is refused; the controller identity
//!   is accepted;
//! - gRPC reflection is off on both servers; the agent listens on exactly one port.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::time::{Duration, Instant, SystemTime};

use preflight_core::role::{rpc_roles, Role};
use preflight_pki::{CertificateAuthority, Identity};
use preflight_proto::v1 as pb;
use preflight_tests::cluster::{Agent, Controller};
use preflight_tests::grpc::{
    agent_channel, ca_of, call, controller_channel, is_auth_refusal, methods, rt, CallResult,
    Method,
};
use tonic::Code;

/// Services the controller serves to people with bearer tokens: every one of their methods
/// needs an entry in the role table.
const PEOPLE_SERVICES: [&str; 4] = ["Controller", "Readiness", "Hardening", "Workflow"];

fn describe(r: &CallResult) -> String {
    match r {
        Ok(()) => "OK".into(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// One call of the matrix: a method (or a variant of it with a request that changes the role
/// table entry), its roles, and the request to send.
struct Case {
    label: String,
    method: Method,
    roles: &'static [Role],
    request: Request,
}

enum Request {
    Empty,
    HardenChange,
    DevClockChange,
}

async fn send(ch: &tonic::transport::Channel, c: &Case, token: Option<&str>) -> CallResult {
    let m = &c.method;
    match c.request {
        Request::Empty => call(ch, &m.path, m.server_streaming, token, ()).await,
        Request::HardenChange => {
            let req = pb::HardenAgentsRequest {
                operation: pb::HardenOperation::Apply as i32,
                ..Default::default()
            };
            call(ch, &m.path, m.server_streaming, token, req).await
        }
        Request::DevClockChange => {
            let req = pb::DevClockRequest {
                op: Some(pb::dev_clock_request::Op::AdvanceMs(1)),
            };
            call(ch, &m.path, m.server_streaming, token, req).await
        }
    }
}

fn cases(all: &[Method]) -> Vec<Case> {
    let mut out = Vec::new();
    for m in all {
        if !PEOPLE_SERVICES.contains(&m.service.as_str()) {
            assert!(
                m.service == "Agent" || m.service == "Registry",
                "service {} is neither a people service with role table entries nor Agent/Registry: \
                 add it to PEOPLE_SERVICES and preflight_core::role::rpc_roles",
                m.service
            );
            continue;
        }
        let roles = rpc_roles(&m.service, &m.name).unwrap_or_else(|| {
            panic!(
                "{} has no entry in the role table preflight_core::role::rpc_roles: add one",
                m.path
            )
        });
        out.push(Case {
            label: m.path.clone(),
            method: m.clone(),
            roles,
            request: Request::Empty,
        });
        // Methods whose request picks a stricter entry of the table.
        let variant = match (m.service.as_str(), m.name.as_str()) {
            ("Hardening", "Harden") => Some(("HardenChange", Request::HardenChange)),
            ("Workflow", "DevClock") => Some(("DevClock", Request::DevClockChange)),
            _ => None,
        };
        if let Some((entry, request)) = variant {
            out.push(Case {
                label: format!("{} ({entry})", m.path),
                method: m.clone(),
                roles: rpc_roles(&m.service, entry).expect("variant entry"),
                request,
            });
        }
    }
    // The read-only variant of DevClock is the empty request: its entry is DevClockShow.
    for c in &mut out {
        if c.method.path.ends_with("/DevClock") && matches!(c.request, Request::Empty) {
            c.roles = rpc_roles("Workflow", "DevClockShow").expect("DevClockShow entry");
        }
    }
    out
}

#[test]
fn every_controller_rpc_against_every_role_and_bad_tokens() {
    let ctl = Controller::start(&[]).unwrap();
    let all = methods();
    let cases = cases(&all);
    assert!(cases.len() >= 27, "{} cases", cases.len());
    let rt = rt();
    rt.block_on(async {
        let ch = controller_channel(&ctl, None).await.unwrap();
        let admin = ctl.admin_token.clone();
        let add = |name: String, role: &str, ttl_s: u32| {
            let ch = ch.clone();
            let admin = admin.clone();
            let role = pb::Role::from_str_name(&format!("ROLE_{}", role.to_uppercase()))
                .expect("a role of the wire contract") as i32;
            async move {
                let mut c = pb::workflow_client::WorkflowClient::new(ch);
                let mut r = tonic::Request::new(pb::AddUserRequest {
                    name,
                    role,
                    ttl_s,
                });
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {admin}").parse().unwrap());
                c.add_user(r).await.unwrap().into_inner().token
            }
        };
        // One user per role (the first admin is there already).
        let mut tokens: Vec<(Role, String)> = vec![(Role::Admin, admin.clone())];
        for role in Role::ALL.into_iter().filter(|r| *r != Role::Admin) {
            tokens.push((role, add(format!("mx-{role}"), role.as_str(), 0).await));
        }
        // A user whose token expires in 10 s (long enough for its first call on a loaded
        // machine): it works now, and not once expired.
        let expiring = add("mx-expiring".into(), "admin", 10).await;
        let expires_at = Instant::now() + Duration::from_secs(10);
        let who = "/preflight.v1.Controller/WhoAmI";
        call(&ch, who, false, Some(&expiring), ())
            .await
            .expect("an expiring token works before it expires");

        let mut calls = 0;
        let mut failures = Vec::new();
        for c in &cases {
            for (role, token) in &tokens {
                let r = send(&ch, c, Some(token)).await;
                calls += 1;
                let allowed = c.roles.contains(role);
                let ok = match (&r, allowed) {
                    (Ok(()), true) => true,
                    (Err(s), true) => !is_auth_refusal(s.code()),
                    (Ok(()), false) => false,
                    (Err(s), false) => {
                        s.code() == Code::PermissionDenied && s.message().contains(role.as_str())
                    }
                };
                if !ok {
                    failures.push(format!(
                        "{} as {role} (allowed: {allowed}): {}",
                        c.label,
                        describe(&r)
                    ));
                }
            }
            for (what, token) in [
                ("no token", None),
                ("a wrong token", Some(format!("pfa_{}", "0".repeat(64)))),
                ("a malformed token", Some("x".repeat(300))),
            ] {
                let r = send(&ch, c, token.as_deref()).await;
                calls += 1;
                if !matches!(&r, Err(s) if s.code() == Code::Unauthenticated) {
                    failures.push(format!("{} with {what}: {}", c.label, describe(&r)));
                }
            }
        }
        // The expired token, on every method.
        tokio::time::sleep_until(expires_at.into()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for c in &cases {
            let r = send(&ch, c, Some(&expiring)).await;
            calls += 1;
            if !matches!(&r, Err(s) if s.code() == Code::Unauthenticated && s.message().contains("expired"))
            {
                failures.push(format!("{} with an expired token: {}", c.label, describe(&r)));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {calls} calls answered wrongly:\n{}",
            failures.len(),
            failures.join("\n")
        );
        println!(
            "security matrix: {} controller RPC cases x {} roles + 4 bad tokens = {calls} calls, all as the role table says",
            cases.len(),
            tokens.len()
        );
    });
}

/// Is `r` a refusal at the TLS or authentication layer (never a handler's answer)?
fn refused_before_handler(r: &CallResult) -> bool {
    match r {
        Ok(()) => false,
        Err(s) => {
            is_auth_refusal(s.code())
                // The TLS handshake failed: the connection is gone before any request.
                || (matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
                    && !s.message().is_empty())
        }
    }
}

#[test]
fn agent_and_registry_refuse_every_identity_but_their_own() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "mx-1", "127.0.0.41").unwrap();
    // Hardening checks act on a scratch root, never on this host.
    a.start_with(&[OsStr::new("--harden-root"), root.path().as_os_str()])
        .unwrap();
    let addr = ctl.wait_online("mx-1").to_string();
    // A second agent, revoked: its certificate is still valid TLS-wise.
    let revoked = Agent::enroll(&ctl, base.path(), "mx-2", "127.0.0.42").unwrap();
    ctl.run(&["agents", "revoke", "mx-2"]).unwrap();

    let ca = ca_of(&ctl);
    let ca_pem = ca.cert_pem().to_string();
    let controller = ca.issue_controller(&[], Duration::from_secs(600)).unwrap();
    let other = CertificateAuthority::generate("other").unwrap();
    let foreign = other
        .issue_controller(&[], Duration::from_secs(600))
        .unwrap();
    let past = SystemTime::now() - Duration::from_secs(3 * 3600);
    let expired = ca
        .issue_controller_at(&[], past, Duration::from_secs(3600))
        .unwrap();
    let own = a.identity().unwrap();
    let revoked_id = revoked.identity().unwrap();
    let refused: [(&str, Option<&Identity>); 5] = [
        ("no client certificate", None),
        ("a controller certificate from a foreign CA", Some(&foreign)),
        ("an expired controller certificate", Some(&expired)),
        ("the agent's own (agent-role) certificate", Some(&own)),
        ("a revoked agent's certificate", Some(&revoked_id)),
    ];
    let all = methods();
    let agent_methods: Vec<&Method> = all.iter().filter(|m| m.service == "Agent").collect();
    assert!(agent_methods.len() >= 12, "{agent_methods:?}");
    let registry: Vec<&Method> = all.iter().filter(|m| m.service == "Registry").collect();

    rt().block_on(async {
        let mut failures = Vec::new();
        let mut calls = 0;
        for (what, who) in refused {
            match agent_channel(&addr, &ca_pem, who, "mx-1").await {
                // Refused during the handshake: no RPC gets through at all.
                Err(_) => calls += agent_methods.len(),
                Ok(ch) => {
                    for m in &agent_methods {
                        let r = call(&ch, &m.path, m.server_streaming, None, ()).await;
                        calls += 1;
                        let agent_role = who.is_some_and(|w| w.cert_pem == own.cert_pem || w.cert_pem == revoked_id.cert_pem);
                        let ok = if agent_role {
                            matches!(&r, Err(s) if s.code() == Code::PermissionDenied
                                && s.message().contains("only the controller"))
                        } else {
                            refused_before_handler(&r)
                        };
                        if !ok {
                            failures.push(format!("agent {} with {what}: {}", m.path, describe(&r)));
                        }
                    }
                }
            }
        }
        // The controller identity gets past authentication on every method (an empty request
        // may then be refused as invalid).
        let ch = agent_channel(&addr, &ca_pem, Some(&controller), "mx-1")
            .await
            .expect("the controller identity connects");
        for m in &agent_methods {
            let r = call(&ch, &m.path, m.server_streaming, None, ()).await;
            calls += 1;
            if matches!(&r, Err(s) if is_auth_refusal(s.code())) {
                failures.push(format!("agent {} refused the controller: {}", m.path, describe(&r)));
            }
        }

        // Registry: heartbeat and renewal need an enrolled, unrevoked agent's certificate.
        let cli = controller_channel(&ctl, None).await.unwrap();
        let as_controller = controller_channel(&ctl, Some(&controller)).await.unwrap();
        let as_revoked = controller_channel(&ctl, Some(&revoked_id)).await.unwrap();
        let as_agent = controller_channel(&ctl, Some(&own)).await.unwrap();
        for m in &registry {
            if m.name == "Enroll" {
                // Its credential is the join token in the request: an empty one is refused.
                let r = call(&cli, &m.path, false, Some(&ctl.admin_token), ()).await;
                calls += 1;
                if !matches!(&r, Err(s) if s.code() == Code::InvalidArgument && s.message().contains("join_token"))
                {
                    failures.push(format!("{} without a join token: {}", m.path, describe(&r)));
                }
                let r = call(
                    &cli,
                    &m.path,
                    false,
                    None,
                    pb::EnrollRequest {
                        join_token: format!("pfj_{}", "0".repeat(64)),
                        name: "mx-9".into(),
                        ..Default::default()
                    },
                )
                .await;
                calls += 1;
                if !matches!(&r, Err(s) if is_auth_refusal(s.code()) || s.code() == Code::InvalidArgument) {
                    failures.push(format!("{} with an unknown join token: {}", m.path, describe(&r)));
                }
                continue;
            }
            for (what, ch, token, code) in [
                ("an admin token and no certificate", &cli, Some(ctl.admin_token.as_str()), Code::Unauthenticated),
                ("the controller certificate", &as_controller, None, Code::PermissionDenied),
                ("a revoked agent's certificate", &as_revoked, None, Code::PermissionDenied),
            ] {
                let r = call(ch, &m.path, false, token, ()).await;
                calls += 1;
                if !matches!(&r, Err(s) if s.code() == code) {
                    failures.push(format!("{} with {what}: {}", m.path, describe(&r)));
                }
            }
            let r = call(&as_agent, &m.path, false, None, ()).await;
            calls += 1;
            if matches!(&r, Err(s) if is_auth_refusal(s.code())) {
                failures.push(format!("{} refused the enrolled agent: {}", m.path, describe(&r)));
            }
        }
        // A foreign CA's certificate does not even get a connection to the controller used.
        let ca_pem_ctl = std::fs::read_to_string(ctl.data().join("ca.pem")).unwrap();
        let tls = preflight_pki::client_config(&ca_pem_ctl, Some(&foreign)).unwrap();
        if let Ok(ch) = preflight_pki::transport::connect(
            &ctl.addr.to_string(),
            tls,
            preflight_pki::controller_server_name(),
            Duration::from_secs(5),
        )
        .await
        {
            for m in &registry {
                let r = call(&ch, &m.path, false, None, ()).await;
                calls += 1;
                if !refused_before_handler(&r) && !matches!(&r, Err(s) if s.code() == Code::InvalidArgument && m.name == "Enroll") {
                    failures.push(format!("{} with a foreign CA: {}", m.path, describe(&r)));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {calls} calls answered wrongly:\n{}",
            failures.len(),
            failures.join("\n")
        );
        println!(
            "security matrix: {} agent RPCs x 6 identities and {} registry RPCs x 4 identities = {calls} calls, all as expected",
            agent_methods.len(),
            registry.len()
        );

        // Reflection is off on both servers.
        for path in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            let r = call(&ch, path, true, None, ()).await;
            assert!(matches!(&r, Err(s) if s.code() == Code::Unimplemented), "agent {path}: {}", describe(&r));
            let r = call(&cli, path, true, Some(&ctl.admin_token), ()).await;
            assert!(matches!(&r, Err(s) if s.code() == Code::Unimplemented), "controller {path}: {}", describe(&r));
        }
    });

    // The agent listens on exactly one port: its gRPC port.
    let pid = a.proc.as_ref().unwrap().0.id();
    let listening = listening_sockets(pid);
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        listening,
        BTreeSet::from([format!("tcp:{port}")]),
        "the agent (pid {pid}) must listen on exactly its one port {port}"
    );
    println!("agent pid {pid} listens on exactly: {listening:?}");
}

/// The listening TCP sockets and bound UDP sockets owned by process `pid`, as `tcp:PORT` /
/// `udp:PORT`: the socket inodes among its file descriptors, looked up in its network
/// namespace's socket tables.
fn listening_sockets(pid: u32) -> BTreeSet<String> {
    let mut inodes = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(e.path()) {
            let l = link.to_string_lossy().into_owned();
            if let Some(i) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    assert!(!inodes.is_empty(), "no sockets found for pid {pid}");
    let mut out = BTreeSet::new();
    for (proto, file) in [
        ("tcp", "tcp"),
        ("tcp", "tcp6"),
        ("udp", "udp"),
        ("udp", "udp6"),
    ] {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !inodes.contains(f[9]) {
                continue;
            }
            // TCP: state 0A is LISTEN; UDP: any bound socket receives.
            if proto == "tcp" && f[3] != "0A" {
                continue;
            }
            let port = u16::from_str_radix(f[1].rsplit(':').next().unwrap(), 16).unwrap();
            out.insert(format!("{proto}:{port}"));
        }
    }
    out
}
