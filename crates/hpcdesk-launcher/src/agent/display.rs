//! Picking a free X display on this node.
//!
//! A display is free when no live X server holds its lock, nothing listens on its socket,
//! and its RFB port can be bound. Locks and sockets left by a killed Xvnc (their pid is dead)
//! count as free and are removed if we may. The check is advisory: two agents may still pick
//! the same number at once, and the loser's Xvnc then fails to take the lock; the caller
//! moves on to the next number in that case.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;

use super::procs;
use crate::x11;

/// Whether `display` (with RFB port `port`) looks free; removes stale leftovers.
pub fn is_free(display: u32, port: u16, listen: Option<IpAddr>) -> bool {
    let lock = x11::lock_path(display);
    match x11::lock_holder(display) {
        x11::Lock::None => {}
        x11::Lock::Held(pid) if procs::alive(pid) => return false,
        // Stale (its server is gone) or junk: Xvnc would refuse it too. If we cannot remove
        // it, Xvnc could not either.
        _ => {
            if fs::remove_file(&lock).is_err() {
                return false;
            }
        }
    }
    let socket = x11::socket_path(display);
    if socket.exists() {
        if UnixStream::connect(&socket).is_ok() {
            return false;
        }
        // An X server locks its display before it makes its socket: one that did so since
        // the look above may not be listening yet, and its socket is not stale.
        if !matches!(x11::lock_holder(display), x11::Lock::None) {
            return false;
        }
        if fs::remove_file(&socket).is_err() {
            return false;
        }
    }
    let addr = listen.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    TcpListener::bind((addr, port)).is_ok()
}

/// Whether an Xvnc start failure means "this display was taken", so the next one may work.
pub fn taken_by_someone_else(xvnc_log: &str) -> bool {
    const SIGNS: [&str; 5] = [
        "already active",
        "Address already in use",
        "server lock",
        "Could not create lock file",
        "Cannot establish any listening sockets",
    ];
    SIGNS.iter().any(|s| xvnc_log.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_is_not_free() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // A display number far from anything real, so only the port decides.
        assert!(!is_free(60_000, port, None));
    }

    #[test]
    fn lock_contention_is_recognised() {
        assert!(taken_by_someone_else(
            "Fatal server error:\n(EE) Server is already active for display 4"
        ));
        assert!(!taken_by_someone_else("(EE) Unrecognized option: -bogus"));
    }
}
