//! The gateway's two RFB handshakes.
//!
//! - [`authenticate_to_server`]: the gateway, as a client of the desktop's VNC server,
//!   negotiates RFB 3.8 (or 3.7 / 3.3 if that is all the server speaks), picks VNC
//!   Authentication and answers the DES challenge with the session's password. The browser
//!   never sees that password.
//! - [`start_x509_vnc`] and [`vnc_auth`]: the same over TLS, for desktops off loopback: the
//!   gateway insists on VeNCrypt's X509Vnc (a server that offers less is refused, so a
//!   downgrade is not possible), the caller runs TLS once the server agreed, and the VNC
//!   authentication happens inside it.
//! - [`accept_viewer`]: the gateway, as a server to the browser, offers security type None
//!   and confirms it.
//!
//! After both, the viewer's ClientInit and the server's ServerInit flow through the relay
//! like every later byte. Strings a peer sends (failure reasons) are capped in length.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::vnc_auth_response;

const SECURITY_NONE: u8 = 1;
const SECURITY_VNC_AUTH: u8 = 2;
const SECURITY_VENCRYPT: u8 = 19;
/// VeNCrypt sub-type: TLS with an X.509 certificate, then VNC Authentication inside it.
pub const VENCRYPT_X509_VNC: u32 = 261;
/// Longest failure reason read from a peer.
const MAX_REASON: u32 = 4096;

/// An RFB protocol version as exchanged in the 12-byte greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V3_3,
    V3_7,
    V3_8,
}

impl Version {
    fn greeting(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }

    /// Parses a greeting; versions above 3.8 (e.g. Apple's 3.889) speak 3.8.
    pub fn parse(g: &[u8; 12]) -> Option<Version> {
        if &g[..4] != b"RFB " || g[7] != b'.' || g[11] != b'\n' {
            return None;
        }
        let num = |b: &[u8]| -> Option<u32> {
            b.iter()
                .all(u8::is_ascii_digit)
                .then(|| std::str::from_utf8(b).ok()?.parse().ok())?
        };
        let (major, minor) = (num(&g[4..7])?, num(&g[8..11])?);
        match (major, minor) {
            (3, 3..=6) => Some(Version::V3_3),
            (3, 7) => Some(Version::V3_7),
            (3, 8..) | (4.., _) => Some(Version::V3_8),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer does not speak RFB (greeting {0:?})")]
    NotRfb(String),
    #[error("the VNC server refused the connection: {0}")]
    Refused(String),
    #[error("the VNC server does not offer VNC authentication (offers {0:?})")]
    NoVncAuth(Vec<u8>),
    #[error("the VNC server rejected the password{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    AuthFailed(String),
    #[error("the viewer chose security type {0}, not None")]
    ViewerSecurity(u8),
    #[error("the VNC server does not offer TLS with a certificate (X509Vnc): {0}")]
    NoTls(String),
}

async fn read_greeting<S: AsyncRead + Unpin>(s: &mut S) -> Result<Version, HandshakeError> {
    let mut g = [0u8; 12];
    s.read_exact(&mut g).await?;
    Version::parse(&g)
        .ok_or_else(|| HandshakeError::NotRfb(String::from_utf8_lossy(&g).into_owned()))
}

async fn read_reason<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, HandshakeError> {
    let len = s.read_u32().await?;
    let mut buf = vec![0u8; len.min(MAX_REASON) as usize];
    s.read_exact(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Authenticates to a VNC server with `password` (VNC Authentication).
pub async fn authenticate_to_server<S>(
    s: &mut S,
    password: &[u8],
) -> Result<Version, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let version = read_greeting(s).await?;
    s.write_all(version.greeting()).await?;
    if version == Version::V3_3 {
        match s.read_u32().await? {
            0 => return Err(HandshakeError::Refused(read_reason(s).await?)),
            2 => {}
            other => return Err(HandshakeError::NoVncAuth(vec![other as u8])),
        }
    } else {
        let n = s.read_u8().await?;
        if n == 0 {
            return Err(HandshakeError::Refused(read_reason(s).await?));
        }
        let mut types = vec![0u8; n as usize];
        s.read_exact(&mut types).await?;
        if !types.contains(&SECURITY_VNC_AUTH) {
            return Err(HandshakeError::NoVncAuth(types));
        }
        s.write_all(&[SECURITY_VNC_AUTH]).await?;
    }
    vnc_auth(s, password, version).await?;
    Ok(version)
}

/// VNC Authentication: answers the server's challenge with `password` and reads the result.
pub async fn vnc_auth<S>(s: &mut S, password: &[u8], version: Version) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).await?;
    s.write_all(&vnc_auth_response(password, &challenge))
        .await?;
    s.flush().await?;
    match s.read_u32().await? {
        0 => Ok(()),
        _ if version == Version::V3_8 => Err(HandshakeError::AuthFailed(read_reason(s).await?)),
        _ => Err(HandshakeError::AuthFailed(String::new())),
    }
}

/// The plain part of VeNCrypt X509Vnc: RFB 3.8, security type VeNCrypt, version 0.2, sub-type
/// X509Vnc, and the server's go-ahead. TLS starts right after; then [`vnc_auth`] inside it.
/// A server that offers anything else is refused: this leg must be encrypted.
pub async fn start_x509_vnc<S>(s: &mut S) -> Result<Version, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let version = read_greeting(s).await?;
    if version != Version::V3_8 {
        return Err(HandshakeError::NoTls(format!("it speaks {version:?}")));
    }
    s.write_all(version.greeting()).await?;
    let n = s.read_u8().await?;
    if n == 0 {
        return Err(HandshakeError::Refused(read_reason(s).await?));
    }
    let mut types = vec![0u8; n as usize];
    s.read_exact(&mut types).await?;
    if !types.contains(&SECURITY_VENCRYPT) {
        return Err(HandshakeError::NoTls(format!(
            "it offers security types {types:?}"
        )));
    }
    s.write_all(&[SECURITY_VENCRYPT]).await?;
    let (major, minor) = (s.read_u8().await?, s.read_u8().await?);
    if (major, minor) < (0, 2) {
        s.write_all(&[0, 0]).await?;
        return Err(HandshakeError::NoTls(format!("VeNCrypt {major}.{minor}")));
    }
    s.write_all(&[0, 2]).await?;
    s.flush().await?;
    if s.read_u8().await? != 0 {
        return Err(HandshakeError::NoTls("it refused VeNCrypt 0.2".into()));
    }
    let count = s.read_u8().await?;
    let mut subtypes = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        subtypes.push(s.read_u32().await?);
    }
    if !subtypes.contains(&VENCRYPT_X509_VNC) {
        return Err(HandshakeError::NoTls(format!(
            "it offers VeNCrypt {subtypes:?}"
        )));
    }
    s.write_all(&VENCRYPT_X509_VNC.to_be_bytes()).await?;
    s.flush().await?;
    if s.read_u8().await? != 1 {
        return Err(HandshakeError::NoTls("it refused X509Vnc".into()));
    }
    Ok(version)
}

/// Greets a viewer as an RFB 3.8 server offering only security type None.
pub async fn accept_viewer<S>(s: &mut S) -> Result<Version, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(Version::V3_8.greeting()).await?;
    s.flush().await?;
    let version = read_greeting(s).await?;
    if version == Version::V3_3 {
        s.write_u32(u32::from(SECURITY_NONE)).await?;
    } else {
        s.write_all(&[1, SECURITY_NONE]).await?;
        s.flush().await?;
        let chosen = s.read_u8().await?;
        if chosen != SECURITY_NONE {
            return Err(HandshakeError::ViewerSecurity(chosen));
        }
        if version == Version::V3_8 {
            s.write_u32(0).await?;
        }
    }
    s.flush().await?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VNC server speaking 3.8 with VncAuth for `password`, as Xvnc does.
    async fn fake_server<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, password: &[u8]) -> bool {
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut g = [0u8; 12];
        s.read_exact(&mut g).await.unwrap();
        assert_eq!(&g, b"RFB 003.008\n");
        s.write_all(&[1, 2]).await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), 2);
        let challenge = [9u8; 16];
        s.write_all(&challenge).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        let ok = resp == vnc_auth_response(password, &challenge);
        if ok {
            s.write_u32(0).await.unwrap();
        } else {
            s.write_u32(1).await.unwrap();
            s.write_u32(14).await.unwrap();
            s.write_all(b"Authentication").await.unwrap();
        }
        ok
    }

    /// The plain part of a VeNCrypt server offering `types`, then (if X509Vnc was chosen) its
    /// go-ahead; returns the sub-type the client chose.
    async fn fake_vencrypt<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, types: &[u8]) -> u32 {
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut g = [0u8; 12];
        s.read_exact(&mut g).await.unwrap();
        s.write_all(&[types.len() as u8]).await.unwrap();
        s.write_all(types).await.unwrap();
        if s.read_u8().await.unwrap_or(0) != SECURITY_VENCRYPT {
            return 0;
        }
        s.write_all(&[0, 2]).await.unwrap();
        let v = (s.read_u8().await.unwrap(), s.read_u8().await.unwrap());
        assert_eq!(v, (0, 2));
        s.write_all(&[0, 2]).await.unwrap();
        s.write_u32(258).await.unwrap(); // TLSVnc
        s.write_u32(VENCRYPT_X509_VNC).await.unwrap();
        let chosen = s.read_u32().await.unwrap();
        s.write_all(&[1]).await.unwrap();
        chosen
    }

    #[tokio::test]
    async fn x509_vnc_is_chosen_and_anything_less_refused() {
        let (mut a, b) = tokio::io::duplex(1024);
        let server = tokio::spawn(fake_vencrypt(b, &[SECURITY_VENCRYPT]));
        assert_eq!(start_x509_vnc(&mut a).await.unwrap(), Version::V3_8);
        assert_eq!(server.await.unwrap(), VENCRYPT_X509_VNC);
        // A server offering plain VNC Authentication only is not spoken to in clear.
        let (mut a, b) = tokio::io::duplex(1024);
        tokio::spawn(fake_vencrypt(b, &[SECURITY_VNC_AUTH]));
        let e = start_x509_vnc(&mut a).await.unwrap_err();
        assert!(matches!(e, HandshakeError::NoTls(_)), "{e}");
    }

    #[tokio::test]
    async fn the_gateway_authenticates_with_the_right_password() {
        let (mut a, b) = tokio::io::duplex(1024);
        let server = tokio::spawn(fake_server(b, b"secret12"));
        assert_eq!(
            authenticate_to_server(&mut a, b"secret12").await.unwrap(),
            Version::V3_8
        );
        assert!(server.await.unwrap());
    }

    #[tokio::test]
    async fn a_wrong_password_is_reported_with_the_servers_reason() {
        let (mut a, b) = tokio::io::duplex(1024);
        tokio::spawn(fake_server(b, b"secret12"));
        let e = authenticate_to_server(&mut a, b"wrong").await.unwrap_err();
        assert!(
            matches!(e, HandshakeError::AuthFailed(ref r) if r == "Authentication"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_server_without_vnc_auth_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            b.write_all(b"RFB 003.008\n").await.unwrap();
            let mut g = [0u8; 12];
            b.read_exact(&mut g).await.unwrap();
            b.write_all(&[1, 1]).await.unwrap();
            let _ = b.read_u8().await;
        });
        let e = authenticate_to_server(&mut a, b"x").await.unwrap_err();
        assert!(
            matches!(e, HandshakeError::NoVncAuth(ref t) if t == &[1]),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_viewer_is_offered_none_and_told_it_succeeded() {
        let (mut gw, mut viewer) = tokio::io::duplex(1024);
        let v = tokio::spawn(async move {
            let mut g = [0u8; 12];
            viewer.read_exact(&mut g).await.unwrap();
            assert_eq!(&g, b"RFB 003.008\n");
            viewer.write_all(b"RFB 003.008\n").await.unwrap();
            let mut types = [0u8; 2];
            viewer.read_exact(&mut types).await.unwrap();
            assert_eq!(types, [1, 1]);
            viewer.write_all(&[1]).await.unwrap();
            viewer.read_u32().await.unwrap()
        });
        assert_eq!(accept_viewer(&mut gw).await.unwrap(), Version::V3_8);
        assert_eq!(v.await.unwrap(), 0);
    }

    #[test]
    fn greetings_parse() {
        assert_eq!(Version::parse(b"RFB 003.008\n"), Some(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 003.889\n"), Some(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 003.007\n"), Some(Version::V3_7));
        assert_eq!(Version::parse(b"RFB 003.003\n"), Some(Version::V3_3));
        assert_eq!(Version::parse(b"HTTP/1.1 200"), None);
        assert_eq!(Version::parse(b"RFB 00x.008\n"), None);
    }
}
