//! gRPC-web specifics (PROTOCOL-WEB.md): content types and the in-body trailer frame.
//!
//! Browsers cannot read HTTP trailers, so gRPC-web moves them into the body as the last frame:
//! flag byte `0x80`, a 4-byte big-endian length, then an HTTP/1 header block without the
//! terminating empty line:
//!
//! ```text
//! 80 00 00 00 1f  "grpc-status:0\r\ngrpc-message:\r\n"
//! ```
//!
//! Names are lowercase on the wire. The block is re-emitted as real HTTP/2 trailers (or as HTTP/1
//! headers), so parsing is strict about anything that could smuggle a header: CR, LF and NUL
//! are rejected in names and values, names must be RFC 9110 tokens, and pseudo-header names
//! (`:status`) are refused because a peer must never be able to set them through metadata.

use std::fmt;

use super::grpc_frame::{FrameHeader, FLAG_TRAILERS, FRAME_HEADER_LEN};
use super::is_tchar;

/// Body encoding of a gRPC-web message stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/grpc-web`: frames as raw bytes.
    Binary,
    /// `application/grpc-web-text`: frames base64-encoded (see [`super::text`]).
    Text,
}

const GRPC: &str = "application/grpc";
const GRPC_WEB: &str = "application/grpc-web";
const GRPC_WEB_TEXT: &str = "application/grpc-web-text";

/// Lowercased media type without parameters, or None if it is not plain ASCII.
fn media_type(ct: &str) -> Option<String> {
    let essence = ct.split(';').next().unwrap_or("").trim_matches([' ', '\t']);
    if !essence.is_ascii() {
        return None;
    }
    Some(essence.to_ascii_lowercase())
}

/// Accepts "" or "+" followed by one or more token characters (the `{custom}` of the spec).
fn valid_suffix(s: &str) -> bool {
    match s.strip_prefix('+') {
        None => s.is_empty(),
        Some(sub) => !sub.is_empty() && sub.bytes().all(is_tchar),
    }
}

/// Parses a request/response content-type. Returns None if it is not gRPC-web.
///
/// `application/grpc-web`, `application/grpc-web+proto`, `application/grpc-web-text+json`, …
/// (case-insensitive; parameters after ';' ignored). Returns `(encoding, suffix)` where
/// suffix is "" or e.g. "+proto" (lowercased).
pub fn parse_grpc_web_content_type(ct: &str) -> Option<(Encoding, String)> {
    let mt = media_type(ct)?;
    // The text prefix must be tried first: "application/grpc-web" is a prefix of it.
    let (enc, rest) = if let Some(rest) = mt.strip_prefix(GRPC_WEB_TEXT) {
        (Encoding::Text, rest)
    } else if let Some(rest) = mt.strip_prefix(GRPC_WEB) {
        (Encoding::Binary, rest)
    } else {
        return None;
    };
    valid_suffix(rest).then(|| (enc, rest.to_owned()))
}

/// `application/grpc`, `application/grpc+proto`, … -> Some(suffix). None for gRPC-web or
/// anything else.
pub fn parse_grpc_content_type(ct: &str) -> Option<String> {
    let mt = media_type(ct)?;
    let rest = mt.strip_prefix(GRPC)?;
    valid_suffix(rest).then(|| rest.to_owned())
}

/// e.g. `application/grpc-web+proto`, `application/grpc-web-text+proto`.
pub fn grpc_web_content_type(enc: Encoding, suffix: &str) -> String {
    let base = match enc {
        Encoding::Binary => GRPC_WEB,
        Encoding::Text => GRPC_WEB_TEXT,
    };
    let mut s = String::with_capacity(base.len().saturating_add(suffix.len()));
    s.push_str(base);
    s.push_str(suffix);
    s
}

/// `application/grpc` + suffix.
pub fn grpc_content_type(suffix: &str) -> String {
    let mut s = String::with_capacity(GRPC.len().saturating_add(suffix.len()));
    s.push_str(GRPC);
    s.push_str(suffix);
    s
}

/// Why a trailer block or frame was rejected. `Display` is suitable as a `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailerError {
    /// The block (bytes after the 5-byte prefix) is, or declares to be, longer than the limit.
    TooLarge { len: usize, limit: usize },
    /// An invalid name (shown escaped and truncated).
    BadName(String),
    /// An invalid value; carries the header *name* (not the value, which may be large or hostile).
    BadValue(String),
    /// Structural problem, described in the string.
    Malformed(String),
    /// The frame's first byte does not have the trailer flag.
    NotTrailers,
    /// The frame ended before its declared length.
    Truncated,
}

impl fmt::Display for TrailerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrailerError::TooLarge { len, limit } => {
                write!(
                    f,
                    "gRPC-web trailers of {len} bytes exceed the limit of {limit}"
                )
            }
            TrailerError::BadName(n) => write!(f, "invalid gRPC-web trailer name \"{n}\""),
            TrailerError::BadValue(n) => write!(f, "invalid value for gRPC-web trailer \"{n}\""),
            TrailerError::Malformed(m) => write!(f, "malformed gRPC-web trailers: {m}"),
            TrailerError::NotTrailers => f.write_str("expected a gRPC-web trailer frame"),
            TrailerError::Truncated => f.write_str("truncated gRPC-web trailer frame"),
        }
    }
}

impl std::error::Error for TrailerError {}

/// Printable rendering of an untrusted name for error messages: escaped, at most 64 chars.
fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .escape_debug()
        .take(64)
        .collect()
}

fn check_name(raw: &[u8]) -> Result<String, TrailerError> {
    // ':' is not a tchar, so this also refuses pseudo-headers such as ":status".
    if raw.is_empty() || !raw.iter().all(|&b| is_tchar(b)) {
        return Err(TrailerError::BadName(show(raw)));
    }
    // All tchars are ASCII, so this is valid UTF-8.
    Ok(String::from_utf8_lossy(raw).to_ascii_lowercase())
}

/// CR, LF and NUL would split or truncate the header when re-emitted.
fn value_ok(v: &[u8]) -> bool {
    !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// Encodes a complete trailer frame (0x80, u32 BE length, "name:value\r\n" lines) appended to
/// `out`. `limit` bounds the block (bytes after the 5-byte prefix).
///
/// Names are lowercased; names must be valid HTTP token chars and must not start with ':';
/// names or values containing CR, LF or NUL are rejected. Values are written as given (the
/// parser trims surrounding whitespace, so values with leading/trailing whitespace do not
/// round-trip; HTTP/2 forbids them anyway). On error `out` is left unchanged.
pub fn encode_trailer_frame(
    trailers: &[(String, String)],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), TrailerError> {
    let mut len = 0usize;
    for (name, value) in trailers {
        check_name(name.as_bytes())?;
        if !value_ok(value.as_bytes()) {
            return Err(TrailerError::BadValue(show(name.as_bytes())));
        }
        // name ':' value CR LF
        len = len
            .saturating_add(name.len())
            .saturating_add(value.len())
            .saturating_add(3);
    }
    if len > limit {
        return Err(TrailerError::TooLarge { len, limit });
    }
    let Ok(len32) = u32::try_from(len) else {
        return Err(TrailerError::TooLarge {
            len,
            limit: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
        });
    };
    out.reserve(len.saturating_add(FRAME_HEADER_LEN));
    out.extend_from_slice(
        &FrameHeader {
            flags: FLAG_TRAILERS,
            len: len32,
        }
        .encode(),
    );
    for (name, value) in trailers {
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses the block (bytes after the 5-byte header).
///
/// Lines are separated by "\r\n" (a bare "\n" is also accepted; a final line without terminator
/// is accepted); each is "name:value" with optional whitespace around the value trimmed. Names
/// are lowercased and validated (token chars, no leading ':' -> `BadName`); NUL or a stray CR
/// inside a value -> `BadValue`; a line without ':' -> `Malformed`; empty lines are skipped;
/// a block over `limit` -> `TooLarge`. Values must be UTF-8 (`BadValue` otherwise): gRPC
/// metadata values are printable ASCII, and a lossy conversion would silently alter them.
pub fn parse_trailer_block(
    block: &[u8],
    limit: usize,
) -> Result<Vec<(String, String)>, TrailerError> {
    if block.len() > limit {
        return Err(TrailerError::TooLarge {
            len: block.len(),
            limit,
        });
    }
    let mut fields = Vec::new();
    for raw_line in block.split(|&b| b == b'\n') {
        // Strip exactly one CR of the CRLF; any other CR is stray and rejected below.
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line.is_empty() {
            continue;
        }
        if line.first() == Some(&b':') {
            // A pseudo-header such as ":status:200". Report the name, not the empty prefix.
            let end = line
                .iter()
                .skip(1)
                .position(|&b| b == b':')
                .map_or(line.len(), |p| p.saturating_add(1));
            return Err(TrailerError::BadName(show(line.get(..end).unwrap_or(line))));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(TrailerError::Malformed(format!(
                "line without ':' (\"{}\")",
                show(line)
            )));
        };
        let (raw_name, rest) = line.split_at_checked(colon).unwrap_or((line, &[]));
        let raw_value = rest.get(1..).unwrap_or(&[]);
        let name = check_name(raw_name)?;
        let value = trim_ows(raw_value);
        if !value_ok(value) {
            return Err(TrailerError::BadValue(name));
        }
        let Ok(value) = std::str::from_utf8(value) else {
            return Err(TrailerError::BadValue(name));
        };
        fields.push((name, value.to_owned()));
    }
    Ok(fields)
}

#[derive(Debug)]
enum ReaderState {
    Header {
        bytes: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    Block {
        want: usize,
        buf: Vec<u8>,
    },
    Failed(TrailerError),
}

/// Accumulates a trailer frame that arrives in pieces (starting with its 0x80 header byte),
/// bounded by `limit` (block bytes). Errors are sticky.
#[derive(Debug)]
pub struct TrailerFrameReader {
    limit: usize,
    state: ReaderState,
}

impl TrailerFrameReader {
    pub fn new(limit: usize) -> Self {
        TrailerFrameReader {
            limit,
            state: ReaderState::Header {
                bytes: [0; FRAME_HEADER_LEN],
                have: 0,
            },
        }
    }

    /// Feeds bytes of the frame. `Err(TooLarge)` as soon as the header declares more than the
    /// limit; `Err(NotTrailers)` if the first byte lacks 0x80; `Err(Malformed)` for a
    /// compressed trailer frame (0x81, unsupported) or bytes beyond the declared end.
    pub fn push(&mut self, data: &[u8]) -> Result<(), TrailerError> {
        match self.push_inner(data) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.state = ReaderState::Failed(e.clone());
                Err(e)
            }
        }
    }

    fn push_inner(&mut self, data: &[u8]) -> Result<(), TrailerError> {
        let mut rest = data;
        loop {
            match &mut self.state {
                ReaderState::Failed(e) => return Err(e.clone()),
                ReaderState::Header { bytes, have } => {
                    let Some(&first) = rest.first() else {
                        return Ok(());
                    };
                    if *have == 0 {
                        if first & FLAG_TRAILERS == 0 {
                            return Err(TrailerError::NotTrailers);
                        }
                        if first != FLAG_TRAILERS {
                            return Err(TrailerError::Malformed(format!(
                                "unsupported trailer frame flags 0x{first:02x}"
                            )));
                        }
                    }
                    let take = FRAME_HEADER_LEN.saturating_sub(*have).min(rest.len());
                    let (head, tail) = rest.split_at_checked(take).unwrap_or((rest, &[]));
                    if let Some(dst) = bytes.get_mut(*have..have.saturating_add(take)) {
                        dst.copy_from_slice(head);
                    }
                    *have = have.saturating_add(take);
                    rest = tail;
                    if *have < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let header = FrameHeader::parse(*bytes);
                    let want = usize::try_from(header.len).unwrap_or(usize::MAX);
                    if want > self.limit {
                        return Err(TrailerError::TooLarge {
                            len: want,
                            limit: self.limit,
                        });
                    }
                    self.state = ReaderState::Block {
                        want,
                        buf: Vec::with_capacity(want.min(rest.len())),
                    };
                }
                ReaderState::Block { want, buf } => {
                    let need = want.saturating_sub(buf.len());
                    if rest.len() > need {
                        return Err(TrailerError::Malformed("data after trailer frame".into()));
                    }
                    buf.extend_from_slice(rest);
                    return Ok(());
                }
            }
        }
    }

    /// True once the whole declared block has arrived.
    pub fn is_complete(&self) -> bool {
        matches!(&self.state, ReaderState::Block { want, buf } if buf.len() >= *want)
    }

    /// `Err(Truncated)` if incomplete, the sticky error if any, else [`parse_trailer_block`].
    pub fn finish(self) -> Result<Vec<(String, String)>, TrailerError> {
        match self.state {
            ReaderState::Failed(e) => Err(e),
            ReaderState::Header { .. } => Err(TrailerError::Truncated),
            ReaderState::Block { want, buf } if buf.len() < want => Err(TrailerError::Truncated),
            ReaderState::Block { buf, .. } => parse_trailer_block(&buf, self.limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn content_types_from_protocol_web() {
        use Encoding::*;
        let cases: &[(&str, Option<(Encoding, &str)>)] = &[
            ("application/grpc-web", Some((Binary, ""))),
            ("application/grpc-web+proto", Some((Binary, "+proto"))),
            ("application/grpc-web+json", Some((Binary, "+json"))),
            ("application/grpc-web+thrift", Some((Binary, "+thrift"))),
            ("application/grpc-web-text", Some((Text, ""))),
            ("application/grpc-web-text+proto", Some((Text, "+proto"))),
            ("Application/GRPC-Web-Text+Proto", Some((Text, "+proto"))),
            ("application/grpc-web; charset=utf-8", Some((Binary, ""))),
            (" application/grpc-web+proto ;x=y", Some((Binary, "+proto"))),
            ("application/grpc", None),
            ("application/grpc+proto", None),
            ("application/grpc-webx", None),
            ("application/grpc-web-textx", None),
            ("application/grpc-web+", None),
            ("application/grpc-web+a b", None),
            ("application/grpc-web-text-base64", None),
            ("text/plain", None),
            ("", None),
            ("application/grpc-wéb", None),
        ];
        for (ct, want) in cases {
            let got = parse_grpc_web_content_type(ct);
            let want = want.map(|(e, s)| (e, s.to_string()));
            assert_eq!(got, want, "{ct}");
        }
    }

    #[test]
    fn grpc_content_types() {
        assert_eq!(
            parse_grpc_content_type("application/grpc"),
            Some(String::new())
        );
        assert_eq!(
            parse_grpc_content_type("application/GRPC+Proto; foo"),
            Some("+proto".into())
        );
        assert_eq!(parse_grpc_content_type("application/grpc-web"), None);
        assert_eq!(
            parse_grpc_content_type("application/grpc-web-text+proto"),
            None
        );
        assert_eq!(parse_grpc_content_type("application/grpcx"), None);
        assert_eq!(parse_grpc_content_type("application/json"), None);
        assert_eq!(grpc_content_type("+proto"), "application/grpc+proto");
        assert_eq!(grpc_content_type(""), "application/grpc");
        assert_eq!(
            grpc_web_content_type(Encoding::Text, "+proto"),
            "application/grpc-web-text+proto"
        );
        assert_eq!(
            grpc_web_content_type(Encoding::Binary, ""),
            "application/grpc-web"
        );
    }

    /// The trailer frame `encode_trailer_frame` writes for `pairs` within `limit`.
    fn trailer_frame(pairs: &[(&str, &str)], limit: usize) -> Vec<u8> {
        let mut out = vec![];
        encode_trailer_frame(&kv(pairs), limit, &mut out).unwrap();
        out
    }

    #[test]
    fn encode_spec_example_block() {
        let out = trailer_frame(&[("grpc-status", "0"), ("grpc-message", "")], 1024);
        let block = b"grpc-status:0\r\ngrpc-message:\r\n";
        assert_eq!(&out[..5], &[0x80, 0, 0, 0, block.len() as u8]);
        assert_eq!(&out[5..], block);
    }

    #[test]
    fn encode_lowercases_and_validates() {
        let mut out = vec![];
        encode_trailer_frame(&kv(&[("Grpc-Status", "3")]), 100, &mut out).unwrap();
        assert_eq!(&out[5..], b"grpc-status:3\r\n");

        let bad_names = [":status", "", "a b", "a:b", "a\r\nx", "a\0", "é"];
        for n in bad_names {
            let mut out = vec![1, 2];
            let r = encode_trailer_frame(&kv(&[(n, "v")]), 100, &mut out);
            assert!(matches!(r, Err(TrailerError::BadName(_))), "{n:?} -> {r:?}");
            assert_eq!(out, [1, 2], "out untouched on error");
        }
        for v in ["a\rb", "a\nb", "a\0b", "\r\nx-injected: 1"] {
            let mut out = vec![];
            let r = encode_trailer_frame(&kv(&[("x", v)]), 100, &mut out);
            assert_eq!(r, Err(TrailerError::BadValue("x".into())), "{v:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn encode_enforces_limit_on_block() {
        let t = kv(&[("grpc-status", "0")]); // 15 bytes
        let mut out = vec![];
        assert_eq!(
            encode_trailer_frame(&t, 14, &mut out),
            Err(TrailerError::TooLarge { len: 15, limit: 14 })
        );
        assert!(encode_trailer_frame(&t, 15, &mut out).is_ok());
        let mut out = vec![];
        encode_trailer_frame(&[], 0, &mut out).unwrap();
        assert_eq!(out, [0x80, 0, 0, 0, 0]);
    }

    #[test]
    fn parse_spec_examples() {
        assert_eq!(
            parse_trailer_block(b"grpc-status:0\r\ngrpc-message:\r\n", 100).unwrap(),
            kv(&[("grpc-status", "0"), ("grpc-message", "")])
        );
        // PROTOCOL-WEB.md's example uses a space after the colon.
        assert_eq!(
            parse_trailer_block(b"key1: foo\r\nkey2: bar\r\n", 100).unwrap(),
            kv(&[("key1", "foo"), ("key2", "bar")])
        );
    }

    #[test]
    fn parse_tolerances() {
        let got = parse_trailer_block(
            b"\r\nGrpc-Status:\t 14 \t\ngrpc-message: a%20b  \r\n\r\nx-last:  tail",
            1000,
        )
        .unwrap();
        assert_eq!(
            got,
            kv(&[
                ("grpc-status", "14"),
                ("grpc-message", "a%20b"),
                ("x-last", "tail")
            ])
        );
        // Colons inside the value are kept.
        assert_eq!(
            parse_trailer_block(b"x-url:http://h:1/p", 100).unwrap(),
            kv(&[("x-url", "http://h:1/p")])
        );
        assert_eq!(parse_trailer_block(b"", 0).unwrap(), vec![]);
    }

    #[test]
    fn parse_rejections() {
        let p = |b: &[u8]| parse_trailer_block(b, 1000);
        assert_eq!(
            p(b":status:200\r\n"),
            Err(TrailerError::BadName(":status".into()))
        );
        assert_eq!(
            p(b":status\r\n"),
            Err(TrailerError::BadName(":status".into()))
        );
        assert!(matches!(p(b":a"), Err(TrailerError::BadName(_))));
        assert!(matches!(
            p(b"grpc status:0\r\n"),
            Err(TrailerError::BadName(_))
        ));
        assert!(matches!(
            p(b"grpc-status :0\r\n"),
            Err(TrailerError::BadName(_))
        ));
        // Folded continuation line (obs-fold) starts with whitespace: not a token.
        assert!(matches!(
            p(b"a:b\r\n c:d\r\n"),
            Err(TrailerError::BadName(_))
        ));
        assert!(matches!(p(b":0\r\n"), Err(TrailerError::BadName(_))));
        assert!(matches!(p(b"a\0:b"), Err(TrailerError::BadName(_))));
        assert_eq!(p(b"x:a\0b\r\n"), Err(TrailerError::BadValue("x".into())));
        // A lone CR must not act as a line break (header smuggling).
        assert_eq!(
            p(b"x:a\rgrpc-status:0\r\n"),
            Err(TrailerError::BadValue("x".into()))
        );
        assert_eq!(p(b"x:a\r\r\n"), Err(TrailerError::BadValue("x".into())));
        assert_eq!(p(b"x:\xff\xfe"), Err(TrailerError::BadValue("x".into())));
        assert!(matches!(
            p(b"grpc-status 0\r\n"),
            Err(TrailerError::Malformed(_))
        ));
        assert_eq!(
            parse_trailer_block(b"grpc-status:0\r\n", 14),
            Err(TrailerError::TooLarge { len: 15, limit: 14 })
        );
    }

    #[test]
    fn bad_name_error_is_escaped_and_short() {
        let mut line = vec![b'\x07'; 500];
        line.extend_from_slice(b":v");
        let Err(TrailerError::BadName(n)) = parse_trailer_block(&line, 10_000) else {
            panic!("expected BadName");
        };
        assert!(n.chars().count() <= 64);
        assert!(!n.contains('\x07'));
    }

    #[test]
    fn reader_accumulates_pieces() {
        let frame = trailer_frame(&[("grpc-status", "0"), ("grpc-message", "ok")], 100);
        let mut r = TrailerFrameReader::new(100);
        for b in &frame[..frame.len() - 1] {
            r.push(std::slice::from_ref(b)).unwrap();
            assert!(!r.is_complete());
        }
        r.push(&frame[frame.len() - 1..]).unwrap();
        assert!(r.is_complete());
        assert_eq!(
            r.finish().unwrap(),
            kv(&[("grpc-status", "0"), ("grpc-message", "ok")])
        );
    }

    #[test]
    fn reader_errors() {
        let mut r = TrailerFrameReader::new(100);
        assert_eq!(r.push(&[0x00, 0, 0, 0, 0]), Err(TrailerError::NotTrailers));
        assert_eq!(r.push(&[0x80]), Err(TrailerError::NotTrailers), "sticky");

        let mut r = TrailerFrameReader::new(100);
        assert!(matches!(r.push(&[0x81]), Err(TrailerError::Malformed(_))));

        let mut r = TrailerFrameReader::new(100);
        r.push(&[0x80, 0xff]).unwrap();
        assert_eq!(
            r.push(&[0xff, 0xff, 0xff]),
            Err(TrailerError::TooLarge {
                len: 0xffff_ffff,
                limit: 100
            })
        );

        let mut r = TrailerFrameReader::new(100);
        assert_eq!(
            r.push(&[0x80, 0, 0, 0, 2, b'a', b':', b'x']),
            Err(TrailerError::Malformed("data after trailer frame".into()))
        );
        assert!(matches!(r.finish(), Err(TrailerError::Malformed(_))));

        let mut r = TrailerFrameReader::new(100);
        r.push(&[0x80, 0, 0, 0, 3, b'a']).unwrap();
        assert!(!r.is_complete());
        assert_eq!(r.finish(), Err(TrailerError::Truncated));
        assert_eq!(
            TrailerFrameReader::new(1).finish(),
            Err(TrailerError::Truncated)
        );

        let mut r = TrailerFrameReader::new(100);
        r.push(&[0x80, 0, 0, 0, 0]).unwrap();
        assert!(r.is_complete());
        assert_eq!(
            r.push(&[0]),
            Err(TrailerError::Malformed("data after trailer frame".into()))
        );

        let mut r = TrailerFrameReader::new(100);
        r.push(&[0x80, 0, 0, 0, 4, b'b', b'a', b'd', b'\n'])
            .unwrap();
        assert!(matches!(r.finish(), Err(TrailerError::Malformed(_))));
    }
}
