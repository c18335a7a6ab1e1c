//! The WebSocket opening handshake (RFC 6455 §4) over HTTP/1.1.
//!
//! This module builds and parses the HTTP/1.1 `Upgrade` request and the
//! `101 Switching Protocols` answer. Parsing is strict where leniency could let a proxy and us
//! disagree about where the head ends: lines end in CRLF (no bare CR or LF), header names are
//! tokens with no whitespace before the colon, no obs-fold, and a request with a body
//! (`Transfer-Encoding`, non-zero `Content-Length`) is refused, since the bytes after the head
//! are WebSocket frames.

use std::fmt;

use super::super::is_tchar;
use super::super::sha1::Sha1;
use super::super::text::{decode_all, encode_padded};

/// RFC 6455 §1.3: appended to `Sec-WebSocket-Key` before hashing.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Standard base64 with padding.
pub fn encode_base64(data: &[u8]) -> String {
    let mut out = Vec::with_capacity(
        data.len()
            .saturating_add(2)
            .saturating_div(3)
            .saturating_mul(4),
    );
    encode_padded(data, &mut out);
    out.into_iter().map(char::from).collect()
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(client_key: &str) -> String {
    let mut h = Sha1::new();
    h.update(client_key.as_bytes());
    h.update(GUID.as_bytes());
    encode_base64(&h.finish())
}

/// A `Sec-WebSocket-Key` from 16 random bytes (the caller supplies the randomness).
pub fn key_from_nonce(nonce: [u8; 16]) -> String {
    encode_base64(&nonce)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    pub host: String,
    pub path: String,
    pub key: String,
    pub protocol: Option<String>,
    pub extra_headers: Vec<(String, String)>,
}

/// Headers the handshake writes itself (or must never carry): extra headers with these names
/// are skipped.
const MANAGED_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
];

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Control characters other than HTAB (which header values may contain).
fn is_bad_value_byte(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7F
}

/// Drops characters that could break a header line.
fn sanitize_value(s: &str) -> String {
    s.chars()
        .filter(|&c| !(c.is_ascii_control() && c != '\t'))
        .collect::<String>()
        .trim_matches([' ', '\t'])
        .to_owned()
}

/// Percent-encodes what cannot appear in a request-target (controls, space, DEL).
fn sanitize_path(s: &str) -> String {
    if s.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_control() || c == ' ' {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The upgrade request. Host, path, key and protocol are sanitized (controls dropped, the path's
/// controls and spaces percent-encoded); extra headers whose name is not a token or whose value
/// holds CR, LF, NUL or another control are skipped, and so are extra headers that the
/// handshake manages itself (Host, Upgrade, Connection, Sec-WebSocket-*, Content-Length,
/// Transfer-Encoding).
pub fn encode_client_handshake(h: &ClientHandshake) -> Vec<u8> {
    let mut s = String::with_capacity(256);
    s.push_str("GET ");
    s.push_str(&sanitize_path(&h.path));
    s.push_str(" HTTP/1.1\r\nHost: ");
    s.push_str(&sanitize_value(&h.host));
    s.push_str("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    s.push_str(&sanitize_value(&h.key));
    s.push_str("\r\nSec-WebSocket-Version: 13\r\n");
    if let Some(p) = &h.protocol {
        s.push_str("Sec-WebSocket-Protocol: ");
        s.push_str(&sanitize_value(p));
        s.push_str("\r\n");
    }
    for (name, value) in &h.extra_headers {
        if !is_token(name.as_bytes())
            || value.bytes().any(is_bad_value_byte)
            || MANAGED_HEADERS.iter().any(|m| m.eq_ignore_ascii_case(name))
        {
            continue;
        }
        s.push_str(name);
        s.push_str(": ");
        s.push_str(value.trim_matches([' ', '\t']));
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub method: String,
    pub path: String,
    /// All header fields in order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub key: String,
    /// The offered subprotocols, in order (all `Sec-WebSocket-Protocol` fields, comma-split).
    pub protocols: Vec<String>,
}

impl ParsedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_values<'h>(
    headers: &'h [(String, String)],
    name: &'h str,
) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether any `name` field's comma-separated list contains `token` (case-insensitive).
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_values(headers, name).any(|v| {
        v.split(',')
            .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head did not end within the size limit.
    TooLarge,
    Malformed(String),
    /// Missing or invalid Upgrade/Connection/version/key, or a method other than GET.
    NotUpgrade(String),
    /// The server answered with a status other than 101.
    Rejected {
        status: u16,
    },
    BadAccept,
    BadProtocol,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::TooLarge => f.write_str("websocket handshake head too large"),
            HandshakeError::Malformed(m) => write!(f, "malformed websocket handshake: {m}"),
            HandshakeError::NotUpgrade(m) => write!(f, "not a websocket upgrade: {m}"),
            HandshakeError::Rejected { status } => {
                write!(f, "websocket upgrade rejected with HTTP status {status}")
            }
            HandshakeError::BadAccept => {
                f.write_str("wrong Sec-WebSocket-Accept in the 101 answer")
            }
            HandshakeError::BadProtocol => {
                f.write_str("server's Sec-WebSocket-Protocol does not match the one requested")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Offset just past the `\r\n\r\n` ending the head, if it lies within the first `max` bytes.
/// Err(TooLarge) when `buf` holds `max` bytes or more without one.
fn head_end(buf: &[u8], max: usize) -> Result<Option<usize>, HandshakeError> {
    let window = buf.get(..max).unwrap_or(buf);
    match window.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => Ok(Some(p.saturating_add(4))),
        None if buf.len() >= max => Err(HandshakeError::TooLarge),
        None => Ok(None),
    }
}

/// Splits a head (without its final empty line's CRLF pair) into CRLF-terminated lines,
/// rejecting bare CR or LF.
fn split_lines(head: &[u8]) -> Result<Vec<&[u8]>, HandshakeError> {
    let mut lines = Vec::new();
    let mut rest = head;
    loop {
        match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => {
                lines.push(rest);
                return Ok(lines);
            }
            Some(p) => {
                let (line, tail) = rest.split_at_checked(p).unwrap_or((rest, &[]));
                match tail {
                    [b'\r', b'\n', after @ ..] => {
                        lines.push(line);
                        rest = after;
                    }
                    _ => {
                        return Err(HandshakeError::Malformed(
                            "bare CR or LF in the head".into(),
                        ))
                    }
                }
            }
        }
    }
}

/// Parses `name: value` (name lowercased, value trimmed of SP/HTAB).
fn parse_header_line(line: &[u8]) -> Result<(String, String), HandshakeError> {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(HandshakeError::Malformed(
            "header line without a colon".into(),
        ));
    };
    let (name, rest) = line.split_at_checked(colon).unwrap_or((line, &[]));
    let value = rest.get(1..).unwrap_or(&[]);
    if !is_token(name) {
        return Err(HandshakeError::Malformed("invalid header name".into()));
    }
    if value.iter().any(|&b| is_bad_value_byte(b)) {
        return Err(HandshakeError::Malformed(
            "control character in a header value".into(),
        ));
    }
    let value = String::from_utf8_lossy(value);
    Ok((
        String::from_utf8_lossy(name).to_ascii_lowercase(),
        value.trim_matches([' ', '\t']).to_owned(),
    ))
}

/// The head `buf[..end]` split into its first line and parsed header fields.
/// Header fields in order: (lowercased name, trimmed value).
type Fields = Vec<(String, String)>;

fn parse_head(buf: &[u8], end: usize) -> Result<(&[u8], Fields), HandshakeError> {
    let head = buf.get(..end.saturating_sub(4)).unwrap_or(&[]);
    let lines = split_lines(head)?;
    let Some((first, fields)) = lines.split_first() else {
        return Err(HandshakeError::Malformed("empty head".into()));
    };
    let headers = fields
        .iter()
        .map(|l| parse_header_line(l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((first, headers))
}

/// Checks `Upgrade: websocket` and `Connection: upgrade` (tokens, case-insensitive).
fn check_upgrade_headers(headers: &[(String, String)]) -> Result<(), HandshakeError> {
    if !has_token(headers, "upgrade", "websocket") {
        return Err(HandshakeError::NotUpgrade(
            "missing Upgrade: websocket".into(),
        ));
    }
    if !has_token(headers, "connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade(
            "missing Connection: upgrade".into(),
        ));
    }
    Ok(())
}

/// A key is base64 of exactly 16 bytes: 22 symbols and `==`.
fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b.get(22..) == Some(b"==".as_slice())
        && !b.get(..22).unwrap_or(&[]).contains(&b'=')
        && decode_all(b).map(|v| v.len() == 16).unwrap_or(false)
}

/// Server side: parses a complete upgrade request head from the start of `buf`.
///
/// Ok(None): the head is incomplete (and `buf` is shorter than `max`). Ok(Some((req,
/// consumed))): the head is complete and valid; `buf[consumed..]` is already frame data.
/// Requires GET, HTTP/1.1, an `Upgrade` field with token `websocket`, a `Connection` field with
/// token `upgrade`, exactly one `Sec-WebSocket-Version: 13`, exactly one `Sec-WebSocket-Key`
/// holding base64 of 16 bytes, and no request body. Host is not checked (see
/// [`ParsedRequest::header`]).
pub fn parse_client_handshake(
    buf: &[u8],
    max: usize,
) -> Result<Option<(ParsedRequest, usize)>, HandshakeError> {
    let Some(end) = head_end(buf, max)? else {
        return Ok(None);
    };
    let (first, headers) = parse_head(buf, end)?;
    let parts: Vec<&[u8]> = first.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(HandshakeError::Malformed(
            "request line is not METHOD SP TARGET SP VERSION".into(),
        ));
    };
    if !is_token(method) {
        return Err(HandshakeError::Malformed("invalid method".into()));
    }
    if target.is_empty() || target.iter().any(|&b| b < 0x21 || b == 0x7F) {
        return Err(HandshakeError::Malformed("invalid request target".into()));
    }
    if *version != b"HTTP/1.1" {
        return Err(if version.starts_with(b"HTTP/") {
            HandshakeError::NotUpgrade("HTTP version is not 1.1".into())
        } else {
            HandshakeError::Malformed("invalid HTTP version".into())
        });
    }
    let method = String::from_utf8_lossy(method).into_owned();
    if method != "GET" {
        return Err(HandshakeError::NotUpgrade(format!(
            "method {method}, not GET"
        )));
    }
    if find_header(&headers, "transfer-encoding").is_some()
        || header_values(&headers, "content-length").any(|v| v != "0")
    {
        return Err(HandshakeError::Malformed(
            "upgrade request with a body".into(),
        ));
    }
    check_upgrade_headers(&headers)?;
    let versions: Vec<&str> = header_values(&headers, "sec-websocket-version").collect();
    if versions != ["13"] {
        return Err(HandshakeError::NotUpgrade(
            "Sec-WebSocket-Version is not 13".into(),
        ));
    }
    let keys: Vec<&str> = header_values(&headers, "sec-websocket-key").collect();
    let key = match keys.as_slice() {
        [k] if is_valid_key(k) => (*k).to_owned(),
        [] => {
            return Err(HandshakeError::NotUpgrade(
                "missing Sec-WebSocket-Key".into(),
            ))
        }
        _ => {
            return Err(HandshakeError::NotUpgrade(
                "invalid Sec-WebSocket-Key".into(),
            ))
        }
    };
    let protocols = header_values(&headers, "sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(|p| p.trim_matches([' ', '\t']))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let req = ParsedRequest {
        method,
        path: String::from_utf8_lossy(target).into_owned(),
        headers,
        key,
        protocols,
    };
    Ok(Some((req, end)))
}

/// The `101 Switching Protocols` answer.
pub fn encode_server_handshake(accept: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut s = String::with_capacity(160);
    s.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    s.push_str(&sanitize_value(accept));
    s.push_str("\r\n");
    if let Some(p) = protocol {
        s.push_str("Sec-WebSocket-Protocol: ");
        s.push_str(&sanitize_value(p));
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn status_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// An HTTP error answer to a failed upgrade: the status (outside 400..=599 becomes 400), its
/// standard phrase, `Sec-WebSocket-Version: 13` (what we support, RFC 6455 §4.4),
/// `Connection: close`, and `reason` (controls replaced by spaces) as a text/plain body.
pub fn encode_handshake_rejection(status: u16, reason: &str) -> Vec<u8> {
    let status = if (400..=599).contains(&status) {
        status
    } else {
        400
    };
    let body: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .chain(std::iter::once('\n'))
        .collect();
    format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        status_phrase(status),
        body.len()
    )
    .into_bytes()
}

/// Parses `HTTP/1.x SP 3DIGIT [SP reason]` into the status.
fn parse_status_line(line: &[u8]) -> Result<u16, HandshakeError> {
    let malformed = || HandshakeError::Malformed("invalid status line".into());
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(malformed)?;
    let [minor, b' ', d0, d1, d2, tail @ ..] = rest else {
        return Err(malformed());
    };
    if !minor.is_ascii_digit()
        || ![d0, d1, d2].iter().all(|d| d.is_ascii_digit())
        || !(tail.is_empty() || tail.first() == Some(&b' '))
    {
        return Err(malformed());
    }
    let digit = |d: u8| u16::from(d.wrapping_sub(b'0'));
    Ok(digit(*d0)
        .saturating_mul(100)
        .saturating_add(digit(*d1).saturating_mul(10))
        .saturating_add(digit(*d2)))
}

/// Client side: parses the server's answer head from the start of `buf`.
///
/// Ok(None): incomplete. Ok(Some(consumed)): a valid 101; `buf[consumed..]` is frame data.
/// A non-101 status is reported as `Rejected` as soon as the status line is complete. A 101
/// must carry `Upgrade: websocket`, `Connection: upgrade`, exactly one `Sec-WebSocket-Accept`
/// equal to `expected_accept` (else `BadAccept`), exactly the requested subprotocol or none if
/// none was requested (else `BadProtocol`), and no `Sec-WebSocket-Extensions` (we offer none).
pub fn parse_server_handshake(
    buf: &[u8],
    max: usize,
    expected_accept: &str,
    protocol: Option<&str>,
) -> Result<Option<usize>, HandshakeError> {
    // Report a refusal as soon as its status line is in, even if the head is long.
    let window = buf.get(..max).unwrap_or(buf);
    if let Some(p) = window.windows(2).position(|w| w == b"\r\n") {
        let status = parse_status_line(window.get(..p).unwrap_or(&[]))?;
        if status != 101 {
            return Err(HandshakeError::Rejected { status });
        }
    }
    let Some(end) = head_end(buf, max)? else {
        return Ok(None);
    };
    let (_, headers) = parse_head(buf, end)?;
    check_upgrade_headers(&headers)?;
    let accepts: Vec<&str> = header_values(&headers, "sec-websocket-accept").collect();
    if accepts != [expected_accept] {
        return Err(HandshakeError::BadAccept);
    }
    let protos: Vec<&str> = header_values(&headers, "sec-websocket-protocol").collect();
    let ok = match protocol {
        Some(p) => protos == [p],
        None => protos.is_empty(),
    };
    if !ok {
        return Err(HandshakeError::BadProtocol);
    }
    if header_values(&headers, "sec-websocket-extensions").any(|v| !v.is_empty()) {
        return Err(HandshakeError::Malformed(
            "server selected a WebSocket extension that was not offered".into(),
        ));
    }
    Ok(Some(end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::websocket::frame::tests::{data_msg, decode_all_events, MASK};
    use crate::codec::websocket::*;

    #[test]
    fn rfc_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            encode_base64(b"the sample nonce"),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert_eq!(
            key_from_nonce(*b"the sample nonce"),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
    }

    fn client_hs() -> ClientHandshake {
        ClientHandshake {
            host: "server.example.com".into(),
            path: "/chat".into(),
            key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
            protocol: Some("grpc-tunnel".into()),
            extra_headers: vec![
                ("Origin".into(), "http://example.com".into()),
                ("X-Bad".into(), "a\r\nInjected: 1".into()),
                ("Bad Name".into(), "v".into()),
                (
                    "Sec-WebSocket-Key".into(),
                    "AAAAAAAAAAAAAAAAAAAAAA==".into(),
                ),
                ("X-Nul".into(), "a\0b".into()),
            ],
        }
    }

    #[test]
    fn client_handshake_exact_bytes() {
        let req = encode_client_handshake(&client_hs());
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: grpc-tunnel\r\n\
             Origin: http://example.com\r\n\r\n"
        );
    }

    #[test]
    fn client_handshake_round_trip_and_pipelined_frames() {
        let mut buf = encode_client_handshake(&client_hs());
        let head_len = buf.len();
        encode_frame(true, Opcode::Binary, Some(MASK), b"PRI", &mut buf);
        for n in 0..head_len {
            assert_eq!(
                parse_client_handshake(&buf[..n], 4096).unwrap(),
                None,
                "{n}"
            );
        }
        let (req, used) = parse_client_handshake(&buf, 4096).unwrap().unwrap();
        assert_eq!(used, head_len);
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/chat");
        assert_eq!(req.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(req.protocols, vec!["grpc-tunnel".to_string()]);
        assert_eq!(req.header("HOST"), Some("server.example.com"));
        assert_eq!(req.header("origin"), Some("http://example.com"));
        assert_eq!(req.header("x-bad"), None);
        assert_eq!(
            decode_all_events(Side::Server, &buf[used..]).unwrap(),
            data_msg(b"PRI")
        );
    }

    #[test]
    fn parse_rfc_request_example() {
        let req = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n";
        let (r, n) = parse_client_handshake(req, 8192).unwrap().unwrap();
        assert_eq!(n, req.len());
        assert_eq!(
            r.protocols,
            vec!["chat".to_string(), "superchat".to_string()]
        );
        assert_eq!(r.header("connection"), Some("keep-alive, Upgrade"));
    }

    fn req_with(replace: &str, with: &str) -> Vec<u8> {
        let base = String::from_utf8(encode_client_handshake(&ClientHandshake {
            extra_headers: vec![],
            ..client_hs()
        }))
        .unwrap();
        assert!(base.contains(replace), "{replace}");
        base.replacen(replace, with, 1).into_bytes()
    }

    /// What the server side makes of a request head, reduced to what `request_validation`
    /// tells apart.
    #[derive(Debug, PartialEq)]
    enum Verdict {
        Accepted,
        NotUpgrade,
        Malformed,
        Other(String),
    }

    fn verdict(buf: &[u8]) -> Verdict {
        match parse_client_handshake(buf, 8192) {
            Ok(Some(_)) => Verdict::Accepted,
            Err(HandshakeError::NotUpgrade(_)) => Verdict::NotUpgrade,
            Err(HandshakeError::Malformed(_)) => Verdict::Malformed,
            other => Verdict::Other(format!("{other:?}")),
        }
    }

    #[test]
    fn request_validation() {
        use Verdict::{Accepted, Malformed, NotUpgrade};
        const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
        // (text of the valid request, what replaces it, the verdict)
        let cases: &[(&str, &str, Verdict)] = &[
            ("GET", "POST", NotUpgrade),
            ("HTTP/1.1", "HTTP/1.0", NotUpgrade),
            ("HTTP/1.1", "HTXP/1.1", Malformed),
            ("Upgrade: websocket", "Upgrade: h2c", NotUpgrade),
            ("Connection: Upgrade", "Connection: keep-alive", NotUpgrade),
            ("Version: 13", "Version: 8", NotUpgrade),
            ("Sec-WebSocket-Version: 13\r\n", "", NotUpgrade),
            (
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                "",
                NotUpgrade,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "dGhlIHNhbXBsZSBub25jZQ",
                NotUpgrade,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "dGhlIHNhbXBsZSBub25jZQo=",
                NotUpgrade,
            ),
            (KEY, "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", NotUpgrade),
            // Case-insensitive tokens, list forms.
            ("Upgrade: websocket", "upgrade: WebSocket", Accepted),
            (
                "Connection: Upgrade",
                "Connection: keep-alive,  UPGRADE",
                Accepted,
            ),
            // Framing problems.
            ("\r\nHost", "\nHost", Malformed),
            ("Host:", "Host :", Malformed),
            ("Host:", " Host:", Malformed),
            ("GET /chat", "GET  /chat", Malformed),
            ("Host: ", "Host: a\x01", Malformed),
            ("Host: ", "Transfer-Encoding: chunked\r\nHost: ", Malformed),
            ("Host: ", "Content-Length: 5\r\nHost: ", Malformed),
            ("Host: ", "Content-Length: 0\r\nHost: ", Accepted),
        ];
        for (replace, with, expected) in cases {
            assert_eq!(
                &verdict(&req_with(replace, with)),
                expected,
                "{replace:?} replaced by {with:?}"
            );
        }
    }

    #[test]
    fn request_size_limit() {
        let req = encode_client_handshake(&client_hs());
        assert!(parse_client_handshake(&req, req.len()).unwrap().is_some());
        assert_eq!(
            parse_client_handshake(&req, req.len() - 1),
            Err(HandshakeError::TooLarge)
        );
        assert_eq!(
            parse_client_handshake(&req[..10], 10),
            Err(HandshakeError::TooLarge)
        );
        assert_eq!(parse_client_handshake(&req[..10], 11), Ok(None));
    }

    #[test]
    fn server_handshake_round_trip() {
        let accept = accept_key("dGhlIHNhbXBsZSBub25jZQ==");
        let mut resp = encode_server_handshake(&accept, Some("grpc-tunnel"));
        assert_eq!(
            String::from_utf8(resp.clone()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: grpc-tunnel\r\n\r\n"
        );
        let head = resp.len();
        encode_frame(true, Opcode::Binary, None, b"SETTINGS", &mut resp);
        for n in 0..head {
            assert_eq!(
                parse_server_handshake(&resp[..n], 4096, &accept, Some("grpc-tunnel")),
                Ok(None),
                "{n}"
            );
        }
        assert_eq!(
            parse_server_handshake(&resp, 4096, &accept, Some("grpc-tunnel")),
            Ok(Some(head))
        );
        assert_eq!(
            parse_server_handshake(
                &resp,
                4096,
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                Some("grpc-tunnel")
            ),
            Err(HandshakeError::BadAccept)
        );
        assert_eq!(
            parse_server_handshake(&resp, 4096, &accept, Some("other")),
            Err(HandshakeError::BadProtocol)
        );
        assert_eq!(
            parse_server_handshake(&resp, 4096, &accept, None),
            Err(HandshakeError::BadProtocol)
        );
        let no_proto = encode_server_handshake(&accept, None);
        assert_eq!(
            parse_server_handshake(&no_proto, 4096, &accept, Some("grpc-tunnel")),
            Err(HandshakeError::BadProtocol)
        );
        assert_eq!(
            parse_server_handshake(&no_proto, 4096, &accept, None),
            Ok(Some(no_proto.len()))
        );
        assert_eq!(
            parse_server_handshake(&resp, head - 1, &accept, Some("grpc-tunnel")),
            Err(HandshakeError::TooLarge)
        );
    }

    #[test]
    fn server_answer_validation() {
        let accept = accept_key("dGhlIHNhbXBsZSBub25jZQ==");
        let good = String::from_utf8(encode_server_handshake(&accept, None)).unwrap();
        let check = |s: String| parse_server_handshake(s.as_bytes(), 4096, &accept, None);
        // Rejection is reported from the status line alone.
        assert_eq!(
            parse_server_handshake(b"HTTP/1.1 403 Forbidden\r\nContent-", 4096, &accept, None),
            Err(HandshakeError::Rejected { status: 403 })
        );
        assert_eq!(
            check("HTTP/1.1 200 OK\r\n\r\n".into()),
            Err(HandshakeError::Rejected { status: 200 })
        );
        assert_eq!(
            check(good.replacen("HTTP/1.1 101 Switching Protocols", "HTTP/1.1 101", 1)),
            Ok(Some(good.len() - " Switching Protocols".len()))
        );
        assert!(matches!(
            check(good.replacen("HTTP/1.1", "HTTP/2", 1)),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            check(good.replacen("Upgrade: websocket\r\n", "", 1)),
            Err(HandshakeError::NotUpgrade(_))
        ));
        assert!(matches!(
            check(good.replacen("Connection: Upgrade", "Connection: close", 1)),
            Err(HandshakeError::NotUpgrade(_))
        ));
        assert_eq!(
            check(good.replacen(&format!("Sec-WebSocket-Accept: {accept}\r\n"), "", 1)),
            Err(HandshakeError::BadAccept)
        );
        assert!(matches!(
            check(good.replacen(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                1
            )),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn rejection_answer() {
        let r = String::from_utf8(encode_handshake_rejection(400, "bad\r\nversion")).unwrap();
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(r.contains("\r\nConnection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nbad  version\n"));
        assert!(r.contains("Content-Length: 13\r\n"));
        let r = String::from_utf8(encode_handshake_rejection(101, "x")).unwrap();
        assert!(r.starts_with("HTTP/1.1 400 "));
        // A client parsing it sees the rejection.
        assert_eq!(
            parse_server_handshake(&encode_handshake_rejection(426, "v"), 4096, "a", None),
            Err(HandshakeError::Rejected { status: 426 })
        );
    }

    #[test]
    fn display_impls() {
        let e = WsError {
            close_code: 1002,
            reason: "x".into(),
        };
        assert!(e.to_string().contains("1002"));
        assert!(HandshakeError::Rejected { status: 403 }
            .to_string()
            .contains("403"));
    }
}
