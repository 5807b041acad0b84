//! # Porcupine key-value logs (`--format porcupine-kv`)
//!
//! One Clojure (EDN) map per line:
//!
//! ```text
//! {:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}
//! {:process 0, :type :ok, :f :append, :key "0", :value "x 0 0 y"}
//! {:process 0, :type :invoke, :f :get, :key "5", :value nil}
//! {:process 0, :type :ok, :f :get, :key "5", :value ""}
//! ```
//!
//! Model: [`KvModel`](crate::KvModel) (a string per key, initially `""`).
//! Rules:
//! 1. `:f` is `:get`, `:put` or `:append`; `:type` is `:invoke`, `:ok`,
//!    `:fail` or `:info` (the upstream logs only use the first two).
//! 2. An invocation's `:value` is ignored for `:get` and must be a string
//!    for `:put` / `:append`; an `:ok :get` carries the string read.
//! 3. A completion must name the invocation's key, and an `:ok :put` or
//!    `:ok :append` its value.
//!
//! Only the EDN this format uses is accepted: keywords, strings (with `\"`,
//! `\\`, `\n`, `\t`, `\r` escapes), integers and `nil`; commas are
//! whitespace.

use crate::error::{ParseError, ParseErrorKind};
use crate::history::{Operation, Outcome};
use crate::model::{KeyedInput, StringInput, StringOutput};

use super::{line_number, Pairer};

/// Parses a Porcupine key-value log. Blank lines are skipped.
pub fn parse_porcupine_kv(
    text: &str,
) -> Result<Vec<Operation<KeyedInput<StringInput>, StringOutput>>, ParseError> {
    let mut pairer = Pairer::new();
    for (index, raw) in text.lines().enumerate() {
        let line = line_number(index);
        if raw.trim().is_empty() {
            continue;
        }
        let fields = parse_map(raw).map_err(|kind| ParseError { line, kind })?;
        apply(&mut pairer, line, &fields)?;
    }
    Ok(pairer.finish())
}

/// An EDN value of the kinds this format uses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Keyword(String),
    Str(String),
    Int(i64),
    Nil,
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Keyword(k) => format!(":{k}"),
            Value::Str(s) => format!("{s:?}"),
            Value::Int(i) => i.to_string(),
            Value::Nil => "nil".to_owned(),
        }
    }
}

struct Fields(Vec<(String, Value)>);

impl Fields {
    fn get(&self, name: &'static str) -> Result<&Value, ParseErrorKind> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or(ParseErrorKind::MissingField(name))
    }

    fn keyword(&self, name: &'static str) -> Result<&str, ParseErrorKind> {
        match self.get(name)? {
            Value::Keyword(k) => Ok(k),
            other => Err(ParseErrorKind::BadValue {
                f: format!(":{name}"),
                value: other.describe(),
            }),
        }
    }
}

fn apply(
    pairer: &mut Pairer<KeyedInput<StringInput>, StringOutput>,
    line: usize,
    fields: &Fields,
) -> Result<(), ParseError> {
    let err = |kind| ParseError { line, kind };
    let process = match fields.get("process").map_err(err)? {
        Value::Int(p) if *p >= 0 => *p as u64,
        other => return Err(err(ParseErrorKind::BadProcess(other.describe()))),
    };
    let kind = fields.keyword("type").map_err(err)?;
    let f = fields.keyword("f").map_err(err)?;
    if !matches!(f, "get" | "put" | "append") {
        return Err(err(ParseErrorKind::UnknownFunction(format!(":{f}"))));
    }
    let key = match fields.get("key").map_err(err)? {
        Value::Str(k) => k.clone(),
        other => {
            return Err(err(ParseErrorKind::BadValue {
                f: ":key".to_owned(),
                value: other.describe(),
            }))
        }
    };
    let value = fields.get("value").map_err(err)?;
    let bad_value = || {
        err(ParseErrorKind::BadValue {
            f: format!(":{f}"),
            value: value.describe(),
        })
    };
    let text_value = || match value {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(bad_value()),
    };
    match kind {
        "invoke" => {
            let op = match f {
                "get" => StringInput::Get,
                "put" => StringInput::Put {
                    value: text_value()?,
                },
                _ => StringInput::Append {
                    value: text_value()?,
                },
            };
            pairer.invoke(line, process, f, KeyedInput { key, op })
        }
        "ok" | "fail" | "info" => {
            let open = pairer.take(line, process, f)?;
            let inconsistent = |detail: String| {
                err(ParseErrorKind::InconsistentCompletion {
                    invoke_line: open.line,
                    detail,
                })
            };
            if open.input.key != key {
                return Err(inconsistent(format!(
                    "invoked on key {:?}, completed on key {key:?}",
                    open.input.key
                )));
            }
            let outcome = match (kind, &open.input.op) {
                ("fail", _) => Outcome::Fail,
                ("info", _) => Outcome::Info,
                (_, StringInput::Get) => Outcome::Ok(StringOutput::Get {
                    value: text_value()?,
                }),
                (
                    _,
                    StringInput::Put { value: invoked } | StringInput::Append { value: invoked },
                ) => {
                    let acked = text_value()?;
                    if &acked != invoked {
                        return Err(inconsistent(format!(
                            "invoked with {invoked:?}, acknowledged {acked:?}"
                        )));
                    }
                    if f == "put" {
                        Outcome::Ok(StringOutput::Put)
                    } else {
                        Outcome::Ok(StringOutput::Append)
                    }
                }
            };
            pairer.complete(line, process, open, outcome);
            Ok(())
        }
        other => Err(err(ParseErrorKind::UnknownType(format!(":{other}")))),
    }
}

/// A cursor over one line's characters, for column numbers in errors.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn error(&self, message: impl Into<String>) -> ParseErrorKind {
        ParseErrorKind::Syntax {
            column: self.pos + 1,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace() || c == ',') {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: char) -> Result<(), ParseErrorKind> {
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected `{want}`, found `{c}`"))),
            None => Err(self.error(format!("expected `{want}`, found end of line"))),
        }
    }

    /// A bare symbol: everything up to a delimiter.
    fn symbol(&mut self) -> String {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if !c.is_whitespace() && !",{}[]()\"".contains(c)) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn string(&mut self) -> Result<String, ParseErrorKind> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    let escaped = match self.peek() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some(c) => return Err(self.error(format!("unsupported escape `\\{c}`"))),
                        None => return Err(self.error("unterminated string")),
                    };
                    out.push(escaped);
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn value(&mut self) -> Result<Value, ParseErrorKind> {
        match self.peek() {
            Some(':') => {
                self.pos += 1;
                let name = self.symbol();
                if name.is_empty() {
                    return Err(self.error("empty keyword"));
                }
                Ok(Value::Keyword(name))
            }
            Some('"') => Ok(Value::Str(self.string()?)),
            Some(_) => {
                let start = self.pos;
                let symbol = self.symbol();
                if symbol == "nil" {
                    return Ok(Value::Nil);
                }
                symbol.parse::<i64>().map(Value::Int).map_err(|_| {
                    self.pos = start;
                    if symbol.is_empty() {
                        self.error("expected a value")
                    } else {
                        self.error(format!("unsupported value `{symbol}`"))
                    }
                })
            }
            None => Err(self.error("expected a value, found end of line")),
        }
    }
}

fn parse_map(line: &str) -> Result<Fields, ParseErrorKind> {
    let mut cursor = Cursor {
        chars: line.chars().collect(),
        pos: 0,
    };
    cursor.skip_blank();
    cursor.expect('{')?;
    let mut fields: Vec<(String, Value)> = Vec::new();
    loop {
        cursor.skip_blank();
        match cursor.peek() {
            Some('}') => {
                cursor.pos += 1;
                break;
            }
            Some(':') => {}
            Some(c) => return Err(cursor.error(format!("expected a keyword key, found `{c}`"))),
            None => return Err(cursor.error("unterminated map")),
        }
        let key_at = cursor.pos;
        let Value::Keyword(key) = cursor.value()? else {
            unreachable!("a value starting with ':' is a keyword");
        };
        if fields.iter().any(|(k, _)| *k == key) {
            cursor.pos = key_at;
            return Err(cursor.error(format!("duplicate key `:{key}`")));
        }
        cursor.skip_blank();
        let value = cursor.value()?;
        fields.push((key, value));
    }
    cursor.skip_blank();
    if cursor.peek().is_some() {
        return Err(cursor.error("trailing characters after the map"));
    }
    Ok(Fields(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 0, :type :ok, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 0, :type :invoke, :f :get, :key \"5\", :value nil}\n\
                    {:process 0, :type :ok, :f :get, :key \"5\", :value \"\"}\n";
        let ops = parse_porcupine_kv(text).expect("valid");
        assert_eq!(ops.len(), 2);
        assert_eq!(
            ops[0].input,
            KeyedInput::new(
                "0",
                StringInput::Append {
                    value: "x 0 0 y".into()
                }
            )
        );
        assert_eq!(
            ops[1].outcome,
            Outcome::Ok(StringOutput::Get {
                value: String::new()
            })
        );
    }

    #[test]
    fn string_escapes_are_decoded() {
        let fields = parse_map(r#"{:value "a\"b\\c"}"#).expect("valid");
        assert_eq!(fields.0[0].1, Value::Str("a\"b\\c".into()));
    }
}
