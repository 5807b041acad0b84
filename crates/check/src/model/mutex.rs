//! # A mutex with fencing tokens (etcd's Lock service, Concord's recipe)
//!
//! `acquire` blocks until the lock is free, then returns a fencing token (in
//! Concord, the owner key's revision); `release(token)` gives it back. The
//! holder is identified by its token, so the model needs no process ids.
//! A history is linearizable under this model iff, in some order consistent
//! with real time:
//! 1. no two acquisitions hold the lock at once (an `acquire` is legal only
//!    when the lock is free);
//! 2. tokens strictly increase with acquisition order (each token is at
//!    least `next_token_min`, which becomes `token + 1`);
//! 3. a successful `release(t)` happens only while `t` holds the lock.
//!
//! Unknown outcomes (contract 2 of [`crate::model`]): an `acquire` that may
//! have happened takes the lock if it is free, with a token we never learn
//! ([`MutexState::held`] is `Some(None)`), which still uses up one token
//! value; nobody can release it, as its client never learned the token. An
//! unknown `release(t)` frees the lock iff `t` holds it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Model, Step};

/// What a client asks of the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum MutexInput {
    /// Wait for the lock and take it.
    Acquire,
    /// Give back the lock held under `token`.
    Release {
        /// The fencing token `acquire` returned.
        token: u64,
    },
}

/// What the lock service answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum MutexOutput {
    /// The lock is held, under this fencing token.
    Acquire {
        /// The fencing token.
        token: u64,
    },
    /// The lock was released.
    Release,
}

impl fmt::Display for MutexInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MutexInput::Acquire => f.write_str("acquire"),
            MutexInput::Release { token } => write!(f, "release({token})"),
        }
    }
}

impl fmt::Display for MutexOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MutexOutput::Acquire { token } => write!(f, "token {token}"),
            MutexOutput::Release => f.write_str("ok"),
        }
    }
}

/// The lock's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MutexState {
    /// `None`: free. `Some(Some(t))`: held under token `t`. `Some(None)`:
    /// held by an acquisition whose outcome (and token) nobody learned.
    pub held: Option<Option<u64>>,
    /// The smallest token the next acquisition may return.
    pub next_token_min: u64,
}

/// A mutex with fencing tokens. See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct MutexModel;

impl Model for MutexModel {
    type State = MutexState;
    type Input = MutexInput;
    type Output = MutexOutput;

    fn name(&self) -> String {
        "mutex".to_owned()
    }

    fn init(&self) -> MutexState {
        MutexState::default()
    }

    fn step(
        &self,
        state: &MutexState,
        input: &MutexInput,
        output: Option<&MutexOutput>,
    ) -> Step<MutexState> {
        match (input, output) {
            (MutexInput::Acquire, Some(MutexOutput::Acquire { token })) => {
                if state.held.is_some() || *token < state.next_token_min {
                    return Step::Illegal;
                }
                match token.checked_add(1) {
                    Some(next_token_min) => Step::Changed(MutexState {
                        held: Some(Some(*token)),
                        next_token_min,
                    }),
                    // u64::MAX cannot be followed by a larger token; rather
                    // than wrap, call the history illegal (no real store
                    // hands out that revision).
                    None => Step::Illegal,
                }
            }
            (MutexInput::Acquire, None) => {
                if state.held.is_some() {
                    // It is still waiting, or it gave up: no effect here.
                    return Step::Unchanged;
                }
                Step::Changed(MutexState {
                    held: Some(None),
                    next_token_min: state.next_token_min.saturating_add(1),
                })
            }
            (MutexInput::Release { token }, Some(MutexOutput::Release)) => {
                if state.held == Some(Some(*token)) {
                    Step::Changed(MutexState {
                        held: None,
                        ..*state
                    })
                } else {
                    Step::Illegal
                }
            }
            (MutexInput::Release { token }, None) => {
                if state.held == Some(Some(*token)) {
                    Step::Changed(MutexState {
                        held: None,
                        ..*state
                    })
                } else {
                    Step::Unchanged
                }
            }
            // Shape mismatches are rejected by `fits` before the search.
            (MutexInput::Acquire, Some(MutexOutput::Release))
            | (MutexInput::Release { .. }, Some(MutexOutput::Acquire { .. })) => Step::Illegal,
        }
    }

    fn describe_state(&self, state: &MutexState) -> String {
        match state.held {
            None => format!("free (next token >= {})", state.next_token_min),
            Some(Some(token)) => format!("held under token {token}"),
            Some(None) => "held (token never learned)".to_owned(),
        }
    }

    fn fits(&self, input: &MutexInput, output: &MutexOutput) -> bool {
        matches!(
            (input, output),
            (MutexInput::Acquire, MutexOutput::Acquire { .. })
                | (MutexInput::Release { .. }, MutexOutput::Release)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_needs_a_free_lock_and_a_larger_token() {
        let m = MutexModel;
        let s0 = m.init();
        let Step::Changed(s1) = m.step(
            &s0,
            &MutexInput::Acquire,
            Some(&MutexOutput::Acquire { token: 5 }),
        ) else {
            panic!("first acquire must be legal");
        };
        assert_eq!(
            m.step(
                &s1,
                &MutexInput::Acquire,
                Some(&MutexOutput::Acquire { token: 6 })
            ),
            Step::Illegal
        );
        let Step::Changed(s2) = m.step(
            &s1,
            &MutexInput::Release { token: 5 },
            Some(&MutexOutput::Release),
        ) else {
            panic!("holder's release must be legal");
        };
        assert_eq!(
            m.step(
                &s2,
                &MutexInput::Acquire,
                Some(&MutexOutput::Acquire { token: 5 })
            ),
            Step::Illegal,
            "tokens must strictly increase"
        );
    }
}
