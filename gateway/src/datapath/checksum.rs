//! S3's object checksums: the five algorithms S3 offers, computed in the write's one pass
//! over the body, what a version records of them, and a multipart object's checksum from
//! its parts' (composite: a checksum of the part checksums; full object: part CRCs
//! combined into the CRC of the whole).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;

/// A checksum algorithm of S3 (`x-amz-checksum-<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// S3's name: `CRC32`, `CRC32C`, `CRC64NVME`, `SHA1`, `SHA256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The algorithm S3 calls `name` (any case).
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The header (and trailer) carrying a value: `x-amz-checksum-crc32`, ...
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// Bytes of a digest.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// Whether S3 can give a multipart object of this algorithm a checksum of the whole
    /// object (CRCs combine; SHA digests do not).
    pub fn combines(self) -> bool {
        matches!(
            self,
            Algorithm::Crc32 | Algorithm::Crc32c | Algorithm::Crc64nvme
        )
    }

    /// Whether S3 offers composite multipart checksums of it (all but CRC64NVME).
    pub fn composes(self) -> bool {
        self != Algorithm::Crc64nvme
    }

    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Algorithm::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Algorithm::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Algorithm::Crc64nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            Algorithm::Sha1 | Algorithm::Sha256 => None,
        }
    }

    /// The digest of `data`, raw.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new([self]);
        h.update(data);
        h.finish_raw().remove(&self).unwrap_or_default()
    }
}

/// How a multipart object's checksum was made (`x-amz-checksum-type`); a single PUT is
/// always `FullObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    FullObject,
    Composite,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::FullObject => "FULL_OBJECT",
            Kind::Composite => "COMPOSITE",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        [Kind::FullObject, Kind::Composite]
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// Checksums of one body, base64 as S3 shows them, by algorithm.
pub type Sums = BTreeMap<Algorithm, String>;

/// The checksum a version records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectChecksum {
    pub algorithm: Algorithm,
    pub kind: Kind,
    /// Base64 digest; for a composite checksum without S3's `-N` suffix.
    pub value: String,
    /// A multipart object's parts (number and checksum of `algorithm`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartChecksum>,
}

impl ObjectChecksum {
    /// The value as S3 answers it in headers: a composite checksum with `-<parts>`.
    pub fn header_value(&self) -> String {
        match self.kind {
            Kind::Composite => format!("{}-{}", self.value, self.parts.len()),
            Kind::FullObject => self.value.clone(),
        }
    }
}

/// One part of a multipart object's checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartChecksum {
    pub number: i32,
    pub value: String,
}

/// The algorithm and kind a multipart upload was started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChecksumSpec {
    pub algorithm: Algorithm,
    pub kind: Kind,
}

/// Computes any of the algorithms at once over a body fed in chunks.
#[derive(Default)]
pub struct Hasher {
    crcs: Vec<(Algorithm, crc_fast::Digest)>,
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
}

impl Hasher {
    pub fn new(algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        let mut h = Hasher::default();
        for a in algorithms {
            match (a, a.crc()) {
                (_, Some(crc)) => {
                    if !h.crcs.iter().any(|(b, _)| *b == a) {
                        h.crcs.push((a, crc_fast::Digest::new(crc)));
                    }
                }
                (Algorithm::Sha1, None) => h.sha1 = Some(sha1::Sha1::new()),
                (_, None) => h.sha256 = Some(sha2::Sha256::new()),
            }
        }
        h
    }

    pub fn update(&mut self, data: &[u8]) {
        for (_, d) in &mut self.crcs {
            d.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
    }

    fn finish_raw(self) -> BTreeMap<Algorithm, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (a, d) in self.crcs {
            let v = d.finalize();
            let raw = if a.digest_len() == 4 {
                u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes().to_vec()
            } else {
                v.to_be_bytes().to_vec()
            };
            out.insert(a, raw);
        }
        if let Some(h) = self.sha1 {
            out.insert(Algorithm::Sha1, h.finalize().to_vec());
        }
        if let Some(h) = self.sha256 {
            out.insert(Algorithm::Sha256, h.finalize().to_vec());
        }
        out
    }

    /// The checksums, base64.
    pub fn finish(self) -> Sums {
        self.finish_raw()
            .into_iter()
            .map(|(a, raw)| (a, encode(&raw)))
            .collect()
    }
}

pub fn encode(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The raw digest of a base64 value of `algorithm`; `None` when it is not one.
pub fn decode(algorithm: Algorithm, value: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .filter(|raw| raw.len() == algorithm.digest_len())
}

/// The checksum of a multipart object from its parts' checksums of `algorithm` (base64)
/// and sizes, in order, as S3 defines it: composite, the digest of the concatenated part
/// digests; full object, the part CRCs combined into the CRC of the whole body. An error
/// names what cannot be done.
pub fn multipart(
    algorithm: Algorithm,
    kind: Kind,
    parts: &[(&str, u64)],
) -> Result<String, String> {
    let mut raws = Vec::with_capacity(parts.len());
    for (i, (value, _)) in parts.iter().enumerate() {
        raws.push(decode(algorithm, value).ok_or_else(|| {
            format!(
                "the {} checksum of the upload's part #{} is malformed",
                algorithm.name(),
                i + 1
            )
        })?);
    }
    match kind {
        Kind::Composite => {
            if !algorithm.composes() {
                return Err(format!(
                    "{} checksums are full-object only",
                    algorithm.name()
                ));
            }
            Ok(encode(&algorithm.digest(&raws.concat())))
        }
        Kind::FullObject => {
            let crc = algorithm.crc().ok_or_else(|| {
                format!(
                    "{} checksums cannot be combined into a full-object checksum: use COMPOSITE",
                    algorithm.name()
                )
            })?;
            let mut whole: Option<u64> = None;
            for (raw, (_, size)) in raws.iter().zip(parts) {
                let mut be = [0u8; 8];
                be[8 - raw.len()..].copy_from_slice(raw);
                let part = u64::from_be_bytes(be);
                whole = Some(match whole {
                    None => part,
                    Some(acc) => crc_fast::checksum_combine(crc, acc, part, *size),
                });
            }
            let whole = whole.unwrap_or_else(|| crc_fast::checksum(crc, b""));
            let be = whole.to_be_bytes();
            Ok(encode(&be[8 - algorithm.digest_len()..]))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sums(data: &[u8]) -> Sums {
        let mut h = Hasher::new(Algorithm::ALL);
        // Fed in uneven chunks, as a body arrives.
        for chunk in data.chunks(3) {
            h.update(chunk);
        }
        h.finish()
    }

    #[test]
    fn every_algorithm_gives_its_known_answer() {
        // The CRC catalogue's check values (over "123456789").
        let check = sums(b"123456789");
        assert_eq!(
            decode(Algorithm::Crc32, &check[&Algorithm::Crc32]).unwrap(),
            0xcbf4_3926u32.to_be_bytes()
        );
        assert_eq!(
            decode(Algorithm::Crc32c, &check[&Algorithm::Crc32c]).unwrap(),
            0xe306_9283u32.to_be_bytes()
        );
        assert_eq!(
            decode(Algorithm::Crc64nvme, &check[&Algorithm::Crc64nvme]).unwrap(),
            0xae8b_1486_0a79_9888u64.to_be_bytes()
        );
        // "hello world" as S3 headers carry it (computed with Python's zlib and hashlib).
        let s = sums(b"hello world");
        assert_eq!(s[&Algorithm::Crc32], "DUoRhQ==");
        assert_eq!(s[&Algorithm::Crc32c], "yZRlqg==");
        assert_eq!(s[&Algorithm::Crc64nvme], "jSnVw/bqjr4=");
        assert_eq!(s[&Algorithm::Sha1], "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert_eq!(
            s[&Algorithm::Sha256],
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
        );
    }

    #[test]
    fn only_the_algorithms_asked_for_are_computed() {
        let mut h = Hasher::new([Algorithm::Sha256, Algorithm::Crc32, Algorithm::Crc32]);
        h.update(b"hello world");
        let s = h.finish();
        assert_eq!(
            s.keys().copied().collect::<Vec<_>>(),
            [Algorithm::Crc32, Algorithm::Sha256]
        );
        assert!(Hasher::new([]).finish().is_empty());
    }

    #[test]
    fn composite_checksums_are_the_digest_of_the_part_digests() {
        // Parts "hello " and "world" (vectors computed with Python's zlib and hashlib).
        let cases = [
            (Algorithm::Crc32, "1Fu2mQ=="),
            (Algorithm::Crc32c, "vUZpoA=="),
            (Algorithm::Sha1, "9oeo+kMlG3hL6irRRMB+8GuSWwc="),
            (
                Algorithm::Sha256,
                "Zhie15keHg/OBlOZxcoF/BXCgYZaeimRvdZnwUZqkaQ=",
            ),
        ];
        for (a, want) in cases {
            let p1 = encode(&a.digest(b"hello "));
            let p2 = encode(&a.digest(b"world"));
            let got = multipart(a, Kind::Composite, &[(&p1, 6), (&p2, 5)]).unwrap();
            assert_eq!(got, want, "{a:?}");
        }
        assert!(multipart(Algorithm::Crc64nvme, Kind::Composite, &[]).is_err());
    }

    #[test]
    fn full_object_checksums_combine_part_crcs_into_the_whole_bodys() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let cuts = [0usize, 33_333, 70_001, 100_000];
        for a in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64nvme] {
            let parts: Vec<(String, u64)> = cuts
                .windows(2)
                .map(|w| (encode(&a.digest(&body[w[0]..w[1]])), (w[1] - w[0]) as u64))
                .collect();
            let refs: Vec<(&str, u64)> = parts.iter().map(|(v, n)| (v.as_str(), *n)).collect();
            let got = multipart(a, Kind::FullObject, &refs).unwrap();
            assert_eq!(got, encode(&a.digest(&body)), "{a:?}");
        }
        // "hello world" in two parts gives the whole body's known CRC64NVME.
        let a = Algorithm::Crc64nvme;
        let (p1, p2) = (encode(&a.digest(b"hello ")), encode(&a.digest(b"world")));
        assert_eq!(
            multipart(a, Kind::FullObject, &[(&p1, 6), (&p2, 5)]).unwrap(),
            "jSnVw/bqjr4="
        );
        let err = multipart(Algorithm::Sha256, Kind::FullObject, &[]).unwrap_err();
        assert!(err.contains("COMPOSITE"), "{err}");
        let err = multipart(Algorithm::Crc32, Kind::FullObject, &[("nonsense", 3)]).unwrap_err();
        assert!(err.contains("part #1"), "{err}");
    }

    /// What each algorithm adds to the PUT path's MD5, which every upload pays: MB/s over
    /// 256 MiB fed in 1 MiB chunks, as a body arrives. A measurement, run by hand in a
    /// release build (debug builds inline crc-fast's SIMD loops into unoptimised code):
    /// `cargo test --release -p sublet-gateway --lib checksum_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn checksum_cost() {
        use md5::Digest as _;
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let rounds = 256;
        let mb = f64::from(rounds);
        let time = |f: &mut dyn FnMut(&[u8])| {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                f(&chunk);
            }
            mb / start.elapsed().as_secs_f64()
        };
        let mut md5 = md5::Md5::new();
        let md5_rate = time(&mut |c| md5.update(c));
        println!("MD5 alone: {md5_rate:.0} MB/s");
        for a in Algorithm::ALL {
            let mut h = Hasher::new([a]);
            let rate = time(&mut |c| h.update(c));
            // Seconds per MB: the cost adds to MD5's on the same core.
            let added = 100.0 * md5_rate / rate;
            let target = a
                .crc()
                .map(crc_fast::get_calculator_target)
                .unwrap_or_default();
            println!(
                "{}: {rate:.0} MB/s, +{added:.1}% over MD5 {target}",
                a.name()
            );
            assert_eq!(h.finish().len(), 1);
        }
    }

    #[test]
    fn names_parse_in_any_case_and_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(&a.name().to_lowercase()), Some(a));
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.name())
            );
        }
        assert_eq!(Algorithm::parse("MD5"), None);
        assert_eq!(Kind::parse("full_object"), Some(Kind::FullObject));
        assert_eq!(
            serde_json::to_string(&Kind::Composite).unwrap(),
            "\"COMPOSITE\""
        );
        assert_eq!(
            decode(Algorithm::Crc32, "jSnVw/bqjr4="),
            None,
            "wrong length"
        );
    }
}
