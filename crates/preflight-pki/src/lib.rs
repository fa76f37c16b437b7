//! The internal CA of preflight, certificate signing requests, certificate roles, and the rustls
//! configurations of both sides.
//!
//! Identities are carried in DNS subject-alternative names under `preflight.internal`, a name
//! that never resolves, so a certificate can never pass for a public host:
//! - the controller: `controller.preflight.internal`;
//! - an agent: `<agent-id>.agent.preflight.internal`.
//!
//! Clients always verify the server against the name of the identity they expect, never the
//! address they dialled, so an agent moved to another address is still recognised and an agent
//! answering at the address of another is refused. Keys are ECDSA P-256 and are generated where
//! they are used: an agent's private key never leaves its host.

pub mod fsutil;
pub mod limits;
pub mod shed;
pub mod transport;
mod verify;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use verify::{CheckedVerifier, PinnedCaVerifier, ServerCheck};

/// The DNS name in the controller's certificate.
pub const CONTROLLER_NAME: &str = "controller.preflight.internal";
/// Suffix of the DNS name in an agent's certificate.
pub const AGENT_SUFFIX: &str = ".agent.preflight.internal";
/// Longest accepted agent id.
pub const MAX_AGENT_ID_LEN: usize = 63;

/// What went wrong with certificates or keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid PEM in {what}: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    #[error("invalid agent id {0:?}: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
    AgentId(String),
    #[error("tls configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("invalid CA pin {0:?}: expected 64 hex digits (the SHA-256 of the CA certificate)")]
    Pin(String),
    #[error("certificate could not be parsed: {0}")]
    Parse(String),
    #[error("controller URL {url:?} {why}")]
    Url { url: String, why: &'static str },
}

/// Whom a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The controller (may call agents).
    Controller,
    /// An enrolled agent with this id.
    Agent(String),
}

/// Checks that an agent id is a valid DNS label, so it can be embedded in a certificate name.
pub fn validate_agent_id(id: &str) -> Result<(), PkiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_AGENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PkiError::AgentId(id.to_string()))
    }
}

/// The DNS name an agent's certificate carries.
pub fn agent_dns_name(id: &str) -> String {
    format!("{id}{AGENT_SUFFIX}")
}

/// SHA-256 of DER bytes, as lowercase hex: the CA pin and certificate fingerprints.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// Normalises and checks a pin given by a person: 64 hex digits, colons allowed.
pub fn parse_pin(pin: &str) -> Result<String, PkiError> {
    let t = pin.trim();
    let t = t.strip_prefix("sha256:").unwrap_or(t);
    let p: String = t
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(p)
    } else {
        Err(PkiError::Pin(pin.to_string()))
    }
}

fn now_offset() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// The controller's certificate authority: signs the controller's own identity and every
/// agent's certificate.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl CertificateAuthority {
    /// Makes a new CA with a fresh P-256 key, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "preflight");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = now_offset();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads a CA from its certificate and PKCS#8 key in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert_der = first_cert(cert_pem, "CA certificate")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Pem {
            what: "CA key",
            detail: e.to_string(),
        })?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key in PEM (PKCS#8). Store it with mode 0600.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The pin people type: SHA-256 of the CA certificate's DER, hex.
    pub fn pin(&self) -> String {
        sha256_hex(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// Issues the controller's identity (server and client): a fresh key and a certificate for
    /// [`CONTROLLER_NAME`] plus any extra DNS names or IP addresses people use to reach it.
    pub fn issue_controller(
        &self,
        extra_names: &[String],
        validity: Duration,
    ) -> Result<Identity, PkiError> {
        self.issue_controller_at(extra_names, SystemTime::now(), validity)
    }

    /// As [`Self::issue_controller`] with an explicit start of validity (tests use this to
    /// make expired certificates).
    pub fn issue_controller_at(
        &self,
        extra_names: &[String],
        not_before: SystemTime,
        validity: Duration,
    ) -> Result<Identity, PkiError> {
        let key = KeyPair::generate()?;
        let mut names = vec![CONTROLLER_NAME.to_string()];
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "preflight controller");
        self.leaf_params(&mut params, not_before, validity);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Identity {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    fn leaf_params(&self, params: &mut CertificateParams, not_before: SystemTime, v: Duration) {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        // A little slack for clocks that are slightly behind.
        params.not_before = to_offset(not_before) - time::Duration::minutes(5);
        params.not_after = to_offset(not_before + v);
    }

    /// Signs an agent's CSR for `agent_id`, valid for `validity` from now. The names the CSR
    /// asks for are ignored: the certificate names exactly the agent id the controller chose.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        agent_id: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        self.sign_agent_csr_at(csr_pem, agent_id, SystemTime::now(), validity)
    }

    /// As [`Self::sign_agent_csr`] with an explicit start of validity (tests use this to make
    /// expired certificates).
    pub fn sign_agent_csr_at(
        &self,
        csr_pem: &str,
        agent_id: &str,
        not_before: SystemTime,
        validity: Duration,
    ) -> Result<String, PkiError> {
        validate_agent_id(agent_id)?;
        if csr_pem.len() > 16 * 1024 {
            return Err(PkiError::Csr("larger than 16 KiB".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        let mut params = CertificateParams::new(vec![agent_dns_name(agent_id)])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("preflight agent {agent_id}"));
        self.leaf_params(&mut params, not_before, validity);
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// A certificate chain (leaf first, then the CA) and its private key, both PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// The certificate chain as DER.
    pub fn chain(&self) -> Result<Vec<CertificateDer<'static>>, PkiError> {
        certs(&self.cert_pem, "certificate")
    }

    /// The private key as DER.
    pub fn key(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| PkiError::Pem {
            what: "private key",
            detail: e.to_string(),
        })
    }

    /// A rustls certified key for this identity.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, PkiError> {
        let key = rustls::crypto::ring::sign::any_supported_type(&self.key()?)?;
        Ok(Arc::new(CertifiedKey::new(self.chain()?, key)))
    }

    /// Unix time at which the leaf certificate expires.
    pub fn not_after_unix(&self) -> Result<i64, PkiError> {
        let chain = self.chain()?;
        let leaf = chain
            .first()
            .ok_or_else(|| PkiError::Parse("empty chain".into()))?;
        not_after_unix(leaf)
    }

    /// SHA-256 fingerprint of the leaf certificate.
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        let chain = self.chain()?;
        Ok(sha256_hex(chain.first().map(|c| c.as_ref()).unwrap_or(&[])))
    }
}

/// A fresh P-256 key and a CSR for it, made on the host that will use the key.
pub fn make_csr(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("preflight agent {name}"));
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Every certificate in a PEM text.
pub fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let v: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let v = v.map_err(|e| PkiError::Pem {
        what,
        detail: e.to_string(),
    })?;
    if v.is_empty() {
        return Err(PkiError::Pem {
            what,
            detail: "no certificate found".into(),
        });
    }
    Ok(v)
}

fn first_cert(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, PkiError> {
    Ok(certs(pem, what)?.remove(0))
}

/// Unix time at which a certificate expires.
pub fn not_after_unix(der: &CertificateDer<'_>) -> Result<i64, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The SubjectPublicKeyInfo (DER, as the certificate encodes it) of a certificate whose key is
/// ECDSA P-256, as every key this CA issues for is: what evidence signatures are checked with.
pub fn p256_spki(der: &[u8]) -> Result<Vec<u8>, PkiError> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let spki = &cert.tbs_certificate.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| x509_parser::der_parser::oid::Oid::try_from(p).ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(PkiError::Parse(
            "the certificate's public key is not an ECDSA P-256 key".into(),
        ));
    }
    Ok(spki.raw.to_vec())
}

/// Whom a (verified) peer certificate speaks for, from its DNS names.
pub fn peer_identity(der: &CertificateDer<'_>) -> Result<PeerIdentity, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(e.to_string()))?
        .ok_or_else(|| PkiError::Parse("no subject alternative name".into()))?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::DNSName(n) = name {
            if *n == CONTROLLER_NAME {
                return Ok(PeerIdentity::Controller);
            }
            if let Some(id) = n.strip_suffix(AGENT_SUFFIX) {
                validate_agent_id(id)?;
                return Ok(PeerIdentity::Agent(id.to_string()));
            }
        }
    }
    Err(PkiError::Parse(
        "certificate names no preflight identity".into(),
    ))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, PkiError> {
    let mut store = RootCertStore::empty();
    for c in certs(ca_pem, "CA certificate")? {
        store.add(c)?;
    }
    Ok(Arc::new(store))
}

/// A server certificate that can be replaced while the server runs (certificate renewal).
#[derive(Debug)]
pub struct ReloadableCert(RwLock<Arc<CertifiedKey>>);

impl ReloadableCert {
    /// Starts with `identity`.
    pub fn new(identity: &Identity) -> Result<Arc<Self>, PkiError> {
        Ok(Arc::new(Self(RwLock::new(identity.certified_key()?))))
    }

    /// Serves `identity` to every new connection from now on.
    pub fn replace(&self, identity: &Identity) -> Result<(), PkiError> {
        let k = identity.certified_key()?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = k;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// ALPN for gRPC (HTTP/2) and, on the controller, plain HTTPS for curl.
fn alpn(http1: bool) -> Vec<Vec<u8>> {
    let mut v = vec![b"h2".to_vec()];
    if http1 {
        v.push(b"http/1.1".to_vec());
    }
    v
}

/// The agent's server: mutual TLS required, client certificates issued by `ca_pem`. Which
/// role the client must have (the controller) is checked per request by the service.
pub fn agent_server_config(
    ca_pem: &str,
    cert: Arc<ReloadableCert>,
) -> Result<ServerConfig, PkiError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider()).build()?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    cfg.alpn_protocols = alpn(false);
    Ok(cfg)
}

/// The controller's server: client certificates optional (agents present theirs, people use
/// bearer tokens), but when one is presented it must chain to `ca_pem`.
pub fn controller_server_config(
    ca_pem: &str,
    cert: Arc<ReloadableCert>,
) -> Result<ServerConfig, PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    cfg.alpn_protocols = alpn(true);
    Ok(cfg)
}

/// A client that trusts exactly `ca_pem` and presents `identity` when given.
pub fn client_config(ca_pem: &str, identity: Option<&Identity>) -> Result<ClientConfig, PkiError> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    let mut cfg = match identity {
        Some(id) => b.with_client_auth_cert(id.chain()?, id.key()?)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn(false);
    Ok(cfg)
}

/// [`client_config`] presenting `identity`, whose servers must also pass `check` (their name
/// and certificate SHA-256) after the usual verification against `ca_pem`.
pub fn client_config_checked(
    ca_pem: &str,
    identity: &Identity,
    check: ServerCheck,
) -> Result<ClientConfig, PkiError> {
    let verifier = Arc::new(CheckedVerifier::new(roots(ca_pem)?, provider(), check)?);
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain()?, identity.key()?)?;
    cfg.alpn_protocols = alpn(false);
    Ok(cfg)
}

/// A client that trusts the CA whose certificate has SHA-256 `pin`, taken from the chain the
/// server presents (enrollment and the CLI: the pin is all a person has to carry).
pub fn pinned_client_config(pin: &str) -> Result<(ClientConfig, Arc<PinnedCaVerifier>), PkiError> {
    let verifier = Arc::new(PinnedCaVerifier::new(parse_pin(pin)?, provider()));
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn(false);
    Ok((cfg, verifier))
}

/// The server name a client must verify for the controller.
pub fn controller_server_name() -> ServerName<'static> {
    ServerName::try_from(CONTROLLER_NAME).expect("constant is a valid DNS name")
}

/// The server name a client must verify for an agent.
pub fn agent_server_name(id: &str) -> Result<ServerName<'static>, PkiError> {
    validate_agent_id(id)?;
    ServerName::try_from(agent_dns_name(id)).map_err(|_| PkiError::AgentId(id.to_string()))
}

/// `https://HOST[:PORT][/]` to `HOST:PORT` (port 7443 when omitted), refusing anything else.
pub fn controller_addr(url: &str) -> Result<String, PkiError> {
    let err = |why| PkiError::Url {
        url: url.to_string(),
        why,
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| err("must start with https:// (e.g. https://ctl.example:7443)"))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) || rest.contains(char::is_whitespace)
    {
        return Err(err(
            "must be https://HOST or https://HOST:PORT, with no path",
        ));
    }
    let with_port = if rest.starts_with('[') {
        if rest.contains("]:") {
            rest.to_string()
        } else {
            format!("{rest}:7443")
        }
    } else if rest.matches(':').count() == 1 {
        rest.to_string()
    } else if rest.contains(':') {
        return Err(err(
            "must write IPv6 addresses in brackets, e.g. https://[::1]:7443",
        ));
    } else {
        format!("{rest}:7443")
    };
    match with_port.rsplit(':').next().map(str::parse::<u16>) {
        Some(Ok(p)) if p > 0 => Ok(with_port),
        _ => Err(err("has an invalid port: use 1-65535")),
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Installs the ring crypto provider process-wide; call first in every `main` and harness.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests;
