//! The `sublet-market` binary as a user runs it: serve, keygen, register and
//! call; a clean stop on SIGTERM; data still there after a restart.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;
use sublet_market::client::{Client, ClientTls};

#[path = "../../e2e/src/postgres.rs"]
mod pg;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_sublet-market");

fn free_port() -> Result<u16, Box<dyn std::error::Error>> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn serve(db: &Path, port: u16) -> Result<Child, Box<dyn std::error::Error>> {
    serve_with(db, port, &[])
}

fn serve_with(db: &Path, port: u16, extra: &[&str]) -> Result<Child, Box<dyn std::error::Error>> {
    let child = Command::new(BIN)
        .args(["serve", "--manual-deposits", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(db)
        .args(extra)
        .spawn()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the market did not start listening".into())
}

fn run(dir: &Path, url: &str, args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
    Ok(Command::new(BIN)
        .current_dir(dir)
        .env("SUBLET_MARKET_URL", url)
        .env("SUBLET_MARKET_INSECURE_HTTP", "1")
        .env("RUST_BACKTRACE", "0")
        .args(args)
        .output()?)
}

fn json_out(out: &Output) -> Result<Value, Box<dyn std::error::Error>> {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn stop(child: &mut Child) -> TestResult {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let exit = child.wait()?;
    assert!(exit.success(), "market exited with {exit} on SIGTERM");
    Ok(())
}

#[test]
fn keygen_register_call_and_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("market.db");
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut market = serve(&db, port)?;

    let out = run(dir.path(), &url, &["keygen", "--out", "bob.key"])?;
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)?.starts_with("party_id="));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("bob.key"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = run(dir.path(), &url, &["keygen", "--out", "bob.key"])?;
    assert!(!out.status.success(), "keygen must not overwrite a key");

    let bob = json_out(&run(
        dir.path(),
        &url,
        &[
            "register", "--key", "bob.key", "--role", "provider", "--name", "bob",
        ],
    )?)?;
    assert_eq!(bob["role"], "provider");
    let offer = json_out(&run(
        dir.path(),
        &url,
        &[
            "call",
            "--key",
            "bob.key",
            "POST",
            "/v1/offers",
            r#"{"capacity_bytes":1073741824,"price_per_gib_month":4000000,"egress_price_per_gib":0,"region":"eu-west","min_term_days":0,"promised_uptime_bps":9900}"#,
        ],
    )?)?;
    let out = run(
        dir.path(),
        &url,
        &["call", "--key", "bob.key", "POST", "/v1/offers", "{}"],
    )?;
    assert!(!out.status.success(), "an error answer exits non-zero");
    let err: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(err["error"]["code"], "bad_request");
    let dep = json_out(&run(
        dir.path(),
        &url,
        &[
            "call",
            "--key",
            "bob.key",
            "POST",
            "/v1/deposits",
            r#"{"op_id":"d1","amount":7}"#,
        ],
    )?)?;
    assert_eq!(dep["balances"]["available"], 7);

    stop(&mut market)?;
    let mut market = serve(&db, port)?;
    let rt = tokio::runtime::Runtime::new()?;
    let found = rt
        .block_on(Client::with_tls(&url, &ClientTls::insecure_http())?.json(
            None,
            "GET",
            "/v1/offers?region=eu-west",
            &Value::Null,
        ))?
        .ok()?;
    assert_eq!(found[0]["id"], offer["id"], "the offer survives a restart");
    let ledger = rt
        .block_on(Client::with_tls(&url, &ClientTls::insecure_http())?.json(
            None,
            "GET",
            "/v1/ledger",
            &Value::Null,
        ))?
        .ok()?;
    assert_eq!(ledger["net_deposits"], 7);
    stop(&mut market)?;
    Ok(())
}

/// `attest` signs locally and submits; the attestor revokes with `call`.
#[test]
fn attest_raises_trust_and_call_revokes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let out = run(dir.path(), &url, &["keygen", "--out", "notary.key"])?;
    let printed = String::from_utf8(out.stdout)?;
    let notary_key = printed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("public_key="))
        .ok_or("keygen printed no public_key")?
        .to_owned();

    // A malformed attestor key stops the market at start.
    let out = Command::new(BIN)
        .args(["serve", "--db"])
        .arg(dir.path().join("bad.db"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--attestor-key",
            "zz",
        ])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--attestor-key must be"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut market = serve_with(
        &dir.path().join("market.db"),
        port,
        &["--attestor-key", &notary_key],
    )?;
    run(dir.path(), &url, &["keygen", "--out", "bob.key"])?;
    let bob = json_out(&run(
        dir.path(),
        &url,
        &[
            "register", "--key", "bob.key", "--role", "provider", "--name", "bob",
        ],
    )?)?;
    let bob = bob["id"].as_str().ok_or("party id")?.to_owned();

    let att = json_out(&run(
        dir.path(),
        &url,
        &[
            "attest",
            "--key",
            "notary.key",
            "--party",
            &bob,
            "--kind",
            "email",
            "--email",
            " Bob@Example.org",
            "--expires-days",
            "30",
        ],
    )?)?;
    assert_eq!(att["status"], "active", "{att}");
    assert_eq!(
        att["email_sha256"].as_str(),
        Some(sublet_market::attestations::email_hash("bob@example.org")?.as_str())
    );
    let expires = att["expires_at"].as_i64().ok_or("expires_at")?;
    let issued = att["issued_at"].as_i64().ok_or("issued_at")?;
    assert_eq!(expires - issued, 30 * 86_400);

    // Refused locally, or by the market, with a message and a non-zero exit.
    for (args, says) in [
        (vec!["--kind", "email"], "--kind email needs --email"),
        (
            vec!["--kind", "operator", "--email", "a@b.c"],
            "--email goes with --kind email only",
        ),
        (
            vec!["--kind", "passport"],
            "--kind must be email or operator",
        ),
        (
            vec!["--kind", "email", "--email", "not-an-address"],
            "not an e-mail address",
        ),
    ] {
        let mut all = vec!["attest", "--key", "notary.key", "--party", &bob];
        all.extend(args);
        let out = run(dir.path(), &url, &all)?;
        assert!(!out.status.success(), "{all:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{all:?}: {stderr}");
    }
    let out = run(
        dir.path(),
        &url,
        &[
            "attest", "--key", "bob.key", "--party", &bob, "--kind", "operator",
        ],
    )?;
    assert!(!out.status.success(), "bob is no attestor");
    let err: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(err["error"]["code"], "forbidden", "{err}");

    let party = json_out(&run(
        dir.path(),
        &url,
        &[
            "call",
            "--key",
            "bob.key",
            "GET",
            &format!("/v1/parties/{bob}"),
        ],
    )?)?;
    assert_eq!(party["trust_level"], "verified", "{party}");

    let revoked = json_out(&run(
        dir.path(),
        &url,
        &[
            "call",
            "--key",
            "notary.key",
            "POST",
            &format!(
                "/v1/parties/{bob}/attestations/{}/revoke",
                att["id"].as_str().ok_or("id")?
            ),
            r#"{"reason":"mailbox closed"}"#,
        ],
    )?)?;
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let party = json_out(&run(
        dir.path(),
        &url,
        &[
            "call",
            "--key",
            "bob.key",
            "GET",
            &format!("/v1/parties/{bob}"),
        ],
    )?)?;
    assert_eq!(party["trust_level"], "unverified", "{party}");
    stop(&mut market)?;
    Ok(())
}

#[test]
fn serve_on_postgres_keeps_the_books_there_and_names_a_missing_url() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    // An unset variable stops the market at start, naming it.
    let out = Command::new(BIN)
        .args(["serve", "--postgres-url-env", "SUBLET_TEST_NO_SUCH_URL"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("SUBLET_TEST_NO_SUCH_URL")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SUBLET_TEST_NO_SUCH_URL") && err.contains("unset or empty"),
        "{err}"
    );

    let Some(pg_url) = pg::database() else {
        return Ok(());
    };
    let serve_pg = || {
        Command::new(BIN)
            .args([
                "serve",
                "--manual-deposits",
                "--postgres-url-env",
                "MARKET_PG",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .env("MARKET_PG", &pg_url)
            .spawn()
    };
    let wait = || {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut market = serve_pg()?;
    assert!(wait(), "the market on PostgreSQL did not start listening");
    assert!(
        run(dir.path(), &url, &["keygen", "--out", "bob.key"])?
            .status
            .success()
    );
    let bob = json_out(&run(
        dir.path(),
        &url,
        &[
            "register", "--key", "bob.key", "--role", "provider", "--name", "bob",
        ],
    )?)?;
    stop(&mut market)?;
    // No SQLite file was written; after a restart bob is still registered.
    assert!(!dir.path().join("market.db").exists());
    let mut market = serve_pg()?;
    assert!(wait(), "the market on PostgreSQL did not restart");
    let id = bob["id"].as_str().ok_or("party id")?;
    let again = json_out(&run(
        dir.path(),
        &url,
        &[
            "call",
            "--key",
            "bob.key",
            "GET",
            &format!("/v1/parties/{id}"),
        ],
    )?)?;
    assert_eq!(again["name"], "bob");
    stop(&mut market)?;
    Ok(())
}

#[test]
fn manual_deposits_from_the_environment_take_one_and_zero() -> TestResult {
    for (value, rail) in [("1", true), ("0", false)] {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut market = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.path().join("market.db"))
            .env("SUBLET_MARKET_MANUAL_DEPOSITS", value)
            .spawn()?;
        let listening = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !listening {
            let _ = market.kill();
            let exit = market.wait()?;
            return Err(format!(
                "SUBLET_MARKET_MANUAL_DEPOSITS={value}: the market did not start ({exit})"
            )
            .into());
        }
        let url = format!("http://127.0.0.1:{port}");
        assert!(
            run(dir.path(), &url, &["keygen", "--out", "a.key"])?
                .status
                .success()
        );
        json_out(&run(
            dir.path(),
            &url,
            &[
                "register", "--key", "a.key", "--role", "demander", "--name", "a",
            ],
        )?)?;
        let out = run(
            dir.path(),
            &url,
            &[
                "call",
                "--key",
                "a.key",
                "POST",
                "/v1/deposits",
                r#"{"op_id":"dep-1","amount":1000000}"#,
            ],
        )?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if rail {
            assert!(out.status.success(), "={value}: {text}");
        } else {
            assert!(
                !out.status.success() && text.contains("no_payment_rail"),
                "={value}: {text}"
            );
        }
        stop(&mut market)?;
    }
    Ok(())
}
