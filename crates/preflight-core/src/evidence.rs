//! Hardening evidence: the signed record of CHECKS.md "Evidence record", an RFC 6962-style
//! Merkle log with signed checkpoints, and the offline bundle an auditor keeps.
//!
//! Pure: no I/O and no clock; times are values passed in. The only impurity is the random
//! nonce ECDSA signing needs, drawn from `ring::rand::SystemRandom`.
//!
//! # Canonical encodings
//!
//! Every signed or hashed byte string is the compact `serde_json` encoding (no whitespace) of a
//! struct of this module. Field order is the declaration order of the struct, maps are
//! `BTreeMap`s (sorted keys), byte strings are lowercase hex, there are no floating-point
//! numbers, and unknown fields are refused. Parsing and re-encoding is therefore the identity on
//! every valid encoding, which [`verify_bundle`] checks: a bundle whose bytes differ from the
//! re-encoding of what they parse to is refused, so no byte of an exported bundle is
//! insignificant.
//!
//! - record signature (agent key, ECDSA P-256 SHA-256, ASN.1 DER signature): over
//!   `b"preflight evidence record v1\n"` followed by the canonical [`EvidenceRecord`];
//! - Merkle leaf: the canonical [`SignedRecord`] (record and signature), hashed as RFC 6962
//!   `SHA-256(0x00 || leaf)`; interior nodes `SHA-256(0x01 || left || right)`;
//! - checkpoint signature (controller key): over `b"preflight evidence checkpoint v1\n"`
//!   followed by the canonical [`Checkpoint`] (origin, tree size, root hash, time, and on a
//!   bundle's own checkpoint the SHA-256 of the CA certificate the bundle carries). Checkpoint
//!   signatures must be in low-S form (s at most half the group order), so each checkpoint has
//!   exactly one valid encoding; every signature this module makes is low-S.
//!
//! # Origins
//!
//! The controller signs two kinds of checkpoint with one key, told apart by their origin: its
//! global log ([`GLOBAL_LOG_ORIGIN`]) and each bundle's own tree of exported records
//! ([`AGENTS_ORIGIN_PREFIX`] followed by the exported agent ids, comma-separated).
//! [`verify_bundle`] requires each origin in its place, so one kind cannot stand in for the
//! other.

use std::collections::BTreeMap;

use ring::digest::{digest, Context, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};

use crate::role::Role;

/// Version of the [`EvidenceRecord`] encoding written by this code.
pub const RECORD_FORMAT_VERSION: u32 = 1;
/// Version of the [`EvidenceBundle`] encoding written by this code.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;
/// Largest bundle [`verify_bundle`] reads.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;
/// Most records one bundle may hold.
pub const MAX_BUNDLE_RECORDS: usize = 1_000_000;
/// Largest free-text field of a record (observed value, diff).
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Largest identifier-like field of a record (ids, host, versions, paths).
pub const MAX_ID_BYTES: usize = 512;
/// Most files one record may list as read.
pub const MAX_FILES_READ: usize = 1024;
/// Most MLPS or CIS references one record may carry.
pub const MAX_REFS: usize = 64;

/// Origin of the controller's global evidence log checkpoints.
pub const GLOBAL_LOG_ORIGIN: &str = "preflight/evidence-log";
/// Origin prefix of a bundle's own checkpoint; the exported agent ids follow, comma-separated.
pub const AGENTS_ORIGIN_PREFIX: &str = "preflight/agents/";
/// DNS name suffix an agent certificate names its agent id with.
const AGENT_DNS_SUFFIX: &str = ".agent.preflight.internal";
/// The P-256 group order n, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

const RECORD_DOMAIN: &[u8] = b"preflight evidence record v1\n";
const CHECKPOINT_DOMAIN: &[u8] = b"preflight evidence checkpoint v1\n";
/// DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point (id-ecPublicKey,
/// prime256v1, BIT STRING of 66 bytes with 0 unused bits); the 65-byte point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A SHA-256 hash (leaf, node or tree root).
pub type Hash32 = [u8; 32];

/// The operation a record documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceOperation {
    /// Read-only check of the host.
    Audit,
    /// A change was written.
    Apply,
    /// Audit again after an apply.
    Verify,
    /// A backup was restored.
    Rollback,
}

/// Outcome of a check, as in CHECKS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceStatus {
    /// The host meets the expected value.
    Compliant,
    /// The host does not meet the expected value.
    NonCompliant,
    /// The check does not apply to this host.
    NotApplicable,
    /// The check could not decide (the reason says why).
    Unknown,
}

/// Who asked for the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// User name at the controller.
    pub user: String,
    /// The user's role.
    pub role: Role,
}

/// One check, one operation, on one host: every field of CHECKS.md "Evidence record".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRecord {
    /// Always [`RECORD_FORMAT_VERSION`] for records written by this code.
    pub format_version: u32,
    /// The agent that ran the operation.
    pub agent_id: String,
    /// SHA-256 of the agent certificate's DER, lowercase hex (64 characters).
    pub agent_cert_sha256: String,
    /// Host name as the agent reports it.
    pub host: String,
    /// Stable check id, e.g. `ssh.permit_root_login`.
    pub check_id: String,
    /// Version of the check catalog that ran.
    pub catalog_version: String,
    /// MLPS item references, e.g. `L3-CES1-06`.
    pub mlps_refs: Vec<String>,
    /// CIS benchmark references, e.g. `5.2.8`.
    pub cis_refs: Vec<String>,
    /// What was done.
    pub operation: EvidenceOperation,
    /// The observed raw value.
    pub observed: String,
    /// Every file read: absolute path -> SHA-256 of its content, lowercase hex.
    pub files_read: BTreeMap<String, String>,
    /// The expected value.
    pub expected: String,
    /// The outcome.
    pub status: EvidenceStatus,
    /// Why the status is what it is (mandatory for `unknown` and `not_applicable`).
    pub reason: Option<String>,
    /// The diff or rule list applied (apply and rollback).
    pub diff_applied: Option<String>,
    /// Reference to the backup taken before the change.
    pub backup_ref: Option<String>,
    /// Who asked.
    pub operator: Operator,
    /// UTC time of the operation in milliseconds since the Unix epoch.
    pub time_utc_ms: u64,
    /// Version of the agent that ran the operation.
    pub agent_version: String,
    /// The controller's request id, to join with the controller's own logs.
    pub controller_request_id: String,
}

/// A record and the agent's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    /// The record.
    pub record: EvidenceRecord,
    /// ECDSA P-256 SHA-256 ASN.1 DER signature, lowercase hex.
    pub signature: String,
}

/// What the controller's key signs: the state of a log at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Which log this is, e.g. `preflight/batch/B-17` (distinguishes logs signed by one key).
    pub origin: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// Merkle tree hash of the leaves, lowercase hex.
    pub root_hash: String,
    /// UTC time of signing in milliseconds since the Unix epoch.
    pub time_utc_ms: u64,
    /// On a bundle's own checkpoint: SHA-256 of the CA certificate the bundle carries, which
    /// binds that CA to the controller's signature. Absent on global log checkpoints and in
    /// bundles exported before bundles carried the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
}

/// A checkpoint and the controller's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// ECDSA P-256 SHA-256 ASN.1 DER signature, lowercase hex.
    pub signature: String,
}

/// An agent key as a bundle carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKey {
    /// The agent the certificate names.
    pub agent_id: String,
    /// The certificate's SubjectPublicKeyInfo (P-256), DER, lowercase hex.
    pub spki_der: String,
    /// The certificate, DER, lowercase hex (its SHA-256 is the map key).
    pub certificate_der: String,
}

/// Everything an auditor needs to verify a batch's evidence offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBundle {
    /// Always [`BUNDLE_FORMAT_VERSION`] for bundles written by this code.
    pub format_version: u32,
    /// The records, in log order; they are exactly the leaves of the checkpoint's tree.
    pub records: Vec<SignedRecord>,
    /// Agent keys by SHA-256 of the agent certificate (lowercase hex).
    pub agent_keys: BTreeMap<String, AgentKey>,
    /// The controller's signed checkpoint over `records`.
    pub checkpoint: SignedCheckpoint,
    /// The controller's SubjectPublicKeyInfo (P-256), DER, lowercase hex.
    pub controller_spki_der: String,
    /// Where the records sit in the controller's global evidence log: proves the records were
    /// appended to that log, not made up at export. Required by [`verify_bundle`] (the field
    /// stays optional in the encoding only so that a bundle without it parses and is refused
    /// with a clear error).
    pub log_inclusion: Option<LogInclusion>,
    /// The controller's CA certificate, DER, lowercase hex: every agent certificate of the
    /// bundle must be issued by it. Its SHA-256 is in the signed checkpoint. Absent in bundles
    /// exported before bundles carried it (the verifier is then given the CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_der: Option<String>,
}

/// Inclusion of a bundle's records in the controller's global evidence log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogInclusion {
    /// The global log's checkpoint, signed by the same controller key.
    pub checkpoint: SignedCheckpoint,
    /// One entry per record of the bundle, in order (leaf indexes strictly increasing).
    pub entries: Vec<LogEntryProof>,
}

/// One record's position in the global log and its RFC 9162 inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntryProof {
    /// Leaf index in the global log.
    pub leaf_index: u64,
    /// Inclusion proof hashes, lowercase hex, against the checkpoint's tree size.
    pub proof: Vec<String>,
}

/// Longest inclusion proof accepted (a tree of 2^64 leaves needs 64 hashes).
const MAX_PROOF_LEN: usize = 64;

/// A record that does not satisfy the evidence rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// Wrong format version.
    #[error("record format_version {0} is not supported; expected {RECORD_FORMAT_VERSION}")]
    FormatVersion(u32),
    /// A mandatory field is empty.
    #[error("record field {0} is empty; fill it in")]
    Empty(&'static str),
    /// A field is longer than its cap.
    #[error("record field {field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A field holds a control character.
    #[error("record field {0} holds a control character; ids and hosts must be printable")]
    ControlChar(&'static str),
    /// A hash field is not 64 lowercase hex characters.
    #[error("record field {field} value {value:?} is not a lowercase hex SHA-256")]
    BadHash {
        /// The field.
        field: &'static str,
        /// The offending value (truncated).
        value: String,
    },
    /// A file path is not absolute.
    #[error("record files_read path {0:?} is not absolute")]
    RelativePath(String),
    /// Too many entries in a list field.
    #[error("record field {field} has {len} entries, more than the limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Its entry count.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Status needs a reason.
    #[error("record with status {0:?} needs a reason")]
    MissingReason(EvidenceStatus),
}

/// Signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The record was refused before signing.
    #[error("refusing to sign an invalid record: {0}")]
    Invalid(#[from] InvalidRecord),
    /// The key is not a PKCS#8 ECDSA P-256 key.
    #[error("signing key is not a PKCS#8 ECDSA P-256 private key; pass the agent's key.pem content as DER")]
    BadKey,
    /// The signature primitive failed.
    #[error("ECDSA signing failed")]
    Signing,
}

/// A signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a P-256 SubjectPublicKeyInfo.
    #[error("public key is not a DER SubjectPublicKeyInfo of a P-256 key ({len} bytes)")]
    BadPublicKey {
        /// Length of what was passed.
        len: usize,
    },
    /// The signature field is not lowercase hex.
    #[error("signature is not lowercase hex")]
    BadEncoding,
    /// The signature does not match the content and key.
    #[error("signature does not match the content and the public key")]
    Mismatch,
    /// The signature is valid but in high-S form, the second encoding of the same signature.
    #[error("signature is in high-S form (a second encoding of a valid signature, which this format refuses); if the bundle was exported by an older controller, export it again")]
    HighS,
}

/// A Merkle proof was asked for sizes or indexes that do not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Index outside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// Size larger than the log.
    #[error("tree size {size} is larger than the log ({len} leaves)")]
    SizeOutOfRange {
        /// Requested size.
        size: u64,
        /// Leaves in the log.
        len: u64,
    },
    /// Old size larger than new size.
    #[error("consistency from size {old} to {new}: old size must not exceed new size")]
    Order {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// The proof does not verify.
    #[error("the proof does not lead to the expected root hash")]
    Mismatch,
}

/// Why a bundle did not verify. Each variant names what an auditor should distrust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Bundle too large.
    #[error("bundle is {len} bytes, more than the limit of {MAX_BUNDLE_BYTES}")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// Not a bundle at all.
    #[error("bundle is not valid bundle JSON: {0}")]
    Parse(String),
    /// Bytes differ from the canonical encoding of the parsed content.
    #[error("bundle bytes are not in canonical form (first difference at byte {offset}); the file was edited after export")]
    NotCanonical {
        /// First differing byte.
        offset: usize,
    },
    /// Unsupported bundle version.
    #[error("bundle format_version {0} is not supported; expected {BUNDLE_FORMAT_VERSION}")]
    FormatVersion(u32),
    /// Too many records.
    #[error("bundle holds {0} records, more than the limit of {MAX_BUNDLE_RECORDS}")]
    TooManyRecords(usize),
    /// Controller key unusable.
    #[error("controller public key is unusable: {0}")]
    ControllerKey(SignatureError),
    /// Controller key is not the pinned one.
    #[error(
        "bundle is signed by controller key sha256 {found}, not the trusted key sha256 {expected}"
    )]
    UntrustedController {
        /// Fingerprint of the key in the bundle.
        found: String,
        /// Fingerprint of the pinned key.
        expected: String,
    },
    /// Checkpoint signature bad.
    #[error("checkpoint signature does not verify with the bundle's controller key: {0}")]
    CheckpointSignature(SignatureError),
    /// Tree size differs.
    #[error("checkpoint covers {checkpoint} records but the bundle holds {records}: records were added or removed")]
    TreeSize {
        /// Size the checkpoint signs.
        checkpoint: u64,
        /// Records present.
        records: u64,
    },
    /// Root hash differs.
    #[error("recomputed root hash {computed} differs from the signed checkpoint root {signed}: records were changed, reordered or re-signed")]
    RootMismatch {
        /// Root of the records present.
        computed: String,
        /// Root the checkpoint signs.
        signed: String,
    },
    /// A record is invalid.
    #[error("record {index} is invalid: {error}")]
    InvalidRecord {
        /// Position in the bundle.
        index: usize,
        /// What is wrong.
        error: InvalidRecord,
    },
    /// No key for a record's certificate.
    #[error(
        "record {index} names agent certificate {cert_sha256} which the bundle does not carry"
    )]
    UnknownAgentCert {
        /// Position in the bundle.
        index: usize,
        /// Fingerprint named by the record.
        cert_sha256: String,
    },
    /// Key entry names another agent or does not match its certificate.
    #[error("agent key {cert_sha256} is inconsistent: {what}")]
    AgentKey {
        /// Map key.
        cert_sha256: String,
        /// What does not fit.
        what: String,
    },
    /// Global-log inclusion does not verify.
    #[error("record {index} is not proven to be in the controller's global log: {what}")]
    LogInclusion {
        /// Position in the bundle.
        index: usize,
        /// What failed.
        what: String,
    },
    /// The bundle carries no global-log inclusion proofs.
    #[error("the bundle carries no proof that its records are in the controller's global log (log_inclusion is missing); export it again with `preflight evidence export`")]
    NoLogInclusion,
    /// A checkpoint names the wrong origin for its place.
    #[error("{which} checkpoint has origin {found:?}, expected {expected}: it is not the checkpoint of that log")]
    Origin {
        /// Which checkpoint (bundle or global log).
        which: &'static str,
        /// The origin found.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// No CA to check agent certificates against.
    #[error("agent certificates cannot be checked: the bundle carries no CA certificate (it was exported by an older controller); pass the controller's CA with --ca FILE (its DATA/ca.pem, or https://CONTROLLER/ca.pem)")]
    NoCa,
    /// The CA in the bundle or given is unusable or does not match.
    #[error("CA certificate: {0}")]
    Ca(String),
    /// An agent certificate is not one the CA issued to that agent.
    #[error("agent certificate {cert_sha256} (agent {agent_id}) is not valid for the CA sha256 {ca_sha256}: {what}")]
    AgentCertificate {
        /// Map key.
        cert_sha256: String,
        /// Agent named.
        agent_id: String,
        /// Fingerprint of the CA used.
        ca_sha256: String,
        /// Why.
        what: String,
    },
    /// Record signature bad.
    #[error(
        "record {index} (agent {agent_id}, check {check_id}) signature does not verify: {error}"
    )]
    RecordSignature {
        /// Position in the bundle.
        index: usize,
        /// Agent named by the record.
        agent_id: String,
        /// Check named by the record.
        check_id: String,
        /// Why.
        error: SignatureError,
    },
}

/// Result of a successful [`verify_bundle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// Records verified.
    pub records: u64,
    /// The checkpoint's origin.
    pub origin: String,
    /// Root hash, lowercase hex.
    pub root_hash: String,
    /// Checkpoint time, ms since the Unix epoch.
    pub checkpoint_time_utc_ms: u64,
    /// SHA-256 of the controller's SPKI, lowercase hex: compare it with the key you trust.
    pub controller_key_sha256: String,
    /// Whether the controller key was checked against a key the verifier trusts (pinned).
    /// When false, the origin of the bundle is unverified: anyone can make a bundle that
    /// verifies with a key of their own.
    pub controller_key_pinned: bool,
    /// Records per agent id; agents the export named without records count 0.
    pub records_per_agent: BTreeMap<String, u64>,
    /// The global log checkpoint (origin, tree size, root hash) every record was proven to be
    /// included in.
    pub global_log: Option<Checkpoint>,
    /// SHA-256 of the CA certificate every agent certificate was checked against.
    pub ca_sha256: String,
}

/// What the verifier trusts, given by the auditor rather than read from the bundle.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustedKeys<'a> {
    /// The controller's evidence key (SPKI DER) the bundle must be signed with.
    pub controller_spki_der: Option<&'a [u8]>,
    /// SHA-256 (hex, any case) of the controller's evidence key the bundle must be signed with.
    pub controller_key_sha256: Option<&'a str>,
    /// The controller's CA certificate (DER): agent certificates must chain to it, and a CA
    /// carried by the bundle must be this one.
    pub ca_certificate_der: Option<&'a [u8]>,
}

// ---------------------------------------------------------------------------------------------
// records and signatures

fn check_text(
    field: &'static str,
    s: &str,
    max: usize,
    id_like: bool,
) -> Result<(), InvalidRecord> {
    if s.len() > max {
        return Err(InvalidRecord::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    if id_like && s.chars().any(char::is_control) {
        return Err(InvalidRecord::ControlChar(field));
    }
    Ok(())
}

fn check_id(field: &'static str, s: &str) -> Result<(), InvalidRecord> {
    if s.is_empty() {
        return Err(InvalidRecord::Empty(field));
    }
    check_text(field, s, MAX_ID_BYTES, true)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_hash(field: &'static str, s: &str) -> Result<(), InvalidRecord> {
    if is_sha256_hex(s) {
        Ok(())
    } else {
        Err(InvalidRecord::BadHash {
            field,
            value: s.chars().take(80).collect(),
        })
    }
}

impl EvidenceRecord {
    /// Checks the record against the evidence rules (mandatory fields, caps, hash formats).
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if self.format_version != RECORD_FORMAT_VERSION {
            return Err(InvalidRecord::FormatVersion(self.format_version));
        }
        check_id("agent_id", &self.agent_id)?;
        check_hash("agent_cert_sha256", &self.agent_cert_sha256)?;
        check_id("host", &self.host)?;
        check_id("check_id", &self.check_id)?;
        check_id("catalog_version", &self.catalog_version)?;
        for (field, refs) in [("mlps_refs", &self.mlps_refs), ("cis_refs", &self.cis_refs)] {
            if refs.len() > MAX_REFS {
                return Err(InvalidRecord::TooMany {
                    field,
                    len: refs.len(),
                    max: MAX_REFS,
                });
            }
            for r in refs {
                check_id(field, r)?;
            }
        }
        check_text("observed", &self.observed, MAX_TEXT_BYTES, false)?;
        if self.files_read.len() > MAX_FILES_READ {
            return Err(InvalidRecord::TooMany {
                field: "files_read",
                len: self.files_read.len(),
                max: MAX_FILES_READ,
            });
        }
        for (path, hash) in &self.files_read {
            check_text("files_read", path, 4096, true)?;
            if !path.starts_with('/') {
                return Err(InvalidRecord::RelativePath(path.clone()));
            }
            check_hash("files_read", hash)?;
        }
        check_text("expected", &self.expected, MAX_TEXT_BYTES, false)?;
        match (&self.reason, self.status) {
            (None, s @ (EvidenceStatus::Unknown | EvidenceStatus::NotApplicable)) => {
                return Err(InvalidRecord::MissingReason(s));
            }
            (Some(r), _) => check_text("reason", r, MAX_TEXT_BYTES, false)?,
            (None, _) => {}
        }
        if let Some(d) = &self.diff_applied {
            check_text("diff_applied", d, MAX_TEXT_BYTES, false)?;
        }
        if let Some(b) = &self.backup_ref {
            check_id("backup_ref", b)?;
        }
        check_id("operator.user", &self.operator.user)?;
        check_id("agent_version", &self.agent_version)?;
        check_id("controller_request_id", &self.controller_request_id)?;
        Ok(())
    }

    /// The canonical encoding (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical(self)
    }

    /// The exact bytes the agent signs: a domain tag followed by the canonical encoding.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = RECORD_DOMAIN.to_vec();
        m.extend_from_slice(&self.canonical_bytes());
        m
    }
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs, strings, integers and BTreeMaps with string keys cannot fail.
    serde_json::to_vec(value).expect("evidence types always serialise")
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest(&SHA256, data))
}

/// The P-256 SubjectPublicKeyInfo (DER) of a PKCS#8 P-256 private key, as it appears in the
/// certificate issued for that key.
pub fn p256_spki_from_pkcs8(pkcs8: &[u8]) -> Result<Vec<u8>, SignError> {
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
        .map_err(|_| SignError::BadKey)?;
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    Ok(spki)
}

fn p256_point(spki_der: &[u8]) -> Result<&[u8], SignatureError> {
    match spki_der.strip_prefix(&P256_SPKI_PREFIX[..]) {
        Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(point),
        _ => Err(SignatureError::BadPublicKey {
            len: spki_der.len(),
        }),
    }
}

fn sign_message(message: &[u8], pkcs8: &[u8]) -> Result<String, SignError> {
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
        .map_err(|_| SignError::BadKey)?;
    // ring draws a fresh nonce each time and does not normalise s: half of its signatures are
    // high-S. Sign again until the signature is low-S (expected twice; 2^-64 to fail).
    for _ in 0..64 {
        let sig = pair.sign(&rng, message).map_err(|_| SignError::Signing)?;
        if is_low_s(sig.as_ref()) {
            return Ok(hex::encode(sig.as_ref()));
        }
    }
    Err(SignError::Signing)
}

/// The `s` integer of a DER ECDSA signature `SEQUENCE { INTEGER r, INTEGER s }` as 32
/// big-endian bytes, or None when the encoding is not that (short-form lengths only: a P-256
/// signature is at most 72 bytes).
fn ecdsa_der_s(sig: &[u8]) -> Option<[u8; 32]> {
    let (&tag, rest) = sig.split_first()?;
    let (&len, body) = rest.split_first()?;
    if tag != 0x30 || len >= 0x80 || body.len() != len as usize {
        return None;
    }
    let int = |b: &[u8]| -> Option<(usize, usize)> {
        // (start of value, end) of the INTEGER at the front of b
        if b.len() < 2 || b[0] != 0x02 || b[1] >= 0x80 {
            return None;
        }
        let end = 2 + b[1] as usize;
        (end <= b.len()).then_some((2, end))
    };
    let (_, r_end) = int(body)?;
    let tail = &body[r_end..];
    let (s_start, s_end) = int(tail)?;
    if s_end != tail.len() {
        return None;
    }
    let mut v = &tail[s_start..s_end];
    while let [0, rest @ ..] = v {
        v = rest;
    }
    if v.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(v);
    Some(out)
}

/// floor(n / 2) of the P-256 order.
fn p256_half_order() -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u8;
    for (o, b) in out.iter_mut().zip(P256_ORDER) {
        *o = (b >> 1) | carry;
        carry = (b & 1) << 7;
    }
    out
}

/// Whether a DER ECDSA P-256 signature is in low-S form (s <= n/2).
fn is_low_s(sig: &[u8]) -> bool {
    ecdsa_der_s(sig).is_some_and(|s| s <= p256_half_order())
}

/// The other valid encoding of an ECDSA P-256 signature (lowercase hex DER): `(r, n - s)`.
/// Verifiers of checkpoints refuse the high-S one of the two; this exists so that tests and
/// auditors' tooling can show it. None when `signature_hex` is not a DER signature.
pub fn ecdsa_other_encoding(signature_hex: &str) -> Option<String> {
    let sig = hex::decode(signature_hex).ok()?;
    let s = ecdsa_der_s(&sig)?;
    // body: r INTEGER as it is, then the new s
    let r_len = *sig.get(3)? as usize;
    let r = sig.get(2..4 + r_len)?;
    let mut neg = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = P256_ORDER[i] as i16 - s[i] as i16 - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        neg[i] = d as u8;
    }
    let mut v: &[u8] = &neg;
    while let [0, rest @ ..] = v {
        v = rest;
    }
    let mut s_int = vec![0x02];
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        s_int.push(v.len() as u8 + 1);
        s_int.push(0);
    } else {
        s_int.push(v.len() as u8);
    }
    s_int.extend_from_slice(v);
    let mut out = vec![0x30, (r.len() + s_int.len()) as u8];
    out.extend_from_slice(r);
    out.extend_from_slice(&s_int);
    Some(hex::encode(out))
}

fn verify_message(
    message: &[u8],
    signature_hex: &str,
    spki_der: &[u8],
    require_low_s: bool,
) -> Result<(), SignatureError> {
    let point = p256_point(spki_der)?;
    if signature_hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SignatureError::BadEncoding);
    }
    let sig = hex::decode(signature_hex).map_err(|_| SignatureError::BadEncoding)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(message, &sig)
        .map_err(|_| SignatureError::Mismatch)?;
    if require_low_s && !is_low_s(&sig) {
        return Err(SignatureError::HighS);
    }
    Ok(())
}

/// Validates `record` and signs it with the agent's PKCS#8 P-256 key.
pub fn sign(record: EvidenceRecord, agent_pkcs8: &[u8]) -> Result<SignedRecord, SignError> {
    record.validate()?;
    let signature = sign_message(&record.signing_message(), agent_pkcs8)?;
    Ok(SignedRecord { record, signature })
}

/// Verifies a record's signature with the agent certificate's SubjectPublicKeyInfo (DER).
pub fn verify_signature(signed: &SignedRecord, spki_der: &[u8]) -> Result<(), SignatureError> {
    // Record signatures are inside the Merkle leaves: a second encoding changes the leaf and
    // no longer matches the signed root, and records signed by older agents may be high-S.
    verify_message(
        &signed.record.signing_message(),
        &signed.signature,
        spki_der,
        false,
    )
}

impl SignedRecord {
    /// The Merkle leaf data: the canonical encoding of record and signature.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        canonical(self)
    }

    /// RFC 6962 leaf hash of [`SignedRecord::leaf_bytes`].
    pub fn leaf_hash(&self) -> Hash32 {
        leaf_hash(&self.leaf_bytes())
    }
}

impl Checkpoint {
    /// The exact bytes the controller signs.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = CHECKPOINT_DOMAIN.to_vec();
        m.extend_from_slice(&canonical(self));
        m
    }
}

/// Signs a checkpoint with the controller's PKCS#8 P-256 key (usable as the `sign_fn` of
/// [`EvidenceLog::checkpoint`]).
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    controller_pkcs8: &[u8],
) -> Result<String, SignError> {
    sign_message(&checkpoint.signing_message(), controller_pkcs8)
}

/// Verifies a checkpoint's signature with the controller's SubjectPublicKeyInfo (DER); a
/// high-S signature is refused ([`SignatureError::HighS`]).
pub fn verify_checkpoint(
    signed: &SignedCheckpoint,
    controller_spki_der: &[u8],
) -> Result<(), SignatureError> {
    verify_message(
        &signed.checkpoint.signing_message(),
        &signed.signature,
        controller_spki_der,
        true,
    )
}

// ---------------------------------------------------------------------------------------------
// Merkle tree (RFC 6962 / RFC 9162 section 2.1)

/// RFC 6962 leaf hash: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    let mut c = Context::new(&SHA256);
    c.update(&[0x00]);
    c.update(data);
    to_hash(c.finish().as_ref())
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut c = Context::new(&SHA256);
    c.update(&[0x01]);
    c.update(left);
    c.update(right);
    to_hash(c.finish().as_ref())
}

fn to_hash(d: &[u8]) -> Hash32 {
    let mut h = [0u8; 32];
    h.copy_from_slice(d);
    h
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Merkle tree hash of a list of leaf hashes (the empty tree hashes to SHA-256 of nothing).
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    match leaves.len() {
        0 => to_hash(digest(&SHA256, b"").as_ref()),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&merkle_root(&leaves[..k]), &merkle_root(&leaves[k..]))
        }
    }
}

/// Complete subtree hashes of a log: `levels[0]` are the leaves, `levels[k][i]` the hash of
/// the perfect subtree of `2^k` leaves starting at leaf `i * 2^k`. Any RFC 6962 subtree hash
/// then costs O(log n) instead of O(n).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Levels(Vec<Vec<Hash32>>);

impl Default for Levels {
    fn default() -> Self {
        Levels(vec![Vec::new()])
    }
}

impl Levels {
    fn from_leaves(leaves: Vec<Hash32>) -> Self {
        let mut l = Levels::default();
        for h in leaves {
            l.push(h);
        }
        l
    }

    fn leaves(&self) -> &[Hash32] {
        &self.0[0]
    }

    fn push(&mut self, leaf: Hash32) {
        self.0[0].push(leaf);
        let mut i = self.0[0].len() - 1;
        let mut k = 0;
        // A node with an odd index completes a pair: hash it with its left sibling upwards.
        while i % 2 == 1 {
            let parent = node_hash(&self.0[k][i - 1], &self.0[k][i]);
            if self.0.len() == k + 1 {
                self.0.push(Vec::new());
            }
            self.0[k + 1].push(parent);
            i /= 2;
            k += 1;
        }
    }

    /// RFC 6962 hash of the `len` leaves starting at `lo` (len >= 1, within the log).
    fn hash(&self, lo: usize, len: usize) -> Hash32 {
        if len.is_power_of_two() && lo.is_multiple_of(len) {
            let k = len.trailing_zeros() as usize;
            return self.0[k][lo / len];
        }
        let k = split(len);
        node_hash(&self.hash(lo, k), &self.hash(lo + k, len - k))
    }

    fn root(&self, size: usize) -> Hash32 {
        if size == 0 {
            to_hash(digest(&SHA256, b"").as_ref())
        } else {
            self.hash(0, size)
        }
    }

    fn inclusion_path(&self, m: usize, lo: usize, n: usize, out: &mut Vec<Hash32>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.inclusion_path(m, lo, k, out);
            out.push(self.hash(lo + k, n - k));
        } else {
            self.inclusion_path(m - k, lo + k, n - k, out);
            out.push(self.hash(lo, k));
        }
    }

    fn consistency_subproof(
        &self,
        m: usize,
        lo: usize,
        n: usize,
        complete: bool,
        out: &mut Vec<Hash32>,
    ) {
        if m == n {
            if !complete {
                out.push(self.hash(lo, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.consistency_subproof(m, lo, k, complete, out);
            out.push(self.hash(lo + k, n - k));
        } else {
            self.consistency_subproof(m - k, lo + k, n - k, false, out);
            out.push(self.hash(lo, k));
        }
    }
}

/// Verifies an RFC 9162 inclusion proof of `leaf` at `index` in a tree of `size` leaves.
pub fn verify_inclusion(
    leaf: &Hash32,
    index: u64,
    size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Mismatch);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Verifies an RFC 9162 consistency proof between a tree of `old_size` leaves with root
/// `old_root` and a tree of `new_size` leaves with root `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::Order {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if old_size == 0 {
        // Every tree extends the empty tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Mismatch);
    }
    let mut path: Vec<Hash32> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::Mismatch);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if fr == *old_root && sr == *new_root && s == 0 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// In-memory model of the evidence log: an append-only list of leaf hashes forming an
/// RFC 6962 Merkle tree. The controller persists the leaves (and the signed records) itself.
///
/// Serialises as `{"leaves": [...]}`; the subtree cache is rebuilt on load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EvidenceLogRepr", into = "EvidenceLogRepr")]
pub struct EvidenceLog {
    levels: Levels,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceLogRepr {
    leaves: Vec<Hash32>,
}

impl From<EvidenceLogRepr> for EvidenceLog {
    fn from(r: EvidenceLogRepr) -> Self {
        EvidenceLog::from_leaves(r.leaves)
    }
}

impl From<EvidenceLog> for EvidenceLogRepr {
    fn from(l: EvidenceLog) -> Self {
        EvidenceLogRepr {
            leaves: l.levels.leaves().to_vec(),
        }
    }
}

impl EvidenceLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a log from persisted leaf hashes, in order.
    pub fn from_leaves(leaves: Vec<Hash32>) -> Self {
        Self {
            levels: Levels::from_leaves(leaves),
        }
    }

    /// The leaf hashes, in order.
    pub fn leaves(&self) -> &[Hash32] {
        self.levels.leaves()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaves().len() as u64
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.leaves().is_empty()
    }

    /// Appends a signed record; returns its index and leaf hash.
    pub fn append(&mut self, record: &SignedRecord) -> (u64, Hash32) {
        let h = record.leaf_hash();
        self.levels.push(h);
        (self.len() - 1, h)
    }

    /// Root hash of the whole log.
    pub fn root(&self) -> Hash32 {
        self.levels.root(self.leaves().len())
    }

    /// Root hash of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash32, ProofError> {
        Ok(self.levels.root(self.prefix(size)?.len()))
    }

    fn prefix(&self, size: u64) -> Result<&[Hash32], ProofError> {
        if size > self.len() {
            return Err(ProofError::SizeOutOfRange {
                size,
                len: self.len(),
            });
        }
        // size <= len, which is a usize.
        Ok(&self.leaves()[..size as usize])
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash32>, ProofError> {
        let n = self.prefix(size)?.len();
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.levels.inclusion_path(index as usize, 0, n, &mut out);
        Ok(out)
    }

    /// Consistency proof between the trees of the first `old_size` and `new_size` leaves.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash32>, ProofError> {
        if old_size > new_size {
            return Err(ProofError::Order {
                old: old_size,
                new: new_size,
            });
        }
        let n = self.prefix(new_size)?.len();
        let mut out = Vec::new();
        if old_size > 0 && old_size < new_size {
            self.levels
                .consistency_subproof(old_size as usize, 0, n, true, &mut out);
        }
        Ok(out)
    }

    /// The current checkpoint, signed by `sign_fn` (which receives the exact message and
    /// returns the lowercase hex signature, e.g. a closure around [`sign_checkpoint`]).
    pub fn checkpoint<E>(
        &self,
        origin: &str,
        time_utc_ms: u64,
        sign_fn: impl FnOnce(&Checkpoint) -> Result<String, E>,
    ) -> Result<SignedCheckpoint, E> {
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            tree_size: self.len(),
            root_hash: hex::encode(self.root()),
            time_utc_ms,
            ca_sha256: None,
        };
        let signature = sign_fn(&checkpoint)?;
        Ok(SignedCheckpoint {
            checkpoint,
            signature,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// bundles

impl EvidenceBundle {
    /// Builds a bundle of `records` (in this order) with a checkpoint signed by the controller.
    /// `agent_certs` holds the DER certificate and SPKI of every agent key used. The bundle
    /// carries no CA certificate: see [`EvidenceBundle::build_with_ca`].
    pub fn build(
        records: Vec<SignedRecord>,
        agent_keys: BTreeMap<String, AgentKey>,
        origin: &str,
        time_utc_ms: u64,
        controller_pkcs8: &[u8],
    ) -> Result<Self, SignError> {
        Self::build_inner(
            records,
            agent_keys,
            origin,
            time_utc_ms,
            None,
            controller_pkcs8,
        )
    }

    /// [`EvidenceBundle::build`], carrying the CA certificate (DER) that issued the agent
    /// certificates, its SHA-256 signed in the checkpoint.
    pub fn build_with_ca(
        records: Vec<SignedRecord>,
        agent_keys: BTreeMap<String, AgentKey>,
        origin: &str,
        time_utc_ms: u64,
        ca_certificate_der: &[u8],
        controller_pkcs8: &[u8],
    ) -> Result<Self, SignError> {
        Self::build_inner(
            records,
            agent_keys,
            origin,
            time_utc_ms,
            Some(ca_certificate_der),
            controller_pkcs8,
        )
    }

    fn build_inner(
        records: Vec<SignedRecord>,
        agent_keys: BTreeMap<String, AgentKey>,
        origin: &str,
        time_utc_ms: u64,
        ca_certificate_der: Option<&[u8]>,
        controller_pkcs8: &[u8],
    ) -> Result<Self, SignError> {
        let mut log = EvidenceLog::new();
        for r in &records {
            log.append(r);
        }
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            tree_size: log.len(),
            root_hash: hex::encode(log.root()),
            time_utc_ms,
            ca_sha256: ca_certificate_der.map(sha256_hex),
        };
        let signature = sign_checkpoint(&checkpoint, controller_pkcs8)?;
        Ok(Self {
            format_version: BUNDLE_FORMAT_VERSION,
            records,
            agent_keys,
            checkpoint: SignedCheckpoint {
                checkpoint,
                signature,
            },
            controller_spki_der: hex::encode(p256_spki_from_pkcs8(controller_pkcs8)?),
            log_inclusion: None,
            ca_certificate_der: ca_certificate_der.map(hex::encode),
        })
    }

    /// Adds inclusion proofs of every record in the controller's global `log`: `leaf_indexes`
    /// gives each record's index in the log (strictly increasing), `global_checkpoint` is a
    /// checkpoint of `log` (signed by the same controller key).
    pub fn with_log_inclusion(
        mut self,
        log: &EvidenceLog,
        leaf_indexes: &[u64],
        global_checkpoint: SignedCheckpoint,
    ) -> Result<Self, ProofError> {
        let size = global_checkpoint.checkpoint.tree_size;
        if leaf_indexes.len() != self.records.len() {
            return Err(ProofError::IndexOutOfRange {
                index: leaf_indexes.len() as u64,
                size: self.records.len() as u64,
            });
        }
        let mut entries = Vec::with_capacity(leaf_indexes.len());
        for (record, &index) in self.records.iter().zip(leaf_indexes) {
            let proof = log.inclusion_proof(index, size)?;
            // The index must really hold this record.
            if log.leaves().get(index as usize) != Some(&record.leaf_hash()) {
                return Err(ProofError::Mismatch);
            }
            entries.push(LogEntryProof {
                leaf_index: index,
                proof: proof.iter().map(hex::encode).collect(),
            });
        }
        self.log_inclusion = Some(LogInclusion {
            checkpoint: global_checkpoint,
            entries,
        });
        Ok(self)
    }

    /// The exported bytes: the canonical encoding, no trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical(self)
    }
}

impl AgentKey {
    /// An entry for an agent certificate (DER) and its SubjectPublicKeyInfo (DER); returns the
    /// map key (SHA-256 of the certificate) and the entry.
    pub fn new(agent_id: &str, certificate_der: &[u8], spki_der: &[u8]) -> (String, AgentKey) {
        (
            sha256_hex(certificate_der),
            AgentKey {
                agent_id: agent_id.to_owned(),
                spki_der: hex::encode(spki_der),
                certificate_der: hex::encode(certificate_der),
            },
        )
    }
}

fn decode_hex_field(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(s).ok()
}

/// Verifies an exported bundle offline: canonical bytes, every record's validity and agent
/// signature, every agent certificate issued by the bundle's CA to that agent, the Merkle root
/// over the records in order, the controller's checkpoint signature, both checkpoints'
/// origins, and every record's inclusion in the controller's global log. Trusts the
/// controller key the bundle carries ([`BundleReport::controller_key_pinned`] is false):
/// compare [`BundleReport::controller_key_sha256`] with the key you trust, or use
/// [`verify_bundle_pinned`] / [`verify_bundle_with`].
pub fn verify_bundle(bytes: &[u8]) -> Result<BundleReport, BundleError> {
    verify_bundle_with(bytes, &TrustedKeys::default())
}

/// [`verify_bundle`], and the controller key must be `trusted_controller_spki_der`.
pub fn verify_bundle_pinned(
    bytes: &[u8],
    trusted_controller_spki_der: &[u8],
) -> Result<BundleReport, BundleError> {
    verify_bundle_with(
        bytes,
        &TrustedKeys {
            controller_spki_der: Some(trusted_controller_spki_der),
            ..TrustedKeys::default()
        },
    )
}

/// [`verify_bundle`] against what the auditor trusts: the controller key (by key or by its
/// SHA-256) and the CA certificate. A bundle without a CA certificate of its own (exported by
/// an older controller) verifies only when the CA is given.
pub fn verify_bundle_with(
    bytes: &[u8],
    trusted: &TrustedKeys<'_>,
) -> Result<BundleReport, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge { len: bytes.len() });
    }
    let bundle: EvidenceBundle =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Parse(e.to_string()))?;
    let again = bundle.to_bytes();
    if again != bytes {
        let offset = again
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(again.len().min(bytes.len()));
        return Err(BundleError::NotCanonical { offset });
    }
    if bundle.format_version != BUNDLE_FORMAT_VERSION {
        return Err(BundleError::FormatVersion(bundle.format_version));
    }
    if bundle.records.len() > MAX_BUNDLE_RECORDS {
        return Err(BundleError::TooManyRecords(bundle.records.len()));
    }

    let controller_spki = decode_hex_field(&bundle.controller_spki_der)
        .ok_or(BundleError::ControllerKey(SignatureError::BadEncoding))?;
    p256_point(&controller_spki).map_err(BundleError::ControllerKey)?;
    let controller_key_sha256 = sha256_hex(&controller_spki);
    if let Some(trusted) = trusted.controller_spki_der {
        if trusted != controller_spki.as_slice() {
            return Err(BundleError::UntrustedController {
                found: controller_key_sha256,
                expected: sha256_hex(trusted),
            });
        }
    }
    if let Some(pin) = trusted.controller_key_sha256 {
        let pin = pin.trim().to_ascii_lowercase();
        if pin != controller_key_sha256 {
            return Err(BundleError::UntrustedController {
                found: controller_key_sha256,
                expected: pin,
            });
        }
    }
    let pinned = trusted.controller_spki_der.is_some() || trusted.controller_key_sha256.is_some();
    verify_checkpoint(&bundle.checkpoint, &controller_spki)
        .map_err(BundleError::CheckpointSignature)?;
    let cp = &bundle.checkpoint.checkpoint;
    let exported = exported_agents(&cp.origin)?;

    let ca = bundle_ca(&bundle, trusted.ca_certificate_der)?;
    let ca_sha256 = sha256_hex(&ca);

    let mut keys: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let mut certs: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (cert_sha256, key) in &bundle.agent_keys {
        let bad = |what: &str| BundleError::AgentKey {
            cert_sha256: cert_sha256.clone(),
            what: what.to_owned(),
        };
        let cert = decode_hex_field(&key.certificate_der)
            .ok_or_else(|| bad("certificate_der is not lowercase hex"))?;
        let spki =
            decode_hex_field(&key.spki_der).ok_or_else(|| bad("spki_der is not lowercase hex"))?;
        if sha256_hex(&cert) != *cert_sha256 {
            return Err(bad("certificate SHA-256 differs from its map key"));
        }
        // The certificate encodes its SubjectPublicKeyInfo verbatim; finding it inside the
        // certificate binds the key to the fingerprint the agent signed.
        if spki.is_empty() || !cert.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(bad("spki_der is not the certificate's public key"));
        }
        p256_point(&spki).map_err(|e| bad(&e.to_string()))?;
        keys.insert(cert_sha256.as_str(), spki);
        certs.insert(cert_sha256.as_str(), cert);
    }

    let mut log = EvidenceLog::new();
    let mut per_agent: BTreeMap<String, u64> =
        exported.iter().map(|a| ((*a).to_owned(), 0)).collect();
    // Earliest and latest record time per certificate: the certificate must be valid at both.
    let mut used: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (index, signed) in bundle.records.iter().enumerate() {
        let rec = &signed.record;
        rec.validate()
            .map_err(|error| BundleError::InvalidRecord { index, error })?;
        let spki = keys.get(rec.agent_cert_sha256.as_str()).ok_or_else(|| {
            BundleError::UnknownAgentCert {
                index,
                cert_sha256: rec.agent_cert_sha256.clone(),
            }
        })?;
        let key = &bundle.agent_keys[&rec.agent_cert_sha256];
        if key.agent_id != rec.agent_id {
            return Err(BundleError::AgentKey {
                cert_sha256: rec.agent_cert_sha256.clone(),
                what: format!(
                    "certificate is for agent {:?} but record {index} names agent {:?}",
                    key.agent_id, rec.agent_id
                ),
            });
        }
        if !exported.contains(&rec.agent_id.as_str()) {
            return Err(BundleError::Origin {
                which: "bundle",
                found: cp.origin.clone(),
                expected: format!(
                    "{AGENTS_ORIGIN_PREFIX}… naming agent {} of record {index}",
                    rec.agent_id
                ),
            });
        }
        verify_signature(signed, spki).map_err(|error| BundleError::RecordSignature {
            index,
            agent_id: rec.agent_id.clone(),
            check_id: rec.check_id.clone(),
            error,
        })?;
        log.append(signed);
        *per_agent.entry(rec.agent_id.clone()).or_default() += 1;
        let t = used
            .entry(rec.agent_cert_sha256.as_str())
            .or_insert((rec.time_utc_ms, rec.time_utc_ms));
        t.0 = t.0.min(rec.time_utc_ms);
        t.1 = t.1.max(rec.time_utc_ms);
    }

    if cp.tree_size != log.len() {
        return Err(BundleError::TreeSize {
            checkpoint: cp.tree_size,
            records: log.len(),
        });
    }
    let computed = hex::encode(log.root());
    if computed != cp.root_hash {
        return Err(BundleError::RootMismatch {
            computed,
            signed: cp.root_hash.clone(),
        });
    }
    // Every key entry must serve a record: an unused entry would be bytes no signature covers.
    if let Some(unused) = bundle
        .agent_keys
        .keys()
        .find(|k| !used.contains_key(k.as_str()))
    {
        return Err(BundleError::AgentKey {
            cert_sha256: unused.clone(),
            what: "no record was signed with this certificate; remove it from the bundle".into(),
        });
    }
    for (sha, (first, last)) in &used {
        let key = &bundle.agent_keys[*sha];
        for at in [*first, *last] {
            check_agent_cert(&ca, &certs[sha], &key.agent_id, at).map_err(|what| {
                BundleError::AgentCertificate {
                    cert_sha256: (*sha).to_owned(),
                    agent_id: key.agent_id.clone(),
                    ca_sha256: ca_sha256.clone(),
                    what,
                }
            })?;
        }
    }
    let inc = bundle
        .log_inclusion
        .as_ref()
        .ok_or(BundleError::NoLogInclusion)?;
    let global_log = verify_log_inclusion(&bundle.records, inc, &controller_spki)?;
    Ok(BundleReport {
        global_log: Some(global_log),
        records: log.len(),
        origin: cp.origin.clone(),
        root_hash: computed,
        checkpoint_time_utc_ms: cp.time_utc_ms,
        controller_key_sha256,
        controller_key_pinned: pinned,
        records_per_agent: per_agent,
        ca_sha256,
    })
}

/// The agent ids a bundle's own checkpoint origin names (`preflight/agents/a,b`).
fn exported_agents(origin: &str) -> Result<Vec<&str>, BundleError> {
    let bad = || BundleError::Origin {
        which: "bundle",
        found: origin.to_owned(),
        expected: format!("{AGENTS_ORIGIN_PREFIX}AGENT[,AGENT…]"),
    };
    let list = origin.strip_prefix(AGENTS_ORIGIN_PREFIX).ok_or_else(bad)?;
    let ids: Vec<&str> = list.split(',').collect();
    let mut seen = std::collections::BTreeSet::new();
    for id in &ids {
        if id.is_empty()
            || id.len() > MAX_ID_BYTES
            || id.chars().any(|c| c.is_control() || c == '/')
            || !seen.insert(*id)
        {
            return Err(bad());
        }
    }
    Ok(ids)
}

/// The CA the agent certificates are checked against: the bundle's own (bound by the signed
/// checkpoint) and/or the one the verifier gives; both must agree.
fn bundle_ca(bundle: &EvidenceBundle, given: Option<&[u8]>) -> Result<Vec<u8>, BundleError> {
    let carried = match &bundle.ca_certificate_der {
        None => None,
        Some(h) => Some(decode_hex_field(h).ok_or_else(|| {
            BundleError::Ca("the bundle's ca_certificate_der is not lowercase hex".into())
        })?),
    };
    match (&carried, &bundle.checkpoint.checkpoint.ca_sha256) {
        (Some(ca), Some(sha)) if sha256_hex(ca) == *sha => {}
        (None, None) => {}
        (Some(_), Some(_)) => {
            return Err(BundleError::Ca(
                "the CA certificate in the bundle is not the one its checkpoint signs".into(),
            ))
        }
        (Some(_), None) => {
            return Err(BundleError::Ca(
                "the bundle carries a CA certificate its checkpoint does not sign".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(BundleError::Ca(
                "the checkpoint names a CA certificate the bundle does not carry".into(),
            ))
        }
    }
    match (carried, given) {
        (Some(c), Some(g)) if c == g => Ok(c),
        (Some(c), Some(g)) => Err(BundleError::Ca(format!(
            "the bundle's CA has sha256 {}, not the given CA's {}",
            sha256_hex(&c),
            sha256_hex(g)
        ))),
        (Some(c), None) => Ok(c),
        (None, Some(g)) => Ok(g.to_vec()),
        (None, None) => Err(BundleError::NoCa),
    }
}

/// Checks with webpki that `cert_der` was issued by `ca_der` to agent `agent_id` (its DNS
/// name) and was valid at `at_ms`.
fn check_agent_cert(
    ca_der: &[u8],
    cert_der: &[u8],
    agent_id: &str,
    at_ms: u64,
) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let ca = CertificateDer::from(ca_der);
    let anchor = webpki::anchor_from_trusted_cert(&ca)
        .map_err(|e| format!("the CA certificate cannot be read: {e}"))?;
    let cert = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&cert)
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_millis(at_ms));
    ee.verify_for_usage(
        &[
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P256_SHA384,
            webpki::ring::ECDSA_P384_SHA256,
            webpki::ring::ECDSA_P384_SHA384,
            webpki::ring::ED25519,
        ],
        &[anchor],
        &[],
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| {
        format!(
            "not issued by that CA or not valid at the record time {}: {e:?}",
            crate::timefmt::utc((at_ms / 1000) as i64)
        )
    })?;
    let name = ServerName::try_from(format!("{agent_id}{AGENT_DNS_SUFFIX}"))
        .map_err(|_| format!("agent id {agent_id:?} is not a valid certificate name"))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("the certificate is not issued to agent {agent_id}"))
}

fn verify_log_inclusion(
    records: &[SignedRecord],
    inc: &LogInclusion,
    controller_spki: &[u8],
) -> Result<Checkpoint, BundleError> {
    let fail = |index: usize, what: String| BundleError::LogInclusion { index, what };
    verify_checkpoint(&inc.checkpoint, controller_spki)
        .map_err(|e| fail(0, format!("global checkpoint signature: {e}")))?;
    let cp = &inc.checkpoint.checkpoint;
    if cp.origin != GLOBAL_LOG_ORIGIN {
        return Err(BundleError::Origin {
            which: "global log",
            found: cp.origin.clone(),
            expected: GLOBAL_LOG_ORIGIN.to_owned(),
        });
    }
    if cp.ca_sha256.is_some() {
        return Err(fail(
            0,
            "the global checkpoint carries a CA field only a bundle's checkpoint has".into(),
        ));
    }
    let root: Hash32 = decode_hex_field(&cp.root_hash)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            fail(
                0,
                "global root hash is not 32 bytes of lowercase hex".into(),
            )
        })?;
    if inc.entries.len() != records.len() {
        return Err(fail(
            inc.entries.len().min(records.len()),
            format!("{} proofs for {} records", inc.entries.len(), records.len()),
        ));
    }
    let mut previous: Option<u64> = None;
    for (index, (record, entry)) in records.iter().zip(&inc.entries).enumerate() {
        if previous.is_some_and(|p| entry.leaf_index <= p) {
            return Err(fail(
                index,
                "leaf indexes are not strictly increasing".into(),
            ));
        }
        previous = Some(entry.leaf_index);
        if entry.proof.len() > MAX_PROOF_LEN {
            return Err(fail(
                index,
                format!("proof has {} hashes", entry.proof.len()),
            ));
        }
        let proof: Vec<Hash32> = entry
            .proof
            .iter()
            .map(|h| decode_hex_field(h).and_then(|v| v.try_into().ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| fail(index, "proof hash is not 32 bytes of lowercase hex".into()))?;
        verify_inclusion(
            &record.leaf_hash(),
            entry.leaf_index,
            cp.tree_size,
            &proof,
            &root,
        )
        .map_err(|e| {
            fail(
                index,
                format!("leaf {} of {}: {e}", entry.leaf_index, cp.tree_size),
            )
        })?;
    }
    Ok(cp.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn empty_and_single_roots_match_rfc6962() {
        assert_eq!(
            hex::encode(merkle_root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn root_matches_certificate_transparency_test_vector() {
        // The eight leaves used by the certificate-transparency reference implementations.
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let l: Vec<Hash32> = inputs.iter().map(|d| leaf_hash(d)).collect();
        assert_eq!(
            hex::encode(merkle_root(&l)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    /// The eight leaves of the certificate-transparency / RFC 6962 reference test data.
    fn ct_leaves() -> Vec<Hash32> {
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        inputs.iter().map(|d| leaf_hash(d)).collect()
    }

    fn h(s: &str) -> Hash32 {
        hex::decode(s).expect("hex").try_into().expect("32 bytes")
    }

    /// Roots, inclusion proofs and consistency proofs of the reference data (the
    /// transparency-dev / certificate-transparency test vectors: inclusion of leaf 1 of 1,
    /// 1 of 8, 6 of 8, 3 of 3, 2 of 5 and consistency 1→1, 1→8, 6→8, 2→5, 6→7, with 1-based
    /// leaf numbers as there). Both sides: the proofs the log makes equal them, and they verify.
    #[test]
    fn rfc6962_reference_vectors() {
        const ROOTS: [&str; 8] = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let inclusion: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                3,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                2,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let consistency: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        let leaves = ct_leaves();
        let log = EvidenceLog::from_leaves(leaves.clone());
        for (n, want) in ROOTS.iter().enumerate() {
            let size = n as u64 + 1;
            assert_eq!(
                hex::encode(log.root_at(size).expect("size")),
                *want,
                "root of {size}"
            );
            assert_eq!(
                hex::encode(merkle_root(&leaves[..=n])),
                *want,
                "root of {size}"
            );
        }
        for (leaf, size, want) in inclusion {
            let index = leaf - 1;
            let want: Vec<Hash32> = want.iter().map(|x| h(x)).collect();
            assert_eq!(
                log.inclusion_proof(index, *size).expect("proof"),
                want,
                "inclusion of leaf {leaf} in {size}"
            );
            let root = h(ROOTS[*size as usize - 1]);
            assert_eq!(
                verify_inclusion(&leaves[index as usize], index, *size, &want, &root),
                Ok(()),
                "inclusion of leaf {leaf} in {size}"
            );
            // The reference data's corruptions: wrong index, wrong size, wrong leaf, extra hash.
            if *size > 1 {
                assert!(
                    verify_inclusion(&leaves[index as usize], index ^ 1, *size, &want, &root)
                        .is_err()
                );
            }
            assert!(
                verify_inclusion(&leaves[index as usize], index, size * 2, &want, &root).is_err()
            );
            assert!(
                verify_inclusion(&leaf_hash(b"WrongLeaf"), index, *size, &want, &root).is_err()
            );
            let mut longer = want.clone();
            longer.push(root);
            assert!(
                verify_inclusion(&leaves[index as usize], index, *size, &longer, &root).is_err()
            );
        }
        for (m, n, want) in consistency {
            let want: Vec<Hash32> = want.iter().map(|x| h(x)).collect();
            assert_eq!(
                log.consistency_proof(*m, *n).expect("proof"),
                want,
                "consistency {m} -> {n}"
            );
            let (old, new) = (h(ROOTS[*m as usize - 1]), h(ROOTS[*n as usize - 1]));
            assert_eq!(
                verify_consistency(*m, *n, &old, &new, &want),
                Ok(()),
                "consistency {m} -> {n}"
            );
            if m != n {
                assert!(verify_consistency(*m, *n, &new, &old, &want).is_err());
                assert!(verify_consistency(*m, *n, &old, &new, &want[..want.len() - 1]).is_err());
            }
        }
    }

    #[test]
    fn checkpoints_are_signed_low_s_and_the_high_s_twin_is_refused() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("key")
            .as_ref()
            .to_vec();
        let spki = p256_spki_from_pkcs8(&pkcs8).expect("spki");
        let half = p256_half_order();
        assert_eq!(
            hex::encode(half),
            "7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8"
        );
        let log = EvidenceLog::from_leaves(leaves(3));
        for t in 0..40 {
            let cp = log
                .checkpoint(GLOBAL_LOG_ORIGIN, t, |c| sign_checkpoint(c, &pkcs8))
                .expect("sign");
            assert!(is_low_s(&hex::decode(&cp.signature).expect("hex")), "t={t}");
            assert_eq!(verify_checkpoint(&cp, &spki), Ok(()));
            let twin = ecdsa_other_encoding(&cp.signature).expect("DER");
            assert_ne!(twin, cp.signature);
            // The twin is a valid ECDSA signature (ring accepts it) but not low-S.
            let raw = hex::decode(&twin).expect("hex");
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, p256_point(&spki).expect("point"))
                .verify(&cp.checkpoint.signing_message(), &raw)
                .expect("the other encoding is a valid signature");
            let mut forged = cp.clone();
            forged.signature = twin.clone();
            assert_eq!(
                verify_checkpoint(&forged, &spki),
                Err(SignatureError::HighS)
            );
            assert_eq!(
                ecdsa_other_encoding(&twin).as_deref(),
                Some(cp.signature.as_str())
            );
        }
    }

    #[test]
    fn cached_roots_match_plain_recursion_and_survive_serde() {
        let mut log = EvidenceLog::new();
        for n in 0..70usize {
            assert_eq!(log.root(), merkle_root(&leaves(n)), "n={n}");
            for m in 0..=n {
                assert_eq!(
                    log.root_at(m as u64).expect("in range"),
                    merkle_root(&leaves(m))
                );
            }
            let json = serde_json::to_string(&log).expect("serialise");
            let back: EvidenceLog = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, log);
            log.levels.push(leaves(n + 1)[n]);
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..=33u64 {
            let log = EvidenceLog::from_leaves(leaves(n as usize));
            let root = log.root();
            for i in 0..n {
                let proof = log.inclusion_proof(i, n).expect("in range");
                let leaf = log.leaves()[i as usize];
                assert_eq!(
                    verify_inclusion(&leaf, i, n, &proof, &root),
                    Ok(()),
                    "n={n} i={i}"
                );
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(&other, i, n, &proof, &root).is_err());
                if n > 1 {
                    assert!(
                        verify_inclusion(&leaf, (i + 1) % n, n, &proof, &root).is_err(),
                        "n={n} i={i}"
                    );
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(&leaf, i, n, &bad, &root).is_err());
                    assert!(
                        verify_inclusion(&leaf, i, n, &proof[..proof.len() - 1], &root).is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        let log = EvidenceLog::from_leaves(leaves(33));
        for n in 1..=33u64 {
            let new_root = log.root_at(n).expect("in range");
            for m in 1..=n {
                let old_root = log.root_at(m).expect("in range");
                let proof = log.consistency_proof(m, n).expect("in range");
                assert_eq!(
                    verify_consistency(m, n, &old_root, &new_root, &proof),
                    Ok(()),
                    "m={m} n={n}"
                );
                if m < n {
                    let mut bad = proof.clone();
                    bad[0][5] ^= 0x80;
                    assert!(
                        verify_consistency(m, n, &old_root, &new_root, &bad).is_err(),
                        "m={m} n={n}"
                    );
                    let wrong_old = leaf_hash(b"x");
                    assert!(verify_consistency(m, n, &wrong_old, &new_root, &proof).is_err());
                }
            }
        }
        assert!(log.consistency_proof(5, 4).is_err());
        assert!(log.inclusion_proof(3, 40).is_err());
    }

    #[test]
    fn validate_refuses_bad_records() {
        let mut r = EvidenceRecord {
            format_version: RECORD_FORMAT_VERSION,
            agent_id: "a1".into(),
            agent_cert_sha256: "0".repeat(64),
            host: "h".into(),
            check_id: "ssh.misc".into(),
            catalog_version: "1".into(),
            mlps_refs: vec![],
            cis_refs: vec![],
            operation: EvidenceOperation::Audit,
            observed: String::new(),
            files_read: BTreeMap::new(),
            expected: String::new(),
            status: EvidenceStatus::Compliant,
            reason: None,
            diff_applied: None,
            backup_ref: None,
            operator: Operator {
                user: "u".into(),
                role: Role::Deployer,
            },
            time_utc_ms: 0,
            agent_version: "0.1.0".into(),
            controller_request_id: "r".into(),
        };
        assert_eq!(r.validate(), Ok(()));
        r.status = EvidenceStatus::Unknown;
        assert_eq!(
            r.validate(),
            Err(InvalidRecord::MissingReason(EvidenceStatus::Unknown))
        );
        r.reason = Some("cannot parse".into());
        r.files_read.insert("etc/passwd".into(), "0".repeat(64));
        assert!(matches!(r.validate(), Err(InvalidRecord::RelativePath(_))));
        r.files_read.clear();
        r.files_read.insert("/etc/passwd".into(), "A".repeat(64));
        assert!(matches!(r.validate(), Err(InvalidRecord::BadHash { .. })));
        r.files_read.clear();
        r.host = "h\nx".into();
        assert_eq!(r.validate(), Err(InvalidRecord::ControlChar("host")));
    }
}
