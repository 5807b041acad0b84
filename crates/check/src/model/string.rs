//! # The string register with get / put / append
//!
//! One string, initially `""` (Porcupine's `kvModel` for one key; the
//! 6.824 kvraft clerk's interface). Semantics:
//! 1. `get` is legal iff it returns the current string.
//! 2. `put(v)` replaces the string with `v`.
//! 3. `append(v)` concatenates `v` to the string.
//!
//! The state is a [`Text`]: a persistent string whose appends share the
//! prefix with the state they came from. The search keeps every distinct
//! state it meets (often millions of long strings differing only in the
//! order of their last appends), so an append costs one small node instead
//! of a copy of the whole string, and hashing a state costs O(1).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Model, Step};

/// What a client asks of the string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum StringInput {
    /// Read the string.
    Get,
    /// Replace the string.
    Put {
        /// The new string.
        value: String,
    },
    /// Concatenate to the string.
    Append {
        /// The suffix.
        value: String,
    },
}

/// What the store answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum StringOutput {
    /// The string read.
    Get {
        /// Its value.
        value: String,
    },
    /// The put took effect.
    Put,
    /// The append took effect.
    Append,
}

impl fmt::Display for StringInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringInput::Get => f.write_str("get"),
            StringInput::Put { value } => write!(f, "put({value:?})"),
            StringInput::Append { value } => write!(f, "append({value:?})"),
        }
    }
}

impl fmt::Display for StringOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringOutput::Get { value } => write!(f, "{value:?}"),
            StringOutput::Put | StringOutput::Append => f.write_str("ok"),
        }
    }
}

/// Multiplier of the content hash: the 64-bit FNV prime (odd, so the map
/// `h -> h * B` is a bijection and no byte is lost).
const TEXT_HASH_BASE: u64 = 0x0000_0100_0000_01b3;

/// Extends the content hash of a string by `bytes`. `+ 1` so that NUL bytes
/// still change the hash (a leading NUL would otherwise hash like nothing).
fn extend_hash(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        h.wrapping_mul(TEXT_HASH_BASE)
            .wrapping_add(u64::from(b) + 1)
    })
}

/// An immutable string built by puts and appends, sharing prefixes.
///
/// Invariants:
/// 1. `len` and `hash` are the byte length and the content hash
///    (`extend_hash` from 0) of the whole content, however it is split
///    into chunks, so equal contents have equal `(len, hash)` and `Hash`
///    agrees with `Eq`.
/// 2. No chunk is empty.
#[derive(Clone, Default)]
pub struct Text {
    last: Option<Arc<Chunk>>,
    len: usize,
    hash: u64,
}

/// One appended piece and the text before it.
struct Chunk {
    prev: Option<Arc<Chunk>>,
    text: Box<str>,
}

impl Drop for Chunk {
    /// Unlinks the chain iteratively: the default recursive drop would
    /// overflow the stack on a key with a few hundred thousand appends.
    fn drop(&mut self) {
        let mut prev = self.prev.take();
        while let Some(chunk) = prev {
            match Arc::try_unwrap(chunk) {
                Ok(mut owned) => prev = owned.prev.take(),
                // Shared with another state: that one will drop it.
                Err(_) => break,
            }
        }
    }
}

impl Text {
    /// The text `s`.
    pub fn new(s: &str) -> Self {
        Self::default().append(s)
    }

    /// This text followed by `s`; shares this text's chunks.
    pub fn append(&self, s: &str) -> Self {
        if s.is_empty() {
            return self.clone();
        }
        Self {
            last: Some(Arc::new(Chunk {
                prev: self.last.clone(),
                text: s.into(),
            })),
            len: self.len + s.len(),
            hash: extend_hash(self.hash, s.as_bytes()),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The content's bytes, last to first.
    fn rev_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        std::iter::successors(self.last.as_deref(), |c| c.prev.as_deref())
            .flat_map(|c| c.text.bytes().rev())
    }

    /// Whether the content is `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        self.len == s.len() && self.rev_bytes().eq(s.bytes().rev())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len || self.hash != other.hash {
            return false;
        }
        match (&self.last, &other.last) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.rev_bytes().eq(other.rev_bytes()),
        }
    }
}

impl Eq for Text {}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Invariant 1: (len, hash) depend on the content only.
        state.write_usize(self.len);
        state.write_u64(self.hash);
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chunks: Vec<&str> = std::iter::successors(self.last.as_deref(), |c| c.prev.as_deref())
            .map(|c| &*c.text)
            .collect();
        for chunk in chunks.iter().rev() {
            f.write_str(chunk)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// One string with get / put / append, initially `""`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StringRegisterModel;

impl Model for StringRegisterModel {
    type State = Text;
    type Input = StringInput;
    type Output = StringOutput;

    fn name(&self) -> String {
        "get-put-append".to_owned()
    }

    fn init(&self) -> Text {
        Text::default()
    }

    fn step(&self, state: &Text, input: &StringInput, output: Option<&StringOutput>) -> Step<Text> {
        match input {
            StringInput::Get => match output {
                None => Step::Unchanged,
                Some(StringOutput::Get { value }) if state.eq_str(value) => Step::Unchanged,
                Some(_) => Step::Illegal,
            },
            StringInput::Put { value } => {
                if state.eq_str(value) {
                    Step::Unchanged
                } else {
                    Step::Changed(Text::new(value))
                }
            }
            StringInput::Append { value } => {
                if value.is_empty() {
                    Step::Unchanged
                } else {
                    Step::Changed(state.append(value))
                }
            }
        }
    }

    fn state_heap_bytes(&self, state: &Text) -> usize {
        // A new state adds at most its last chunk (the rest is shared):
        // the chunk, the two reference counts, and the text.
        state.last.as_ref().map_or(0, |c| {
            size_of::<Chunk>() + 2 * size_of::<usize>() + c.text.len()
        })
    }

    fn describe_state(&self, state: &Text) -> String {
        format!("{state:?}")
    }

    fn fits(&self, input: &StringInput, output: &StringOutput) -> bool {
        matches!(
            (input, output),
            (StringInput::Get, StringOutput::Get { .. })
                | (StringInput::Put { .. }, StringOutput::Put)
                | (StringInput::Append { .. }, StringOutput::Append)
        )
    }

    fn is_pure(&self, input: &StringInput, _output: Option<&StringOutput>) -> bool {
        matches!(input, StringInput::Get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equality_ignores_chunking() {
        let a = Text::new("x 1 y").append("x 2 y");
        let b = Text::new("x 1 yx 2 y");
        let c = Text::default().append("x 1").append(" yx").append(" 2 y");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), "x 1 yx 2 y");
        assert!(a.eq_str("x 1 yx 2 y"));
        assert!(!a.eq_str("x 2 yx 1 y"));
        assert_ne!(a, Text::new("x 2 y").append("x 1 y"));
        let state = std::collections::hash_map::RandomState::new();
        assert_eq!(state.hash_one(&a), state.hash_one(&c));
    }

    #[test]
    fn empty_is_canonical() {
        assert_eq!(Text::new(""), Text::default());
        assert!(Text::default().eq_str(""));
        assert_ne!(Text::new("\0"), Text::default());
    }

    #[test]
    fn long_chains_drop_without_recursion() {
        let mut t = Text::default();
        for _ in 0..300_000 {
            t = t.append("ab");
        }
        assert_eq!(t.len(), 600_000);
        drop(t);
    }

    #[test]
    fn model_steps() {
        let m = StringRegisterModel;
        let s = m.init();
        let Step::Changed(s) = m.step(&s, &StringInput::Append { value: "a".into() }, None) else {
            panic!("append changes the state");
        };
        let get = |v: &str| StringOutput::Get { value: v.into() };
        assert_eq!(
            m.step(&s, &StringInput::Get, Some(&get("a"))),
            Step::Unchanged
        );
        assert_eq!(m.step(&s, &StringInput::Get, Some(&get(""))), Step::Illegal);
        assert_eq!(
            m.step(&s, &StringInput::Put { value: "a".into() }, None),
            Step::Unchanged
        );
    }
}
