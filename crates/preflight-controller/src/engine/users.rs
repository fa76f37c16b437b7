//! People's accounts: add, rotate a token, disable, enable, remove, and the audit log of who
//! did each. Every token expires: a request without a lifetime gets the controller's
//! `--token-ttl` (90 days by default). The engine takes the store and the time; adding a
//! deployer also adds it to the workflow's deployer list, through the workflow engine.

use preflight_core::role::Role;
use preflight_core::workflow::{Actor, Command, Refusal};
use preflight_store::{Store, StoreError, StoreRefusal, UserAuditRecord, UserRecord};

use crate::auth::{hash_token, new_secret};
use crate::engine::workflow::{self, EngineError, Reactions};

/// Longest token lifetime accepted (`user add --ttl`, `user token rotate --ttl`, `serve
/// --token-ttl`).
pub const MAX_USER_TTL_S: u32 = 400 * 24 * 3600;
/// Default lifetime of people's tokens (`serve --token-ttl`).
pub const DEFAULT_TOKEN_TTL_S: u32 = 90 * 24 * 3600;

/// A user to add.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AddUser {
    pub name: String,
    pub role: Role,
    /// 0: the controller's `--token-ttl`.
    pub ttl_s: u32,
}

/// A user to rotate the token of, or to remove.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UserName {
    pub name: String,
    /// Rotation: the new token's lifetime; 0: the controller's `--token-ttl`.
    pub ttl_s: u32,
}

/// A user to disable or enable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SetDisabled {
    pub name: String,
    pub disabled: bool,
}

/// A token issued (a user added, or a token rotated).
#[derive(Debug)]
pub(crate) struct Issued {
    pub name: String,
    /// `None` when the store holds a role this build does not know.
    pub role: Option<Role>,
    pub token: String,
    pub expires_at_ms: i64,
    /// A deployer added to the workflow's deployer list too.
    pub deployer_added: bool,
}

/// Why a change to the accounts was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is the last admin who can sign in: add another admin first (`preflight user add NAME --role admin`)")]
    LastAdmin(String),
    /// The user was added, but the deployer list refused the name.
    #[error("user {name} added, but not to the deployer list: {source}; add it with `preflight deployer add {name}`")]
    NotInDeployerList {
        name: String,
        source: Box<EngineError>,
    },
}

/// The accounts at one moment: the store, the time, and the controller's default lifetime.
pub(crate) struct Users<'a> {
    pub store: &'a Store,
    pub now_ms: i64,
    /// `serve --token-ttl`, in ms.
    pub default_ttl_ms: i64,
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

fn rotated(expires: i64) -> String {
    format!(
        "new token, expires {}; the old one is refused",
        utc(expires)
    )
}

impl Users<'_> {
    /// The expiry of a token issued now for `ttl_s` (0: the controller's default).
    fn expiry(&self, ttl_s: u32) -> i64 {
        let ttl_ms = if ttl_s == 0 {
            self.default_ttl_ms
        } else {
            i64::from(ttl_s) * 1000
        };
        self.now_ms.saturating_add(ttl_ms)
    }

    /// Adds a user with a new token; a deployer also joins the workflow's deployer list (as
    /// `by` in role `by_role`, with the reactions to the command), unless it is there already.
    pub async fn add(
        &self,
        workflow: &workflow::Engine,
        reactions: &impl Reactions,
        (by, by_role): (&str, Role),
        r: AddUser,
    ) -> Result<Issued, UserError> {
        let (now, role) = (self.now_ms, r.role);
        let expires = self.expiry(r.ttl_s);
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
        self.store
            .add_user(&rec, &audit(now, by, "add", &r.name, detail))?;
        tracing::info!(user = %r.name, %role, %by, "user added");
        let mut deployer_added = false;
        if role == Role::Deployer {
            let cmd = Command::AddDeployer {
                name: r.name.clone(),
            };
            let actor = Actor::user(by, by_role);
            match workflow::execute(workflow, reactions, now, &actor, cmd, None).await {
                Ok(_) => deployer_added = true,
                Err(EngineError::Refused(Refusal::AlreadyExists { .. })) => {}
                Err(source) => {
                    return Err(UserError::NotInDeployerList {
                        name: r.name,
                        source: Box::new(source),
                    })
                }
            }
        }
        Ok(Issued {
            name: r.name,
            role: Some(role),
            token,
            expires_at_ms: expires,
            deployer_added,
        })
    }

    /// Every user.
    pub fn list(&self) -> Result<Vec<UserRecord>, UserError> {
        Ok(self.store.users()?)
    }

    /// Refuses a change that would leave no admin able to sign in (disabled, removed or
    /// expired tokens do not count).
    fn keep_an_admin(&self, name: &str) -> Result<(), UserError> {
        let users = self.store.users()?;
        let target_is_admin = users
            .iter()
            .any(|u| u.name == name && u.role == Role::Admin.as_str());
        let others = users.iter().any(|u| {
            u.name != name
                && u.role == Role::Admin.as_str()
                && !u.disabled
                && u.expires_at_ms.is_none_or(|e| e > self.now_ms)
        });
        if target_is_admin && !others {
            return Err(UserError::LastAdmin(name.to_string()));
        }
        Ok(())
    }

    /// A new token for a user; the old one is refused from now on.
    pub fn rotate(&self, by: &str, r: UserName) -> Result<Issued, UserError> {
        let now = self.now_ms;
        let expires = self.expiry(r.ttl_s);
        let token = new_secret("pfu");
        let hash = hash_token(&token);
        let rec = self.store.update_user(
            &r.name,
            &audit(now, by, "rotate", &r.name, rotated(expires)),
            |u| {
                u.token_sha256 = hash.clone();
                u.expires_at_ms = Some(expires);
                u.token_issued_at_ms = now;
            },
        )?;
        tracing::warn!(user = %r.name, %by, "user token rotated; the old token is refused");
        Ok(Issued {
            role: rec.role.parse().ok(),
            name: rec.name,
            token,
            expires_at_ms: expires,
            deployer_added: false,
        })
    }

    /// Disables or enables a user; the last admin who can sign in cannot be disabled.
    pub fn set_disabled(&self, by: &str, r: SetDisabled) -> Result<UserRecord, UserError> {
        if r.disabled {
            self.keep_an_admin(&r.name)?;
        }
        let action = if r.disabled { "disable" } else { "enable" };
        let rec = self.store.update_user(
            &r.name,
            &audit(self.now_ms, by, action, &r.name, String::new()),
            |u| u.disabled = r.disabled,
        )?;
        tracing::warn!(user = %r.name, %by, action, "user {action}d");
        Ok(rec)
    }

    /// Removes a user; the last admin who can sign in cannot be removed.
    pub fn remove(&self, by: &str, r: UserName) -> Result<(), UserError> {
        self.keep_an_admin(&r.name)?;
        let old = self
            .store
            .user(&r.name)?
            .ok_or_else(|| StoreError::from(StoreRefusal::NoUser(r.name.clone())))?;
        self.store.remove_user(
            &r.name,
            &audit(
                self.now_ms,
                by,
                "remove",
                &r.name,
                format!("role {}", old.role),
            ),
        )?;
        tracing::warn!(user = %r.name, %by, "user removed");
        Ok(())
    }

    /// Who did what to which account, oldest first.
    pub fn history(&self) -> Result<Vec<UserAuditRecord>, UserError> {
        Ok(self.store.user_audit()?)
    }
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
    let store = Store::open(&data_dir.join("db"))?;
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
                rotated(expires),
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
