//! The claims of an SCNet token and the account rules that hang on them (DESIGN §2.2).
//!
//! The real service puts every claim in as a string, `expireTime` included (milliseconds
//! since the epoch). Some issuers write numbers; both are accepted. Signature checking lives
//! in the server; this module only says what the claims mean.

use serde::{Deserialize, Deserializer, Serialize};

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// Platform user name.
    pub user: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub user_id: String,
    /// The Linux account the desktop runs as (validated later into a `ComputeUser`).
    pub compute_user: String,
    #[serde(deserialize_with = "string_or_number")]
    pub cluster_id: String,
    #[serde(deserialize_with = "string_or_number")]
    pub role: String,
    pub account_status: String,
    /// The third-party organisation that called on the user's behalf.
    #[serde(default)]
    pub invoker: String,
    #[serde(default)]
    pub creator: String,
    /// Milliseconds since the Unix epoch, as a decimal string.
    #[serde(deserialize_with = "string_or_number")]
    pub expire_time: String,
    /// hpcdesk's own claim (others ignore it): when this token was issued, in ms. A token
    /// hpcdesk issued before its account's `tokens_valid_after` is void.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "string_or_number"
    )]
    pub issued_at: String,
    /// hpcdesk's own claim: when the login this token descends from (through renewals)
    /// happened, in ms; renewal stops at `auth.max_session_age` after it.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "string_or_number"
    )]
    pub login_time: String,
}

impl Claims {
    /// `expireTime` in milliseconds, if it is a number at all.
    pub fn expire_millis(&self) -> Option<i64> {
        self.expire_time.trim().parse().ok()
    }

    /// `issuedAt` in milliseconds (0 for tokens without it).
    pub fn issued_millis(&self) -> i64 {
        self.issued_at.trim().parse().unwrap_or(0)
    }

    /// `loginTime` in milliseconds, if the token carries it.
    pub fn login_millis(&self) -> Option<i64> {
        self.login_time.trim().parse().ok()
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sn {
        S(String),
        N(i64),
    }
    Ok(match Sn::deserialize(d)? {
        Sn::S(s) => s,
        Sn::N(n) => n.to_string(),
    })
}

/// `accountStatus` of the platform account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Normal,
    Trial,
    /// In arrears: may look at and clean up desktops, not start new ones.
    Owe,
    Disable,
}

/// What a caller wants to do, for the account-status rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateDesktop,
    UseDesktop,
}

impl AccountStatus {
    pub fn parse(s: &str) -> Option<AccountStatus> {
        Some(match s {
            "Normal" => AccountStatus::Normal,
            "Trial" => AccountStatus::Trial,
            "Owe" => AccountStatus::Owe,
            "Disable" => AccountStatus::Disable,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Normal => "Normal",
            AccountStatus::Trial => "Trial",
            AccountStatus::Owe => "Owe",
            AccountStatus::Disable => "Disable",
        }
    }

    pub fn allows(self, action: Action) -> bool {
        match self {
            AccountStatus::Normal | AccountStatus::Trial => true,
            AccountStatus::Owe => action == Action::UseDesktop,
            AccountStatus::Disable => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_token_payload_deserializes() {
        let payload = r#"{"computeUser":"slurmtest","accountStatus":"Trial","creator":"ac","role":"1","expireTime":"1686123346568","clusterId":"11112","invoker":"6048ce7ba15c2af2e8cec12991ec13cf","user":"slurmtest","userId":"11655048541"}"#;
        let c: Claims = serde_json::from_str(payload).unwrap();
        assert_eq!(c.compute_user, "slurmtest");
        assert_eq!(c.expire_millis(), Some(1_686_123_346_568));
        assert_eq!(c.cluster_id, "11112");
    }

    #[test]
    fn numbers_are_accepted_where_strings_are_usual() {
        let payload = r#"{"computeUser":"u","accountStatus":"Normal","role":1,"expireTime":1,"clusterId":11112,"user":"u"}"#;
        let c: Claims = serde_json::from_str(payload).unwrap();
        assert_eq!(c.role, "1");
        assert_eq!(c.user_id, "");
    }

    #[test]
    fn owing_accounts_may_use_but_not_create() {
        assert!(AccountStatus::Owe.allows(Action::UseDesktop));
        assert!(!AccountStatus::Owe.allows(Action::CreateDesktop));
        assert!(!AccountStatus::Disable.allows(Action::UseDesktop));
        assert!(AccountStatus::Trial.allows(Action::CreateDesktop));
        assert_eq!(AccountStatus::parse("disable"), None);
    }
}
