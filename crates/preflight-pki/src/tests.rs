use std::time::{Duration, SystemTime};

use super::*;

#[test]
fn agent_certificate_names_the_chosen_id_only() {
    let ca = CertificateAuthority::generate("test ca").unwrap();
    let (csr, key) = make_csr("evil").unwrap();
    let cert = ca
        .sign_agent_csr(&csr, "web-1", Duration::from_secs(3600))
        .unwrap();
    let id = Identity {
        cert_pem: cert,
        key_pem: key,
    };
    let chain = id.chain().unwrap();
    assert_eq!(chain.len(), 2, "leaf then CA");
    assert_eq!(
        peer_identity(&chain[0]).unwrap(),
        PeerIdentity::Agent("web-1".into())
    );
    assert_eq!(sha256_hex(&chain[1]), ca.pin());
    let left = id.not_after_unix().unwrap() - unix_now();
    assert!((3500..=3600).contains(&left), "{left}");
    id.certified_key().unwrap();
}

#[test]
fn controller_identity_and_reload() {
    let ca = CertificateAuthority::generate("test ca").unwrap();
    let id = ca
        .issue_controller(&["127.0.0.1".into()], Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        peer_identity(&id.chain().unwrap()[0]).unwrap(),
        PeerIdentity::Controller
    );
    let back = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(back.pin(), ca.pin());
    let r = ReloadableCert::new(&id).unwrap();
    r.replace(&id).unwrap();
}

#[test]
fn bad_inputs_are_refused_with_reasons() {
    let ca = CertificateAuthority::generate("test ca").unwrap();
    let (csr, _) = make_csr("x").unwrap();
    for bad in ["", "-a", "a-", "UPPER", "a.b", &"x".repeat(64), "a_b"] {
        assert!(matches!(
            ca.sign_agent_csr(&csr, bad, Duration::from_secs(1)),
            Err(PkiError::AgentId(_))
        ));
    }
    let mut tampered = csr.clone();
    tampered.replace_range(80..84, "AAAA");
    assert!(ca
        .sign_agent_csr(&tampered, "ok", Duration::from_secs(1))
        .is_err());
    assert!(ca
        .sign_agent_csr("garbage", "ok", Duration::from_secs(1))
        .is_err());
    assert!(parse_pin("abc").is_err());
    let pin = ca.pin();
    assert_eq!(parse_pin(&pin.to_uppercase()).unwrap(), pin);
    assert_eq!(parse_pin(&format!("sha256:{pin}")).unwrap(), pin);
}

#[test]
fn expired_certificate_can_be_made_for_tests() {
    let ca = CertificateAuthority::generate("test ca").unwrap();
    let (csr, key) = make_csr("old").unwrap();
    let past = SystemTime::now() - Duration::from_secs(7200);
    let cert = ca
        .sign_agent_csr_at(&csr, "old", past, Duration::from_secs(60))
        .unwrap();
    let id = Identity {
        cert_pem: cert,
        key_pem: key,
    };
    assert!(id.not_after_unix().unwrap() < unix_now());
}

#[test]
fn controller_urls() {
    assert_eq!(controller_addr("https://ctl:7443").unwrap(), "ctl:7443");
    assert_eq!(controller_addr("https://ctl/").unwrap(), "ctl:7443");
    assert_eq!(controller_addr("https://[::1]").unwrap(), "[::1]:7443");
    assert_eq!(controller_addr("https://[::1]:9").unwrap(), "[::1]:9");
    for bad in [
        "http://ctl",
        "ctl:7443",
        "https://",
        "https://ctl:0",
        "https://ctl:x",
        "https://a/b",
        "https://::1",
        "https://u@h",
        "https://h:70000",
    ] {
        let e = controller_addr(bad).unwrap_err().to_string();
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn the_p256_spki_of_an_issued_certificate_is_its_key() {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let ca = CertificateAuthority::generate("test ca").unwrap();
    let (csr, key) = make_csr("web-1").unwrap();
    let cert = ca
        .sign_agent_csr(&csr, "web-1", Duration::from_secs(3600))
        .unwrap();
    let id = Identity {
        cert_pem: cert,
        key_pem: key,
    };
    let leaf = id.chain().unwrap()[0].to_vec();
    let spki = p256_spki(&leaf).unwrap();
    let pkcs8 = match id.key().unwrap() {
        rustls_pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => panic!("PKCS#8"),
    };
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    // A P-256 SPKI is 91 bytes: the algorithm, then the 65-byte point of the key.
    assert_eq!(spki.len(), 91);
    assert!(spki.ends_with(pair.public_key().as_ref()));
    let e = p256_spki(&leaf[..leaf.len() / 2]).unwrap_err();
    assert!(matches!(e, PkiError::Parse(_)), "{e}");
}
