//! TLS to desktops off loopback: the gateway's side of VeNCrypt X509Vnc.
//!
//! Each desktop makes a self-signed certificate of its own when it starts; its SHA-256 is
//! stored with the session (the pin). The gateway accepts exactly that certificate — no
//! certificate authority, no host name — and still checks that the server holds its key (the
//! handshake's signature is verified with the certificate's public key).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;

/// A TLS connection to a desktop.
pub type TlsDesktop = tokio_rustls::client::TlsStream<TcpStream>;

#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // Constant time in the contents, though a pin is no secret.
        if bool::from(got.ct_eq(&self.pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the desktop's certificate is not the one it was started with".into(),
            ))
        }
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

/// Runs the TLS handshake on `tcp` accepting only the certificate whose SHA-256 (hex) is
/// `pin`.
pub async fn connect(tcp: TcpStream, pin: &str) -> std::io::Result<TlsDesktop> {
    let pin: [u8; 32] = hex::decode(pin)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| std::io::Error::other("the desktop's certificate pin is malformed"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    let name = ServerName::try_from("hpcdesk-desktop").map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server with a certificate of its own on 127.0.0.1 that answers "ok" once;
    /// returns its port and the certificate's pin.
    async fn server() -> (u16, String) {
        let made = rcgen::generate_simple_self_signed(vec!["node".to_owned()]).unwrap();
        let pin = hex::encode(Sha256::digest(made.cert.der()));
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        (port, pin)
    }

    #[tokio::test]
    async fn only_the_pinned_certificate_is_accepted() {
        let (port, pin) = server().await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tls = connect(tcp, &pin)
            .await
            .expect("the desktop's own certificate");
        let mut got = [0u8; 2];
        tls.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");

        // Another certificate (say, one a user put in front of the port) is refused.
        let (_, other_pin) = server().await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let err = connect(tcp, &other_pin).await.unwrap_err();
        assert!(
            err.to_string().contains("not the one it was started with"),
            "{err}"
        );
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert!(connect(tcp, "not-hex").await.is_err());
    }
}
