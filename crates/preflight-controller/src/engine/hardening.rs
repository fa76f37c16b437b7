//! Hardening and the workflow: the servers of a batch (from its attached plan) as agents, and
//! the hardening facts of those agents recorded in the workflow, where the `deploy` and
//! `harden` gates read them (WORKFLOW.md).
//!
//! A plan names each server by hostname (`PlanFacts::hosts`); a host maps to the enrolled,
//! unrevoked agent whose id is that name, else whose address is that name (when it is an IP) or
//! the server's address in the batch's stored plan, else whose reported hostname is that name
//! when exactly one agent reports it.
//!
//! With the batch's plan stored on the controller (attached with its text), each host's
//! planned ports go into its facts: the firewall allow-list confirmed in its evidence must
//! cover them, and the `harden` gate names the missing ones.
//!
//! Recording: after every hardening request that appended evidence (audit, verify, apply,
//! rollback, firewall allow), and when a plan is attached to a batch, each unfinished batch whose
//! plan covers one of the agents concerned gets a new `HardeningSummary` computed from the
//! evidence log (`hardening_facts_if_any`), executed as `Command::RecordHardening` by
//! `Actor::System`. Hosts that map to no agent, or whose agent has no evidence yet, are left
//! out of the summary, so the gate names them ("HOST: no hardening evidence"). Recordings are serialised so a slow one never
//! overwrites a newer one, and an unchanged summary is not recorded again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use preflight_core::evidence::{EvidenceOperation, EvidenceStatus, SignedRecord};
use preflight_core::net::PortSpec;
use preflight_core::workflow::{Actor, Command, HardeningSummary, HostHardening, Timestamp};
use preflight_store::evidence::EvidenceStore;
use preflight_store::{AgentRecord, Store, StoreError};

use crate::agents::agent_for_host;
use crate::engine::workflow::Engine;
use crate::Clock;

/// The ports a server's plan needs, one port per entry (`8080/tcp`).
pub(crate) type PlannedPorts = BTreeSet<PortSpec>;

/// Hardening facts per plan host.
type HostFacts = BTreeMap<String, HostHardening>;

/// What hardening needs of the controller: the registry (agents), the evidence log's records,
/// the workflow, the clock, and the lock that serialises recordings.
pub(crate) struct Hardening<'a> {
    pub store: &'a Store,
    pub evidence: &'a EvidenceStore,
    pub workflow: &'a Engine,
    pub clock: &'a dyn Clock,
    /// Held for a whole recording (compute + execute), so the last one executed is the newest.
    pub recording: &'a tokio::sync::Mutex<()>,
    /// What the controller does after a workflow command (a recording goes through the one
    /// reacting `engine::workflow::execute`, like every other command).
    pub reactions: &'a dyn crate::engine::workflow::Reactions,
}

/// Why the servers of a batch cannot be named as agents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HardeningError {
    #[error("no batch {0:?}: `preflight batch list` lists them")]
    NoBatch(String),
    #[error("batch {0}: no plan attached, so its servers are unknown; attach one with `preflight plan attach {0} PLAN_FILE`, or name agents with --agent")]
    NoPlan(String),
    #[error("batch {0}: the attached plan lists no servers")]
    NoServers(String),
    /// Plan hosts that map to no agent (each problem names its host).
    #[error("batch {batch}: {}; enroll an agent on each such server (`preflight token create`, then `preflight-agent enroll --name HOST ...` there), or fix the plan", problems.join("; "))]
    Unmapped {
        batch: String,
        problems: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The id of the agent serving plan host `host` (see [`agent_for_host`]), or why there is none.
pub(crate) fn resolve_host(
    host: &str,
    address: Option<IpAddr>,
    agents: &[AgentRecord],
) -> Result<String, String> {
    agent_for_host(host, address, agents).map(|a| a.id.clone())
}

/// A server of a batch's plan: its name and, when the plan is stored, its address and planned
/// ports (`8080/tcp`).
struct PlanHost {
    name: String,
    address: Option<IpAddr>,
    planned: Option<PlannedPorts>,
}

impl Hardening<'_> {
    /// The hosts of a batch's plan facts, completed from the stored plan with that digest (if the
    /// attachment carried it).
    fn plan_hosts_of(&self, digest: &str, hosts: &[String]) -> Vec<PlanHost> {
        let plan = match self.workflow.plan_text(digest) {
            Ok(Some(t)) => preflight_core::plan::Plan::from_toml("stored plan", &t).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "stored plan unreadable; hosts matched by name only");
                None
            }
        };
        hosts
            .iter()
            .map(|h| {
                let server = plan.as_ref().and_then(|p| p.server(h));
                PlanHost {
                    name: h.clone(),
                    address: server.map(|s| s.address),
                    planned: server.map(|s| {
                        s.planned_ports()
                            .iter()
                            .map(|p| preflight_core::net::PortSpec::single(p.protocol, p.port))
                            .collect()
                    }),
                }
            })
            .collect()
    }

    /// The plan hosts of batch `batch` (an id the service checked), or why there are none.
    async fn plan_hosts(&self, batch: &str) -> Result<Vec<PlanHost>, HardeningError> {
        let plan = self
            .workflow
            .read(|w| w.batch(batch).map(|b| b.plan.clone()))
            .await
            .ok_or_else(|| HardeningError::NoBatch(batch.to_string()))?;
        let plan = plan.ok_or_else(|| HardeningError::NoPlan(batch.to_string()))?;
        if plan.hosts.is_empty() {
            return Err(HardeningError::NoServers(batch.to_string()));
        }
        Ok(self.plan_hosts_of(&plan.digest, &plan.hosts))
    }

    /// The agents serving every server of `batch` (deduplicated, in plan order), each with its
    /// server's planned ports when the plan is stored; a host that maps to no agent is an error
    /// naming it and the fix.
    pub(crate) async fn batch_agents_planned(
        &self,
        batch: &str,
    ) -> Result<Vec<(String, Option<PlannedPorts>)>, HardeningError> {
        let hosts = self.plan_hosts(batch).await?;
        let agents = self.store.agents()?;
        let mut out: Vec<(String, Option<PlannedPorts>)> = Vec::new();
        let mut problems = Vec::new();
        for h in hosts {
            match resolve_host(&h.name, h.address, &agents) {
                Ok(id) if !out.iter().any(|(i, _)| *i == id) => out.push((id, h.planned)),
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(HardeningError::Unmapped {
                batch: batch.to_string(),
                problems,
            });
        }
        Ok(out)
    }

    /// [`batch_agents_planned`] without the ports.
    pub(crate) async fn batch_agents(&self, batch: &str) -> Result<Vec<String>, HardeningError> {
        Ok(self
            .batch_agents_planned(batch)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Records the hardening facts of every unfinished batch with a plan that covers one of
    /// `touched` (all such batches when `None`), or only of batch `only`. Failures are logged:
    /// the evidence is in the log either way, and the next recording catches up.
    pub(crate) async fn record_hardening(
        &self,
        touched: Option<&BTreeSet<String>>,
        only: Option<&str>,
    ) {
        let _serial = self.recording.lock().await;
        let batches: Vec<(String, String, Vec<String>, Option<HostFacts>)> = self
            .workflow
            .read(|w| {
                w.batches
                    .values()
                    .filter(|b| !b.stage.is_final())
                    .filter(|b| only.is_none_or(|o| o == b.id))
                    .filter_map(|b| {
                        let p = b.plan.as_ref()?;
                        Some((
                            b.id.clone(),
                            p.digest.clone(),
                            p.hosts.clone(),
                            b.hardening.as_ref().map(|h| h.hosts.clone()),
                        ))
                    })
                    .collect()
            })
            .await;
        if batches.is_empty() {
            return;
        }
        let agents = match self.store.agents() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "hardening not recorded in the workflow: agents unreadable");
                return;
            }
        };
        for (batch, digest, hosts, current) in batches {
            let mapped: Vec<(PlanHost, String)> = self
                .plan_hosts_of(&digest, &hosts)
                .into_iter()
                .filter_map(|h| {
                    resolve_host(&h.name, h.address, &agents)
                        .ok()
                        .map(|id| (h, id))
                })
                .collect();
            if mapped.is_empty()
                || touched.is_some_and(|t| !mapped.iter().any(|(_, id)| t.contains(id)))
            {
                continue;
            }
            let evidence = self.evidence.clone();
            let facts = tokio::task::spawn_blocking(move || {
                let mut out = BTreeMap::new();
                for (h, id) in mapped {
                    if let Some(f) = hardening_facts_if_any(&evidence, &id, h.planned.as_ref())? {
                        out.insert(h.name, f);
                    }
                }
                Ok::<_, StoreError>(out)
            })
            .await;
            let hosts = match facts {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::warn!(%batch, error = %e, "hardening not recorded in the workflow: evidence unreadable");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%batch, error = %e, "hardening facts task failed");
                    continue;
                }
            };
            if current.as_ref() == Some(&hosts) || (current.is_none() && hosts.is_empty()) {
                continue;
            }
            let cmd = Command::RecordHardening {
                batch: batch.clone(),
                summary: HardeningSummary {
                    recorded_at: Timestamp(self.clock.now_ms()),
                    hosts,
                },
            };
            match crate::engine::workflow::execute(
                self.workflow,
                self.reactions,
                self.clock.now_ms(),
                &Actor::System,
                cmd,
                None,
            )
            .await
            {
                Ok(_) => tracing::info!(%batch, "hardening facts recorded in the workflow"),
                Err(e) => {
                    tracing::warn!(%batch, error = %e, "hardening facts not recorded in the workflow")
                }
            }
        }
    }
}

/// Hardening facts of one agent, or `None` when it has no evidence at all. `planned`: the
/// server's planned ports from the batch's stored plan, which the confirmed allow-list must
/// cover (see [`facts_of`]).
pub(crate) fn hardening_facts_if_any(
    ev: &EvidenceStore,
    agent: &str,
    planned: Option<&PlannedPorts>,
) -> Result<Option<HostHardening>, StoreError> {
    let recs = ev.records_of(agent)?;
    Ok((!recs.is_empty()).then(|| facts_of(&recs, planned)))
}

/// The facts of one host from its records in log order. With `planned` (the host's planned
/// ports from the batch's stored plan), the firewall fact is whether the latest known
/// allow-list (the allowed ports of the latest `fw.allowlist_ports` record that states them,
/// [`preflight_core::evidence::EvidenceRecord::allowed_ports`], never a pending apply) holds
/// every planned port, and the missing ones are named. With no known allow-list, a
/// `not_applicable` firewall (catalog root other than `/`, as for fixture trees) counts as
/// covering, as it does without `planned`, where the latest status decides (compliant or not
/// applicable).
fn facts_of(recs: &[(u64, SignedRecord)], planned: Option<&PlannedPorts>) -> HostHardening {
    facts_and_firewall(recs, planned).0
}

/// The firewall fact of a host as `harden status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirewallFact {
    /// The allow-list holds the planned ports, or its latest check is compliant.
    Confirmed,
    /// No live firewall was judged: the catalog ran on a root prefix other than `/`, as for
    /// fixture trees; the gate lets it pass.
    NotApplicable,
    /// Neither.
    NotConfirmed,
    /// No evidence of the host at all.
    NeverAudited,
}

/// A planned port as the workflow names a missing one (`8080/tcp`).
fn port_name(p: &PortSpec) -> String {
    p.to_string()
}

/// [`facts_of`], and the firewall fact shown by `harden status`.
pub(crate) fn facts_and_firewall(
    recs: &[(u64, SignedRecord)],
    planned: Option<&PlannedPorts>,
) -> (HostHardening, FirewallFact) {
    let mut last_change: Option<u64> = None;
    let mut last_apply_or_rollback: Option<EvidenceOperation> = None;
    let mut last_verify: Option<u64> = None;
    let mut latest: BTreeMap<String, EvidenceStatus> = BTreeMap::new();
    let mut last_list: Option<Vec<PortSpec>> = None;
    for (idx, s) in recs {
        let r = &s.record;
        match r.operation {
            EvidenceOperation::Apply | EvidenceOperation::Rollback => {
                if r.check_id != "fw.allowlist_ports" {
                    last_apply_or_rollback = Some(r.operation);
                }
                if r.diff_applied.is_some() {
                    last_change = Some(*idx);
                }
            }
            EvidenceOperation::Verify => last_verify = Some(*idx),
            EvidenceOperation::Audit => {}
        }
        if r.check_id == "fw.allowlist_ports" && r.operation == EvidenceOperation::Apply {
            // A pending change says nothing about compliance yet.
            continue;
        }
        if r.check_id == "fw.allowlist_ports" {
            if let Some(list) = r.allowed_ports() {
                last_list = Some(list);
            }
        }
        latest.insert(r.check_id.clone(), r.status);
    }
    let fw_status = latest.get("fw.allowlist_ports").copied();
    let (fw_ok, firewall_missing_ports, shown) = match (planned, &last_list, fw_status) {
        // The host's real allow-list is known: it decides, whatever the catalog said of a
        // fixture tree.
        (Some(planned), Some(allowed), _) => {
            let covered = |p: &PortSpec| {
                p.ports.ports().all(|port| {
                    allowed.iter().any(|a| {
                        a.proto == p.proto && a.ports.first <= port && port <= a.ports.last
                    })
                })
            };
            let missing: Vec<String> = planned
                .iter()
                .filter(|p| !covered(p))
                .map(port_name)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let shown = if missing.is_empty() {
                FirewallFact::Confirmed
            } else {
                FirewallFact::NotConfirmed
            };
            (missing.is_empty(), missing, shown)
        }
        (_, _, Some(EvidenceStatus::NotApplicable)) => {
            (true, Vec::new(), FirewallFact::NotApplicable)
        }
        (None, _, Some(EvidenceStatus::Compliant)) => (true, Vec::new(), FirewallFact::Confirmed),
        _ => (false, Vec::new(), FirewallFact::NotConfirmed),
    };
    let shown = if recs.is_empty() {
        FirewallFact::NeverAudited
    } else {
        shown
    };
    // `unknown` (a file the check cannot parse, a tool that did not answer) is not evidence of
    // compliance: it blocks the gate like a violation, marked so the deployer knows to look.
    let noncompliant: Vec<String> = latest
        .iter()
        .filter_map(|(id, s)| match s {
            EvidenceStatus::NonCompliant => Some(id.clone()),
            EvidenceStatus::Unknown => Some(format!("{id} (unknown)")),
            _ => None,
        })
        .collect();
    let facts = HostHardening {
        baseline_applied: last_apply_or_rollback == Some(EvidenceOperation::Apply),
        all_compliant: !latest.is_empty() && noncompliant.is_empty(),
        verified_after_last_change: match (last_verify, last_change) {
            (Some(v), Some(c)) => v > c,
            (Some(_), None) => true,
            (None, _) => false,
        },
        firewall_covers_planned_ports: fw_ok,
        noncompliant,
        firewall_missing_ports,
    };
    (facts, shown)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn agent(id: &str, host: &str, listen: &str, addrs: &[&str]) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            hostname: host.into(),
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
            listen_addr: listen.into(),
            observed_ip: String::new(),
            version: "0".into(),
            enrolled_at_ms: 0,
            last_heartbeat_ms: 0,
            cert_sha256: String::new(),
            cert_not_after_unix: 0,
            revoked: false,
            ..Default::default()
        }
    }

    #[test]
    fn hosts_map_by_id_then_address_then_unique_hostname() {
        let mut gone = agent("old-01", "app-9", "10.0.0.9:7444", &[]);
        gone.revoked = true;
        let agents = vec![
            agent("web-01", "h1", "10.0.0.5:7444", &["10.0.0.5/24"]),
            agent(
                "db-01",
                "h2",
                "0.0.0.0:7444",
                &["10.0.0.6/24", "fd00::6/64"],
            ),
            agent("a", "twin", "10.0.0.7:7444", &[]),
            agent("b", "twin", "10.0.0.8:7444", &[]),
            gone,
        ];
        let r = |h: &str| resolve_host(h, None, &agents);
        assert_eq!(r("web-01").as_deref(), Ok("web-01"));
        assert_eq!(r("10.0.0.5").as_deref(), Ok("web-01"));
        assert_eq!(r("10.0.0.6").as_deref(), Ok("db-01"));
        assert_eq!(r("fd00::6").as_deref(), Ok("db-01"));
        assert_eq!(r("H2").as_deref(), Ok("db-01"));
        let e = r("twin").expect_err("ambiguous");
        assert!(e.contains("a, b") && e.contains("--name twin"), "{e}");
        let e = r("app-9").expect_err("revoked");
        assert!(e.starts_with("app-9: no enrolled agent"), "{e}");
        assert!(r("10.0.0.9").is_err());
        // The stored plan's address of a named host: an ambiguous hostname, or one no agent
        // reports, maps by the plan's address.
        let at = |h: &str, ip: &str| resolve_host(h, ip.parse().ok(), &agents);
        assert_eq!(at("twin", "10.0.0.8").as_deref(), Ok("b"));
        assert_eq!(at("soa-01", "10.0.0.6").as_deref(), Ok("db-01"));
        assert!(at("soa-01", "10.0.0.99").is_err());
    }

    #[test]
    fn an_address_two_agents_claim_is_an_error_not_a_guess() {
        // Two sites with the same private address, both agents reporting it on an interface;
        // the controller dials one of them there.
        let agents = vec![
            agent("site1-app", "app", "0.0.0.0:7444", &["10.0.0.5/24"]),
            agent("site2-app", "app", "0.0.0.0:7444", &["10.0.0.5/24"]),
        ];
        let e = resolve_host("app-01", "10.0.0.5".parse().ok(), &agents).expect_err("ambiguous");
        assert!(
            e.contains("site1-app, site2-app") && e.contains("10.0.0.5"),
            "{e}"
        );
        // The address the controller dials decides over interface lists.
        let mut dialled = agents.clone();
        dialled[1].listen_addr = "10.0.0.5:7444".into();
        assert_eq!(
            resolve_host("app-01", "10.0.0.5".parse().ok(), &dialled).as_deref(),
            Ok("site2-app")
        );
        // The agent's id naming the plan host decides first.
        assert_eq!(
            resolve_host("site1-app", "10.0.0.5".parse().ok(), &agents).as_deref(),
            Ok("site1-app")
        );
    }

    use preflight_core::evidence::{self, EvidenceRecord, Operator};
    use preflight_core::net::Proto;
    use preflight_core::role::Role;
    use preflight_harden::firewall::audit::{allow_list_facts, check_allowlist_ports, AllowRule};
    use preflight_harden::firewall::{AllowList, Backend, Listener, PlannedPort};
    use EvidenceOperation::{Apply, Audit, Verify};
    use EvidenceStatus::{Compliant, NonCompliant, NotApplicable, Unknown};

    /// A record of web-01 (by amy, deployer) at index and time `idx`, unsigned.
    pub(crate) fn rec(
        idx: u64,
        check: &str,
        op: EvidenceOperation,
        st: EvidenceStatus,
        diff: bool,
    ) -> (u64, SignedRecord) {
        let record = EvidenceRecord {
            format_version: evidence::RECORD_FORMAT_VERSION,
            agent_id: "web-01".into(),
            agent_cert_sha256: "00".repeat(32),
            host: "web-01".into(),
            check_id: check.into(),
            catalog_version: "1".into(),
            mlps_refs: vec![],
            cis_refs: vec![],
            operation: op,
            observed: String::new(),
            files_read: BTreeMap::new(),
            expected: String::new(),
            status: st,
            reason: None,
            diff_applied: diff.then(|| "-a\n+b\n".to_string()),
            backup_ref: None,
            operator: Operator {
                user: "amy".into(),
                role: Role::Deployer,
            },
            time_utc_ms: idx,
            agent_version: "0".into(),
            controller_request_id: format!("hr-{idx}"),
            firewall: None,
        };
        (
            idx,
            SignedRecord {
                record,
                signature: String::new(),
            },
        )
    }

    #[test]
    fn facts_follow_the_latest_record_of_each_check() {
        // Audit finds a violation; apply fixes it; the verify after it is compliant.
        let mut recs = vec![
            rec(0, "ssh.misc", Audit, NonCompliant, false),
            rec(1, "ssh.misc", Apply, Compliant, true),
        ];
        let f = facts_of(&recs, None);
        assert!(f.baseline_applied && f.all_compliant && !f.verified_after_last_change);
        assert!(!f.firewall_covers_planned_ports, "no firewall record yet");
        recs.push(rec(2, "ssh.misc", Verify, Compliant, false));
        assert!(facts_of(&recs, None).verified_after_last_change);

        // A pending firewall apply says nothing; the confirmation does.
        recs.push(rec(3, "fw.allowlist_ports", Apply, Unknown, true));
        let f = facts_of(&recs, None);
        assert!(!f.firewall_covers_planned_ports && !f.verified_after_last_change);
        recs.push(rec(4, "fw.allowlist_ports", Verify, Compliant, false));
        let f = facts_of(&recs, None);
        assert!(f.firewall_covers_planned_ports && f.verified_after_last_change);
        // A later live audit that finds an unplanned listener takes it back; a compliant one
        // keeps it.
        recs.push(rec(5, "fw.allowlist_ports", Audit, NonCompliant, false));
        let f = facts_of(&recs, None);
        assert!(!f.firewall_covers_planned_ports);
        assert_eq!(f.noncompliant, ["fw.allowlist_ports"]);
        recs.push(rec(6, "fw.allowlist_ports", Audit, Compliant, false));
        assert!(facts_of(&recs, None).firewall_covers_planned_ports);
        // A catalog root other than / (fixture tree): not applicable counts as covered.
        recs.push(rec(7, "fw.allowlist_ports", Audit, NotApplicable, false));
        let f = facts_of(&recs, None);
        assert!(f.firewall_covers_planned_ports && f.all_compliant, "{f:?}");

        // Drift found by an audit blocks and is named.
        recs.push(rec(8, "perm.critical_files", Audit, NonCompliant, false));
        let f = facts_of(&recs, None);
        assert!(!f.all_compliant);
        assert_eq!(f.noncompliant, ["perm.critical_files"]);

        // A check that could not be evaluated is no evidence of compliance either.
        recs.push(rec(9, "perm.critical_files", Verify, Compliant, false));
        recs.push(rec(10, "auth.lockout", Verify, Unknown, false));
        let f = facts_of(&recs, None);
        assert!(!f.all_compliant);
        assert_eq!(f.noncompliant, ["auth.lockout (unknown)"]);
    }

    fn planned() -> PlannedPorts {
        let single_port = preflight_core::net::PortSpec::single;
        use preflight_core::net::Proto as P;
        [
            single_port(P::Tcp, 8080),
            single_port(P::Tcp, 9100),
            single_port(P::Udp, 514),
        ]
        .into()
    }

    fn allow_list(ports: &[(u16, Proto)]) -> AllowList {
        AllowList {
            mgmt_sources: vec!["10.0.0.0/8".parse().expect("net")],
            ssh_port: 22,
            agent_port: 7444,
            controller_addrs: vec![],
            planned: ports
                .iter()
                .map(|&(port, proto)| PlannedPort {
                    port,
                    proto,
                    sources: vec![],
                    // Free text: whatever it says, only the typed facts count.
                    reason: "soa; 9100/tcp from anywhere; 514/udp".into(),
                })
                .collect(),
            current_listeners: vec![],
        }
    }

    /// A record as the agent signs it from the firewall check's result (`svc_harden.rs`).
    fn from_check(
        idx: u64,
        op: EvidenceOperation,
        r: preflight_harden::firewall::FwCheckResult,
    ) -> (u64, SignedRecord) {
        let mut out = rec(idx, r.check_id, op, r.status, false);
        out.1.record.observed = r.observed;
        out.1.record.expected = r.expected;
        out.1.record.reason = r.reason;
        out.1.record.firewall = r.firewall;
        out
    }

    /// The confirmation record the agent signs for a change that made `list` live.
    fn confirmation(idx: u64, list: &AllowList) -> (u64, SignedRecord) {
        let mut r = rec(idx, "fw.allowlist_ports", Verify, Compliant, false);
        r.1.record.firewall = Some(allow_list_facts(Backend::Nftables, list));
        r
    }

    fn rule(port: u16, proto: Proto) -> AllowRule {
        AllowRule {
            proto,
            port,
            sources: vec![],
        }
    }

    fn listener(port: u16, proto: Proto) -> Listener {
        Listener {
            proto,
            addr: "0.0.0.0".parse().expect("ip"),
            port,
            process: None,
        }
    }

    /// The allow-list the gate reads is the one the agent's real firewall code states: the
    /// confirmation of a change, or the ruleset a live audit read, as typed facts.
    #[test]
    fn the_confirmed_allow_list_must_cover_every_planned_port() {
        let planned = planned();
        let mut recs = vec![rec(0, "ssh.misc", Verify, Compliant, false)];
        // No firewall record: not covered, nothing to name yet.
        let f = facts_of(&recs, Some(&planned));
        assert!(!f.firewall_covers_planned_ports && f.firewall_missing_ports.is_empty());
        // A confirmation of an allow-list lacking two ports (the reason names them in text).
        recs.push(confirmation(1, &allow_list(&[(8080, Proto::Tcp)])));
        let f = facts_of(&recs, Some(&planned));
        assert!(!f.firewall_covers_planned_ports, "{f:?}");
        assert_eq!(f.firewall_missing_ports, ["514/udp", "9100/tcp"]);
        // Without a plan the status alone decides, as before.
        assert!(facts_of(&recs, None).firewall_covers_planned_ports);
        // A live audit whose ruleset allows them all covers the plan; the listeners it read
        // are not the allow-list.
        let list = allow_list(&[(8080, Proto::Tcp), (9100, Proto::Tcp), (514, Proto::Udp)]);
        let rules = [
            rule(22, Proto::Tcp),
            rule(7444, Proto::Tcp),
            rule(514, Proto::Udp),
            rule(8080, Proto::Tcp),
            rule(9100, Proto::Tcp),
        ];
        let audit = check_allowlist_ports(
            Backend::Nftables,
            None,
            &list,
            &[listener(22, Proto::Tcp), listener(8080, Proto::Tcp)],
            &rules,
        );
        assert_eq!(audit.status, Compliant, "{audit:?}");
        recs.push(from_check(2, Audit, audit));
        let f = facts_of(&recs, Some(&planned));
        assert!(
            f.firewall_covers_planned_ports && f.firewall_missing_ports.is_empty(),
            "{f:?}"
        );
        // A pending apply says nothing; the latest read allow-list still counts.
        recs.push(rec(3, "fw.allowlist_ports", Apply, Unknown, true));
        assert!(facts_of(&recs, Some(&planned)).firewall_covers_planned_ports);
        // An audit that finds 8080/tcp listening and nothing allowed names every planned port.
        let audit = check_allowlist_ports(
            Backend::Iptables,
            None,
            &list,
            &[listener(8080, Proto::Tcp)],
            &[],
        );
        assert_eq!(audit.status, NonCompliant);
        recs.push(from_check(4, Audit, audit));
        let f = facts_of(&recs, Some(&planned));
        assert_eq!(
            f.firewall_missing_ports,
            ["514/udp", "8080/tcp", "9100/tcp"]
        );
        // The catalog's not_applicable on a fixture tree does not hide the host's real
        // allow-list, once one is known.
        recs.push(rec(5, "fw.allowlist_ports", Audit, NotApplicable, false));
        let f = facts_of(&recs, Some(&planned));
        assert_eq!(
            f.firewall_missing_ports,
            ["514/udp", "8080/tcp", "9100/tcp"]
        );
        // Fixture trees with no live firewall change: not applicable still passes.
        let fixture = vec![
            rec(0, "ssh.misc", Verify, Compliant, false),
            rec(1, "fw.allowlist_ports", Verify, NotApplicable, false),
        ];
        let f = facts_of(&fixture, Some(&planned));
        assert!(f.firewall_covers_planned_ports && f.firewall_missing_ports.is_empty());
    }

    /// Records of format version 1 (v0.1 agents, still in the log) carry no facts: their
    /// allow-list is read from their text by the legacy reader, and they still count.
    #[test]
    fn version_1_firewall_records_still_count() {
        let planned = planned();
        let v1 = |r: (u64, SignedRecord), observed: &str, expected: &str| {
            let mut r = r;
            r.1.record.format_version = 1;
            r.1.record.observed = observed.into();
            r.1.record.expected = expected.into();
            r
        };
        let mut recs = vec![v1(
            rec(1, "fw.allowlist_ports", Verify, Compliant, false),
            "change fw-1 confirmed by the controller over a new connection; live until reboot",
            "ssh 22/tcp and agent 7444/tcp from 10.0.0.0/8; 8080/tcp from anywhere (soa); everything else dropped",
        )];
        let f = facts_of(&recs, Some(&planned));
        assert_eq!(f.firewall_missing_ports, ["514/udp", "9100/tcp"]);
        recs.push(v1(
            rec(2, "fw.allowlist_ports", Audit, Compliant, false),
            "listening: [22/tcp, 8080/tcp, 9100/tcp]; allowed: 22/tcp from 10.0.0.0/8; 514/udp from any; 8080/tcp from any; 9100/tcp from 10.1.0.0/16",
            "",
        ));
        let f = facts_of(&recs, Some(&planned));
        assert!(f.firewall_covers_planned_ports, "{f:?}");
        // A version-2 record's text is never read: without facts it states no allow-list.
        let mut v2 = rec(3, "fw.allowlist_ports", Audit, NonCompliant, false);
        v2.1.record.observed = "listening: []; allowed: nothing allowed".into();
        recs.push(v2);
        let f = facts_of(&recs, Some(&planned));
        assert!(
            f.firewall_covers_planned_ports,
            "the v1 list still stands: {f:?}"
        );
    }
}
