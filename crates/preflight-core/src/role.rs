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
        assert!(err.to_string().contains("\"root\""));
    }
}
