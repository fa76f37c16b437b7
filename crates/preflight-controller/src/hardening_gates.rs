//! Hardening and the workflow: the servers of a batch (from its attached plan) as agents, and
//! the hardening facts of those agents recorded in the workflow, where the `deploy` and
//! `harden` gates read them (WORKFLOW.md).
//!
//! A plan names each server by hostname (`PlanFacts::hosts`); a host maps to the enrolled,
//! unrevoked agent whose id is that name, else whose address is that name (when it is an IP),
//! else whose reported hostname is that name when exactly one agent reports it.
//!
//! Recording: after every hardening request that appended evidence (audit, verify, apply,
//! rollback, firewall allow), and when a plan is attached to a batch, each unfinished batch whose
//! plan covers one of the agents concerned gets a new `HardeningSummary` computed from the
//! evidence log (`hardening_facts`), executed as `Command::RecordHardening` by
//! `Actor::System`. Hosts that map to no agent, or whose agent has no evidence yet, are left
//! out of the summary, so the gate names them ("HOST: no hardening evidence"). Recordings are serialised so a slow one never
//! overwrites a newer one, and an unchanged summary is not recorded again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use preflight_core::workflow::{Actor, Command, HardeningSummary, HostHardening, Timestamp};
use preflight_store::AgentRecord;
use tonic::Status;

use crate::agents::dial_addr;
use crate::hardening_svc::hardening_facts_if_any;
use crate::Shared;

/// Hardening facts per plan host.
type HostFacts = BTreeMap<String, HostHardening>;

/// Serialises recordings (compute + execute), so the last one executed is the newest.
static RECORDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The agent serving plan host `host`, or why there is none.
pub(crate) fn resolve_host(host: &str, agents: &[AgentRecord]) -> Result<String, String> {
    let live: Vec<&AgentRecord> = agents.iter().filter(|a| !a.revoked).collect();
    if let Some(a) = live.iter().find(|a| a.id == host) {
        return Ok(a.id.clone());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let holds = |a: &AgentRecord| {
            dial_addr(a)
                .and_then(|d| d.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|d| d.ip() == ip)
                || a.addresses
                    .iter()
                    .any(|c| c.split('/').next().and_then(|s| s.parse::<IpAddr>().ok()) == Some(ip))
        };
        if let Some(a) = live.iter().find(|a| holds(a)) {
            return Ok(a.id.clone());
        }
    }
    let by_name: Vec<&&AgentRecord> = live
        .iter()
        .filter(|a| a.hostname.eq_ignore_ascii_case(host))
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(format!("{host}: no enrolled agent has this id, address or hostname")),
        many => Err(format!(
            "{host}: agents {} all report this hostname; enroll the server's agent with `--name {host}` so its id is the plan's name",
            many.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The plan hosts of `batch`, or a status naming the problem.
async fn plan_hosts(sh: &Shared, batch: &str) -> Result<Vec<String>, Status> {
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
    Ok(plan.hosts)
}

/// The agents serving every server of `batch` (deduplicated, in plan order); a host that
/// maps to no agent is an error naming it and the fix.
pub(crate) async fn batch_agents(sh: &Shared, batch: &str) -> Result<Vec<String>, Status> {
    let hosts = plan_hosts(sh, batch).await?;
    let agents = sh
        .store
        .agents()
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut ids = Vec::new();
    let mut problems = Vec::new();
    for h in &hosts {
        match resolve_host(h, &agents) {
            Ok(id) if !ids.contains(&id) => ids.push(id),
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
    Ok(ids)
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
    let batches: Vec<(String, Vec<String>, Option<HostFacts>)> = sh
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
    for (batch, hosts, current) in batches {
        let mapped: Vec<(String, String)> = hosts
            .iter()
            .filter_map(|h| resolve_host(h, &agents).ok().map(|id| (h.clone(), id)))
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
                if let Some(f) = hardening_facts_if_any(sh2.evidence.store(), &id)? {
                    out.insert(h, f);
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
        assert_eq!(resolve_host("web-01", &agents).as_deref(), Ok("web-01"));
        assert_eq!(resolve_host("10.0.0.5", &agents).as_deref(), Ok("web-01"));
        assert_eq!(resolve_host("10.0.0.6", &agents).as_deref(), Ok("db-01"));
        assert_eq!(resolve_host("fd00::6", &agents).as_deref(), Ok("db-01"));
        assert_eq!(resolve_host("H2", &agents).as_deref(), Ok("db-01"));
        let e = resolve_host("twin", &agents).expect_err("ambiguous");
        assert!(e.contains("a, b") && e.contains("--name twin"), "{e}");
        let e = resolve_host("app-9", &agents).expect_err("revoked");
        assert!(e.starts_with("app-9: no enrolled agent"), "{e}");
        assert!(resolve_host("10.0.0.9", &agents).is_err());
    }
}
