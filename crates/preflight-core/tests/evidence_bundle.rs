//! Evidence bundles: every single-bit change of an exported bundle, and deleting, reordering,
//! truncating or re-signing records, is detected by `verify_bundle`; so are a global-log proof
//! forged from the bundle's own checkpoint, a high-S checkpoint signature, a missing
//! inclusion proof, and agent certificates the CA did not issue.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use preflight_core::evidence::{
    self, verify_bundle, verify_bundle_pinned, verify_bundle_with, AgentKey, BundleError,
    EvidenceBundle, EvidenceLog, EvidenceOperation, EvidenceRecord, EvidenceStatus, LogEntryProof,
    LogInclusion, Operator, SignatureError, SignedRecord, TrustedKeys, GLOBAL_LOG_ORIGIN,
    RECORD_FORMAT_VERSION,
};
use preflight_core::role::Role;
use rcgen::PublicKeyData;

/// A P-256 certificate and its key.
struct Identity {
    pkcs8: Vec<u8>,
    spki: Vec<u8>,
    cert: Vec<u8>,
}

/// A self-made certificate (not issued by the CA).
fn identity(name: &str) -> Identity {
    let ck =
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen P-256 certificate");
    Identity {
        pkcs8: ck.signing_key.serialize_der(),
        spki: ck.signing_key.subject_public_key_info(),
        cert: ck.cert.der().to_vec(),
    }
}

/// An agent certificate issued by `ca` as the controller issues it at enrollment.
fn issued(ca: &preflight_pki::CertificateAuthority, agent: &str) -> Identity {
    let (csr, key_pem) = preflight_pki::make_csr(agent).expect("CSR");
    let chain = ca
        .sign_agent_csr(&csr, agent, Duration::from_secs(30 * 86400))
        .expect("issue");
    let cert = preflight_pki::certs(&chain, "agent certificate").expect("PEM")[0].to_vec();
    let id = preflight_pki::Identity {
        cert_pem: chain,
        key_pem,
    };
    let pkcs8 = match id.key().expect("key") {
        rustls_pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => panic!("expected a PKCS#8 key"),
    };
    let spki = evidence::p256_spki_from_pkcs8(&pkcs8).expect("spki");
    Identity { pkcs8, spki, cert }
}

fn ca_der(ca: &preflight_pki::CertificateAuthority) -> Vec<u8> {
    preflight_pki::certs(ca.cert_pem(), "CA").expect("PEM")[0].to_vec()
}

/// Record times: now, so that they fall within the certificates' validity.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

const ORIGIN: &str = "preflight/agents/agent-a,agent-b";

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
        firewall: None,
    }
}

struct Fixture {
    ca: preflight_pki::CertificateAuthority,
    agent_a: Identity,
    agent_b: Identity,
    controller: Identity,
    records: Vec<SignedRecord>,
    t0: u64,
}

impl Fixture {
    fn new() -> Self {
        let ca = preflight_pki::CertificateAuthority::generate("test CA").expect("CA");
        let agent_a = issued(&ca, "agent-a");
        let agent_b = issued(&ca, "agent-b");
        let controller = identity("controller");
        let t0 = now_ms();
        let records = vec![
            evidence::sign(
                record(
                    "agent-a",
                    &agent_a,
                    "ssh.permit_root_login",
                    EvidenceOperation::Audit,
                    t0 + 1,
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
                    t0 + 2,
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
                    t0 + 3,
                ),
                &agent_b.pkcs8,
            )
            .expect("sign"),
        ];
        Self {
            ca,
            agent_a,
            agent_b,
            controller,
            records,
            t0,
        }
    }

    fn ca_der(&self) -> Vec<u8> {
        ca_der(&self.ca)
    }

    fn keys(&self) -> BTreeMap<String, AgentKey> {
        [("agent-a", &self.agent_a), ("agent-b", &self.agent_b)]
            .into_iter()
            .map(|(id, i)| AgentKey::new(id, &i.cert, &i.spki))
            .collect()
    }

    /// A bundle as the controller exports it, signed with `controller_pkcs8`: CA carried,
    /// records at indexes 0.. of a global log holding exactly them.
    fn bundle_signed(&self, records: Vec<SignedRecord>, controller_pkcs8: &[u8]) -> EvidenceBundle {
        let mut log = EvidenceLog::new();
        let indexes: Vec<u64> = records.iter().map(|r| log.append(r).0).collect();
        let cp = log
            .checkpoint(GLOBAL_LOG_ORIGIN, self.t0 + 20, |c| {
                evidence::sign_checkpoint(c, controller_pkcs8)
            })
            .expect("sign");
        EvidenceBundle::build(
            records,
            self.keys(),
            ORIGIN,
            self.t0 + 10,
            Some(&self.ca_der()),
            controller_pkcs8,
        )
        .expect("build bundle")
        .with_log_inclusion(&log, &indexes, cp)
        .expect("proofs")
    }

    fn bundle_of(&self, records: Vec<SignedRecord>) -> EvidenceBundle {
        self.bundle_signed(records, &self.controller.pkcs8)
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
                self.t0,
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
            .checkpoint(GLOBAL_LOG_ORIGIN, self.t0 + 20, |c| {
                evidence::sign_checkpoint(c, &self.controller.pkcs8)
            })
            .expect("sign");
        let mut b = self.bundle();
        b.log_inclusion = None;
        b.with_log_inclusion(&log, &indexes, cp).expect("proofs")
    }

    fn pinned(&self, bytes: &[u8]) -> Result<evidence::BundleReport, BundleError> {
        verify_bundle_pinned(bytes, &self.controller.spki)
    }
}

#[test]
fn valid_bundle_verifies_and_reports() {
    let f = Fixture::new();
    let bytes = f.bundle().to_bytes();
    let report = verify_bundle(&bytes).expect("valid bundle");
    assert!(!report.controller_key_pinned, "no pin given");
    assert_eq!(report.origin, ORIGIN);
    assert_eq!(report.ca_sha256, evidence::sha256_hex(&f.ca_der()));
    assert_eq!(report.records, 3);
    assert_eq!(report.records_per_agent.get("agent-a"), Some(&2));
    assert_eq!(report.records_per_agent.get("agent-b"), Some(&1));
    assert_eq!(
        report.controller_key_sha256,
        evidence::sha256_hex(&f.controller.spki)
    );
    let pinned = verify_bundle_pinned(&bytes, &f.controller.spki).expect("pinned to the right key");
    assert!(pinned.controller_key_pinned);
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
    let forged = f.bundle_signed(records, &mallory.pkcs8);
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
        (GLOBAL_LOG_ORIGIN, 6)
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

/// Issue 20 finding 1: a global-log proof made from the bundle's own per-agent checkpoint and
/// Merkle proofs computed from the bundle's records needs no key, and must be refused.
#[test]
fn a_global_log_proof_forged_from_the_bundles_own_checkpoint_is_refused() {
    let f = Fixture::new();
    let genuine = f.bundle_with_inclusion();
    let mut log = EvidenceLog::new();
    for r in &genuine.records {
        log.append(r);
    }
    let n = log.len();
    let mut forged = genuine.clone();
    forged.log_inclusion = Some(LogInclusion {
        checkpoint: genuine.checkpoint.clone(),
        entries: (0..n)
            .map(|i| LogEntryProof {
                leaf_index: i,
                proof: log
                    .inclusion_proof(i, n)
                    .expect("proof")
                    .iter()
                    .map(hex::encode)
                    .collect(),
            })
            .collect(),
    });
    let err = f
        .pinned(&forged.to_bytes())
        .expect_err("forged proof must be refused");
    assert!(
        matches!(&err, BundleError::Origin { which: "global log", found, .. } if found == ORIGIN),
        "{err}"
    );
    assert!(err.to_string().contains(GLOBAL_LOG_ORIGIN), "{err}");
    assert!(verify_bundle(&forged.to_bytes()).is_err());

    // The other way round: a bundle whose own checkpoint claims the global origin.
    let mut log = EvidenceLog::new();
    let idx: Vec<u64> = f.records.iter().map(|r| log.append(r).0).collect();
    let global = log
        .checkpoint(GLOBAL_LOG_ORIGIN, 5, |c| {
            evidence::sign_checkpoint(c, &f.controller.pkcs8)
        })
        .expect("sign");
    let b = EvidenceBundle::build(
        f.records.clone(),
        f.keys(),
        GLOBAL_LOG_ORIGIN,
        5,
        Some(&f.ca_der()),
        &f.controller.pkcs8,
    )
    .expect("build")
    .with_log_inclusion(&log, &idx, global)
    .expect("proofs");
    assert!(matches!(
        f.pinned(&b.to_bytes()),
        Err(BundleError::Origin {
            which: "bundle",
            ..
        })
    ));

    // A bundle origin that does not name an agent of its records.
    let b = EvidenceBundle::build(
        f.records.clone(),
        f.keys(),
        "preflight/agents/agent-a",
        5,
        Some(&f.ca_der()),
        &f.controller.pkcs8,
    )
    .expect("build");
    let mut g = f.bundle();
    g.checkpoint = b.checkpoint;
    let err = f.pinned(&g.to_bytes()).expect_err("agent-b is not named");
    assert!(
        matches!(
            err,
            BundleError::Origin {
                which: "bundle",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("agent-b"), "{err}");

    // Agents the export named without records are reported with 0.
    let mut records = f.records.clone();
    records.truncate(2);
    let mut keys = f.keys();
    keys.remove(&evidence::sha256_hex(&f.agent_b.cert));
    let mut log = EvidenceLog::new();
    let idx: Vec<u64> = records.iter().map(|r| log.append(r).0).collect();
    let global = log
        .checkpoint(GLOBAL_LOG_ORIGIN, 5, |c| {
            evidence::sign_checkpoint(c, &f.controller.pkcs8)
        })
        .expect("sign");
    let b = EvidenceBundle::build(
        records,
        keys,
        ORIGIN,
        5,
        Some(&f.ca_der()),
        &f.controller.pkcs8,
    )
    .expect("build")
    .with_log_inclusion(&log, &idx, global)
    .expect("proofs");
    let report = f.pinned(&b.to_bytes()).expect("valid");
    assert_eq!(report.records_per_agent.get("agent-b"), Some(&0));
}

/// Issue 20 finding 1: a bundle without global-log proofs is a failure, not a line left out.
#[test]
fn a_bundle_without_log_inclusion_is_refused() {
    let f = Fixture::new();
    let mut b = f.bundle();
    b.log_inclusion = None;
    let err = f.pinned(&b.to_bytes()).expect_err("missing inclusion");
    assert_eq!(err, BundleError::NoLogInclusion);
    assert!(err.to_string().contains("log_inclusion"), "{err}");
}

/// Issue 20 finding 1: (r, n - s) is a second valid encoding of a checkpoint signature.
#[test]
fn high_s_checkpoint_signatures_are_refused() {
    let f = Fixture::new();
    let b = f.bundle_with_inclusion();
    f.pinned(&b.to_bytes()).expect("genuine");

    let mut t = b.clone();
    t.checkpoint.signature =
        evidence::ecdsa_other_encoding(&t.checkpoint.signature).expect("DER signature");
    assert_eq!(
        f.pinned(&t.to_bytes()),
        Err(BundleError::CheckpointSignature(SignatureError::HighS))
    );

    let mut t = b.clone();
    let inc = t.log_inclusion.as_mut().expect("inclusion");
    inc.checkpoint.signature =
        evidence::ecdsa_other_encoding(&inc.checkpoint.signature).expect("DER signature");
    let err = f
        .pinned(&t.to_bytes())
        .expect_err("high-S global checkpoint");
    assert!(
        matches!(&err, BundleError::LogInclusion { what, .. } if what.contains("high-S")),
        "{err}"
    );
}

/// Issue 20 finding 10: agent certificates are chained to the CA offline; a self-made agent
/// certificate, one from another CA, or one issued to another agent is refused even when the
/// controller key signed the bundle.
#[test]
fn agent_certificates_must_be_issued_by_the_ca_to_that_agent() {
    let f = Fixture::new();
    let self_made = identity("agent-a.agent.preflight.internal");
    let other_ca = preflight_pki::CertificateAuthority::generate("other CA").expect("CA");
    let foreign = issued(&other_ca, "agent-a");
    for (what, id) in [
        ("self-made", &self_made),
        ("other CA", &foreign),
        ("agent-b's", &f.agent_b),
    ] {
        let rec = record(
            "agent-a",
            id,
            "ssh.permit_root_login",
            EvidenceOperation::Audit,
            f.t0 + 5,
        );
        let records = vec![evidence::sign(rec, &id.pkcs8).expect("sign")];
        let keys: BTreeMap<String, AgentKey> = [AgentKey::new("agent-a", &id.cert, &id.spki)]
            .into_iter()
            .collect();
        let mut log = EvidenceLog::new();
        let idx: Vec<u64> = records.iter().map(|r| log.append(r).0).collect();
        let global = log
            .checkpoint(GLOBAL_LOG_ORIGIN, 5, |c| {
                evidence::sign_checkpoint(c, &f.controller.pkcs8)
            })
            .expect("sign");
        let b = EvidenceBundle::build(
            records,
            keys,
            "preflight/agents/agent-a",
            5,
            Some(&f.ca_der()),
            &f.controller.pkcs8,
        )
        .expect("build")
        .with_log_inclusion(&log, &idx, global)
        .expect("proofs");
        let err = f.pinned(&b.to_bytes()).expect_err(what);
        assert!(
            matches!(&err, BundleError::AgentCertificate { agent_id, .. } if agent_id == "agent-a"),
            "{what}: {err}"
        );
    }
    // A certificate outside its validity at the record time.
    let mut late = f.records.clone();
    let mut rec = late[0].record.clone();
    rec.time_utc_ms = f.t0 + 400 * 86_400_000;
    late[0] = evidence::sign(rec, &f.agent_a.pkcs8).expect("sign");
    let err = f
        .pinned(&f.bundle_of(late).to_bytes())
        .expect_err("expired");
    assert!(matches!(err, BundleError::AgentCertificate { .. }), "{err}");
}

/// The CA a bundle carries is bound by the signed checkpoint; an older bundle without one
/// verifies when the auditor gives the CA, and a given CA must match the carried one.
#[test]
fn the_ca_is_bound_and_older_bundles_verify_with_the_ca_given() {
    let f = Fixture::new();
    let ca = f.ca_der();
    let other = ca_der(&preflight_pki::CertificateAuthority::generate("other CA").expect("CA"));

    // Swapping the carried CA is tampering.
    let mut t = f.bundle();
    t.ca_certificate_der = Some(hex::encode(&other));
    assert!(matches!(f.pinned(&t.to_bytes()), Err(BundleError::Ca(_))));
    let mut t = f.bundle();
    t.ca_certificate_der = None;
    assert!(matches!(f.pinned(&t.to_bytes()), Err(BundleError::Ca(_))));

    // A bundle as older controllers exported it: no CA field at all in the JSON.
    let mut log = EvidenceLog::new();
    let idx: Vec<u64> = f.records.iter().map(|r| log.append(r).0).collect();
    let global = log
        .checkpoint(GLOBAL_LOG_ORIGIN, 5, |c| {
            evidence::sign_checkpoint(c, &f.controller.pkcs8)
        })
        .expect("sign");
    let old = EvidenceBundle::build(
        f.records.clone(),
        f.keys(),
        ORIGIN,
        5,
        None,
        &f.controller.pkcs8,
    )
    .expect("build")
    .with_log_inclusion(&log, &idx, global)
    .expect("proofs")
    .to_bytes();
    let text = String::from_utf8(old.clone()).expect("utf-8");
    assert!(!text.contains("ca_certificate_der") && !text.contains("ca_sha256"));
    assert_eq!(f.pinned(&old), Err(BundleError::NoCa));
    assert!(BundleError::NoCa.to_string().contains("--ca"));
    let with = |ca: &[u8]| {
        verify_bundle_with(
            &old,
            &TrustedKeys {
                controller_spki_der: Some(&f.controller.spki),
                ca_certificate_der: Some(ca),
                ..TrustedKeys::default()
            },
        )
    };
    let report = with(&ca).expect("old bundle with the CA given");
    assert!(report.controller_key_pinned);
    assert!(matches!(
        with(&other),
        Err(BundleError::AgentCertificate { .. })
    ));

    // A given CA must be the one the bundle carries.
    let bytes = f.bundle().to_bytes();
    assert!(matches!(
        verify_bundle_with(
            &bytes,
            &TrustedKeys {
                ca_certificate_der: Some(&other),
                ..TrustedKeys::default()
            }
        ),
        Err(BundleError::Ca(_))
    ));

    // The pin by SHA-256, in any case.
    let sha = evidence::sha256_hex(&f.controller.spki).to_ascii_uppercase();
    let by_sha = |pin: &str| {
        verify_bundle_with(
            &bytes,
            &TrustedKeys {
                controller_key_sha256: Some(pin),
                ..TrustedKeys::default()
            },
        )
    };
    assert!(by_sha(&sha).expect("pinned").controller_key_pinned);
    assert!(matches!(
        by_sha(&"0".repeat(64)),
        Err(BundleError::UntrustedController { .. })
    ));
}

/// Controllers from before bundles carried their CA did not normalise checkpoint signatures:
/// such a bundle still verifies with high-S checkpoints, while a current bundle does not (see
/// `high_s_checkpoint_signatures_are_refused`).
#[test]
fn high_s_checkpoints_verify_only_in_bundles_from_before_the_ca() {
    let f = Fixture::new();
    let mut log = EvidenceLog::new();
    let idx: Vec<u64> = f.records.iter().map(|r| log.append(r).0).collect();
    let global = log
        .checkpoint(GLOBAL_LOG_ORIGIN, 5, |c| {
            evidence::sign_checkpoint(c, &f.controller.pkcs8)
        })
        .expect("sign");
    let mut old = EvidenceBundle::build(
        f.records.clone(),
        f.keys(),
        ORIGIN,
        5,
        None,
        &f.controller.pkcs8,
    )
    .expect("build")
    .with_log_inclusion(&log, &idx, global)
    .expect("proofs");
    old.checkpoint.signature =
        evidence::ecdsa_other_encoding(&old.checkpoint.signature).expect("DER signature");
    let inc = old.log_inclusion.as_mut().expect("inclusion");
    inc.checkpoint.signature =
        evidence::ecdsa_other_encoding(&inc.checkpoint.signature).expect("DER signature");
    let ca = f.ca_der();
    let trusted = TrustedKeys {
        controller_spki_der: Some(&f.controller.spki),
        ca_certificate_der: Some(&ca),
        ..TrustedKeys::default()
    };
    verify_bundle_with(&old.to_bytes(), &trusted).expect("old bundle with high-S checkpoints");
    // The legacy acceptance is of the other encoding only: a wrong signature stays wrong.
    let mut bad = old.clone();
    bad.checkpoint.signature = bad
        .log_inclusion
        .as_ref()
        .expect("inclusion")
        .checkpoint
        .signature
        .clone();
    assert!(matches!(
        verify_bundle_with(&bad.to_bytes(), &trusted),
        Err(BundleError::CheckpointSignature(SignatureError::Mismatch))
    ));
}
