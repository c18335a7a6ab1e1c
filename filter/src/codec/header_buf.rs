//! A fixed-size frame header gathered across chunks: the gRPC length prefix (5 bytes) and the
//! HTTP/2 frame header (9 bytes) both arrive cut anywhere.

/// The first `N` bytes of a frame, as many as have arrived.
#[derive(Debug, Clone, Copy)]
pub struct HeaderBuf<const N: usize> {
    bytes: [u8; N],
    have: usize,
}

impl<const N: usize> Default for HeaderBuf<N> {
    fn default() -> Self {
        HeaderBuf {
            bytes: [0; N],
            have: 0,
        }
    }
}

impl<const N: usize> HeaderBuf<N> {
    /// Copies as many header bytes as are missing from the front of `input`; returns how many
    /// were taken. Never takes more than the header needs.
    pub fn fill(&mut self, input: &[u8]) -> usize {
        let take = self.missing().min(input.len());
        if let (Some(dst), Some(src)) = (
            self.bytes
                .get_mut(self.have..self.have.saturating_add(take)),
            input.get(..take),
        ) {
            dst.copy_from_slice(src);
            self.have = self.have.saturating_add(take);
            take
        } else {
            0
        }
    }

    /// Header bytes received so far.
    pub fn have(&self) -> usize {
        self.have
    }

    /// Header bytes still to come.
    pub fn missing(&self) -> usize {
        N.saturating_sub(self.have)
    }

    pub fn is_empty(&self) -> bool {
        self.have == 0
    }

    pub fn is_full(&self) -> bool {
        self.have >= N
    }

    /// The header bytes (meaningful once full).
    pub fn bytes(&self) -> [u8; N] {
        self.bytes
    }

    /// The whole header once it is full, and the buffer emptied for the next one.
    pub fn take_full(&mut self) -> Option<[u8; N]> {
        if !self.is_full() {
            return None;
        }
        self.have = 0;
        Some(self.bytes)
    }
}
