//! Typed facts a record carries for the controller's gates (record format version 2), signed
//! with the rest of the record: what a firewall check read on the host, or what a confirmed
//! firewall change made live. The gates read these fields, never the free text of `observed`
//! or `expected` (records of format version 1 have no facts: see [`super::legacy`]).

use serde::{Deserialize, Serialize};

use crate::net::{PortSpec, Proto};

/// Most port specifications one list of [`FirewallFacts`] may hold.
pub const MAX_PORT_SPECS: usize = 4096;

/// The firewall backend the facts were read from or written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirewallBackend {
    /// Native nftables.
    Nftables,
    /// iptables / ip6tables, legacy or iptables-nft.
    Iptables,
    /// firewalld.
    Firewalld,
}

/// What the input path does with traffic no rule accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPolicy {
    /// Dropped or rejected.
    Deny,
    /// Accepted.
    Accept,
}

/// The firewall of a host as one record states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallFacts {
    /// The backend.
    pub backend: FirewallBackend,
    /// The input default policy, when it was read.
    pub default_policy: Option<DefaultPolicy>,
    /// The ports the ruleset accepts (from any source), sorted and without duplicates.
    pub allowed: Vec<PortSpec>,
    /// The host's non-loopback listening sockets as the check read them (sorted, without
    /// duplicates); `None` when none were read (a confirmed change states its allow-list only).
    pub listeners: Option<Vec<PortSpec>>,
}

/// `specs` sorted and without duplicates, as [`FirewallFacts`] holds them.
pub fn normalised(mut specs: Vec<PortSpec>) -> Vec<PortSpec> {
    specs.sort();
    specs.dedup();
    specs
}

impl FirewallFacts {
    /// Whether the allowed ports include `port/proto`.
    pub fn allows(&self, proto: Proto, port: u16) -> bool {
        self.allowed
            .iter()
            .any(|s| s.proto == proto && s.ports.first <= port && port <= s.ports.last)
    }

    /// Why the facts break the evidence rules, if they do: too many entries, a port 0, a range
    /// running backwards, a list not sorted or with duplicates (the canonical form).
    pub(super) fn problem(&self) -> Option<String> {
        let lists = [
            ("firewall.allowed", Some(&self.allowed)),
            ("firewall.listeners", self.listeners.as_ref()),
        ];
        for (field, list) in lists {
            let Some(list) = list else { continue };
            if list.len() > MAX_PORT_SPECS {
                return Some(format!(
                    "{field} has {} entries, more than the limit of {MAX_PORT_SPECS}",
                    list.len()
                ));
            }
            if let Some(bad) = list
                .iter()
                .find(|s| s.ports.first == 0 || s.ports.first > s.ports.last)
            {
                return Some(format!("{field} holds the invalid port range {bad}"));
            }
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return Some(format!("{field} is not sorted or holds a duplicate"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    use super::*;
    use crate::evidence::{
        p256_spki_from_pkcs8, sign, verify_signature, EvidenceOperation, EvidenceRecord,
        EvidenceStatus, InvalidRecord, Operator, SignatureError, SignedRecord,
        RECORD_FORMAT_VERSION,
    };
    use crate::role::Role;

    fn facts() -> FirewallFacts {
        FirewallFacts {
            backend: FirewallBackend::Nftables,
            default_policy: Some(DefaultPolicy::Deny),
            allowed: normalised(vec![
                PortSpec::single(Proto::Tcp, 8080),
                PortSpec::single(Proto::Tcp, 22),
                PortSpec::single(Proto::Udp, 514),
                PortSpec::single(Proto::Tcp, 22),
            ]),
            listeners: Some(vec![PortSpec::single(Proto::Tcp, 22)]),
        }
    }

    fn record(firewall: Option<FirewallFacts>) -> EvidenceRecord {
        EvidenceRecord {
            format_version: RECORD_FORMAT_VERSION,
            agent_id: "a1".into(),
            agent_cert_sha256: "0".repeat(64),
            host: "h".into(),
            check_id: "fw.allowlist_ports".into(),
            catalog_version: "1".into(),
            mlps_refs: vec!["L3-CES1-19".into()],
            cis_refs: vec![],
            operation: EvidenceOperation::Audit,
            observed: "free text the controller never parses; allowed: 9999/tcp".into(),
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
            time_utc_ms: 1,
            agent_version: "0.2.0".into(),
            controller_request_id: "r".into(),
            firewall,
        }
    }

    #[test]
    fn v2_facts_round_trip_and_are_what_the_gate_reads() {
        let r = record(Some(facts()));
        assert_eq!(r.validate(), Ok(()));
        let bytes = r.canonical_bytes();
        let back: EvidenceRecord = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(back, r);
        assert_eq!(
            back.canonical_bytes(),
            bytes,
            "canonical encoding is stable"
        );
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(
            text.contains(r#""firewall":{"backend":"nftables","default_policy":"deny","allowed":[{"proto":"tcp","ports":{"first":22,"last":22}}"#),
            "{text}"
        );
        // The typed list decides, never the text (which names 9999/tcp).
        let allowed: Vec<String> = r
            .allowed_ports()
            .expect("an allow-list")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["22/tcp", "8080/tcp", "514/udp"]);
        assert!(facts().allows(Proto::Udp, 514) && !facts().allows(Proto::Tcp, 514));
        // Without facts a record of the current format shows no allow-list at all.
        assert_eq!(record(None).allowed_ports(), None);
        // And a record without facts encodes without the field, as version 1 did.
        assert!(!String::from_utf8(record(None).canonical_bytes())
            .expect("utf-8")
            .contains("firewall"));
    }

    #[test]
    fn the_signature_covers_the_facts() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("key")
            .as_ref()
            .to_vec();
        let spki = p256_spki_from_pkcs8(&pkcs8).expect("spki");
        let signed = sign(record(Some(facts())), &pkcs8).expect("sign");
        assert_eq!(verify_signature(&signed, &spki), Ok(()));
        let tamper = |f: &dyn Fn(&mut FirewallFacts)| {
            let mut t: SignedRecord = signed.clone();
            f(t.record.firewall.as_mut().expect("facts"));
            verify_signature(&t, &spki)
        };
        assert_eq!(
            tamper(&|f| f.allowed.push(PortSpec::single(Proto::Udp, 9999))),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            tamper(&|f| f.default_policy = Some(DefaultPolicy::Accept)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            tamper(&|f| f.backend = FirewallBackend::Iptables),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            tamper(&|f| f.listeners = None),
            Err(SignatureError::Mismatch)
        );
        let mut dropped = signed.clone();
        dropped.record.firewall = None;
        assert_eq!(
            verify_signature(&dropped, &spki),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn facts_break_the_rules_only_where_they_may_not() {
        let mut v1 = record(Some(facts()));
        v1.format_version = 1;
        assert!(
            matches!(v1.validate(), Err(InvalidRecord::Facts(ref m)) if m.contains("format_version 1")),
            "{:?}",
            v1.validate()
        );
        let mut unsorted = facts();
        unsorted.allowed.reverse();
        assert!(matches!(
            record(Some(unsorted)).validate(),
            Err(InvalidRecord::Facts(_))
        ));
        let mut zero = facts();
        zero.allowed = vec![PortSpec::single(Proto::Tcp, 0)];
        assert!(matches!(
            record(Some(zero)).validate(),
            Err(InvalidRecord::Facts(_))
        ));
        let mut future = record(None);
        future.format_version = RECORD_FORMAT_VERSION + 1;
        assert_eq!(
            future.validate(),
            Err(InvalidRecord::FormatVersion(RECORD_FORMAT_VERSION + 1))
        );
    }
}
