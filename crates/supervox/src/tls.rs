//! TLS for TURN (RFC 8656 §3.1 "TURN over TLS over TCP"; ALPN `stun.turn`, RFC 7443).
//!
//! A supernode's relay certificate is self-signed: made on first start (ECDSA P-256, by
//! rcgen) and kept in its data directory, so its hash stays the same across restarts.
//! Clients do not check it against a CA: they pin the SHA-256 of its DER, which they
//! learn from their supernode over the authenticated Noise link (`RelayCredentials`), or
//! which the user gives for an external `turns:` server (`--turn-tls-fingerprint`). The
//! handshake signature is still verified, so only the holder of the key passes the pin.
//!
//! rustls with the `ring` provider, passed explicitly (no process-wide default).

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// ALPN protocol id of TURN (RFC 7443).
pub const ALPN_TURN: &[u8] = b"stun.turn";
/// The relay certificate in the supernode's data directory (PEM).
pub const CERT_FILE: &str = "relay-tls-cert.pem";
/// Its private key (PEM, PKCS#8, mode 0600).
pub const KEY_FILE: &str = "relay-tls-key.pem";

/// The crypto provider every TLS config here uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER certificate: what clients pin.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// A fingerprint as lowercase hex with colons (as `openssl x509 -fingerprint -sha256` prints it).
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parse a SHA-256 fingerprint: 64 hex digits, colons allowed, an optional `sha256:` prefix.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("SHA256:")).unwrap_or(s);
    let hex_digits: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hex_digits).map_err(|_| format!("{s:?} is not hex"))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("a SHA-256 fingerprint has 32 bytes, not {}", b.len()))
}

/// The relay's certificate chain and key.
pub struct RelayCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf's DER.
    pub fingerprint: [u8; 32],
}

// Written by hand so that the private key never reaches a log.
impl std::fmt::Debug for RelayCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCert")
            .field("chain_len", &self.chain.len())
            .field("fingerprint", &hex::encode(self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl RelayCert {
    /// Load the certificate from `dir` ([`CERT_FILE`], [`KEY_FILE`]), or make and store a
    /// self-signed one on first start. A key file others can read is refused, as is one
    /// file without the other (remove both to get a new certificate, and a new fingerprint).
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => {
                let made = rcgen::generate_simple_self_signed(vec!["supervox-relay".to_string()])
                    .context("cannot make the relay TLS certificate")?;
                write_new(&key_path, made.key_pair.serialize_pem().as_bytes(), 0o600)?;
                write_new(&cert_path, made.cert.pem().as_bytes(), 0o644)?;
                let cert = made.cert.der().clone();
                let key = PrivateKeyDer::try_from(made.key_pair.serialize_der())
                    .map_err(|e| anyhow::anyhow!("relay TLS key: {e}"))?;
                let fingerprint = fingerprint(&cert);
                tracing::info!(
                    "created relay TLS certificate {} ({})",
                    cert_path.display(),
                    format_fingerprint(&fingerprint)
                );
                Ok(Self { chain: vec![cert], key, fingerprint })
            }
            (true, false) => bail!(
                "{} exists but {} does not: remove both to make a new pair",
                cert_path.display(),
                key_path.display()
            ),
            (false, true) => bail!(
                "{} exists but {} does not: remove both to make a new pair",
                key_path.display(),
                cert_path.display()
            ),
        }
    }

    /// Load a PEM certificate chain and its PEM private key (e.g. one a CA issued).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let meta = fs::metadata(key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
        crate::store::refuse_if_readable_by_others("relay TLS key", key_path, &meta)?;
        let chain = CertificateDer::pem_file_iter(cert_path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read certificates from {}", cert_path.display()))?;
        let Some(leaf) = chain.first() else { bail!("no certificate in {}", cert_path.display()) };
        let fingerprint = fingerprint(leaf);
        let key = PrivateKeyDer::from_pem_file(key_path)
            .with_context(|| format!("cannot read a private key from {}", key_path.display()))?;
        Ok(Self { chain, key, fingerprint })
    }

    /// A server config presenting this certificate, offering ALPN `stun.turn`.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("the relay TLS key does not fit its certificate")?;
        c.alpn_protocols = vec![ALPN_TURN.to_vec()];
        Ok(Arc::new(c))
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// A client config that accepts exactly the server certificate whose DER hashes to `pin`
/// (and a handshake signed by its key), offering ALPN `stun.turn`.
pub fn pinned_client_config(pin: [u8; 32]) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let verifier = Pinned { pin, algorithms: provider.signature_verification_algorithms };
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    c.alpn_protocols = vec![ALPN_TURN.to_vec()];
    Ok(Arc::new(c))
}

/// Certificate pinning: names, dates and issuers do not matter, the hash does.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let fp = [0xAB; 32];
        let s = format_fingerprint(&fp);
        assert_eq!(parse_fingerprint(&s), Ok(fp));
        assert_eq!(parse_fingerprint(&s.replace(':', "").to_uppercase()), Ok(fp));
        assert_eq!(parse_fingerprint(&format!("sha256:{s}")), Ok(fp));
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint("zz").is_err());
        assert!(parse_fingerprint("").is_err());
    }

    #[test]
    fn the_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = RelayCert::load_or_create(dir.path()).unwrap();
        let b = RelayCert::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(RelayCert::load_or_create(dir.path()).is_err(), "a key others can read is refused");
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(RelayCert::load_or_create(dir.path()).is_err(), "a certificate without its key is refused");
    }

    /// A TLS session over loopback with the server's cert and a client pinning `pin`.
    async fn handshake(server: &RelayCert, pin: [u8; 32]) -> std::io::Result<Vec<u8>> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let at = l.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config().unwrap());
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await?;
            let mut tls = acceptor.accept(s).await?;
            tls.write_all(b"hello").await?;
            tls.shutdown().await
        });
        let connector = tokio_rustls::TlsConnector::from(pinned_client_config(pin).unwrap());
        let tcp = tokio::net::TcpStream::connect(at).await?;
        let mut tls = connector.connect(ServerName::IpAddress(at.ip().into()), tcp).await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_TURN));
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await?;
        let _ = srv.await;
        Ok(got)
    }

    #[tokio::test]
    async fn the_pinned_certificate_passes_and_any_other_fails() {
        let dir = tempfile::tempdir().unwrap();
        let cert = RelayCert::load_or_create(dir.path()).unwrap();
        assert_eq!(handshake(&cert, cert.fingerprint).await.unwrap(), b"hello");
        let other = tempfile::tempdir().unwrap();
        let impostor = RelayCert::load_or_create(other.path()).unwrap();
        let err = handshake(&impostor, cert.fingerprint).await.unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
