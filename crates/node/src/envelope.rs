//! The payload of a normal Raft entry: who proposed it (so the proposing
//! member can answer its client when the entry applies) and what it does.
//!
//! Layout: `version: u8 | origin member: u64 LE | sequence: u64 LE | kind: u8
//! | body`. Invariants:
//! 1. `(origin, sequence)` is unique per proposal: the sequence starts from a
//!    value derived from the start time and only grows, so a restarted member
//!    never answers a new client with an old entry's result.
//! 2. Decoding never panics; the leader decodes forwarded proposals before
//!    proposing them so junk from a peer never enters the log.

use crate::alarm::AlarmChange;
use bytes::{BufMut, Bytes, BytesMut};
use concord_mvcc::Command;

/// Current envelope version.
const ENVELOPE_V1: u8 = 1;
const HEADER_BYTES: usize = 1 + 8 + 8 + 1;

/// What an entry asks the state machine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A KV/lease command for the MVCC store.
    Kv(Command),
    /// A member publishes its name and client URLs (etcd's "publish").
    MemberAttributes {
        /// Member id.
        id: u64,
        /// Human-readable name.
        name: String,
        /// Client URLs it serves.
        client_urls: Vec<String>,
    },
    /// Raise or clear an alarm (see [`crate::alarm`]).
    Alarm(AlarmChange),
}

/// A decoded entry payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Member that proposed the entry.
    pub origin: u64,
    /// The proposer's sequence number.
    pub sequence: u64,
    /// What to do.
    pub payload: Payload,
}

/// Why an entry payload is not an envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Too short or unknown version/kind.
    #[error("malformed entry envelope: {0}")]
    Malformed(&'static str),
    /// The command inside could not be decoded.
    #[error("malformed command: {0}")]
    Command(#[from] concord_mvcc::DecodeError),
    /// The member attributes could not be decoded.
    #[error("malformed member attributes: {0}")]
    Attributes(#[from] serde_json::Error),
    /// The alarm change could not be decoded.
    #[error("malformed alarm change")]
    Alarm,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AttributesWire {
    id: u64,
    name: String,
    client_urls: Vec<String>,
}

impl Envelope {
    /// Encodes the envelope.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(ENVELOPE_V1);
        out.put_u64_le(self.origin);
        out.put_u64_le(self.sequence);
        match &self.payload {
            Payload::Kv(command) => {
                out.put_u8(1);
                out.put_slice(&command.encode());
            }
            Payload::MemberAttributes {
                id,
                name,
                client_urls,
            } => {
                out.put_u8(2);
                let wire = AttributesWire {
                    id: *id,
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                };
                out.put_slice(&serde_json::to_vec(&wire).expect("plain struct serializes"));
            }
            Payload::Alarm(change) => {
                out.put_u8(3);
                out.put_slice(&change.encode());
            }
        }
        out.freeze()
    }

    /// Decodes an entry payload.
    pub fn decode(data: &[u8]) -> Result<Envelope, EnvelopeError> {
        if data.len() < HEADER_BYTES {
            return Err(EnvelopeError::Malformed("too short"));
        }
        if data[0] != ENVELOPE_V1 {
            return Err(EnvelopeError::Malformed("unknown version"));
        }
        let origin = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
        let sequence = u64::from_le_bytes(data[9..17].try_into().expect("8 bytes"));
        let body = &data[HEADER_BYTES..];
        let payload = match data[17] {
            1 => Payload::Kv(Command::decode(body)?),
            2 => {
                let wire: AttributesWire = serde_json::from_slice(body)?;
                Payload::MemberAttributes {
                    id: wire.id,
                    name: wire.name,
                    client_urls: wire.client_urls,
                }
            }
            3 => Payload::Alarm(AlarmChange::decode(body).ok_or(EnvelopeError::Alarm)?),
            _ => return Err(EnvelopeError::Malformed("unknown kind")),
        };
        Ok(Envelope {
            origin,
            sequence,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let e = Envelope {
            origin: 7,
            sequence: 9,
            payload: Payload::MemberAttributes {
                id: 7,
                name: "a".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
            },
        };
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let kv = Envelope {
            origin: 1,
            sequence: 2,
            payload: Payload::Kv(Command::Noop),
        };
        assert_eq!(Envelope::decode(&kv.encode()).unwrap(), kv);
        assert!(Envelope::decode(b"").is_err());
        assert!(Envelope::decode(&[9u8; 30]).is_err());
        let mut bad = kv.encode().to_vec();
        bad[17] = 5;
        assert!(Envelope::decode(&bad).is_err());
        let alarm = Envelope {
            origin: 3,
            sequence: 4,
            payload: Payload::Alarm(crate::alarm::AlarmChange {
                action: crate::alarm::AlarmAction::Activate,
                alarm: crate::alarm::Alarm {
                    member_id: 3,
                    kind: crate::alarm::AlarmKind::Nospace,
                },
            }),
        };
        assert_eq!(Envelope::decode(&alarm.encode()).unwrap(), alarm);
        let mut bad = alarm.encode().to_vec();
        bad.pop();
        assert!(Envelope::decode(&bad).is_err());
    }
}
