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
//!   `b"preflight evidence record v1\n"` followed by the canonical [`EvidenceRecord`] (the
//!   domain tag names the signature scheme; the record's own `format_version` is inside the
//!   signed bytes, and with it the typed facts of version 2);
//! - Merkle leaf: the canonical [`SignedRecord`] (record and signature), hashed as RFC 6962
//!   `SHA-256(0x00 || leaf)`; interior nodes `SHA-256(0x01 || left || right)`;
//! - checkpoint signature (controller key): over `b"preflight evidence checkpoint v1\n"`
//!   followed by the canonical [`Checkpoint`] (origin, tree size, root hash, time, and on a
//!   bundle's own checkpoint the SHA-256 of the CA certificate the bundle carries). Checkpoint
//!   signatures must be in low-S form (s at most half the group order), so each checkpoint has
//!   exactly one valid encoding; every signature this module makes is low-S. The one
//!   exception is read, never written: a bundle exported before bundles carried their CA (its
//!   checkpoint has no `ca_sha256`) came from a controller that did not normalise signatures,
//!   so its two checkpoints are accepted in either form ([`legacy::verify_pre_ca_checkpoint`]).
//!
//! # Record formats
//!
//! Version 2 (written now) carries typed facts the controller's gates read
//! ([`facts::FirewallFacts`]: backend, default policy, allowed ports and listeners as
//! [`crate::net::PortSpec`]s). Version 1 records (written by v0.1 agents and still in
//! controllers' logs and auditors' bundles) have none; they verify as they were signed, and
//! [`legacy`] is the one place that reads their facts from their text.
//!
//! # Origins
//!
//! The controller signs two kinds of checkpoint with one key, told apart by their origin: its
//! global log ([`GLOBAL_LOG_ORIGIN`]) and each bundle's own tree of exported records
//! ([`AGENTS_ORIGIN_PREFIX`] followed by the exported agent ids, comma-separated).
//! [`verify_bundle`] requires each origin in its place, so one kind cannot stand in for the
//! other.

mod bundle;
pub mod facts;
pub mod legacy;
mod merkle;
mod record;
mod sign;

pub use bundle::{
    verify_bundle, verify_bundle_pinned, verify_bundle_with, AgentKey, BundleError, BundleReport,
    EvidenceBundle, LogEntryProof, LogInclusion, TrustedKeys, AGENTS_ORIGIN_PREFIX,
    BUNDLE_FORMAT_VERSION, GLOBAL_LOG_ORIGIN, MAX_BUNDLE_BYTES, MAX_BUNDLE_RECORDS,
};
pub use facts::{DefaultPolicy, FirewallBackend, FirewallFacts};
pub use merkle::{
    leaf_hash, merkle_root, node_hash, verify_consistency, verify_inclusion, Checkpoint,
    EvidenceLog, Hash32, ProofError, SignedCheckpoint,
};
pub use record::{
    EvidenceOperation, EvidenceRecord, EvidenceStatus, InvalidRecord, Operator, SignedRecord,
    MAX_FILES_READ, MAX_ID_BYTES, MAX_REFS, MAX_TEXT_BYTES, OLDEST_RECORD_FORMAT_VERSION,
    RECORD_FORMAT_VERSION,
};
pub use sign::{
    ecdsa_other_encoding, p256_spki_from_pkcs8, sha256_hex, sign, sign_checkpoint,
    verify_checkpoint, verify_signature, SignError, SignatureError,
};

pub(crate) fn canonical<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs, strings, integers and BTreeMaps with string keys cannot fail.
    serde_json::to_vec(value).expect("evidence types always serialise")
}
