//! gRPC status codes, their mapping to and from HTTP statuses, and `grpc-message` encoding.
//!
//! - gRPC -> HTTP is needed when an HTTP/1.1 client that cannot read trailers gets the call
//!   outcome as the response status. We use NetScaler's table, the de-facto convention for
//!   such bridges (see the peers reference).
//! - HTTP -> gRPC follows gRPC's own doc/http-grpc-status-mapping.md, used when an upstream
//!   or intermediary answers with a non-gRPC HTTP error.
//! - `grpc-message` is percent-encoded UTF-8 (PROTOCOL-HTTP2.md, "Status-Message"):
//!   `Percent-Byte-Unencoded = %x20-24 / %x26-7E`, everything else as `"%" 2HEXDIGIT`. The spec
//!   tells decoders never to fail on a bad message, so [`percent_decode`] is total.

/// Canonical status codes (grpc/grpc doc/statuscodes.md).
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const NOT_FOUND: u32 = 5;
    pub const ALREADY_EXISTS: u32 = 6;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const FAILED_PRECONDITION: u32 = 9;
    pub const ABORTED: u32 = 10;
    pub const OUT_OF_RANGE: u32 = 11;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const DATA_LOSS: u32 = 15;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// Upper-case name of a status code; "UNKNOWN_CODE" for codes above 16.
pub fn code_name(code: u32) -> &'static str {
    match code {
        code::OK => "OK",
        code::CANCELLED => "CANCELLED",
        code::UNKNOWN => "UNKNOWN",
        code::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        code::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        code::NOT_FOUND => "NOT_FOUND",
        code::ALREADY_EXISTS => "ALREADY_EXISTS",
        code::PERMISSION_DENIED => "PERMISSION_DENIED",
        code::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        code::FAILED_PRECONDITION => "FAILED_PRECONDITION",
        code::ABORTED => "ABORTED",
        code::OUT_OF_RANGE => "OUT_OF_RANGE",
        code::UNIMPLEMENTED => "UNIMPLEMENTED",
        code::INTERNAL => "INTERNAL",
        code::UNAVAILABLE => "UNAVAILABLE",
        code::DATA_LOSS => "DATA_LOSS",
        code::UNAUTHENTICATED => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

/// gRPC -> HTTP (NetScaler table); codes outside 0..=16 -> 500.
pub fn grpc_to_http(code: u32) -> u16 {
    match code {
        code::OK => 200,
        code::CANCELLED => 499,
        code::UNKNOWN => 500,
        code::INVALID_ARGUMENT => 400,
        code::DEADLINE_EXCEEDED => 504,
        code::NOT_FOUND => 404,
        code::ALREADY_EXISTS => 409,
        code::PERMISSION_DENIED => 403,
        code::RESOURCE_EXHAUSTED => 429,
        code::FAILED_PRECONDITION => 400,
        code::ABORTED => 409,
        code::OUT_OF_RANGE => 400,
        code::UNIMPLEMENTED => 501,
        code::INTERNAL => 500,
        code::UNAVAILABLE => 503,
        code::DATA_LOSS => 500,
        code::UNAUTHENTICATED => 401,
        _ => 500,
    }
}

/// HTTP -> gRPC (gRPC's http-grpc-status-mapping.md); anything unlisted -> UNKNOWN.
pub fn http_to_grpc(http: u16) -> u32 {
    match http {
        400 => code::INTERNAL,
        // 407: a forward proxy on the path wants credentials. Not in gRPC's table (which would
        // say UNKNOWN); it is an authentication failure, of the proxy hop.
        401 | 407 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// Parses a `grpc-status` value (`1*DIGIT`): ASCII digits only, no sign or whitespace.
/// None for empty, non-numeric or values that overflow `u32`.
pub fn parse_grpc_status(v: &[u8]) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u32, |acc, &b| {
        let digit = u32::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        acc.checked_mul(10)?.checked_add(digit)
    })
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes per PROTOCOL-HTTP2.md: bytes outside 0x20..=0x7E, and '%' itself, become
/// `%XX` (uppercase hex) of their UTF-8 bytes.
pub fn percent_encode(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for &b in msg.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            for nibble in [b >> 4, b & 0x0F] {
                let hex = HEX_UPPER.get(usize::from(nibble)).copied().unwrap_or(b'0');
                out.push(char::from(hex));
            }
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => b.checked_sub(b'0'),
        b'A'..=b'F' => b.checked_sub(b'A' - 10),
        b'a'..=b'f' => b.checked_sub(b'a' - 10),
        _ => None,
    }
}

/// Decodes `%XX` sequences (either hex case). Never fails: an invalid or incomplete sequence is
/// kept literally and invalid UTF-8 is replaced with U+FFFD, as PROTOCOL-HTTP2.md asks of
/// decoders ("MUST NOT error or throw away the message").
pub fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut rest = v;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            if let [h, l, after @ ..] = tail {
                if let (Some(h), Some(l)) = (hex_val(*h), hex_val(*l)) {
                    out.push((h << 4) | l);
                    rest = after;
                    continue;
                }
            }
        }
        out.push(b);
        rest = tail;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fully_enumerated() {
        let names = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        for (i, n) in names.iter().enumerate() {
            assert_eq!(code_name(i as u32), *n);
        }
        assert_eq!(code_name(17), "UNKNOWN_CODE");
        assert_eq!(code_name(u32::MAX), "UNKNOWN_CODE");
    }

    #[test]
    fn grpc_to_http_netscaler_table() {
        let table: [(u32, u16); 17] = [
            (0, 200),
            (1, 499),
            (2, 500),
            (3, 400),
            (4, 504),
            (5, 404),
            (6, 409),
            (7, 403),
            (8, 429),
            (9, 400),
            (10, 409),
            (11, 400),
            (12, 501),
            (13, 500),
            (14, 503),
            (15, 500),
            (16, 401),
        ];
        for (g, h) in table {
            assert_eq!(grpc_to_http(g), h, "grpc {g}");
        }
        for g in [17, 100, u32::MAX] {
            assert_eq!(grpc_to_http(g), 500);
        }
    }

    #[test]
    fn http_to_grpc_spec_table() {
        let table: [(u16, u32); 9] = [
            (400, code::INTERNAL),
            (401, code::UNAUTHENTICATED),
            (407, code::UNAUTHENTICATED),
            (403, code::PERMISSION_DENIED),
            (404, code::UNIMPLEMENTED),
            (429, code::UNAVAILABLE),
            (502, code::UNAVAILABLE),
            (503, code::UNAVAILABLE),
            (504, code::UNAVAILABLE),
        ];
        for (h, g) in table {
            assert_eq!(http_to_grpc(h), g, "http {h}");
        }
        // Every other status is UNKNOWN, including 200 and 500.
        for h in 0..=u16::MAX {
            if !table.iter().any(|(t, _)| *t == h) {
                assert_eq!(http_to_grpc(h), code::UNKNOWN, "http {h}");
            }
        }
    }

    #[test]
    fn grpc_status_parsing() {
        assert_eq!(parse_grpc_status(b"0"), Some(0));
        assert_eq!(parse_grpc_status(b"14"), Some(14));
        assert_eq!(parse_grpc_status(b"007"), Some(7));
        assert_eq!(parse_grpc_status(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"4294967296",
            b"99999999999999999999",
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"0x1",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse_grpc_status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn percent_encoding_spec_cases() {
        // Printable ASCII except '%' passes through; '%' and everything else is encoded.
        assert_eq!(
            percent_encode("my favorite character is \u{0000}"),
            "my favorite character is %00"
        );
        assert_eq!(
            percent_encode("my favorite character is %"),
            "my favorite character is %25"
        );
        assert_eq!(percent_encode("line\r\nbreak\t~"), "line%0D%0Abreak%09~");
        assert_eq!(percent_encode("\u{7f}"), "%7F");
        // UTF-8 bytes, uppercase hex.
        assert_eq!(percent_encode("ǅ"), "%C7%85");
        assert_eq!(percent_encode("€ 🙂"), "%E2%82%AC %F0%9F%99%82");
        assert_eq!(
            percent_encode(" !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"),
            " !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"
        );
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(
            percent_decode(b"my favorite character is %00"),
            "my favorite character is \u{0}"
        );
        assert_eq!(percent_decode(b"%C7%85 %c7%85"), "ǅ ǅ");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%4"), "%4");
        assert_eq!(percent_decode(b"%zz%4g%"), "%zz%4g%");
        assert_eq!(percent_decode(b"%%41"), "%A");
        // Invalid UTF-8 (encoded or raw) is replaced, the rest kept.
        assert_eq!(percent_decode(b"a%FFb"), "a\u{FFFD}b");
        assert_eq!(percent_decode(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(percent_decode(b"%C7"), "\u{FFFD}");
        assert_eq!(percent_decode(b""), "");
    }
}
