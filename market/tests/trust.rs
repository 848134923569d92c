//! Support tickets, reviews both ways, demander credit and the market's own contact check,
//! through the service: who may do what, the bounds, and how each moves the ratings the
//! way their explanations say.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sublet_market::contacts::{ContactProof, ContactRequest, FileDelivery};
use sublet_market::contracts::NewContract;
use sublet_market::disputes::Decision;
use sublet_market::identity::{Party, Role, Signer, Verified};
use sublet_market::offers::{NewOffer, OfferFilter};
use sublet_market::rail::ManualRail;
use sublet_market::ratings::Rating;
use sublet_market::receipts::UsageReceipt;
use sublet_market::reviews::NewReview;
use sublet_market::tickets::{NewMessage, NewTicket, TicketFilter, TicketState};
use sublet_market::{Error, Market, Policy, Result};

#[path = "../../e2e/src/postgres.rs"]
mod pg;

const GIB: u64 = 1 << 30;
const T0: i64 = 1_800_000_000;
const PERIOD: i64 = 3600;
const WINDOW: i64 = 14 * 24 * 3600;

struct World {
    market: Market,
    clock: Arc<AtomicI64>,
    dee: Party,
    pat: Party,
    /// A provider with no contract with dee.
    stranger: Party,
    help: Party,
    judge: Party,
    contract: String,
    mailbox: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn party(m: &Market, signer: &Signer, role: Role, name: &str) -> Result<Party> {
    let (challenge, _) = m.challenge(&signer.public_key_hex())?;
    m.register(&signer.registration(&challenge, role, name))
}

fn new_party(m: &Market, role: Role, name: &str) -> Result<Party> {
    party(m, &Signer::generate()?.0, role, name)
}

fn verified(p: &Party) -> Verified {
    Verified {
        party: p.clone(),
        canonical: "trust test".into(),
        signature: "-".into(),
    }
}

fn world() -> Result<World> {
    world_on(None)
}

/// The world on PostgreSQL at `pg`, or on an in-memory SQLite database.
fn world_on(pg: Option<&str>) -> Result<World> {
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
    let mailbox = dir.path().join("codes.jsonl");
    let clock = Arc::new(AtomicI64::new(T0));
    let (judge_key, _) = Signer::generate()?;
    let (help_key, _) = Signer::generate()?;
    let policy = Policy {
        arbiter_keys: vec![judge_key.public_key_hex()],
        support_keys: vec![help_key.public_key_hex()],
        receipt_period_secs: PERIOD,
        review_window_secs: WINDOW,
        ..Policy::default()
    };
    let c = clock.clone();
    let market = match pg {
        Some(url) => Market::open_postgres(url, policy, Some(Arc::new(ManualRail)))?,
        None => Market::in_memory(policy, Some(Arc::new(ManualRail)))?,
    }
    .with_clock(move || c.load(Ordering::SeqCst))
    .with_delivery(Arc::new(FileDelivery::new(&mailbox)));
    let judge = party(&market, &judge_key, Role::Arbiter, "judge")?;
    let help = party(&market, &help_key, Role::Support, "help")?;
    let dee = new_party(&market, Role::Demander, "dee")?;
    let pat = new_party(&market, Role::Provider, "pat")?;
    let stranger = new_party(&market, Role::Provider, "stranger")?;
    let offer = market.publish_offer(
        &pat,
        &NewOffer {
            capacity_bytes: 100 * GIB,
            price_per_gib_month: 7_300_000,
            egress_price_per_gib: 0,
            region: "eu".into(),
            min_term_days: 0,
            promised_uptime_bps: 9900,
            endpoint: String::new(),
        },
    )?;
    let proposed = market.propose_contract(
        &verified(&dee),
        b"{}",
        &NewContract {
            offer_id: offer.id,
            reserved_bytes: 10 * GIB,
            term_days: 30,
        },
    )?;
    market.accept_contract(&verified(&pat), b"{}", &proposed.id)?;
    market.deposit(&dee, "dep-1", 50_000_000, "t", None)?;
    market.prepay(&dee, &proposed.id, "pre-1", 20_000_000)?;
    Ok(World {
        market,
        clock,
        dee,
        pat,
        stranger,
        help,
        judge,
        contract: proposed.id,
        mailbox,
        _dir: dir,
    })
}

impl World {
    fn pass(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    /// Both sides report the period starting `n` periods after acceptance.
    fn agreed_period(&self, n: i64) -> Result<()> {
        let start = T0 + n * PERIOD;
        let r = UsageReceipt {
            period_start: start,
            period_end: start + PERIOD,
            gib_hours: 10,
            egress_bytes: 0,
            audits_passed: 4,
            audits_failed: 0,
            shards_failed: 0,
        };
        for who in [&self.dee, &self.pat] {
            self.market
                .submit_receipt(&verified(who), b"{}", &self.contract, &r)?;
        }
        Ok(())
    }

    fn rating(&self, p: &Party) -> Result<Rating> {
        self.market.rating(&p.id)
    }

    fn ticket_on_contract(&self, by: &Party, subject: &str) -> Result<String> {
        Ok(self
            .market
            .open_ticket(
                &verified(by),
                b"{}",
                &NewTicket {
                    subject: subject.into(),
                    message: "please look".into(),
                    contract: Some(self.contract.clone()),
                    period_start: None,
                    party: None,
                },
            )?
            .id)
    }

    fn say(&self, by: &Party, ticket: &str, text: &str) -> Result<()> {
        self.market
            .reply_ticket(
                &verified(by),
                b"{}",
                ticket,
                &NewMessage {
                    message: text.into(),
                },
            )
            .map(drop)
    }
}

fn input<'a>(r: &'a Rating, name: &str) -> &'a sublet_market::ratings::RatingInput {
    r.inputs
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no input {name} in {r:?}"))
}

fn stars(n: u8, text: &str) -> NewReview {
    NewReview {
        stars: n,
        text: text.into(),
    }
}

#[test]
fn both_sides_review_once_per_contract_within_the_window() -> Result<()> {
    both_sides_review_once_per_contract_within_the_window_in(world()?)
}

#[test]
fn both_sides_review_once_per_contract_within_the_window_on_postgres() -> Result<()> {
    match pg::database() {
        Some(url) => {
            both_sides_review_once_per_contract_within_the_window_in(world_on(Some(&url))?)
        }
        None => Ok(()),
    }
}

fn both_sides_review_once_per_contract_within_the_window_in(w: World) -> Result<()> {
    let m = &w.market;
    // Nothing to review before a period is over.
    let early = m.give_review(&verified(&w.dee), b"{}", &w.contract, &stars(5, "great"));
    assert!(matches!(early, Err(Error::Conflict(_))), "{early:?}");
    w.pass(PERIOD);
    // Outsiders and bad stars are refused.
    let outsider = m.give_review(&verified(&w.stranger), b"{}", &w.contract, &stars(1, ""));
    assert!(matches!(outsider, Err(Error::Forbidden(_))), "{outsider:?}");
    for bad in [0, 6] {
        let r = m.give_review(&verified(&w.dee), b"{}", &w.contract, &stars(bad, ""));
        assert!(matches!(r, Err(Error::BadRequest(_))), "{bad}: {r:?}");
    }
    let long = m.give_review(
        &verified(&w.dee),
        b"{}",
        &w.contract,
        &stars(3, &"x".repeat(2001)),
    );
    assert!(matches!(long, Err(Error::BadRequest(_))), "{long:?}");

    let by_dee = m.give_review(&verified(&w.dee), b"{}", &w.contract, &stars(2, "slow"))?;
    assert_eq!(
        (by_dee.side, by_dee.subject.as_str()),
        (Role::Demander, w.pat.id.as_str())
    );
    assert_eq!(by_dee.editable_until, T0 + PERIOD + WINDOW);
    let by_pat = m.give_review(&verified(&w.pat), b"{}", &w.contract, &stars(5, "paid"))?;
    assert_eq!(
        (by_pat.side, by_pat.subject.as_str()),
        (Role::Provider, w.dee.id.as_str())
    );
    // Edited within the window: still one review per side.
    w.pass(WINDOW - 10);
    let edited = m.give_review(&verified(&w.dee), b"{}", &w.contract, &stars(4, "better"))?;
    assert_eq!((edited.stars, edited.created_at), (4, by_dee.created_at));
    assert_eq!(m.contract_reviews(&w.contract)?.len(), 2);
    let about_pat = m.party_reviews(&w.pat.id)?;
    assert_eq!((about_pat.count, about_pat.mean_stars_x100), (1, Some(400)));
    assert_eq!(about_pat.reviews[0].text, "better");
    // After the window it is final.
    w.pass(20);
    let late = m.give_review(&verified(&w.dee), b"{}", &w.contract, &stars(1, "angry"));
    assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
    assert_eq!(m.party_reviews(&w.pat.id)?.reviews[0].stars, 4);

    // Both ratings take them in, explained.
    let pat = w.rating(&w.pat)?;
    let feedback = input(&pat, "feedback");
    assert_eq!(feedback.score, 750, "{feedback:?}");
    assert!(feedback.value.contains("4.00 stars"), "{feedback:?}");
    let dee = w.rating(&w.dee)?;
    let reviews = input(&dee, "reviews");
    assert_eq!((reviews.score, reviews.weight_percent), (1000, 15));
    Ok(())
}

#[test]
fn demander_credit_inputs_follow_the_books() -> Result<()> {
    demander_credit_inputs_follow_the_books_in(world()?)
}

#[test]
fn demander_credit_inputs_follow_the_books_on_postgres() -> Result<()> {
    match pg::database() {
        Some(url) => demander_credit_inputs_follow_the_books_in(world_on(Some(&url))?),
        None => Ok(()),
    }
}

fn demander_credit_inputs_follow_the_books_in(w: World) -> Result<()> {
    let fresh = w.rating(&w.dee)?;
    assert_eq!(
        fresh.inputs.iter().map(|i| i.weight_percent).sum::<u32>(),
        100
    );
    let names: Vec<&str> = fresh.inputs.iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        [
            "payment_record",
            "receipt_agreement",
            "disputes_lost",
            "chargebacks",
            "responsiveness",
            "reviews",
            "attestations"
        ]
    );
    // A period reported by both sides on time, and paid.
    w.pass(PERIOD + 5);
    w.agreed_period(0)?;
    let paid = w.rating(&w.dee)?;
    assert_eq!(
        input(&paid, "payment_record").value,
        "1/1 agreed periods paid"
    );
    assert_eq!(input(&paid, "receipt_agreement").score, 1000);
    assert_eq!(input(&paid, "responsiveness").score, 1000);
    assert!(paid.score > fresh.score, "{} → {}", fresh.score, paid.score);

    // A dispute lost for more than the escrow holds is a chargeback too.
    let escrow = w.market.contract(&w.dee, &w.contract)?.escrow;
    let dispute = w.market.open_dispute(
        &verified(&w.pat),
        b"{}",
        &w.contract,
        &sublet_market::disputes::NewDispute {
            period_start: None,
            claim: "used more than reserved".into(),
        },
    )?;
    w.market.decide_dispute(
        &verified(&w.judge),
        b"{}",
        &dispute.id,
        &Decision {
            in_favour_of: Role::Provider,
            amount: escrow + 1_000_000,
            reason: "the provider is right".into(),
        },
    )?;
    let charged = w.rating(&w.dee)?;
    assert_eq!(input(&charged, "disputes_lost").value, "1 lost");
    assert_eq!(input(&charged, "chargebacks").value, "1 charged back");
    assert_eq!(input(&charged, "chargebacks").score, 500);
    assert_eq!(
        charged.score,
        paid.score - (250 * 10 + 500 * 5) / 100,
        "{charged:?}"
    );
    Ok(())
}

#[test]
fn a_ticket_is_answered_escalated_and_decided() -> Result<()> {
    a_ticket_is_answered_escalated_and_decided_in(world()?)
}

#[test]
fn a_ticket_is_answered_escalated_and_decided_on_postgres() -> Result<()> {
    match pg::database() {
        Some(url) => a_ticket_is_answered_escalated_and_decided_in(world_on(Some(&url))?),
        None => Ok(()),
    }
}

fn a_ticket_is_answered_escalated_and_decided_in(w: World) -> Result<()> {
    let m = &w.market;
    let id = w.ticket_on_contract(&w.dee, "shards missing")?;
    // Who reads it: its parties and support, not outsiders nor (yet) arbiters.
    assert!(m.ticket(&w.pat, &id).is_ok());
    assert!(m.ticket(&w.help, &id).is_ok());
    assert!(matches!(
        m.ticket(&w.stranger, &id),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(m.ticket(&w.judge, &id), Err(Error::Forbidden(_))));
    assert_eq!(m.tickets_of(&w.help, TicketFilter::Open)?.len(), 1);
    assert!(m.tickets_of(&w.stranger, TicketFilter::Any)?.is_empty());
    let outsider = w.say(&w.stranger, &id, "me too");
    assert!(matches!(outsider, Err(Error::Forbidden(_))), "{outsider:?}");

    // The provider answers after two hours: that is its response time.
    w.pass(7200);
    w.say(&w.pat, &id, "a disk failed, repairing")?;
    let t = m.ticket(&w.dee, &id)?;
    assert_eq!(t.state, TicketState::Answered);
    assert_eq!(t.counterpart_response_at, Some(T0 + 7200));
    let pat = w.rating(&w.pat)?;
    assert!(
        input(&pat, "responsiveness")
            .value
            .contains("tickets answered after 7200 s"),
        "{pat:?}"
    );
    w.say(&w.dee, &id, "still missing")?;
    assert_eq!(m.ticket(&w.dee, &id)?.state, TicketState::Open);
    w.say(&w.help, &id, "support looked: the provider lost data")?;
    let t = m.ticket(&w.help, &id)?;
    assert_eq!((t.state, t.messages.len()), (TicketState::Answered, 4));
    assert_eq!(t.messages[3].author_role, Role::Support);

    // Support cannot escalate; the demander does, and the arbiter sees the thread.
    let by_support = m.escalate_ticket(&verified(&w.help), b"{}", &id);
    assert!(
        matches!(by_support, Err(Error::Forbidden(_))),
        "{by_support:?}"
    );
    let (t, dispute) = m.escalate_ticket(&verified(&w.dee), b"{}", &id)?;
    assert_eq!(t.state, TicketState::Escalated);
    assert_eq!(t.dispute.as_deref(), Some(dispute.id.as_str()));
    assert!(
        dispute.claim.contains(&format!("ticket {id}")),
        "{dispute:?}"
    );
    assert!(dispute.claim.contains("a disk failed"), "{dispute:?}");
    assert_eq!(m.ticket(&w.judge, &id)?.messages.len(), 4);
    let again = m.escalate_ticket(&verified(&w.dee), b"{}", &id)?;
    assert_eq!(again.1.id, dispute.id, "escalating twice opens one dispute");
    let closed = w.say(&w.pat, &id, "late");
    assert!(matches!(closed, Err(Error::Conflict(_))), "{closed:?}");

    let decided = m.decide_dispute(
        &verified(&w.judge),
        b"{}",
        &dispute.id,
        &Decision {
            in_favour_of: Role::Demander,
            amount: 0,
            reason: "the thread shows the loss".into(),
        },
    )?;
    assert!(decided.decision.is_some());
    assert_eq!(input(&w.rating(&w.pat)?, "disputes_lost").value, "1 lost");
    Ok(())
}

#[test]
fn tickets_are_bounded_and_unanswered_ones_count_as_they_wait() -> Result<()> {
    tickets_are_bounded_and_unanswered_ones_count_as_they_wait_in(world()?)
}

#[test]
fn tickets_are_bounded_and_unanswered_ones_count_as_they_wait_on_postgres() -> Result<()> {
    match pg::database() {
        Some(url) => {
            tickets_are_bounded_and_unanswered_ones_count_as_they_wait_in(world_on(Some(&url))?)
        }
        None => Ok(()),
    }
}

fn tickets_are_bounded_and_unanswered_ones_count_as_they_wait_in(w: World) -> Result<()> {
    let m = &w.market;
    let bad = |t: NewTicket| m.open_ticket(&verified(&w.dee), b"{}", &t);
    let base = NewTicket {
        subject: "s".into(),
        message: "m".into(),
        contract: None,
        period_start: None,
        party: None,
    };
    for (t, what) in [
        (
            NewTicket {
                subject: String::new(),
                ..base.clone()
            },
            "empty subject",
        ),
        (
            NewTicket {
                message: "x".repeat(4001),
                ..base.clone()
            },
            "long message",
        ),
        (
            NewTicket {
                period_start: Some(T0),
                ..base.clone()
            },
            "period without contract",
        ),
    ] {
        assert!(matches!(bad(t), Err(Error::BadRequest(_))), "{what}");
    }
    // A party it never traded with is not a ticket's subject.
    let stranger = bad(NewTicket {
        party: Some(w.stranger.id.clone()),
        ..base.clone()
    });
    assert!(matches!(stranger, Err(Error::Forbidden(_))), "{stranger:?}");
    let partner = bad(NewTicket {
        party: Some(w.pat.id.clone()),
        ..base.clone()
    })?;
    assert_eq!(partner.counterpart.as_deref(), Some(w.pat.id.as_str()));
    // A question to support alone concerns no party.
    let question = bad(base.clone())?;
    assert_eq!(question.counterpart, None);
    assert!(matches!(
        m.escalate_ticket(&verified(&w.dee), b"{}", &question.id),
        Err(Error::Conflict(_))
    ));
    m.close_ticket(&w.help, &question.id)?;
    for i in 0..19 {
        bad(NewTicket {
            subject: format!("t{i}"),
            ..base.clone()
        })?;
    }
    assert!(matches!(bad(base.clone()), Err(Error::TooMany(_))));

    // The partner ticket waits unanswered: a day later pat's responsiveness says so.
    w.pass(86_400);
    let pat = w.rating(&w.pat)?;
    assert!(
        input(&pat, "responsiveness")
            .value
            .contains("tickets answered after 86400 s"),
        "{pat:?}"
    );
    // Closed without its answer, it no longer counts.
    m.close_ticket(&w.dee, &partner.id)?;
    assert!(
        input(&w.rating(&w.pat)?, "responsiveness")
            .value
            .contains("tickets answered after none yet")
    );
    Ok(())
}

#[test]
fn the_market_verifies_a_contact_by_a_code_it_sends() -> Result<()> {
    the_market_verifies_a_contact_by_a_code_it_sends_in(world()?)
}

#[test]
fn the_market_verifies_a_contact_by_a_code_it_sends_on_postgres() -> Result<()> {
    match pg::database() {
        Some(url) => the_market_verifies_a_contact_by_a_code_it_sends_in(world_on(Some(&url))?),
        None => Ok(()),
    }
}

fn the_market_verifies_a_contact_by_a_code_it_sends_in(w: World) -> Result<()> {
    let m = &w.market;
    let ask = ContactRequest {
        email: "Ops@Pat.example".into(),
    };
    // Only for oneself.
    assert!(matches!(
        m.request_contact_check(&w.dee, &w.pat.id, &ask),
        Err(Error::Forbidden(_))
    ));
    let challenge = m.request_contact_check(&w.pat, &w.pat.id, &ask)?;
    assert_eq!(challenge.attempts_left, 5);
    // Asking again at once is refused: each code is a message sent.
    assert!(matches!(
        m.request_contact_check(&w.pat, &w.pat.id, &ask),
        Err(Error::TooMany(_))
    ));
    let mailbox =
        std::fs::read_to_string(&w.mailbox).map_err(|e| Error::Internal(e.to_string()))?;
    let line: serde_json::Value = serde_json::from_str(mailbox.trim())
        .map_err(|e| Error::Internal(format!("{e}: {mailbox}")))?;
    assert_eq!(line["to"], "Ops@Pat.example");
    let code = line["code"].as_str().unwrap_or_default().to_owned();

    let proof = |code: &str| ContactProof {
        email: "ops@pat.example".into(),
        code: code.into(),
    };
    let wrong = m.verify_contact(&verified(&w.pat), b"{}", &w.pat.id, &proof("0000000000"));
    assert!(matches!(wrong, Err(Error::Unauthorized(_))), "{wrong:?}");
    assert_eq!(
        w.rating(&w.pat)?.trust_level,
        sublet_market::attestations::TrustLevel::Unverified
    );
    let offers = |min| {
        m.search_offers(&OfferFilter {
            min_trust: Some(min),
            ..OfferFilter::default()
        })
    };
    assert!(offers(sublet_market::attestations::TrustLevel::Verified)?.is_empty());
    let contact = m.verify_contact(&verified(&w.pat), b"{}", &w.pat.id, &proof(&code))?;
    assert_eq!(
        contact.email_sha256,
        sublet_market::attestations::email_hash("ops@pat.example")?
    );
    let rating = w.rating(&w.pat)?;
    assert_eq!(
        rating.trust_level,
        sublet_market::attestations::TrustLevel::Verified
    );
    assert!(
        input(&rating, "attestations")
            .value
            .contains("verified by the market")
    );
    assert_eq!(
        offers(sublet_market::attestations::TrustLevel::Verified)?.len(),
        1
    );
    assert!(offers(sublet_market::attestations::TrustLevel::Vouched)?.is_empty());
    // The code is single use.
    let reused = m.verify_contact(&verified(&w.pat), b"{}", &w.pat.id, &proof(&code));
    assert!(matches!(reused, Err(Error::Conflict(_))), "{reused:?}");
    Ok(())
}

#[test]
fn wrong_codes_run_out_and_codes_expire() -> Result<()> {
    let w = world()?;
    let m = &w.market;
    let ask = ContactRequest {
        email: "dee@example.org".into(),
    };
    let proof = |code: &str| ContactProof {
        email: "dee@example.org".into(),
        code: code.into(),
    };
    m.request_contact_check(&w.dee, &w.dee.id, &ask)?;
    for _ in 0..5 {
        let r = m.verify_contact(&verified(&w.dee), b"{}", &w.dee.id, &proof("zzzz"));
        assert!(matches!(r, Err(Error::Unauthorized(_))), "{r:?}");
    }
    // The sixth try is refused whatever the code: the challenge is spent.
    let code = |w: &World| -> Result<String> {
        let text =
            std::fs::read_to_string(&w.mailbox).map_err(|e| Error::Internal(e.to_string()))?;
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(last["code"].as_str().unwrap_or_default().to_owned())
    };
    let spent = m.verify_contact(&verified(&w.dee), b"{}", &w.dee.id, &proof(&code(&w)?));
    assert!(matches!(spent, Err(Error::Conflict(_))), "{spent:?}");
    // A new code, too late.
    w.pass(61);
    m.request_contact_check(&w.dee, &w.dee.id, &ask)?;
    w.pass(3601);
    let late = m.verify_contact(&verified(&w.dee), b"{}", &w.dee.id, &proof(&code(&w)?));
    assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
    assert!(m.contacts(&w.dee.id)?.is_empty());
    Ok(())
}

/// A decision of 0 credits for an arbiter or support used to be stored and read back as
/// one for the provider.
#[test]
fn a_dispute_is_decided_for_the_demander_or_the_provider_only() -> Result<()> {
    let w = world()?;
    let d = w.market.open_dispute(
        &verified(&w.dee),
        b"{}",
        &w.contract,
        &sublet_market::disputes::NewDispute {
            period_start: None,
            claim: "claim".into(),
        },
    )?;
    for role in [Role::Arbiter, Role::Support] {
        let r = w.market.decide_dispute(
            &verified(&w.judge),
            b"{}",
            &d.id,
            &Decision {
                in_favour_of: role,
                amount: 0,
                reason: "nobody".into(),
            },
        );
        assert!(matches!(r, Err(Error::BadRequest(_))), "{role:?}: {r:?}");
    }
    assert!(w.market.dispute(&w.dee, &d.id)?.decision.is_none());
    Ok(())
}

#[test]
fn only_support_keys_register_as_support() -> Result<()> {
    let w = world()?;
    let r = new_party(&w.market, Role::Support, "impostor");
    assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
    // Support staff open no tickets.
    let t = w.market.open_ticket(
        &verified(&w.help),
        b"{}",
        &NewTicket {
            subject: "s".into(),
            message: "m".into(),
            contract: None,
            period_start: None,
            party: None,
        },
    );
    assert!(matches!(t, Err(Error::Forbidden(_))), "{t:?}");
    Ok(())
}
