//! # A minimal HTTP/1.1 client for the members' admin endpoints
//!
//! The admin endpoint speaks plain HTTP/1.1 with small JSON bodies on
//! loopback; one request per connection (`Connection: close`) is all the
//! nemesis needs, so a few dozen lines replace an HTTP client dependency.
//!
//! Invariants:
//! 1. Every call is bounded by its timeout (connect, write and read
//!    together): a SIGSTOPped member makes the call fail, never hang.
//! 2. Responses larger than [`RESPONSE_BYTES_MAX`] are refused, so a
//!    confused peer cannot make the harness allocate without bound.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest admin response accepted. `/status` is about 120 bytes; the
/// fault calls answer `ok`.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, decoded from chunked encoding if needed.
    pub body: String,
}

/// Sends one request and reads the whole response, within `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<Response, String> {
    match tokio::time::timeout(timeout, exchange(addr, method, path, json_body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let body = json_body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if json_body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream
        .write_all(body.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > RESPONSE_BYTES_MAX {
            return Err(format!("response larger than {RESPONSE_BYTES_MAX} bytes"));
        }
    }
    parse_response(&raw)
}

/// Parses a complete HTTP/1.1 response (the connection was closed after
/// it).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "truncated response header".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    // Each round consumes one chunk, so the loop ends within the body's
    // length.
    loop {
        let (size_line, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| "truncated chunk size".to_owned())?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| "truncated chunk".to_owned())?;
        out.push_str(chunk);
        rest = after
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or_else(|| "missing chunk terminator".to_owned())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(
            parse_response(plain).unwrap(),
            Response {
                status: 200,
                body: "ok".into()
            }
        );
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, "{\"a\":1}");
        assert!(parse_response(b"HTTP/1.1").is_err());
        assert!(parse_response(b"junk\r\n\r\n").is_err());
    }
}
