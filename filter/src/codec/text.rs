//! Streaming base64 for `application/grpc-web-text` (PROTOCOL-WEB.md "Text-encoded streams").
//!
//! The body is standard-alphabet base64 (RFC 4648 §4) with `=` padding, but it is *not* one
//! base64 document: a sender base64-encodes each flush separately, so a padded quantum
//! (`xx==` or `xxx=`) may end any 4-character group in mid-stream and decoding simply
//! restarts at the next group. For example `"AAAAAAE="` (a frame header + 1 byte, padded)
//! followed by `"gAAAAA8="` (the start of a trailer frame) is a valid stream.
//!
//! Bytes arrive split at arbitrary points, so [`Base64Decoder`] carries an incomplete group
//! (< 4 characters) between calls, and [`Base64Encoder`] carries < 3 input bytes until it can
//! emit a full group or is flushed. Anything outside the alphabet and `=` (including CR, LF
//! and spaces) is rejected: gRPC-web senders never emit it, and tolerating it would only widen
//! what a hostile body can smuggle past the proxy. Unused low bits in a padded quantum are
//! ignored, as most decoders do.
//!
//! Both directions are table-driven and process whole groups in a tight loop; the per-character
//! state machine is only used for group remainders across chunk edges and for padding/errors.

use std::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marker in [`DECODE`] for '='.
const PAD: u8 = 0xFE;
/// Marker in [`DECODE`] for bytes outside the alphabet.
const INVALID: u8 = 0xFF;

/// Byte -> 6-bit value, or PAD / INVALID. Both markers have the top two bits set, so one OR
/// over a group's four lookups tells whether the group is plain data.
// Evaluated at compile time: an out-of-bounds index here would fail the build, not panic.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t[b'=' as usize] = PAD;
    t
};

/// Table lookup. A `u8` index into a 256-entry table cannot be out of bounds.
#[inline(always)]
#[allow(clippy::indexing_slicing)]
fn lut(c: u8) -> u8 {
    DECODE[usize::from(c)]
}

/// 6-bit value -> symbol; the mask keeps the index below 64.
#[inline(always)]
#[allow(clippy::indexing_slicing)]
fn sym(x: u8) -> u8 {
    ALPHABET[usize::from(x & 0x3F)]
}

/// Why a grpc-web-text body was rejected. Offsets count base64 characters from the start of
/// the stream (across all `decode` calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    InvalidByte {
        offset: u64,
        byte: u8,
    },
    BadPadding {
        offset: u64,
    },
    /// The stream ended inside a 4-character group.
    Truncated,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::InvalidByte { offset, byte } => {
                write!(f, "invalid base64 byte 0x{byte:02x} at offset {offset}")
            }
            TextError::BadPadding { offset } => {
                write!(f, "misplaced base64 padding at offset {offset}")
            }
            TextError::Truncated => f.write_str("base64 body ends inside a 4-character group"),
        }
    }
}

impl std::error::Error for TextError {}

/// Incremental decoder. Errors are sticky: once `decode` fails, later calls (and `finish`)
/// return the same error and append nothing. Everything before the 4-character group that
/// contains the bad byte has been appended to `out`, independent of how input was chunked.
#[derive(Debug, Clone, Default)]
pub struct Base64Decoder {
    /// 6-bit values of the current group.
    quad: [u8; 4],
    /// Characters of the current group seen so far (0..=3 between calls).
    n: u8,
    /// Number of '=' in the current group.
    pads: u8,
    /// Characters consumed since the start of the stream.
    pos: u64,
    error: Option<TextError>,
}

impl Base64Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes as much as possible, appending to `out`; keeps an incomplete group for the next
    /// call. Accepts '=' padding ending a group anywhere in the stream (decoding restarts at the
    /// next group). Rejects anything outside the alphabet and '='.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), TextError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.decode_inner(input, out) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn decode_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), TextError> {
        out.reserve((input.len() / 4).saturating_mul(3).saturating_add(3));
        let mut rest = input;
        // Complete a group carried over from the previous call.
        while self.n != 0 {
            let Some((&c, tail)) = rest.split_first() else {
                return Ok(());
            };
            self.push_char(c, out)?;
            rest = tail;
        }
        // Clean groups are written into place (room made once for all of them, a 3-byte store
        // each: a 3-byte `extend_from_slice` per group costs, in wasm, a call); `written` is
        // where the next one goes and `out` is cut back to it before anything else appends (a
        // padded group is decoded aside and copied into its room: no re-zeroing of the rest).
        let mut groups = rest.chunks_exact(4);
        let mut written = out.len();
        out.resize(written.saturating_add(groups.len().saturating_mul(3)), 0);
        let mut slow = Vec::new();
        for g in &mut groups {
            let &[a, b, c, d] = g else { continue };
            let (va, vb, vc, vd) = (lut(a), lut(b), lut(c), lut(d));
            if (va | vb | vc | vd) & 0xC0 == 0 {
                let end = written.saturating_add(3);
                if let Some(Ok(o)) = out.get_mut(written..end).map(<&mut [u8; 3]>::try_from) {
                    *o = [(va << 2) | (vb >> 4), (vb << 4) | (vc >> 2), (vc << 6) | vd];
                }
                written = end;
                self.pos = self.pos.saturating_add(4);
            } else {
                // Padding or an error: the exact per-character rules decide. The group starts
                // at a group boundary, so it yields at most 3 bytes: its own room in `out`.
                slow.clear();
                let res = g.iter().try_for_each(|&ch| self.push_char(ch, &mut slow));
                let end = written.saturating_add(slow.len());
                if let Some(dst) = out.get_mut(written..end) {
                    dst.copy_from_slice(&slow);
                }
                written = end;
                if let Err(e) = res {
                    out.truncate(written);
                    return Err(e);
                }
            }
        }
        out.truncate(written);
        for &ch in groups.remainder() {
            self.push_char(ch, out)?;
        }
        Ok(())
    }

    /// The per-character state machine; `self.pos` is the offset of `c`.
    fn push_char(&mut self, c: u8, out: &mut Vec<u8>) -> Result<(), TextError> {
        let v = lut(c);
        let offset = self.pos;
        match (v, self.n, self.pads) {
            (INVALID, _, _) => return Err(TextError::InvalidByte { offset, byte: c }),
            // '=' may only stand in the last two positions of a group.
            (PAD, 0 | 1, _) => return Err(TextError::BadPadding { offset }),
            (PAD, _, _) => self.pads = self.pads.saturating_add(1),
            // After "xx=" only a second '=' may follow.
            (_, _, 1..) => return Err(TextError::BadPadding { offset }),
            (_, n, _) => {
                if let Some(slot) = self.quad.get_mut(usize::from(n)) {
                    *slot = v;
                }
            }
        }
        self.n = self.n.saturating_add(1);
        self.pos = self.pos.saturating_add(1);
        if self.n == 4 {
            let [a, b, c, d] = self.quad;
            let bytes = [(a << 2) | (b >> 4), (b << 4) | (c >> 2), (c << 6) | d];
            // pads is 0, 1 or 2 here; a padded group carries 3 - pads bytes.
            let keep = 3usize.saturating_sub(usize::from(self.pads));
            out.extend_from_slice(bytes.get(..keep).unwrap_or(&[]));
            self.quad = [0; 4];
            self.n = 0;
            self.pads = 0;
        }
        Ok(())
    }

    /// Call at end of stream: `Err(Truncated)` if a partial group remains (or the sticky error).
    pub fn finish(&self) -> Result<(), TextError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.n != 0 {
            return Err(TextError::Truncated);
        }
        Ok(())
    }

    /// True if no partial group is carried (a `finish` now would succeed, barring errors).
    pub fn at_group_boundary(&self) -> bool {
        self.n == 0
    }
}

/// Incremental encoder producing padded standard base64.
#[derive(Debug, Clone, Default)]
pub struct Base64Encoder {
    carry: [u8; 2],
    n: usize,
}

#[inline]
fn encode_group(a: u8, b: u8, c: u8) -> [u8; 4] {
    [
        sym(a >> 2),
        sym((a << 4) | (b >> 4)),
        sym((b << 2) | (c >> 6)),
        sym(c),
    ]
}

impl Base64Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits only complete 3-byte groups, carrying the remaining 0-2 bytes.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(
            input
                .len()
                .saturating_add(self.n)
                .saturating_div(3)
                .saturating_mul(4),
        );
        let mut rest = input;
        if self.n > 0 {
            let need = 3usize.saturating_sub(self.n).min(rest.len());
            let (head, tail) = rest.split_at_checked(need).unwrap_or((rest, &[]));
            rest = tail;
            match (self.n, head) {
                (1, &[b, c]) => out.extend_from_slice(&encode_group(self.carry[0], b, c)),
                (2, &[c]) => out.extend_from_slice(&encode_group(self.carry[0], self.carry[1], c)),
                (1, &[b]) => {
                    self.carry[1] = b;
                    self.n = 2;
                    return;
                }
                _ => return, // head is empty: nothing to do
            }
            self.n = 0;
        }
        // Whole groups are written into place: one resize, then a 4-byte store per group (a
        // 4-byte `extend_from_slice` per group costs a capacity check and, in wasm, a call).
        let mut groups = rest.chunks_exact(3);
        let start = out.len();
        out.resize(start.saturating_add(groups.len().saturating_mul(4)), 0);
        if let Some(dst) = out.get_mut(start..) {
            for (g, o) in (&mut groups).zip(dst.chunks_exact_mut(4)) {
                if let (&[a, b, c], Ok(o)) = (g, <&mut [u8; 4]>::try_from(o)) {
                    *o = encode_group(a, b, c);
                }
            }
        }
        match *groups.remainder() {
            [a] => {
                self.carry = [a, 0];
                self.n = 1;
            }
            [a, b] => {
                self.carry = [a, b];
                self.n = 2;
            }
            _ => {}
        }
    }

    /// Emits the carried 1-2 bytes as a padded group (nothing if none are carried).
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        let [a, b] = self.carry;
        match self.n {
            1 => {
                let [x, y, _, _] = encode_group(a, 0, 0);
                out.extend_from_slice(&[x, y, b'=', b'=']);
            }
            2 => {
                let [x, y, z, _] = encode_group(a, b, 0);
                out.extend_from_slice(&[x, y, z, b'=']);
            }
            _ => {}
        }
        self.carry = [0; 2];
        self.n = 0;
    }

    /// Bytes carried, waiting for a full group or a flush.
    pub fn pending(&self) -> usize {
        self.n
    }
}

/// One-shot padded encoding, appended to `out`.
pub fn encode_padded(input: &[u8], out: &mut Vec<u8>) {
    let mut e = Base64Encoder::new();
    e.encode(input, out);
    e.flush(out);
}

/// One-shot decoding; padding is allowed between groups.
pub fn decode_all(input: &[u8]) -> Result<Vec<u8>, TextError> {
    let mut d = Base64Decoder::new();
    let mut out = Vec::new();
    d.decode(input, &mut out)?;
    d.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        let mut out = Vec::new();
        encode_padded(b, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc4648_test_vectors() {
        let v = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, b64) in v {
            assert_eq!(enc(plain.as_bytes()), b64);
            assert_eq!(decode_all(b64.as_bytes()).unwrap(), plain.as_bytes());
        }
        // All 64 symbols, including '+' and '/'.
        let all: Vec<u8> = (0u8..=255).collect();
        let e = enc(&all);
        assert!(e.contains('+') && e.contains('/'));
        assert_eq!(decode_all(e.as_bytes()).unwrap(), all);
    }

    #[test]
    fn padding_between_frames() {
        // A data frame header + 1-byte payload, flushed and padded, then a trailer frame
        // header, flushed and padded separately: valid grpc-web-text.
        let mut s = enc(&[0, 0, 0, 0, 1, 0x01]);
        assert_eq!(s, "AAAAAAEB");
        s = enc(&[0, 0, 0, 0, 1]);
        assert_eq!(s, "AAAAAAE=");
        let t = enc(&[0x80, 0, 0, 0, 0x0f]);
        assert_eq!(t, "gAAAAA8=");
        let joined = format!("{s}{t}");
        assert_eq!(
            decode_all(joined.as_bytes()).unwrap(),
            [0, 0, 0, 0, 1, 0x80, 0, 0, 0, 0x0f]
        );
        // Same with the padded group split across calls, and "==" padding mid-stream.
        let mut d = Base64Decoder::new();
        let mut out = Vec::new();
        d.decode(b"AAAAAA", &mut out).unwrap();
        d.decode(b"E=gA", &mut out).unwrap();
        d.decode(b"AAAA8=Zg==Zm8=", &mut out).unwrap();
        d.finish().unwrap();
        assert_eq!(out, [0, 0, 0, 0, 1, 0x80, 0, 0, 0, 0x0f, b'f', b'f', b'o']);
    }

    #[test]
    fn rejects_whitespace_and_foreign_bytes() {
        assert_eq!(
            decode_all(b"Zm9v\r\nYmFy"),
            Err(TextError::InvalidByte {
                offset: 4,
                byte: b'\r'
            })
        );
        assert_eq!(
            decode_all(b"Zm9v YmFy"),
            Err(TextError::InvalidByte {
                offset: 4,
                byte: b' '
            })
        );
        // URL-safe alphabet is not grpc-web-text.
        assert_eq!(
            decode_all(b"ab-_"),
            Err(TextError::InvalidByte {
                offset: 2,
                byte: b'-'
            })
        );
        assert_eq!(
            decode_all(b"Zm9\xff"),
            Err(TextError::InvalidByte {
                offset: 3,
                byte: 0xff
            })
        );
    }

    #[test]
    fn rejects_misplaced_padding() {
        let cases: [(&[u8], u64); 4] = [(b"====", 0), (b"Z===", 1), (b"Zm=v", 3), (b"Zm9vZ=8=", 5)];
        for (input, offset) in cases {
            assert_eq!(
                decode_all(input),
                Err(TextError::BadPadding { offset }),
                "{input:?}"
            );
        }
        // Unpadded tail is a truncated stream.
        assert_eq!(decode_all(b"Zm9vYg"), Err(TextError::Truncated));
        assert_eq!(decode_all(b"Zm9vY"), Err(TextError::Truncated));
    }

    #[test]
    fn offsets_count_across_calls_and_errors_stick() {
        let mut d = Base64Decoder::new();
        let mut out = Vec::new();
        d.decode(b"Zm9vY", &mut out).unwrap();
        assert_eq!(out, b"foo");
        assert!(!d.at_group_boundary());
        let e = d.decode(b"m!", &mut out).unwrap_err();
        assert_eq!(
            e,
            TextError::InvalidByte {
                offset: 6,
                byte: b'!'
            }
        );
        assert_eq!(out, b"foo", "nothing from the failing group is emitted");
        assert_eq!(d.decode(b"Zm9v", &mut out), Err(e.clone()));
        assert_eq!(out, b"foo");
        assert_eq!(d.finish(), Err(e));
    }

    #[test]
    fn non_canonical_trailing_bits_are_ignored() {
        assert_eq!(decode_all(b"Zh==").unwrap(), b"f");
        assert_eq!(decode_all(b"Zm9=").unwrap(), b"fo");
    }

    #[test]
    fn encoder_carries_and_flushes() {
        let mut e = Base64Encoder::new();
        let mut out = Vec::new();
        e.encode(b"f", &mut out);
        assert_eq!(e.pending(), 1);
        assert!(out.is_empty());
        e.encode(b"o", &mut out);
        assert_eq!(e.pending(), 2);
        assert!(out.is_empty());
        e.encode(b"oba", &mut out);
        assert_eq!(out, b"Zm9v");
        assert_eq!(e.pending(), 2);
        e.flush(&mut out);
        assert_eq!(out, b"Zm9vYmE=");
        assert_eq!(e.pending(), 0);
        e.flush(&mut out);
        assert_eq!(out, b"Zm9vYmE=", "flush with nothing pending emits nothing");
        e.encode(b"", &mut out);
        e.encode(b"r", &mut out);
        e.flush(&mut out);
        assert_eq!(out, b"Zm9vYmE=cg==");
        assert_eq!(decode_all(&out).unwrap(), b"foobar");
    }

    #[test]
    fn encoder_completes_carry_with_long_input() {
        let mut e = Base64Encoder::new();
        let mut out = Vec::new();
        e.encode(b"fo", &mut out);
        e.encode(b"obar!", &mut out);
        assert_eq!(out, b"Zm9vYmFy");
        assert_eq!(e.pending(), 1);
        e.flush(&mut out);
        assert_eq!(decode_all(&out).unwrap(), b"foobar!");
    }

    #[test]
    fn display_messages() {
        assert_eq!(
            TextError::InvalidByte {
                offset: 7,
                byte: 0x2a
            }
            .to_string(),
            "invalid base64 byte 0x2a at offset 7"
        );
        assert!(TextError::BadPadding { offset: 3 }
            .to_string()
            .contains('3'));
    }
}
