//! Persistence of the deployment workflow.
//!
//! Trees (names are part of the on-disk format):
//! - `wf_events`: the append-only history, key = sequence number (8 bytes big-endian), value =
//!   one version byte + JSON of the event;
//! - `wf_batches`, `wf_projects`: the current state of each batch and project by id (a
//!   projection of the history, written in the same transaction as the events that changed it);
//! - `wf_deployers`: deployer names (value empty);
//! - `wf_meta`: small values such as the dev clock offset;
//! - `wf_plans`: the plans attached to batches, key = the plan's digest (64 hex digits), value =
//!   one version byte + JSON of the plan's canonical TOML text. Written in the same transaction
//!   as the `AttachPlan` command that refers to it; a plan is never removed (a batch's history
//!   may name it), and the same digest always holds the same text.
//!
//! Every applied command is one transaction over the first four trees (and `wf_plans` for an
//! attachment), flushed before it is acknowledged. At start-up [`WorkflowStore::load`] replays the history (which checks the
//! sequence has no gap and every recorded stage change agrees with the state machine) and
//! compares the result with the stored projections; any disagreement refuses to start.
//!
//! The event, batch and project records are the core's serde shapes behind the store's version
//! byte: a change of shape in core needs a new version byte here and a conversion.

use preflight_core::workflow::{Batch, Event, Outcome, Project, WorkflowConfig, World};
use sled::transaction::{ConflictableTransactionError, Transactional};

use super::{decode, encode, tx_err, StoreError, StoreFault};

mod tree {
    pub const EVENTS: &str = "wf_events";
    pub const BATCHES: &str = "wf_batches";
    pub const PROJECTS: &str = "wf_projects";
    pub const DEPLOYERS: &str = "wf_deployers";
    pub const META: &str = "wf_meta";
    pub const PLANS: &str = "wf_plans";
}

const DEV_CLOCK_OFFSET: &str = "dev_clock_offset_ms";

/// The workflow's trees in the controller's database.
#[derive(Clone)]
pub struct WorkflowStore {
    db: sled::Db,
    events: sled::Tree,
    batches: sled::Tree,
    projects: sled::Tree,
    deployers: sled::Tree,
    meta: sled::Tree,
    plans: sled::Tree,
}

fn corrupt(tree: &'static str, key: impl Into<String>, detail: impl Into<String>) -> StoreError {
    StoreError::Fault(StoreFault::Corrupt {
        tree,
        key: key.into(),
        detail: detail.into(),
    })
}

impl WorkflowStore {
    /// Opens (or creates) the workflow trees of `store`.
    pub fn open(store: &super::Store) -> Result<Self, StoreError> {
        let db = store.db().clone();
        Ok(Self {
            events: db.open_tree(tree::EVENTS)?,
            batches: db.open_tree(tree::BATCHES)?,
            projects: db.open_tree(tree::PROJECTS)?,
            deployers: db.open_tree(tree::DEPLOYERS)?,
            meta: db.open_tree(tree::META)?,
            plans: db.open_tree(tree::PLANS)?,
            db,
        })
    }

    /// Rebuilds the workflow from its history and checks it against the stored projections.
    pub fn load(&self, config: WorkflowConfig) -> Result<World, StoreError> {
        let mut world = World::new(config);
        for kv in self.events.iter() {
            let (k, v) = kv?;
            let ev: Event = decode(tree::EVENTS, &k, &v)?;
            let key = k
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(tree::EVENTS, format!("{k:?}"), "key is not 8 bytes"))?;
            if key != ev.seq {
                return Err(corrupt(
                    tree::EVENTS,
                    key.to_string(),
                    format!("holds event seq {}", ev.seq),
                ));
            }
            world.fold(ev).map_err(|e| {
                corrupt(
                    tree::EVENTS,
                    key.to_string(),
                    format!("the history does not replay: {e}"),
                )
            })?;
        }
        let mut stored_batches = std::collections::BTreeMap::new();
        for kv in self.batches.iter() {
            let (k, v) = kv?;
            let b: Batch = decode(tree::BATCHES, &k, &v)?;
            stored_batches.insert(b.id.clone(), b);
        }
        if stored_batches != world.batches {
            let differ = world
                .batches
                .keys()
                .chain(stored_batches.keys())
                .find(|id| world.batches.get(*id) != stored_batches.get(*id))
                .cloned()
                .unwrap_or_default();
            return Err(corrupt(
                tree::BATCHES,
                differ,
                "the stored batch differs from the one its history replays to",
            ));
        }
        let mut stored_projects = std::collections::BTreeMap::new();
        for kv in self.projects.iter() {
            let (k, v) = kv?;
            let p: Project = decode(tree::PROJECTS, &k, &v)?;
            stored_projects.insert(p.id.clone(), p);
        }
        if stored_projects != world.projects {
            return Err(corrupt(
                tree::PROJECTS,
                "*",
                "the stored projects differ from the ones the history replays to",
            ));
        }
        let mut stored_deployers = std::collections::BTreeSet::new();
        for kv in self.deployers.iter() {
            let (k, _) = kv?;
            stored_deployers.insert(String::from_utf8_lossy(&k).into_owned());
        }
        if stored_deployers != world.deployers {
            return Err(corrupt(
                tree::DEPLOYERS,
                "*",
                "the stored deployers differ from the ones the history replays to",
            ));
        }
        Ok(world)
    }

    /// Persists one outcome of [`World::apply`] in one transaction (events appended, changed
    /// batches, projects and deployers written) and flushes: durable on return. Refuses to
    /// overwrite an existing event, so the history stays append-only.
    pub fn persist(&self, outcome: &Outcome) -> Result<(), StoreError> {
        self.persist_with_plan(outcome, None)
    }

    /// [`Self::persist`], also storing `plan` = `(digest, canonical TOML)` in the same
    /// transaction (an attachment: the command and the plan it names are durable together).
    pub fn persist_with_plan(
        &self,
        outcome: &Outcome,
        plan: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        (
            &self.events,
            &self.batches,
            &self.projects,
            &self.deployers,
            &self.plans,
        )
            .transaction(|(events, batches, projects, deployers, plans)| {
                if let Some((digest, text)) = plan {
                    plans.insert(digest.as_bytes(), encode(&text))?;
                }
                for ev in &outcome.events {
                    let key = ev.seq.to_be_bytes();
                    if events.get(key)?.is_some() {
                        return Err(ConflictableTransactionError::Abort(corrupt(
                            tree::EVENTS,
                            ev.seq.to_string(),
                            "an event with this sequence number already exists; the history is append-only",
                        )));
                    }
                    events.insert(&key, encode(ev))?;
                }
                for b in &outcome.batches {
                    batches.insert(b.id.as_bytes(), encode(b))?;
                }
                for p in &outcome.projects {
                    projects.insert(p.id.as_bytes(), encode(p))?;
                }
                for d in &outcome.deployers_added {
                    deployers.insert(d.as_bytes(), &[][..])?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(())
    }

    /// The canonical TOML of the plan with this digest, if one was ever attached.
    pub fn plan_text(&self, digest: &str) -> Result<Option<String>, StoreError> {
        match self.plans.get(digest.as_bytes())? {
            Some(raw) => Ok(Some(decode(tree::PLANS, digest.as_bytes(), &raw)?)),
            None => Ok(None),
        }
    }

    /// Number of events in the history.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// The dev clock's offset over the system clock (ms), if one was ever set.
    pub fn dev_clock_offset(&self) -> Result<Option<i64>, StoreError> {
        match self.meta.get(DEV_CLOCK_OFFSET)? {
            Some(raw) => Ok(Some(decode(tree::META, DEV_CLOCK_OFFSET.as_bytes(), &raw)?)),
            None => Ok(None),
        }
    }

    /// Records the dev clock's offset (durable on return).
    pub fn set_dev_clock_offset(&self, offset_ms: i64) -> Result<(), StoreError> {
        self.meta.insert(DEV_CLOCK_OFFSET, encode(&offset_ms))?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use preflight_core::role::Role;
    use preflight_core::workflow::{Actor, Approval, Command, Stage, Timestamp};

    use super::*;

    fn cmd(w: &World, s: &WorkflowStore, actor: &Actor, c: Command) -> World {
        let o = w.apply(Timestamp(1_000), actor, c).expect("accepted");
        s.persist(&o).expect("persisted");
        let mut w = w.clone();
        w.commit(o).expect("fresh");
        w
    }

    #[test]
    fn persisted_outcomes_reload_to_the_same_world() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = super::super::Store::open(dir.path()).expect("open");
        let s = WorkflowStore::open(&store).expect("trees");
        let mut w = s.load(WorkflowConfig::default()).expect("empty loads");
        let admin = Actor::user("adm", Role::Admin);
        w = cmd(&w, &s, &admin, Command::AddDeployer { name: "amy".into() });
        w = cmd(
            &w,
            &s,
            &admin,
            Command::CreateProject {
                id: "P1".into(),
                name: "p".into(),
                business_line: "gov".into(),
                approval: Approval::Pending,
            },
        );
        w = cmd(
            &w,
            &s,
            &Actor::user("pat", Role::Project),
            Command::CreateBatch {
                id: "B1".into(),
                project: "P1".into(),
                business_line: None,
                title: "t".into(),
            },
        );
        let loaded = s.load(WorkflowConfig::default()).expect("reload");
        assert_eq!(loaded, w);
        assert_eq!(loaded.batch("B1").map(|b| b.stage), Some(Stage::Apply));
        assert_eq!(s.event_count(), 3);
        // Replaying an old outcome again is refused: the history is append-only.
        let stale = World::new(WorkflowConfig::default())
            .apply(
                Timestamp(1),
                &admin,
                Command::AddDeployer { name: "x".into() },
            )
            .expect("accepted");
        assert!(s.persist(&stale).is_err());
        assert_eq!(s.load(WorkflowConfig::default()).expect("reload"), w);
        // A projection that disagrees with the history is detected.
        s.batches
            .insert(
                b"B1",
                encode(&preflight_core::workflow::Batch {
                    stage: Stage::Done,
                    ..w.batch("B1").expect("B1").clone()
                }),
            )
            .expect("insert");
        let err = s.load(WorkflowConfig::default()).expect_err("mismatch");
        assert!(err.to_string().contains("B1"), "{err}");
        // A plan stored with its attachment command is read back by digest.
        let o = w
            .apply(
                Timestamp(2_000),
                &admin,
                Command::AddDeployer { name: "bob".into() },
            )
            .expect("accepted");
        s.persist_with_plan(&o, Some(("d1", "[batch]\n")))
            .expect("persisted");
        assert_eq!(
            s.plan_text("d1").expect("read").as_deref(),
            Some("[batch]\n")
        );
        assert_eq!(s.plan_text("d2").expect("read"), None);
        // The dev clock offset survives.
        assert_eq!(s.dev_clock_offset().expect("read"), None);
        s.set_dev_clock_offset(-42).expect("write");
        assert_eq!(s.dev_clock_offset().expect("read"), Some(-42));
    }
}
