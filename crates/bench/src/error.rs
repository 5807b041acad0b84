//! Why a benchmark could not run. Failures of individual requests are not
//! errors of the run: they are counted by kind in the report.

/// A benchmark that could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range or inconsistent with another; nothing ran.
    #[error("invalid option: {0}")]
    Options(String),
    /// An endpoint could not be reached before any load was sent.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The transport's explanation.
        reason: String,
    },
    /// Preparing the workload failed (creating a watch, granting a lease);
    /// the server may lack the service. Nothing was measured.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The async runtime could not be built.
    #[error("runtime: {0}")]
    Runtime(String),
    /// A local file operation failed (fsync probe).
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}
