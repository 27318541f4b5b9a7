//! The web config's error type and the helpers that build it, shared by the file's sections
//! (`config` for the top level and headers, `tls` for `tls_server_config`).
//!
//! Owns [`Error`] (every message names the file and, when there is one, the key), [`Ctx`] (the
//! file an `Invalid` is about) and how an `io::Error` is printed (as Go prints it). Does not own
//! any check (see [`crate::config`], [`crate::tls`]).

use std::io;
use std::path::{Path, PathBuf};

/// A web config problem. The message always names the file and, when there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The web config file itself could not be read.
    #[error("cannot read web config file {}: {message}", path.display())]
    Read {
        path: PathBuf,
        message: String,
        #[source]
        source: io::Error,
    },
    /// The YAML is malformed or has unknown or mistyped keys.
    #[error("web config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A value is present but not acceptable (including files it names that cannot be used).
    #[error("web config file {}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Builds `Error::Invalid` for one file.
pub(crate) struct Ctx<'a> {
    pub(crate) path: &'a Path,
}

impl Ctx<'_> {
    pub(crate) fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `io::Error`'s message without the " (os error N)" suffix, like Go prints it.
pub(crate) fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match e.raw_os_error() {
        Some(code) => s
            .strip_suffix(&format!(" (os error {code})"))
            .map(str::to_owned)
            .unwrap_or(s),
        None => s,
    }
}
