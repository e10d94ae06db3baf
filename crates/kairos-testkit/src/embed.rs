//! Deterministic embedding vectors.

use base64::Engine as _;

/// Default number of dimensions.
pub(crate) const DEFAULT_DIMS: usize = 16;
/// Largest number of dimensions served.
pub(crate) const MAX_DIMS: usize = 8192;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A unit vector (L2 norm 1) derived from a hash of `seed`: same input, same vector.
pub(crate) fn unit_vector(seed: &[u8], dims: usize) -> Vec<f32> {
    let mut x = fnv1a(seed) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 40) as f32 / (1u64 << 24) as f32;
            unit * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    if norm > 0.0 {
        for a in &mut v {
            *a /= norm;
        }
    }
    v
}

/// Base64 of the little-endian f32 bytes (OpenAI `encoding_format: "base64"`).
pub(crate) fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Seed bytes for a token-array input.
pub(crate) fn token_seed(tokens: &[serde_json::Value]) -> Vec<u8> {
    tokens
        .iter()
        .flat_map(|t| t.as_u64().unwrap_or(0).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        let a = unit_vector(b"hello", 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, unit_vector(b"hello", 16));
        assert_ne!(a, unit_vector(b"hellp", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn base64_round_trips() {
        let v = vec![1.0f32, -0.5, 0.25];
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(to_base64(&v))
            .unwrap();
        let back: Vec<f32> = decoded
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, v);
    }
}
