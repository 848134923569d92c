// A web app in headless Chromium, served from an origin of its own, uploading a file
// straight to a sublet gateway through a presigned POST form and reading it back with
// CORS: the gateway must answer the browser's preflight from the bucket's CORS rules and
// mark its answers, or the browser hides them from the page. Run by e2e/tests/browser.rs:
//   node browser-upload.mjs CONFIG.json
// CONFIG: chromium, origin (the app's: http://127.0.0.1:PORT, served here, a port other
// than the gateway's), post {url, fields}, get (a presigned GET URL),
// metrics (the gateway's /metrics URL), content (the file's text).
import fs from "node:fs";
import http from "node:http";
import { chromium } from "playwright-core";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const log = (...a) => console.log(`[browser] ${a.join(" ")}`);

/// Preflights the gateway answered, by status, from its request counter.
async function preflights() {
  const text = await (await fetch(config.metrics)).text();
  const count = (status) => {
    const re = new RegExp(`^sublet_gateway_requests_total\\{op="PreflightCors",status="${status}"\\} (\\d+)`, "m");
    const m = text.match(re);
    return m ? Number(m[1]) : 0;
  };
  return { allowed: count("200"), refused: count("403") };
}

// The app's page, from its own origin (never the gateway's).
const app = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html" });
  res.end("<!doctype html><title>app</title><p>app</p>");
});
await new Promise((resolve) => app.listen(Number(new URL(config.origin).port), "127.0.0.1", resolve));

const before = await preflights();
const browser = await chromium.launch({ executablePath: config.chromium, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  // Chromium says on the console why it blocked a request (CORS, private network access).
  page.on("console", (m) => log(`console ${m.type()}: ${m.text()}`));
  await page.goto(`${config.origin}/index.html`);
  const result = await page.evaluate(async (c) => {
    const out = {};
    // 1. The form upload (a simple request: no preflight, but the answer is read only if
    //    it carries Access-Control-Allow-Origin).
    const form = new FormData();
    for (const [k, v] of Object.entries(c.post.fields)) form.append(k, v);
    form.append("file", new Blob([c.content], { type: "text/plain" }), "from-browser.txt");
    const posted = await fetch(c.post.url, { method: "POST", body: form });
    out.postStatus = posted.status;
    out.postBody = await posted.text();
    // 2. Reading it back with a header no simple request may carry: a preflight first.
    const got = await fetch(c.get, { headers: { "x-requested-with": "sublet-app" } });
    out.getStatus = got.status;
    out.getBody = await got.text();
    out.etag = got.headers.get("etag");
    // 3. A header the rules do not allow: the preflight is refused, the browser stops.
    try {
      await fetch(c.get, { headers: { "x-not-allowed": "1" } });
      out.refused = false;
    } catch (e) {
      out.refused = true;
    }
    return out;
  }, config);
  log(JSON.stringify(result));
  const after = await preflights();
  log(`preflights allowed ${before.allowed} -> ${after.allowed}, refused ${before.refused} -> ${after.refused}`);
  const fail = (why) => {
    throw new Error(`${why}: ${JSON.stringify(result)}`);
  };
  if (result.postStatus !== 201 || !result.postBody.includes("<Key>uploads/from-browser.txt</Key>")) fail("the form upload");
  if (result.getStatus !== 200 || result.getBody !== config.content) fail("reading back");
  if (!result.etag) fail("the ETag header was not exposed");
  if (!result.refused) fail("a request the rules do not allow went through");
  if (after.allowed <= before.allowed) fail("no preflight was answered");
  if (after.refused <= before.refused) fail("no preflight was refused");
  console.log("browser upload passed");
} finally {
  await browser.close();
  app.close();
}
