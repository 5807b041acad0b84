//! # Checking a history file: the entry point for the CLI
//!
//! `concord check-history --format jepsen-etcd|porcupine-kv|jsonl FILE`
//! calls [`check_file`] and prints [`CheckReport::verdict`]
//! (`linearizable`, `not linearizable`, `unknown`), exiting with
//! [`Verdict::exit_code`](crate::Verdict::exit_code) (0, 1, 2).
//!
//! Each format implies its model: `jepsen-etcd` is one CAS register,
//! `porcupine-kv` a get/put/append string per key; a `jsonl` file names its
//! model in its header.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::checker::{check, CheckOptions, CheckReport};
use crate::error::CheckError;
use crate::model::{Keyed, KvCasRegisterModel, KvModel, ModelKind, MutexModel, RegisterModel};
use crate::parse::{parse_jepsen_etcd, parse_jsonl, parse_jsonl_header, parse_porcupine_kv};

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Jepsen etcd logs (`INFO jepsen.util - ...`), one CAS register.
    JepsenEtcd,
    /// Porcupine key-value logs (Clojure maps), get/put/append per key.
    PorcupineKv,
    /// Concord's JSON lines; the header names the model.
    Jsonl,
}

impl Format {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::JepsenEtcd => "jepsen-etcd",
            Format::PorcupineKv => "porcupine-kv",
            Format::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = CheckError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jepsen-etcd" => Ok(Format::JepsenEtcd),
            "porcupine-kv" => Ok(Format::PorcupineKv),
            "jsonl" => Ok(Format::Jsonl),
            other => Err(CheckError::UnknownFormat(other.to_owned())),
        }
    }
}

/// Reads, parses and checks `path` within `budget` (plus the default time
/// for an explanation if it is not linearizable).
pub fn check_file(
    format: Format,
    path: &Path,
    budget: Duration,
) -> Result<CheckReport, CheckError> {
    check_file_with(format, path, &CheckOptions::with_budget(budget))
}

/// [`check_file`] with every option.
pub fn check_file_with(
    format: Format,
    path: &Path,
    options: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Io {
        path: path.to_owned(),
        source,
    })?;
    check_text(format, &text, options).map_err(|err| match err {
        CheckError::Parse { path: None, source } => CheckError::Parse {
            path: Some(path.to_owned()),
            source,
        },
        other => other,
    })
}

/// Parses and checks a history held in memory.
pub fn check_text(
    format: Format,
    text: &str,
    options: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    match format {
        Format::JepsenEtcd => check(&RegisterModel, &parse_jepsen_etcd(text)?, options),
        Format::PorcupineKv => check(&KvModel::default(), &parse_porcupine_kv(text)?, options),
        Format::Jsonl => match parse_jsonl_header(text)?.model {
            ModelKind::CasRegister => check(&RegisterModel, &parse_jsonl(text)?.1, options),
            ModelKind::KvCasRegister => check(
                &KvCasRegisterModel::default(),
                &parse_jsonl(text)?.1,
                options,
            ),
            ModelKind::KvGetPutAppend => check(&KvModel::default(), &parse_jsonl(text)?.1, options),
            ModelKind::Mutex => check(&MutexModel, &parse_jsonl(text)?.1, options),
            ModelKind::KvMutex => check(&Keyed::new(MutexModel), &parse_jsonl(text)?.1, options),
        },
    }
}
