//! Roles of the people who use preflight (WORKFLOW.md "Roles").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A user's role. Every RPC of the controller names the roles allowed to call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Dispatcher,
    Project,
    Integrator,
    Deployer,
    PerfChecker,
    Reviewer,
    DeliveryLead,
    Gd,
    /// Read-only: evidence and history.
    Auditor,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 10] = [
        Role::Admin,
        Role::Dispatcher,
        Role::Project,
        Role::Integrator,
        Role::Deployer,
        Role::PerfChecker,
        Role::Reviewer,
        Role::DeliveryLead,
        Role::Gd,
        Role::Auditor,
    ];

    /// The stable identifier used in the API, storage and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Project => "project",
            Role::Integrator => "integrator",
            Role::Deployer => "deployer",
            Role::PerfChecker => "perf_checker",
            Role::Reviewer => "reviewer",
            Role::DeliveryLead => "delivery_lead",
            Role::Gd => "gd",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use one of admin, dispatcher, project, integrator, deployer, perf_checker, reviewer, delivery_lead, gd, auditor")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// Who may call each RPC of the controller's services for people (Controller, Workflow,
/// Readiness, Hardening), by service and method name as in `proto/`: the one role table, which
/// every handler checks and the security matrix test walks. `None`: no such RPC; handlers then
/// refuse everyone, and the matrix test fails until the new RPC has an entry here.
///
/// `Hardening`/`HardenChange` is not a wire method: it is `Harden` with a changing operation
/// (apply, rollback); `Harden` itself is the read-only operations (audit, plan, verify).
/// `Workflow`/`DevClockShow` likewise is `DevClock` without a change, and
/// `Readiness`/`RunSweepPlanFile` is `RunSweep` with a plan file other than the batch's attached
/// plan. Workflow commands
/// (`Execute`) are open to every role here because the core names the roles of each command.
pub fn rpc_roles(service: &str, method: &str) -> Option<&'static [Role]> {
    use Role::*;
    const ANY: &[Role] = &Role::ALL;
    const ADMIN: &[Role] = &[Admin];
    // Tests that change nothing on a host but load it: not for read-only roles.
    const CHECKERS: &[Role] = &[Admin, Integrator, Deployer, PerfChecker, Dispatcher];
    const SWEEPERS: &[Role] = &[
        Admin,
        Dispatcher,
        Project,
        Integrator,
        Deployer,
        PerfChecker,
    ];
    const PLAN_FILE_SWEEPERS: &[Role] = &[Admin, Integrator, Deployer];
    const HARDEN_READERS: &[Role] = &[
        Admin,
        Deployer,
        Integrator,
        Auditor,
        Reviewer,
        DeliveryLead,
        Project,
    ];
    const HARDEN_CHANGERS: &[Role] = &[Admin, Deployer, Integrator];
    const USER_READERS: &[Role] = &[Admin, Dispatcher, DeliveryLead, Auditor];
    Some(match (service, method) {
        (
            "Controller",
            "WhoAmI" | "ListAgents" | "GetAgentInventory" | "ListAgentPorts" | "GetStatus",
        ) => ANY,
        ("Controller", "RunAgentBenchmark" | "Probe" | "Bandwidth" | "BandwidthLive") => CHECKERS,
        ("Controller", "CreateJoinToken" | "RevokeAgent") => ADMIN,
        ("Readiness", "RunSweep" | "CancelSweep") => SWEEPERS,
        // `RunSweep` with a plan file that is not the batch's attached plan: the plan decides
        // what the agents probe, so only the roles that write plans or work on the hosts.
        ("Readiness", "RunSweepPlanFile") => PLAN_FILE_SWEEPERS,
        ("Readiness", "ListSweeps" | "GetSweep" | "AttachSweep") => ANY,
        ("Hardening", "Harden" | "ExportEvidence" | "Status") => HARDEN_READERS,
        ("Hardening", "HardenChange" | "FirewallAllow") => HARDEN_CHANGERS,
        (
            "Workflow",
            "Execute" | "GetBatch" | "ListBatches" | "GetQueue" | "ListProjects" | "PauseStats"
            | "DevClockShow",
        ) => ANY,
        ("Workflow", "ListUsers" | "UserHistory") => USER_READERS,
        (
            "Workflow",
            "AddUser" | "DevClock" | "DevRecord" | "RotateUserToken" | "SetUserDisabled"
            | "RemoveUser",
        ) => ADMIN,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert!(rpc_roles("Controller", "NoSuchRpc").is_none());
        // The auditor reads; it never changes anything.
        for (svc, m) in [
            ("Controller", "CreateJoinToken"),
            ("Controller", "RevokeAgent"),
            ("Hardening", "HardenChange"),
            ("Hardening", "FirewallAllow"),
            ("Workflow", "AddUser"),
            ("Readiness", "RunSweep"),
            ("Readiness", "CancelSweep"),
        ] {
            assert!(
                !rpc_roles(svc, m).unwrap().contains(&Role::Auditor),
                "{svc}/{m}"
            );
        }
        assert!(err.to_string().contains("\"root\""));
    }

    /// Written from WORKFLOW.md and DESIGN.md, not from the table: the end-to-end security
    /// matrix takes its expectations from `rpc_roles`, so it proves the wiring; this proves
    /// the entries that change hosts or people.
    #[test]
    fn who_may_change_hosts_and_people() {
        use Role::*;
        let exactly = |svc: &str, m: &str, want: &[Role]| {
            let mut got = rpc_roles(svc, m).unwrap().to_vec();
            let mut want = want.to_vec();
            got.sort_by_key(|r| r.as_str());
            want.sort_by_key(|r| r.as_str());
            assert_eq!(got, want, "{svc}/{m}");
        };
        // Hardening changes: the stage's roles (integrator, deployer) and the admin.
        exactly("Hardening", "HardenChange", &[Admin, Deployer, Integrator]);
        exactly("Hardening", "FirewallAllow", &[Admin, Deployer, Integrator]);
        // Enrolment, revocation and people: the admin only.
        for m in ["CreateJoinToken", "RevokeAgent"] {
            exactly("Controller", m, &[Admin]);
        }
        for m in [
            "AddUser",
            "RotateUserToken",
            "SetUserDisabled",
            "RemoveUser",
        ] {
            exactly("Workflow", m, &[Admin]);
        }
        // A plan file not attached to the batch (issue 20 item 2): operators, not the project.
        exactly(
            "Readiness",
            "RunSweepPlanFile",
            &[Admin, Integrator, Deployer],
        );
        // Loading a host (benchmarks, probes, sweeps): never the read-only or sign-off roles.
        for (svc, m) in [
            ("Controller", "RunAgentBenchmark"),
            ("Controller", "Probe"),
            ("Controller", "Bandwidth"),
            ("Controller", "BandwidthLive"),
            ("Readiness", "RunSweep"),
        ] {
            let roles = rpc_roles(svc, m).unwrap();
            for r in [Auditor, Reviewer, Gd, DeliveryLead] {
                assert!(!roles.contains(&r), "{svc}/{m} allows {r}");
            }
        }
    }

    #[test]
    fn live_bandwidth_has_the_roles_of_bandwidth() {
        assert_eq!(
            rpc_roles("Controller", "BandwidthLive"),
            rpc_roles("Controller", "Bandwidth")
        );
    }
}
