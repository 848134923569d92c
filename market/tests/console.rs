//! The web console acting for a party: the `GET /v1/disputes` route it lists
//! disputes with, a check that the page never parses server text as HTML, and
//! the console driven end to end in headless Chromium (e2e/console/), signing
//! in with key files, checking what it shows against what was seeded, acting
//! through it and checking the ledger afterwards through the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sublet_market::client::{Client, ClientTls, Reply};
use sublet_market::identity::{Role, Signer};
use sublet_market::rail::treasurer::Kind;
use sublet_market::rail::{Authorization, PaymentRail, TreasurerRail};
use sublet_market::{Market, Policy, api};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Res<T> = Result<T, Box<dyn std::error::Error>>;

const GIB: u64 = 1 << 30;
const CREDIT: i64 = 1_000_000;
/// The bank reference of dee's deposit, which a treasurer signed.
const DEPOSIT_REFERENCE: &str = "wire-0042";
/// The first message of the seeded ticket.
const TICKET_MESSAGE: &str = "reads from alpha take seconds since this morning";
/// What the seeded dispute claims: markup, which the console must show as text.
const HOSTILE_CLAIM: &str =
    "<img src=x onerror=\"window.__pwned=1\"><b>alpha</b> reports 7 GiB-hours; we stored 10";

struct Parties {
    alpha: Signer,
    alpha_pkcs8: Vec<u8>,
    bravo: Signer,
    dee: Signer,
    dee_pkcs8: Vec<u8>,
    judge: Signer,
    judge_pkcs8: Vec<u8>,
    /// Support staff.
    help: Signer,
    help_pkcs8: Vec<u8>,
    /// Registered with no contract.
    outsider: Signer,
}

struct Seeded {
    url: String,
    client: Client,
    p: Parties,
    /// Dee's active contract with alpha (prepaid, one settled and one mismatched period).
    active: String,
    /// Dee's contract proposed to bravo, not accepted.
    proposed: String,
    /// The first period of `active`: settled.
    settled_start: i64,
    /// The second: receipts disagree on gib_hours.
    mismatch_start: i64,
    /// Dee's dispute on the mismatched period.
    dispute: String,
    /// Dee's support ticket on `active`, unanswered.
    ticket: String,
    /// The treasurer's public key (hex), who signed dee's deposit.
    treasurer: String,
}

impl Seeded {
    async fn call(&self, who: &Signer, method: &str, path: &str, body: Value) -> Res<Reply> {
        Ok(self.client.json(Some(who), method, path, &body).await?)
    }

    async fn ok(&self, who: &Signer, method: &str, path: &str, body: Value) -> Res<Value> {
        Ok(self.call(who, method, path, body).await?.ok()?)
    }

    async fn balances(&self, who: &Signer) -> Res<Value> {
        self.ok(
            who,
            "GET",
            &format!("/v1/parties/{}/balances", who.party_id()),
            Value::Null,
        )
        .await
    }

    async fn contract(&self, who: &Signer, id: &str) -> Res<Value> {
        self.ok(who, "GET", &format!("/v1/contracts/{id}"), Value::Null)
            .await
    }

    async fn disputes(&self, who: &Signer, query: &str) -> Res<Vec<String>> {
        let list = self
            .ok(who, "GET", &format!("/v1/disputes{query}"), Value::Null)
            .await?;
        Ok(list
            .as_array()
            .ok_or("disputes: not an array")?
            .iter()
            .filter_map(|d| d["id"].as_str().map(str::to_owned))
            .collect())
    }
}

fn key() -> Res<(Signer, Vec<u8>)> {
    Ok(Signer::generate()?)
}

fn receipt(start: i64, gib_hours: u64) -> Value {
    json!({
        "period_start": start, "period_end": start + 3600, "gib_hours": gib_hours,
        "egress_bytes": GIB, "audits_passed": 8, "audits_failed": 2,
    })
}

/// A market on a free port with two providers, a demander, an arbiter and an
/// outsider; the demander holds an active, prepaid contract with one settled and
/// one mismatched period and a dispute on the latter, and a proposed contract.
async fn seed() -> Res<Seeded> {
    let (alpha, alpha_pkcs8) = key()?;
    let (bravo, _) = key()?;
    let (dee, dee_pkcs8) = key()?;
    let (judge, judge_pkcs8) = key()?;
    let (help, help_pkcs8) = key()?;
    let (outsider, _) = key()?;
    let (treasurer, _) = key()?;
    let policy = Policy {
        arbiter_keys: vec![judge.public_key_hex()],
        support_keys: vec![help.public_key_hex()],
        ..Policy::default()
    };
    let rail: Option<Arc<dyn PaymentRail>> =
        Some(Arc::new(TreasurerRail::new(&[treasurer.public_key_hex()])?));
    let market = Market::in_memory(policy, rail)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(sublet_market::server::serve(
        listener,
        api::router(Arc::new(market)),
        sublet_market::server::Limits::default(),
        std::future::pending(),
    ));
    let client = Client::with_tls(&url, &ClientTls::insecure_http())?;
    client.register(&alpha, Role::Provider, "alpha").await?;
    client.register(&bravo, Role::Provider, "bravo").await?;
    client.register(&dee, Role::Demander, "dee").await?;
    client.register(&judge, Role::Arbiter, "judge").await?;
    client.register(&help, Role::Support, "help").await?;
    client
        .register(&outsider, Role::Demander, "outsider")
        .await?;
    let mut s = Seeded {
        url,
        client,
        p: Parties {
            alpha,
            alpha_pkcs8,
            bravo,
            dee,
            dee_pkcs8,
            judge,
            judge_pkcs8,
            help,
            help_pkcs8,
            outsider,
        },
        active: String::new(),
        proposed: String::new(),
        settled_start: 0,
        mismatch_start: 0,
        dispute: String::new(),
        ticket: String::new(),
        treasurer: treasurer.public_key_hex(),
    };
    let p = &s.p;
    let offer = |region: &str| {
        json!({
            "capacity_bytes": 100 * GIB, "price_per_gib_month": 7_300_000,
            "egress_price_per_gib": CREDIT, "region": region, "min_term_days": 0,
            "promised_uptime_bps": 9950,
        })
    };
    let offer_a = s
        .ok(&p.alpha, "POST", "/v1/offers", offer("eu-west"))
        .await?;
    let offer_b = s
        .ok(&p.bravo, "POST", "/v1/offers", offer("us-east"))
        .await?;
    let authorization = Authorization::sign(
        &treasurer,
        Kind::Deposit,
        &p.dee.party_id(),
        20 * CREDIT,
        DEPOSIT_REFERENCE,
        now(),
    )?;
    s.ok(
        &p.dee,
        "POST",
        "/v1/deposits",
        json!({"op_id": "dep", "amount": 20 * CREDIT, "reference": DEPOSIT_REFERENCE,
               "authorization": authorization}),
    )
    .await?;
    let contract = |offer: &Value, gib: u64| json!({"offer_id": offer["id"], "reserved_bytes": gib * GIB, "term_days": 30});
    let c = s
        .ok(&p.dee, "POST", "/v1/contracts", contract(&offer_a, 10))
        .await?;
    let active = c["id"].as_str().ok_or("contract id")?.to_owned();
    let c = s
        .ok(
            &p.alpha,
            "POST",
            &format!("/v1/contracts/{active}/accept"),
            json!({}),
        )
        .await?;
    let start = c["accepted_at"].as_i64().ok_or("accepted_at")?;
    s.ok(
        &p.dee,
        "POST",
        &format!("/v1/contracts/{active}/prepay"),
        json!({"op_id": "pre", "amount": 5 * CREDIT}),
    )
    .await?;
    let c = s
        .ok(&p.dee, "POST", "/v1/contracts", contract(&offer_b, 5))
        .await?;
    let proposed = c["id"].as_str().ok_or("contract id")?.to_owned();
    // Period 1: both sides agree, so it settles. Period 2: they disagree.
    for (who, second) in [(&p.alpha, 7), (&p.dee, 10)] {
        let receipts = format!("/v1/contracts/{active}/receipts");
        s.ok(who, "POST", &receipts, receipt(start, 10)).await?;
        s.ok(who, "POST", &receipts, receipt(start + 3600, second))
            .await?;
    }
    let d = s
        .ok(
            &p.dee,
            "POST",
            &format!("/v1/contracts/{active}/disputes"),
            json!({"period_start": start + 3600, "claim": HOSTILE_CLAIM}),
        )
        .await?;
    s.dispute = d["id"].as_str().ok_or("dispute id")?.to_owned();
    let t = s
        .ok(
            &p.dee,
            "POST",
            "/v1/tickets",
            json!({"subject": "slow reads", "message": TICKET_MESSAGE, "contract": active}),
        )
        .await?;
    s.ticket = t["id"].as_str().ok_or("ticket id")?.to_owned();
    s.active = active;
    s.proposed = proposed;
    s.settled_start = start;
    s.mismatch_start = start + 3600;
    Ok(s)
}

#[tokio::test]
async fn disputes_route_lists_what_each_party_may_read() -> TestResult {
    let s = seed().await?;
    let p = &s.p;
    // A second dispute, by the provider, on the whole contract; then the arbiter decides it.
    let d = s
        .ok(
            &p.alpha,
            "POST",
            &format!("/v1/contracts/{}/disputes", s.active),
            json!({"claim": "the demander's gateway reports more than it stored"}),
        )
        .await?;
    let second = d["id"].as_str().ok_or("dispute id")?.to_owned();
    s.ok(
        &p.judge,
        "POST",
        &format!("/v1/disputes/{second}/decide"),
        json!({"in_favour_of": "demander", "amount": 0, "reason": "no evidence"}),
    )
    .await?;

    // Both parties of the contract and the arbiter see both; newest first.
    let both = vec![second.clone(), s.dispute.clone()];
    for who in [&p.dee, &p.alpha, &p.judge] {
        assert_eq!(s.disputes(who, "").await?, both);
        assert_eq!(s.disputes(who, "?state=any").await?, both);
        assert_eq!(
            s.disputes(who, "?state=open").await?,
            vec![s.dispute.clone()]
        );
        assert_eq!(
            s.disputes(who, "?state=decided").await?,
            vec![second.clone()]
        );
    }
    // Parties of other contracts see none of them.
    for who in [&p.bravo, &p.outsider] {
        assert_eq!(s.disputes(who, "").await?, Vec::<String>::new());
    }
    // The listing carries the decision like GET /v1/disputes/{id}.
    let list = s
        .ok(&p.dee, "GET", "/v1/disputes?state=decided", Value::Null)
        .await?;
    let one = s
        .ok(
            &p.dee,
            "GET",
            &format!("/v1/disputes/{second}"),
            Value::Null,
        )
        .await?;
    assert_eq!(list, json!([one]));

    // Unsigned, badly signed and malformed requests are refused with a message.
    let r = s.client.send(None, "GET", "/v1/disputes", b"").await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.text);
    let r = s
        .call(&p.dee, "GET", "/v1/disputes?state=closed", Value::Null)
        .await?;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{}", r.text);
    assert!(r.text.contains("open, decided or any"), "{}", r.text);
    let r = s
        .call(&p.dee, "GET", "/v1/disputes?mine=1", Value::Null)
        .await?;
    assert_eq!(r.status, 400, "{}", r.text);
    // A signature over another query does not pass.
    let headers = p
        .dee
        .sign_request("GET", "/v1/disputes?state=open", b"", now())?;
    let r = s
        .client
        .send_with_headers("GET", "/v1/disputes?state=decided", b"", &headers)
        .await?;
    assert_eq!(r.status, 401, "{}", r.text);
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn console_html() -> &'static str {
    include_str!("../src/console.html")
}

/// Server text reaches the page only through textContent and attributes.
#[test]
fn console_never_parses_text_as_html() {
    let html = console_html();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "DOMParser",
        "createContextualFragment",
        "eval(",
        "new Function",
    ] {
        assert!(!html.contains(sink), "console.html uses {sink}");
    }
    // The key stays in the page: not in storage, not in a request.
    for leak in [
        "localStorage",
        "sessionStorage",
        "indexedDB",
        "document.cookie",
    ] {
        assert!(!html.contains(leak), "console.html uses {leak}");
    }
}

/// Every signed call of the console names a route of the API with that method.
#[tokio::test]
async fn console_signs_only_routes_that_exist() -> TestResult {
    let s = seed().await?;
    let html = console_html();
    let mut calls = Vec::new();
    for (at, _) in html.match_indices("signed(\"") {
        let rest = &html[at + "signed(\"".len()..];
        let method_end = rest.find('"').ok_or("unterminated method")?;
        let method = &rest[..method_end];
        let rest = rest[method_end + 1..].trim_start_matches([',', ' ']);
        let quote = rest.chars().next().ok_or("no path")?;
        let end = rest[1..].find(quote).ok_or("unterminated path")?;
        calls.push((method.to_owned(), rest[1..=end].to_owned()));
    }
    assert!(calls.len() >= 8, "{calls:?}");
    for (method, call) in &calls {
        let mut path = call
            .replace("${encodeURIComponent(session.id)}", &s.p.dee.party_id())
            .replace("${encodeURIComponent(c.id)}", &s.active)
            .replace("${encodeURIComponent(id)}", &s.active)
            .replace("${encodeURIComponent(contractId)}", &s.active)
            .replace("${encodeURIComponent(d.id)}", &s.dispute)
            .replace("${encodeURIComponent(ticketId)}", &s.ticket);
        assert!(!path.contains('$'), "a call the test does not know: {call}");
        let (who, body) = match (method.as_str(), path.as_str()) {
            ("GET", _) => (&s.p.dee, Value::Null),
            (_, p) if p.ends_with("/prepay") => {
                (&s.p.dee, json!({"op_id": "routes", "amount": CREDIT}))
            }
            (_, p) if p.ends_with("/decide") => (
                &s.p.judge,
                json!({"in_favour_of": "provider", "amount": 0, "reason": "test"}),
            ),
            (_, p) if p.ends_with("/disputes") => (&s.p.dee, json!({"claim": "test"})),
            (_, p) if p.ends_with("/feedback") => {
                (&s.p.dee, json!({"stars": 3, "comment": "test"}))
            }
            (_, p) if p.ends_with("/reviews") => (&s.p.dee, json!({"stars": 4, "text": "test"})),
            (_, "/v1/tickets") => (
                &s.p.dee,
                json!({"subject": "test", "message": "test", "contract": s.active}),
            ),
            (_, p) if p.ends_with("/messages") => (&s.p.alpha, json!({"message": "test"})),
            (_, p) if p.ends_with("/escalate") => (&s.p.dee, Value::Null),
            (_, p) if p.ends_with("/close") => (&s.p.dee, Value::Null),
            _ => return Err(format!("a call the test does not know: {method} {call}").into()),
        };
        if path.ends_with("/close") {
            // A ticket of its own: the seeded one is escalated by a later call.
            let t = s
                .ok(
                    &s.p.dee,
                    "POST",
                    "/v1/tickets",
                    json!({"subject": "to close", "message": "test"}),
                )
                .await?;
            path = format!("/v1/tickets/{}/close", t["id"].as_str().ok_or("ticket id")?);
        }
        let r = s.call(who, method, &path, body).await?;
        assert!(
            (200..300).contains(&r.status),
            "{method} {path} (from {call}): {} {}",
            r.status,
            r.text
        );
    }
    Ok(())
}

// ---- The console in headless Chromium ----

fn browser_required() -> bool {
    std::env::var("SUBLET_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn console_driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/console")
}

// The lookup the e2e browser tests use, shared as a file: this crate cannot depend on
// sublet-e2e.
#[path = "../../e2e/src/browser.rs"]
mod browser;
use browser::chromium;

/// Why the browser test can't run here, if it can't.
fn browser_missing() -> Option<String> {
    browser::missing(&console_driver_dir())
}

#[tokio::test]
async fn console_signs_in_and_acts_in_headless_chromium() -> TestResult {
    if let Some(why) = browser_missing() {
        if browser_required() {
            return Err(
                format!("SUBLET_REQUIRE_BROWSER=1 but {why}; run .ci/install-browser").into(),
            );
        }
        eprintln!(
            "SKIPPED console_signs_in_and_acts_in_headless_chromium: {why} (.ci/install-browser installs it)"
        );
        return Ok(());
    }
    let s = seed().await?;
    let p = &s.p;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-browser");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    eprintln!("console screenshots and driver log: {}", out.display());
    let keys = tempfile::tempdir()?;
    let write = |name: &str, data: &[u8]| -> Res<String> {
        let path = keys.path().join(name);
        std::fs::write(&path, data)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let (_, stranger_pkcs8) = key()?;

    let dee_before = s.balances(&p.dee).await?;
    let rating = s
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/rating", p.dee.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    let config = json!({
        "url": s.url,
        "chromium": chromium().ok_or("chromium")?,
        "out": out,
        "keys": {
            "dee": write("dee.key", &p.dee_pkcs8)?,
            "judge": write("judge.key", &p.judge_pkcs8)?,
            "help": write("help.key", &p.help_pkcs8)?,
            "stranger": write("stranger.key", &stranger_pkcs8)?,
            "alpha_pem": write("alpha.pem", pem(&p.alpha_pkcs8).as_bytes())?,
            "garbage": write("garbage.key", b"not a key at all\n")?,
        },
        "dee": {
            "id": p.dee.party_id(),
            "available": dee_before["available"],
            "escrow": dee_before["escrow"],
            "rating_score": rating["score"],
        },
        "alpha": {"id": p.alpha.party_id()},
        "judge": {"id": p.judge.party_id()},
        "help": {"id": p.help.party_id()},
        "ticket": {"id": s.ticket, "message": TICKET_MESSAGE},
        "active": {
            "id": s.active,
            "escrow": s.contract(&p.dee, &s.active).await?["escrow"],
            "price_per_gib_month": 7_300_000,
            "reserved_bytes": 10 * GIB,
            "settled_start": s.settled_start,
            "mismatch_start": s.mismatch_start,
            "settled_gross": 1_100_000,
        },
        "proposed": {"id": s.proposed},
        "treasury": {
            "reference": DEPOSIT_REFERENCE,
            "op_id": "dep",
            "amount": 20,
            "treasurer": s.treasurer,
        },
        "dispute": {"id": s.dispute, "claim": HOSTILE_CLAIM},
        "actions": {
            "too_much": 1_000_000,
            "prepay": 2,
            "stars": 4,
            "feedback": "console: quick and reliable",
            "claim": "console: 3 objects lost in the first hour",
            "decision_amount": 0.3,
            "reason": "console: the audit log confirms 3 lost objects",
            "support_reply": "support: alpha's disk is rebuilding, reads recover by noon",
            "review_stars": 5,
            "review": "console: fast once the rebuild was done",
        },
    });
    let config_path = out.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

    let script = console_driver_dir().join("drive-console.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&config_path)
        .current_dir(console_driver_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let stderr = child.stderr.take().ok_or("stderr")?;
    let read = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut text = String::new();
            let _ = r.read_to_string(&mut text).await;
            text
        })
    };
    let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
        .await
        .map_err(|_| "the console driver ran for more than 180 s")??;
    let (stdout, stderr) = (stdout.await?, stderr.await?);
    std::fs::write(out.join("driver.log"), format!("{stdout}\n{stderr}"))?;
    eprintln!("{stdout}{stderr}");
    if !status.success() {
        return Err(format!(
            "the console driver failed ({status}); screenshots in {}",
            out.display()
        )
        .into());
    }
    let result: Value = serde_json::from_slice(&std::fs::read(out.join("result.json"))?)?;

    // The prepayment made through the console moved 2 credits into escrow.
    let dee_after = s.balances(&p.dee).await?;
    let available = |b: &Value| b["available"].as_i64().unwrap_or(i64::MIN);
    let escrow_before = config["active"]["escrow"].as_i64().ok_or("escrow")?;
    let contract = s.contract(&p.dee, &s.active).await?;
    assert_eq!(
        contract["escrow"].as_i64(),
        Some(escrow_before + 2 * CREDIT),
        "{contract}"
    );
    // The feedback given through the console.
    let feedback = s
        .ok(
            &p.dee,
            "GET",
            &format!("/v1/contracts/{}/feedback", s.active),
            Value::Null,
        )
        .await?;
    assert_eq!(feedback["stars"], 4, "{feedback}");
    assert_eq!(feedback["comment"], config["actions"]["feedback"]);
    // The dispute opened through the console, on the settled period, with its claim...
    let opened = result["opened_dispute"].as_str().ok_or("opened_dispute")?;
    let d = s
        .ok(
            &p.dee,
            "GET",
            &format!("/v1/disputes/{opened}"),
            Value::Null,
        )
        .await?;
    assert_eq!(d["period_start"].as_i64(), Some(s.settled_start), "{d}");
    assert_eq!(d["opened_by"].as_str(), Some(p.dee.party_id().as_str()));
    assert_eq!(d["claim"], config["actions"]["claim"]);
    // ...decided by the arbiter through the console: 0.3 credits from alpha to dee.
    let decision = &d["decision"];
    assert_eq!(decision["in_favour_of"], "demander", "{d}");
    assert_eq!(decision["amount"].as_i64(), Some(300_000), "{d}");
    assert_eq!(decision["moved"].as_i64(), Some(300_000), "{d}");
    assert_eq!(
        decision["decided_by"].as_str(),
        Some(p.judge.party_id().as_str())
    );
    assert_eq!(decision["reason"], config["actions"]["reason"]);
    assert_eq!(
        available(&dee_after),
        available(&dee_before) - 2 * CREDIT + 300_000,
        "{dee_before} -> {dee_after}"
    );
    // The ticket support answered and dee escalated through the console, and dee's review.
    let ticket = s
        .ok(
            &p.dee,
            "GET",
            &format!("/v1/tickets/{}", s.ticket),
            Value::Null,
        )
        .await?;
    assert_eq!(ticket["state"], "escalated", "{ticket}");
    assert_eq!(ticket["dispute"], result["escalated_dispute"], "{ticket}");
    assert_eq!(
        ticket["messages"][1]["body"], config["actions"]["support_reply"],
        "{ticket}"
    );
    assert_eq!(ticket["messages"][1]["author_role"], "support", "{ticket}");
    let reviews = s
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/reviews", p.alpha.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(reviews["count"], 1, "{reviews}");
    assert_eq!(reviews["reviews"][0]["stars"], 5, "{reviews}");
    assert_eq!(
        reviews["reviews"][0]["text"], config["actions"]["review"],
        "{reviews}"
    );
    // The seeded dispute is still open, the refused prepayment moved nothing, and the books balance.
    let seeded = s
        .ok(
            &p.dee,
            "GET",
            &format!("/v1/disputes/{}", s.dispute),
            Value::Null,
        )
        .await?;
    assert_eq!(seeded["decision"], Value::Null, "{seeded}");
    let ledger = s
        .client
        .json(None, "GET", "/v1/ledger", &Value::Null)
        .await?
        .ok()?;
    assert_eq!(ledger["balanced"], json!(true), "{ledger}");
    assert_eq!(
        ledger["net_deposits"].as_i64(),
        Some(20 * CREDIT),
        "{ledger}"
    );
    let shots = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(shots >= 4, "expected screenshots in {}", out.display());
    eprintln!("{shots} screenshots in {}", out.display());
    Ok(())
}

/// PKCS#8 DER as PEM, the other form the console takes.
fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}
