//! Helpers shared by the codec property tests (`codec_props.rs`, `codec_websocket.rs`).

use proptest::sample::Index;

/// Splits `data` at the given cut points (empty chunks allowed: a transport may hand over an
/// empty chunk, and every incremental parser must take it harmlessly).
pub fn split<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        chunks.push(&data[start..p]);
        start = p;
    }
    chunks.push(&data[start..]);
    chunks
}
