//! Presigned URLs (SigV4 query-string authentication), checked as S3 checks them before the
//! signature: every parameter present, the algorithm, the form of the credential and of
//! `X-Amz-Date`, `X-Amz-Expires` within a week, not used before its date, not expired.
//!
//! s3s checks the signature itself afterwards (`vendor/s3s/src/ops/signature.rs`) but answers
//! these cases as S3 does not: an `X-Amz-Expires` beyond a week was honoured (200), malformed
//! parameters were 400 `InvalidRequest`. S3 answers every one of them 403, with the codes and
//! messages below (AWS "Authenticating Requests: Using Query Parameters").

use chrono::{DateTime, NaiveDateTime, Utc};

/// The longest a presigned URL may be valid: a week, in seconds.
pub const MAX_EXPIRES_SECS: i64 = 604_800;

/// How far in the future an `X-Amz-Date` may be (clock skew), as s3s is configured
/// ([`crate::s3::http::s3s_config`]) and as S3 allows.
pub const MAX_FUTURE_SKEW_SECS: i64 = 900;

const PARAMETERS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
];

const MISSING: &str = "Query-string authentication version 4 requires the X-Amz-Algorithm, \
                       X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
                       X-Amz-Expires parameters.";

/// A presigned request refused before its signature is checked: the S3 error and the
/// further elements of its error document, in order (an expired URL's `<X-Amz-Expires>`,
/// `<Expires>` and `<ServerTime>`, as S3 sends them).
#[derive(Debug)]
pub struct Refusal {
    pub error: s3s::S3Error,
    pub details: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(code: s3s::S3ErrorCode, message: &'static str) -> Self {
        let mut error = s3s::S3Error::with_message(code, message);
        error.set_status_code(http::StatusCode::FORBIDDEN);
        Refusal {
            error,
            details: Vec::new(),
        }
    }

    fn parameters(message: &'static str) -> Self {
        Self::new(s3s::S3ErrorCode::AuthorizationQueryParametersError, message)
    }
}

/// Why a request's presigned-URL parameters are refused at `now`, if the request is
/// presigned (names any of `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Signature` in its
/// query) and they are; `query` is the raw query string.
pub fn refusal(query: &str, now: DateTime<Utc>) -> Option<Refusal> {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                super::auth::percent_decoded(name),
                super::auth::percent_decoded(value),
            )
        })
        .collect();
    let presigned = pairs.iter().any(|(n, _)| {
        matches!(
            n.as_str(),
            "X-Amz-Algorithm" | "X-Amz-Credential" | "X-Amz-Signature"
        )
    });
    if !presigned {
        return None;
    }
    // Each parameter exactly once.
    let mut values = [""; 6];
    for (slot, name) in values.iter_mut().zip(PARAMETERS) {
        let mut found = pairs.iter().filter(|(n, _)| n == name);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => *slot = v.as_str(),
            _ => return Some(Refusal::parameters(MISSING)),
        }
    }
    let [
        algorithm,
        credential,
        _signature,
        date,
        _signed_headers,
        expires,
    ] = values;
    if algorithm != "AWS4-HMAC-SHA256" {
        return Some(Refusal::parameters(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let Some(credential_date) = credential_date(credential) else {
        return Some(Refusal::parameters(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; \
             expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".",
        ));
    };
    let Ok(signed_at) = NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ") else {
        return Some(Refusal::parameters(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        ));
    };
    let signed_at = signed_at.and_utc();
    let expires: i64 = match expires.parse::<i64>() {
        Ok(n) if n < 0 => {
            return Some(Refusal::parameters("X-Amz-Expires must be non-negative"));
        }
        Ok(0) => return Some(Refusal::parameters("X-Amz-Expires must be positive")),
        Ok(n) if n > MAX_EXPIRES_SECS => {
            return Some(Refusal::parameters(
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            ));
        }
        Ok(n) => n,
        // Digits too many for an i64 are beyond a week too.
        Err(_) if !expires.is_empty() && expires.bytes().all(|b| b.is_ascii_digit()) => {
            return Some(Refusal::parameters(
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            ));
        }
        Err(_) => return Some(Refusal::parameters("X-Amz-Expires should be a number")),
    };
    if Some(credential_date) != date.get(..8) {
        return Some(Refusal::parameters(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    if (signed_at - now).num_seconds() > MAX_FUTURE_SKEW_SECS {
        return Some(Refusal::new(
            s3s::S3ErrorCode::AccessDenied,
            "Request is not valid yet",
        ));
    }
    let expiry = signed_at + chrono::Duration::seconds(expires);
    if now > expiry {
        let mut refusal = Refusal::new(s3s::S3ErrorCode::AccessDenied, "Request has expired");
        let iso = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        refusal.details = vec![
            ("X-Amz-Expires", expires.to_string()),
            ("Expires", iso(expiry)),
            ("ServerTime", iso(now)),
        ];
        return Some(refusal);
    }
    None
}

/// The date of a credential `<access key>/<YYYYMMDD>/<region>/<service>/aws4_request`, if
/// it has that form.
fn credential_date(credential: &str) -> Option<&str> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"]
            if !key.is_empty()
                && date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit())
                && !region.is_empty()
                && !service.is_empty() =>
        {
            Some(date)
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc()
    }

    /// A presigned query as botocore writes it, with `changes` applied (a value of `None`
    /// drops the parameter).
    fn query(changes: &[(&str, Option<&str>)]) -> String {
        let mut params = vec![
            ("X-Amz-Algorithm", Some("AWS4-HMAC-SHA256")),
            (
                "X-Amz-Credential",
                Some("AKIDEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"),
            ),
            ("X-Amz-Date", Some("20260101T000000Z")),
            ("X-Amz-Expires", Some("3600")),
            ("X-Amz-SignedHeaders", Some("host")),
            ("X-Amz-Signature", Some("abcdef")),
        ];
        for (name, value) in changes {
            match params.iter_mut().find(|(n, _)| n == name) {
                Some(p) => p.1 = *value,
                None => params.push((name, *value)),
            }
        }
        params
            .iter()
            .filter_map(|(n, v)| v.map(|v| format!("{n}={v}")))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The code, status and message of the refusal of `changes` at `now`.
    fn refused(changes: &[(&str, Option<&str>)], now: &str) -> Option<(String, u16, String)> {
        refusal(&query(changes), at(now)).map(|r| {
            (
                r.error.code().as_str().to_owned(),
                r.error.status_code().unwrap().as_u16(),
                r.error.message().unwrap().to_owned(),
            )
        })
    }

    const SOON: &str = "20260101T000500Z";

    #[test]
    fn valid_presigned_urls_and_other_requests_pass() {
        assert!(refused(&[], SOON).is_none());
        assert!(refused(&[("X-Amz-Expires", Some("604800"))], "20260107T235959Z").is_none());
        assert!(refused(&[("X-Amz-Expires", Some("1"))], "20260101T000001Z").is_none());
        // A little in the future: clock skew.
        assert!(refused(&[], "20251231T235100Z").is_none());
        assert!(refusal("", at(SOON)).is_none());
        assert!(refusal("list-type=2&prefix=X-Amz-Date", at(SOON)).is_none());
    }

    #[test]
    fn expires_beyond_a_week_or_not_positive_is_refused_with_403() {
        let week = "X-Amz-Expires must be less than a week (in seconds) that is 604800";
        for (expires, message) in [
            ("604801", week),
            ("99999999999999999999999", week),
            ("-1", "X-Amz-Expires must be non-negative"),
            ("0", "X-Amz-Expires must be positive"),
            ("soon", "X-Amz-Expires should be a number"),
            ("", "X-Amz-Expires should be a number"),
        ] {
            assert_eq!(
                refused(&[("X-Amz-Expires", Some(expires))], SOON),
                Some((
                    "AuthorizationQueryParametersError".to_owned(),
                    403,
                    message.to_owned()
                )),
                "X-Amz-Expires={expires}"
            );
        }
    }

    #[test]
    fn expired_urls_answer_access_denied_with_their_times() {
        let r = refusal(&query(&[]), at("20260101T010001Z")).unwrap();
        assert_eq!(r.error.code().as_str(), "AccessDenied");
        assert_eq!(r.error.status_code(), Some(http::StatusCode::FORBIDDEN));
        assert_eq!(r.error.message(), Some("Request has expired"));
        assert_eq!(
            r.details,
            vec![
                ("X-Amz-Expires", "3600".to_owned()),
                ("Expires", "2026-01-01T01:00:00Z".to_owned()),
                ("ServerTime", "2026-01-01T01:00:01Z".to_owned()),
            ]
        );
        // The last second of its validity still passes.
        assert!(refused(&[], "20260101T010000Z").is_none());
    }

    #[test]
    fn urls_dated_in_the_future_are_not_valid_yet() {
        assert_eq!(
            refused(&[], "20251231T234459Z"),
            Some((
                "AccessDenied".to_owned(),
                403,
                "Request is not valid yet".to_owned()
            ))
        );
    }

    #[test]
    fn malformed_parameters_answer_s3s_codes_and_messages() {
        let code = |changes: &[(&str, Option<&str>)]| {
            let (code, status, message) = refused(changes, SOON).unwrap();
            assert_eq!(status, 403, "{changes:?}");
            assert_eq!(code, "AuthorizationQueryParametersError", "{changes:?}");
            message
        };
        assert!(code(&[("X-Amz-Date", None)]).starts_with("Query-string authentication"));
        assert!(code(&[("X-Amz-Signature", None)]).starts_with("Query-string authentication"));
        assert!(code(&[("X-Amz-SignedHeaders", None)]).starts_with("Query-string authentication"));
        // A parameter given twice is as bad as a missing one.
        let twice = format!("{}&X-Amz-Expires=60", query(&[]));
        assert_eq!(
            refusal(&twice, at(SOON)).unwrap().error.message(),
            Some(MISSING)
        );
        assert_eq!(
            code(&[("X-Amz-Algorithm", Some("AWS4-HMAC-SHA1"))]),
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""
        );
        for credential in [
            "AKIDEXAMPLE",
            "AKIDEXAMPLE%2F2026010%2Fus-east-1%2Fs3%2Faws4_request",
            "AKIDEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws5_request",
            "%2F20260101%2Fus-east-1%2Fs3%2Faws4_request",
            "AKIDEXAMPLE%2F20260101%2F%2Fs3%2Faws4_request",
        ] {
            assert!(
                code(&[("X-Amz-Credential", Some(credential))])
                    .starts_with("Error parsing the X-Amz-Credential parameter"),
                "{credential}"
            );
        }
        for date in ["2026-01-01T00:00:00Z", "20260101", "20261301T000000Z", ""] {
            assert!(
                code(&[("X-Amz-Date", Some(date))])
                    .starts_with("X-Amz-Date must be in the ISO8601"),
                "{date}"
            );
        }
        assert_eq!(
            code(&[("X-Amz-Date", Some("20260102T000000Z"))]),
            "Invalid credential date. Date is not the same as X-Amz-Date."
        );
    }
}
