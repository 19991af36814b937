//! Domain types and rules of hpcdesk, free of I/O.
//!
//! - [`api`]: the SCNet response envelope and the error codes ([`ApiCode`]).
//! - [`ids`]: identifiers parsed once at the boundary: [`SessionId`], [`ComputeUser`],
//!   [`NodeName`], [`DisplayNumber`].
//! - [`state`]: the session lifecycle ([`SessionState`]) and its legal transitions.
//! - [`claims`]: the claims of an SCNet token and the account rules attached to them.
//! - [`wire`]: JSON shapes shared by the server and the CLI client.
//! - [`duration`]: [`HumanDuration`], spans of time as the configuration writes them.
//! - [`histogram`]: latency histograms for `/metrics`.
//! - [`seal`]: AES-GCM sealing of VNC passwords, at rest and inside launch URLs (`mm`).
#![forbid(unsafe_code)]

pub mod api;
pub mod claims;
pub mod duration;
pub mod histogram;
pub mod ids;
pub mod seal;
pub mod state;
pub mod wire;

pub use api::{ApiCode, Envelope, ErrorSource};
pub use claims::{AccountStatus, Claims};
pub use duration::HumanDuration;
pub use ids::{ComputeUser, DisplayNumber, IdError, NodeName, SessionId};
pub use state::{SessionState, status_reason};
