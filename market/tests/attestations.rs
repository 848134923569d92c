//! Attestations over HTTP: an attestor key the market trusts signs statements
//! about parties (a verified e-mail address, an operator vouching); they raise
//! the party's trust level, show in its rating and filter the offer search, and
//! stop counting once revoked or expired. Every kind of bad attestation is
//! refused with an error naming the problem.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};
use sublet_market::attestations::{AttestationKind, SignedAttestation, email_hash};
use sublet_market::client::{Client, ClientTls, Reply};
use sublet_market::identity::{Role, Signer};
use sublet_market::{Market, Policy, api};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Res<T> = Result<T, Box<dyn std::error::Error>>;

const DAY: i64 = 24 * 3600;

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct World {
    client: Client,
    offset: Arc<AtomicI64>,
    /// One of the market's attestor keys.
    notary: Signer,
    /// A key the market does not trust.
    rogue: Signer,
    alpha: Signer,
    bravo: Signer,
    dee: Signer,
}

async fn world() -> Res<World> {
    let (notary, _) = Signer::generate()?;
    let (rogue, _) = Signer::generate()?;
    let offset = Arc::new(AtomicI64::new(0));
    let clock = {
        let offset = offset.clone();
        move || system_now() + offset.load(Ordering::SeqCst)
    };
    let policy = Policy {
        attestor_keys: vec![notary.public_key_hex().to_ascii_uppercase()],
        ..Policy::default()
    };
    let market = Market::in_memory(policy, None)?.with_clock(clock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, api::router(Arc::new(market))).await });
    let client =
        Client::with_tls(&format!("http://{addr}"), &ClientTls::insecure_http())?.with_clock(clock);
    let (alpha, _) = Signer::generate()?;
    let (bravo, _) = Signer::generate()?;
    let (dee, _) = Signer::generate()?;
    client.register(&alpha, Role::Provider, "alpha").await?;
    client.register(&bravo, Role::Provider, "bravo").await?;
    client.register(&dee, Role::Demander, "dee").await?;
    for (who, price) in [(&alpha, 4_000), (&bravo, 3_000)] {
        client
            .json(
                Some(who),
                "POST",
                "/v1/offers",
                &json!({"capacity_bytes": 1u64 << 30, "price_per_gib_month": price,
                        "egress_price_per_gib": 0, "region": "eu-west", "min_term_days": 0,
                        "promised_uptime_bps": 9900}),
            )
            .await?
            .ok()?;
    }
    Ok(World {
        client,
        offset,
        notary,
        rogue,
        alpha,
        bravo,
        dee,
    })
}

impl World {
    fn now(&self) -> i64 {
        system_now() + self.offset.load(Ordering::SeqCst)
    }

    fn email(
        &self,
        by: &Signer,
        about: &Signer,
        expires_in: Option<i64>,
    ) -> Res<SignedAttestation> {
        Ok(SignedAttestation::sign(
            by,
            AttestationKind::Email,
            &about.party_id(),
            Some(email_hash("ops@alpha.example")?),
            self.now(),
            expires_in.map(|s| self.now() + s),
        ))
    }

    fn vouch(&self, by: &Signer, about: &Signer) -> SignedAttestation {
        SignedAttestation::sign(
            by,
            AttestationKind::Operator,
            &about.party_id(),
            None,
            self.now(),
            None,
        )
    }

    /// Submits `body` (unsigned) to `party`'s attestations.
    async fn submit(&self, party: &Signer, body: &Value) -> Res<Reply> {
        Ok(self
            .client
            .json(
                None,
                "POST",
                &format!("/v1/parties/{}/attestations", party.party_id()),
                body,
            )
            .await?)
    }

    async fn get(&self, path: &str) -> Res<Value> {
        Ok(self
            .client
            .json(None, "GET", path, &Value::Null)
            .await?
            .ok()?)
    }

    async fn trust(&self, who: &Signer) -> Res<Value> {
        let party = self.get(&format!("/v1/parties/{}", who.party_id())).await?;
        assert_eq!(party["id"], who.party_id(), "{party}");
        Ok(party["trust_level"].clone())
    }

    /// The providers of the offers `GET /v1/offers{query}` finds.
    async fn offer_providers(&self, query: &str) -> Res<Vec<String>> {
        let found = self.get(&format!("/v1/offers{query}")).await?;
        Ok(found
            .as_array()
            .ok_or("offers")?
            .iter()
            .filter_map(|o| o["provider"].as_str().map(str::to_owned))
            .collect())
    }

    async fn revoke(&self, signer: Option<&Signer>, party: &Signer, id: &str) -> Res<Reply> {
        Ok(self
            .client
            .json(
                signer,
                "POST",
                &format!("/v1/parties/{}/attestations/{id}/revoke", party.party_id()),
                &json!({"reason": "the operator closed its business"}),
            )
            .await?)
    }
}

fn message(r: &Reply) -> String {
    r.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn attestations_raise_trust_and_stop_counting_when_revoked_or_expired() -> TestResult {
    let w = world().await?;
    let (alpha, bravo) = (w.alpha.party_id(), w.bravo.party_id());
    assert_eq!(w.trust(&w.alpha).await?, "unverified");
    assert_eq!(
        w.offer_providers("?min_trust=verified").await?,
        Vec::<String>::new()
    );

    // The notary verified alpha's e-mail address, for a day.
    let signed = w.email(&w.notary, &w.alpha, Some(DAY))?;
    let r = w.submit(&w.alpha, &serde_json::to_value(&signed)?).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["attestor_id"], w.notary.party_id());
    assert_eq!(r.body["email_sha256"], email_hash("ops@alpha.example")?);
    assert!(
        !r.text.contains("ops@alpha"),
        "the address is published: {}",
        r.text
    );
    let email_id = r.body["id"].as_str().ok_or("id")?.to_owned();
    assert_eq!(w.trust(&w.alpha).await?, "verified");
    assert_eq!(w.trust(&w.bravo).await?, "unverified");

    // The rating shows it, with a small weight.
    let rating = w.get(&format!("/v1/parties/{alpha}/rating")).await?;
    assert_eq!(rating["trust_level"], "verified", "{rating}");
    let input = &rating["inputs"][3];
    assert_eq!(input["name"], "attestations", "{rating}");
    assert_eq!(
        input["value"],
        format!("email verified by {}", w.notary.party_id())
    );
    assert_eq!(
        (input["score"].as_u64(), input["weight_percent"].as_u64()),
        (Some(500), Some(5))
    );
    let weights: u64 = rating["inputs"]
        .as_array()
        .ok_or("inputs")?
        .iter()
        .filter_map(|i| i["weight_percent"].as_u64())
        .sum();
    assert_eq!(weights, 100, "{rating}");
    let recomputed: u64 = rating["inputs"]
        .as_array()
        .ok_or("inputs")?
        .iter()
        .map(|i| i["score"].as_u64().unwrap_or(0) * i["weight_percent"].as_u64().unwrap_or(0))
        .sum::<u64>()
        / 100;
    assert_eq!(rating["score"], recomputed, "{rating}");
    let unverified = w.get(&format!("/v1/parties/{bravo}/rating")).await?;
    assert_eq!(unverified["inputs"][3]["value"], "no valid attestation");
    assert!(unverified["score"].as_u64() < rating["score"].as_u64());

    // The notary vouches for bravo: the highest level.
    let r = w
        .submit(
            &w.bravo,
            &serde_json::to_value(w.vouch(&w.notary, &w.bravo))?,
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let vouch_id = r.body["id"].as_str().ok_or("id")?.to_owned();
    assert_eq!(w.trust(&w.bravo).await?, "vouched");
    let rating = w.get(&format!("/v1/parties/{bravo}/rating")).await?;
    assert_eq!(
        rating["inputs"][3]["value"],
        format!("vouched for by {}", w.notary.party_id())
    );
    assert_eq!(rating["inputs"][3]["score"], 1000);
    // A demander can be attested too.
    let r = w
        .submit(
            &w.dee,
            &serde_json::to_value(w.email(&w.notary, &w.dee, None)?)?,
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let rating = w
        .get(&format!("/v1/parties/{}/rating", w.dee.party_id()))
        .await?;
    assert_eq!(rating["trust_level"], "verified");
    assert_eq!(
        rating["score"],
        // payment, receipt agreement, disputes lost, chargebacks, responsiveness, reviews,
        // attestations (see ratings/credit.rs).
        (500 * 40 + 500 * 10 + 1000 * 10 + 1000 * 5 + 500 * 10 + 500 * 15 + 500 * 10) / 100,
        "{rating}"
    );

    // The offer search filters by the provider's trust level (bravo is cheaper).
    assert_eq!(
        w.offer_providers("").await?,
        vec![bravo.clone(), alpha.clone()]
    );
    assert_eq!(
        w.offer_providers("?min_trust=verified").await?,
        vec![bravo.clone(), alpha.clone()]
    );
    assert_eq!(
        w.offer_providers("?min_trust=vouched").await?,
        vec![bravo.clone()]
    );
    assert_eq!(
        w.offer_providers("?min_trust=unverified&region=eu-west")
            .await?,
        vec![bravo.clone(), alpha.clone()]
    );
    let r = w
        .client
        .send(None, "GET", "/v1/offers?min_trust=gold", b"")
        .await?;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    assert!(message(&r).contains("min_trust"), "{}", r.text);

    // Listing: both of alpha's and bravo's.
    let list = w.get(&format!("/v1/parties/{bravo}/attestations")).await?;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], vouch_id.as_str());
    assert_eq!(list[0]["kind"], "operator");
    assert_eq!(list[0]["email_sha256"], Value::Null);

    // Only the attestor that signed it may revoke it.
    let r = w.revoke(None, &w.bravo, &vouch_id).await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.text);
    let r = w.revoke(Some(&w.rogue), &w.bravo, &vouch_id).await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    assert!(message(&r).contains("only the attestor"), "{}", r.text);
    let r = w.revoke(Some(&w.bravo), &w.bravo, &vouch_id).await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    let r = w.revoke(Some(&w.notary), &w.alpha, &vouch_id).await?;
    assert_eq!(
        (r.status, r.code()),
        (404, "not_found"),
        "another party's: {}",
        r.text
    );
    let r = w.revoke(Some(&w.notary), &w.bravo, "at_nothing").await?;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);
    assert_eq!(w.trust(&w.bravo).await?, "vouched");
    let r = w.revoke(Some(&w.notary), &w.bravo, &vouch_id).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "revoked");
    assert_eq!(r.body["revoke_reason"], "the operator closed its business");
    let revoked_at = r.body["revoked_at"].clone();
    assert!(revoked_at.is_i64(), "{}", r.text);
    assert_eq!(w.trust(&w.bravo).await?, "unverified");
    assert_eq!(
        w.offer_providers("?min_trust=verified").await?,
        vec![alpha.clone()]
    );
    let rating = w.get(&format!("/v1/parties/{bravo}/rating")).await?;
    assert_eq!(rating["inputs"][3]["score"], 0, "{rating}");
    // Revoking again changes nothing; the revoked statement can't come back.
    w.offset.fetch_add(10, Ordering::SeqCst);
    let r = w.revoke(Some(&w.notary), &w.bravo, &vouch_id).await?;
    assert_eq!(
        (r.status, &r.body["revoked_at"]),
        (200, &revoked_at),
        "{}",
        r.text
    );
    let list = w.get(&format!("/v1/parties/{bravo}/attestations")).await?;
    assert_eq!(list[0]["status"], "revoked", "{list}");

    // A day later alpha's e-mail attestation has expired.
    w.offset.fetch_add(DAY, Ordering::SeqCst);
    assert_eq!(w.trust(&w.alpha).await?, "unverified");
    let list = w.get(&format!("/v1/parties/{alpha}/attestations")).await?;
    assert_eq!(list[0]["id"], email_id.as_str());
    assert_eq!(list[0]["status"], "expired", "{list}");
    assert_eq!(
        w.offer_providers("?min_trust=verified").await?,
        Vec::<String>::new()
    );
    // The notary renews it: a new statement, a new id.
    let r = w
        .submit(
            &w.alpha,
            &serde_json::to_value(w.email(&w.notary, &w.alpha, Some(DAY))?)?,
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_ne!(r.body["id"], email_id.as_str());
    assert_eq!(w.trust(&w.alpha).await?, "verified");
    Ok(())
}

#[tokio::test]
async fn bad_attestations_are_refused_naming_the_problem() -> TestResult {
    let w = world().await?;
    let signed = w.email(&w.notary, &w.alpha, Some(DAY))?;
    let good = serde_json::to_value(&signed)?;
    let with = |field: &str, value: Value| {
        let mut v = good.clone();
        v[field] = value;
        v
    };
    let cases: Vec<(&str, &Signer, Value, u16, &str)> = vec![
        (
            "unknown attestor",
            &w.alpha,
            serde_json::to_value(w.email(&w.rogue, &w.alpha, None)?)?,
            403,
            "not one of the market's attestor keys",
        ),
        (
            "a different e-mail than signed",
            &w.alpha,
            with("email_sha256", json!(email_hash("eve@example.org")?)),
            401,
            "signature does not verify",
        ),
        (
            "a later expiry than signed",
            &w.alpha,
            with("expires_at", json!(w.now() + 2 * DAY)),
            401,
            "signature does not verify",
        ),
        (
            "signature not base64",
            &w.alpha,
            with("signature", json!("%%%")),
            401,
            "signature does not verify",
        ),
        (
            "about another party",
            &w.bravo,
            good.clone(),
            400,
            "is about party",
        ),
        (
            "moved to another party",
            &w.bravo,
            with("party", json!(w.bravo.party_id())),
            401,
            "signature does not verify",
        ),
        (
            "expired",
            &w.alpha,
            serde_json::to_value(SignedAttestation::sign(
                &w.notary,
                AttestationKind::Operator,
                &w.alpha.party_id(),
                None,
                w.now() - 2 * DAY,
                Some(w.now() - DAY),
            ))?,
            400,
            "expired",
        ),
        (
            "issued in the future",
            &w.alpha,
            serde_json::to_value(w.vouch(&w.notary, &w.alpha)).map(|mut v| {
                v["issued_at"] = json!(w.now() + DAY);
                v
            })?,
            400,
            "in the future",
        ),
        (
            "expiring before issued",
            &w.alpha,
            serde_json::to_value(SignedAttestation::sign(
                &w.notary,
                AttestationKind::Operator,
                &w.alpha.party_id(),
                None,
                w.now(),
                Some(w.now() - 1),
            ))?,
            400,
            "must be after issued_at",
        ),
        (
            "email without its hash",
            &w.alpha,
            serde_json::to_value(SignedAttestation::sign(
                &w.notary,
                AttestationKind::Email,
                &w.alpha.party_id(),
                None,
                w.now(),
                None,
            ))?,
            400,
            "needs email_sha256",
        ),
        (
            "email with the address instead of its hash",
            &w.alpha,
            serde_json::to_value(SignedAttestation::sign(
                &w.notary,
                AttestationKind::Email,
                &w.alpha.party_id(),
                Some("ops@alpha.example".into()),
                w.now(),
                None,
            ))?,
            400,
            "needs email_sha256",
        ),
        (
            "operator with an e-mail hash",
            &w.alpha,
            serde_json::to_value(SignedAttestation::sign(
                &w.notary,
                AttestationKind::Operator,
                &w.alpha.party_id(),
                Some(email_hash("ops@alpha.example")?),
                w.now(),
                None,
            ))?,
            400,
            "has no email_sha256",
        ),
        (
            "attestor not a key",
            &w.alpha,
            with("attestor", json!("notary")),
            400,
            "attestor must be",
        ),
        (
            "unknown kind",
            &w.alpha,
            with("kind", json!("passport")),
            400,
            "unknown variant",
        ),
        (
            "unknown field",
            &w.alpha,
            with("email", json!("ops@alpha.example")),
            400,
            "unknown field",
        ),
        (
            "missing signature",
            &w.alpha,
            {
                let mut v = good.clone();
                v.as_object_mut().ok_or("object")?.remove("signature");
                v
            },
            400,
            "signature",
        ),
    ];
    for (what, party, body, status, says) in cases {
        let r = w.submit(party, &body).await?;
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert!(message(&r).contains(says), "{what}: {}", r.text);
    }
    let r = w
        .client
        .send(
            None,
            "POST",
            &format!("/v1/parties/{}/attestations", w.alpha.party_id()),
            b"{not json",
        )
        .await?;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{}", r.text);
    let r = w
        .client
        .json(None, "POST", "/v1/parties/nobody/attestations", &good)
        .await?;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);
    let r = w
        .client
        .json(None, "GET", "/v1/parties/nobody/attestations", &Value::Null)
        .await?;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);

    // None of them was stored, and nothing changed alpha's trust level.
    let list = w
        .get(&format!("/v1/parties/{}/attestations", w.alpha.party_id()))
        .await?;
    assert_eq!(list, json!([]));
    assert_eq!(w.trust(&w.alpha).await?, "unverified");

    // The good one is taken once.
    let r = w.submit(&w.alpha, &good).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = w.submit(&w.alpha, &good).await?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    assert!(message(&r).contains("already submitted"), "{}", r.text);
    // Revoked, it can't be submitted again either.
    let r = w.revoke(Some(&w.notary), &w.alpha, &signed.id()).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w.submit(&w.alpha, &good).await?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    assert!(message(&r).contains("was revoked"), "{}", r.text);
    assert_eq!(w.trust(&w.alpha).await?, "unverified");
    Ok(())
}

/// An attestor key the market stops trusting (started again without it) no longer
/// counts, and a database from before attestations opens and takes them.
#[test]
fn dropped_attestor_keys_stop_counting_and_old_databases_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("market.db");
    let (notary, _) = Signer::generate()?;
    let (bob, _) = Signer::generate()?;
    let trusting = Policy {
        attestor_keys: vec![notary.public_key_hex()],
        ..Policy::default()
    };
    {
        let market = Market::open(&path, trusting.clone(), None)?;
        let (challenge, _) = market.challenge(&bob.public_key_hex())?;
        market.register(&bob.registration(&challenge, Role::Provider, "bob"))?;
    }
    // As if made before attestations existed.
    rusqlite::Connection::open(&path)?.execute_batch("DROP TABLE attestations")?;
    let market = Market::open(&path, trusting.clone(), None)?;
    assert!(market.attestations(&bob.party_id())?.is_empty());
    let vouch = SignedAttestation::sign(
        &notary,
        AttestationKind::Operator,
        &bob.party_id(),
        None,
        market.now(),
        None,
    );
    market.submit_attestation(&bob.party_id(), &vouch)?;
    assert_eq!(
        market.party_view(&bob.party_id())?.trust_level.as_str(),
        "vouched"
    );
    drop(market);
    let market = Market::open(&path, Policy::default(), None)?;
    let listed = market.attestations(&bob.party_id())?;
    assert_eq!(
        serde_json::to_value(&listed)?[0]["status"],
        "attestor_not_trusted"
    );
    assert_eq!(
        market.party_view(&bob.party_id())?.trust_level.as_str(),
        "unverified"
    );
    assert_eq!(market.rating(&bob.party_id())?.inputs[3].score, 0);
    Ok(())
}
