//! Helpers shared by the fuzz targets: a little reader for the parameter bytes at the front of
//! an input, and input-driven chunking.
//!
//! Every target reads a few parameter bytes first (limits, chunking plan, flags) and treats the
//! rest as the byte stream under test. Missing parameter bytes read as zero, so every input,
//! even the empty one, is usable.
//!
//! A chunking *plan* is a `u16`: the low 4 bits pick the largest chunk size (1 byte ... whole
//! stream), bit 4 makes every chunk exactly that size instead of a random size up to it, bit 5
//! inserts empty chunks now and then, and the top 10 bits seed the random sizes. So the fuzzer
//! controls the cuts with two bytes while the stream itself stays contiguous (and the seed
//! corpus stays readable).

/// Reads parameters from the front of a fuzz input.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    pub fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Takes up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        head
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Everything not consumed yet.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// A small, fast, deterministic PRNG (xorshift32).
pub struct Rng(u32);

impl Rng {
    pub fn new(seed: u32) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9) | 1)
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Uniform-ish in `1..=max` (`max` >= 1).
    pub fn between_1_and(&mut self, max: usize) -> usize {
        if max <= 1 {
            return 1;
        }
        1 + (self.next_u32() as usize) % max
    }
}

const MAX_CHUNK: [usize; 16] = [
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    9,
    13,
    16,
    17,
    31,
    64,
    257,
    4096,
    usize::MAX,
];

/// Cuts `data` into chunks following `plan` (see the module docs). Concatenating the chunks
/// gives `data` back; some chunks may be empty when the plan asks for them.
pub fn chunks(data: &[u8], plan: u16) -> Vec<&[u8]> {
    let max = MAX_CHUNK[usize::from(plan & 0x0F)];
    let fixed = plan & 0x10 != 0;
    let empties = plan & 0x20 != 0;
    let mut rng = Rng::new(u32::from(plan >> 6));
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if empties && rng.next_u32().is_multiple_of(8) {
            out.push(&rest[..0]);
        }
        let n = if fixed {
            max
        } else {
            rng.between_1_and(max.min(rest.len()))
        }
        .min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    if empties {
        out.push(&data[data.len()..]);
    }
    out
}

/// Like [`chunks`], but never more than about `max_pieces` chunks: for large generated
/// streams, where byte-by-byte cutting would only slow the fuzzer down.
pub fn chunks_at_most(data: &[u8], plan: u16, max_pieces: usize) -> Vec<&[u8]> {
    let cut = chunks(data, plan);
    if cut.len() <= max_pieces {
        return cut;
    }
    let min = data.len().div_ceil(max_pieces.max(1));
    let mut rng = Rng::new(u32::from(plan));
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = (min + rng.next_u32() as usize % min).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// Offsets at which each chunk of `chunks(data, plan)` starts (same length as the chunk list).
pub fn chunk_offsets(chunks: &[&[u8]]) -> Vec<usize> {
    let mut at = 0;
    chunks
        .iter()
        .map(|c| {
            let start = at;
            at += c.len();
            start
        })
        .collect()
}

/// A size limit from two parameter bytes: mostly small limits (so "too large" paths are hit
/// with short inputs), sometimes large, sometimes `u32::MAX`.
pub fn limit_u32(v: u16) -> u32 {
    match v >> 14 {
        0 => u32::from(v & 0x3F),
        1 => u32::from(v & 0x3FFF),
        2 => u32::from(v & 0x3FFF) << 10,
        _ => u32::MAX,
    }
}

/// Lowercase hex, for assertion messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
