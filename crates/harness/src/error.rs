//! # Errors: why a run could not produce a verdict
//!
//! A run that completes always ends in a verdict (linearizable, not
//! linearizable, unknown); these errors are for runs that could not get
//! that far: a bad configuration, a cluster that never came up, a folder
//! that cannot be written. None of them says anything about the system
//! under test's correctness. Every member process started before the error
//! is killed when the [`crate::Cluster`] holding it drops.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a harness step failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A setting is out of range or unknown (the caller's fault; nothing
    /// was started).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. `creating /tmp/out/n1`.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No free loopback port could be found for a member.
    #[error("no free loopback port after {attempts} attempts")]
    NoFreePort {
        /// Ports tried.
        attempts: usize,
    },
    /// A member's admin endpoint did not answer in time, or the member
    /// exited first (it crashed at start, or its ports were taken); the
    /// last lines of its log say why.
    #[error(
        "member {name} {}; the end of {}:\n{log_tail}",
        match exit {
            Some(status) => format!("exited before it was ready ({status}), after {waited:?}"),
            None => format!("was not ready within {waited:?}"),
        },
        log.display()
    )]
    NotReady {
        /// The member.
        name: String,
        /// How long the harness waited.
        waited: Duration,
        /// How the member's process ended, if it had.
        exit: Option<String>,
        /// The member's log file.
        log: PathBuf,
        /// Its last lines (at most [`crate::cluster::LOG_TAIL_LINES`]).
        log_tail: String,
    },
    /// The cluster elected no leader in time.
    #[error("the cluster elected no leader within {0:?}")]
    NoLeader(Duration),
    /// A member's admin endpoint refused or garbled a request.
    #[error("admin endpoint of {member}: {reason}")]
    Admin {
        /// The member.
        member: String,
        /// What went wrong.
        reason: String,
    },
    /// A client could not be set up (a malformed URL).
    #[error("client: {0}")]
    Client(String),
    /// The history could not be checked (malformed operations: a harness
    /// bug, not a verdict).
    #[error("checking the history: {0}")]
    Check(#[from] concord_check::CheckError),
}

impl HarnessError {
    /// An [`HarnessError::Io`] with its context.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}
