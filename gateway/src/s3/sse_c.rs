//! Server-side encryption with customer-provided keys (SSE-C): the three
//! `x-amz-server-side-encryption-customer-*` headers of a request (and their
//! `x-amz-copy-source-` forms) as a key, where a request may carry one at all, and whether
//! it opens a stored version. The key is used for the request and never stored; a version
//! keeps only a salted HMAC of it ([`CustomerSeal`]).

use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::datapath::codec::{CustomerKey, CustomerSeal};
use crate::datapath::stripes::CustomerSealing;
use crate::meta::ObjectVersion;
use crate::node::Node;
use crate::s3::access::Connection;

/// The algorithm answers echo for versions read or written with a customer's key.
pub(super) const ALGORITHM: &str = "AES256";

/// The customer's key of a request from its three headers; `None` without any of them.
/// `what` names the header family in errors (`x-amz-server-side-encryption-customer` or
/// `x-amz-copy-source-server-side-encryption-customer`).
/// All three headers are required, as S3 requires them: the MD5 guards the key against
/// corruption on its way.
pub(super) fn requested(
    node: &Node,
    extensions: &http::Extensions,
    algorithm: Option<&str>,
    key: Option<&str>,
    key_md5: Option<&str>,
    what: &str,
) -> S3Result<Option<CustomerKey>> {
    parse_headers(
        node.customer_keys_allowed(),
        extensions.get::<Connection>(),
        algorithm,
        key,
        key_md5,
        what,
    )
}

/// [`requested`] for an input with s3s's three `sse_customer_*` fields (PutObject,
/// GetObject, HeadObject, the multipart calls, CopyObject's target, GetObjectAttributes:
/// each names them alike, without a trait in common), from the
/// `x-amz-server-side-encryption-customer-*` headers.
macro_rules! customer_key {
    ($node:expr, $extensions:expr, $input:expr) => {
        $crate::s3::sse_c::requested(
            $node,
            $extensions,
            $input.sse_customer_algorithm.as_deref(),
            $input.sse_customer_key.as_deref(),
            $input.sse_customer_key_md5.as_deref(),
            "x-amz-server-side-encryption-customer",
        )
    };
}
pub(super) use customer_key;

/// [`requested`] with the listener's word ([`Node::customer_keys_allowed`]) as `listener`.
fn parse_headers(
    listener: bool,
    connection: Option<&Connection>,
    algorithm: Option<&str>,
    key: Option<&str>,
    key_md5: Option<&str>,
    what: &str,
) -> S3Result<Option<CustomerKey>> {
    let (algorithm, key) = match (algorithm, key) {
        (None, None) if key_md5.is_none() => return Ok(None),
        (Some(a), Some(k)) => (a, k),
        _ => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!(
                    "requests specifying Server Side Encryption with Customer provided keys must provide both {what}-algorithm and {what}-key"
                ),
            ));
        }
    };
    if !secure(listener, connection) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection (this request came neither over TLS, nor from a trusted proxy (spec.s3.trustedProxies) saying X-Forwarded-Proto: https, nor to a loopback-only listener)",
        ));
    }
    let Some(key_md5) = key_md5 else {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!(
                "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key ({what}-key-MD5)."
            ),
        ));
    };
    CustomerKey::parse(algorithm, key, key_md5)
        .map(Some)
        .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()))
}

/// Whether a customer's key may cross the connection a request came on: the listener
/// serves TLS or loopback only (`listener`, [`Node::customer_keys_allowed`]), or this
/// connection is TLS, or it comes from a trusted proxy that terminated TLS (`s3::http`
/// marks those, [`Connection::tls`]).
fn secure(listener: bool, connection: Option<&Connection>) -> bool {
    listener || connection.is_some_and(|c| c.tls)
}

/// The ETag of an object (or part) whose plaintext has MD5 `md5_hex`, written with
/// `customer`'s key if any: with one, not that MD5, which would let anyone who may list the
/// bucket confirm a guess of the plaintext, but a hash of it keyed with the customer's key
/// (32 hex digits; S3's SSE-C ETags are not MD5s either). Stable for the version:
/// conditional requests compare it as any ETag.
pub(super) fn stored_etag(customer: Option<&CustomerSealing>, md5_hex: &str) -> String {
    match customer {
        Some(c) => c.key.keyed_etag(md5_hex),
        None => md5_hex.to_owned(),
    }
}

/// The key a new object is written with, with a fresh seal; refused on a plan that does
/// not encrypt (the object would be stored in the clear for anyone holding the shards,
/// whatever key the client gave) and together with `x-amz-server-side-encryption`.
pub(super) fn for_new_object(
    key: Option<CustomerKey>,
    plan: &str,
    plan_encrypts: bool,
    server_side_encryption: bool,
) -> S3Result<Option<CustomerSealing>> {
    let Some(key) = key else {
        return Ok(None);
    };
    if server_side_encryption {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "server side encryption with customer provided keys (x-amz-server-side-encryption-customer-*) and x-amz-server-side-encryption are mutually exclusive",
        ));
    }
    if !plan_encrypts {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!(
                "the request gives a customer-provided encryption key, but storage class {plan} stores objects unencrypted (encryption: none); use a storage class that encrypts"
            ),
        ));
    }
    CustomerSealing::new(key).map(Some).map_err(|e| {
        S3Error::with_message(S3ErrorCode::InternalError, format!("sealing the key: {e}"))
    })
}

/// Whether `key` (the request's) opens a version sealed with `seal` (the version's, when
/// it was written with a customer's key): S3's answers for a missing key (400), a key
/// given for a version written without one (400), and a wrong key (403).
pub(super) fn check(seal: Option<&CustomerSeal>, key: Option<&CustomerKey>) -> S3Result<()> {
    match (seal, key) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
        )),
        (None, Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The encryption parameters are not applicable to this object.",
        )),
        (Some(seal), Some(key)) if key.matches(seal) => Ok(()),
        (Some(_), Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "the customer-provided encryption key is not the one the object was encrypted with",
        )),
    }
}

/// [`check`] of a stored version: every piece of it must be sealed for `key`.
pub(super) fn check_version(v: &ObjectVersion, key: Option<&CustomerKey>) -> S3Result<()> {
    let Some(layout) = v.layout.as_ref() else {
        return Ok(());
    };
    let mut pieces = layout.pieces().map(|p| match &p.encryption {
        crate::datapath::layout::Encryption::Aes256Gcm { customer, .. } => customer.as_ref(),
        crate::datapath::layout::Encryption::None => None,
    });
    let first = pieces.next().flatten();
    check(first, key)?;
    if first.is_some() {
        for seal in pieces {
            check(seal, key)?;
        }
    }
    Ok(())
}

/// The key a part of `upload` is written with: the one the upload was started with, under
/// the upload's seal, or none when it was started without one (S3's errors otherwise).
pub(super) fn for_part(
    upload: &crate::meta::Upload,
    key: Option<CustomerKey>,
) -> S3Result<Option<CustomerSealing>> {
    let seal = upload.attrs.upload_customer_key.as_ref();
    match (seal, key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            format!(
                "upload {} was started without a customer-provided encryption key: its parts cannot carry one",
                upload.upload_id
            ),
        )),
        (Some(_), None) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            format!(
                "upload {} was started with a customer-provided encryption key (SSE-C): every part must carry the same key",
                upload.upload_id
            ),
        )),
        (Some(seal), Some(key)) => {
            if !key.matches(seal) {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    format!(
                        "the customer-provided encryption key is not the one upload {} was started with",
                        upload.upload_id
                    ),
                ));
            }
            Ok(Some(CustomerSealing {
                key,
                seal: seal.clone(),
            }))
        }
    }
}

/// The algorithm and key MD5 an answer echoes for `key`.
pub(super) fn echo(key: Option<&CustomerKey>) -> (Option<String>, Option<String>) {
    match key {
        Some(k) => (Some(ALGORITHM.to_owned()), Some(k.md5().to_owned())),
        None => (None, None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use md5::Digest;

    fn key(byte: u8) -> CustomerKey {
        let raw = [byte; 32];
        let md5 = STANDARD.encode(md5::Md5::digest(raw));
        CustomerKey::parse("AES256", &STANDARD.encode(raw), &md5).unwrap()
    }

    #[test]
    fn a_missing_key_is_400_a_wrong_one_403_and_a_key_for_a_plain_object_400() {
        let seal = key(1).new_seal().unwrap();
        assert!(check(Some(&seal), Some(&key(1))).is_ok());
        let missing = check(Some(&seal), None).unwrap_err();
        assert_eq!(missing.code(), &S3ErrorCode::InvalidRequest);
        assert!(
            missing
                .message()
                .unwrap()
                .contains("The correct parameters must be provided")
        );
        assert_eq!(
            check(Some(&seal), Some(&key(2))).unwrap_err().code(),
            &S3ErrorCode::AccessDenied
        );
        assert_eq!(
            check(None, Some(&key(1))).unwrap_err().code(),
            &S3ErrorCode::InvalidRequest
        );
        assert!(check(None, None).is_ok());
    }

    #[test]
    fn keys_cross_only_tls_loopback_listeners_or_connections_marked_tls() {
        let peer = "10.1.2.3:5000".parse().unwrap();
        let plain = Connection { peer, tls: false };
        let tls = Connection { peer, tls: true };
        assert!(!secure(false, Some(&plain)));
        assert!(!secure(false, None));
        assert!(secure(false, Some(&tls)));
        assert!(secure(true, Some(&plain)));
    }

    #[test]
    fn all_three_headers_are_required_and_the_key_md5_is_checked() {
        let raw = [7u8; 32];
        let b64 = STANDARD.encode(raw);
        let md5 = STANDARD.encode(md5::Md5::digest(raw));
        let what = "x-amz-server-side-encryption-customer";
        let parse = |a: Option<&str>, k: Option<&str>, m: Option<&str>| {
            parse_headers(true, None, a, k, m, what)
        };
        assert!(parse(None, None, None).unwrap().is_none());
        assert!(
            parse(Some("AES256"), Some(&b64), Some(&md5))
                .unwrap()
                .is_some()
        );
        let no_md5 = parse(Some("AES256"), Some(&b64), None).unwrap_err();
        assert_eq!(no_md5.code(), &S3ErrorCode::InvalidArgument);
        assert!(
            no_md5
                .message()
                .unwrap()
                .contains("must provide the client calculated MD5 of the secret key"),
            "{no_md5:?}"
        );
        for (a, k, m) in [
            (None, Some(b64.as_str()), Some(md5.as_str())),
            (Some("AES256"), None, Some(md5.as_str())),
            (None, None, Some(md5.as_str())),
            (
                Some("AES256"),
                Some(b64.as_str()),
                Some("AAAAAAAAAAAAAAAAAAAAAA=="),
            ),
        ] {
            let e = parse(a, k, m).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::InvalidArgument, "{a:?} {k:?} {m:?}");
        }
        // Over plain HTTP to a listener that is not loopback: refused before the key is
        // even parsed.
        let insecure = parse_headers(false, None, Some("AES256"), Some(&b64), Some(&md5), what);
        assert_eq!(insecure.unwrap_err().code(), &S3ErrorCode::InvalidRequest);
    }

    #[test]
    fn a_plan_without_encryption_and_sse_s3_together_are_refused() {
        let e = for_new_object(Some(key(1)), "public", false, false).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::InvalidArgument);
        assert!(e.message().unwrap().contains("public"));
        let e = for_new_object(Some(key(1)), "standard", true, true).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::InvalidArgument);
        let sealing = for_new_object(Some(key(1)), "standard", true, false)
            .unwrap()
            .unwrap();
        assert!(key(1).matches(&sealing.seal));
        assert!(
            for_new_object(None, "public", false, false)
                .unwrap()
                .is_none()
        );
    }
}
