//! The umbrella error type. Every public call in floyd fails with [`Error`], whose
//! [`Error::kind`] is stable: the Python and Node bindings map it to exception classes and
//! `code` strings. Areas keep their detail in the message; the kind is the contract.

use std::fmt;
use std::path::PathBuf;

/// The stable classification of an [`Error`]; bindings map it one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// get/update/delete of a missing object.
    NotFound,
    /// create of an existing key.
    AlreadyExists,
    /// An update or delete whose `resourceVersion` precondition is stale.
    Conflict,
    /// An object or argument that fails validation; the error names the field.
    Invalid,
    /// A watch from a version older than compaction kept.
    Expired,
    /// Use of a queue, informer, store or control plane after shutdown / close.
    ShutDown,
    /// A log segment or snapshot that fails its checks where it cannot be cut off.
    Corrupt,
    /// The operating system refused.
    Io,
    /// A bug in floyd (a caught panic, a broken invariant).
    Internal,
}

impl ErrorKind {
    /// The name used by the bindings (`'NotFound'`, `'Conflict'`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Invalid => "Invalid",
            ErrorKind::Expired => "Expired",
            ErrorKind::ShutDown => "ShutDown",
            ErrorKind::Corrupt => "Corrupt",
            ErrorKind::Io => "Io",
            ErrorKind::Internal => "Internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every failure floyd reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// `field` is a dotted path (`metadata.name`, `spec.replicas`) or an argument name.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("expired: {0}")]
    Expired(String),
    #[error("shut down: {0}")]
    ShutDown(String),
    #[error("corrupt {}{}: {reason}", file.display(), offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    Corrupt {
        file: PathBuf,
        offset: Option<u64>,
        reason: String,
    },
    #[error("io error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Invalid { .. } => ErrorKind::Invalid,
            Error::Expired(_) => ErrorKind::Expired,
            Error::ShutDown(_) => ErrorKind::ShutDown,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Io { .. } => ErrorKind::Io,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An `Invalid` error naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An `Io` error with what floyd was doing when the OS refused.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A `Corrupt` error for `file`.
    pub fn corrupt(
        file: impl Into<PathBuf>,
        offset: Option<u64>,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// The field an `Invalid` error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// `Result` with floyd's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Converts a duration in float seconds coming from a user (bindings, config) into a
/// [`std::time::Duration`], rejecting NaN, infinities, negatives and overflow as `Invalid`
/// instead of panicking as `Duration::from_secs_f64` would.
pub fn duration_from_secs(field: &str, secs: f64) -> Result<std::time::Duration> {
    if secs.is_nan() {
        return Err(Error::invalid(
            field,
            "must be a number of seconds, got NaN",
        ));
    }
    if secs < 0.0 {
        return Err(Error::invalid(
            field,
            format!("must not be negative, got {secs}"),
        ));
    }
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| Error::invalid(field, format!("{secs} seconds is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_users_are_validated_not_panicking() {
        assert_eq!(
            duration_from_secs("t", 1.5).unwrap(),
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            duration_from_secs("t", 0.0).unwrap(),
            std::time::Duration::ZERO
        );
        for bad in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            let e = duration_from_secs("timeout", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{bad}");
            assert_eq!(e.field(), Some("timeout"));
        }
    }

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(Error::NotFound("x".into()).kind().as_str(), "NotFound");
        assert_eq!(
            Error::corrupt("/a", Some(8), "crc").to_string(),
            "corrupt /a at offset 8: crc"
        );
    }
}
