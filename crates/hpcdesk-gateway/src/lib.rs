//! hpcdesk's WebSocket ↔ VNC gateway (DESIGN §3).
//!
//! - [`ws`]: server-side WebSocket framing without I/O.
#![forbid(unsafe_code)]

pub mod ws;
