//! Sweep runs. A run is written as `running` (durably) before any agent is asked, and replaced
//! by its finished record in one write; a controller that dies in between finds it `running` at
//! start-up and marks it `interrupted`, so a run is never half-recorded.

use serde::{Deserialize, Serialize};

use crate::{decode, encode, Store, StoreError};

const TREE: &str = "sweeps";

/// One judged check of a run (strings: the store does not depend on how core names things).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRecord {
    pub server: String,
    pub check: String,
    pub verdict: String,
    pub party: String,
    pub reason: String,
    pub message: String,
    pub message_zh: String,
    pub fix: String,
    pub fix_zh: String,
    /// Measured figure and threshold of numeric checks, with their unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// What a network check is about (absent in runs stored before targets were data, and
    /// for a server's own checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetRecord>,
}

/// The target of a network finding: `kind` (`path`, `port`, `bandwidth`, `vip`), from
/// `server` to `dest`, on `port` over `proto` (`tcp`, `udp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub kind: String,
    pub server: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub proto: String,
}

/// A sweep run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub run_id: u64,
    pub batch: String,
    pub plan_digest: String,
    pub started_at_ms: i64,
    #[serde(default)]
    pub finished_at_ms: i64,
    /// `running`, `finished` or `interrupted`.
    pub state: String,
    #[serde(default)]
    pub findings: Vec<FindingRecord>,
    /// Checks the run left out (`--skip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Why the run was not recorded as its batch's readiness (empty when it was, or when no
    /// batch of that id exists).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_recorded: String,
    /// Who asked, for which project, whether it became the readiness, what each server is.
    #[serde(default)]
    pub context: SweepContext,
}

/// The facts of a run beyond its findings, for the report's first screen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepContext {
    /// The batch's project (else the plan's).
    #[serde(default)]
    pub project: String,
    /// The user who asked for the run, and their role.
    #[serde(default)]
    pub started_by: String,
    #[serde(default)]
    pub started_by_role: String,
    /// Recorded as the batch's readiness.
    #[serde(default)]
    pub recorded: bool,
    /// `not_recorded` in Chinese.
    #[serde(default)]
    pub not_recorded_zh: String,
    /// Per planned server, in plan order.
    #[serde(default)]
    pub servers: Vec<ServerRecord>,
}

/// A planned server and what its inventory showed (empty when its agent never answered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub server: String,
    pub address: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub cpu_model: String,
    #[serde(default)]
    pub cpu_threads: u32,
    #[serde(default)]
    pub memory_bytes: u64,
    /// Disks: name, size in bytes, rotational.
    #[serde(default)]
    pub disks: Vec<(String, u64, bool)>,
}

impl Store {
    fn sweeps_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db().open_tree(TREE)?)
    }

    /// A new run id, increasing across restarts.
    pub fn next_sweep_id(&self) -> Result<u64, StoreError> {
        Ok(self.db().generate_id()? + 1)
    }

    /// Writes a run record (durable on return).
    pub fn put_sweep(&self, rec: &SweepRecord) -> Result<(), StoreError> {
        self.sweeps_tree()?
            .insert(rec.run_id.to_be_bytes(), encode(rec))?;
        self.flush()
    }

    /// Marks every `running` run interrupted (at start-up); returns their ids.
    pub fn interrupt_running_sweeps(&self, now_ms: i64) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for mut r in self.sweeps(None)? {
            if r.state == "running" {
                r.state = "interrupted".into();
                r.finished_at_ms = now_ms;
                self.put_sweep(&r)?;
                ids.push(r.run_id);
            }
        }
        Ok(ids)
    }

    /// Runs, oldest first, of one batch or all.
    pub fn sweeps(&self, batch: Option<&str>) -> Result<Vec<SweepRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.sweeps_tree()?.iter() {
            let (k, v) = kv?;
            let r: SweepRecord = decode(TREE, &k, &v)?;
            if batch.is_none_or(|b| b == r.batch) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// One run.
    pub fn sweep(&self, run_id: u64) -> Result<Option<SweepRecord>, StoreError> {
        let k = run_id.to_be_bytes();
        match self.sweeps_tree()?.get(k)? {
            Some(v) => Ok(Some(decode(TREE, &k, &v)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_runs_are_interrupted_at_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let s = Store::open(dir.path()).unwrap();
            id = s.next_sweep_id().unwrap();
            s.put_sweep(&SweepRecord {
                run_id: id,
                batch: "b1".into(),
                plan_digest: "d".into(),
                started_at_ms: 1,
                finished_at_ms: 0,
                state: "running".into(),
                findings: vec![],
                skipped: vec![],
                not_recorded: String::new(),
                context: Default::default(),
            })
            .unwrap();
        }
        let s = crate::reopen(dir.path());
        assert!(s.next_sweep_id().unwrap() > id);
        assert_eq!(s.interrupt_running_sweeps(5).unwrap(), vec![id]);
        let r = s.sweep(id).unwrap().unwrap();
        assert_eq!((r.state.as_str(), r.finished_at_ms), ("interrupted", 5));
        assert_eq!(s.sweeps(Some("b1")).unwrap().len(), 1);
        assert!(s.sweeps(Some("b2")).unwrap().is_empty());
        assert!(s.interrupt_running_sweeps(6).unwrap().is_empty());
    }

    #[test]
    fn runs_stored_before_the_context_still_read() {
        let old =
            r#"{"run_id":3,"batch":"b1","plan_digest":"d","started_at_ms":1,"state":"finished"}"#;
        let r: SweepRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.context, SweepContext::default());
    }

    #[test]
    fn findings_stored_before_targets_still_read() {
        let old = r#"{"server":"a","check":"path:b:80","verdict":"hard","party":"customer","reason":"network_ports","message":"m","message_zh":"m","fix":"f","fix_zh":"f"}"#;
        let f: FindingRecord = serde_json::from_str(old).unwrap();
        assert_eq!(f.target, None);
        let with = FindingRecord {
            target: Some(TargetRecord {
                kind: "path".into(),
                server: "a".into(),
                dest: "b".into(),
                port: Some(80),
                proto: "tcp".into(),
            }),
            ..f
        };
        let back: FindingRecord =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}
