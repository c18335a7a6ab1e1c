//! Header maps with Envoy's semantics and the proxy-wasm pairs wire format.

/// An ordered multi-map of lower-case header names to values, like Envoy's `HeaderMap`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from pairs; names are lower-cased like Envoy's `LowerCaseString`.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Self {
        let mut h = Self::new();
        for (k, v) in pairs {
            h.add(k.as_ref(), v.as_ref());
        }
        h
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every value of `name`, in order.
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// First value of `name` (Envoy's ABI also returns only the first one).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.values(name).collect()
    }

    /// `addCopy`: appends another entry even if the name exists.
    pub fn add(&mut self, name: &str, value: &str) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// `setCopy`: one entry with this value, kept at the position of the first old one.
    pub fn replace(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.entries.iter().position(|(k, _)| *k == name) {
            Some(pos) => {
                self.entries[pos].1 = value.to_string();
                let mut i = 0;
                self.entries.retain(|(k, _)| {
                    let keep = *k != name || i == pos;
                    i += 1;
                    keep
                });
            }
            None => self.entries.push((name, value.to_string())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|(k, _)| *k != name);
    }

    /// Envoy's `HeaderMap::byteSize()`: sum of name and value lengths.
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Serializes as proxy-wasm pairs: count, (name len, value len)*, then NUL-terminated strings.
    pub(crate) fn to_wire(&self) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = self
            .entries
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        encode_pairs(&pairs)
    }

    /// Parses proxy-wasm pairs the way proxy-wasm-cpp-host's `toPairs` does: a truncated or
    /// inconsistent buffer yields an empty map rather than an error.
    pub(crate) fn from_wire(buf: &[u8]) -> Self {
        let mut h = Headers::new();
        for (k, v) in decode_pairs(buf) {
            h.add(&String::from_utf8_lossy(&k), &String::from_utf8_lossy(&v));
        }
        h
    }
}

pub(crate) fn encode_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

pub(crate) fn decode_pairs(buf: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let word = |at: usize| -> Option<usize> {
        buf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(count) = word(0) else {
        return Vec::new();
    };
    if 4usize.saturating_add(count.saturating_mul(8)) > buf.len() {
        return Vec::new();
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        let (Some(k), Some(v)) = (word(4 + i * 8), word(8 + i * 8)) else {
            return Vec::new();
        };
        sizes.push((k, v));
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::with_capacity(count);
    for (k, v) in sizes {
        let Some(key) = buf.get(at..at.saturating_add(k)) else {
            return Vec::new();
        };
        at = at.saturating_add(k + 1);
        let Some(val) = buf.get(at..at.saturating_add(v)) else {
            return Vec::new();
        };
        at = at.saturating_add(v + 1);
        out.push((key.to_vec(), val.to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let h = Headers::from_pairs(&[(":status", "200"), ("X-A", "1"), ("x-a", "2")]);
        assert_eq!(Headers::from_wire(&h.to_wire()), h);
        assert_eq!(h.get("x-a"), Some("1"));
    }

    #[test]
    fn replace_keeps_one_entry_in_place() {
        let mut h = Headers::from_pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
        h.replace("a", "9");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "9"), ("b", "2")]);
    }

    #[test]
    fn truncated_pairs_are_empty() {
        assert!(decode_pairs(&[5, 0, 0, 0, 1]).is_empty());
    }
}
