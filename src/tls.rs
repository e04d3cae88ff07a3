//! TLS material and rustls client configurations: reading CA bundles, client certificates and
//! private keys from PEM files (with errors that name the setting and the file), and the server
//! certificate checks of PostgreSQL's `sslmode`s. The crypto provider is aws-lc-rs, the one
//! lapin and object_store use too.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The PEM text of a file of certificates, checked to hold at least one.
#[derive(Debug, Clone)]
pub struct PemCertificates {
    /// The file's text, as read.
    pub pem: String,
    pub certificates: Vec<CertificateDer<'static>>,
}

/// Reads the certificates (a CA bundle or a certificate chain) of `path`, which setting
/// `setting` names. Fails, naming both, when the file is missing or holds no PEM certificate.
pub fn read_certificates(path: &Path, setting: &str) -> anyhow::Result<PemCertificates> {
    let pem = read_text(path, setting)?;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{setting} {} is not a valid PEM file: {e}", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "{setting} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(PemCertificates { pem, certificates })
}

/// Reads the private key (PKCS#8, PKCS#1 or SEC1, unencrypted) of `path`, which setting
/// `setting` names: its PEM text and the key.
pub fn read_private_key(path: &Path, setting: &str) -> anyhow::Result<(String, PrivateKeyDer<'static>)> {
    let pem = read_text(path, setting)?;
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "{setting} {} holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----): {e}",
            path.display()
        )
    })?;
    Ok((pem, key))
}

/// A client certificate chain and its private key as PEM text, checked to belong together.
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Reads a client certificate (`cert`, named by setting `cert_setting`) and its private key
/// (`key`, `key_setting`), and checks that the key is the certificate's.
pub fn read_client_identity(
    cert: &Path,
    cert_setting: &str,
    key: &Path,
    key_setting: &str,
) -> anyhow::Result<ClientIdentity> {
    let chain = read_certificates(cert, cert_setting)?;
    let (key_pem, private_key) = read_private_key(key, key_setting)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.certificates, private_key, &provider).map_err(|e| {
        anyhow::anyhow!(
            "{key_setting} {} is not the key of {cert_setting} {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(ClientIdentity {
        cert_pem: chain.pem,
        key_pem,
    })
}

fn read_text(path: &Path, setting: &str) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("while reading {setting} {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{setting} {} is not a PEM file", path.display()))
}

/// How a TLS client checks the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCheck {
    /// Encrypt only: any certificate is taken (libpq's `prefer` and `require`).
    None,
    /// The certificate chains to a trusted root; its name is not checked (`verify-ca`).
    Chain,
    /// The certificate chains to a trusted root and names the host (`verify-full`).
    Full,
}

/// A rustls client configuration that checks the server as `check` says, against the
/// certificates of `ca` or, without them, the system's roots.
pub fn client_config(check: ServerCheck, ca: Option<&PemCertificates>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        ServerCheck::None => Arc::new(AnyCertificate(provider.clone())),
        ServerCheck::Chain | ServerCheck::Full => {
            let roots = match ca {
                Some(ca) => {
                    let mut roots = RootCertStore::empty();
                    for certificate in &ca.certificates {
                        roots
                            .add(certificate.clone())
                            .context("while adding a CA certificate to the trusted roots")?;
                    }
                    roots
                }
                None => system_roots()?,
            };
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("while building the certificate verifier")?;
            if check == ServerCheck::Full {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("while choosing the TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The operating system's trusted roots.
fn system_roots() -> anyhow::Result<RootCertStore> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        bail!("no trusted root certificates found on this system: give a CA file");
    }
    Ok(roots)
}

/// Takes any server certificate, still checking that the handshake is signed by its key: TLS
/// that encrypts without authenticating, as libpq's `require` does.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain as `0` does but takes a certificate for another name (`verify-ca`). webpki
/// checks the name last, after the chain, so a name error means the chain is good.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_pem_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = read_certificates(&missing, "amqp.tls_ca_file").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("amqp.tls_ca_file") && text.contains("missing.pem"),
            "{text}"
        );
        assert!(text.contains("No such file"), "{text}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let text = format!("{:#}", read_certificates(&junk, "data.tls_ca_file").unwrap_err());
        assert!(
            text.contains("data.tls_ca_file") && text.contains("junk.pem") && text.contains("no PEM certificate"),
            "{text}"
        );
        let text = format!("{:#}", read_private_key(&junk, "amqp.tls_key_file").unwrap_err());
        assert!(
            text.contains("amqp.tls_key_file") && text.contains("junk.pem") && text.contains("private key"),
            "{text}"
        );
        let binary = dir.path().join("cert.der");
        std::fs::write(&binary, [0x30, 0x82, 0xff, 0xfe]).unwrap();
        let text = format!("{:#}", read_certificates(&binary, "storage.tls_ca_file").unwrap_err());
        assert!(text.contains("cert.der") && text.contains("not a PEM file"), "{text}");
    }
}
