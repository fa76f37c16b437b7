//! Commit-confirm: snapshot → validate → apply atomically → rollback timer → confirm/persist.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use super::audit::{self, FwCheckResult};
use super::exec::{CommandRunner, Tool};
use super::render::{self, Family};
use super::{AllowList, Backend, FirewallError, Listener, PlannedPort, NFT_TABLE};
use preflight_core::net::Proto;

/// Default confirmation window.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);
/// Shortest accepted confirmation window.
pub const MIN_CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest accepted confirmation window.
pub const MAX_CONFIRM_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest state file read back.
const MAX_STATE_FILE: u64 = 64 * 1024 * 1024;
const PENDING_FILE: &str = "pending.json";
const ALLOWLIST_FILE: &str = "allowlist.json";
/// One iptables family: (family tag, current `*-save` output, rendered restore file).
type IptPart = (&'static str, String, String);
/// Pause between attempts when a timed-out rollback fails.
const ROLLBACK_RETRY: Duration = Duration::from_secs(5);
/// Outcomes remembered in memory (oldest forgotten first).
const MAX_OUTCOMES: usize = 256;

/// A rendered change, not yet applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallPlan {
    /// The backend it is for.
    pub backend: Backend,
    /// The allow-list it was rendered from.
    pub allow_list: AllowList,
    /// The ruleset: nft file, `iptables-restore` file (IPv4; the IPv6 file follows after a
    /// `# ip6tables` line when ip6tables is installed), or one `firewall-cmd` argument list per
    /// line.
    pub rendered: String,
    /// Unified diff between what is loaded now and `rendered`.
    pub diff_vs_current: String,
    /// Non-loopback listeners the new ruleset would block.
    pub blocked_listeners: Vec<Listener>,
}

/// An applied change waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingChange {
    /// Token to pass to [`FirewallManager::confirm`].
    pub id: String,
    /// When the ruleset is rolled back unless confirmed.
    pub deadline: SystemTime,
    /// Backend.
    pub backend: Backend,
}

/// Why a change was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// The deadline passed without confirmation.
    Timeout,
    /// [`FirewallManager::rollback_now`].
    Requested,
    /// Found pending at start-up ([`FirewallManager::recover_on_start`]).
    Startup,
}

/// What became of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Confirmed and persisted.
    Confirmed,
    /// The snapshot was restored.
    RolledBack(RollbackReason),
    /// Restoring failed; the pending state stays on disk and start-up retries.
    RollbackFailed(String),
}

/// The pending change as written to the state directory before the ruleset is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingState {
    id: String,
    backend: Backend,
    deadline_unix_ms: u64,
    /// nftables: file (in the state dir) holding `nft list table inet preflight` from before,
    /// or `None` when the table did not exist.
    nft_table_snapshot: Option<String>,
    /// iptables: `(family, file in the state dir)` holding `iptables-save` from before.
    ipt_snapshots: Vec<(String, String)>,
    /// The allow-list being applied (kept as the confirmed one on confirm).
    allow_list: AllowList,
    /// The rendered ruleset (persisted on confirm).
    rendered: String,
}

#[derive(Default)]
struct State {
    pending: Option<PendingState>,
    /// Monotonic deadline of `pending` (the wall-clock one on disk is for restarts only), so a
    /// clock step cannot delay a rollback.
    deadline_at: Option<Instant>,
    outcomes: HashMap<String, ChangeOutcome>,
    order: Vec<String>,
    shutdown: bool,
}

impl State {
    fn record(&mut self, id: &str, outcome: ChangeOutcome) {
        if self.outcomes.insert(id.to_owned(), outcome).is_none() {
            self.order.push(id.to_owned());
        }
        if self.order.len() > MAX_OUTCOMES {
            let old = self.order.remove(0);
            self.outcomes.remove(&old);
        }
    }
}

/// The firewalld zone changed.
const FIREWALLD_ZONE: &str = "public";

struct Shared {
    backend: Backend,
    runner: CommandRunner,
    state_dir: PathBuf,
    persist_v4: Option<PathBuf>,
    persist_v6: Option<PathBuf>,
    state: Mutex<State>,
    cv: Condvar,
}

/// Applies allow-lists with commit-confirm on one backend. Dropping the manager stops its timers
/// without rolling back (as a crash would); the pending state stays on disk for
/// [`FirewallManager::recover_on_start`].
pub struct FirewallManager {
    shared: Arc<Shared>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> FirewallError {
    FirewallError::State {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Writes `data` to `path` atomically: temp file (mode 0600) + fsync + rename + directory fsync.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FirewallError> {
    let dir = path
        .parent()
        .ok_or_else(|| state_err(path, "has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| state_err(path, "has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| state_err(&tmp, e))?;
    f.write_all(data).map_err(|e| state_err(&tmp, e))?;
    f.sync_all().map_err(|e| state_err(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| state_err(path, e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_capped(path: &Path) -> Result<String, FirewallError> {
    let meta = fs::metadata(path).map_err(|e| state_err(path, e))?;
    if meta.len() > MAX_STATE_FILE {
        return Err(state_err(
            path,
            format!("is {} bytes, more than {MAX_STATE_FILE}", meta.len()),
        ));
    }
    fs::read_to_string(path).map_err(|e| state_err(path, e))
}

fn new_id() -> Result<String, FirewallError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| FirewallError::State {
            path: "random".into(),
            detail: "no randomness for the change id".into(),
        })?;
    Ok(hex::encode(b))
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going so the rollback
        // path stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }

    fn read_pending_file(&self) -> Result<Option<PendingState>, FirewallError> {
        let path = self.file(PENDING_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = read_capped(&path)?;
        let p: PendingState = serde_json::from_str(&text).map_err(|e| state_err(&path, e))?;
        let names_ok = p
            .nft_table_snapshot
            .iter()
            .chain(p.ipt_snapshots.iter().map(|(_, f)| f))
            .all(|f| !f.is_empty() && !f.contains('/') && !f.starts_with('.'));
        if !valid_id(&p.id) || !names_ok || p.backend != self.backend {
            return Err(state_err(
                &path,
                "is not a pending change written by this backend; inspect and remove it",
            ));
        }
        Ok(Some(p))
    }

    fn ipt_tools(family: &str) -> Option<(Tool, Tool)> {
        match family {
            "v4" => Some((Tool::IptablesSave, Tool::IptablesRestore)),
            "v6" => Some((Tool::Ip6tablesSave, Tool::Ip6tablesRestore)),
            _ => None,
        }
    }

    /// Restores the snapshot of `p`; removes the pending file on success.
    fn restore(&self, p: &PendingState) -> Result<(), FirewallError> {
        info!(id = %p.id, backend = %self.backend, "rolling back firewall change");
        match self.backend {
            Backend::Nftables => {
                let snapshot = match &p.nft_table_snapshot {
                    Some(f) => Some(read_capped(&self.file(f))?),
                    None => None,
                };
                let file = self.file(&format!("{}.rollback.nft", p.id));
                write_atomic(
                    &file,
                    render::render_nft_restore(snapshot.as_deref()).as_bytes(),
                )?;
                self.runner
                    .run_ok(Tool::Nft, &["-f", &file.to_string_lossy()])?;
            }
            Backend::Iptables => {
                for (family, f) in &p.ipt_snapshots {
                    let (_, restore) = Self::ipt_tools(family).ok_or_else(|| {
                        state_err(&self.file(PENDING_FILE), format!("unknown family {family}"))
                    })?;
                    let snapshot = read_capped(&self.file(f))?;
                    let file = self.file(&format!("{}.rollback.{family}", p.id));
                    write_atomic(&file, render::render_iptables_restore(&snapshot).as_bytes())?;
                    self.runner.run_ok(restore, &[&file.to_string_lossy()])?;
                }
            }
            Backend::Firewalld => {
                let args = render::firewalld_rollback();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.runner.run_ok(Tool::FirewallCmd, &args)?;
            }
        }
        let pending = self.file(PENDING_FILE);
        fs::remove_file(&pending).map_err(|e| state_err(&pending, e))?;
        Ok(())
    }

    /// Restores the snapshot of the pending change. On failure the change stays pending (in
    /// memory and on disk) and a timer retries every [`ROLLBACK_RETRY`]: the host may be cut
    /// off, so giving up is not an option.
    fn rollback_locked(self: &Arc<Self>, st: &mut State, reason: RollbackReason) -> ChangeOutcome {
        let Some(p) = st.pending.take() else {
            return ChangeOutcome::RollbackFailed("nothing pending".into());
        };
        st.deadline_at = None;
        let outcome = match self.restore(&p) {
            Ok(()) => ChangeOutcome::RolledBack(reason),
            Err(e) => {
                error!(id = %p.id, error = %e, retry_s = ROLLBACK_RETRY.as_secs(), "firewall rollback failed; retrying");
                ChangeOutcome::RollbackFailed(e.to_string())
            }
        };
        st.record(&p.id, outcome.clone());
        if matches!(outcome, ChangeOutcome::RollbackFailed(_)) {
            let id = p.id.clone();
            st.pending = Some(p);
            st.deadline_at = Some(Instant::now() + ROLLBACK_RETRY);
            let shared = Arc::clone(self);
            // The new timer waits for the lock our caller holds.
            if let Err(e) = std::thread::Builder::new()
                .name("fw-rollback".into())
                .spawn(move || timer(shared, id))
            {
                error!(error = %e, "cannot start the rollback retry timer; start-up will roll back");
            }
        }
        self.cv.notify_all();
        outcome
    }
}

fn timer(shared: Arc<Shared>, id: String) {
    let mut st = shared.lock();
    loop {
        if st.shutdown {
            return;
        }
        let deadline = match (&st.pending, st.deadline_at) {
            (Some(p), Some(d)) if p.id == id => d,
            _ => return,
        };
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => {
                st = shared
                    .cv
                    .wait_timeout(st, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            _ => {
                warn!(id = %id, "firewall change not confirmed in time");
                // On failure this arms a fresh timer for the retry.
                shared.rollback_locked(&mut st, RollbackReason::Timeout);
                return;
            }
        }
    }
}

impl FirewallManager {
    /// A manager for `backend` keeping its pending state in `state_dir` (created with mode
    /// 0700), running tools on the host.
    pub fn new(backend: Backend, state_dir: &Path) -> Result<Self, FirewallError> {
        Self::with_runner(backend, state_dir, CommandRunner::host())
    }

    /// [`FirewallManager::new`] with a runner (e.g. inside a network namespace).
    pub fn with_runner(
        backend: Backend,
        state_dir: &Path,
        runner: CommandRunner,
    ) -> Result<Self, FirewallError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| state_err(state_dir, e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                backend,
                runner,
                state_dir: state_dir.to_owned(),
                persist_v4: None,
                persist_v6: None,
                state: Mutex::new(State::default()),
                cv: Condvar::new(),
            }),
        })
    }

    /// Where a confirmed ruleset is persisted: for nftables the rendered file (include it from
    /// the distribution's nftables configuration), for iptables the `iptables-save` output
    /// (`/etc/iptables/rules.v4` on Debian, `/etc/sysconfig/iptables` on EL) and optionally the
    /// `ip6tables-save` output. Without it a confirmed ruleset lasts until reboot. Call before
    /// any change.
    pub fn set_persist_paths(
        &mut self,
        v4: Option<PathBuf>,
        v6: Option<PathBuf>,
    ) -> Result<(), FirewallError> {
        let shared = Arc::get_mut(&mut self.shared).ok_or_else(|| {
            FirewallError::InvalidInput("set persist paths before applying any change".into())
        })?;
        shared.persist_v4 = v4;
        shared.persist_v6 = v6;
        Ok(())
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    fn ipt_families(&self) -> Vec<&'static str> {
        let r = &self.shared.runner;
        let mut f = vec!["v4"];
        if r.has(Tool::Ip6tablesSave) && r.has(Tool::Ip6tablesRestore) {
            f.push("v6");
        }
        f
    }

    fn render_ipt(&self, list: &AllowList) -> Result<(String, Vec<IptPart>), FirewallError> {
        // (family, current save, rendered) for each family.
        let mut parts = Vec::new();
        for family in self.ipt_families() {
            let (save, _) =
                Shared::ipt_tools(family).ok_or(FirewallError::ToolMissing("iptables-save"))?;
            let current = self.shared.runner.run_ok(save, &[])?.stdout;
            let fam = if family == "v4" {
                Family::V4
            } else {
                Family::V6
            };
            let rendered = render::render_iptables(list, fam, &current);
            parts.push((family, current, rendered));
        }
        let joined = parts
            .iter()
            .map(|(f, _, r)| {
                if *f == "v4" {
                    r.clone()
                } else {
                    format!("# ip6tables\n{r}")
                }
            })
            .collect::<Vec<_>>()
            .join("");
        Ok((joined, parts))
    }

    /// Renders `list` for this backend and diffs it against what is loaded; changes nothing.
    pub fn plan(&self, list: &AllowList) -> Result<FirewallPlan, FirewallError> {
        list.validate()?;
        let r = &self.shared.runner;
        let (rendered, diff) = match self.shared.backend {
            Backend::Nftables => {
                let rendered = render::render_nft(list);
                let current = r.run(Tool::Nft, &["list", "table", "inet", NFT_TABLE])?;
                let current = if current.success() {
                    current.stdout
                } else {
                    String::new()
                };
                let diff = render::unified_diff(
                    &current,
                    &rendered,
                    "loaded: table inet preflight",
                    "planned",
                );
                (rendered, diff)
            }
            Backend::Iptables => {
                let (rendered, parts) = self.render_ipt(list)?;
                let mut diff = String::new();
                for (family, current, new) in &parts {
                    let filter = render::ipt_sections(current)
                        .into_iter()
                        .find(|(n, _)| n == "filter")
                        .map(|(_, l)| format!("*filter\n{}\nCOMMIT\n", l.join("\n")))
                        .unwrap_or_default();
                    diff.push_str(&render::unified_diff(
                        &filter,
                        new,
                        &format!("loaded {family} filter"),
                        "planned",
                    ));
                }
                (rendered, diff)
            }
            Backend::Firewalld => {
                let cmds = render::render_firewalld(list, FIREWALLD_ZONE);
                let rendered: String = cmds
                    .iter()
                    .map(|c| format!("firewall-cmd {}\n", c.join(" ")))
                    .collect();
                (
                    rendered.clone(),
                    render::unified_diff("", &rendered, "runtime", "planned"),
                )
            }
        };
        Ok(FirewallPlan {
            backend: self.shared.backend,
            allow_list: list.clone(),
            rendered,
            diff_vs_current: diff,
            blocked_listeners: list.blocked_listeners(),
        })
    }

    /// Snapshots, validates and applies `plan` atomically, then arms the rollback timer: unless
    /// [`FirewallManager::confirm`] is called with the returned id within `timeout`, the
    /// snapshot is restored. The pending state is on disk before the ruleset is applied.
    pub fn apply_with_confirm(
        &self,
        plan: &FirewallPlan,
        timeout: Duration,
    ) -> Result<PendingChange, FirewallError> {
        if !(MIN_CONFIRM_TIMEOUT..=MAX_CONFIRM_TIMEOUT).contains(&timeout) {
            return Err(FirewallError::InvalidInput(format!(
                "confirm timeout {} s is outside {}-{} s",
                timeout.as_secs_f64(),
                MIN_CONFIRM_TIMEOUT.as_secs(),
                MAX_CONFIRM_TIMEOUT.as_secs()
            )));
        }
        if plan.backend != self.shared.backend {
            return Err(FirewallError::InvalidInput(format!(
                "plan is for {} but this manager drives {}",
                plan.backend, self.shared.backend
            )));
        }
        plan.allow_list.validate()?;
        let sh = &self.shared;
        let mut st = sh.lock();
        if let Some(p) = &st.pending {
            return Err(FirewallError::ChangePending(p.id.clone()));
        }
        if let Some(p) = sh.read_pending_file()? {
            return Err(FirewallError::ChangePending(format!(
                "{} (left by an earlier run: call recover_on_start)",
                p.id
            )));
        }
        let id = new_id()?;
        let r = &sh.runner;
        let mut pending = PendingState {
            id: id.clone(),
            backend: sh.backend,
            deadline_unix_ms: 0,
            nft_table_snapshot: None,
            ipt_snapshots: Vec::new(),
            allow_list: plan.allow_list.clone(),
            rendered: String::new(),
        };
        // Snapshot and validate; nothing is changed yet.
        let apply_steps: Vec<(Tool, PathBuf)> = match sh.backend {
            Backend::Nftables => {
                let rendered = render::render_nft(&plan.allow_list);
                if rendered != plan.rendered {
                    return Err(FirewallError::InvalidInput(
                        "the plan's ruleset does not match its allow-list; plan again".into(),
                    ));
                }
                let file = sh.file(&format!("{id}.apply.nft"));
                write_atomic(&file, rendered.as_bytes())?;
                let check = r.run(Tool::Nft, &["-c", "-f", &file.to_string_lossy()])?;
                if !check.success() {
                    return Err(FirewallError::Validation(format!(
                        "nft -c: {}",
                        check.stderr.trim()
                    )));
                }
                let full = r.run_ok(Tool::Nft, &["list", "ruleset"])?;
                write_atomic(
                    &sh.file(&format!("{id}.before.ruleset.nft")),
                    full.stdout.as_bytes(),
                )?;
                let table = r.run(Tool::Nft, &["list", "table", "inet", NFT_TABLE])?;
                if table.success() {
                    let name = format!("{id}.before.table.nft");
                    write_atomic(&sh.file(&name), table.stdout.as_bytes())?;
                    pending.nft_table_snapshot = Some(name);
                }
                pending.rendered = rendered;
                vec![(Tool::Nft, file)]
            }
            Backend::Iptables => {
                let (rendered, parts) = self.render_ipt(&plan.allow_list)?;
                if rendered != plan.rendered {
                    return Err(FirewallError::InvalidInput(
                        "the loaded iptables rules changed since the plan was made; plan again"
                            .into(),
                    ));
                }
                let mut steps = Vec::new();
                for (family, current, new) in parts {
                    let (_, restore) = Shared::ipt_tools(family)
                        .ok_or(FirewallError::ToolMissing("iptables-restore"))?;
                    let snap = format!("{id}.before.{family}.rules");
                    write_atomic(&sh.file(&snap), current.as_bytes())?;
                    pending.ipt_snapshots.push((family.to_owned(), snap));
                    let file = sh.file(&format!("{id}.apply.{family}.rules"));
                    write_atomic(&file, new.as_bytes())?;
                    let check = r.run(restore, &["-t", &file.to_string_lossy()])?;
                    if !check.success() {
                        return Err(FirewallError::Validation(format!(
                            "{} -t: {}",
                            restore.name(),
                            check.stderr.trim()
                        )));
                    }
                    steps.push((restore, file));
                }
                pending.rendered = rendered;
                steps
            }
            Backend::Firewalld => {
                let state = r.run(Tool::FirewallCmd, &["--state"])?;
                if !state.success() {
                    return Err(FirewallError::Tool {
                        tool: "firewall-cmd",
                        detail: "firewalld is not running".into(),
                    });
                }
                let check = r.run(Tool::FirewallCmd, &["--check-config"])?;
                if !check.success() {
                    return Err(FirewallError::Validation(format!(
                        "firewall-cmd --check-config: {}",
                        check.stderr.trim()
                    )));
                }
                let snap = r.run_ok(Tool::FirewallCmd, &["--list-all-zones"])?;
                write_atomic(
                    &sh.file(&format!("{id}.before.firewalld.txt")),
                    snap.stdout.as_bytes(),
                )?;
                pending.rendered = plan.rendered.clone();
                Vec::new()
            }
        };
        let deadline_at = Instant::now() + timeout;
        let deadline = SystemTime::now() + timeout;
        pending.deadline_unix_ms = unix_ms(deadline);
        let pending_json = serde_json::to_vec_pretty(&pending)
            .map_err(|e| state_err(&sh.file(PENDING_FILE), e))?;
        write_atomic(&sh.file(PENDING_FILE), &pending_json)?;

        // Apply. A failure part-way restores the snapshot at once.
        let applied = match sh.backend {
            Backend::Nftables | Backend::Iptables => {
                apply_steps.iter().try_for_each(|(tool, file)| {
                    let path = file.to_string_lossy();
                    let args: Vec<&str> = if *tool == Tool::Nft {
                        vec!["-f", &path]
                    } else {
                        vec![&path]
                    };
                    r.run_ok(*tool, &args).map(|_| ())
                })
            }
            Backend::Firewalld => render::render_firewalld(&plan.allow_list, FIREWALLD_ZONE)
                .iter()
                .try_for_each(|c| {
                    let args: Vec<&str> = c.iter().map(String::as_str).collect();
                    r.run_ok(Tool::FirewallCmd, &args).map(|_| ())
                }),
        };
        if let Err(e) = applied {
            error!(id = %id, error = %e, "applying the firewall change failed; restoring the snapshot");
            st.pending = Some(pending);
            let outcome = sh.rollback_locked(&mut st, RollbackReason::Requested);
            return Err(FirewallError::Tool {
                tool: "apply",
                detail: format!("{e}; rollback: {outcome:?}"),
            });
        }
        info!(id = %id, backend = %sh.backend, timeout_s = timeout.as_secs(), "firewall change applied, waiting for confirmation");
        st.pending = Some(pending);
        st.deadline_at = Some(deadline_at);
        let shared = Arc::clone(&self.shared);
        let tid = id.clone();
        // The timer thread waits for the lock we hold, so it cannot miss the pending change.
        let spawned = std::thread::Builder::new()
            .name("fw-rollback".into())
            .spawn(move || timer(shared, tid));
        if let Err(e) = spawned {
            let outcome = sh.rollback_locked(&mut st, RollbackReason::Requested);
            return Err(state_err(
                &sh.state_dir,
                format!("cannot start the rollback timer ({e}); change rolled back: {outcome:?}"),
            ));
        }
        drop(st);
        Ok(PendingChange {
            id,
            deadline,
            backend: sh.backend,
        })
    }

    /// Confirms change `id`: persists the ruleset, records the allow-list as the confirmed one
    /// and disarms the timer. After the deadline this fails with [`FirewallError::Expired`].
    pub fn confirm(&self, id: &str) -> Result<(), FirewallError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let p = match &st.pending {
            Some(p) if p.id == id => p.clone(),
            _ => {
                return Err(match st.outcomes.get(id) {
                    Some(ChangeOutcome::RolledBack(_) | ChangeOutcome::RollbackFailed(_)) => {
                        FirewallError::Expired(id.to_owned())
                    }
                    _ => FirewallError::NoSuchChange(id.to_owned()),
                })
            }
        };
        let retrying = matches!(st.outcomes.get(id), Some(ChangeOutcome::RollbackFailed(_)));
        if retrying || st.deadline_at.is_none_or(|d| Instant::now() >= d) {
            sh.rollback_locked(&mut st, RollbackReason::Timeout);
            return Err(FirewallError::Expired(id.to_owned()));
        }
        // Persist first: if that fails the change stays pending and the timer still rolls back.
        match sh.backend {
            Backend::Nftables => {
                if let Some(path) = &sh.persist_v4 {
                    write_atomic(path, p.rendered.as_bytes())?;
                }
            }
            Backend::Iptables => {
                for (family, path) in [("v4", &sh.persist_v4), ("v6", &sh.persist_v6)] {
                    if let (Some(path), Some((save, _))) = (path, Shared::ipt_tools(family)) {
                        let out = sh.runner.run_ok(save, &[])?;
                        write_atomic(path, out.stdout.as_bytes())?;
                    }
                }
            }
            Backend::Firewalld => {
                let args = render::firewalld_confirm();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                sh.runner.run_ok(Tool::FirewallCmd, &args)?;
            }
        }
        let list = serde_json::to_vec_pretty(&p.allow_list)
            .map_err(|e| state_err(&sh.file(ALLOWLIST_FILE), e))?;
        write_atomic(&sh.file(ALLOWLIST_FILE), &list)?;
        let pending = sh.file(PENDING_FILE);
        fs::remove_file(&pending).map_err(|e| state_err(&pending, e))?;
        st.pending = None;
        st.deadline_at = None;
        st.record(id, ChangeOutcome::Confirmed);
        sh.cv.notify_all();
        info!(id = %id, "firewall change confirmed");
        Ok(())
    }

    /// Rolls change `id` back now.
    pub fn rollback_now(&self, id: &str) -> Result<ChangeOutcome, FirewallError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        match &st.pending {
            Some(p) if p.id == id => {}
            _ => return Err(FirewallError::NoSuchChange(id.to_owned())),
        }
        match sh.rollback_locked(&mut st, RollbackReason::Requested) {
            ChangeOutcome::RollbackFailed(e) => Err(FirewallError::Tool {
                tool: "rollback",
                detail: e,
            }),
            o => Ok(o),
        }
    }

    /// At agent start-up: a change left pending by an earlier run (the agent died or was
    /// restarted inside the window) is rolled back at once, whatever its deadline, because its
    /// confirmation can no longer be trusted to arrive. Returns what was done, if anything.
    pub fn recover_on_start(&self) -> Result<Option<(String, ChangeOutcome)>, FirewallError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let Some(p) = sh.read_pending_file()? else {
            return Ok(None);
        };
        if st.pending.as_ref().is_some_and(|q| q.id == p.id) {
            return Ok(None);
        }
        let id = p.id.clone();
        debug!(id = %id, "pending firewall change found at start-up");
        st.pending = Some(p);
        let outcome = sh.rollback_locked(&mut st, RollbackReason::Startup);
        if let ChangeOutcome::RollbackFailed(e) = &outcome {
            return Err(FirewallError::Tool {
                tool: "rollback",
                detail: e.clone(),
            });
        }
        Ok(Some((id, outcome)))
    }

    /// The change waiting for confirmation, if any.
    pub fn pending(&self) -> Option<PendingChange> {
        self.shared.lock().pending.as_ref().map(|p| PendingChange {
            id: p.id.clone(),
            deadline: UNIX_EPOCH + Duration::from_millis(p.deadline_unix_ms),
            backend: p.backend,
        })
    }

    /// What became of change `id` (`None` while pending or unknown).
    pub fn outcome(&self, id: &str) -> Option<ChangeOutcome> {
        self.shared.lock().outcomes.get(id).cloned()
    }

    /// The allow-list of the last confirmed change, if any.
    pub fn confirmed_allow_list(&self) -> Result<Option<AllowList>, FirewallError> {
        read_confirmed_allow_list(&self.shared.state_dir)
    }

    /// Opens one more port on top of the confirmed allow-list, through the same commit-confirm
    /// procedure. `sources` empty means from anywhere. Returns the plan (for the evidence) and
    /// the pending change.
    pub fn allow_port(
        &self,
        port: u16,
        proto: Proto,
        sources: Vec<IpNet>,
        reason: &str,
        timeout: Duration,
    ) -> Result<(FirewallPlan, PendingChange), FirewallError> {
        if reason.trim().is_empty() || reason.len() > 512 {
            return Err(FirewallError::InvalidInput(
                "reason must be 1-512 bytes: say which application needs the port".into(),
            ));
        }
        let mut list = self.confirmed_allow_list()?.ok_or_else(|| {
            FirewallError::InvalidInput(
                "no confirmed allow-list on this host yet: apply the hardening firewall plan first"
                    .into(),
            )
        })?;
        if list
            .planned
            .iter()
            .any(|p| p.port == port && p.proto == proto && p.sources == sources)
        {
            return Err(FirewallError::InvalidInput(format!(
                "{port}/{proto} is already allowed from these sources"
            )));
        }
        list.planned.push(PlannedPort {
            port,
            proto,
            sources,
            reason: reason.to_owned(),
        });
        let plan = self.plan(&list)?;
        let pending = self.apply_with_confirm(&plan, timeout)?;
        Ok((plan, pending))
    }

    /// Runs `fw.single_backend`, `fw.default_deny_in`, `fw.allowlist_ports` and
    /// `fw.mgmt_source` against the host for this backend.
    pub fn audit(&self, list: &AllowList, listeners: &[Listener]) -> Vec<FwCheckResult> {
        audit::audit(&self.shared.runner, self.shared.backend, list, listeners)
    }
}

/// The allow-list of the last change confirmed in the firewall state directory `state_dir`
/// (what [`FirewallManager::confirmed_allow_list`] reads), without a manager: for read-only
/// audits in another process (`preflight-agent harden audit`).
pub fn read_confirmed_allow_list(state_dir: &Path) -> Result<Option<AllowList>, FirewallError> {
    let path = state_dir.join(ALLOWLIST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_capped(&path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| state_err(&path, e))
}

impl Drop for FirewallManager {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.shutdown = true;
        self.shared.cv.notify_all();
    }
}
