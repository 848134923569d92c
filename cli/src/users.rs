//! `sublet user create|list|get|delete` and `sublet key create|list|rotate|disable|enable|
//! delete`: users and S3 access keys on a running gateway, through its admin API. A secret
//! is printed once, by `key create` and `key rotate`; nothing lists it again.

use std::fmt::Write as _;

use clap::Subcommand;
use serde_json::{Value, json};
use sublet_crds::ByteSize;

use crate::admin::AdminArgs;
use crate::admin_client::{AdminClient, Output, human_bytes, render, table, text};

// `sublet user`: the variant's doc comment in main.rs is the help.
#[derive(clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    action: UserAction,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user, or change the display name or quotas of one (what is not given stays).
    Create {
        /// The user's id (its S3 owner id): 1-64 of A-Z a-z 0-9 . _ -
        id: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Bytes the user's buckets may hold (`500Gi`, `1T`, `1048576`); `none` lifts the
        /// quota.
        #[arg(long, value_parser = parse_byte_quota)]
        max_bytes: Option<Quota>,
        /// Objects the user's buckets may hold; `none` lifts the quota.
        #[arg(long, value_parser = parse_count_quota)]
        max_objects: Option<Quota>,
    },
    /// Users with quotas and what their buckets hold.
    List,
    /// One user with its keys.
    Get { id: String },
    /// Delete a user; refused while it has keys or buckets.
    Delete { id: String },
}

// `sublet key`.
#[derive(clap::Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    action: KeyAction,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create an access key for a user and print its secret (shown this once).
    Create {
        /// The user the key belongs to.
        #[arg(long)]
        user: String,
        /// What the key may do: `bucket:r`, `bucket:w` or `bucket:rw` (`*:r`: read every
        /// bucket, other users' included); repeat for several. At least one.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// The access key id to use (generated when absent); creating it again with the
        /// same user and grants is harmless.
        #[arg(long)]
        access_key: Option<String>,
    },
    /// Access keys with user, grants and state (never secrets).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Give a key a new secret and print it; the old secret is refused from then on.
    Rotate { access_key: String },
    /// Refuse a key until it is enabled again.
    Disable { access_key: String },
    /// Accept a disabled key again.
    Enable { access_key: String },
    /// Delete a key for good.
    Delete { access_key: String },
}

fn parse_size(s: &str) -> Result<u64, String> {
    ByteSize::parse(s)
        .map(|b| b.bytes())
        .map_err(|e| e.to_string())
}

/// A quota given on the command line: a limit, or `none` to remove the one the user has
/// (sent as JSON `null`, which the admin API reads as "no limit").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quota {
    Limit(u64),
    Lifted,
}

impl Quota {
    fn json(self) -> Value {
        match self {
            Quota::Limit(n) => Value::from(n),
            Quota::Lifted => Value::Null,
        }
    }
}

fn lifted(s: &str) -> bool {
    s.eq_ignore_ascii_case("none")
}

fn parse_byte_quota(s: &str) -> Result<Quota, String> {
    if lifted(s) {
        return Ok(Quota::Lifted);
    }
    parse_size(s).map(Quota::Limit)
}

fn parse_count_quota(s: &str) -> Result<Quota, String> {
    if lifted(s) {
        return Ok(Quota::Lifted);
    }
    s.parse::<u64>()
        .map(Quota::Limit)
        .map_err(|_| format!("{s:?} is not a count of objects (a whole number, or `none`)"))
}

/// The body of `PUT /admin/v1/users/{id}`: only what was given, a lifted quota as `null`.
fn user_body(
    display_name: Option<String>,
    max_bytes: Option<Quota>,
    max_objects: Option<Quota>,
) -> Value {
    let mut body = serde_json::Map::new();
    if let Some(name) = display_name {
        body.insert("displayName".into(), Value::from(name));
    }
    for (name, quota) in [("maxBytes", max_bytes), ("maxObjects", max_objects)] {
        if let Some(q) = quota {
            body.insert(name.into(), q.json());
        }
    }
    Value::Object(body)
}

/// `sublet user ...`.
pub async fn user(args: UserArgs) -> anyhow::Result<()> {
    let client = args.admin.client();
    let output = args.admin.output;
    print(match args.action {
        UserAction::Create {
            id,
            display_name,
            max_bytes,
            max_objects,
        } => {
            let body = user_body(display_name, max_bytes, max_objects);
            create_user(&client, &id, body, output).await
        }
        UserAction::List => list_users(&client, output).await,
        UserAction::Get { id } => get_user(&client, &id, output).await,
        UserAction::Delete { id } => client
            .call(http::Method::DELETE, &format!("/admin/v1/users/{id}"), None)
            .await
            .map(|_| format!("user {id} deleted\n")),
    })
}

/// `sublet key ...`.
pub async fn key(args: KeyArgs) -> anyhow::Result<()> {
    let client = args.admin.client();
    let output = args.admin.output;
    print(match args.action {
        KeyAction::Create {
            user,
            grants,
            access_key,
        } => {
            let mut body = json!({ "user": user, "grants": grants });
            if let Some(a) = access_key {
                body["accessKey"] = Value::from(a);
            }
            issued(
                client
                    .call(http::Method::POST, "/admin/v1/keys", Some(body.to_string()))
                    .await,
                output,
            )
        }
        KeyAction::List { user } => {
            let path = match user {
                Some(u) => format!("/admin/v1/keys?user={u}"),
                None => "/admin/v1/keys".into(),
            };
            match client.call(http::Method::GET, &path, None).await {
                Ok(answer) => {
                    let items = answer
                        .and_then(|a| a["items"].as_array().cloned())
                        .unwrap_or_default();
                    match output {
                        Output::Table => Ok(key_table(&items)),
                        _ => render(&Value::Array(items), output),
                    }
                }
                Err(e) => Err(e),
            }
        }
        KeyAction::Rotate { access_key } => issued(
            client
                .call(
                    http::Method::POST,
                    &format!("/admin/v1/keys/{access_key}/rotate"),
                    None,
                )
                .await,
            output,
        ),
        KeyAction::Disable { access_key } => client
            .call(
                http::Method::POST,
                &format!("/admin/v1/keys/{access_key}/disable"),
                None,
            )
            .await
            .map(|_| format!("access key {access_key} disabled\n")),
        KeyAction::Enable { access_key } => client
            .call(
                http::Method::POST,
                &format!("/admin/v1/keys/{access_key}/enable"),
                None,
            )
            .await
            .map(|_| format!("access key {access_key} enabled\n")),
        KeyAction::Delete { access_key } => client
            .call(
                http::Method::DELETE,
                &format!("/admin/v1/keys/{access_key}"),
                None,
            )
            .await
            .map(|_| format!("access key {access_key} deleted\n")),
    })
}

async fn create_user(
    client: &AdminClient,
    id: &str,
    body: Value,
    output: Output,
) -> anyhow::Result<String> {
    let existed = client
        .call(http::Method::GET, &format!("/admin/v1/users/{id}"), None)
        .await
        .is_ok();
    let user = client
        .call(
            http::Method::PUT,
            &format!("/admin/v1/users/{id}"),
            Some(body.to_string()),
        )
        .await?
        .unwrap_or_default();
    match output {
        Output::Table => Ok(format!(
            "user {id} {}\n",
            if existed { "configured" } else { "created" }
        )),
        _ => render(&user, output),
    }
}

async fn list_users(client: &AdminClient, output: Output) -> anyhow::Result<String> {
    let answer = client
        .call(http::Method::GET, "/admin/v1/users", None)
        .await?
        .unwrap_or_default();
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    match output {
        Output::Table => Ok(user_table(&items)),
        _ => render(&Value::Array(items), output),
    }
}

async fn get_user(client: &AdminClient, id: &str, output: Output) -> anyhow::Result<String> {
    let user = client
        .call(http::Method::GET, &format!("/admin/v1/users/{id}"), None)
        .await?
        .unwrap_or_default();
    match output {
        Output::Table => {
            let mut out = user_table(std::slice::from_ref(&user));
            let keys = user["keys"].as_array().cloned().unwrap_or_default();
            if !keys.is_empty() {
                out.push('\n');
                out.push_str(&key_table(&keys));
            }
            Ok(out)
        }
        _ => render(&user, output),
    }
}

/// The answer of `key create` or `key rotate`: the secret, once.
fn issued(answer: anyhow::Result<Option<Value>>, output: Output) -> anyhow::Result<String> {
    let key = answer?.unwrap_or_default();
    if output != Output::Table {
        return render(&key, output);
    }
    let mut out = String::new();
    let _ = writeln!(out, "access key:  {}", text(&key["accessKey"]));
    match key["secretKey"].as_str() {
        Some(secret) => {
            let _ = writeln!(out, "secret key:  {secret}");
            let _ = writeln!(
                out,
                "(the secret is shown this once: store it now; `sublet key rotate` makes a new one)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "(it existed already as asked; its secret is not shown again)"
            );
        }
    }
    let _ = writeln!(out, "user:        {}", text(&key["user"]));
    Ok(out)
}

fn limit(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), |n| n.to_string())
}

fn user_table(items: &[Value]) -> String {
    table(
        &[
            "ID",
            "DISPLAY NAME",
            "OBJECTS",
            "MAX OBJECTS",
            "BYTES",
            "MAX BYTES",
        ],
        items
            .iter()
            .map(|u| {
                vec![
                    text(&u["id"]),
                    text(&u["displayName"]),
                    limit(&u["objects"]),
                    limit(&u["maxObjects"]),
                    human_bytes(u["bytes"].as_u64().unwrap_or(0)),
                    u["maxBytes"]
                        .as_u64()
                        .map_or_else(|| "-".into(), human_bytes),
                ]
            })
            .collect(),
    )
}

fn key_table(items: &[Value]) -> String {
    table(
        &["ACCESS KEY", "USER", "STATE", "SOURCE", "GRANTS"],
        items
            .iter()
            .map(|k| {
                let grants: Vec<String> = k["grants"]
                    .as_array()
                    .map(|g| g.iter().map(text).collect())
                    .unwrap_or_default();
                vec![
                    text(&k["accessKey"]),
                    text(&k["user"]),
                    text(&k["state"]),
                    text(&k["source"]),
                    if grants.is_empty() {
                        "*:rw".into()
                    } else {
                        grants.join(",")
                    },
                ]
            })
            .collect(),
    )
}

fn print(text: anyhow::Result<String>) -> anyhow::Result<()> {
    print!("{}", text?);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_shows_its_secret_once_and_lists_never_do() {
        let answer = json!({"accessKey": "SKABC", "user": "alice", "secretKey": "s3cr3t", "grants": ["photos:r"], "state": "active", "source": "api"});
        let out = issued(Ok(Some(answer.clone())), Output::Table).unwrap();
        assert!(out.contains("secret key:  s3cr3t"), "{out}");
        let listed = key_table(&[answer]);
        assert!(!listed.contains("s3cr3t"), "{listed}");
        let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            ["SKABC", "alice", "active", "api", "photos:r"],
            "{listed}"
        );
    }

    #[test]
    fn quotas_take_human_sizes() {
        assert_eq!(parse_size("10Gi").unwrap(), 10 << 30);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_byte_quota("1Ki"), Ok(Quota::Limit(1024)));
        assert_eq!(parse_count_quota("12"), Ok(Quota::Limit(12)));
        assert!(parse_count_quota("12k").is_err());
    }

    #[test]
    fn none_lifts_a_quota_and_what_is_not_given_is_not_sent() {
        assert_eq!(parse_byte_quota("none"), Ok(Quota::Lifted));
        assert_eq!(parse_count_quota("NONE"), Ok(Quota::Lifted));
        assert_eq!(
            user_body(None, Some(Quota::Lifted), None),
            json!({"maxBytes": null})
        );
        assert_eq!(
            user_body(Some("A".into()), Some(Quota::Limit(5)), Some(Quota::Lifted)),
            json!({"displayName": "A", "maxBytes": 5, "maxObjects": null})
        );
        assert_eq!(user_body(None, None, None), json!({}));
    }
}
