//! SHA-1 (FIPS 180-1), only for the WebSocket handshake's `Sec-WebSocket-Accept` value
//! (RFC 6455 §4.2.2), where it is a fixed transform rather than a security primitive. Nothing
//! here is used for integrity or authentication, and nothing should be.
//!
//! [`Sha1`] is incremental (the accept key hashes `key || GUID` without concatenating them);
//! [`sha1`] is the one-shot form.

/// Size of a SHA-1 digest in bytes.
pub const DIGEST_LEN: usize = 20;
/// Size of one compression block in bytes.
const BLOCK_LEN: usize = 64;

const H0: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// Incremental SHA-1.
#[derive(Clone)]
pub struct Sha1 {
    state: [u32; 5],
    /// Partial block; only the first `buf_len` bytes are meaningful.
    buf: [u8; BLOCK_LEN],
    buf_len: usize,
    /// Total message length in bytes (wrapping, as the standard's 64-bit bit count is mod 2^64).
    total: u64,
}

impl Default for Sha1 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha1 {
    pub fn new() -> Self {
        Sha1 {
            state: H0,
            buf: [0; BLOCK_LEN],
            buf_len: 0,
            total: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let room = BLOCK_LEN.saturating_sub(self.buf_len);
            let take = room.min(data.len());
            let (head, rest) = data.split_at_checked(take).unwrap_or((data, &[]));
            if let Some(dst) = self
                .buf
                .get_mut(self.buf_len..self.buf_len.saturating_add(take))
            {
                dst.copy_from_slice(head);
            }
            self.buf_len = self.buf_len.saturating_add(take);
            data = rest;
            if self.buf_len < BLOCK_LEN {
                return;
            }
            let block = self.buf;
            compress(&mut self.state, &block);
            self.buf_len = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK_LEN);
        for block in &mut blocks {
            if let Ok(block) = <&[u8; BLOCK_LEN]>::try_from(block) {
                compress(&mut self.state, block);
            }
        }
        let rem = blocks.remainder();
        if let Some(dst) = self.buf.get_mut(..rem.len()) {
            dst.copy_from_slice(rem);
        }
        self.buf_len = rem.len();
    }

    pub fn finish(mut self) -> [u8; DIGEST_LEN] {
        let bit_len = self.total.wrapping_mul(8);
        // Padding: 0x80, zeros up to 56 mod 64, then the 64-bit big-endian bit length.
        let pad_len = if self.buf_len < 56 {
            56usize.saturating_sub(self.buf_len)
        } else {
            120usize.saturating_sub(self.buf_len)
        };
        let mut pad = [0u8; 72];
        if let Some(first) = pad.first_mut() {
            *first = 0x80;
        }
        let total = self.total;
        self.update(pad.get(..pad_len).unwrap_or(&[]));
        self.update(&bit_len.to_be_bytes());
        self.total = total;
        let mut out = [0u8; DIGEST_LEN];
        for (dst, word) in out.chunks_exact_mut(4).zip(self.state) {
            dst.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// One-shot SHA-1 of `data`.
pub fn sha1(data: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha1::new();
    h.update(data);
    h.finish()
}

/// The SHA-1 compression function over one 64-byte block. The message schedule is kept as a
/// 16-word ring; every index is reduced with `& 15`, so it is always in bounds.
#[allow(clippy::indexing_slicing)]
fn compress(state: &mut [u32; 5], block: &[u8; BLOCK_LEN]) {
    let mut w = [0u32; 16];
    for (dst, src) in w.iter_mut().zip(block.chunks_exact(4)) {
        *dst = u32::from_be_bytes([
            src.first().copied().unwrap_or(0),
            src.get(1).copied().unwrap_or(0),
            src.get(2).copied().unwrap_or(0),
            src.get(3).copied().unwrap_or(0),
        ]);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *state;
    for t in 0..80usize {
        let wt = if t < 16 {
            w[t & 15]
        } else {
            let x = (w[t.wrapping_add(13) & 15]
                ^ w[t.wrapping_add(8) & 15]
                ^ w[t.wrapping_add(2) & 15]
                ^ w[t & 15])
                .rotate_left(1);
            w[t & 15] = x;
            x
        };
        let (f, k) = match t {
            0..=19 => ((b & c) | (!b & d), 0x5A82_7999u32),
            20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
            _ => (b ^ c ^ d, 0xCA62_C1D6),
        };
        let temp = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(wt);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = temp;
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e]) {
        *s = s.wrapping_add(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn fips_vectors() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(&sha1(&vec![b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
        // Two-block message with the length field spilling into the second padding block.
        assert_eq!(
            hex(&sha1(
                b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
            )),
            "a49b2446a02c645bf419f995b67091253a04a259"
        );
        assert_eq!(
            hex(&sha1(b"The quick brown fox jumps over the lazy dog")),
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
        );
    }

    #[test]
    fn incremental_equals_one_shot_for_every_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300] {
            let want = sha1(&data[..len]);
            for cut in 0..=len {
                let mut h = Sha1::new();
                h.update(&data[..cut]);
                h.update(&data[cut..len]);
                assert_eq!(h.finish(), want, "len {len} cut {cut}");
            }
            let mut h = Sha1::new();
            for b in &data[..len] {
                h.update(std::slice::from_ref(b));
            }
            assert_eq!(h.finish(), want, "len {len} byte-wise");
        }
    }
}
