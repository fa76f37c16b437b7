//! The controller's error kinds and their one mapping to gRPC status codes. Services convert
//! requests with `TryFrom<pb::X>` into domain requests, refusing with [`InvalidRequest`] (the
//! field named, the problem and the fix in the user's words); engines return domain errors;
//! every kind becomes a `Status` here and nowhere else.

use preflight_store::{StoreError, StoreRefusal};
use tonic::Status;

/// A request field that cannot be accepted: which field, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidRequest {
    /// The field, as the user knows it.
    pub field: String,
    /// What is wrong, and how to fix it.
    pub problem: String,
}

impl InvalidRequest {
    /// `field` refused for `problem`.
    pub fn new(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            problem: problem.to_string(),
        }
    }

    /// A required part that is not there.
    pub fn missing(field: impl Into<String>) -> Self {
        Self::new(field, "missing")
    }
}

impl From<InvalidRequest> for Status {
    fn from(e: InvalidRequest) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

/// A proto enum field's value, refusing a value this build does not know (sent by a newer
/// client or controller). The one decoder of enum fields: `crate::wire::enum_of` builds on it
/// for a required field in the core's terms.
pub fn enum_field<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, InvalidRequest> {
    E::try_from(value).map_err(|_| {
        InvalidRequest::new(
            field,
            format!("value {value} is not one this build of preflight knows: use a listed value, or upgrade whichever of the CLI and the controller is older"),
        )
    })
}

/// Anything the store says, as the one status every service answers with.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Refused(r) => refusal_status(r),
        StoreError::Fault(f) => {
            tracing::error!(error = %f, "store fault");
            Status::unavailable(f.to_string())
        }
    }
}

fn refusal_status(r: StoreRefusal) -> Status {
    let msg = r.to_string();
    match r {
        StoreRefusal::TokenUnknown | StoreRefusal::TokenExpired | StoreRefusal::TokenUsed(_) => {
            Status::permission_denied(msg)
        }
        StoreRefusal::AgentExists(_) | StoreRefusal::AgentRevoked(_) => Status::already_exists(msg),
        StoreRefusal::UserExists(n) => Status::already_exists(format!(
            "user {n:?} already exists: choose another name (`preflight user list` lists them)"
        )),
        StoreRefusal::NoAgent(_) | StoreRefusal::NoUser(_) => Status::not_found(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn refusals_keep_their_codes_and_faults_are_unavailable() {
        let cases = [
            (StoreRefusal::TokenUnknown.into(), Code::PermissionDenied),
            (
                StoreRefusal::TokenUsed("a".into()).into(),
                Code::PermissionDenied,
            ),
            (StoreRefusal::TokenExpired.into(), Code::PermissionDenied),
            (
                StoreRefusal::AgentExists("a".into()).into(),
                Code::AlreadyExists,
            ),
            (
                StoreRefusal::AgentRevoked("a".into()).into(),
                Code::AlreadyExists,
            ),
            (
                StoreRefusal::UserExists("a".into()).into(),
                Code::AlreadyExists,
            ),
            (StoreRefusal::NoAgent("a".into()).into(), Code::NotFound),
            (StoreRefusal::NoUser("a".into()).into(), Code::NotFound),
            (
                preflight_store::StoreFault::Corrupt {
                    tree: "agents",
                    key: "k".into(),
                    detail: "d".into(),
                }
                .into(),
                Code::Unavailable,
            ),
        ];
        for (e, code) in cases {
            let e: StoreError = e;
            let shown = e.to_string();
            let s = store_status(e);
            assert_eq!(s.code(), code, "{shown}");
            assert!(s.message().contains(&shown[..10]), "{}", s.message());
        }
    }

    #[test]
    fn an_unknown_enum_value_names_the_field() {
        let e = enum_field::<preflight_proto::v1::HardenOperation>("operation", 99).unwrap_err();
        assert_eq!(e.field, "operation");
        assert!(Status::from(e).message().starts_with("operation: value 99"));
    }
}
