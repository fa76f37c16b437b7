//! People's accounts (the Workflow service's user RPCs): add, list, rotate a token, disable,
//! enable, remove, and the audit log of who did each. Every token expires: a request without
//! a lifetime gets the controller's `--token-ttl` (90 days by default).

use preflight_core::role::Role;
use preflight_core::workflow::{Actor, Command, Refusal};
use preflight_proto::v1 as pb;
use preflight_store::{UserAuditRecord, UserRecord};
use tonic::Status;

use crate::error::{store_status, InvalidRequest};
use crate::wire::{self, WireEnum};
use crate::{hash_token, new_secret, Shared};

/// Longest token lifetime accepted (`user add --ttl`, `user token rotate --ttl`, `serve
/// --token-ttl`).
pub const MAX_USER_TTL_S: u32 = 400 * 24 * 3600;
/// Default lifetime of people's tokens (`serve --token-ttl`).
pub const DEFAULT_TOKEN_TTL_S: u32 = 90 * 24 * 3600;

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

/// `AddUser`, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AddUser {
    pub name: String,
    pub role: Role,
    /// 0: the controller's `--token-ttl`.
    pub ttl_s: u32,
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

/// `RotateUserToken` and `RemoveUser`, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UserName {
    pub name: String,
    /// Rotation: the new token's lifetime; 0: the controller's `--token-ttl`.
    pub ttl_s: u32,
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

/// `SetUserDisabled`, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SetDisabled {
    pub name: String,
    pub disabled: bool,
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

/// The expiry of a token issued at `now` for `ttl_s` (0: the controller's default).
fn expiry(shared: &Shared, now: i64, ttl_s: u32) -> i64 {
    let ttl_ms = if ttl_s == 0 {
        shared.cfg.user_token_ttl.as_millis() as i64
    } else {
        i64::from(ttl_s) * 1000
    };
    now.saturating_add(ttl_ms)
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

fn audit(now: i64, by: &str, action: &str, user: &str, detail: String) -> UserAuditRecord {
    UserAuditRecord {
        at_ms: now,
        by: by.to_string(),
        action: action.to_string(),
        user: user.to_string(),
        detail,
    }
}

fn utc(ms: i64) -> String {
    preflight_core::timefmt::utc(ms / 1000)
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

pub(crate) async fn add(
    shared: &std::sync::Arc<Shared>,
    by: &UserRecord,
    by_role: Role,
    r: AddUser,
) -> Result<pb::AddUserReply, Status> {
    let role = r.role;
    let now = shared.now_ms();
    let expires = expiry(shared, now, r.ttl_s);
    let token = new_secret("pfu");
    let rec = UserRecord {
        name: r.name.clone(),
        role: role.to_string(),
        token_sha256: hash_token(&token),
        created_at_ms: now,
        expires_at_ms: Some(expires),
        disabled: false,
        token_issued_at_ms: now,
    };
    let detail = format!("role {role}, token expires {}", utc(expires));
    shared
        .store
        .add_user(&rec, &audit(now, &by.name, "add", &r.name, detail))
        .map_err(store_status)?;
    tracing::info!(user = %r.name, %role, by = %by.name, "user added");
    // A deployer is also a name in the deployer list: add it there, unless it is already.
    let mut deployer_added = false;
    if role == Role::Deployer {
        let actor = Actor::user(by.name.clone(), by_role);
        let cmd = Command::AddDeployer {
            name: r.name.clone(),
        };
        match crate::engine::workflow::execute(&shared.workflow, shared, now, &actor, cmd, None)
            .await
        {
            Ok(_) => deployer_added = true,
            Err(crate::engine::workflow::EngineError::Refused(Refusal::AlreadyExists { .. })) => {}
            Err(e) => {
                return Err(Status::from(e).map_message(|m| {
                    format!("user {} added, but not to the deployer list: {m}; add it with `preflight deployer add {}`", r.name, r.name)
                }))
            }
        }
    }
    Ok(pb::AddUserReply {
        name: r.name,
        role: role.to_i32(),
        token,
        expires_at_ms: expires,
        deployer_added,
    })
}

trait MapMessage {
    fn map_message(self, f: impl FnOnce(&str) -> String) -> Status;
}

impl MapMessage for Status {
    fn map_message(self, f: impl FnOnce(&str) -> String) -> Status {
        Status::new(self.code(), f(self.message()))
    }
}

pub(crate) fn list(shared: &Shared) -> Result<pb::ListUsersReply, Status> {
    let users = shared
        .store
        .users()
        .map_err(store_status)?
        .into_iter()
        .map(to_pb)
        .collect();
    Ok(pb::ListUsersReply {
        users,
        now_ms: shared.now_ms(),
    })
}

/// Refuses a change that would leave no admin able to sign in (disabled, removed or expired
/// tokens do not count).
fn keep_an_admin(shared: &Shared, name: &str, now: i64) -> Result<(), Status> {
    let users = shared.store.users().map_err(store_status)?;
    let target_is_admin = users
        .iter()
        .any(|u| u.name == name && u.role == Role::Admin.as_str());
    let others = users.iter().any(|u| {
        u.name != name
            && u.role == Role::Admin.as_str()
            && !u.disabled
            && u.expires_at_ms.is_none_or(|e| e > now)
    });
    if target_is_admin && !others {
        return Err(Status::failed_precondition(format!(
            "{name} is the last admin who can sign in: add another admin first (`preflight user add NAME --role admin`)"
        )));
    }
    Ok(())
}

pub(crate) fn rotate(
    shared: &Shared,
    by: &UserRecord,
    r: UserName,
) -> Result<pb::AddUserReply, Status> {
    let now = shared.now_ms();
    let expires = expiry(shared, now, r.ttl_s);
    let token = new_secret("pfu");
    let hash = hash_token(&token);
    let rec = shared
        .store
        .update_user(
            &r.name,
            &audit(
                now,
                &by.name,
                "rotate",
                &r.name,
                format!(
                    "new token, expires {}; the old one is refused",
                    utc(expires)
                ),
            ),
            |u| {
                u.token_sha256 = hash.clone();
                u.expires_at_ms = Some(expires);
                u.token_issued_at_ms = now;
            },
        )
        .map_err(store_status)?;
    tracing::warn!(user = %r.name, by = %by.name, "user token rotated; the old token is refused");
    Ok(pb::AddUserReply {
        role: role_pb(&rec.role),
        name: rec.name,
        token,
        expires_at_ms: expires,
        deployer_added: false,
    })
}

pub(crate) fn set_disabled(
    shared: &Shared,
    by: &UserRecord,
    r: SetDisabled,
) -> Result<pb::WorkflowUser, Status> {
    let now = shared.now_ms();
    if r.disabled {
        keep_an_admin(shared, &r.name, now)?;
    }
    let action = if r.disabled { "disable" } else { "enable" };
    let rec = shared
        .store
        .update_user(
            &r.name,
            &audit(now, &by.name, action, &r.name, String::new()),
            |u| u.disabled = r.disabled,
        )
        .map_err(store_status)?;
    tracing::warn!(user = %r.name, by = %by.name, action, "user {action}d");
    Ok(to_pb(rec))
}

pub(crate) fn remove(
    shared: &Shared,
    by: &UserRecord,
    r: UserName,
) -> Result<pb::WorkflowEmpty, Status> {
    let now = shared.now_ms();
    keep_an_admin(shared, &r.name, now)?;
    let old = shared
        .store
        .user(&r.name)
        .map_err(store_status)?
        .ok_or_else(|| {
            store_status(preflight_store::StoreRefusal::NoUser(r.name.clone()).into())
        })?;
    shared
        .store
        .remove_user(
            &r.name,
            &audit(
                now,
                &by.name,
                "remove",
                &r.name,
                format!("role {}", old.role),
            ),
        )
        .map_err(store_status)?;
    tracing::warn!(user = %r.name, by = %by.name, "user removed");
    Ok(pb::WorkflowEmpty {})
}

pub(crate) fn history(shared: &Shared) -> Result<pb::UserHistoryReply, Status> {
    let entries = shared
        .store
        .user_audit()
        .map_err(store_status)?
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

/// `preflight serve --rotate-token NAME`: a new token for a user, made by the operator at the
/// data directory while the controller is stopped (the way back in when the last admin token
/// expired or was lost). Returns the token and its expiry (Unix ms).
pub fn rotate_offline(
    data_dir: &std::path::Path,
    name: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<(String, i64)> {
    use anyhow::Context;
    if !crate::is_initialized(data_dir) {
        return Err(crate::InitError::NotInitialized(data_dir.display().to_string()).into());
    }
    let store = preflight_store::Store::open(&data_dir.join("db"))?;
    let now = crate::Clock::now_ms(&crate::SystemClock);
    let expires = now.saturating_add(ttl.as_millis() as i64);
    let token = new_secret(if name == "admin" { "pfa" } else { "pfu" });
    let hash = hash_token(&token);
    store
        .update_user(
            name,
            &audit(
                now,
                "serve --rotate-token",
                "rotate",
                name,
                format!(
                    "new token, expires {}; the old one is refused",
                    utc(expires)
                ),
            ),
            |u| {
                u.token_sha256 = hash.clone();
                u.expires_at_ms = Some(expires);
                u.token_issued_at_ms = now;
                u.disabled = false;
            },
        )
        .with_context(|| format!("cannot rotate the token of user {name:?}"))?;
    Ok((token, expires))
}
