//! The RFB (VNC) protocol pieces hpcdesk needs, pure and without I/O.
//!
//! - [`auth`]: VNC Authentication (the DES challenge response) and the obfuscated password
//!   file format TigerVNC's `-PasswordFile` reads (what `vncpasswd -f` writes).
#![forbid(unsafe_code)]

pub mod auth;

pub use auth::{PASSWORD_LEN, obfuscated_password_file, vnc_auth_response};
