//! TLS on `serve`'s own listener (`server.tls_cert`, `server.tls_key`): the certificate in
//! use, its reload, and the handshake of each accepted connection.
//!
//! - The certificate chain and key are read (PEM) at start-up, and a pair that cannot be
//!   used (unreadable, no certificate, no key, a key of another certificate) stops the
//!   server from starting.
//! - [`ServerTls::reload`] (on SIGHUP) reads both files again. New handshakes get the new
//!   certificate; connections already open, viewers included, keep the TLS session they
//!   have, so a renewal drops nothing. A reload that fails keeps the certificate in use.
//! - Only HTTP/1.1 is offered (ALPN): WebSocket upgrades (`wss://`) go through the same
//!   listener as the API.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

/// The most a certificate or key file may hold: a chain of a few certificates is a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A TLS connection from a client.
pub type TlsClient = tokio_rustls::server::TlsStream<TcpStream>;

/// Why a certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct TlsError {
    path: PathBuf,
    why: String,
}

fn error(path: &Path, why: impl fmt::Display) -> TlsError {
    TlsError {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// The certificate new handshakes get; swapped whole by a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The listener's TLS: the files, the certificate in use and the acceptor built on it.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Arc<Current>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert_path)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Reads a file an operator gave, with a size cap.
fn read_capped(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = std::fs::File::open(path).map_err(|e| error(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(path, e))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(error(
            path,
            "larger than 1 MiB; not a PEM certificate or key",
        ));
    }
    Ok(bytes)
}

/// Reads and checks a certificate chain and its key.
fn load(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem = read_capped(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(error(cert_path, "holds no PEM CERTIFICATE block"));
    }
    let pem = read_capped(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| error(key_path, format!("no usable PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        error(
            key_path,
            format!("cannot be used with {}: {e}", cert_path.display()),
        )
    })?;
    Ok(certified)
}

impl ServerTls {
    /// Reads the certificate chain and key; fails if they cannot serve.
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let first = load(cert_path, key_path, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(first))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(cert_path, e))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads both files again; new handshakes get what they hold. On error, the certificate
    /// in use stays. Returns the new certificate's fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let next = load(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(self.fingerprint())
    }

    /// SHA-256 of the certificate in use (hex), as `openssl x509 -fingerprint -sha256`
    /// shows it without the colons.
    pub fn fingerprint(&self) -> String {
        let current = self.current.0.read().unwrap_or_else(|p| p.into_inner());
        current
            .end_entity_cert()
            .map(|c| hex::encode(Sha256::digest(c.as_ref())))
            .unwrap_or_default()
    }

    /// The TLS handshake of an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsClient> {
        self.acceptor.accept(tcp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let fp = hex::encode(Sha256::digest(cert.cert.der().as_ref()));
        (c, k, fp)
    }

    #[test]
    fn a_reload_takes_the_new_pair_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1, fp1) = pair(dir.path(), "one");
        let (c2, k2, fp2) = pair(dir.path(), "two");
        let tls = ServerTls::new(&c1, &k1).unwrap();
        assert_eq!(tls.fingerprint(), fp1);

        // A key of another certificate: refused, the old pair stays.
        std::fs::copy(&c2, &c1).unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("cannot be used with"), "{e}");
        assert_eq!(tls.fingerprint(), fp1);

        std::fs::copy(&k2, &k1).unwrap();
        assert_eq!(tls.reload().unwrap(), fp2);
        assert_eq!(tls.fingerprint(), fp2);
    }

    #[test]
    fn files_that_are_not_a_certificate_and_key_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, _) = pair(dir.path(), "one");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = ServerTls::new(&junk, &k).unwrap_err().to_string();
        assert!(
            e.contains("junk.pem") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );
        let e = ServerTls::new(&c, &junk).unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("private key"), "{e}");
        let e = ServerTls::new(&c, &dir.path().join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.key"), "{e}");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        let e = ServerTls::new(&big, &k).unwrap_err().to_string();
        assert!(e.contains("larger than 1 MiB"), "{e}");
    }
}
