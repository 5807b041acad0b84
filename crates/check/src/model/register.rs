//! # The CAS register (etcd's key under Jepsen's `cas-register` workload)
//!
//! One register of `i64`, initially nil. Semantics (Porcupine `etcdModel`):
//! 1. `read` is legal iff it returns the current value (nil included); an
//!    unknown read is always legal.
//! 2. `write(v)` always succeeds and sets the value.
//! 3. `cas(a, b)` sets the value to `b` iff it is `a` (never if nil). An
//!    `applied: true` output is legal only if the value was `a`; an
//!    `applied: false` output (Jepsen's `:fail :cas`) only if it was not.
//!    With an unknown output it applies iff the value is `a`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Model, Step};

/// What a client asks of the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum RegisterInput {
    /// Read the value.
    Read,
    /// Set the value.
    Write {
        /// The new value.
        value: i64,
    },
    /// Set the value to `new` if it is `expected`.
    Cas {
        /// The value the register must hold.
        expected: i64,
        /// The value it then takes.
        new: i64,
    },
}

/// What the register answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum RegisterOutput {
    /// The value read; `None` is nil (never written).
    Read {
        /// The value, or nil.
        value: Option<i64>,
    },
    /// The write took effect.
    Write,
    /// Whether the compare matched and the swap took effect.
    Cas {
        /// `false` is Jepsen's `:fail :cas`: completed, did not apply.
        applied: bool,
    },
}

impl fmt::Display for RegisterInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterInput::Read => f.write_str("read"),
            RegisterInput::Write { value } => write!(f, "write({value})"),
            RegisterInput::Cas { expected, new } => write!(f, "cas({expected}, {new})"),
        }
    }
}

impl fmt::Display for RegisterOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterOutput::Read { value: Some(v) } => write!(f, "{v}"),
            RegisterOutput::Read { value: None } => f.write_str("nil"),
            RegisterOutput::Write => f.write_str("ok"),
            RegisterOutput::Cas { applied: true } => f.write_str("ok"),
            RegisterOutput::Cas { applied: false } => f.write_str("fail"),
        }
    }
}

/// One CAS register of `i64`, initially nil. See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn name(&self) -> String {
        "cas-register".to_owned()
    }

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Step<Option<i64>> {
        match input {
            RegisterInput::Read => match output {
                None => Step::Unchanged,
                Some(RegisterOutput::Read { value }) if value == state => Step::Unchanged,
                Some(_) => Step::Illegal,
            },
            RegisterInput::Write { value } => {
                if *state == Some(*value) {
                    Step::Unchanged
                } else {
                    Step::Changed(Some(*value))
                }
            }
            RegisterInput::Cas { expected, new } => {
                let matches = *state == Some(*expected);
                let applied = match output {
                    None => matches,
                    Some(RegisterOutput::Cas { applied }) if *applied == matches => matches,
                    Some(_) => return Step::Illegal,
                };
                if applied && *state != Some(*new) {
                    Step::Changed(Some(*new))
                } else {
                    Step::Unchanged
                }
            }
        }
    }

    fn describe_state(&self, state: &Option<i64>) -> String {
        state.map_or_else(|| "nil".to_owned(), |v| v.to_string())
    }

    fn fits(&self, input: &RegisterInput, output: &RegisterOutput) -> bool {
        matches!(
            (input, output),
            (RegisterInput::Read, RegisterOutput::Read { .. })
                | (RegisterInput::Write { .. }, RegisterOutput::Write)
                | (RegisterInput::Cas { .. }, RegisterOutput::Cas { .. })
        )
    }

    fn is_pure(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> bool {
        match input {
            RegisterInput::Read => true,
            RegisterInput::Write { .. } => false,
            RegisterInput::Cas { .. } => {
                matches!(output, Some(RegisterOutput::Cas { applied: false }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: RegisterModel = RegisterModel;

    #[test]
    fn read_must_see_the_value() {
        let read = |v| RegisterOutput::Read { value: v };
        assert_eq!(
            M.step(&None, &RegisterInput::Read, Some(&read(None))),
            Step::Unchanged
        );
        assert_eq!(
            M.step(&Some(1), &RegisterInput::Read, Some(&read(None))),
            Step::Illegal
        );
        assert_eq!(
            M.step(&Some(1), &RegisterInput::Read, Some(&read(Some(1)))),
            Step::Unchanged
        );
        assert_eq!(
            M.step(&Some(1), &RegisterInput::Read, None),
            Step::Unchanged
        );
    }

    #[test]
    fn cas_on_nil_never_applies() {
        let cas = RegisterInput::Cas {
            expected: 0,
            new: 1,
        };
        let ok = RegisterOutput::Cas { applied: true };
        let fail = RegisterOutput::Cas { applied: false };
        assert_eq!(M.step(&None, &cas, Some(&ok)), Step::Illegal);
        assert_eq!(M.step(&None, &cas, Some(&fail)), Step::Unchanged);
        assert_eq!(M.step(&None, &cas, None), Step::Unchanged);
        assert_eq!(M.step(&Some(0), &cas, Some(&ok)), Step::Changed(Some(1)));
        assert_eq!(M.step(&Some(0), &cas, Some(&fail)), Step::Illegal);
        assert_eq!(M.step(&Some(0), &cas, None), Step::Changed(Some(1)));
    }

    #[test]
    fn unknown_outputs_are_never_illegal() {
        let inputs = [
            RegisterInput::Read,
            RegisterInput::Write { value: 2 },
            RegisterInput::Cas {
                expected: 2,
                new: 3,
            },
        ];
        for state in [None, Some(2), Some(3)] {
            for input in &inputs {
                assert_ne!(M.step(&state, input, None), Step::Illegal);
            }
        }
    }
}
