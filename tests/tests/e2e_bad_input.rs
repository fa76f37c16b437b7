//! The bad-input corpus: well over a thousand malformed requests, generated per RPC of the
//! controller and the agent, sent over real TLS to one real controller and one real agent.
//! Each must be refused with a clear status — INVALID_ARGUMENT naming the field, NOT_FOUND,
//! FAILED_PRECONDITION, OUT_OF_RANGE or RESOURCE_EXHAUSTED — never INTERNAL, UNKNOWN or success,
//! and both servers keep serving throughout.
//!
//! Bad values: empty and oversized strings, path traversal, absolute paths where a name is
//! wanted, NUL and control bytes, shell and format metacharacters, unknown agents, batches,
//! users and ids, bad enum names and numbers, ports 0 and above 65535, durations and counts out
//! of range, deep nesting (in plans and in the protobuf encoding), malformed and oversized
//! messages.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use preflight_proto::v1 as pb;
use preflight_tests::cluster::{Agent, Controller};
use preflight_tests::grpc::{agent_channel, ca_of, call, controller_channel, methods, rt};
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

/// Raw protobuf bytes sent as a message: for malformed encodings.
#[derive(Debug, Default, Clone, PartialEq)]
struct Raw(Vec<u8>);

impl prost::Message for Raw {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Controller,
    Agent,
    /// The controller's Registry, called with the agent's own certificate.
    RegistryAsAgent,
}

struct Case {
    target: Target,
    path: String,
    streaming: bool,
    what: String,
    /// Any of these field names must appear in an INVALID_ARGUMENT message.
    fields: Vec<&'static str>,
    /// Wire-level cases only: protobuf skips unknown fields, so some of them decode to a valid
    /// (empty) request; they must still never be INTERNAL or UNKNOWN.
    may_succeed: bool,
    body: Vec<u8>,
}

struct Corpus(Vec<Case>);

impl Corpus {
    fn add<M: Message>(
        &mut self,
        target: Target,
        rpc: &str,
        what: impl Into<String>,
        fields: &[&'static str],
        msg: M,
    ) {
        let (svc, name) = rpc.split_once('/').expect("Service/Method");
        self.0.push(Case {
            target,
            path: format!("/preflight.v1.{svc}/{name}"),
            streaming: false,
            what: what.into(),
            fields: fields.to_vec(),
            may_succeed: false,
            body: msg.encode_to_vec(),
        });
    }
    fn ctl<M: Message>(&mut self, rpc: &str, what: impl Into<String>, f: &[&'static str], m: M) {
        self.add(Target::Controller, rpc, what, f, m);
    }
    fn agent<M: Message>(&mut self, rpc: &str, what: impl Into<String>, f: &[&'static str], m: M) {
        self.add(Target::Agent, rpc, what, f, m);
    }
}

/// Identifiers that are malformed for every kind of id (agent ids, batches, projects, users).
fn bad_ids() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "../etc",
        "../../../../etc/passwd",
        "/etc/passwd",
        "a\0b",
        "\0",
        "a b",
        "a/b",
        "a\\b",
        "a\nb",
        "a\r\nX-Injected: 1",
        "名字",
        "a*",
        "$(id)",
        "`id`",
        "a;rm -rf /",
        "%2e%2e%2f",
        "%s%n%x",
        "\u{202e}gnp.exe",
        "\u{7f}",
        "{\"a\":1}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(300));
    v.push("y".repeat(70_000));
    v
}

/// Well-formed agent ids of agents that do not exist.
fn unknown_agents() -> Vec<String> {
    vec!["no-such-agent".into(), "ghost-1".into(), "x".into()]
}

/// Agent ids: malformed ones and unknown ones.
fn agent_ids() -> Vec<String> {
    let mut v = bad_ids();
    v.extend(unknown_agents());
    v
}

fn show(s: &str) -> String {
    let mut d = format!("{s:?}");
    if d.len() > 40 {
        d.truncate(40);
        d.push('…');
    }
    d
}

const PORTS: [u32; 5] = [0, 65_536, 70_000, 1 << 31, u32::MAX];

fn controller_cases(c: &mut Corpus, known: &str) {
    // --- Controller service
    for ttl in [0u32, 7 * 24 * 3600 + 1, u32::MAX] {
        c.ctl(
            "Controller/CreateJoinToken",
            format!("ttl_s {ttl}"),
            &["ttl_s"],
            pb::CreateJoinTokenRequest {
                ttl_s: ttl,
                uses: 0,
            },
        );
    }
    for uses in [1001u32, u32::MAX] {
        c.ctl(
            "Controller/CreateJoinToken",
            format!("uses {uses}"),
            &["uses"],
            pb::CreateJoinTokenRequest { ttl_s: 600, uses },
        );
    }
    // The user lifecycle: malformed names, and a rotation lifetime past 400 days.
    for b in bad_ids() {
        let w = format!("name {}", show(&b));
        c.ctl(
            "Workflow/RotateUserToken",
            &w,
            &["name"],
            pb::UserNameRequest {
                name: b.clone(),
                ttl_s: 0,
            },
        );
        c.ctl(
            "Workflow/SetUserDisabled",
            &w,
            &["name"],
            pb::SetUserDisabledRequest {
                name: b.clone(),
                disabled: true,
            },
        );
        c.ctl(
            "Workflow/RemoveUser",
            &w,
            &["name"],
            pb::UserNameRequest {
                name: b.clone(),
                ttl_s: 0,
            },
        );
    }
    for ttl in [400 * 24 * 3600 + 1, u32::MAX] {
        c.ctl(
            "Workflow/RotateUserToken",
            format!("ttl_s {ttl}"),
            &["ttl_s"],
            pb::UserNameRequest {
                name: "admin".into(),
                ttl_s: ttl,
            },
        );
    }
    for id in agent_ids() {
        let w = format!("agent_id {}", show(&id));
        c.ctl(
            "Controller/RevokeAgent",
            &w,
            &["agent_id"],
            pb::RevokeAgentRequest {
                agent_id: id.clone(),
            },
        );
        c.ctl(
            "Controller/GetAgentInventory",
            &w,
            &["agent_id"],
            pb::GetAgentInventoryRequest {
                agent_id: id.clone(),
            },
        );
        c.ctl(
            "Controller/ListAgentPorts",
            &w,
            &["agent_id"],
            pb::AgentPortsRequest {
                agent_id: id.clone(),
                tcp: true,
                ..Default::default()
            },
        );
        c.add(
            Target::Controller,
            "Controller/RunAgentBenchmark",
            &w,
            &["agent_id"],
            pb::AgentBenchmarkRequest {
                agent_id: id.clone(),
                request: Some(cpu_bench()),
            },
        );
        for (field, from, to) in [
            ("from_agent", id.clone(), known.to_string()),
            ("to_agent", known.to_string(), id.clone()),
        ] {
            c.ctl(
                "Controller/Probe",
                format!("{field} {}", show(&id)),
                &[field],
                pb::ProbeRequest {
                    from_agent: from.clone(),
                    to_agent: to.clone(),
                    ports: "8080".into(),
                    ..Default::default()
                },
            );
            c.ctl(
                "Controller/Bandwidth",
                format!("{field} {}", show(&id)),
                &[field],
                pb::BandwidthRequest {
                    from_agent: from,
                    to_agent: to,
                    duration_s: 1,
                    ..Default::default()
                },
            );
        }
    }
    c.ctl(
        "Controller/RunAgentBenchmark",
        "request missing",
        &["request"],
        pb::AgentBenchmarkRequest {
            agent_id: known.into(),
            request: None,
        },
    );
    for (req, field) in bad_benchmarks() {
        c.ctl(
            "Controller/RunAgentBenchmark",
            format!("benchmark {field}"),
            &[field],
            pb::AgentBenchmarkRequest {
                agent_id: known.into(),
                request: Some(req),
            },
        );
    }
    let probe = |f: &dyn Fn(&mut pb::ProbeRequest)| {
        let mut p = pb::ProbeRequest {
            from_agent: known.into(),
            to_agent: known.into(),
            ports: "18080".into(),
            timeout_ms: 100,
            ..Default::default()
        };
        f(&mut p);
        p
    };
    for ports in [
        "",
        "0",
        "65536",
        "70000",
        "-1",
        "1-",
        "-",
        "a",
        "80,,443",
        "443-80",
        "1-65535",
        "1-2000",
        "80;443",
        "80 443",
        "0x50",
        "99999999999999999999",
        "\0",
        &"1,".repeat(2000),
    ] {
        c.ctl(
            "Controller/Probe",
            format!("ports {}", show(ports)),
            &["ports"],
            probe(&|p| p.ports = ports.to_string()),
        );
    }
    for t in [30_001u32, 3_600_000, u32::MAX] {
        c.ctl(
            "Controller/Probe",
            format!("timeout_ms {t}"),
            &["timeout_ms"],
            probe(&|p| p.timeout_ms = t),
        );
    }
    for k in [600_001u32, u32::MAX] {
        c.ctl(
            "Controller/Probe",
            format!("keep_ms {k}"),
            &["keep_ms"],
            probe(&|p| p.keep_ms = k),
        );
    }
    for a in bad_ips() {
        c.ctl(
            "Controller/Probe",
            format!("to_addr {}", show(&a)),
            &["to_addr"],
            probe(&|p| p.to_addr = a.clone()),
        );
    }
    let bw = |f: &dyn Fn(&mut pb::BandwidthRequest)| {
        let mut b = pb::BandwidthRequest {
            from_agent: known.into(),
            to_agent: known.into(),
            duration_s: 1,
            streams: 1,
            ..Default::default()
        };
        f(&mut b);
        b
    };
    for d in [61u32, 3600, u32::MAX] {
        c.ctl(
            "Controller/Bandwidth",
            format!("duration_s {d}"),
            &["duration_s"],
            bw(&|b| b.duration_s = d),
        );
    }
    for s in [17u32, 1000, u32::MAX] {
        c.ctl(
            "Controller/Bandwidth",
            format!("streams {s}"),
            &["streams"],
            bw(&|b| b.streams = s),
        );
    }
    for a in bad_ips() {
        c.ctl(
            "Controller/Bandwidth",
            format!("to_addr {}", show(&a)),
            &["to_addr"],
            bw(&|b| b.to_addr = a.clone()),
        );
    }

    // --- Readiness
    let sweep = |f: &dyn Fn(&mut pb::RunSweepRequest)| {
        let mut r = pb::RunSweepRequest {
            batch: "b1".into(),
            plan_name: "plan.toml".into(),
            plan_toml: String::new(),
            concurrency: 1,
            skip: Vec::new(),
            measure_ms: 0,
        };
        f(&mut r);
        r
    };
    // Unset, unknown to this build, negative.
    for k in [0, 99, i32::MAX, -1] {
        c.ctl(
            "Readiness/RunSweep",
            format!("skip {k}"),
            &["skip"],
            sweep(&|r| r.skip = vec![k]),
        );
    }
    for ms in [1, 199, 30_001, u32::MAX] {
        c.ctl(
            "Readiness/RunSweep",
            format!("measure_ms {ms}"),
            &["measure_ms"],
            sweep(&|r| r.measure_ms = ms),
        );
    }
    for b in bad_ids() {
        c.ctl(
            "Readiness/RunSweep",
            format!("batch {}", show(&b)),
            &["batch"],
            sweep(&|r| r.batch = b.clone()),
        );
        if !b.is_empty() {
            c.ctl(
                "Readiness/ListSweeps",
                format!("batch {}", show(&b)),
                &["batch"],
                pb::ListSweepsRequest { batch: b.clone() },
            );
        }
        c.ctl(
            "Readiness/GetSweep",
            format!("batch {}", show(&b)),
            &["batch"],
            pb::GetSweepRequest {
                run_id: 0,
                batch: b.clone(),
            },
        );
    }
    for id in [1u64, 999_999, u64::MAX] {
        c.ctl(
            "Readiness/GetSweep",
            format!("run_id {id}"),
            &["run_id"],
            pb::GetSweepRequest {
                run_id: id,
                batch: String::new(),
            },
        );
    }
    for n in [257u32, 100_000, u32::MAX] {
        c.ctl(
            "Readiness/RunSweep",
            format!("concurrency {n}"),
            &["concurrency"],
            sweep(&|r| r.concurrency = n),
        );
    }
    for (what, plan) in bad_plans() {
        c.ctl(
            "Readiness/RunSweep",
            format!("plan_toml {what}"),
            &["the plan file"],
            sweep(&|r| r.plan_toml = plan.clone()),
        );
    }

    // --- Hardening
    let harden = |f: &dyn Fn(&mut pb::HardenAgentsRequest)| {
        let mut r = pb::HardenAgentsRequest {
            operation: pb::HardenOperation::Audit as i32,
            agent_ids: vec![known.into()],
            ..Default::default()
        };
        f(&mut r);
        r
    };
    for op in [0i32, 6, 99, -1, i32::MAX, i32::MIN] {
        c.ctl(
            "Hardening/Harden",
            format!("operation {op}"),
            &["operation"],
            harden(&|r| r.operation = op),
        );
    }
    for id in agent_ids() {
        let w = format!("agent_ids [{}]", show(&id));
        c.ctl(
            "Hardening/Harden",
            &w,
            &["agent_ids"],
            harden(&|r| r.agent_ids = vec![id.clone()]),
        );
        c.ctl(
            "Hardening/ExportEvidence",
            &w,
            &["agent_ids"],
            pb::ExportEvidenceRequest {
                agent_ids: vec![id.clone()],
                batch: String::new(),
            },
        );
        c.ctl(
            "Hardening/Status",
            &w,
            &["agent_ids"],
            pb::HardeningStatusRequest {
                agent_ids: vec![id.clone()],
                batch: String::new(),
            },
        );
        c.ctl(
            "Hardening/FirewallAllow",
            format!("agent_id {}", show(&id)),
            &["agent_id"],
            pb::FirewallAllowRequest {
                agent_id: id.clone(),
                port: Some(fw_port(8080)),
                confirm_timeout_s: 30,
            },
        );
    }
    for b in bad_ids().into_iter().chain(["no-such-batch".to_string()]) {
        if b.is_empty() {
            continue;
        }
        c.ctl(
            "Hardening/Harden",
            format!("batch {}", show(&b)),
            &["batch"],
            harden(&|r| {
                r.agent_ids.clear();
                r.batch = b.clone();
            }),
        );
        c.ctl(
            "Hardening/ExportEvidence",
            format!("batch {}", show(&b)),
            &["batch"],
            pb::ExportEvidenceRequest {
                agent_ids: vec![],
                batch: b.clone(),
            },
        );
    }
    c.ctl(
        "Hardening/Harden",
        "agent_ids empty",
        &["agent_ids"],
        harden(&|r| r.agent_ids.clear()),
    );
    c.ctl(
        "Hardening/Harden",
        "agent_ids repeated",
        &["agent_ids"],
        harden(&|r| r.agent_ids = vec![known.into(), known.into()]),
    );
    c.ctl(
        "Hardening/Harden",
        "agent_ids: 10,000",
        &["agent_ids"],
        harden(&|r| r.agent_ids = (0..10_000).map(|i| format!("a{i}")).collect()),
    );
    c.ctl(
        "Hardening/Harden",
        "check_ids: 1,000",
        &["check_ids"],
        harden(&|r| r.check_ids = vec!["ssh.root_login".into(); 1000]),
    );
    c.ctl(
        "Hardening/Harden",
        "firewall with audit",
        &["firewall"],
        harden(&|r| r.firewall = Some(pb::FirewallChange::default())),
    );
    c.ctl(
        "Hardening/Harden",
        "firewall without mgmt_sources",
        &["mgmt_sources"],
        harden(&|r| {
            r.operation = pb::HardenOperation::Apply as i32;
            r.firewall = Some(pb::FirewallChange::default());
        }),
    );
    c.ctl(
        "Hardening/ExportEvidence",
        "neither agent_ids nor batch",
        &["agent_ids"],
        pb::ExportEvidenceRequest::default(),
    );
    c.ctl(
        "Hardening/Status",
        "agent_ids empty",
        &["agent_ids"],
        pb::HardeningStatusRequest::default(),
    );
    for p in PORTS {
        c.ctl(
            "Hardening/FirewallAllow",
            format!("port.port {p}"),
            &["port"],
            pb::FirewallAllowRequest {
                agent_id: known.into(),
                port: Some(fw_port(p)),
                confirm_timeout_s: 30,
            },
        );
    }
    for reason in ["", "   ", &"r".repeat(600)] {
        let mut port = fw_port(8080);
        port.reason = reason.to_string();
        c.ctl(
            "Hardening/FirewallAllow",
            format!("port.reason {}", show(reason)),
            &["reason"],
            pb::FirewallAllowRequest {
                agent_id: known.into(),
                port: Some(port),
                confirm_timeout_s: 30,
            },
        );
    }
    c.ctl(
        "Hardening/FirewallAllow",
        "port missing",
        &["port"],
        pb::FirewallAllowRequest {
            agent_id: known.into(),
            port: None,
            confirm_timeout_s: 30,
        },
    );

    workflow_cases(c);
}

fn workflow_cases(c: &mut Corpus) {
    use pb::workflow_command::Cmd;
    let exec = |cmd: Cmd| pb::WorkflowCommand { cmd: Some(cmd) };
    c.ctl(
        "Workflow/Execute",
        "no command",
        &["command"],
        pb::WorkflowCommand { cmd: None },
    );
    let mut ids = bad_ids();
    ids.push("no-such-batch".into());
    for b in &ids {
        let batch = b.clone();
        let r = || pb::BatchRefCmd {
            batch: batch.clone(),
        };
        let cmds: Vec<(&str, Cmd)> = vec![
            ("advance", Cmd::Advance(r())),
            ("confirm_plan", Cmd::ConfirmPlan(r())),
            ("start_deploy", Cmd::StartDeploy(r())),
            (
                "attach_plan",
                Cmd::AttachPlan(pb::AttachPlanCmd {
                    batch: batch.clone(),
                    digest: "0".repeat(64),
                    hosts: vec!["10.0.0.1".into()],
                    incomplete: vec![],
                    plan_toml: String::new(),
                }),
            ),
            (
                "add_risk",
                Cmd::AddRisk(pb::AddRiskCmd {
                    batch: batch.clone(),
                    text: "risk".into(),
                    source: "review".into(),
                }),
            ),
            (
                "review_filing",
                Cmd::ReviewFiling(pb::ReviewFilingCmd {
                    batch: batch.clone(),
                    approve: true,
                    note: "n".into(),
                }),
            ),
            (
                "record_acceptance",
                Cmd::RecordAcceptance(pb::AcceptanceCmd {
                    batch: batch.clone(),
                    rating: 5,
                    comment: "c".into(),
                }),
            ),
            (
                "assign",
                Cmd::Assign(pb::AssignCmd {
                    batch: batch.clone(),
                    deployer: "amy".into(),
                }),
            ),
            (
                "jump_queue",
                Cmd::JumpQueue(pb::JumpCmd {
                    batch: batch.clone(),
                    position: 1,
                    reason: "urgent".into(),
                }),
            ),
            (
                "pause",
                Cmd::Pause(pb::PauseCmd {
                    batch: batch.clone(),
                    reason: pb::WorkflowPauseReason::Package as i32,
                    text: "t".into(),
                    party: pb::WorkflowParty::Project as i32,
                }),
            ),
            (
                "resolve",
                Cmd::Resolve(pb::NoteCmd {
                    batch: batch.clone(),
                    note: "n".into(),
                }),
            ),
            (
                "terminate",
                Cmd::Terminate(pb::NoteCmd {
                    batch: batch.clone(),
                    note: "n".into(),
                }),
            ),
        ];
        for (name, cmd) in cmds {
            c.ctl(
                "Workflow/Execute",
                format!("{name} batch {}", show(b)),
                &["batch"],
                exec(cmd),
            );
        }
        c.ctl(
            "Workflow/GetBatch",
            format!("batch {}", show(b)),
            &["batch"],
            pb::GetBatchRequest { batch: b.clone() },
        );
        c.ctl(
            "Workflow/DevRecord",
            format!("batch {}", show(b)),
            &["batch"],
            pb::DevRecordRequest {
                batch: b.clone(),
                kind: pb::DevRecordKind::Readiness as i32,
                ..Default::default()
            },
        );
        if !b.is_empty() {
            c.ctl(
                "Workflow/GetQueue",
                format!("deployer {}", show(b)),
                &["deployer"],
                pb::GetQueueRequest {
                    deployer: b.clone(),
                },
            );
        }
        let name = b.clone();
        c.ctl(
            "Workflow/AddUser",
            format!("name {}", show(b)),
            &["name"],
            pb::AddUserRequest {
                name: if name == "no-such-batch" {
                    "bad name!".into()
                } else {
                    name
                },
                role: pb::Role::Auditor as i32,
                ttl_s: 0,
            },
        );
        // Creating things with malformed ids.
        let id = b.clone();
        if id != "no-such-batch" {
            c.ctl(
                "Workflow/Execute",
                format!("create_project id {}", show(b)),
                &["id", "project"],
                exec(Cmd::CreateProject(pb::CreateProjectCmd {
                    id: id.clone(),
                    name: "P".into(),
                    business_line: "retail".into(),
                    approval: Some(approval(pb::ApprovalKind::Approved as i32)),
                })),
            );
            c.ctl(
                "Workflow/Execute",
                format!("create_batch id {}", show(b)),
                &["id", "batch"],
                exec(Cmd::CreateBatch(pb::CreateBatchCmd {
                    id: id.clone(),
                    project: "p1".into(),
                    business_line: String::new(),
                    title: "t".into(),
                })),
            );
            c.ctl(
                "Workflow/Execute",
                format!("add_deployer name {}", show(b)),
                &["name", "deployer"],
                exec(Cmd::AddDeployer(pb::AddDeployerCmd { name: id.clone() })),
            );
        }
    }
    // Closed sets are enums on the wire: unset, unknown, negative and extreme values.
    for role in [0, 11, 99, -1, i32::MAX, i32::MIN] {
        c.ctl(
            "Workflow/AddUser",
            format!("role {role}"),
            &["role"],
            pb::AddUserRequest {
                name: "corpus-user".into(),
                role,
                ttl_s: 0,
            },
        );
    }
    for ttl in [400 * 24 * 3600 + 1, u32::MAX] {
        c.ctl(
            "Workflow/AddUser",
            format!("ttl_s {ttl}"),
            &["ttl_s"],
            pb::AddUserRequest {
                name: "corpus-user".into(),
                role: pb::Role::Auditor as i32,
                ttl_s: ttl,
            },
        );
    }
    for e in [0, 24, 99, -1, i32::MAX, i32::MIN] {
        if e != 0 {
            // Unset is "by reason".
            c.ctl(
                "Workflow/PauseStats",
                format!("by {e}"),
                &["by"],
                pb::PauseStatsRequest { by: e, since_ms: 0 },
            );
        }
        c.ctl(
            "Workflow/Execute",
            format!("pause reason {e}"),
            &["reason"],
            exec(Cmd::Pause(pb::PauseCmd {
                batch: "no-such-batch".into(),
                reason: e,
                text: "t".into(),
                party: pb::WorkflowParty::Project as i32,
            })),
        );
        c.ctl(
            "Workflow/Execute",
            format!("pause party {e}"),
            &["party"],
            exec(Cmd::Pause(pb::PauseCmd {
                batch: "no-such-batch".into(),
                reason: pb::WorkflowPauseReason::Package as i32,
                text: "t".into(),
                party: e,
            })),
        );
        c.ctl(
            "Workflow/Execute",
            format!("gd_confirm decision {e}"),
            &["decision"],
            exec(Cmd::GdConfirm(pb::GdConfirmCmd {
                batch: "no-such-batch".into(),
                decision: e,
                note: "n".into(),
            })),
        );
        c.ctl(
            "Workflow/Execute",
            format!("approval kind {e}"),
            &["kind", "approval"],
            exec(Cmd::SetApproval(pb::SetApprovalCmd {
                project: "no-such-project".into(),
                approval: Some(approval(e)),
            })),
        );
        c.ctl(
            "Workflow/DevRecord",
            format!("kind {e}"),
            &["kind"],
            pb::DevRecordRequest {
                batch: "no-such-batch".into(),
                kind: e,
                ..Default::default()
            },
        );
    }
    for rating in [0u32, 6, 100, u32::MAX] {
        c.ctl(
            "Workflow/Execute",
            format!("record_acceptance rating {rating}"),
            &["rating"],
            exec(Cmd::RecordAcceptance(pb::AcceptanceCmd {
                batch: "no-such-batch".into(),
                rating,
                comment: "c".into(),
            })),
        );
    }
    for big in ["t".repeat(70_000), "t".repeat(1_000_000)] {
        for (name, cmd) in [
            (
                "add_risk text",
                Cmd::AddRisk(pb::AddRiskCmd {
                    batch: "no-such-batch".into(),
                    text: big.clone(),
                    source: "s".into(),
                }),
            ),
            (
                "resolve note",
                Cmd::Resolve(pb::NoteCmd {
                    batch: "no-such-batch".into(),
                    note: big.clone(),
                }),
            ),
            (
                "create_batch title",
                Cmd::CreateBatch(pb::CreateBatchCmd {
                    id: "corpus-b".into(),
                    project: "no-such-project".into(),
                    business_line: String::new(),
                    title: big.clone(),
                }),
            ),
        ] {
            c.ctl(
                "Workflow/Execute",
                format!("{name} of {} bytes", big.len()),
                &["text", "note", "title"],
                exec(cmd),
            );
        }
    }
    c.ctl(
        "Workflow/Execute",
        "attach_plan hosts: 100,000",
        &["hosts"],
        exec(Cmd::AttachPlan(pb::AttachPlanCmd {
            batch: "no-such-batch".into(),
            digest: "0".repeat(64),
            hosts: (0..100_000).map(|i| format!("h{i}")).collect(),
            incomplete: vec![],
            plan_toml: String::new(),
        })),
    );
    // The plan sent with an attachment is checked again on the controller: size, validity, and
    // that the digest named is its own.
    let valid = "[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"h1\"\nrole = \"db\"\n";
    for (name, needle, digest, text) in [
        (
            "attach_plan plan_toml: 1 MiB + 1",
            "plan file",
            String::new(),
            format!("{valid}#{}", "x".repeat(1024 * 1024 - valid.len())),
        ),
        (
            "attach_plan plan_toml: invalid plan",
            "plan file",
            String::new(),
            "[[servers]]\naddress = 1\n".to_string(),
        ),
        (
            "attach_plan digest: not the plan's",
            "digest",
            "0".repeat(64),
            valid.to_string(),
        ),
    ] {
        c.ctl(
            "Workflow/Execute",
            name,
            &[needle],
            exec(Cmd::AttachPlan(pb::AttachPlanCmd {
                batch: "no-such-batch".into(),
                digest,
                hosts: vec![],
                incomplete: vec![],
                plan_toml: text,
            })),
        );
    }
    c.ctl(
        "Workflow/Execute",
        "file_risks risks: 100,000",
        &["risks"],
        exec(Cmd::FileRisks(pb::FileRisksCmd {
            batch: "no-such-batch".into(),
            risks: (0..100_000).collect(),
            document: "d".into(),
        })),
    );
    use pb::dev_clock_request::Op;
    for (field, op) in [
        ("set_ms", Op::SetMs(i64::MIN)),
        ("set_ms", Op::SetMs(i64::MAX)),
        ("set_ms", Op::SetMs(0)),
        ("advance_ms", Op::AdvanceMs(-1)),
        ("advance_ms", Op::AdvanceMs(i64::MIN)),
        ("advance_ms", Op::AdvanceMs(i64::MAX)),
    ] {
        c.ctl(
            "Workflow/DevClock",
            format!("{op:?}"),
            &[field],
            pb::DevClockRequest { op: Some(op) },
        );
    }
}

fn approval(kind: i32) -> pb::ProjectApproval {
    pb::ProjectApproval {
        kind,
        budget: "1".into(),
        approver: "boss".into(),
        reference: "r".into(),
    }
}

fn fw_port(port: u32) -> pb::FirewallPort {
    pb::FirewallPort {
        port,
        proto: pb::Protocol::Tcp as i32,
        sources: vec!["10.0.0.0/8".into()],
        reason: "corpus".into(),
    }
}

fn cpu_bench() -> pb::BenchmarkRequest {
    pb::BenchmarkRequest {
        kind: Some(pb::benchmark_request::Kind::Cpu(pb::CpuBenchmark {
            threads: 1,
            cpu_max_prime: 100,
            time_ms: 100,
            warmup_ms: 0,
        })),
    }
}

fn bad_ips() -> Vec<String> {
    [
        "x",
        "999.1.1.1",
        "10.0.0",
        "10.0.0.1:80",
        "::g",
        "localhost",
        "a\0b",
        "../etc",
        "10.0.0.1/24",
        " 10.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["9".repeat(300)])
    .collect()
}

fn bad_benchmarks() -> Vec<(pb::BenchmarkRequest, &'static str)> {
    use pb::benchmark_request::Kind;
    let disk = |f: &dyn Fn(&mut pb::DiskBenchmark)| {
        let mut d = pb::DiskBenchmark {
            directory: "/tmp".into(),
            rw: pb::DiskRw::Randread as i32,
            bs_bytes: 4096,
            iodepth: 1,
            size_bytes: 1 << 20,
            time_ms: 100,
            direct: false,
            time_based: true,
            rwmixread: 50,
            ..Default::default()
        };
        f(&mut d);
        pb::BenchmarkRequest {
            kind: Some(Kind::Disk(d)),
        }
    };
    let mut v = vec![(pb::BenchmarkRequest { kind: None }, "kind")];
    for dir in [
        "",
        "data",
        "../tmp",
        "./x",
        "a\0b",
        "/tmp\0/x",
        &"d".repeat(5000),
    ] {
        v.push((disk(&|d| d.directory = dir.to_string()), "directory"));
    }
    for name in [
        "/etc/passwd",
        "../x",
        "a/b",
        "..",
        "a\0b",
        &"f".repeat(5000),
    ] {
        v.push((disk(&|d| d.filename = name.to_string()), "filename"));
    }
    // Unset, unknown to this build, negative.
    for rw in [0, 99, i32::MAX, -1] {
        v.push((disk(&|d| d.rw = rw), "rw"));
    }
    for s in [65u64 << 30, u64::MAX] {
        v.push((disk(&|d| d.size_bytes = s), "size"));
    }
    for t in [601_000u64, u64::MAX] {
        v.push((disk(&|d| d.time_ms = t), "time"));
        v.push((disk(&|d| d.warmup_ms = t), "warmup"));
    }
    for q in [0u32, 100_000, u32::MAX] {
        v.push((disk(&|d| d.iodepth = q), "iodepth"));
    }
    for b in [1u64 << 40, u64::MAX] {
        v.push((disk(&|d| d.bs_bytes = b), "bs"));
    }
    for m in [101u32, 300, u32::MAX] {
        v.push((disk(&|d| d.rwmixread = m), "rwmixread"));
    }
    let cpu = |f: &dyn Fn(&mut pb::CpuBenchmark)| {
        let mut c = pb::CpuBenchmark {
            threads: 1,
            cpu_max_prime: 100,
            time_ms: 100,
            warmup_ms: 0,
        };
        f(&mut c);
        pb::BenchmarkRequest {
            kind: Some(Kind::Cpu(c)),
        }
    };
    for t in [100_000u32, u32::MAX] {
        v.push((cpu(&|c| c.threads = t), "threads"));
    }
    for t in [601_000u64, u64::MAX] {
        v.push((cpu(&|c| c.time_ms = t), "time"));
    }
    let mem = |f: &dyn Fn(&mut pb::MemoryBenchmark)| {
        let mut m = pb::MemoryBenchmark {
            threads: 1,
            block_size_bytes: 1 << 20,
            total_size_bytes: 1 << 24,
            oper: pb::MemoryOper::Read as i32,
            time_ms: 100,
            warmup_ms: 0,
        };
        f(&mut m);
        pb::BenchmarkRequest {
            kind: Some(Kind::Memory(m)),
        }
    };
    for o in [0, 99, i32::MAX, -1] {
        v.push((mem(&|m| m.oper = o), "oper"));
    }
    for t in [100_000u32, u32::MAX] {
        v.push((mem(&|m| m.threads = t), "threads"));
    }
    v
}

fn bad_plans() -> Vec<(String, String)> {
    let deep = |n: usize| format!("a = {}{}", "[".repeat(n), "]".repeat(n));
    let deep_tables = |n: usize| format!("a = {}1{}", "{ b = ".repeat(n), " }".repeat(n));
    vec![
        ("empty".into(), String::new()),
        ("not TOML".into(), "this is [not toml".into()),
        ("binary".into(), "\0\u{1}\u{2}".into()),
        ("nested arrays 10,000 deep".into(), deep(10_000)),
        ("nested arrays 200,000 deep".into(), deep(200_000)),
        ("nested tables 5,000 deep".into(), deep_tables(5_000)),
        ("no servers".into(), "[plan]\nname = \"x\"\n".into()),
        ("3 MiB of comments".into(), "#".repeat(3 << 20)),
        (
            "a traversal in a package path".into(),
            "[[server]]\naddress = \"10.0.0.1\"\n[[package]]\npath = \"../../etc/shadow\"\n".into(),
        ),
    ]
}

fn agent_cases(c: &mut Corpus) {
    // VerifyPackage
    let file = |path: &str, sha: &str| pb::PackageFile {
        path: path.into(),
        size: 1,
        sha256: sha.into(),
    };
    let good_sha = "0".repeat(64);
    for p in [
        "",
        "relative/file",
        "../../etc/shadow",
        "./x",
        "/tmp/a\0b",
        "\0",
        &format!("/{}", "p".repeat(5000)),
        // Never read (issue 20 item 3): secret files, kernel and device trees.
        "/etc/shadow",
        "/etc/ssh/ssh_host_ed25519_key",
        "/root/.ssh/id_ed25519",
        "/proc/self/environ",
        "/sys/kernel/notes",
        "/dev/sda",
    ] {
        c.0.push(Case {
            target: Target::Agent,
            path: "/preflight.v1.Agent/VerifyPackage".into(),
            streaming: true,
            what: format!("files.path {}", show(p)),
            fields: vec!["path"],
            may_succeed: false,
            body: pb::VerifyPackageRequest {
                files: vec![file(p, &good_sha)],
            }
            .encode_to_vec(),
        });
    }
    for s in [
        "",
        "zz",
        &"0".repeat(63),
        &"0".repeat(65),
        &"g".repeat(64),
        &"0".repeat(5000),
    ] {
        c.0.push(Case {
            target: Target::Agent,
            path: "/preflight.v1.Agent/VerifyPackage".into(),
            streaming: true,
            what: format!("files.sha256 {}", show(s)),
            fields: vec!["sha256"],
            may_succeed: false,
            body: pb::VerifyPackageRequest {
                files: vec![file("/etc/hostname", s)],
            }
            .encode_to_vec(),
        });
    }
    c.0.push(Case {
        target: Target::Agent,
        path: "/preflight.v1.Agent/VerifyPackage".into(),
        streaming: true,
        what: "files: 10,001".into(),
        fields: vec!["files"],
        may_succeed: false,
        body: pb::VerifyPackageRequest {
            files: (0..10_001)
                .map(|i| file(&format!("/tmp/f{i}"), &good_sha))
                .collect(),
        }
        .encode_to_vec(),
    });
    // RunBenchmark
    for (req, field) in bad_benchmarks() {
        c.0.push(Case {
            target: Target::Agent,
            path: "/preflight.v1.Agent/RunBenchmark".into(),
            streaming: true,
            what: format!("benchmark {field}"),
            fields: vec![field],
            may_succeed: false,
            body: req.encode_to_vec(),
        });
    }
    // Probe listeners
    let open = |f: &dyn Fn(&mut pb::OpenProbeListenersRequest)| {
        let mut r = pb::OpenProbeListenersRequest {
            ports: vec![18_081],
            nonce: vec![7; 32],
            ttl_ms: 1000,
            bind_ip: "127.0.0.61".into(),
        };
        f(&mut r);
        r
    };
    for p in PORTS {
        c.agent(
            "Agent/OpenProbeListeners",
            format!("ports [{p}]"),
            &["port"],
            open(&|r| r.ports = vec![p]),
        );
    }
    c.agent(
        "Agent/OpenProbeListeners",
        "ports repeated",
        &["port"],
        open(&|r| r.ports = vec![18_081, 18_081]),
    );
    c.agent(
        "Agent/OpenProbeListeners",
        "ports: 2,000",
        &["port"],
        open(&|r| r.ports = (20_000..22_000).collect()),
    );
    c.agent(
        "Agent/OpenProbeListeners",
        "ports empty",
        &["port"],
        open(&|r| r.ports.clear()),
    );
    for n in [0usize, 1, 31, 33, 5000] {
        c.agent(
            "Agent/OpenProbeListeners",
            format!("nonce of {n} bytes"),
            &["nonce"],
            open(&|r| r.nonce = vec![1; n]),
        );
    }
    for t in [600_001u32, u32::MAX] {
        c.agent(
            "Agent/OpenProbeListeners",
            format!("ttl_ms {t}"),
            &["ttl"],
            open(&|r| r.ttl_ms = t),
        );
    }
    for ip in bad_ips() {
        c.agent(
            "Agent/OpenProbeListeners",
            format!("bind_ip {}", show(&ip)),
            &["bind_ip"],
            open(&|r| r.bind_ip = ip.clone()),
        );
    }
    for id in bad_ids().into_iter().chain(["pl-0000".to_string()]) {
        c.agent(
            "Agent/CloseProbeListeners",
            format!("listeners_id {}", show(&id)),
            &["listeners_id"],
            pb::CloseProbeListenersRequest {
                listeners_id: id.clone(),
            },
        );
        c.agent(
            "Agent/GetBandwidthResult",
            format!("receiver_id {}", show(&id)),
            &["receiver_id"],
            pb::GetBandwidthResultRequest {
                receiver_id: id.clone(),
                wait_ms: 0,
            },
        );
        c.agent(
            "Agent/ConfirmFirewall",
            format!("change_id {}", show(&id)),
            &["change_id"],
            pb::ConfirmFirewallRequest {
                change_id: id.clone(),
                caller: Some(caller()),
            },
        );
    }
    // RunProbes
    let probes = |f: &dyn Fn(&mut pb::RunProbesRequest)| {
        let mut r = pb::RunProbesRequest {
            targets: vec![pb::ProbeTarget {
                ip: "127.0.0.1".into(),
                port: 1,
            }],
            nonce: vec![7; 32],
            timeout_ms: 100,
            concurrency: 1,
        };
        f(&mut r);
        r
    };
    for ip in bad_ips().into_iter().chain([String::new()]) {
        c.agent(
            "Agent/RunProbes",
            format!("targets.ip {}", show(&ip)),
            &["ip"],
            probes(&|r| r.targets[0].ip = ip.clone()),
        );
    }
    for p in PORTS {
        c.agent(
            "Agent/RunProbes",
            format!("targets.port {p}"),
            &["port"],
            probes(&|r| r.targets[0].port = p),
        );
    }
    for t in [0u32, 30_001, u32::MAX] {
        c.agent(
            "Agent/RunProbes",
            format!("timeout_ms {t}"),
            &["timeout"],
            probes(&|r| r.timeout_ms = t),
        );
    }
    c.agent(
        "Agent/RunProbes",
        "targets: 5,000",
        &["targets"],
        probes(&|r| {
            r.targets = (0..5000)
                .map(|i| pb::ProbeTarget {
                    ip: "127.0.0.1".into(),
                    port: 1 + i,
                })
                .collect()
        }),
    );
    // Bandwidth
    let recv = |f: &dyn Fn(&mut pb::StartBandwidthReceiverRequest)| {
        let mut r = pb::StartBandwidthReceiverRequest {
            token: vec![9; 32],
            streams: 1,
            duration_ms: 1000,
            reverse: false,
            ttl_ms: 1000,
            bind_ip: "127.0.0.61".into(),
            port: 0,
        };
        f(&mut r);
        r
    };
    for n in [0usize, 16, 31, 33, 4096] {
        c.agent(
            "Agent/StartBandwidthReceiver",
            format!("token of {n} bytes"),
            &["token"],
            recv(&|r| r.token = vec![1; n]),
        );
    }
    for s in [0u32, 17, u32::MAX] {
        c.agent(
            "Agent/StartBandwidthReceiver",
            format!("streams {s}"),
            &["streams"],
            recv(&|r| r.streams = s),
        );
    }
    for d in [0u32, 60_001, u32::MAX] {
        c.agent(
            "Agent/StartBandwidthReceiver",
            format!("duration_ms {d}"),
            &["duration"],
            recv(&|r| r.duration_ms = d),
        );
    }
    for t in [600_001u32, u32::MAX] {
        c.agent(
            "Agent/StartBandwidthReceiver",
            format!("ttl_ms {t}"),
            &["ttl"],
            recv(&|r| r.ttl_ms = t),
        );
    }
    for p in [65_536u32, u32::MAX] {
        c.agent(
            "Agent/StartBandwidthReceiver",
            format!("port {p}"),
            &["port"],
            recv(&|r| r.port = p),
        );
    }
    for ip in bad_ips() {
        c.agent(
            "Agent/StartBandwidthReceiver",
            format!("bind_ip {}", show(&ip)),
            &["bind_ip"],
            recv(&|r| r.bind_ip = ip.clone()),
        );
    }
    let send = |f: &dyn Fn(&mut pb::RunBandwidthSenderRequest)| {
        let mut r = pb::RunBandwidthSenderRequest {
            address: "127.0.0.61:1".into(),
            token: vec![9; 32],
            streams: 1,
            duration_ms: 100,
            reverse: false,
        };
        f(&mut r);
        r
    };
    for a in bad_ips().into_iter().chain([
        "127.0.0.1:0".into(),
        "127.0.0.1:65536".into(),
        String::new(),
    ]) {
        if a == "10.0.0.1:80" {
            continue; // a well-formed address
        }
        c.agent(
            "Agent/RunBandwidthSender",
            format!("address {}", show(&a)),
            &["address"],
            send(&|r| r.address = a.clone()),
        );
    }
    for n in [0usize, 31, 33] {
        c.agent(
            "Agent/RunBandwidthSender",
            format!("token of {n} bytes"),
            &["token"],
            send(&|r| r.token = vec![1; n]),
        );
    }
    for s in [0u32, 17, u32::MAX] {
        c.agent(
            "Agent/RunBandwidthSender",
            format!("streams {s}"),
            &["streams"],
            send(&|r| r.streams = s),
        );
    }
    for d in [0u32, 60_001, u32::MAX] {
        c.agent(
            "Agent/RunBandwidthSender",
            format!("duration_ms {d}"),
            &["duration"],
            send(&|r| r.duration_ms = d),
        );
    }
    for w in [120_001u32, u32::MAX] {
        c.agent(
            "Agent/GetBandwidthResult",
            format!("wait_ms {w}"),
            &["wait_ms"],
            pb::GetBandwidthResultRequest {
                receiver_id: "bw-0".into(),
                wait_ms: w,
            },
        );
    }
    // Harden on the agent (its catalog works on a scratch root).
    let harden = |f: &dyn Fn(&mut pb::HardenRequest)| {
        let mut r = pb::HardenRequest {
            operation: pb::HardenOperation::Audit as i32,
            caller: Some(caller()),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    for op in [0i32, 6, 99, -1, i32::MAX] {
        c.agent(
            "Agent/Harden",
            format!("operation {op}"),
            &["operation"],
            harden(&|r| r.operation = op),
        );
    }
    c.agent(
        "Agent/Harden",
        "caller missing",
        &["caller"],
        harden(&|r| r.caller = None),
    );
    for (field, f) in [
        (
            "caller.user",
            &(|c: &mut pb::HardenCaller| c.user.clear()) as &dyn Fn(&mut pb::HardenCaller),
        ),
        ("caller.user", &|c: &mut pb::HardenCaller| {
            c.user = "u".repeat(300)
        }),
        ("caller.role", &|c: &mut pb::HardenCaller| c.role = 99),
        ("caller.role", &|c: &mut pb::HardenCaller| c.role = -1),
        ("caller.role", &|c: &mut pb::HardenCaller| c.role = 0),
        ("caller.request_id", &|c: &mut pb::HardenCaller| {
            c.request_id.clear()
        }),
        ("caller.request_id", &|c: &mut pb::HardenCaller| {
            c.request_id = "r".repeat(300)
        }),
    ] {
        let mut cl = caller();
        f(&mut cl);
        c.agent(
            "Agent/Harden",
            field,
            &["caller"],
            harden(&|r| r.caller = Some(cl.clone())),
        );
    }
    for id in bad_ids().into_iter().chain(["no.such_check".to_string()]) {
        c.agent(
            "Agent/Harden",
            format!("check_ids [{}]", show(&id)),
            &["check_ids"],
            harden(&|r| r.check_ids = vec![id.clone()]),
        );
    }
    for b in bad_ids() {
        if b.is_empty() {
            continue;
        }
        c.agent(
            "Agent/Harden",
            format!("rollback backup_id {}", show(&b)),
            &["backup_id"],
            harden(&|r| {
                r.operation = pb::HardenOperation::Rollback as i32;
                r.backup_id = b.clone();
            }),
        );
    }
    c.agent(
        "Agent/Harden",
        "firewall with audit",
        &["firewall"],
        harden(&|r| r.firewall = Some(pb::FirewallChange::default())),
    );
    for p in PORTS {
        c.agent(
            "Agent/Harden",
            format!("firewall.ports.port {p}"),
            &["port"],
            harden(&|r| {
                r.operation = pb::HardenOperation::Apply as i32;
                r.check_ids = vec!["fw.allowlist_ports".into()];
                r.firewall = Some(pb::FirewallChange {
                    ports: vec![fw_port(p)],
                    allow_port: true,
                    confirm_timeout_s: 30,
                    ..Default::default()
                });
            }),
        );
    }
    for proto in [3, 99, -1] {
        c.agent(
            "Agent/Harden",
            format!("firewall.ports.proto {proto}"),
            &["firewall.ports.proto"],
            harden(&|r| {
                r.operation = pb::HardenOperation::Apply as i32;
                r.check_ids = vec!["fw.allowlist_ports".into()];
                r.firewall = Some(pb::FirewallChange {
                    ports: vec![pb::FirewallPort {
                        proto,
                        ..fw_port(8080)
                    }],
                    allow_port: true,
                    confirm_timeout_s: 30,
                    ..Default::default()
                });
            }),
        );
    }
    for h in ["md5", "bogus", "\0", &"h".repeat(300)] {
        c.agent(
            "Agent/Harden",
            format!("policy.pw_hash {}", show(h)),
            &["pw_hash", "policy"],
            harden(&|r| {
                r.policy = Some(pb::HardenPolicy {
                    pw_hash: Some(h.to_string()),
                    ..Default::default()
                })
            }),
        );
    }
}

fn caller() -> pb::HardenCaller {
    pb::HardenCaller {
        user: "admin".into(),
        role: pb::Role::Admin as i32,
        request_id: "hr-corpus".into(),
    }
}

/// `join`: a valid join token, so that a malformed CSR gets past authentication (the token is
/// checked first) and is refused for itself.
fn registry_cases(c: &mut Corpus, join: &str) {
    let enroll = |f: &dyn Fn(&mut pb::EnrollRequest)| {
        let mut r = pb::EnrollRequest {
            join_token: format!("pfj_{}", "0".repeat(64)),
            name: "corpus-agent".into(),
            csr_pem: String::new(),
            agent_version: "1".into(),
            hostname: "h".into(),
        };
        f(&mut r);
        r
    };
    for id in bad_ids() {
        c.add(
            Target::Controller,
            "Registry/Enroll",
            format!("name {}", show(&id)),
            &["name"],
            enroll(&|r| r.name = id.clone()),
        );
    }
    for (field, f) in [
        (
            "join_token",
            &(|r: &mut pb::EnrollRequest| r.join_token.clear()) as &dyn Fn(&mut pb::EnrollRequest),
        ),
        ("join_token", &|r: &mut pb::EnrollRequest| {
            r.join_token = "t".repeat(300)
        }),
        ("csr_pem", &|r: &mut pb::EnrollRequest| {
            r.csr_pem = "c".repeat(20_000)
        }),
        ("csr_pem", &|r: &mut pb::EnrollRequest| {
            r.join_token = join.to_string();
            r.csr_pem =
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                    .into()
        }),
        ("agent_version", &|r: &mut pb::EnrollRequest| {
            r.agent_version = "v".repeat(100)
        }),
        ("hostname", &|r: &mut pb::EnrollRequest| {
            r.hostname = "h".repeat(300)
        }),
    ] {
        c.add(
            Target::Controller,
            "Registry/Enroll",
            field,
            &[field],
            enroll(&f),
        );
    }
    let hb = |f: &dyn Fn(&mut pb::HeartbeatRequest)| {
        let mut r = pb::HeartbeatRequest {
            agent_version: "1".into(),
            hostname: "h".into(),
            addresses: vec![],
            listen_addr: "127.0.0.61:1".into(),
        };
        f(&mut r);
        r
    };
    for a in bad_ips().into_iter().chain(["127.0.0.1:70000".into()]) {
        if a == "10.0.0.1:80" {
            continue;
        }
        c.add(
            Target::RegistryAsAgent,
            "Registry/Heartbeat",
            format!("listen_addr {}", show(&a)),
            &["listen_addr"],
            hb(&|r| r.listen_addr = a.clone()),
        );
    }
    for (field, f) in [
        (
            "agent_version",
            &(|r: &mut pb::HeartbeatRequest| r.agent_version = "v".repeat(100))
                as &dyn Fn(&mut pb::HeartbeatRequest),
        ),
        ("hostname", &|r: &mut pb::HeartbeatRequest| {
            r.hostname = "h".repeat(300)
        }),
        ("addresses", &|r: &mut pb::HeartbeatRequest| {
            r.addresses = vec!["a".into(); 300]
        }),
        ("addresses", &|r: &mut pb::HeartbeatRequest| {
            r.addresses = vec!["a".repeat(100)]
        }),
    ] {
        c.add(
            Target::RegistryAsAgent,
            "Registry/Heartbeat",
            field,
            &[field],
            hb(&f),
        );
    }
    for csr in ["", "garbage", &"c".repeat(20_000)] {
        c.add(
            Target::RegistryAsAgent,
            "Registry/Renew",
            format!("csr_pem {}", show(csr)),
            &["csr_pem"],
            pb::RenewRequest {
                csr_pem: csr.to_string(),
            },
        );
    }
}

/// Cases for every method in the descriptors: malformed protobuf and oversized messages.
fn wire_cases(c: &mut Corpus) {
    // A varint that never ends; a length beyond the message; a wrong wire type for field 1;
    // an end-group without a start; groups nested 1,000 deep; a 5 MiB message.
    // Field 15 start-group tags, then as many end-group tags.
    let nested = [vec![0x7b; 1000], vec![0x7c; 1000]].concat();
    let mut deep_len = Vec::new();
    for _ in 0..200 {
        // field 15, length-delimited, nested inside each other (as an unknown field).
        deep_len = [vec![0x7a], varint(deep_len.len() as u64), deep_len].concat();
    }
    let mut big = vec![0xfa, 0x3e]; // field 1000, length-delimited
    big.extend(varint(5 << 20));
    big.extend(vec![b'x'; 5 << 20]);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("an unterminated varint", vec![0x08, 0xff, 0xff, 0xff]),
        ("a length past the end", vec![0x0a, 0x7f, b'a']),
        (
            "field 1 with a fixed64 wire type",
            vec![0x09, 1, 2, 3, 4, 5, 6, 7, 8],
        ),
        ("an end group alone", vec![0x0c]),
        ("invalid UTF-8 in field 1", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("field number 0", vec![0x00, 0x01]),
        ("groups nested 1,000 deep", nested),
        ("messages nested 200 deep", deep_len),
        ("a 5 MiB message", big),
    ];
    for m in methods() {
        if m.service == "Registry" {
            continue;
        }
        let target = if m.service == "Agent" {
            Target::Agent
        } else {
            Target::Controller
        };
        for (what, body) in &bodies {
            c.0.push(Case {
                target,
                path: m.path.clone(),
                streaming: m.server_streaming,
                what: what.to_string(),
                fields: vec![],
                may_succeed: true,
                body: body.clone(),
            });
        }
    }
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A good answer for a bad request, or why it is not.
fn judge(case: &Case, r: &Result<(), tonic::Status>) -> Result<(), String> {
    let s = match r {
        Ok(()) if case.may_succeed => return Ok(()),
        Ok(()) => return Err("succeeded".into()),
        Err(s) => s,
    };
    match s.code() {
        Code::NotFound | Code::FailedPrecondition | Code::OutOfRange | Code::ResourceExhausted => {
            Ok(())
        }
        Code::InvalidArgument => {
            let m = s.message();
            if case.fields.is_empty() || case.fields.iter().any(|f| m.contains(f)) {
                Ok(())
            } else {
                Err(format!(
                    "INVALID_ARGUMENT does not name {:?}: {m}",
                    case.fields
                ))
            }
        }
        c => Err(format!("{c:?}: {}", s.message())),
    }
}

#[test]
fn a_thousand_bad_requests_get_clear_errors_and_the_servers_keep_serving() {
    let ctl = Controller::start(&["--dev-clock", "--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "bi-1", "127.0.0.61").unwrap();
    a.start_with(&[OsStr::new("--harden-root"), root.path().as_os_str()])
        .unwrap();
    let addr = ctl.wait_online("bi-1").to_string();
    let ca = ca_of(&ctl);
    let controller_id = ca.issue_controller(&[], Duration::from_secs(3600)).unwrap();
    let agent_id = a.identity().unwrap();

    let mut corpus = Corpus(Vec::new());
    controller_cases(&mut corpus, "bi-1");
    agent_cases(&mut corpus);
    // The live bandwidth RPCs take the same requests and refuse the same bad ones up front.
    let live: Vec<Case> = corpus
        .0
        .iter()
        .filter_map(|c| {
            let path = match c.path.as_str() {
                "/preflight.v1.Controller/Bandwidth" => "/preflight.v1.Controller/BandwidthLive",
                "/preflight.v1.Agent/RunBandwidthSender" => {
                    "/preflight.v1.Agent/RunBandwidthSenderLive"
                }
                _ => return None,
            };
            Some(Case {
                target: c.target,
                path: path.into(),
                streaming: true,
                what: c.what.clone(),
                fields: c.fields.clone(),
                may_succeed: c.may_succeed,
                body: c.body.clone(),
            })
        })
        .collect();
    assert!(live.len() >= 20, "only {} live bandwidth cases", live.len());
    corpus.0.extend(live);
    registry_cases(&mut corpus, &ctl.join_token("7d").unwrap());
    wire_cases(&mut corpus);
    let cases = corpus.0;
    assert!(cases.len() >= 1000, "only {} cases", cases.len());

    let token = ctl.admin_token.clone();
    rt().block_on(async {
        let ctl_ch = controller_channel(&ctl, None).await.unwrap();
        let reg_ch = controller_channel(&ctl, Some(&agent_id)).await.unwrap();
        let agent_ch = agent_channel(&addr, ca.cert_pem(), Some(&controller_id), "bi-1")
            .await
            .unwrap();
        let alive = |ctl_ch: Channel, agent_ch: Channel, token: String| async move {
            call(
                &ctl_ch,
                "/preflight.v1.Controller/WhoAmI",
                false,
                Some(&token),
                (),
            )
            .await
            .map_err(|s| format!("controller: {s:?}"))?;
            call(
                &agent_ch,
                "/preflight.v1.Agent/ListListeningPorts",
                false,
                None,
                (),
            )
            .await
            .map_err(|s| format!("agent: {s:?}"))
        };
        let started = Instant::now();
        let mut failures = Vec::new();
        let mut by_code = std::collections::BTreeMap::<String, usize>::new();
        for (i, case) in cases.iter().enumerate() {
            let (ch, tok) = match case.target {
                Target::Controller => (&ctl_ch, Some(token.as_str())),
                Target::Agent => (&agent_ch, None),
                Target::RegistryAsAgent => (&reg_ch, None),
            };
            let r = call(ch, &case.path, case.streaming, tok, Raw(case.body.clone())).await;
            *by_code
                .entry(match &r {
                    Ok(()) => "OK".to_string(),
                    Err(s) => format!("{:?}", s.code()),
                })
                .or_default() += 1;
            if let Err(why) = judge(case, &r) {
                failures.push(format!("{} {}: {why}", case.path, case.what));
            }
            if i % 100 == 99 {
                alive(ctl_ch.clone(), agent_ch.clone(), token.clone())
                    .await
                    .unwrap_or_else(|e| panic!("servers stopped serving after case {i}: {e}"));
            }
        }
        alive(ctl_ch.clone(), agent_ch.clone(), token.clone())
            .await
            .expect("both servers still serve after the corpus");
        println!(
            "bad-input corpus: {} cases tried in {:.1} s; answers {by_code:?}",
            cases.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            failures.is_empty(),
            "{} of {} bad requests were answered wrongly:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    });
    // The agent's status is still online at the controller.
    ctl.wait_online("bi-1");
}
