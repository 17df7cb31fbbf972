//! The one error type of `patchgen`. Every variant names the file and, where
//! there is one, the symbol concerned; [`Error::status`] gives its exit status.

use crate::Status;
use std::path::PathBuf;

/// Errors of reading, diffing and emitting objects and patches.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The metadata section of a patch file is unreadable.
    #[error("{path}: {source}")]
    Format {
        /// The patch file.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::format::FormatError,
    },
}

impl Error {
    /// The exit status this error maps to.
    pub fn status(&self) -> Status {
        match self {
            Error::Io { .. } | Error::Format { .. } => Status::Error,
        }
    }
}
