//! Server verification by CA pin: trust the CA whose certificate hashes to the pin, taken from
//! the chain the server presents, then verify the server's certificate against it with webpki
//! as usual. No certificate is trusted blindly and no verification is hand-written.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::sha256_hex;

/// See the module documentation.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
    mismatch: Mutex<Option<String>>,
}

impl PinnedCaVerifier {
    pub(crate) fn new(pin: String, provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin,
            provider,
            mismatch: Mutex::new(None),
        }
    }

    /// After a failed handshake: the SHA-256 of the CA the server presented instead of the
    /// pinned one, so the error can name the mismatch.
    pub fn mismatch(&self) -> Option<String> {
        self.mismatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| sha256_hex(c) == self.pin) else {
            let presented = intermediates
                .last()
                .map(|c| sha256_hex(c))
                .unwrap_or_else(|| "none".to_string());
            *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(presented.clone());
            return Err(rustls::Error::General(format!(
                "CA pin mismatch: the server's CA has sha256 {presented}, expected {}",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A further check on a server already verified against the CA: its name and the SHA-256 of
/// its certificate; `Err` names why it is refused.
pub type ServerCheck = Arc<dyn Fn(&ServerName<'_>, &str) -> Result<(), String> + Send + Sync>;

/// Verifies the server with webpki against the CA, as the default verifier does, then asks a
/// [`ServerCheck`] (the controller: is this the certificate on record for that agent?).
pub struct CheckedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    check: ServerCheck,
}

impl std::fmt::Debug for CheckedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedVerifier").finish_non_exhaustive()
    }
}

impl CheckedVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        check: ServerCheck,
    ) -> Result<Self, rustls::Error> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Self { inner, check })
    }
}

impl ServerCertVerifier for CheckedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        (self.check)(server_name, &sha256_hex(end_entity)).map_err(rustls::Error::General)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
