//! AWS Signature Version 4 for the benchmark's S3 requests: canonical request, string to
//! sign, signing key and the `Authorization` header. Only header signing; no presigned URLs
//! and no chunked payload signatures.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// SHA-256 of the empty string, the payload hash of a request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Payload hash a client may sign instead of the body's (S3 only).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Keys and scope of the signatures.
#[derive(Clone)]
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// `s3` for S3; the AWS test suite uses `service`.
    pub service: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key", &self.access_key)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// A request as SigV4 sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent on the wire, already percent-encoded (see [`encode_path`]).
    pub path: &'a str,
    /// The query as sent on the wire, already canonical (see [`canonical_query`]).
    pub query: &'a str,
    /// Headers to sign, `host` and `x-amz-date` among them; names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

/// A UTC instant in the two forms SigV4 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmzDate {
    /// `20150830T123600Z`
    pub timestamp: String,
    /// `20150830`
    pub date: String,
}

impl AmzDate {
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let date = format!("{y:04}{m:02}{d:02}");
        let timestamp = format!(
            "{date}T{:02}{:02}{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        AmzDate { timestamp, date }
    }

    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::from_unix(secs)
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Percent-encodes `s` as SigV4 wants: everything but `A-Z a-z 0-9 - . _ ~`, and `/`
/// too unless `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The wire and canonical form of an S3 path: every segment encoded once, slashes kept.
pub fn encode_path(path: &str) -> String {
    uri_encode(path, true)
}

/// The canonical query string: names and values encoded, sorted by name then value,
/// `name=` for a parameter without a value.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
        unreachable!("HMAC-SHA256 accepts every key length");
    });
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl Signer {
    /// The `Authorization` header value of `req` at `date`.
    pub fn authorization(&self, req: &Request<'_>, date: &AmzDate) -> String {
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let path = if req.path.is_empty() { "/" } else { req.path };
        let canonical_request = format!(
            "{}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
            req.method, req.query, req.payload_hash
        );
        let scope = format!(
            "{}/{}/{}/aws4_request",
            date.date, self.region, self.service
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            date.timestamp,
            hex_sha256(canonical_request.as_bytes())
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.date.as_bytes(),
        );
        for part in [self.region.as_str(), self.service.as_str(), "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(authorization: &str) -> &str {
        authorization
            .rsplit_once("Signature=")
            .map(|(_, s)| s)
            .unwrap_or("")
    }

    /// The credentials and instant of AWS's SigV4 test suite.
    fn suite() -> (Signer, AmzDate) {
        let signer = Signer {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            service: "service".into(),
        };
        (signer, AmzDate::from_unix(1_440_938_160))
    }

    /// The credentials and instant of the examples in the S3 SigV4 documentation.
    fn s3_docs() -> (Signer, AmzDate) {
        let signer = Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        };
        (signer, AmzDate::from_unix(1_369_353_600))
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(
            AmzDate::from_unix(1_440_938_160),
            AmzDate {
                timestamp: "20150830T123600Z".into(),
                date: "20150830".into()
            }
        );
        assert_eq!(AmzDate::from_unix(0).timestamp, "19700101T000000Z");
        // A leap day, and the last second of a year.
        assert_eq!(AmzDate::from_unix(951_782_400).date, "20000229");
        assert_eq!(
            AmzDate::from_unix(1_798_761_599).timestamp,
            "20261231T235959Z"
        );
    }

    #[test]
    fn get_vanilla_from_the_aws_test_suite() {
        let (signer, date) = suite();
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", date.timestamp.as_str()),
        ];
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        assert_eq!(
            signer.authorization(&req, &date),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case_from_the_aws_test_suite() {
        let (signer, date) = suite();
        let headers = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", date.timestamp.as_str()),
        ];
        let query = canonical_query(&[("Param2", "value2"), ("Param1", "value1")]);
        assert_eq!(query, "Param1=value1&Param2=value2");
        let req = Request {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        assert_eq!(
            signature(&signer.authorization(&req, &date)),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn s3_get_object_with_a_range() {
        let (signer, date) = s3_docs();
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", date.timestamp.as_str()),
        ];
        let req = Request {
            method: "GET",
            path: &encode_path("/test.txt"),
            query: "",
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        let auth = signer.authorization(&req, &date);
        assert!(
            auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"),
            "{auth}"
        );
        assert_eq!(
            signature(&auth),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_put_object_with_a_key_that_needs_escaping() {
        let (signer, date) = s3_docs();
        let body_hash = hex_sha256(b"Welcome to Amazon S3.");
        assert_eq!(
            body_hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", date.timestamp.as_str()),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", body_hash.as_str()),
        ];
        let path = encode_path("/test$file.text");
        assert_eq!(path, "/test%24file.text");
        let req = Request {
            method: "PUT",
            path: &path,
            query: "",
            headers: &headers,
            payload_hash: &body_hash,
        };
        assert_eq!(
            signature(&signer.authorization(&req, &date)),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn s3_subresource_without_a_value_and_a_sorted_listing_query() {
        let (signer, date) = s3_docs();
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", date.timestamp.as_str()),
        ];
        let cases = [
            (
                canonical_query(&[("lifecycle", "")]),
                "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
            ),
            (
                canonical_query(&[("prefix", "J"), ("max-keys", "2")]),
                "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            ),
        ];
        for (query, expected) in cases {
            let req = Request {
                method: "GET",
                path: "/",
                query: &query,
                headers: &headers,
                payload_hash: EMPTY_SHA256,
            };
            assert_eq!(
                signature(&signer.authorization(&req, &date)),
                expected,
                "{query}"
            );
        }
    }

    #[test]
    fn encoding_escapes_everything_but_unreserved_characters() {
        assert_eq!(uri_encode("a b+c/ü~", false), "a%20b%2Bc%2F%C3%BC~");
        assert_eq!(encode_path("/bucket/dir/a b"), "/bucket/dir/a%20b");
        assert_eq!(
            canonical_query(&[("continuation-token", "x/y="), ("list-type", "2")]),
            "continuation-token=x%2Fy%3D&list-type=2"
        );
    }
}
