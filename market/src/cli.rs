//! The `sublet-market` command line, shared with `sublet market`: the market daemon and a
//! small signing client for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;

use sublet_market_api::client::{Client, ClientTls};
use sublet_market_api::identity::{Role, Signer};
use sublet_market_api::receipts::MAX_PERIOD_SECS;

use crate::attestations::{AttestationKind, SignedAttestation, email_hash};
use crate::rail::treasurer::{Authorization, Kind};
use crate::rail::{ManualRail, PaymentRail, TreasurerRail};
use crate::{Market, Policy, api};

/// How the client commands reach the market.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// PEM CA certificates to trust for an `https://` market instead of the system's roots.
    #[arg(long, env = "SUBLET_MARKET_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Allow a plain `http://` market URL: anyone on the path can read and rewrite it, so
    /// only for a market on loopback or in tests.
    #[arg(long, env = "SUBLET_MARKET_INSECURE_HTTP", value_parser = clap::builder::FalseyValueParser::new())]
    insecure_http: bool,
}

impl ClientTlsArgs {
    fn client(&self, url: &str) -> anyhow::Result<Client> {
        Ok(Client::with_tls(
            url,
            &ClientTls {
                ca_file: self.ca_file.clone(),
                insecure_http: self.insecure_http,
            },
        )?)
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the market daemon.
    Serve(Serve),
    /// Create a new ed25519 key (PKCS#8, mode 0600) and print its party id and public key.
    Keygen {
        /// Where to write the key; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Register a key with a market as a demander or provider.
    Register {
        #[arg(
            long,
            env = "SUBLET_MARKET_URL",
            default_value = "http://127.0.0.1:7490"
        )]
        url: String,
        #[arg(long, env = "SUBLET_MARKET_KEY")]
        key: PathBuf,
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// `demander`, `provider`, `arbiter` or `support`.
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
    },
    /// Send one signed request and print the JSON answer,
    /// e.g. `call POST /v1/offers '{"capacity_bytes":...}'`.
    Call {
        #[arg(
            long,
            env = "SUBLET_MARKET_URL",
            default_value = "http://127.0.0.1:7490"
        )]
        url: String,
        #[arg(long, env = "SUBLET_MARKET_KEY")]
        key: PathBuf,
        #[command(flatten)]
        tls: ClientTlsArgs,
        method: String,
        path: String,
        /// The JSON body; empty when left out.
        body: Option<String>,
    },
    /// Sign, with a treasurer key (one given to the market's `serve --treasurer-key`), the
    /// authorization for one deposit or withdrawal, and print it as JSON: the party sends it
    /// as `authorization` in its `POST /v1/deposits` or `/v1/withdrawals`. Nothing is sent.
    TreasurerSign {
        /// The treasurer's key.
        #[arg(long)]
        key: PathBuf,
        /// `deposit` (you received the money) or `withdrawal` (you pay it out).
        #[arg(long)]
        kind: String,
        /// The party credited or paid.
        #[arg(long)]
        party: String,
        /// Micro-credits (1 credit = 1000000).
        #[arg(long)]
        amount: i64,
        /// The outside transfer's reference, as the party will send it.
        #[arg(long, default_value = "")]
        reference: String,
    },
    /// Sign an attestation about a party with an attestor key (one given to the market's
    /// `serve --attestor-key`) and submit it. Revoke one with
    /// `call --key ATTESTOR_KEY POST /v1/parties/ID/attestations/AT_ID/revoke`.
    Attest {
        #[arg(
            long,
            env = "SUBLET_MARKET_URL",
            default_value = "http://127.0.0.1:7490"
        )]
        url: String,
        /// The attestor's key.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// The party the attestation is about.
        #[arg(long)]
        party: String,
        /// `email` (you verified the party controls --email) or `operator` (you vouch for it).
        #[arg(long)]
        kind: String,
        /// The verified address (kind email); only its SHA-256 leaves this machine.
        #[arg(long)]
        email: Option<String>,
        /// Expire after this many days; never when left out.
        #[arg(long)]
        expires_days: Option<i64>,
    },
}

#[derive(clap::Args)]
pub struct Serve {
    /// SQLite database file; created when missing.
    #[arg(long, env = "SUBLET_MARKET_DB", default_value = "market.db")]
    db: PathBuf,
    /// Keep the books in PostgreSQL instead of SQLite: the name of the environment variable
    /// holding the connection URL (postgres://user:password@host:5432/dbname), kept out of
    /// the command line because it carries the password. Markets may share one database.
    #[arg(
        long,
        env = "SUBLET_MARKET_POSTGRES_URL_ENV",
        value_name = "VAR",
        conflicts_with = "db"
    )]
    postgres_url_env: Option<String>,
    /// With --postgres-url-env: the most PostgreSQL connections the market keeps open
    /// (1 to 64); requests beyond that wait for one. Reads run side by side on them.
    #[arg(
        long,
        env = "SUBLET_MARKET_POSTGRES_POOL_SIZE",
        default_value_t = 8,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    postgres_pool_size: u16,
    /// With --postgres-url-env: how long a request waits for a free connection, and then
    /// for the market's lock, before it is answered 503 (e.g. 10s, 1m; at most 10m).
    #[arg(
        long,
        env = "SUBLET_MARKET_POSTGRES_POOL_WAIT",
        default_value = "10s",
        value_parser = parse_pool_wait
    )]
    postgres_pool_wait: i64,
    /// Address of the REST API.
    #[arg(long, env = "SUBLET_MARKET_LISTEN", default_value = "127.0.0.1:7490")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); read again when it
    /// changes, so a renewed certificate needs no restart.
    #[arg(long, env = "SUBLET_MARKET_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "SUBLET_MARKET_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a listener that is not loopback (without --tls-cert): anyone on
    /// the path reads and rewrites the answers. Loopback listeners may serve plain HTTP
    /// without it.
    #[arg(
        long,
        env = "SUBLET_MARKET_INSECURE_HTTP",
        conflicts_with = "tls_cert",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    insecure_http: bool,
    /// Accept deposits and withdrawals on the manual rail, which trusts every
    /// request: for `sublet dev`-style local use and tests only; refused on a listener that
    /// is not loopback.
    /// `SUBLET_MARKET_MANUAL_DEPOSITS` takes true/false, 1/0, yes/no or on/off.
    #[arg(
        long,
        env = "SUBLET_MARKET_MANUAL_DEPOSITS",
        conflicts_with = "treasurer_keys",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    manual_deposits: bool,
    /// Ed25519 public key (hex) of a treasurer: deposits and withdrawals are credited only
    /// with an authorization it signed (`treasurer-sign`); repeat for several.
    #[arg(
        long = "treasurer-key",
        env = "SUBLET_MARKET_TREASURER_KEYS",
        value_delimiter = ','
    )]
    treasurer_keys: Vec<String>,
    /// The platform's share of provider earnings, in basis points.
    #[arg(long, default_value_t = Policy::default().platform_fee_bps)]
    platform_fee_bps: i64,
    /// The share of a new provider's earnings held back during vetting, in basis points.
    #[arg(long, default_value_t = Policy::default().held_back_bps)]
    held_back_bps: i64,
    /// How long a provider counts as new after registering, in days.
    #[arg(long, default_value_t = 30)]
    vetting_days: i64,
    /// Ed25519 public key (hex) allowed to register as an arbiter and decide
    /// disputes; repeat for several.
    #[arg(long = "arbiter-key")]
    arbiter_keys: Vec<String>,
    /// Ed25519 public key (hex) whose attestations about parties (verified e-mail,
    /// operator vouching) raise their trust level; repeat for several.
    #[arg(long = "attestor-key")]
    attestor_keys: Vec<String>,
    /// Length of a receipt period of new contracts: gateways and providers report usage
    /// once per period (e.g. 1h, 1d; 10s for demos).
    #[arg(long, default_value = "1h", value_parser = parse_period)]
    receipt_period: i64,
    /// How far the two sides' storage and egress figures may differ and still agree, in
    /// basis points.
    #[arg(long, default_value_t = Policy::default().receipt_tolerance_bps)]
    receipt_tolerance_bps: i64,
    /// Ed25519 public key (hex) allowed to register as support staff and answer every
    /// ticket; repeat for several.
    #[arg(long = "support-key")]
    support_keys: Vec<String>,
    /// How long after it is first given a review may still be changed, in days.
    #[arg(long, default_value_t = 14)]
    review_window_days: i64,
    /// Check contacts (e-mail addresses) with the market's own codes, written as JSON lines
    /// `{"to","party","code"}` to this file: for development and tests, or for a mailer
    /// that sends what appears there. Without it only attestors verify contacts.
    #[arg(long, value_name = "PATH")]
    contact_delivery_file: Option<PathBuf>,
}

/// `30s`, `10m`, `1h`, `1d` or plain seconds, between 1 s and 31 days.
fn parse_period(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m, 1h or 1d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} in {s:?}: use s, m, h or d")),
    };
    let secs = n.saturating_mul(unit);
    if !(1..=MAX_PERIOD_SECS).contains(&secs) {
        return Err(format!("{s:?} must be between 1s and 31d"));
    }
    Ok(secs)
}

/// A wait like [`parse_period`], at most 10 minutes.
fn parse_pool_wait(s: &str) -> Result<i64, String> {
    let secs = parse_period(s)?;
    if secs > 600 {
        return Err(format!("{s:?} is longer than the 10m a request may wait"));
    }
    Ok(secs)
}

fn load_key(path: &PathBuf) -> anyhow::Result<Signer> {
    let bytes = std::fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
    Ok(Signer::from_pkcs8(&bytes)?)
}

/// Runs one command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(s) => serve(s).await,
        Command::Keygen { out } => {
            let (signer, pkcs8) = Signer::generate()?;
            write_new_private(&out, &pkcs8)?;
            println!(
                "party_id={} public_key={}",
                signer.party_id(),
                signer.public_key_hex()
            );
            Ok(())
        }
        Command::Register {
            url,
            key,
            role,
            name,
            tls,
        } => {
            let role = match role.as_str() {
                "demander" => Role::Demander,
                "provider" => Role::Provider,
                "arbiter" => Role::Arbiter,
                "support" => Role::Support,
                other => {
                    bail!("--role must be demander, provider, arbiter or support, got {other:?}")
                }
            };
            let party = tls
                .client(&url)?
                .register(&load_key(&key)?, role, &name)
                .await?;
            println!("{}", serde_json::to_string_pretty(&party)?);
            Ok(())
        }
        Command::Attest {
            url,
            key,
            party,
            kind,
            email,
            expires_days,
            tls,
        } => {
            attest(
                &tls.client(&url)?,
                &key,
                &party,
                &kind,
                email.as_deref(),
                expires_days,
            )
            .await
        }
        Command::TreasurerSign {
            key,
            kind,
            party,
            amount,
            reference,
        } => {
            let kind = match kind.as_str() {
                "deposit" => Kind::Deposit,
                "withdrawal" => Kind::Withdrawal,
                other => bail!("--kind must be deposit or withdrawal, got {other:?}"),
            };
            if amount <= 0 {
                bail!("--amount must be a positive number of micro-credits, got {amount}");
            }
            let signed = Authorization::sign(
                &load_key(&key)?,
                kind,
                &party,
                amount,
                &reference,
                sublet_market_api::unix_now(),
            )?;
            println!("{}", serde_json::to_string_pretty(&signed)?);
            Ok(())
        }
        Command::Call {
            url,
            key,
            method,
            path,
            body,
            tls,
        } => {
            let signer = load_key(&key)?;
            let reply = tls
                .client(&url)?
                .send(
                    Some(&signer),
                    &method.to_ascii_uppercase(),
                    &path,
                    body.unwrap_or_default().as_bytes(),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&reply.body)?);
            if !(200..300).contains(&reply.status) {
                bail!("market answered {}", reply.status);
            }
            Ok(())
        }
    }
}

fn write_new_private(path: &PathBuf, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating key file {} (it must not exist yet)",
            path.display()
        )
    })?;
    file.write_all(data)?;
    Ok(())
}

/// `attest`: signs the statement locally and submits it.
async fn attest(
    client: &Client,
    key: &PathBuf,
    party: &str,
    kind: &str,
    email: Option<&str>,
    expires_days: Option<i64>,
) -> anyhow::Result<()> {
    if party.is_empty() || !party.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("--party must be a party id (32 hex characters), got {party:?}");
    }
    let kind = match kind {
        "email" => AttestationKind::Email,
        "operator" => AttestationKind::Operator,
        other => bail!("--kind must be email or operator, got {other:?}"),
    };
    let email_sha256 = match (kind, email) {
        (AttestationKind::Email, Some(address)) => Some(email_hash(address)?),
        (AttestationKind::Email, None) => {
            bail!("--kind email needs --email, the address you verified")
        }
        (AttestationKind::Operator, Some(_)) => bail!("--email goes with --kind email only"),
        (AttestationKind::Operator, None) => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs() as i64;
    let expires_at = match expires_days {
        Some(days) if !(1..=36_500).contains(&days) => {
            bail!("--expires-days must be between 1 and 36500, got {days}")
        }
        Some(days) => Some(now + days * 86_400),
        None => None,
    };
    let signed =
        SignedAttestation::sign(&load_key(key)?, kind, party, email_sha256, now, expires_at);
    let reply = client
        .json(
            None,
            "POST",
            &format!("/v1/parties/{party}/attestations"),
            &serde_json::to_value(&signed)?,
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&reply.body)?);
    if !(200..300).contains(&reply.status) {
        bail!("market answered {}", reply.status);
    }
    Ok(())
}

async fn serve(s: Serve) -> anyhow::Result<()> {
    let policy = Policy {
        platform_fee_bps: s.platform_fee_bps,
        held_back_bps: s.held_back_bps,
        vetting_period_secs: s.vetting_days.saturating_mul(24 * 3600),
        arbiter_keys: s.arbiter_keys.clone(),
        attestor_keys: s
            .attestor_keys
            .iter()
            .map(|k| k.trim().to_ascii_lowercase())
            .collect(),
        receipt_period_secs: s.receipt_period,
        receipt_tolerance_bps: s.receipt_tolerance_bps,
        support_keys: s
            .support_keys
            .iter()
            .map(|k| k.trim().to_ascii_lowercase())
            .collect(),
        review_window_secs: s.review_window_days.saturating_mul(24 * 3600),
        ..Policy::default()
    };
    for key in &policy.support_keys {
        if hex::decode(key).map(|k| k.len()) != Ok(32) {
            bail!(
                "--support-key must be a 32-byte ed25519 public key in hex (64 characters), got {key:?}"
            );
        }
    }
    if !(0..=365).contains(&s.review_window_days) {
        bail!("--review-window-days must be between 0 and 365");
    }
    for key in &policy.attestor_keys {
        if hex::decode(key).map(|k| k.len()) != Ok(32) {
            bail!(
                "--attestor-key must be a 32-byte ed25519 public key in hex (64 characters), got {key:?}"
            );
        }
    }
    if !(0..=10_000).contains(&policy.receipt_tolerance_bps) {
        bail!("--receipt-tolerance-bps is basis points between 0 and 10000");
    }
    if !(0..=10_000).contains(&policy.platform_fee_bps)
        || !(0..=10_000).contains(&policy.held_back_bps)
    {
        bail!("--platform-fee-bps and --held-back-bps are basis points between 0 and 10000");
    }
    check_listener(&s)?;
    let rail: Option<Arc<dyn PaymentRail>> = if !s.treasurer_keys.is_empty() {
        Some(Arc::new(TreasurerRail::new(&s.treasurer_keys)?))
    } else if s.manual_deposits {
        Some(Arc::new(ManualRail))
    } else {
        None
    };
    let rail_name = rail.as_ref().map_or("none", |r| r.name());
    let (market, db) = match &s.postgres_url_env {
        Some(var) => {
            let url = std::env::var(var).ok().filter(|u| !u.trim().is_empty());
            let Some(url) = url else {
                bail!(
                    "--postgres-url-env names {var}, but that environment variable is unset or empty; \
                     set it to postgres://user:password@host:5432/dbname"
                );
            };
            let options = crate::PgOptions {
                pool_size: usize::from(s.postgres_pool_size),
                wait: std::time::Duration::from_secs(s.postgres_pool_wait.unsigned_abs()),
            };
            let market = Market::open_postgres_with(&url, options, policy, rail)
                .with_context(|| format!("opening the market database in PostgreSQL (${var})"))?;
            let tls = if market.database_tls() {
                "TLS"
            } else {
                "no TLS"
            };
            let db = format!("postgres (${var}, {tls}, pool of {})", s.postgres_pool_size);
            (market, db)
        }
        None => {
            let market = Market::open(&s.db, policy, rail)
                .with_context(|| format!("opening market database {}", s.db.display()))?;
            (market, s.db.display().to_string())
        }
    };
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => {
            let reloading = crate::tls::ReloadingCert::open(cert, key)?;
            reloading.watch(crate::tls::RELOAD_INTERVAL);
            Some(reloading.acceptor()?)
        }
        _ => None,
    };
    let market = match &s.contact_delivery_file {
        Some(path) => market.with_delivery(Arc::new(crate::contacts::FileDelivery::new(path))),
        None => market,
    };
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("binding {}", s.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        db = %db,
        tls = tls.is_some(),
        rail = rail_name,
        "market serving"
    );
    crate::server::serve_tls(
        listener,
        api::router(Arc::new(market)),
        crate::server::Limits::default(),
        tls,
        shutdown(),
    )
    .await;
    tracing::info!("market stopped");
    Ok(())
}

/// Refuses what would let strangers on the network steer the market: plain HTTP, or the
/// manual rail that credits whatever a party asks, on a listener that is not loopback.
fn check_listener(s: &Serve) -> anyhow::Result<()> {
    let loopback = s.listen.ip().is_loopback();
    if s.manual_deposits && !loopback {
        bail!(
            "--manual-deposits credits every deposit a party asks for, so it serves loopback \
             listeners only (--listen 127.0.0.1:PORT), not {}",
            s.listen
        );
    }
    if s.tls_cert.is_none() && !loopback && !s.insecure_http {
        bail!(
            "--listen {} is not loopback: serve HTTPS with --tls-cert and --tls-key, or pass \
             --insecure-http to serve plain HTTP anyway",
            s.listen
        );
    }
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: Serve,
    }

    fn refused(args: &[&str]) -> String {
        let s = Args::try_parse_from(["serve"].iter().chain(args))
            .unwrap()
            .serve;
        check_listener(&s).map_or_else(|e| e.to_string(), |()| String::new())
    }

    #[test]
    fn strangers_get_neither_plain_http_nor_the_manual_rail() {
        // Loopback: plain HTTP and the manual rail are fine.
        assert_eq!(
            refused(&["--listen", "127.0.0.1:7490", "--manual-deposits"]),
            ""
        );
        // Elsewhere the manual rail is refused, TLS or not.
        let e = refused(&[
            "--listen",
            "0.0.0.0:7490",
            "--manual-deposits",
            "--insecure-http",
        ]);
        assert!(
            e.contains("--manual-deposits") && e.contains("loopback"),
            "{e}"
        );
        // And plain HTTP needs saying so.
        let e = refused(&["--listen", "0.0.0.0:7490"]);
        assert!(e.contains("--tls-cert"), "{e}");
        assert_eq!(
            refused(&["--listen", "0.0.0.0:7490", "--insecure-http"]),
            ""
        );
        assert_eq!(
            refused(&[
                "--listen",
                "[::]:7490",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem"
            ]),
            ""
        );
        // The manual rail and a treasurer do not go together.
        assert!(
            Args::try_parse_from(["serve", "--manual-deposits", "--treasurer-key", "ab"]).is_err()
        );
    }
}
