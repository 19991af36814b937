//! Just enough X11 for the agent: write an Xauthority file with a fresh MIT-MAGIC-COOKIE-1,
//! and prove a display is usable by completing the X11 connection set-up with that cookie.
//!
//! Without a cookie, any local account could connect to a user's desktop display and read
//! its keystrokes; Xvnc is therefore always started with `-auth <file>`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const COOKIE_NAME: &[u8] = b"MIT-MAGIC-COOKIE-1";
const FAMILY_LOCAL: u16 = 256;
const FAMILY_WILD: u16 = 65535;

/// A 128-bit MIT-MAGIC-COOKIE-1.
#[derive(Clone)]
pub struct Cookie([u8; 16]);

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

impl Cookie {
    pub fn generate() -> Cookie {
        let mut c = [0u8; 16];
        rand::fill(&mut c);
        Cookie(c)
    }
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let len = u16::try_from(field.len()).expect("Xauthority fields are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// The bytes of an Xauthority file granting `cookie` for `display` on `hostname`
/// (one FamilyLocal entry for clients on this host, one FamilyWild entry as a fallback).
pub fn xauthority(hostname: &str, display: u32, cookie: &Cookie) -> Vec<u8> {
    let number = display.to_string();
    let mut out = Vec::new();
    for (family, address) in [(FAMILY_LOCAL, hostname.as_bytes()), (FAMILY_WILD, &[][..])] {
        out.extend_from_slice(&family.to_be_bytes());
        push_field(&mut out, address);
        push_field(&mut out, number.as_bytes());
        push_field(&mut out, COOKIE_NAME);
        push_field(&mut out, &cookie.0);
    }
    out
}

/// Where the X server of `display` listens.
pub fn socket_path(display: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X11-unix/X{display}"))
}

/// Where the X server of `display` keeps its lock file (holding its pid).
pub fn lock_path(display: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X{display}-lock"))
}

/// What a display's lock file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// No lock file.
    None,
    /// The pid of the X server holding it.
    Held(i32),
    /// Something else is there. Any account may create files in /tmp: a link, a FIFO or junk
    /// is read through the capped reader and never trusted.
    Junk,
}

impl Lock {
    pub fn pid(self) -> Option<i32> {
        match self {
            Lock::Held(p) => Some(p),
            _ => None,
        }
    }
}

/// Reads a display's lock file.
pub fn lock_holder(display: u32) -> Lock {
    match crate::capped::small_file(&lock_path(display), 64) {
        Ok(bytes) => match String::from_utf8_lossy(&bytes).trim().parse::<i32>() {
            Ok(pid) => Lock::Held(pid),
            Err(_) => Lock::Junk,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lock::None,
        Err(_) => Lock::Junk,
    }
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// The X11 connection set-up request (little-endian) authenticating with `cookie`.
fn setup_request(cookie: &Cookie) -> Vec<u8> {
    let mut req = vec![b'l', 0];
    req.extend_from_slice(&11u16.to_le_bytes());
    req.extend_from_slice(&0u16.to_le_bytes());
    req.extend_from_slice(&(COOKIE_NAME.len() as u16).to_le_bytes());
    req.extend_from_slice(&(cookie.0.len() as u16).to_le_bytes());
    req.extend_from_slice(&[0, 0]);
    req.extend_from_slice(COOKIE_NAME);
    req.extend(std::iter::repeat_n(0, pad4(COOKIE_NAME.len())));
    req.extend_from_slice(&cookie.0);
    req.extend(std::iter::repeat_n(0, pad4(cookie.0.len())));
    req
}

/// What the X server answered to a connection set-up.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupOutcome {
    Accepted,
    Refused(String),
}

/// Connects to the display's socket and performs the connection set-up with `cookie`.
pub fn probe_display(
    socket: &Path,
    cookie: &Cookie,
    timeout: Duration,
) -> std::io::Result<SetupOutcome> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&setup_request(cookie))?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    match head[0] {
        1 => Ok(SetupOutcome::Accepted),
        _ => {
            // Failed (0) or Authenticate (2): a reason of head[1] bytes follows the header.
            let mut reason = vec![0u8; usize::from(head[1])];
            let _ = s.read_exact(&mut reason);
            Ok(SetupOutcome::Refused(
                String::from_utf8_lossy(&reason).trim().to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xauthority_has_a_local_and_a_wild_entry() {
        let c = Cookie([7; 16]);
        let bytes = xauthority("vm", 4, &c);
        // family(2) + "vm"(2+2) + "4"(2+1) + name(2+18) + cookie(2+16) = 47, then the wild one.
        assert_eq!(bytes.len(), 47 + 45);
        assert_eq!(&bytes[0..2], &256u16.to_be_bytes());
        assert_eq!(&bytes[4..6], b"vm");
        assert_eq!(&bytes[47..49], &65535u16.to_be_bytes());
        assert!(bytes.windows(16).any(|w| w == [7; 16]));
    }

    #[test]
    fn setup_request_is_padded_to_four_bytes() {
        let r = setup_request(&Cookie([1; 16]));
        assert_eq!(r.len(), 12 + 20 + 16);
        assert_eq!(r.len() % 4, 0);
    }

    #[test]
    fn cookie_debug_is_redacted() {
        assert_eq!(format!("{:?}", Cookie::generate()), "Cookie(<redacted>)");
    }
}
