//! Sequenced messages for the load and soak tests (`tests/soak.rs`): each carries its stream id,
//! its sequence number and an FNV-1a checksum, and its payload is a function of both, so a lost,
//! duplicated, reordered, corrupted or misrouted message is caught by the receiver (the tonic
//! client for responses, the backend for requests).

use crate::pb::SeqMessage;

/// FNV-1a 32 of `stream`, `seq` (little endian) and `payload`.
pub fn checksum(stream: u32, seq: u32, payload: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in stream
        .to_le_bytes()
        .iter()
        .chain(seq.to_le_bytes().iter())
        .chain(payload.iter())
    {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The payload of message `seq` of `stream`: `size` bytes that differ between streams and
/// between messages.
pub fn payload(stream: u32, seq: u32, size: usize) -> Vec<u8> {
    let base = stream.wrapping_mul(131).wrapping_add(seq.wrapping_mul(7));
    (0..size)
        .map(|i| (base.wrapping_add(i as u32 * 13) % 251) as u8)
        .collect()
}

pub fn message(stream: u32, seq: u32, size: usize) -> SeqMessage {
    let payload = payload(stream, seq, size);
    SeqMessage {
        stream,
        seq,
        checksum: checksum(stream, seq, &payload),
        payload,
    }
}

/// Err (what is wrong) unless `m` is message `seq` of `stream` with a payload of `size` bytes
/// (`None`: any size).
pub fn check(m: &SeqMessage, stream: u32, seq: u32, size: Option<usize>) -> Result<(), String> {
    if m.stream != stream || m.seq != seq {
        return Err(format!(
            "stream {stream}: want seq {seq}, got stream {} seq {}",
            m.stream, m.seq
        ));
    }
    if let Some(n) = size {
        if m.payload.len() != n {
            return Err(format!(
                "stream {stream} seq {seq}: {} payload bytes, want {n}",
                m.payload.len()
            ));
        }
    }
    if checksum(stream, seq, &m.payload) != m.checksum {
        return Err(format!("stream {stream} seq {seq}: checksum mismatch"));
    }
    if m.payload != payload(stream, seq, m.payload.len()) {
        return Err(format!("stream {stream} seq {seq}: payload differs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_corruption_and_misordering() {
        let m = message(3, 9, 40);
        assert!(check(&m, 3, 9, Some(40)).is_ok());
        assert!(check(&m, 3, 8, None).is_err());
        assert!(check(&m, 4, 9, None).is_err());
        assert!(check(&m, 3, 9, Some(41)).is_err());
        let mut bad = m.clone();
        bad.payload[17] ^= 1;
        assert!(check(&bad, 3, 9, None).is_err());
        let mut bad = m;
        bad.checksum ^= 1;
        assert!(check(&bad, 3, 9, None).is_err());
        assert_ne!(payload(1, 2, 16), payload(2, 1, 16));
    }
}
