//! Which Linux accounts may run desktops: [`Policy`], the one check every launcher makes
//! through [`Launcher::admit`](crate::Launcher::admit) before anything is written or run
//! (`auth.min_uid`, `auth.deny_users`, `auth.allow_groups`).
//!
//! A token names the account (`computeUser`), and whoever can mint or obtain a token for a
//! system account must not get a process running as it. The account is resolved on this
//! host (which must see the cluster's accounts, as through SSSD or LDAP); uid 0 and the
//! kernel's overflow uid 65534 (`nobody`) are refused whatever the configuration says.

use hpcdesk_core::ComputeUser;

/// The account rules, from `auth.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub min_uid: u32,
    pub deny_users: Vec<String>,
    pub allow_groups: Option<Vec<String>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_uid: 1000,
            deny_users: vec!["root".into()],
            allow_groups: None,
        }
    }
}

/// The overflow uid (`nobody`): the kernel's "unknown user", never a person.
const OVERFLOW_UID: u32 = 65534;

/// Why an account may not run desktops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The account is not known on this host (815008: the launcher cannot serve it).
    #[error("there is no account {0:?} on this host")]
    Unknown(String),
    /// The account exists but the policy refuses it (10008).
    #[error("the account {user:?} may not run desktops here: {why}")]
    Refused { user: String, why: String },
}

impl Policy {
    /// Checks `user`. Blocking (NSS may ask a directory server).
    pub fn check(&self, user: &ComputeUser) -> Result<(), Refusal> {
        check(self, user)
    }
}

impl From<Refusal> for crate::LaunchError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unknown(_) => crate::LaunchError::Desktop(r.to_string()),
            Refusal::Refused { .. } => crate::LaunchError::Refused(r.to_string()),
        }
    }
}

fn check(cfg: &Policy, user: &ComputeUser) -> Result<(), Refusal> {
    let name = user.as_str();
    let refused = |why: String| Refusal::Refused {
        user: name.to_owned(),
        why,
    };
    let account = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| Refusal::Unknown(name.to_owned()))?;
    let uid = account.uid.as_raw();
    if uid == 0 {
        return Err(refused("it is the superuser".into()));
    }
    if uid == OVERFLOW_UID {
        return Err(refused("it is the overflow account (nobody)".into()));
    }
    if uid < cfg.min_uid {
        return Err(refused(format!(
            "its uid {uid} is below auth.min_uid ({})",
            cfg.min_uid
        )));
    }
    if cfg.deny_users.iter().any(|d| d == name) {
        return Err(refused("it is listed in auth.deny_users".into()));
    }
    if let Some(allowed) = &cfg.allow_groups {
        let cname = std::ffi::CString::new(name).map_err(|_| Refusal::Unknown(name.to_owned()))?;
        let gids = nix::unistd::getgrouplist(&cname, account.gid).unwrap_or_default();
        let member = gids.iter().any(|gid| {
            nix::unistd::Group::from_gid(*gid)
                .ok()
                .flatten()
                .is_some_and(|g| allowed.contains(&g.name))
        });
        if !member {
            return Err(refused(format!(
                "it is in none of auth.allow_groups ({})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Policy {
        Policy::default()
    }

    fn user(name: &str) -> ComputeUser {
        ComputeUser::parse(name).unwrap()
    }

    #[test]
    fn system_accounts_and_the_superuser_are_refused() {
        for name in ["root", "daemon", "nobody"] {
            assert!(
                matches!(check(&cfg(), &user(name)), Err(Refusal::Refused { .. })),
                "{name}"
            );
        }
        let mut open = cfg();
        open.min_uid = 0;
        open.deny_users.clear();
        // Even with every setting open, uid 0 and nobody stay refused.
        assert!(check(&open, &user("root")).is_err());
        assert!(check(&open, &user("nobody")).is_err());
        assert!(
            check(&open, &user("daemon")).is_ok(),
            "uid 1 with min_uid 0"
        );
    }

    #[test]
    fn unknown_accounts_are_told_apart() {
        assert_eq!(
            check(&cfg(), &user("no_such_account_zz")),
            Err(Refusal::Unknown("no_such_account_zz".into()))
        );
    }

    #[test]
    fn allow_groups_limits_to_members() {
        let mut c = cfg();
        c.min_uid = 0;
        c.deny_users.clear();
        c.allow_groups = Some(vec!["no-such-group-hpcdesk".into()]);
        let err = check(&c, &user("daemon")).unwrap_err();
        assert!(err.to_string().contains("allow_groups"), "{err}");
        // daemon's primary group is daemon.
        c.allow_groups = Some(vec!["daemon".into()]);
        assert_eq!(check(&c, &user("daemon")), Ok(()));
    }
}
