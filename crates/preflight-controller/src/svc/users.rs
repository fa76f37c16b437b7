//! People's accounts (the Workflow service's user RPCs), a thin layer over
//! `crate::engine::users`: requests become domain requests with `TryFrom` (refusals name the
//! field), the engine makes the change, and the reply is mapped here.

use preflight_core::role::Role;
use preflight_proto::v1 as pb;
use preflight_store::UserRecord;
use tonic::Status;

use crate::engine::users::{
    AddUser, Issued, SetDisabled, UserError, UserName, Users, MAX_USER_TTL_S,
};
use crate::error::{store_status, InvalidRequest};
use crate::wire::{self, WireEnum};
use crate::Shared;

fn check_name(name: String) -> Result<String, InvalidRequest> {
    let valid = !name.is_empty()
        && name.len() <= preflight_core::workflow::MAX_ID_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !valid {
        return Err(InvalidRequest::new(
            "name",
            format!(
                "{name:?}: use 1 to {} letters, digits, '-', '_', '.' or '@'",
                preflight_core::workflow::MAX_ID_LEN
            ),
        ));
    }
    Ok(name)
}

fn check_ttl(ttl_s: u32) -> Result<u32, InvalidRequest> {
    if ttl_s > MAX_USER_TTL_S {
        return Err(InvalidRequest::new(
            "ttl_s (--ttl)",
            format!("{ttl_s} s is more than 400 days"),
        ));
    }
    Ok(ttl_s)
}

impl TryFrom<pb::AddUserRequest> for AddUser {
    type Error = InvalidRequest;
    fn try_from(r: pb::AddUserRequest) -> Result<AddUser, InvalidRequest> {
        let role = wire::enum_of::<Role>("role", r.role)?;

        Ok(AddUser {
            name: check_name(r.name)?,
            role,
            ttl_s: check_ttl(r.ttl_s)?,
        })
    }
}

impl TryFrom<pb::UserNameRequest> for UserName {
    type Error = InvalidRequest;
    fn try_from(r: pb::UserNameRequest) -> Result<UserName, InvalidRequest> {
        Ok(UserName {
            name: check_name(r.name)?,
            ttl_s: check_ttl(r.ttl_s)?,
        })
    }
}

impl TryFrom<pb::SetUserDisabledRequest> for SetDisabled {
    type Error = InvalidRequest;
    fn try_from(r: pb::SetUserDisabledRequest) -> Result<SetDisabled, InvalidRequest> {
        Ok(SetDisabled {
            name: check_name(r.name)?,
            disabled: r.disabled,
        })
    }
}

impl From<UserError> for Status {
    fn from(e: UserError) -> Status {
        match e {
            UserError::Store(s) => store_status(s),
            UserError::LastAdmin(_) => Status::failed_precondition(e.to_string()),
            UserError::NotInDeployerList { ref name, source } => {
                let s = Status::from(*source);
                Status::new(
                    s.code(),
                    format!("user {name} added, but not to the deployer list: {}; add it with `preflight deployer add {name}`", s.message()),
                )
            }
        }
    }
}

/// The accounts engine, now.
fn users(shared: &Shared) -> Users<'_> {
    Users {
        store: &shared.store,
        now_ms: shared.now_ms(),
        default_ttl_ms: shared.cfg.user_token_ttl.as_millis() as i64,
    }
}

/// A stored role as sent (unset when the store holds a word this build does not know).
fn role_pb(stored: &str) -> i32 {
    stored.parse::<Role>().map_or(0, Role::to_i32)
}

/// A stored audit action as sent.
fn action_pb(stored: &str) -> i32 {
    use pb::UserAuditAction as A;
    match stored {
        "add" => A::Add,
        "rotate" => A::Rotate,
        "disable" => A::Disable,
        "enable" => A::Enable,
        "remove" => A::Remove,
        _ => A::Unspecified,
    }
    .into()
}

pub(crate) fn to_pb(u: UserRecord) -> pb::WorkflowUser {
    pb::WorkflowUser {
        name: u.name,
        role: role_pb(&u.role),
        created_at_ms: u.created_at_ms,
        expires_at_ms: u.expires_at_ms.unwrap_or(0),
        disabled: u.disabled,
        token_issued_at_ms: u.token_issued_at_ms,
    }
}

fn issued_pb(i: Issued) -> pb::AddUserReply {
    pb::AddUserReply {
        name: i.name,
        role: i.role.map_or(0, Role::to_i32),
        token: i.token,
        expires_at_ms: i.expires_at_ms,
        deployer_added: i.deployer_added,
    }
}

pub(crate) async fn add(
    shared: &std::sync::Arc<Shared>,
    by: &UserRecord,
    by_role: Role,
    r: AddUser,
) -> Result<pb::AddUserReply, Status> {
    let issued = users(shared)
        .add(&shared.workflow, shared, (&by.name, by_role), r)
        .await?;
    Ok(issued_pb(issued))
}

pub(crate) fn list(shared: &Shared) -> Result<pb::ListUsersReply, Status> {
    let u = users(shared);
    Ok(pb::ListUsersReply {
        users: u.list()?.into_iter().map(to_pb).collect(),
        now_ms: u.now_ms,
    })
}

pub(crate) fn rotate(
    shared: &Shared,
    by: &UserRecord,
    r: UserName,
) -> Result<pb::AddUserReply, Status> {
    Ok(issued_pb(users(shared).rotate(&by.name, r)?))
}

pub(crate) fn set_disabled(
    shared: &Shared,
    by: &UserRecord,
    r: SetDisabled,
) -> Result<pb::WorkflowUser, Status> {
    Ok(to_pb(users(shared).set_disabled(&by.name, r)?))
}

pub(crate) fn remove(
    shared: &Shared,
    by: &UserRecord,
    r: UserName,
) -> Result<pb::WorkflowEmpty, Status> {
    users(shared).remove(&by.name, r)?;
    Ok(pb::WorkflowEmpty {})
}

pub(crate) fn history(shared: &Shared) -> Result<pb::UserHistoryReply, Status> {
    let entries = users(shared)
        .history()?
        .into_iter()
        .map(|a| pb::UserAuditEntry {
            at_ms: a.at_ms,
            by: a.by,
            action: action_pb(&a.action),
            user: a.user,
            detail: a.detail,
        })
        .collect();
    Ok(pb::UserHistoryReply { entries })
}
