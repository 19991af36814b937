//! Password logins through PAM (`auth.password_backend = "pam"`): the site's own accounts
//! (LDAP, AD, FreeIPA behind SSSD, or local ones) checked by the PAM service `auth.pam_service`
//! (`/etc/pam.d/hpcdesk`), with the account-management step, so expired and locked accounts
//! are refused as the site's other services refuse them.
//!
//! PAM is blocking and its modules may talk to the network: every check runs on a blocking
//! thread, bounded in time. The password is handed to PAM's conversation only and never
//! logged.

use std::time::Duration;

/// Longest a PAM check may take (a directory server that does not answer).
const TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `service` accepts `user` with `password` (authentication and account
/// management). Any failure, time-out included, is a refusal; why is logged (never the
/// password).
pub async fn accepts(service: &str, user: &str, password: &str) -> bool {
    let (service, user_owned, password) =
        (service.to_owned(), user.to_owned(), password.to_owned());
    let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut auth = pam::Authenticator::with_password(&service)
            .map_err(|e| format!("cannot start PAM service {service}: {e}"))?;
        auth.get_handler().set_credentials(&user_owned, &password);
        auth.authenticate().map_err(|e| e.to_string())
    });
    match tokio::time::timeout(TIMEOUT, check).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(why))) => {
            tracing::info!(user, reason = %why, "PAM refused the login");
            false
        }
        Ok(Err(e)) => {
            tracing::error!(user, error = %e, "the PAM check failed");
            false
        }
        Err(_) => {
            tracing::warn!(user, "the PAM check did not finish within {TIMEOUT:?}");
            false
        }
    }
}
