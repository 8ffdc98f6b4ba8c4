//! The library's error type: every fallible public function returns [`Error`], whose messages
//! name the file, the expected and the found value, and what to do.

use std::path::PathBuf;

/// Errors of the `robustness` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data set could not be read.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A checkpoint is missing, incomplete or unreadable.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint was loaded into a model of another architecture or shape.
    #[error("checkpoint {} holds a {found} model, but a {expected} model was requested", path.display())]
    ArchMismatch {
        /// The checkpoint path.
        path: PathBuf,
        /// What the caller asked for.
        expected: String,
        /// What the checkpoint holds.
        found: String,
    },
    /// Training produced a NaN or infinite loss.
    #[error(
        "non-finite loss ({loss}) at epoch {epoch}, batch {batch}: training stopped; the last good checkpoint is kept (try a lower --lr)"
    )]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// 0-based batch index within the epoch.
        batch: usize,
        /// The loss value.
        loss: f32,
    },
    /// Two shapes that must agree do not.
    #[error("shape mismatch in {context}: expected {expected:?}, found {found:?}")]
    Shape {
        /// Where.
        context: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Found shape.
        found: Vec<usize>,
    },
    /// A constructed data set (or one of its shards) is missing, incomplete or inconsistent.
    #[error("constructed data set {}: {message}", path.display())]
    Constructed {
        /// The data set folder or file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The requested compute device is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
}

impl Error {
    /// An I/O error with its path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
