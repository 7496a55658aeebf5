//! Console accounts: adding, listing, changing passwords and disabling, for `xiaoer agent` and
//! the console alike; password hashing with argon2id and the checks at login.
//!
//! Passwords are hashed with the `argon2` crate's defaults (argon2id, 19 MiB, 2 passes — the
//! OWASP minimum) and stored as PHC strings, so the parameters can be raised later without
//! breaking existing hashes.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::model::{Agent, Role};
use crate::store::{AccountOp, Store, StoreError, now_ms};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest name accepted (it is shown in transcripts and logs).
pub const MAX_NAME_CHARS: usize = 32;

/// Why an account command failed. Messages are for the person at the shell or the console.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("agent names are 1 to {MAX_NAME_CHARS} letters, digits, '-', '_' or '.', not {0:?}")]
    BadName(String),
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks an agent name: it becomes part of `agent:<name>` in transcripts.
///
/// # Errors
///
/// [`AccountError::BadName`].
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadName(name.to_owned()))
    }
}

/// Hashes a password for storage.
///
/// # Errors
///
/// [`AccountError::ShortPassword`], or a hashing failure.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::ShortPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches the stored hash. A hash that cannot be read matches nothing.
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the account does not exist, so a login for an unknown name
/// takes as long as one with a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"not a password anyone has", &salt)
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

/// Adds an account.
///
/// # Errors
///
/// A bad name or password, a name already taken, a failed write.
pub async fn add(
    store: &Store,
    name: &str,
    role: Role,
    shops: &[String],
    password: &str,
) -> Result<Agent, AccountError> {
    check_name(name)?;
    let agent = Agent {
        name: name.to_owned(),
        role,
        shops: shops.to_vec(),
        disabled: false,
        created_ms: now_ms(),
    };
    let password_hash = hash_password(password)?;
    store
        .account(AccountOp::AddAgent {
            agent: agent.clone(),
            password_hash,
        })
        .await?;
    Ok(agent)
}

/// Sets a new password; the account's sessions end.
///
/// # Errors
///
/// A short password, no such account, a failed write.
pub async fn set_password(store: &Store, name: &str, password: &str) -> Result<(), AccountError> {
    let password_hash = hash_password(password)?;
    store
        .account(AccountOp::SetPassword {
            name: name.to_owned(),
            password_hash,
        })
        .await?;
    Ok(())
}

/// Disables (or enables again) an account; disabling ends its sessions at once.
///
/// # Errors
///
/// No such account, a failed write.
pub async fn set_disabled(store: &Store, name: &str, disabled: bool) -> Result<(), AccountError> {
    store
        .account(AccountOp::SetDisabled {
            name: name.to_owned(),
            disabled,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsE", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(!verify_password("anything", decoy_hash()));
        assert!(matches!(
            hash_password("short"),
            Err(AccountError::ShortPassword)
        ));
    }

    #[test]
    fn names_are_checked() {
        for good in ["alice", "小王", "night-shift_2", "a.b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "a:b", "<script>", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
