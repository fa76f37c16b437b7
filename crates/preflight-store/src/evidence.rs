//! Persistence of hardening evidence: the leaves of the controller's Merkle log (signed
//! records, in append order), an index by agent, the agents' certificates, and the latest
//! signed checkpoint.
//!
//! Trees (names are part of the on-disk format): `evidence_leaves` (u64 big-endian index →
//! version byte + canonical JSON of a `SignedRecord`), `evidence_by_agent` (agent id, 0x00,
//! u64 big-endian index → empty), `evidence_certs` (certificate SHA-256 hex → version byte +
//! JSON of an `AgentKey`), `evidence_meta` (`checkpoint` → version byte + JSON of the signed
//! checkpoint). One append is one transaction over all four, flushed before it returns.

use preflight_core::evidence::{AgentKey, Hash32, SignedCheckpoint, SignedRecord};
use sled::transaction::Transactional;

use crate::{abort, decode, encode, tx_err, Store, StoreError, StoreFault};

mod tree {
    pub const LEAVES: &str = "evidence_leaves";
    pub const BY_AGENT: &str = "evidence_by_agent";
    pub const CERTS: &str = "evidence_certs";
    pub const META: &str = "evidence_meta";
}

/// Most records returned by one query.
pub const MAX_QUERY_RECORDS: usize = 100_000;

/// The evidence trees of the controller's database.
#[derive(Clone)]
pub struct EvidenceStore {
    db: sled::Db,
    leaves: sled::Tree,
    by_agent: sled::Tree,
    certs: sled::Tree,
    meta: sled::Tree,
}

fn agent_key(agent: &str, index: u64) -> Vec<u8> {
    let mut k = agent.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn index_of(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

impl EvidenceStore {
    /// Opens (creating if needed) the evidence trees of `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let db = store.db().clone();
        Ok(Self {
            leaves: db.open_tree(tree::LEAVES)?,
            by_agent: db.open_tree(tree::BY_AGENT)?,
            certs: db.open_tree(tree::CERTS)?,
            meta: db.open_tree(tree::META)?,
            db,
        })
    }

    /// Number of leaves in the log.
    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The leaf hashes in order, to rebuild the in-memory Merkle tree at start. Fails on a gap
    /// in the indexes (the log must be dense).
    pub fn leaf_hashes(&self) -> Result<Vec<Hash32>, StoreError> {
        let mut out = Vec::with_capacity(self.leaves.len());
        for (i, kv) in self.leaves.iter().enumerate() {
            let (k, v) = kv?;
            let rec: SignedRecord = self.decode_leaf(&k, &v)?;
            if index_of(&k) != Some(i as u64) {
                return Err(StoreError::Fault(StoreFault::Corrupt {
                    tree: tree::LEAVES,
                    key: format!("{k:?}"),
                    detail: format!("expected leaf index {i}: the log has a gap"),
                }));
            }
            out.push(rec.leaf_hash());
        }
        Ok(out)
    }

    fn decode_leaf(&self, k: &[u8], v: &[u8]) -> Result<SignedRecord, StoreError> {
        decode(tree::LEAVES, k, v)
    }

    /// Appends `records` at indexes `first_index..`, remembers the certificates `certs`
    /// (SHA-256 → key) and stores `checkpoint`, in one transaction, flushed. Refuses when
    /// `first_index` is not the current length (someone else appended).
    pub fn append(
        &self,
        first_index: u64,
        records: &[SignedRecord],
        certs: &[(String, AgentKey)],
        checkpoint: &SignedCheckpoint,
    ) -> Result<(), StoreError> {
        (&self.leaves, &self.by_agent, &self.certs, &self.meta)
            .transaction(|(leaves, by_agent, cert_t, meta)| {
                let expect = first_index.checked_sub(1);
                if let Some(last) = expect {
                    if leaves.get(last.to_be_bytes())?.is_none() {
                        return Err(abort(StoreError::Fault(StoreFault::Corrupt {
                            tree: tree::LEAVES,
                            key: last.to_string(),
                            detail: "append after a missing leaf".into(),
                        })));
                    }
                }
                if leaves.get(first_index.to_be_bytes())?.is_some() {
                    return Err(abort(StoreError::Fault(StoreFault::Corrupt {
                        tree: tree::LEAVES,
                        key: first_index.to_string(),
                        detail: "leaf already exists: concurrent append".into(),
                    })));
                }
                for (i, r) in records.iter().enumerate() {
                    let idx = first_index + i as u64;
                    leaves.insert(&idx.to_be_bytes(), encode(r))?;
                    by_agent.insert(agent_key(&r.record.agent_id, idx), &[][..])?;
                }
                for (sha, key) in certs {
                    cert_t.insert(sha.as_bytes(), encode(key))?;
                }
                meta.insert("checkpoint", encode(checkpoint))?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(())
    }

    /// The records of `agent`, in log order, with their leaf indexes.
    pub fn records_of(&self, agent: &str) -> Result<Vec<(u64, SignedRecord)>, StoreError> {
        let mut prefix = agent.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.by_agent.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let Some(idx) = index_of(&k) else { continue };
            let raw = self.leaves.get(idx.to_be_bytes())?.ok_or_else(|| {
                StoreError::Fault(StoreFault::Corrupt {
                    tree: tree::BY_AGENT,
                    key: String::from_utf8_lossy(&k).into_owned(),
                    detail: format!("leaf {idx} is missing"),
                })
            })?;
            out.push((idx, self.decode_leaf(&idx.to_be_bytes(), &raw)?));
            if out.len() >= MAX_QUERY_RECORDS {
                break;
            }
        }
        Ok(out)
    }

    /// The certificate entry with SHA-256 `sha`, if known.
    pub fn cert(&self, sha: &str) -> Result<Option<AgentKey>, StoreError> {
        self.certs
            .get(sha.as_bytes())?
            .map(|v| decode(tree::CERTS, sha.as_bytes(), &v))
            .transpose()
    }

    /// The latest signed checkpoint, if any.
    pub fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError> {
        self.meta
            .get("checkpoint")?
            .map(|v| decode(tree::META, b"checkpoint", &v))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::evidence::EvidenceLog;

    fn cp(size: u64) -> SignedCheckpoint {
        SignedCheckpoint {
            checkpoint: preflight_core::evidence::Checkpoint {
                origin: "t".into(),
                tree_size: size,
                root_hash: "00".repeat(32),
                time_utc_ms: 1,
                ca_sha256: None,
            },
            signature: "00".into(),
        }
    }

    fn rec(agent: &str, n: u64) -> SignedRecord {
        use preflight_core::evidence::*;
        SignedRecord {
            record: EvidenceRecord {
                format_version: RECORD_FORMAT_VERSION,
                agent_id: agent.into(),
                agent_cert_sha256: "ab".repeat(32),
                host: "h".into(),
                check_id: "acct.pass_max_days".into(),
                catalog_version: "1".into(),
                mlps_refs: vec![],
                cis_refs: vec![],
                operation: EvidenceOperation::Audit,
                observed: n.to_string(),
                files_read: Default::default(),
                expected: "x".into(),
                status: EvidenceStatus::Compliant,
                reason: None,
                diff_applied: None,
                backup_ref: None,
                operator: Operator {
                    user: "u".into(),
                    role: preflight_core::role::Role::Admin,
                },
                time_utc_ms: n,
                agent_version: "0".into(),
                controller_request_id: "r".into(),
                firewall: None,
            },
            signature: "00".into(),
        }
    }

    #[test]
    fn append_index_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![rec("a", 0), rec("b", 1), rec("a", 2)];
        {
            let s = Store::open(dir.path()).unwrap();
            let e = EvidenceStore::open(&s).unwrap();
            e.append(0, &recs[..2], &[], &cp(2)).unwrap();
            // A second append at a stale index is refused and changes nothing.
            assert!(e.append(1, &recs[2..], &[], &cp(3)).is_err());
            e.append(2, &recs[2..], &[], &cp(3)).unwrap();
        }
        let s = crate::reopen(dir.path());
        let e = EvidenceStore::open(&s).unwrap();
        assert_eq!(e.len(), 3);
        let a = e.records_of("a").unwrap();
        assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(a[1].1, recs[2]);
        let mut log = EvidenceLog::new();
        for r in &recs {
            log.append(r);
        }
        assert_eq!(e.leaf_hashes().unwrap(), log.leaves());
        assert_eq!(e.checkpoint().unwrap().unwrap().checkpoint.tree_size, 3);
    }
}
