//! [`StoreUrl`]: the `store.url` setting parsed once, into the backend it names. Everything
//! that depends on which database is used (opening it, whether it is locked to one process,
//! whether several instances can share it, how it is shown in logs) asks this type, never
//! the text.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::StoreError;

/// Where the state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite database: `sqlite://path` (the file, created if missing) or
    /// `sqlite::memory:` (tests). `file` is `None` in memory.
    Sqlite { url: String, file: Option<PathBuf> },
    /// A PostgreSQL database: `postgres://user:password@host:port/db?…`. Several hpcdesk
    /// instances may share it.
    Postgres { url: String },
}

impl StoreUrl {
    /// The default store: a SQLite file at `path`.
    pub fn sqlite_file(path: &Path) -> Self {
        StoreUrl::Sqlite {
            url: format!("sqlite://{}", path.display()),
            file: Some(path.to_owned()),
        }
    }

    /// Whether several hpcdesk instances may use this store at once (PostgreSQL); a SQLite
    /// file is locked to the one `serve` that keeps its sessions in memory.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreUrl::Postgres { .. })
    }

    /// The SQLite file, if this is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            StoreUrl::Sqlite { file, .. } => file.as_deref(),
            StoreUrl::Postgres { .. } => None,
        }
    }

    /// The URL as the driver takes it (it may hold a password: never log it).
    pub(crate) fn as_str(&self) -> &str {
        match self {
            StoreUrl::Sqlite { url, .. } | StoreUrl::Postgres { url } => url,
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            let in_memory =
                path.is_empty() || path.contains(":memory:") || url.contains("mode=memory");
            return Ok(StoreUrl::Sqlite {
                url: url.to_owned(),
                file: (!in_memory).then(|| PathBuf::from(path)),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres {
                url: url.to_owned(),
            });
        }
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        Err(StoreError::UnsupportedUrl(scheme.to_owned()))
    }
}

/// Shown with its password replaced: `postgres://user:<redacted>@host/db`.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_password(self.as_str()))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:<redacted>@host/db`; other text as is.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((creds, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_file() {
        let u: StoreUrl = "sqlite://./data/hpcdesk.db".parse().unwrap();
        assert_eq!(u.file(), Some(Path::new("./data/hpcdesk.db")));
        assert!(!u.is_shared());
        let u: StoreUrl = "sqlite:///var/lib/hpcdesk/h.db?mode=rwc".parse().unwrap();
        assert_eq!(u.file(), Some(Path::new("/var/lib/hpcdesk/h.db")));
        for memory in [
            "sqlite::memory:",
            "sqlite://file:x?mode=memory&cache=shared",
        ] {
            let u: StoreUrl = memory.parse().unwrap();
            assert!(matches!(u, StoreUrl::Sqlite { file: None, .. }), "{memory}");
        }
        let u: StoreUrl = "postgresql://hd:pw@db/hd".parse().unwrap();
        assert!(u.is_shared());
        assert_eq!(u.file(), None);
        assert_eq!(u.to_string(), "postgresql://hd:<redacted>@db/hd");
        assert!(!format!("{u:?}").contains("pw"));
        let e = "mysql://u:secret@h/d".parse::<StoreUrl>().unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("mysql"), "{e}");
    }

    #[test]
    fn the_default_is_a_sqlite_file() {
        let u = StoreUrl::sqlite_file(Path::new("/d/hpcdesk.db"));
        assert_eq!(u.as_str(), "sqlite:///d/hpcdesk.db");
        assert_eq!(u, "sqlite:///d/hpcdesk.db".parse().unwrap());
    }
}
