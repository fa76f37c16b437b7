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

use preflight_core::workflow::{Actor, Command, HardeningSummary, HostHardening, Timestamp};
use preflight_store::AgentRecord;
use tonic::Status;

use crate::agents::agent_for_host;
use crate::svc::hardening::hardening_facts_if_any;
use crate::Shared;

/// Hardening facts per plan host.
type HostFacts = BTreeMap<String, HostHardening>;

/// Serialises recordings (compute + execute), so the last one executed is the newest.
static RECORDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    planned: Option<BTreeSet<String>>,
}

/// The hosts of a batch's plan facts, completed from the stored plan with that digest (if the
/// attachment carried it).
fn plan_hosts_of(sh: &Shared, digest: &str, hosts: &[String]) -> Vec<PlanHost> {
    let plan = match sh.workflow.plan_text(digest) {
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
                        .map(|p| format!("{}/{}", p.port, p.protocol))
                        .collect()
                }),
            }
        })
        .collect()
}

/// The plan hosts of `batch`, or a status naming the problem.
async fn plan_hosts(sh: &Shared, batch: &str) -> Result<Vec<PlanHost>, Status> {
    if batch.is_empty() || batch.len() > 128 || batch.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "batch must be a batch id (1-128 characters); `preflight batch list` lists them",
        ));
    }
    let plan = sh
        .workflow
        .read(|w| w.batch(batch).map(|b| b.plan.clone()))
        .await
        .ok_or_else(|| {
            Status::not_found(format!(
                "no batch {batch:?}: `preflight batch list` lists them"
            ))
        })?;
    let plan = plan.ok_or_else(|| {
        Status::failed_precondition(format!(
            "batch {batch}: no plan attached, so its servers are unknown; attach one with `preflight plan attach {batch} PLAN_FILE`, or name agents with --agent"
        ))
    })?;
    if plan.hosts.is_empty() {
        return Err(Status::failed_precondition(format!(
            "batch {batch}: the attached plan lists no servers"
        )));
    }
    Ok(plan_hosts_of(sh, &plan.digest, &plan.hosts))
}

/// The agents serving every server of `batch` (deduplicated, in plan order), each with its
/// server's planned ports when the plan is stored; a host that maps to no agent is an error
/// naming it and the fix.
pub(crate) async fn batch_agents_planned(
    sh: &Shared,
    batch: &str,
) -> Result<Vec<(String, Option<BTreeSet<String>>)>, Status> {
    let hosts = plan_hosts(sh, batch).await?;
    let agents = sh
        .store
        .agents()
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut out: Vec<(String, Option<BTreeSet<String>>)> = Vec::new();
    let mut problems = Vec::new();
    for h in hosts {
        match resolve_host(&h.name, h.address, &agents) {
            Ok(id) if !out.iter().any(|(i, _)| *i == id) => out.push((id, h.planned)),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(Status::failed_precondition(format!(
            "batch {batch}: {}; enroll an agent on each such server (`preflight token create`, then `preflight-agent enroll --name HOST ...` there), or fix the plan",
            problems.join("; ")
        )));
    }
    Ok(out)
}

/// [`batch_agents_planned`] without the ports.
pub(crate) async fn batch_agents(sh: &Shared, batch: &str) -> Result<Vec<String>, Status> {
    Ok(batch_agents_planned(sh, batch)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Records the hardening facts of every unfinished batch with a plan that covers one of
/// `touched` (all such batches when `None`), or only of batch `only`. Failures are logged:
/// the evidence is in the log either way, and the next recording catches up.
pub(crate) async fn record_hardening(
    sh: &std::sync::Arc<Shared>,
    touched: Option<&BTreeSet<String>>,
    only: Option<&str>,
) {
    let _serial = RECORDING.lock().await;
    let batches: Vec<(String, String, Vec<String>, Option<HostFacts>)> = sh
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
    let agents = match sh.store.agents() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "hardening not recorded in the workflow: agents unreadable");
            return;
        }
    };
    for (batch, digest, hosts, current) in batches {
        let mapped: Vec<(PlanHost, String)> = plan_hosts_of(sh, &digest, &hosts)
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
        let sh2 = sh.clone();
        let facts = tokio::task::spawn_blocking(move || {
            let mut out = BTreeMap::new();
            for (h, id) in mapped {
                let store = sh2.evidence.store();
                if let Some(f) = hardening_facts_if_any(store, &id, h.planned.as_ref())? {
                    out.insert(h.name, f);
                }
            }
            Ok::<_, preflight_store::StoreError>(out)
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
                recorded_at: Timestamp(sh.now_ms()),
                hosts,
            },
        };
        match sh.workflow.execute(sh.now_ms(), &Actor::System, cmd).await {
            Ok(_) => tracing::info!(%batch, "hardening facts recorded in the workflow"),
            Err(e) => {
                tracing::warn!(%batch, error = %e, "hardening facts not recorded in the workflow")
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
