// Drives the market's web console in headless Chromium, as a person would: signs in
// with key files, checks what the page shows against what the Rust test seeded,
// prepays a contract, opens a dispute and decides it as the arbiter, answers a support
// ticket as support staff, escalates it and reviews the provider as the demander. Screenshots
// go to config.out. Run by market/tests/console.rs:
//   node drive-console.mjs CONFIG.json
// CONFIG names the market's url, the Chromium binary, the key files and the seed.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = config.out;
const TIMEOUT = 15_000;
/// A check that the whole text is `text`, not just contains it ("15.220001" contains "15.22").
const exactly = (text) => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
const fmt = (micros) => (micros / 1e6).toLocaleString("en-US", { maximumFractionDigits: 6 });

let step = 0;
let page;
function log(...args) {
  console.log(`[console] ${args.join(" ")}`);
}

async function shot(name) {
  step += 1;
  const file = path.join(out, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log("screenshot", file);
}

/// Waits until `locator`'s text satisfies `check` (a string it must contain, or a
/// RegExp); fails naming what was expected and what the page shows.
async function expectText(locator, check, what) {
  const deadline = Date.now() + TIMEOUT;
  let last = "(nothing)";
  for (;;) {
    try {
      if ((await locator.count()) > 0) {
        last = await locator.first().innerText({ timeout: 1000 });
        const ok = check instanceof RegExp ? check.test(last) : last.includes(check);
        if (ok) return last;
      }
    } catch (e) {
      last = `(${e.message.split("\n")[0]})`;
    }
    if (Date.now() > deadline) {
      const errors = (await page.locator(".error").allInnerTexts()).filter((t) => t.trim());
      throw new Error(`${what}: expected ${check} but the page shows ${JSON.stringify(last)}` +
        (errors.length ? `; errors on the page: ${errors.join(" | ")}` : ""));
    }
    await page.waitForTimeout(100);
  }
}

async function signIn(keyFile) {
  await page.locator("#key-file").setInputFiles(keyFile);
}

async function signOut() {
  await page.locator("#signout").click();
  await page.locator("#signin-form").waitFor({ state: "visible", timeout: TIMEOUT });
}

const pageErrors = [];
const browser = await chromium.launch({
  executablePath: config.chromium,
  headless: true,
  // As root (CI runs as root) Chromium starts only without its sandbox.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let failed = null;
const result = {};
try {
  const context = await browser.newContext({
    locale: "en-US",
    timezoneId: "UTC",
    viewport: { width: 1400, height: 1000 },
  });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => {
    // Refused API calls (the test provokes some) log "Failed to load resource"; the
    // page shows those itself. Any other error is a fault of the page.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      pageErrors.push(`console: ${m.text()}`);
    }
  });
  // Any request that carries the key would be a leak: the key must never leave the page.
  const keyBytes = fs.readFileSync(config.keys.dee);
  const keyB64 = keyBytes.toString("base64");
  page.on("request", (r) => {
    const body = r.postDataBuffer();
    if (body && (body.includes(keyBytes) || body.toString().includes(keyB64))) {
      pageErrors.push(`request ${r.method()} ${r.url()} carries the key file`);
    }
  });

  await page.goto(config.url + "/");
  await expectText(page.locator("#ledger"), "balanced", "the public ledger line");
  await expectText(page.locator("#offers"), "us-east", "the public offers");
  await expectText(page.locator("#offers"), "eu-west", "the public offers");
  await shot("public");

  // Files that are not keys, and a key the market doesn't know, are refused with a reason.
  await signIn(config.keys.garbage);
  await expectText(page.locator("#signin-error"), "PKCS#8 key", "a garbage key file");
  await signIn(config.keys.stranger);
  await expectText(page.locator("#signin-error"), "is not registered with this market", "an unregistered key");
  await shot("unregistered-key");

  // PEM works too: alpha, a provider, sees its held-back credits and its contract.
  await signIn(config.keys.alpha_pem);
  await expectText(page.locator("#whoami"), `Signed in as alpha — provider, party ${config.alpha.id}`, "alpha signed in");
  await expectText(page.locator("#balances [data-field=held_back_release_at]"), /\d{4}-\d\d-\d\d/, "alpha's vetting end");
  await expectText(page.locator(`tr[data-contract="${config.active.id}"] td:nth-child(2)`), "provider", "alpha's role in the contract");
  if (await page.locator(`tr[data-contract="${config.active.id}"] form.prepay`).count()) {
    throw new Error("a provider is offered to prepay");
  }
  // Alpha deposited nothing: its treasury trail is empty, and dee's entry is not in it.
  await expectText(page.locator("#treasury-table"), "No deposit or withdrawal signed by a treasurer for you yet.", "alpha's empty treasury trail");
  await signOut();

  // Dee, the demander.
  await signIn(config.keys.dee);
  await expectText(page.locator("#whoami"), `Signed in as dee — demander, party ${config.dee.id}`, "dee signed in");
  if (await page.locator("#signin-error").innerText()) throw new Error("a sign-in error is still shown");
  const escrowTotal = config.dee.escrow.reduce((s, e) => s + e.amount, 0);
  await expectText(page.locator("#balances [data-field=available]"), exactly(fmt(config.dee.available)), "dee's available credits");
  await expectText(page.locator("#balances [data-field=held_back]"), /^0$/, "dee's held-back credits");
  await expectText(page.locator("#balances [data-field=escrow]"), exactly(fmt(escrowTotal)), "dee's escrow");
  // Dee's deposit, credited on the treasurer's signature: its own trail, without a party column.
  const deeTreasury = page.locator("#treasury-table tbody tr[data-nonce]");
  await expectText(deeTreasury.locator("[data-field=reference]"), exactly(config.treasury.reference), "dee's deposit in the treasury trail");
  await expectText(deeTreasury.locator("[data-field=kind]"), exactly("deposit"), "the entry's kind");
  await expectText(deeTreasury.locator("[data-field=amount]"), exactly(fmt(config.treasury.amount * 1e6)), "the deposit's amount");
  if ((await deeTreasury.locator("[data-field=treasurer]").getAttribute("title")) !== config.treasury.treasurer) {
    throw new Error("the entry does not name the treasurer's key");
  }
  if (await page.locator("#treasury-table [data-field=party]").count()) throw new Error("a party is shown a party column in its own trail");
  await shot("treasury-own");

  const active = page.locator(`tr[data-contract="${config.active.id}"]`);
  await expectText(active.locator("[data-field=state]"), exactly("active"), "the active contract's state");
  await expectText(active.locator("[data-field=reserved]"), exactly("10 GiB"), "the active contract's reserved space");
  await expectText(active.locator("[data-field=price]"), exactly(fmt(config.active.price_per_gib_month)), "the contract's price");
  await expectText(active.locator("[data-field=escrow]"), exactly(fmt(config.active.escrow)), "the contract's escrow");
  await expectText(active.locator("td:nth-child(3)"), "alpha", "the counterparty's name");
  const proposed = page.locator(`tr[data-contract="${config.proposed.id}"]`);
  await expectText(proposed.locator("[data-field=state]"), exactly("proposed"), "the proposed contract's state");
  await expectText(proposed.locator("td:nth-child(3)"), "bravo", "the proposed contract's provider");
  if ((await page.locator("#contracts-table tbody tr").count()) !== 2) throw new Error("dee should see 2 contracts");

  // Periods: one settled with its charge, one mismatched on gib_hours.
  await active.locator("button.show-periods").click();
  const settled = page.locator(`#periods tr[data-period="${config.active.settled_start}"]`);
  const mismatch = page.locator(`#periods tr[data-period="${config.active.mismatch_start}"]`);
  await expectText(settled.locator("[data-field=status]"), exactly("settled"), "the first period's status");
  await expectText(settled.locator("[data-field=charge]"), `${fmt(config.active.settled_gross)} charged`, "the first period's charge");
  await expectText(settled.locator("[data-field=settlement]"), "paid at", "the first period's settlement");
  await expectText(settled.locator("[data-field=demander_receipt]"), "10 GiB-h", "dee's receipt");
  await expectText(mismatch.locator("[data-field=status]"), exactly("mismatch"), "the second period's status");
  await expectText(mismatch.locator("[data-field=mismatched]"), exactly("gib_hours"), "the mismatched field");
  await expectText(mismatch.locator("[data-field=provider_receipt] .mismatch"), "7 GiB-h", "alpha's disputed figure");
  await expectText(mismatch.locator("[data-field=settlement]"), "not paid", "the mismatched period is unpaid");

  // The seeded dispute: its markup shows as text and runs nothing.
  const seeded = page.locator(`#disputes-table tr[data-dispute="${config.dispute.id}"]`);
  const claimShown = await expectText(seeded.locator("[data-field=claim]"), "<img src=x", "the dispute's claim");
  if (claimShown.trim() !== config.dispute.claim) throw new Error(`the claim shows as ${JSON.stringify(claimShown)}`);
  await expectText(seeded.locator("[data-field=decision]"), "waiting for an arbiter", "the open dispute");
  await expectText(page.locator(`#contract-disputes tr[data-dispute="${config.dispute.id}"]`), "dee (you)", "the contract's disputes");
  if ((await page.locator("#disputes img, #contract-detail img, #disputes b").count()) !== 0) {
    throw new Error("the dispute's claim was parsed as HTML");
  }
  if (await page.evaluate(() => window.__pwned)) throw new Error("the dispute's claim ran script");
  await expectText(page.locator("#my-rating [data-field=score]"), `${config.dee.rating_score} / 1000`, "dee's rating");
  await expectText(page.locator("#my-rating tr[data-input]").first(), /\d+ \/ 1000/, "dee's rating inputs");
  await shot("demander-signed-in");

  // An API error is shown with the market's message, and moves nothing.
  const prepay = active.locator("form.prepay");
  await prepay.locator("input[name=amount]").fill(String(config.actions.too_much));
  await prepay.locator("button").click();
  await expectText(page.locator("#action-status .error"), "insufficient_funds", "the refused prepayment");
  await expectText(page.locator("#balances [data-field=available]"), exactly(fmt(config.dee.available)), "the balance after the refused prepayment");
  await shot("prepay-refused");

  // Prepay 2 credits: the balances and the contract's escrow follow.
  await prepay.locator("input[name=amount]").fill(String(config.actions.prepay));
  await prepay.locator("button").click();
  await expectText(page.locator("#action-status .ok"), `Prepaid ${config.actions.prepay} credits into contract ${config.active.id}`, "the prepayment");
  const moved = config.actions.prepay * 1e6;
  await expectText(page.locator("#balances [data-field=available]"), exactly(fmt(config.dee.available - moved)), "available after prepaying");
  await expectText(page.locator("#balances [data-field=escrow]"), exactly(fmt(escrowTotal + moved)), "escrow after prepaying");
  await expectText(page.locator(`tr[data-contract="${config.active.id}"] [data-field=escrow]`), exactly(fmt(config.active.escrow + moved)), "the contract's escrow after prepaying");
  await shot("prepaid");

  // Rate the provider through the page; the test checks it through the API afterwards.
  const feedback = active.locator("form.feedback");
  await feedback.locator("select[name=stars]").selectOption(String(config.actions.stars));
  await feedback.locator("input[name=comment]").fill(config.actions.feedback);
  await feedback.locator("button").click();
  await expectText(page.locator("#action-status .ok"), `Rated the provider of contract ${config.active.id} ${config.actions.stars} stars.`, "the feedback");

  // Offer search by score: none is that good, every one is at least 0.
  await page.locator("#search input[name=minScore]").fill("1000");
  await page.locator("#search button").click();
  await expectText(page.locator("#offers"), "No offer matches.", "a search no offer's score reaches");
  await page.locator("#search input[name=minScore]").fill("0");
  await page.locator("#search button").click();
  await page.locator("#offers tr[data-offer]").first().waitFor();

  // Open a dispute on the settled period, with evidence.
  await page.locator(`tr[data-contract="${config.active.id}"] button.show-periods`).click();
  const row = page.locator(`#periods tr[data-period="${config.active.settled_start}"]`);
  await row.locator("button.dispute-period").click();
  await row.locator("form.open-dispute textarea").fill(config.actions.claim);
  await row.locator("form.open-dispute button").click();
  const opened = await expectText(page.locator("#action-status .ok"), /Opened dispute dp_[0-9a-f]+/, "the opened dispute");
  result.opened_dispute = opened.match(/dp_[0-9a-f]+/)[0];
  const mine = page.locator(`#disputes-table tr[data-dispute="${result.opened_dispute}"]`);
  await expectText(mine.locator("[data-field=claim]"), config.actions.claim, "the new dispute in the list");
  await expectText(page.locator(`#contract-disputes tr[data-dispute="${result.opened_dispute}"]`), config.actions.claim, "the new dispute on the contract");
  await shot("dispute-opened");
  await signOut();
  if (await page.locator("#balances dl").count()) throw new Error("dee's balances are still shown after signing out");

  // The arbiter: no contracts, every dispute, and a decision.
  await signIn(config.keys.judge);
  await expectText(page.locator("#whoami"), `Signed in as judge — arbiter, party ${config.judge.id}`, "the arbiter signed in");
  await expectText(page.locator("#contracts"), "Arbiters hold no contracts", "the arbiter's contracts");
  // The arbiter reads the whole treasury trail: dee's deposit, named by party.
  const trail = page.locator("#treasury-table tbody tr[data-nonce]");
  await expectText(page.locator("#treasury"), "the audit trail", "the arbiter's treasury note");
  await expectText(trail.locator("[data-field=party]"), "dee", "the depositing party for the arbiter");
  await expectText(trail.locator("[data-field=op_id]"), exactly(config.treasury.op_id), "the operation the deposit paid");
  await expectText(trail.locator("[data-field=reference]"), exactly(config.treasury.reference), "the reference for the arbiter");
  await shot("treasury-arbiter");
  await expectText(page.locator(`#disputes-table tr[data-dispute="${config.dispute.id}"]`), "Decide", "the seeded dispute for the arbiter");
  const toDecide = page.locator(`#disputes-table tr[data-dispute="${result.opened_dispute}"]`);
  await expectText(toDecide, config.actions.claim, "the new dispute for the arbiter");
  // The arbiter reads the disputed contract's periods.
  await toDecide.locator("td:nth-child(2) a").click();
  await expectText(page.locator(`#periods tr[data-period="${config.active.settled_start}"] [data-field=status]`), "settled", "the disputed period for the arbiter");
  if (await page.locator("#periods button.dispute-period").count()) throw new Error("an arbiter is offered to open disputes");
  const decide = toDecide.locator("form.decide");
  await decide.locator("select[name=in_favour_of]").selectOption("demander");
  await decide.locator("input[name=amount]").fill(String(config.actions.decision_amount));
  await decide.locator("textarea[name=reason]").fill(config.actions.reason);
  await shot("arbiter-deciding");
  await decide.locator("button").click();
  await expectText(page.locator("#action-status .ok"), `Decided dispute ${result.opened_dispute} in favour of the demander; ${config.actions.decision_amount} credits moved`, "the decision");
  await expectText(page.locator(`#disputes-table tr[data-dispute="${result.opened_dispute}"] [data-field=decision]`), config.actions.reason, "the decision in the list");
  await expectText(page.locator(`#disputes-table tr[data-dispute="${result.opened_dispute}"] [data-field=decision]`), "by judge (you)", "who decided");
  await expectText(page.locator(`#contract-disputes tr[data-dispute="${result.opened_dispute}"] [data-field=decision]`), config.actions.reason, "the decision on the contract's disputes");
  await expectText(page.locator(`#disputes-table tr[data-dispute="${config.dispute.id}"] [data-field=decision]`), "Decide", "the other dispute still open");
  await expectText(page.locator("#ledger"), "balanced", "the ledger after everything");
  await shot("arbiter-decided");
  await signOut();

  // Support staff see the seeded ticket and answer it; they are not offered to escalate.
  await signIn(config.keys.help);
  await expectText(page.locator("#whoami"), `Signed in as help — support, party ${config.help.id}`, "support signed in");
  const ticketRow = page.locator(`#tickets-table tr[data-ticket="${config.ticket.id}"]`);
  await expectText(ticketRow.locator("[data-field=state]"), exactly("open"), "the seeded ticket for support");
  await ticketRow.locator("button.show-ticket").click();
  await expectText(page.locator("#ticket-thread"), config.ticket.message, "the ticket's thread");
  await page.locator("#ticket-detail form.reply-ticket textarea").fill(config.actions.support_reply);
  await page.locator("#ticket-detail form.reply-ticket button").click();
  await expectText(page.locator("#action-status .ok"), `Replied to ticket ${config.ticket.id}.`, "support's reply");
  await expectText(ticketRow.locator("[data-field=state]"), exactly("answered"), "the answered ticket");
  if (await page.locator("#ticket-detail button.escalate-ticket").count()) throw new Error("support is offered to escalate");
  await shot("support-answered");
  await signOut();

  // Dee reads the answer, escalates the ticket to a dispute and reviews alpha.
  await signIn(config.keys.dee);
  const deeTicket = page.locator(`#tickets-table tr[data-ticket="${config.ticket.id}"]`);
  await expectText(deeTicket.locator("[data-field=state]"), exactly("answered"), "the answered ticket for dee");
  await deeTicket.locator("button.show-ticket").click();
  await expectText(page.locator("#ticket-thread"), config.actions.support_reply, "support's answer in dee's thread");
  await page.locator("#ticket-detail button.escalate-ticket").click();
  const escalated = await expectText(page.locator("#action-status .ok"), /Escalated ticket tk_[0-9a-f]+ to dispute dp_[0-9a-f]+/, "the escalation");
  result.escalated_dispute = escalated.match(/dp_[0-9a-f]+/)[0];
  await expectText(page.locator(`#disputes-table tr[data-dispute="${result.escalated_dispute}"] [data-field=claim]`), `ticket ${config.ticket.id}`, "the escalated dispute's claim");
  await expectText(deeTicket.locator("[data-field=state]"), exactly("escalated"), "the escalated ticket");
  const review = page.locator(`tr[data-contract="${config.active.id}"] form.review`);
  await review.locator("select[name=stars]").selectOption(String(config.actions.review_stars));
  await review.locator("input[name=text]").fill(config.actions.review);
  await review.locator("button").click();
  await expectText(page.locator("#action-status .ok"), `Reviewed the provider of contract ${config.active.id}: ${config.actions.review_stars} stars`, "the review");
  await shot("ticket-escalated-and-reviewed");

  // Anyone reads alpha's reviews.
  await page.locator("#lookup input[name=id]").fill(config.alpha.id);
  await page.locator("#lookup button").click();
  await expectText(page.locator("#party-reviews h3"), "5.00 stars from 1 reviews", "alpha's public reviews");
  await expectText(page.locator("#party-reviews [data-field=text]"), config.actions.review, "the review text");
  await shot("public-reviews");

  if (pageErrors.length) throw new Error(`the page reported errors:\n${pageErrors.join("\n")}`);
} catch (e) {
  failed = e;
  if (page) {
    await shot("failure").catch(() => {});
  }
} finally {
  await browser.close();
}
fs.writeFileSync(path.join(out, "result.json"), JSON.stringify(result, null, 1));
if (failed) {
  console.error(`[console] FAILED: ${failed.stack || failed}`);
  process.exit(1);
}
log("all checks passed");
