//! The offline bundle an auditor keeps, and its verification.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::merkle::{
    verify_inclusion, Checkpoint, EvidenceLog, Hash32, ProofError, SignedCheckpoint,
};
use super::record::{InvalidRecord, SignedRecord, MAX_ID_BYTES};
use super::sign::{
    p256_point, p256_spki_from_pkcs8, sha256_hex, sign_checkpoint, verify_checkpoint,
    verify_signature, SignError, SignatureError,
};
use super::{canonical, legacy};

/// Version of the [`EvidenceBundle`] encoding written by this code.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;
/// Largest bundle [`verify_bundle`] reads.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;
/// Most records one bundle may hold.
pub const MAX_BUNDLE_RECORDS: usize = 1_000_000;

/// Origin of the controller's global evidence log checkpoints.
pub const GLOBAL_LOG_ORIGIN: &str = "preflight/evidence-log";
/// Origin prefix of a bundle's own checkpoint; the exported agent ids follow, comma-separated.
pub const AGENTS_ORIGIN_PREFIX: &str = "preflight/agents/";
/// DNS name suffix an agent certificate names its agent id with.
const AGENT_DNS_SUFFIX: &str = ".agent.preflight.internal";

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
// bundles

impl EvidenceBundle {
    /// Builds a bundle of `records` (in this order) with a checkpoint signed by the controller.
    /// `agent_keys` holds the DER certificate and SPKI of every agent key used. With
    /// `ca_certificate_der` (the CA that issued the agent certificates) the bundle carries it,
    /// its SHA-256 signed in the checkpoint; without, it has the shape older controllers
    /// exported (no CA), which verifiers must still read.
    pub fn build(
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
    // A bundle from before bundles carried their CA was signed without low-S normalisation.
    let pre_ca = bundle.checkpoint.checkpoint.ca_sha256.is_none();
    let check_cp = if pre_ca {
        legacy::verify_pre_ca_checkpoint
    } else {
        verify_checkpoint
    };
    check_cp(&bundle.checkpoint, &controller_spki).map_err(BundleError::CheckpointSignature)?;
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
        // The key must be the certificate's: that binds it to the fingerprint the agent signed.
        if cert_spki(&cert).as_deref() != Some(spki.as_slice()) {
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
    let global_log = verify_log_inclusion(&bundle.records, inc, &controller_spki, check_cp)?;
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

/// The SubjectPublicKeyInfo (DER) of a certificate as webpki reads it, or None when it is no
/// certificate.
fn cert_spki(cert_der: &[u8]) -> Option<Vec<u8>> {
    let cert = rustls_pki_types::CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&cert).ok()?;
    Some(ee.subject_public_key_info().as_ref().to_vec())
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
    check_cp: fn(&SignedCheckpoint, &[u8]) -> Result<(), SignatureError>,
) -> Result<Checkpoint, BundleError> {
    let fail = |index: usize, what: String| BundleError::LogInclusion { index, what };
    check_cp(&inc.checkpoint, controller_spki)
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
