//! What older writers left behind and is still read: records of format version 1, which carry
//! no typed facts, and bundle checkpoints from before bundles carried their CA, whose
//! signatures were high-S or low-S by chance. Everything about the old formats lives here, so
//! that the rest of the module reads only the current one.

use super::merkle::SignedCheckpoint;
use super::record::{EvidenceOperation, EvidenceRecord, EvidenceStatus};
use super::sign::{verify_message, SignatureError};
use crate::net::{PortSpec, Proto};

use super::facts::normalised;

/// The ports a version-1 firewall record (`fw.allowlist_ports`) shows allowed, read from its
/// text the way the v1 agent wrote it: the ruleset an audit or verify read (`observed`:
/// "listening: [...]; allowed: 22/tcp from any; ..."), or the allow-list a confirmation made
/// live (a compliant verify whose `expected` is "ssh 22/tcp and agent 7444/tcp from ...;
/// 8080/tcp from anywhere (reason); everything else dropped"). `None` when the record shows no
/// allow-list (a pending apply, a rollback, an unknown status) or is not of version 1.
pub fn v1_allowed_ports(r: &EvidenceRecord) -> Option<Vec<PortSpec>> {
    const ALLOWED: &str = "allowed: ";
    if r.format_version != 1 {
        return None;
    }
    let text = if let Some(i) = r.observed.find(ALLOWED) {
        &r.observed[i + ALLOWED.len()..]
    } else if r.operation == EvidenceOperation::Verify && r.status == EvidenceStatus::Compliant {
        r.expected.as_str()
    } else {
        return None;
    };
    let mut out = Vec::new();
    for seg in text.split("; ") {
        for tok in seg.split_whitespace().take_while(|t| *t != "from") {
            let Some((port, proto)) = tok.split_once('/') else {
                continue;
            };
            let Ok(proto) = proto.parse::<Proto>() else {
                continue;
            };
            if let Ok(port) = port.parse::<u16>() {
                out.push(PortSpec::single(proto, port));
            }
        }
    }
    Some(normalised(out))
}

/// Verifies the signature of a checkpoint from a bundle exported before bundles carried their
/// CA certificate (its own checkpoint has no `ca_sha256`): the controller that made it did not
/// normalise signatures, so the high-S encoding is accepted too. Checkpoints of current bundles
/// are low-S only ([`super::verify_checkpoint`]).
pub fn verify_pre_ca_checkpoint(
    signed: &SignedCheckpoint,
    controller_spki_der: &[u8],
) -> Result<(), SignatureError> {
    verify_message(
        &signed.checkpoint.signing_message(),
        &signed.signature,
        controller_spki_der,
        false,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::evidence::{Operator, RECORD_FORMAT_VERSION};
    use crate::role::Role;

    fn fw(
        op: EvidenceOperation,
        status: EvidenceStatus,
        observed: &str,
        expected: &str,
    ) -> EvidenceRecord {
        EvidenceRecord {
            format_version: 1,
            agent_id: "a1".into(),
            agent_cert_sha256: "0".repeat(64),
            host: "h".into(),
            check_id: "fw.allowlist_ports".into(),
            catalog_version: "1".into(),
            mlps_refs: vec![],
            cis_refs: vec![],
            operation: op,
            observed: observed.into(),
            files_read: BTreeMap::new(),
            expected: expected.into(),
            status,
            reason: Some("r".into()),
            diff_applied: None,
            backup_ref: None,
            operator: Operator {
                user: "u".into(),
                role: Role::Deployer,
            },
            time_utc_ms: 0,
            agent_version: "0.1.0".into(),
            controller_request_id: "r".into(),
            firewall: None,
        }
    }

    fn names(v: Option<Vec<PortSpec>>) -> Option<Vec<String>> {
        v.map(|v| v.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_ruleset_an_audit_read_is_after_allowed_not_the_listeners() {
        let r = fw(
            EvidenceOperation::Audit,
            EvidenceStatus::NonCompliant,
            "listening: [22/tcp, 8080/tcp, 9100/tcp]; allowed: 22/tcp from 10.0.0.0/8; 514/udp from any; 8080/tcp from any",
            "every non-loopback listener planned and allowed, or closed; never 21, 23, 111; allowed: 22/tcp from any",
        );
        assert_eq!(
            names(v1_allowed_ports(&r)),
            Some(vec!["22/tcp".into(), "8080/tcp".into(), "514/udp".into()])
        );
        let none = fw(
            EvidenceOperation::Audit,
            EvidenceStatus::NonCompliant,
            "listening: [8080/tcp]; allowed: nothing allowed",
            "",
        );
        assert_eq!(names(v1_allowed_ports(&none)), Some(vec![]));
    }

    #[test]
    fn a_confirmation_states_its_allow_list_in_expected() {
        let r = fw(
            EvidenceOperation::Verify,
            EvidenceStatus::Compliant,
            "change fw-1 confirmed by the controller over a new connection; live until reboot",
            "ssh 22/tcp and agent 7444/tcp from 10.0.0.0/8; 8080/tcp from anywhere (soa, x); everything else dropped",
        );
        assert_eq!(
            names(v1_allowed_ports(&r)),
            Some(vec!["22/tcp".into(), "7444/tcp".into(), "8080/tcp".into()])
        );
        // Not compliant, or not a verify: the expected text is no allow-list.
        let mut r2 = r.clone();
        r2.status = EvidenceStatus::NonCompliant;
        assert_eq!(v1_allowed_ports(&r2), None);
        let mut r3 = r.clone();
        r3.operation = EvidenceOperation::Apply;
        assert_eq!(v1_allowed_ports(&r3), None);
        // A record of the current format is never read from its text.
        let mut r4 = r;
        r4.format_version = RECORD_FORMAT_VERSION;
        assert_eq!(v1_allowed_ports(&r4), None);
    }

    #[test]
    fn a_pending_apply_or_an_unknown_shows_no_allow_list() {
        let r = fw(
            EvidenceOperation::Apply,
            EvidenceStatus::Unknown,
            "applied change fw-1 (nftables), rolled back unless confirmed by 2026-01-01 00:00:00",
            "ssh 22/tcp and agent 7444/tcp from 10.0.0.0/8; everything else dropped",
        );
        assert_eq!(v1_allowed_ports(&r), None);
        let u = fw(EvidenceOperation::Audit, EvidenceStatus::Unknown, "", "");
        assert_eq!(v1_allowed_ports(&u), None);
    }
}
