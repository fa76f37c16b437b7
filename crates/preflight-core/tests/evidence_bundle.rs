//! Evidence bundles: every single-bit change of an exported bundle, and deleting, reordering,
//! truncating or re-signing records, is detected by `verify_bundle`.

use std::collections::BTreeMap;

use preflight_core::evidence::{
    self, verify_bundle, verify_bundle_pinned, AgentKey, BundleError, EvidenceBundle, EvidenceLog,
    EvidenceOperation, EvidenceRecord, EvidenceStatus, Operator, SignedRecord,
    RECORD_FORMAT_VERSION,
};
use preflight_core::role::Role;
use rcgen::PublicKeyData;

/// A real self-signed P-256 certificate and its key, as the PKI issues them to agents.
struct Identity {
    pkcs8: Vec<u8>,
    spki: Vec<u8>,
    cert: Vec<u8>,
}

fn identity(name: &str) -> Identity {
    let ck =
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen P-256 certificate");
    Identity {
        pkcs8: ck.signing_key.serialize_der(),
        spki: ck.signing_key.subject_public_key_info(),
        cert: ck.cert.der().to_vec(),
    }
}

fn record(
    agent: &str,
    id: &Identity,
    check: &str,
    op: EvidenceOperation,
    t: u64,
) -> EvidenceRecord {
    let mut files_read = BTreeMap::new();
    files_read.insert(
        "/etc/ssh/sshd_config".to_owned(),
        evidence::sha256_hex(b"PermitRootLogin yes\n"),
    );
    EvidenceRecord {
        format_version: RECORD_FORMAT_VERSION,
        agent_id: agent.to_owned(),
        agent_cert_sha256: evidence::sha256_hex(&id.cert),
        host: format!("{agent}.example"),
        check_id: check.to_owned(),
        catalog_version: "2026.11".to_owned(),
        mlps_refs: vec!["L3-CES1-06".to_owned()],
        cis_refs: vec!["5.2.8".to_owned()],
        operation: op,
        observed: "PermitRootLogin yes".to_owned(),
        files_read,
        expected: "PermitRootLogin no".to_owned(),
        status: EvidenceStatus::NonCompliant,
        reason: Some("root may log in with a password / 允许 root 登录".to_owned()),
        diff_applied: Some("-PermitRootLogin yes\n+PermitRootLogin no\n".to_owned()),
        backup_ref: Some("backup/2026-11-25T10:00:00Z/sshd_config".to_owned()),
        operator: Operator {
            user: "zhang.wei".to_owned(),
            role: Role::Deployer,
        },
        time_utc_ms: t,
        agent_version: "0.1.0".to_owned(),
        controller_request_id: format!("req-{t}"),
    }
}

struct Fixture {
    agent_a: Identity,
    agent_b: Identity,
    controller: Identity,
    records: Vec<SignedRecord>,
}

impl Fixture {
    fn new() -> Self {
        let agent_a = identity("agent-a");
        let agent_b = identity("agent-b");
        let controller = identity("controller");
        let records = vec![
            evidence::sign(
                record(
                    "agent-a",
                    &agent_a,
                    "ssh.permit_root_login",
                    EvidenceOperation::Audit,
                    1,
                ),
                &agent_a.pkcs8,
            )
            .expect("sign"),
            evidence::sign(
                record(
                    "agent-a",
                    &agent_a,
                    "ssh.permit_root_login",
                    EvidenceOperation::Apply,
                    2,
                ),
                &agent_a.pkcs8,
            )
            .expect("sign"),
            evidence::sign(
                record(
                    "agent-b",
                    &agent_b,
                    "auth.lockout",
                    EvidenceOperation::Verify,
                    3,
                ),
                &agent_b.pkcs8,
            )
            .expect("sign"),
        ];
        Self {
            agent_a,
            agent_b,
            controller,
            records,
        }
    }

    fn keys(&self) -> BTreeMap<String, AgentKey> {
        [("agent-a", &self.agent_a), ("agent-b", &self.agent_b)]
            .into_iter()
            .map(|(id, i)| AgentKey::new(id, &i.cert, &i.spki))
            .collect()
    }

    fn bundle_of(&self, records: Vec<SignedRecord>) -> EvidenceBundle {
        EvidenceBundle::build(
            records,
            self.keys(),
            "preflight/batch/B-1",
            10,
            &self.controller.pkcs8,
        )
        .expect("build bundle")
    }

    fn bundle(&self) -> EvidenceBundle {
        self.bundle_of(self.records.clone())
    }

    /// The bundle plus inclusion proofs in a global log where other batches' records sit
    /// around ours (our records at indexes 1, 2 and 4 of 6).
    fn bundle_with_inclusion(&self) -> EvidenceBundle {
        let other = evidence::sign(
            record(
                "agent-b",
                &self.agent_b,
                "acct.inactive",
                EvidenceOperation::Audit,
                0,
            ),
            &self.agent_b.pkcs8,
        )
        .expect("sign");
        let mut log = EvidenceLog::new();
        log.append(&other);
        let mut indexes = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            indexes.push(log.append(r).0);
            if i == 1 {
                log.append(&other);
            }
        }
        log.append(&other);
        let cp = log
            .checkpoint("preflight/log", 20, |c| {
                evidence::sign_checkpoint(c, &self.controller.pkcs8)
            })
            .expect("sign");
        self.bundle()
            .with_log_inclusion(&log, &indexes, cp)
            .expect("proofs")
    }
}

#[test]
fn valid_bundle_verifies_and_reports() {
    let f = Fixture::new();
    let bytes = f.bundle().to_bytes();
    let report = verify_bundle(&bytes).expect("valid bundle");
    assert_eq!(report.records, 3);
    assert_eq!(report.records_per_agent.get("agent-a"), Some(&2));
    assert_eq!(report.records_per_agent.get("agent-b"), Some(&1));
    assert_eq!(
        report.controller_key_sha256,
        evidence::sha256_hex(&f.controller.spki)
    );
    verify_bundle_pinned(&bytes, &f.controller.spki).expect("pinned to the right key");
    assert_eq!(
        evidence::p256_spki_from_pkcs8(&f.agent_a.pkcs8).expect("spki"),
        f.agent_a.spki
    );
    for r in &f.records {
        evidence::verify_signature(
            r,
            if r.record.agent_id == "agent-a" {
                &f.agent_a.spki
            } else {
                &f.agent_b.spki
            },
        )
        .expect("record signature");
    }
    assert!(evidence::verify_signature(&f.records[0], &f.agent_b.spki).is_err());
}

#[test]
fn every_single_bit_flip_is_detected() {
    let f = Fixture::new();
    let bytes = f.bundle_with_inclusion().to_bytes();
    verify_bundle(&bytes).expect("the unmodified bundle verifies");
    let mut undetected = Vec::new();
    let mut copy = bytes.clone();
    let mut tried = 0;
    for pos in 0..bytes.len() {
        // Two flips per byte keep the test fast in debug builds: a rotating bit (so every bit
        // position is exercised across the bundle) and bit 5, which turns hex digits and
        // letters into their other case, the edit a lenient hex decoder would not notice.
        let bits: &[u32] = if pos % 8 == 5 {
            &[5]
        } else {
            &[(pos % 8) as u32, 5]
        };
        for &bit in bits {
            tried += 1;
            copy[pos] ^= 1 << bit;
            if verify_bundle(&copy).is_ok() {
                undetected.push((pos, bit));
            }
            copy[pos] ^= 1 << bit;
        }
    }
    assert!(
        undetected.is_empty(),
        "{} of {tried} flips undetected, first {:?}",
        undetected.len(),
        &undetected[..undetected.len().min(10)]
    );
    eprintln!(
        "{} bytes, {tried} single-bit flips: every flip detected",
        bytes.len()
    );
}

#[test]
fn trailing_or_byte_truncated_input_is_detected() {
    let f = Fixture::new();
    let bytes = f.bundle().to_bytes();
    let mut with_newline = bytes.clone();
    with_newline.push(b'\n');
    assert!(matches!(
        verify_bundle(&with_newline),
        Err(BundleError::NotCanonical { .. })
    ));
    for len in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            verify_bundle(&bytes[..len]).is_err(),
            "truncated to {len} bytes"
        );
    }
}

#[test]
fn deleting_a_record_is_detected() {
    let f = Fixture::new();
    for i in 0..3 {
        let mut b = f.bundle();
        b.records.remove(i);
        let err = verify_bundle(&b.to_bytes()).expect_err("deletion must be detected");
        assert!(
            matches!(
                err,
                BundleError::TreeSize {
                    checkpoint: 3,
                    records: 2
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn truncating_the_record_list_is_detected() {
    let f = Fixture::new();
    let mut b = f.bundle();
    b.records.truncate(1);
    assert!(matches!(
        verify_bundle(&b.to_bytes()),
        Err(BundleError::TreeSize { .. })
    ));
    b.records.clear();
    assert!(matches!(
        verify_bundle(&b.to_bytes()),
        Err(BundleError::TreeSize { .. })
    ));
}

#[test]
fn reordering_records_is_detected() {
    let f = Fixture::new();
    let mut b = f.bundle();
    b.records.swap(0, 2);
    let err = verify_bundle(&b.to_bytes()).expect_err("reorder must be detected");
    assert!(matches!(err, BundleError::RootMismatch { .. }), "{err}");
}

#[test]
fn changing_a_field_without_resigning_is_detected() {
    let f = Fixture::new();
    let mut b = f.bundle();
    b.records[1].record.status = EvidenceStatus::Compliant;
    let err = verify_bundle(&b.to_bytes()).expect_err("edit must be detected");
    assert!(
        matches!(err, BundleError::RecordSignature { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn resigning_a_record_with_another_key_is_detected() {
    let f = Fixture::new();
    let mallory = identity("agent-a");
    // Re-sign record 1 with another key and ship that key under a matching fingerprint: the
    // record signature then verifies, but the signed checkpoint no longer covers the leaf.
    let mut rec = f.records[1].record.clone();
    rec.status = EvidenceStatus::Compliant;
    rec.agent_cert_sha256 = evidence::sha256_hex(&mallory.cert);
    let forged = evidence::sign(rec, &mallory.pkcs8).expect("sign");
    let mut b = f.bundle();
    b.records[1] = forged;
    let (k, v) = AgentKey::new("agent-a", &mallory.cert, &mallory.spki);
    b.agent_keys.insert(k, v);
    let err = verify_bundle(&b.to_bytes()).expect_err("re-signing must be detected");
    assert!(matches!(err, BundleError::RootMismatch { .. }), "{err}");

    // Same signature bytes under the original key: the signature check fails.
    let mut b = f.bundle();
    b.records[1].signature = evidence::sign(f.records[1].record.clone(), &mallory.pkcs8)
        .expect("sign")
        .signature;
    assert!(matches!(
        verify_bundle(&b.to_bytes()),
        Err(BundleError::RecordSignature { index: 1, .. })
    ));

    // Swapping the agent's key for another one breaks every record of that agent.
    let mut b = f.bundle();
    let key = b
        .agent_keys
        .get_mut(&evidence::sha256_hex(&f.agent_a.cert))
        .expect("agent a key");
    key.spki_der = hex::encode(&mallory.spki);
    assert!(matches!(
        verify_bundle(&b.to_bytes()),
        Err(BundleError::AgentKey { .. })
    ));
}

#[test]
fn a_whole_bundle_resigned_by_another_controller_fails_the_pin() {
    let f = Fixture::new();
    let mallory = identity("controller");
    let mut rec = f.records[1].record.clone();
    rec.status = EvidenceStatus::Compliant;
    rec.agent_cert_sha256 = evidence::sha256_hex(&f.agent_b.cert);
    rec.agent_id = "agent-b".to_owned();
    let mut records = f.records.clone();
    records[1] = evidence::sign(rec, &f.agent_b.pkcs8).expect("sign");
    let forged =
        EvidenceBundle::build(records, f.keys(), "preflight/batch/B-1", 10, &mallory.pkcs8)
            .expect("build");
    let bytes = forged.to_bytes();
    let report = verify_bundle(&bytes).expect("self-consistent forgery verifies without a pin");
    assert_ne!(
        report.controller_key_sha256,
        evidence::sha256_hex(&f.controller.spki)
    );
    assert!(matches!(
        verify_bundle_pinned(&bytes, &f.controller.spki),
        Err(BundleError::UntrustedController { .. })
    ));
}

#[test]
fn record_for_unknown_agent_cert_is_refused() {
    let f = Fixture::new();
    let mut b = f.bundle();
    b.agent_keys.remove(&evidence::sha256_hex(&f.agent_b.cert));
    assert!(matches!(
        verify_bundle(&b.to_bytes()),
        Err(BundleError::UnknownAgentCert { index: 2, .. })
    ));
}

#[test]
fn checkpoint_consistency_between_two_exports() {
    // The controller's log grows; an auditor holding an older checkpoint checks the new one
    // extends it.
    let f = Fixture::new();
    let mut log = evidence::EvidenceLog::new();
    let (i0, h0) = log.append(&f.records[0]);
    assert_eq!((i0, h0), (0, f.records[0].leaf_hash()));
    log.append(&f.records[1]);
    let old = log
        .checkpoint("log", 1, |c| {
            evidence::sign_checkpoint(c, &f.controller.pkcs8)
        })
        .expect("sign");
    log.append(&f.records[2]);
    let new = log
        .checkpoint("log", 2, |c| {
            evidence::sign_checkpoint(c, &f.controller.pkcs8)
        })
        .expect("sign");
    evidence::verify_checkpoint(&old, &f.controller.spki).expect("old checkpoint");
    evidence::verify_checkpoint(&new, &f.controller.spki).expect("new checkpoint");
    let proof = log.consistency_proof(2, 3).expect("proof");
    let root = |s: &str| -> [u8; 32] { hex::decode(s).expect("hex").try_into().expect("32 bytes") };
    evidence::verify_consistency(
        2,
        3,
        &root(&old.checkpoint.root_hash),
        &root(&new.checkpoint.root_hash),
        &proof,
    )
    .expect("consistent");
    let inc = log.inclusion_proof(2, 3).expect("proof");
    evidence::verify_inclusion(
        &f.records[2].leaf_hash(),
        2,
        3,
        &inc,
        &root(&new.checkpoint.root_hash),
    )
    .expect("included");
}

#[test]
fn global_log_inclusion_verifies_and_tampering_fails() {
    let f = Fixture::new();
    let b = f.bundle_with_inclusion();
    let report = verify_bundle(&b.to_bytes()).expect("valid");
    let global = report.global_log.expect("inclusion checked");
    assert_eq!(
        (global.origin.as_str(), global.tree_size),
        ("preflight/log", 6)
    );
    let inc = |b: &mut EvidenceBundle| b.log_inclusion.as_mut().expect("inclusion").entries.clone();

    let mut t = b.clone();
    t.log_inclusion.as_mut().expect("inclusion").entries[2].leaf_index = 3;
    assert!(matches!(
        verify_bundle(&t.to_bytes()),
        Err(BundleError::LogInclusion { index: 2, .. })
    ));

    let mut t = b.clone();
    let mut entries = inc(&mut t);
    entries.swap(0, 1);
    t.log_inclusion.as_mut().expect("inclusion").entries = entries;
    assert!(matches!(
        verify_bundle(&t.to_bytes()),
        Err(BundleError::LogInclusion { index: 0, .. })
    ));

    let mut t = b.clone();
    t.log_inclusion.as_mut().expect("inclusion").entries.pop();
    assert!(matches!(
        verify_bundle(&t.to_bytes()),
        Err(BundleError::LogInclusion { .. })
    ));

    // A global checkpoint signed by someone else.
    let mallory = identity("controller");
    let mut t = b.clone();
    let cp = &mut t.log_inclusion.as_mut().expect("inclusion").checkpoint;
    cp.signature = evidence::sign_checkpoint(&cp.checkpoint, &mallory.pkcs8).expect("sign");
    assert!(matches!(
        verify_bundle(&t.to_bytes()),
        Err(BundleError::LogInclusion { index: 0, .. })
    ));
}

#[test]
fn unused_agent_key_is_refused() {
    // An entry no record refers to would carry bytes (its agent id) that no signature covers.
    let f = Fixture::new();
    let mut b = f.bundle();
    let extra = identity("agent-c");
    let (k, v) = AgentKey::new("agent-c", &extra.cert, &extra.spki);
    b.agent_keys.insert(k, v);
    assert!(matches!(
        verify_bundle(&b.to_bytes()),
        Err(BundleError::AgentKey { .. })
    ));
}
