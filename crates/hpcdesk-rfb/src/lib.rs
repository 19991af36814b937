//! The RFB (VNC) protocol pieces hpcdesk needs.
//!
//! - [`auth`]: VNC Authentication (the DES challenge response) and the obfuscated password
//!   file format TigerVNC's `-PasswordFile` reads (what `vncpasswd -f` writes). Pure.
//! - [`client_messages`]: streaming framing of viewer → server messages, to spot input and
//!   to filter view-only viewers. Pure and fuzzable.
//! - [`handshake`]: the gateway's two handshakes: authenticating to the VNC server with the
//!   session's password, and offering the browser security type None.
//! - [`capture`]: one frame of the screen, as a shared viewer that sends no input
//!   (screenshots), and scaling it down.
#![forbid(unsafe_code)]

pub mod auth;
pub mod capture;
pub mod client_messages;
pub mod handshake;

pub use auth::{PASSWORD_LEN, obfuscated_password_file, password_from_file, vnc_auth_response};
pub use client_messages::{Class, ClientScanner, Encodings, ScanError};
