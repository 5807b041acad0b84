//! # Sequential models: what a correct store would have answered
//!
//! A [`Model`] is the sequential specification of an object: an initial
//! state and a step function that says whether an operation (input and
//! observed output) is legal in a state, and what the state becomes. The
//! checker searches for an order of the history's operations in which every
//! step is legal.
//!
//! Models here:
//! - [`RegisterModel`]: one register of `i64` with read / write / cas,
//!   initially nil (Porcupine's `etcdModel`; Jepsen's etcd tests).
//! - [`StringRegisterModel`]: one string with get / put / append, initially
//!   `""` (Porcupine's `kvModel`, per key).
//! - [`MutexModel`]: a lock whose acquisitions return fencing tokens.
//! - [`Keyed`]: a map from string keys to independent copies of any of the
//!   above, which partitions by key (P-compositionality: a history is
//!   linearizable iff each key's sub-history is; Horn & Kroening, "Faster
//!   linearizability checking via P-compositionality", FORTE 2015).
//!
//! Contract every model keeps (the checker and the explainer rely on it):
//! 1. `step` is a pure function of its arguments: no clocks, no randomness,
//!    no interior mutability.
//! 2. With an unknown output (`None`, an `Info` operation) `step` never
//!    returns [`Step::Illegal`]: the operation either took effect ("apply if
//!    possible") or it did not. Placing it last is then always legal, which
//!    is what lets an `Info` operation stand for "never happened" too.
//! 3. `is_pure(input, output) == true` means `step` returns `Unchanged` or
//!    `Illegal` in every state: dropping such an operation can only remove
//!    constraints. The explainer drops only these.
//! 4. Equal states are `==` (canonical form), so the memo recognises them;
//!    a state that is semantically equal but not `==` only costs speed.

mod mutex;
mod register;
mod string;

use std::fmt::{self, Debug, Display};
use std::hash::Hash;
use std::mem::size_of;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use mutex::{MutexInput, MutexModel, MutexOutput, MutexState};
pub use register::{RegisterInput, RegisterModel, RegisterOutput};
pub use string::{StringInput, StringOutput, StringRegisterModel, Text};

/// The result of applying one operation to a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<S> {
    /// The output cannot have been produced in this state.
    Illegal,
    /// Legal, and the state is unchanged (a read, a failed cas). Lets the
    /// search skip cloning and interning the state.
    Unchanged,
    /// Legal, and this is the new state.
    Changed(S),
}

/// A sequential specification. See the module docs for the contract.
pub trait Model: Sync {
    /// The object's state. `Hash + Eq` so the search can memoize it.
    type State: Clone + Eq + Hash + Send + Sync + Debug;
    /// What a client asks.
    type Input: Send + Sync + Debug + Display;
    /// What a client is told.
    type Output: Send + Sync + Debug + Display;

    /// A short name for reports, e.g. `"cas-register"`.
    fn name(&self) -> String;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` observed with `output` (`None`: unknown) to `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Step<Self::State>;

    /// Heap bytes `state` owns beyond its inline size (a string's buffer),
    /// charged against the checker's memory budget. Bytes shared with
    /// other states may be counted for each; over-counting only makes the
    /// budget conservative.
    fn state_heap_bytes(&self, _state: &Self::State) -> usize {
        0
    }

    /// The state as a reader would write it, for explanations.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }

    /// Whether `output` has the shape of `input`'s output (invariant 3 of
    /// [`crate::history`]). A history that breaks it is malformed, not
    /// non-linearizable.
    fn fits(&self, _input: &Self::Input, _output: &Self::Output) -> bool {
        true
    }

    /// Whether the operation never changes the state (contract 3).
    fn is_pure(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// The key whose sub-history this operation belongs to; `None` puts
    /// every operation in one partition. Operations on different keys must
    /// be independent: the model's state must be a product over keys.
    fn partition_key<'a>(&self, _input: &'a Self::Input) -> Option<&'a str> {
        None
    }
}

/// The models a history file can name (JSON-lines header, CLI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelKind {
    /// One [`RegisterModel`] (Jepsen etcd logs).
    #[serde(rename = "cas-register", alias = "etcd-cas-register")]
    CasRegister,
    /// [`KvCasRegisterModel`]: read/write/cas registers per key.
    #[serde(rename = "kv-cas-register")]
    KvCasRegister,
    /// [`KvModel`]: get/put/append strings per key (Porcupine kv logs).
    #[serde(rename = "kv-get-put-append")]
    KvGetPutAppend,
    /// One [`MutexModel`].
    #[serde(rename = "mutex")]
    Mutex,
    /// [`Keyed`]`<`[`MutexModel`]`>`: independent named locks.
    #[serde(rename = "kv-mutex")]
    KvMutex,
}

impl ModelKind {
    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::CasRegister => "cas-register",
            ModelKind::KvCasRegister => "kv-cas-register",
            ModelKind::KvGetPutAppend => "kv-get-put-append",
            ModelKind::Mutex => "mutex",
            ModelKind::KvMutex => "kv-mutex",
        }
    }
}

impl Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read/write/cas registers of `i64`, one per key: Concord's own register
/// workload over several keys.
pub type KvCasRegisterModel = Keyed<RegisterModel>;

/// Strings with get/put/append, one per key, initially `""`.
pub type KvModel = Keyed<StringRegisterModel>;

/// An input addressed to one key of a [`Keyed`] model. In JSON the key sits
/// beside the inner input's fields: `{"key":"k","f":"read"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyedInput<I> {
    /// Which object.
    pub key: String,
    /// What to do to it.
    #[serde(flatten)]
    pub op: I,
}

impl<I> KeyedInput<I> {
    /// `op` on `key`.
    pub fn new(key: impl Into<String>, op: I) -> Self {
        Self {
            key: key.into(),
            op,
        }
    }
}

impl<I: Display> Display for KeyedInput<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.key, self.op)
    }
}

/// A map of independent objects, each following `M`, partitioned by key.
///
/// State invariants (canonical form, contract 4):
/// 1. A key whose object is in `M`'s initial state is absent, so an empty
///    state is the initial state whatever keys the history names.
/// 2. Entries are sorted by key, with no key twice.
#[derive(Clone, Debug)]
pub struct Keyed<M: Model> {
    inner: M,
    inner_init: M::State,
}

impl<M: Model> Keyed<M> {
    /// Wraps `inner`.
    pub fn new(inner: M) -> Self {
        let inner_init = inner.init();
        Self { inner, inner_init }
    }

    /// The per-key model.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: Model + Default> Default for Keyed<M> {
    fn default() -> Self {
        Self::new(M::default())
    }
}

impl<M: Model> Model for Keyed<M> {
    /// The keys whose object differs from the initial state, sorted by key.
    /// A sorted `Vec` rather than a `BTreeMap`: a partitioned check has one
    /// key per state, and a map's smallest node holds room for eleven.
    /// `Arc<str>` keys, so cloning a state shares them.
    type State = Vec<(Arc<str>, M::State)>;
    type Input = KeyedInput<M::Input>;
    type Output = M::Output;

    fn name(&self) -> String {
        format!("kv-{}", self.inner.name())
    }

    fn init(&self) -> Self::State {
        Vec::new()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Step<Self::State> {
        let key = input.key.as_str();
        let found = state.binary_search_by(|(k, _)| k.as_ref().cmp(key));
        let current = match found {
            Ok(at) => &state[at].1,
            Err(_) => &self.inner_init,
        };
        match self.inner.step(current, &input.op, output) {
            Step::Illegal => Step::Illegal,
            Step::Unchanged => Step::Unchanged,
            Step::Changed(next) => {
                let mut map = state.clone();
                match (found, next == self.inner_init) {
                    (Ok(at), true) => {
                        map.remove(at);
                    }
                    (Ok(at), false) => map[at].1 = next,
                    (Err(_), true) => {}
                    (Err(at), false) => map.insert(at, (Arc::from(key), next)),
                }
                Step::Changed(map)
            }
        }
    }

    fn state_heap_bytes(&self, state: &Self::State) -> usize {
        state.capacity() * size_of::<(Arc<str>, M::State)>()
            + state
                .iter()
                .map(|(_, s)| self.inner.state_heap_bytes(s))
                .sum::<usize>()
    }

    fn describe_state(&self, state: &Self::State) -> String {
        if state.is_empty() {
            return format!("every key {}", self.inner.describe_state(&self.inner_init));
        }
        let pairs: Vec<String> = state
            .iter()
            .map(|(k, v)| format!("{k:?}: {}", self.inner.describe_state(v)))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }

    fn fits(&self, input: &Self::Input, output: &Self::Output) -> bool {
        self.inner.fits(&input.op, output)
    }

    fn is_pure(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        self.inner.is_pure(&input.op, output)
    }

    fn partition_key<'a>(&self, input: &'a Self::Input) -> Option<&'a str> {
        Some(input.key.as_str())
    }
}
