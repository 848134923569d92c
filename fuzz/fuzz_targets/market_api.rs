//! The market's HTTP API driven in-process (`api::router` over an in-memory market taking
//! manual deposits, as `--manual-deposits` does): request
//! bodies, query strings and signatures are the senders'. Each input is a fresh market with
//! a provider, a demander and an arbiter registered, then a run of requests, each
//! `[route, sender, hours to let pass, body length, body...]`. In bodies and paths, `$P`,
//! `$D`, `$A` stand for the three parties' ids and `$O`, `$C`, `$X`, `$N` for the last
//! offer, contract, dispute and period start answered, so a run can reach contracts,
//! receipts and disputes. No request may panic or answer 5xx, and the books must balance
//! after every one.
#![no_main]

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use sublet_market::{Market, Policy};
use sublet_market_api::identity::{Registration, Role, Signer};
use tower::ServiceExt;

const START: i64 = 1_700_000_000;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/deposits"),
    ("POST", "/v1/withdrawals"),
    ("POST", "/v1/held-back/release"),
    ("POST", "/v1/offers"),
    ("GET", "/v1/offers?$B"),
    ("GET", "/v1/offers/$O"),
    ("DELETE", "/v1/offers/$O"),
    ("POST", "/v1/contracts"),
    ("GET", "/v1/contracts"),
    ("GET", "/v1/contracts/$C"),
    ("POST", "/v1/contracts/$C/accept"),
    ("POST", "/v1/contracts/$C/reject"),
    ("POST", "/v1/contracts/$C/prepay"),
    ("POST", "/v1/contracts/$C/terminate"),
    ("POST", "/v1/contracts/$C/receipts"),
    ("GET", "/v1/contracts/$C/periods"),
    ("POST", "/v1/contracts/$C/periods/$N/settle"),
    ("POST", "/v1/contracts/$C/observations"),
    ("POST", "/v1/contracts/$C/feedback"),
    ("GET", "/v1/contracts/$C/feedback"),
    ("POST", "/v1/contracts/$C/disputes"),
    ("GET", "/v1/contracts/$C/disputes"),
    ("GET", "/v1/disputes"),
    ("GET", "/v1/disputes/$X"),
    ("POST", "/v1/disputes/$X/decide"),
    ("GET", "/v1/parties/$P"),
    ("GET", "/v1/parties/$D/balances"),
    ("GET", "/v1/parties/$P/rating"),
    ("POST", "/v1/parties/$P/attestations"),
    ("GET", "/v1/parties/$P/attestations"),
    ("POST", "/v1/challenges"),
    ("POST", "/v1/parties"),
    ("GET", "/v1/ledger"),
];

/// The three parties' keys, made once per process (a crash does not depend on them: the
/// input names parties only through `$P`, `$D` and `$A`).
fn keys() -> &'static [Signer; 3] {
    static KEYS: OnceLock<[Signer; 3]> = OnceLock::new();
    KEYS.get_or_init(|| [0, 1, 2].map(|_| Signer::generate().expect("a key").0))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

#[derive(Default)]
struct Seen {
    ids: [String; 3],
    offer: String,
    contract: String,
    dispute: String,
    period: String,
}

impl Seen {
    fn fill(&self, text: &str) -> String {
        text.replace("$P", &self.ids[0])
            .replace("$D", &self.ids[1])
            .replace("$A", &self.ids[2])
            .replace("$O", &self.offer)
            .replace("$C", &self.contract)
            .replace("$X", &self.dispute)
            .replace("$N", &self.period)
    }

    fn learn(&mut self, value: &serde_json::Value) {
        if let Some(id) = value.get("id").and_then(|v| v.as_str()) {
            match id.split('_').next() {
                Some("of") => self.offer = id.to_owned(),
                Some("ct") => self.contract = id.to_owned(),
                Some("dp") => self.dispute = id.to_owned(),
                _ => {}
            }
        }
        if let Some(start) = ["period_start", "accepted_at"]
            .iter()
            .find_map(|k| value.get(*k).and_then(serde_json::Value::as_i64))
        {
            self.period = start.to_string();
        }
        if let Some(items) = value.as_array() {
            for item in items {
                self.learn(item);
            }
        }
    }
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Vec<u8>,
    signer: Option<&Signer>,
    now: i64,
) -> Option<(StatusCode, serde_json::Value)> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(signer) = signer {
        for (name, value) in signer.sign_request(method, path, &body, now).ok()? {
            request = request.header(name, value);
        }
    }
    let request = request.body(Body::from(body)).ok()?;
    let response = app.clone().oneshot(request).await.ok()?;
    let status = response.status();
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

async fn register(app: &axum::Router, signer: &Signer, role: Role, now: i64) -> String {
    let body = serde_json::json!({ "public_key": signer.public_key_hex() }).to_string();
    let (_, answer) = send(app, "POST", "/v1/challenges", body.into(), None, now)
        .await
        .expect("a challenge");
    let challenge = answer["challenge"]
        .as_str()
        .expect("a challenge")
        .to_owned();
    let registration: Registration = signer.registration(&challenge, role, "fuzz");
    let body = serde_json::to_vec(&registration).expect("a registration");
    let (status, party) = send(app, "POST", "/v1/parties", body, None, now)
        .await
        .expect("registered");
    assert!(status.is_success(), "registering: {status} {party}");
    party["id"].as_str().expect("a party id").to_owned()
}

async fn run(input: &[u8]) {
    let keys = keys();
    let clock = Arc::new(AtomicI64::new(START));
    let policy = Policy {
        arbiter_keys: vec![keys[2].public_key_hex()],
        ..Policy::default()
    };
    let time = Arc::clone(&clock);
    let market = Market::in_memory(policy, Some(Arc::new(sublet_market::rail::ManualRail)))
        .expect("an in-memory market")
        .with_clock(move || time.load(Ordering::SeqCst));
    let app = sublet_market::api::router(Arc::new(market));
    let mut seen = Seen::default();
    for (i, (signer, role)) in keys
        .iter()
        .zip([Role::Provider, Role::Demander, Role::Arbiter])
        .enumerate()
    {
        seen.ids[i] = register(&app, signer, role, START).await;
    }
    let mut rest = input;
    while let [route, sender, hours, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, tail) = tail.split_at(len);
        rest = tail;
        let now =
            clock.fetch_add(i64::from(*hours) * 3600, Ordering::SeqCst) + i64::from(*hours) * 3600;
        let (method, path) = ROUTES[usize::from(*route) % ROUTES.len()];
        let body = seen.fill(&String::from_utf8_lossy(body));
        let path = seen.fill(&path.replace("$B", &body));
        let signer = keys.get(usize::from(*sender % 4));
        let Some((status, answer)) =
            send(&app, method, &path, body.into_bytes(), signer, now).await
        else {
            continue;
        };
        assert!(
            !status.is_server_error(),
            "{method} {path} answered {status}: {answer}"
        );
        seen.learn(&answer);
        let (_, books) = send(&app, "GET", "/v1/ledger", Vec::new(), None, now)
            .await
            .expect("the ledger");
        assert_eq!(
            books["balanced"],
            serde_json::Value::Bool(true),
            "after {method} {path}: {books}"
        );
    }
}

fuzz_target!(|input: &[u8]| {
    runtime().block_on(run(input));
});
