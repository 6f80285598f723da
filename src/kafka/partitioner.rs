//! Kafka's default partitioner for keyed records (murmur2, as the Java client and librdkafka's
//! `murmur2_random` compute it). The store and command topics are co-partitioned by `dlqId`, so
//! an instance can tell which entries it owns from the command partitions it was assigned.

/// Kafka's murmur2 hash of `data` (`org.apache.kafka.common.utils.Utils.murmur2`): the
/// `murmur2` crate's little-endian MurmurHash2 with Kafka's seed (the test below holds it to
/// Kafka's own vectors).
pub fn murmur2(data: &[u8]) -> i32 {
    murmur2::murmur2(data, murmur2::KAFKA_SEED) as i32
}

/// The partition a keyed record lands on among `partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_java_clients_murmur2() {
        // Vectors from Kafka's own UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    /// Kafka's `Utils.murmur2`, transcribed: the oracle for every length and tail the vectors
    /// above do not cover.
    fn kafka_utils_murmur2(data: &[u8]) -> i32 {
        const M: u32 = 0x5bd1_e995;
        let len = data.len();
        let mut h: u32 = 0x9747_b28c ^ (len as u32);
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            k = k.wrapping_mul(M);
            k ^= k >> 24;
            k = k.wrapping_mul(M);
            h = h.wrapping_mul(M) ^ k;
        }
        let tail = chunks.remainder();
        if tail.len() >= 3 {
            h ^= (tail[2] as u32) << 16;
        }
        if tail.len() >= 2 {
            h ^= (tail[1] as u32) << 8;
        }
        if !tail.is_empty() {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        h ^= h >> 13;
        h = h.wrapping_mul(M);
        h ^= h >> 15;
        h as i32
    }

    #[test]
    fn the_crate_agrees_with_kafkas_algorithm_for_every_length_and_byte() {
        let data: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        for len in 0..data.len() {
            for start in [0, 1, 7] {
                let slice = &data[start..(start + len).min(data.len())];
                assert_eq!(murmur2(slice), kafka_utils_murmur2(slice), "{slice:?}");
            }
        }
    }
}
