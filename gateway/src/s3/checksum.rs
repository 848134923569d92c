//! S3 checksums on the wire: which algorithm a write asks for (`x-amz-checksum-<alg>` with
//! a value, `x-amz-checksum-algorithm` / `x-amz-sdk-checksum-algorithm`, or an aws-chunked
//! trailer named by `x-amz-trailer`), checking the value sent against what was computed
//! (`BadDigest`), and the checksum fields of answers.

use http::HeaderMap;
use s3s::dto::{self, ChecksumAlgorithm, ChecksumType, CompletedPart};
use s3s::{S3Error, S3ErrorCode, S3Result, TrailingHeaders};

use crate::datapath::checksum::{self, Algorithm, ChecksumSpec, Kind, ObjectChecksum, Sums};

/// What S3 computes when a write names no algorithm: CRC64NVME of the whole object, as S3
/// does for new objects since December 2024.
pub(super) const DEFAULT: ChecksumSpec = ChecksumSpec {
    algorithm: Algorithm::Crc64nvme,
    kind: Kind::FullObject,
};

/// Where the value a write's checksum must match comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expected {
    /// A request header (base64).
    Header(String),
    /// The aws-chunked body's trailer, read once the body has ended.
    Trailer,
}

/// What a write request says about its checksum.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Requested {
    /// The algorithm named, by a value, a trailer or an algorithm header.
    pub algorithm: Option<Algorithm>,
    pub expected: Option<Expected>,
}

fn invalid(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidRequest, message)
}

fn algorithm_named(name: &str, by: &str) -> S3Result<Algorithm> {
    Algorithm::parse(name).ok_or_else(|| {
        invalid(format!(
            "{by} names checksum algorithm {name:?}, which S3 does not offer: use CRC32, CRC32C, CRC64NVME, SHA1 or SHA256"
        ))
    })
}

/// The algorithm an `x-amz-checksum-algorithm` header names.
pub(super) fn algorithm_of(a: &ChecksumAlgorithm) -> S3Result<Algorithm> {
    algorithm_named(a.as_str(), "header x-amz-checksum-algorithm")
}

/// Reads the checksum headers of a PutObject or UploadPart.
pub(super) fn requested(headers: &HeaderMap) -> S3Result<Requested> {
    let mut value: Option<(Algorithm, String)> = None;
    for (name, v) in headers {
        let Some(suffix) = name.as_str().strip_prefix("x-amz-checksum-") else {
            continue;
        };
        if matches!(suffix, "algorithm" | "mode" | "type") {
            continue;
        }
        let algorithm = algorithm_named(suffix, &format!("header {name}"))?;
        if let Some((first, _)) = &value {
            return Err(invalid(format!(
                "expecting a single x-amz-checksum- header, got {} and {}",
                first.header(),
                algorithm.header()
            )));
        }
        let text = v.to_str().unwrap_or_default().trim().to_owned();
        if checksum::decode(algorithm, &text).is_none() {
            return Err(invalid(format!(
                "value {text:?} of header {name} is not a base64 {} checksum",
                algorithm.name()
            )));
        }
        value = Some((algorithm, text));
    }
    let mut trailer: Option<Algorithm> = None;
    for v in headers.get_all("x-amz-trailer") {
        for t in v.to_str().unwrap_or_default().split(',').map(str::trim) {
            if let Some(suffix) = t.to_ascii_lowercase().strip_prefix("x-amz-checksum-") {
                trailer = Some(algorithm_named(suffix, &format!("trailer {t}"))?);
            }
        }
    }
    let mut named: Option<(Algorithm, &str)> = None;
    for header in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
        if let Some(v) = headers.get(header) {
            let a = algorithm_named(v.to_str().unwrap_or_default(), &format!("header {header}"))?;
            named.get_or_insert((a, header));
        }
    }
    let (algorithm, expected) = match (value, trailer) {
        (Some((a, _)), Some(t)) => {
            return Err(invalid(format!(
                "the request sends checksum header {} and announces trailer {}: send one",
                a.header(),
                t.header()
            )));
        }
        (Some((a, v)), None) => (Some(a), Some(Expected::Header(v))),
        (None, Some(t)) => (Some(t), Some(Expected::Trailer)),
        (None, None) => (None, None),
    };
    if let (Some(a), Some((n, header))) = (algorithm, named)
        && a != n
    {
        return Err(invalid(format!(
            "header {header} names {} but the checksum sent is {}",
            n.name(),
            a.name()
        )));
    }
    Ok(Requested {
        algorithm: algorithm.or(named.map(|(a, _)| a)),
        expected,
    })
}

/// Checks the value the request sent (header or trailer) against `computed`; `what` names
/// the object or part in errors. Called once the body has been read whole.
pub(super) fn verify(
    requested: &Requested,
    trailers: Option<&TrailingHeaders>,
    computed: &Sums,
    what: &str,
) -> S3Result<()> {
    let (Some(algorithm), Some(expected)) = (requested.algorithm, &requested.expected) else {
        return Ok(());
    };
    let sent = match expected {
        Expected::Header(v) => v.clone(),
        Expected::Trailer => {
            let got = trailers
                .and_then(|t| t.read(|h| h.get(algorithm.header()).cloned()))
                .flatten()
                .ok_or_else(|| {
                    invalid(format!(
                        "{what}: the request announced trailer {} but the body ended without it",
                        algorithm.header()
                    ))
                })?;
            got.to_str().unwrap_or_default().trim().to_owned()
        }
    };
    let sent_raw = checksum::decode(algorithm, &sent).ok_or_else(|| {
        invalid(format!(
            "{what}: value {sent:?} of {} is not a base64 {} checksum",
            algorithm.header(),
            algorithm.name()
        ))
    })?;
    let ours = computed.get(&algorithm).map(String::as_str).unwrap_or("");
    if checksum::decode(algorithm, ours).as_deref() != Some(sent_raw.as_slice()) {
        return Err(S3Error::with_message(
            S3ErrorCode::BadDigest,
            format!(
                "{what}: the {} you specified ({sent}) did not match the calculated checksum ({ours})",
                algorithm.name()
            ),
        ));
    }
    Ok(())
}

/// The algorithm and kind a CreateMultipartUpload asks for, checked as S3 does: CRC64NVME
/// is full-object only, SHA1 and SHA256 composite only; CRCs default to composite and
/// CRC64NVME to full object.
pub(super) fn upload_spec(
    algorithm: Option<&ChecksumAlgorithm>,
    kind: Option<&ChecksumType>,
) -> S3Result<Option<ChecksumSpec>> {
    let Some(algorithm) = algorithm else {
        if let Some(k) = kind {
            return Err(invalid(format!(
                "x-amz-checksum-type {} needs x-amz-checksum-algorithm too",
                k.as_str()
            )));
        }
        return Ok(None);
    };
    let algorithm = algorithm_named(algorithm.as_str(), "header x-amz-checksum-algorithm")?;
    let kind = match kind {
        None if algorithm.composes() => Kind::Composite,
        None => Kind::FullObject,
        Some(k) => Kind::parse(k.as_str()).ok_or_else(|| {
            invalid(format!(
                "x-amz-checksum-type {:?} is neither COMPOSITE nor FULL_OBJECT",
                k.as_str()
            ))
        })?,
    };
    let fits = match kind {
        Kind::Composite => algorithm.composes(),
        Kind::FullObject => algorithm.combines(),
    };
    if !fits {
        return Err(invalid(format!(
            "checksum type {} is not available for {}: CRC32 and CRC32C take either, CRC64NVME only FULL_OBJECT, SHA1 and SHA256 only COMPOSITE",
            kind.name(),
            algorithm.name()
        )));
    }
    Ok(Some(ChecksumSpec { algorithm, kind }))
}

/// The (algorithm, value) pairs a CompleteMultipartUpload lists for one part.
pub(super) fn listed(part: &CompletedPart) -> Vec<(Algorithm, &str)> {
    [
        (Algorithm::Crc32, part.checksum_crc32.as_deref()),
        (Algorithm::Crc32c, part.checksum_crc32c.as_deref()),
        (Algorithm::Crc64nvme, part.checksum_crc64nvme.as_deref()),
        (Algorithm::Sha1, part.checksum_sha1.as_deref()),
        (Algorithm::Sha256, part.checksum_sha256.as_deref()),
    ]
    .into_iter()
    .filter_map(|(a, v)| v.map(|v| (a, v)))
    .collect()
}

/// Whether two base64 values of `algorithm` are the same digest (a composite `-N` suffix
/// on either is ignored).
pub(super) fn same(algorithm: Algorithm, a: &str, b: &str) -> bool {
    let bare = |v: &str| v.split_once('-').map_or(v, |(d, _)| d).to_owned();
    match (
        checksum::decode(algorithm, &bare(a)),
        checksum::decode(algorithm, &bare(b)),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Checksum fields of an answer: `values` by algorithm, and the type when given.
pub(super) fn fields<'a>(
    values: impl IntoIterator<Item = (Algorithm, &'a str)>,
    kind: Option<Kind>,
) -> dto::Checksum {
    let mut c = dto::Checksum {
        checksum_type: kind.map(|k| ChecksumType::from(k.name().to_owned())),
        ..Default::default()
    };
    for (a, v) in values {
        let slot = match a {
            Algorithm::Crc32 => &mut c.checksum_crc32,
            Algorithm::Crc32c => &mut c.checksum_crc32c,
            Algorithm::Crc64nvme => &mut c.checksum_crc64nvme,
            Algorithm::Sha1 => &mut c.checksum_sha1,
            Algorithm::Sha256 => &mut c.checksum_sha256,
        };
        *slot = Some(v.to_owned());
    }
    c
}

/// A version's checksum as answer fields (headers: a composite one with `-N`).
pub(super) fn object_fields(c: Option<&ObjectChecksum>) -> dto::Checksum {
    match c {
        Some(c) => fields([(c.algorithm, c.header_value().as_str())], Some(c.kind)),
        None => dto::Checksum::default(),
    }
}

/// Copies the five checksum values of a [`dto::Checksum`] into an answer with the same
/// field names.
macro_rules! set_checksums {
    ($out:expr, $c:expr) => {{
        let c: s3s::dto::Checksum = $c;
        $out.checksum_crc32 = c.checksum_crc32;
        $out.checksum_crc32c = c.checksum_crc32c;
        $out.checksum_crc64nvme = c.checksum_crc64nvme;
        $out.checksum_sha1 = c.checksum_sha1;
        $out.checksum_sha256 = c.checksum_sha256;
    }};
}
pub(super) use set_checksums;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn sums(data: &[u8]) -> Sums {
        let mut h = checksum::Hasher::new(Algorithm::ALL);
        h.update(data);
        h.finish()
    }

    #[test]
    fn the_algorithm_comes_from_a_value_a_trailer_or_a_name() {
        let r = requested(&headers(&[
            ("x-amz-checksum-crc32", "DUoRhQ=="),
            ("x-amz-sdk-checksum-algorithm", "CRC32"),
        ]))
        .unwrap();
        assert_eq!(r.algorithm, Some(Algorithm::Crc32));
        assert_eq!(r.expected, Some(Expected::Header("DUoRhQ==".into())));
        let r = requested(&headers(&[("x-amz-trailer", "x-amz-checksum-crc64nvme")])).unwrap();
        assert_eq!(
            (r.algorithm, r.expected),
            (Some(Algorithm::Crc64nvme), Some(Expected::Trailer))
        );
        let r = requested(&headers(&[("x-amz-checksum-algorithm", "sha256")])).unwrap();
        assert_eq!((r.algorithm, r.expected), (Some(Algorithm::Sha256), None));
        assert_eq!(requested(&HeaderMap::new()).unwrap(), Requested::default());
    }

    #[test]
    fn unknown_conflicting_or_malformed_checksum_headers_are_refused_by_name() {
        let refused = |pairs: &[(&str, &str)]| {
            let e = requested(&headers(pairs)).unwrap_err();
            assert_eq!(*e.code(), S3ErrorCode::InvalidRequest);
            e.message().unwrap_or_default().to_owned()
        };
        assert!(refused(&[("x-amz-checksum-md5", "AAAA")]).contains("\"md5\""));
        assert!(refused(&[("x-amz-sdk-checksum-algorithm", "XXH3")]).contains("\"XXH3\""));
        assert!(refused(&[("x-amz-trailer", "x-amz-checksum-crc16")]).contains("crc16"));
        assert!(
            refused(&[
                ("x-amz-checksum-crc32", "DUoRhQ=="),
                ("x-amz-checksum-sha1", "Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
            ])
            .contains("single")
        );
        assert!(
            refused(&[("x-amz-checksum-crc32", "not base64!")]).contains("x-amz-checksum-crc32")
        );
        assert!(refused(&[("x-amz-checksum-crc32", "jSnVw/bqjr4=")]).contains("CRC32"));
        assert!(
            refused(&[
                ("x-amz-checksum-crc32", "DUoRhQ=="),
                ("x-amz-sdk-checksum-algorithm", "SHA256")
            ])
            .contains("SHA256")
        );
    }

    #[test]
    fn a_value_that_does_not_match_the_body_is_a_bad_digest() {
        let body = sums(b"hello world");
        let ok = requested(&headers(&[("x-amz-checksum-crc32c", "yZRlqg==")])).unwrap();
        verify(&ok, None, &body, "object b/k").unwrap();
        let bad = requested(&headers(&[("x-amz-checksum-crc32c", "AAAAAA==")])).unwrap();
        let e = verify(&bad, None, &body, "object b/k").unwrap_err();
        assert_eq!(*e.code(), S3ErrorCode::BadDigest);
        assert!(e.message().unwrap().contains("CRC32C"), "{e:?}");
        // No value sent: nothing to check.
        let named = requested(&headers(&[("x-amz-checksum-algorithm", "SHA1")])).unwrap();
        verify(&named, None, &body, "object b/k").unwrap();
    }

    #[test]
    fn a_trailer_announced_but_missing_is_refused() {
        let r = requested(&headers(&[("x-amz-trailer", "x-amz-checksum-crc32")])).unwrap();
        let e = verify(&r, None, &sums(b"x"), "object b/k").unwrap_err();
        assert_eq!(*e.code(), S3ErrorCode::InvalidRequest);
        assert!(e.message().unwrap().contains("x-amz-checksum-crc32"));
    }

    #[test]
    fn multipart_kinds_follow_s3s_rules() {
        let spec = |a: Option<&str>, k: Option<&str>| {
            upload_spec(
                a.map(|a| ChecksumAlgorithm::from(a.to_owned())).as_ref(),
                k.map(|k| ChecksumType::from(k.to_owned())).as_ref(),
            )
        };
        let s = |a, k| {
            Some(ChecksumSpec {
                algorithm: a,
                kind: k,
            })
        };
        assert_eq!(spec(None, None).unwrap(), None);
        assert_eq!(
            spec(Some("CRC32"), None).unwrap(),
            s(Algorithm::Crc32, Kind::Composite)
        );
        assert_eq!(
            spec(Some("CRC32C"), Some("FULL_OBJECT")).unwrap(),
            s(Algorithm::Crc32c, Kind::FullObject)
        );
        assert_eq!(
            spec(Some("CRC64NVME"), None).unwrap(),
            s(Algorithm::Crc64nvme, Kind::FullObject)
        );
        assert!(spec(Some("CRC64NVME"), Some("COMPOSITE")).is_err());
        assert!(spec(Some("SHA256"), Some("FULL_OBJECT")).is_err());
        assert!(spec(None, Some("COMPOSITE")).is_err());
        assert!(spec(Some("MD5"), None).is_err());
    }

    #[test]
    fn composite_suffixes_are_ignored_when_comparing() {
        assert!(same(Algorithm::Crc32, "1Fu2mQ==-2", "1Fu2mQ=="));
        assert!(!same(Algorithm::Crc32, "1Fu2mQ==", "DUoRhQ=="));
        assert!(!same(Algorithm::Crc32, "junk", "junk"));
    }
}
