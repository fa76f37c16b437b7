//! The sled edge of the controller: trees, versioned record encodings and transactions.
//!
//! Only the controller writes this database. Every value is one version byte followed by the
//! JSON of a record type defined here (not a serde derive on a core type), so a record can
//! change shape without breaking old databases: a reader that meets an unknown version refuses
//! with a clear message instead of guessing. Every multi-key change is one sled transaction,
//! and a write that must survive a crash is flushed before it is acknowledged.

pub mod evidence;
mod records;
pub mod sweeps;
pub mod workflow;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

pub use records::*;

/// Version byte of every record written by this build.
const RECORD_V1: u8 = 1;

/// What went wrong at the store: a refusal (the request cannot be done as asked, and the
/// caller can fix it) or a fault (the engine or the data failed; nothing the caller asked for is
/// wrong). Services map the first to their own codes and the second to UNAVAILABLE.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Refused(#[from] StoreRefusal),
    #[error(transparent)]
    Fault(#[from] StoreFault),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Fault(StoreFault::Sled(e))
    }
}

/// The store refused what was asked: the record is missing, exists already or is used up.
#[derive(Debug, thiserror::Error)]
pub enum StoreRefusal {
    #[error("join token is unknown: create one with `preflight token create`")]
    TokenUnknown,
    #[error("join token was already used (last by agent {0}): it has no enrollments left; create a new one with `preflight token create` (--uses N for several servers)")]
    TokenUsed(String),
    #[error("join token expired: create a new one with `preflight token create`")]
    TokenExpired,
    #[error(
        "agent id {0:?} is already enrolled: enroll this host under another --name, or revoke the old agent and enroll under a new name"
    )]
    AgentExists(String),
    #[error(
        "agent id {0:?} was revoked and stays on record (its evidence names it): enroll this host under a new --name"
    )]
    AgentRevoked(String),
    #[error("no agent {0:?}: `preflight agents` lists them")]
    NoAgent(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user {0:?}: `preflight user list` lists them")]
    NoUser(String),
}

/// The engine or the data on disk failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreFault {
    #[error("data directory {dir} is in use by another preflight controller (sled lock held): stop it or pass another --data")]
    Locked { dir: String },
    #[error("cannot open the database in {dir}: {detail}. If the directory is corrupt, move it aside and restore it from a backup; preflight will not guess")]
    Open { dir: String, detail: String },
    #[error("database error: {0}")]
    Sled(sled::Error),
    #[error("record {key} in tree {tree} has version {version}, which this build does not read: upgrade preflight")]
    Version {
        tree: &'static str,
        key: String,
        version: u8,
    },
    #[error("record {key} in tree {tree} is corrupt: {detail}")]
    Corrupt {
        tree: &'static str,
        key: String,
        detail: String,
    },
}

/// Which trees exist; names are part of the on-disk format.
mod tree {
    pub const META: &str = "meta";
    pub const USERS: &str = "users";
    pub const TOKENS: &str = "user_tokens";
    pub const JOIN: &str = "join_tokens";
    pub const AGENTS: &str = "agents";
    pub const USER_AUDIT: &str = "user_audit";
}

/// The controller's database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    users: sled::Tree,
    tokens: sled::Tree,
    join: sled::Tree,
    agents: sled::Tree,
    user_audit: sled::Tree,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    // Serialising plain records to JSON cannot fail (no maps with non-string keys).
    serde_json::to_writer(&mut out, v).expect("record serialises");
    out
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    raw: &[u8],
) -> Result<T, StoreError> {
    let key_s = || String::from_utf8_lossy(key).into_owned();
    match raw.split_first() {
        Some((&RECORD_V1, body)) => serde_json::from_slice(body).map_err(|e| {
            StoreError::Fault(StoreFault::Corrupt {
                tree,
                key: key_s(),
                detail: e.to_string(),
            })
        }),
        Some((&v, _)) => Err(StoreError::Fault(StoreFault::Version {
            tree,
            key: key_s(),
            version: v,
        })),
        None => Err(StoreError::Fault(StoreFault::Corrupt {
            tree,
            key: key_s(),
            detail: "empty value".into(),
        })),
    }
}

/// Narrows `dir` and everything below it to the owner: directories 0700, files 0600.
fn restrict_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        for e in std::fs::read_dir(dir)? {
            restrict_tree(&e?.path())?;
        }
    } else if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Fault(StoreFault::Sled(e)),
    }
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    /// The directory is made (or narrowed to) 0700 and sled's files to 0600: sled creates
    /// them with the process umask, and they hold every user's and agent's record.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let d = dir.display().to_string();
        let io_err = |e: std::io::Error| {
            StoreError::Fault(StoreFault::Open {
                dir: d.clone(),
                detail: e.to_string(),
            })
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        restrict_tree(dir).map_err(io_err)?;
        let db = sled::Config::new().path(dir).open().map_err(|e| match e {
            sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Fault(StoreFault::Locked { dir: d.clone() })
            }
            sled::Error::Io(ref io) if io.to_string().contains("lock") => {
                StoreError::Fault(StoreFault::Locked { dir: d.clone() })
            }
            other => StoreError::Fault(StoreFault::Open {
                dir: d.clone(),
                detail: other.to_string(),
            }),
        })?;
        restrict_tree(dir).map_err(io_err)?;
        Self::from_db(db)
    }

    /// A throw-away database for tests.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            meta: db.open_tree(tree::META)?,
            users: db.open_tree(tree::USERS)?,
            tokens: db.open_tree(tree::TOKENS)?,
            join: db.open_tree(tree::JOIN)?,
            agents: db.open_tree(tree::AGENTS)?,
            user_audit: db.open_tree(tree::USER_AUDIT)?,
            db,
        })
    }

    /// Makes every write so far durable; call before acknowledging a write that must survive.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The underlying database, for other modules of the store crate.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// A small metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets a small metadata value (durable on return).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key, value.as_bytes())?;
        self.flush()
    }

    /// Adds a user and the hash of their token in one transaction with the audit record
    /// (durable on return).
    pub fn add_user(&self, user: &UserRecord, audit: &UserAuditRecord) -> Result<(), StoreError> {
        (&self.users, &self.tokens, &self.user_audit)
            .transaction(|(users, tokens, log)| {
                if users.get(user.name.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Refused(StoreRefusal::UserExists(
                        user.name.clone(),
                    ))));
                }
                users.insert(user.name.as_bytes(), encode(user))?;
                tokens.insert(user.token_sha256.as_bytes(), user.name.as_bytes())?;
                log.insert(&log.generate_id()?.to_be_bytes(), encode(audit))?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// Changes user `name` with `f` and writes `audit`, in one transaction (durable on
    /// return). When `f` changes the token hash, the old hash stops naming anyone at once.
    pub fn update_user(
        &self,
        name: &str,
        audit: &UserAuditRecord,
        f: impl Fn(&mut UserRecord),
    ) -> Result<UserRecord, StoreError> {
        let rec = (&self.users, &self.tokens, &self.user_audit)
            .transaction(|(users, tokens, log)| {
                let raw = users.get(name.as_bytes())?.ok_or_else(|| {
                    abort(StoreError::Refused(StoreRefusal::NoUser(name.to_string())))
                })?;
                let mut rec: UserRecord =
                    decode(tree::USERS, name.as_bytes(), &raw).map_err(abort)?;
                let old_hash = rec.token_sha256.clone();
                f(&mut rec);
                if rec.token_sha256 != old_hash {
                    tokens.remove(old_hash.as_bytes())?;
                    tokens.insert(rec.token_sha256.as_bytes(), name.as_bytes())?;
                }
                users.insert(name.as_bytes(), encode(&rec))?;
                log.insert(&log.generate_id()?.to_be_bytes(), encode(audit))?;
                Ok(rec)
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(rec)
    }

    /// Removes user `name` and its token, writing `audit` (the name stays in the audit log
    /// and in the workflow history); durable on return.
    pub fn remove_user(&self, name: &str, audit: &UserAuditRecord) -> Result<(), StoreError> {
        (&self.users, &self.tokens, &self.user_audit)
            .transaction(|(users, tokens, log)| {
                let raw = users.get(name.as_bytes())?.ok_or_else(|| {
                    abort(StoreError::Refused(StoreRefusal::NoUser(name.to_string())))
                })?;
                let rec: UserRecord = decode(tree::USERS, name.as_bytes(), &raw).map_err(abort)?;
                tokens.remove(rec.token_sha256.as_bytes())?;
                users.remove(name.as_bytes())?;
                log.insert(&log.generate_id()?.to_be_bytes(), encode(audit))?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// One user, by name.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.users.get(name.as_bytes())? {
            Some(raw) => Ok(Some(decode(tree::USERS, name.as_bytes(), &raw)?)),
            None => Ok(None),
        }
    }

    /// The user audit log, oldest first.
    pub fn user_audit(&self) -> Result<Vec<UserAuditRecord>, StoreError> {
        self.user_audit
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(tree::USER_AUDIT, &k, &v)
            })
            .collect()
    }

    /// The user a token (by its SHA-256) belongs to.
    pub fn user_by_token(&self, token_sha256: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(name) = self.tokens.get(token_sha256.as_bytes())? else {
            return Ok(None);
        };
        match self.users.get(&name)? {
            Some(raw) => Ok(Some(decode(tree::USERS, &name, &raw)?)),
            None => Ok(None),
        }
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.users
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(tree::USERS, &k, &v)
            })
            .collect()
    }

    /// Stores a new join token (durable on return).
    pub fn add_join_token(&self, rec: &JoinTokenRecord) -> Result<(), StoreError> {
        self.join.insert(rec.token_sha256.as_bytes(), encode(rec))?;
        self.flush()
    }

    /// One join token, by its SHA-256.
    pub fn join_token(&self, token_sha256: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        match self.join.get(token_sha256.as_bytes())? {
            Some(raw) => Ok(Some(decode(tree::JOIN, token_sha256.as_bytes(), &raw)?)),
            None => Ok(None),
        }
    }

    /// Would [`Self::enroll`] with this token and agent id succeed now? A read-only check, so
    /// a request is authenticated before anything of it is parsed or signed; `enroll` checks
    /// again atomically.
    pub fn check_join_token(
        &self,
        token_sha256: &str,
        now_ms: i64,
        agent_id: &str,
    ) -> Result<(), StoreError> {
        let tok = self
            .join_token(token_sha256)?
            .ok_or(StoreError::Refused(StoreRefusal::TokenUnknown))?;
        if tok.use_count() >= tok.max_uses.max(1) as usize {
            let last = tok.uses.last().map(|u| u.agent.clone());
            return Err(StoreError::Refused(StoreRefusal::TokenUsed(
                last.or(tok.used_by).unwrap_or_default(),
            )));
        }
        if now_ms >= tok.expires_at_ms {
            return Err(StoreError::Refused(StoreRefusal::TokenExpired));
        }
        if let Some(old) = self.agent(agent_id)? {
            return Err(if old.revoked {
                StoreError::Refused(StoreRefusal::AgentRevoked(agent_id.to_string()))
            } else {
                StoreError::Refused(StoreRefusal::AgentExists(agent_id.to_string()))
            });
        }
        Ok(())
    }

    /// Enrollment, atomically: the token must be known, unexpired at `now_ms` with a use left,
    /// and the agent id free; then the use is recorded (agent id and time) and the agent
    /// recorded. Durable on return, so a certificate is only handed out for an agent the store
    /// remembers. Concurrent enrollments with one token serialise here: exactly `max_uses`
    /// succeed.
    pub fn enroll(
        &self,
        token_sha256: &str,
        now_ms: i64,
        agent: &AgentRecord,
    ) -> Result<(), StoreError> {
        (&self.join, &self.agents)
            .transaction(|(join, agents)| {
                let key = token_sha256.as_bytes();
                let raw = join
                    .get(key)?
                    .ok_or_else(|| abort(StoreError::Refused(StoreRefusal::TokenUnknown)))?;
                let mut tok: JoinTokenRecord = decode(tree::JOIN, key, &raw).map_err(abort)?;
                if tok.use_count() >= tok.max_uses.max(1) as usize {
                    let last = tok
                        .uses
                        .last()
                        .map(|u| u.agent.clone())
                        .or_else(|| tok.used_by.clone())
                        .unwrap_or_default();
                    return Err(abort(StoreError::Refused(StoreRefusal::TokenUsed(last))));
                }
                if now_ms >= tok.expires_at_ms {
                    return Err(abort(StoreError::Refused(StoreRefusal::TokenExpired)));
                }
                if let Some(raw) = agents.get(agent.id.as_bytes())? {
                    let old: AgentRecord =
                        decode(tree::AGENTS, agent.id.as_bytes(), &raw).map_err(abort)?;
                    return Err(abort(if old.revoked {
                        StoreError::Refused(StoreRefusal::AgentRevoked(agent.id.clone()))
                    } else {
                        StoreError::Refused(StoreRefusal::AgentExists(agent.id.clone()))
                    }));
                }
                if tok.used_by.is_none() {
                    tok.used_by = Some(agent.id.clone());
                    tok.used_at_ms = Some(now_ms);
                }
                tok.uses.push(JoinTokenUse {
                    agent: agent.id.clone(),
                    at_ms: now_ms,
                });
                join.insert(key, encode(&tok))?;
                agents.insert(agent.id.as_bytes(), encode(agent))?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        match self.agents.get(id.as_bytes())? {
            Some(raw) => Ok(Some(decode(tree::AGENTS, id.as_bytes(), &raw)?)),
            None => Ok(None),
        }
    }

    /// Every agent, by id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agents
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(tree::AGENTS, &k, &v)
            })
            .collect()
    }

    /// Changes one agent record atomically (compare-and-swap loop); returns the new record.
    /// `durable` flushes before returning (revocation); heartbeats need not.
    pub fn update_agent(
        &self,
        id: &str,
        durable: bool,
        mut f: impl FnMut(&mut AgentRecord),
    ) -> Result<AgentRecord, StoreError> {
        loop {
            let old = self
                .agents
                .get(id.as_bytes())?
                .ok_or_else(|| StoreError::Refused(StoreRefusal::NoAgent(id.to_string())))?;
            let mut rec: AgentRecord = decode(tree::AGENTS, id.as_bytes(), &old)?;
            f(&mut rec);
            let new = encode(&rec);
            if self
                .agents
                .compare_and_swap(id.as_bytes(), Some(&old), Some(new))?
                .is_ok()
            {
                if durable {
                    self.flush()?;
                }
                return Ok(rec);
            }
        }
    }
}

#[cfg(test)]
mod disk_format;
/// Opens the store again in the same process after the last handle was dropped. sled's
/// background flusher lets go of the directory's lock a moment after the drop, so an immediate
/// reopen can meet `Locked`; this waits for it, at most 10 s.
#[cfg(test)]
pub(crate) fn reopen(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Err(StoreError::Fault(StoreFault::Locked { .. }))
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => return r.expect("the store reopens"),
        }
    }
}

#[cfg(test)]
mod tests;
