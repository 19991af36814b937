//! Identifiers parsed once at the boundary.
//!
//! A session id is `{node}--{computeUser}--SIG--{display}` (e.g. `gv101--test_1215--SIG--4`),
//! the shape of the SCNet service. No part may contain `--`, so the id splits unambiguously.
//! Code inside hpcdesk never re-validates these types: holding one is proof it is well-formed.

use std::fmt::{self, Write};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} contains a character that is not allowed: {found:?}")]
    BadChar { what: &'static str, found: char },
    #[error("{what} must not contain \"--\"")]
    DoubleDash { what: &'static str },
    #[error("{what} must start with a letter, a digit or '_'")]
    BadStart { what: &'static str },
    #[error("session id must look like node--user--SIG--display")]
    SessionIdShape,
    #[error("display number must be an integer between 0 and {max}")]
    Display { max: u32 },
}

fn check_token(
    s: &str,
    what: &'static str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > max {
        return Err(IdError::TooLong { what, max });
    }
    if let Some(found) = s.chars().find(|c| !allowed(*c)) {
        return Err(IdError::BadChar { what, found });
    }
    if s.contains("--") {
        return Err(IdError::DoubleDash { what });
    }
    let first = s.chars().next().unwrap_or('-');
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Err(IdError::BadStart { what });
    }
    Ok(())
}

/// The Linux account a desktop runs as (the token's `computeUser`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComputeUser(String);

impl ComputeUser {
    pub const MAX_LEN: usize = 32;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_token(s, "computeUser", Self::MAX_LEN, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
        })?;
        Ok(ComputeUser(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a node that runs desktops (`hostName` in the API).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub const MAX_LEN: usize = 253;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_token(s, "node name", Self::MAX_LEN, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
        })?;
        Ok(NodeName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An X display number (`:4`). The VNC port is usually `5900 + display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct DisplayNumber(u32);

impl TryFrom<u32> for DisplayNumber {
    type Error = IdError;
    fn try_from(n: u32) -> Result<Self, IdError> {
        DisplayNumber::new(n)
    }
}

impl From<DisplayNumber> for u32 {
    fn from(d: DisplayNumber) -> u32 {
        d.0
    }
}

impl DisplayNumber {
    /// Keeps `5900 + display` a valid TCP port.
    pub const MAX: u32 = 65535 - 5900;

    pub fn new(n: u32) -> Result<Self, IdError> {
        if n > Self::MAX {
            return Err(IdError::Display { max: Self::MAX });
        }
        Ok(DisplayNumber(n))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        // Digits only: "+4", " 4" or "04x" are not display numbers.
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Display { max: Self::MAX });
        }
        let n: u32 = s.parse().map_err(|_| IdError::Display { max: Self::MAX })?;
        Self::new(n)
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The conventional RFB port of this display.
    pub fn default_port(self) -> u16 {
        // In range by construction (MAX keeps it under 65536).
        (5900 + self.0) as u16
    }
}

impl fmt::Display for DisplayNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `{node}--{computeUser}--SIG--{display}`: names one desktop on one node. It keeps its text,
/// written once when it is made: a request names its session in a lookup, a log field and an
/// audit line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    node: NodeName,
    user: ComputeUser,
    display: DisplayNumber,
    text: String,
}

impl SessionId {
    const MARK: &'static str = "SIG";
    /// Longest accepted id; anything longer is refused before splitting.
    pub const MAX_LEN: usize = NodeName::MAX_LEN + ComputeUser::MAX_LEN + 16;

    pub fn new(node: NodeName, user: ComputeUser, display: DisplayNumber) -> Self {
        // Sized once: three separators, the mark and at most five digits.
        let mut text = String::with_capacity(node.0.len() + user.0.len() + 14);
        for part in [&node.0, "--", &user.0, "--", Self::MARK, "--"] {
            text.push_str(part);
        }
        write!(text, "{}", display.0).expect("writing to a String cannot fail");
        SessionId {
            node,
            user,
            display,
            text,
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() > Self::MAX_LEN {
            return Err(IdError::SessionIdShape);
        }
        let parts: Vec<&str> = s.split("--").collect();
        let [node, user, mark, display] = parts.as_slice() else {
            return Err(IdError::SessionIdShape);
        };
        if *mark != Self::MARK {
            return Err(IdError::SessionIdShape);
        }
        Ok(SessionId::new(
            NodeName::parse(node)?,
            ComputeUser::parse(user)?,
            DisplayNumber::parse(display)?,
        ))
    }

    /// The id as text, in its canonical form (the display number without leading zeros).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn node(&self) -> &NodeName {
        &self.node
    }

    pub fn user(&self) -> &ComputeUser {
        &self.user
    }

    pub fn display(&self) -> DisplayNumber {
        self.display
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

impl fmt::Display for ComputeUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_serde!(SessionId);
string_serde!(ComputeUser);
string_serde!(NodeName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_session_id_round_trips() {
        let id = SessionId::parse("gv101--test_1215--SIG--4").unwrap();
        assert_eq!(id.node().as_str(), "gv101");
        assert_eq!(id.user().as_str(), "test_1215");
        assert_eq!(id.display().get(), 4);
        assert_eq!(id.to_string(), "gv101--test_1215--SIG--4");
        assert_eq!(id.as_str(), "gv101--test_1215--SIG--4");
    }

    #[test]
    fn a_session_id_keeps_its_canonical_text() {
        let padded = SessionId::parse("gv101--test_1215--SIG--0042").unwrap();
        assert_eq!(padded.as_str(), "gv101--test_1215--SIG--42");
        assert_eq!(
            padded,
            SessionId::parse("gv101--test_1215--SIG--42").unwrap()
        );
        let made = SessionId::new(
            NodeName::parse("n1").unwrap(),
            ComputeUser::parse("alice").unwrap(),
            DisplayNumber::new(DisplayNumber::MAX).unwrap(),
        );
        assert_eq!(
            made.as_str(),
            format!("n1--alice--SIG--{}", DisplayNumber::MAX)
        );
        assert_eq!(made.to_string(), made.as_str());
        assert_eq!(SessionId::parse(made.as_str()).unwrap(), made);
    }

    #[test]
    fn malformed_session_ids_are_refused() {
        for bad in [
            "",
            "gv101",
            "gv101--test--4",
            "gv101--test--SIG--",
            "gv101--test--SIG--x",
            "gv101--test--SIG--+4",
            "gv101--test--sig--4",
            "gv101--test--SIG--4--5",
            "gv101----SIG--4",
            "gv 101--test--SIG--4",
            "gv101--te/st--SIG--4",
            "gv101--test--SIG--99999999",
            "gv101---test--SIG--4",
            "-gv101--test--SIG--4",
            "../etc--passwd--SIG--1",
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}--u--SIG--1", "n".repeat(400));
        assert!(SessionId::parse(&long).is_err());
    }

    #[test]
    fn compute_user_refuses_names_that_could_escape() {
        assert!(ComputeUser::parse("alice").is_ok());
        assert!(ComputeUser::parse("a.b-c_d").is_ok());
        for bad in ["", "-rf", "a b", "a;b", "../x", "a--b", &"x".repeat(33)] {
            assert!(
                ComputeUser::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn display_numbers_keep_the_port_valid() {
        assert_eq!(DisplayNumber::new(4).unwrap().default_port(), 5904);
        assert_eq!(
            DisplayNumber::new(DisplayNumber::MAX)
                .unwrap()
                .default_port(),
            65535
        );
        assert!(DisplayNumber::new(DisplayNumber::MAX + 1).is_err());
    }

    #[test]
    fn display_numbers_deserialise_through_their_check() {
        let d: DisplayNumber = serde_json::from_str("4").unwrap();
        assert_eq!(d.get(), 4);
        assert_eq!(serde_json::to_string(&d).unwrap(), "4");
        let too_big = (DisplayNumber::MAX + 1).to_string();
        assert!(serde_json::from_str::<DisplayNumber>(&too_big).is_err());
    }
}
