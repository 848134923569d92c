//! Signed market requests as the market checks them (`identity::check_headers`,
//! `canonical_request`, `verify_signature`): the headers and body are the sender's. Input:
//! the server clock (8 bytes), then the request's method, path, the four signature headers
//! and the body, separated by newlines. No panic on any input; a request signed by a key
//! verifies, and changing any part of what was signed makes it fail.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sublet_market_api::identity::{
    RequestSignature, Signer, canonical_request, check_headers, decode_public_key, verify_signature,
};

const WINDOW: i64 = 300;

fn signer() -> &'static (Signer, Vec<u8>) {
    static SIGNER: OnceLock<(Signer, Vec<u8>)> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let (signer, _) = Signer::generate().expect("a key");
        let public = decode_public_key(&signer.public_key_hex()).expect("its public key");
        (signer, public)
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((now, rest)) = input.split_first_chunk::<8>() else {
        return;
    };
    let now = i64::from_le_bytes(*now);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.splitn(7, '\n');
    let mut next = || parts.next().map(str::to_owned);
    let (method, path) = (next().unwrap_or_default(), next().unwrap_or_default());
    let sig = RequestSignature {
        party: next(),
        timestamp: next(),
        nonce: next(),
        signature: next(),
    };
    let body = next().unwrap_or_default();
    let (signer, public) = signer();

    // As the sender wrote them.
    if let Ok((_, timestamp, nonce, signature)) = check_headers(&sig, now, WINDOW) {
        assert!(
            timestamp.abs_diff(now) <= WINDOW.unsigned_abs(),
            "{timestamp} passed at {now}"
        );
        let canonical = canonical_request(&method, &path, timestamp, nonce, body.as_bytes());
        let _ = verify_signature(public, canonical.as_bytes(), signature);
    }

    // Signed by the key at `now`: verifies; with the body, path or method changed, it fails.
    let Ok(headers) = signer.sign_request(&method, &path, body.as_bytes(), now) else {
        return;
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(h, _)| *h == name)
            .map(|(_, v)| v.clone())
    };
    let signed = RequestSignature {
        party: header(sublet_market_api::identity::HEADER_PARTY),
        timestamp: header(sublet_market_api::identity::HEADER_TIMESTAMP),
        nonce: header(sublet_market_api::identity::HEADER_NONCE),
        signature: header(sublet_market_api::identity::HEADER_SIGNATURE),
    };
    let (_, timestamp, nonce, signature) =
        check_headers(&signed, now, WINDOW).expect("fresh signature headers pass");
    let canonical = canonical_request(&method, &path, timestamp, nonce, body.as_bytes());
    verify_signature(public, canonical.as_bytes(), signature).expect("a signed request verifies");
    let other_body = format!("{body}x");
    let forged = canonical_request(&method, &path, timestamp, nonce, other_body.as_bytes());
    assert!(verify_signature(public, forged.as_bytes(), signature).is_err());
    let forged = canonical_request(
        &method,
        &format!("{path}/"),
        timestamp,
        nonce,
        body.as_bytes(),
    );
    assert!(verify_signature(public, forged.as_bytes(), signature).is_err());
});
