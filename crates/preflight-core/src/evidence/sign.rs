//! ECDSA P-256 signatures of records and checkpoints, and the low-S rule of checkpoints.

use ring::digest::{digest, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};

use super::merkle::{Checkpoint, SignedCheckpoint};
use super::record::{EvidenceRecord, InvalidRecord, SignedRecord};

/// The P-256 group order n, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

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

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest(&SHA256, data))
}

/// The P-256 SubjectPublicKeyInfo (DER) of a PKCS#8 P-256 private key, as it appears in the
/// certificate issued for that key.
pub fn p256_spki_from_pkcs8(pkcs8: &[u8]) -> Result<Vec<u8>, SignError> {
    use rcgen::PublicKeyData;
    let key = rcgen::KeyPair::try_from(pkcs8).map_err(|_| SignError::BadKey)?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(SignError::BadKey);
    }
    Ok(key.subject_public_key_info())
}

/// The uncompressed point (65 bytes, `0x04` first) of an ECDSA P-256 SubjectPublicKeyInfo:
/// what a signature is verified with. Parsed by x509-parser (through rcgen), and accepted only
/// in its one DER encoding: x509-parser alone overlooks some tag bytes, and a key with two
/// spellings would have two fingerprints.
pub(super) fn p256_point(spki_der: &[u8]) -> Result<&[u8], SignatureError> {
    use rcgen::PublicKeyData;
    let bad = || SignatureError::BadPublicKey {
        len: spki_der.len(),
    };
    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| bad())?;
    let point = spki.der_bytes();
    if spki.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256
        || point.len() != 65
        || point[0] != 0x04
        || spki.subject_public_key_info() != spki_der
    {
        return Err(bad());
    }
    // Canonical, so the BIT STRING's 65 bytes end the input.
    Ok(&spki_der[spki_der.len() - 65..])
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

pub(super) fn verify_message(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{leaf_hash, EvidenceLog, Hash32, GLOBAL_LOG_ORIGIN};

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn the_spki_of_a_key_carries_its_point_and_anything_else_is_refused() {
        use ring::signature::KeyPair;
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("key")
            .as_ref()
            .to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng).unwrap();
        let spki = p256_spki_from_pkcs8(&pkcs8).expect("spki");
        // A P-256 SPKI is 91 bytes: the algorithm, then the 65-byte point of the key.
        assert_eq!(spki.len(), 91);
        assert_eq!(p256_point(&spki), Ok(pair.public_key().as_ref()));
        let mut long = spki.clone();
        long.push(0);
        // Every bit of the header (x509-parser alone overlooks some tag bytes).
        for pos in 0..26 {
            for bit in 0..8 {
                let mut c = spki.clone();
                c[pos] ^= 1 << bit;
                assert!(p256_point(&c).is_err(), "byte {pos} bit {bit}");
            }
        }
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let p384_spki = rcgen::PublicKeyData::subject_public_key_info(&p384);
        for bad in [&spki[..90], &long[..], &[][..], &p384_spki[..]] {
            assert_eq!(
                p256_point(bad),
                Err(SignatureError::BadPublicKey { len: bad.len() })
            );
        }
        assert_eq!(
            p256_spki_from_pkcs8(&p384.serialize_der()),
            Err(SignError::BadKey)
        );
        assert_eq!(p256_spki_from_pkcs8(b"not a key"), Err(SignError::BadKey));
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
}
