//! `sublet market serve`: the market daemon started from the `sublet` binary answers a
//! registration and keeps it across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;
use sublet_market::client::Client;
use sublet_market::identity::{Role, Signer};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(db: &std::path::Path, port: u16) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_sublet"))
        .args(["market", "serve", "--db"])
        .arg(db)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return daemon;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sublet market serve never listened on {port}");
}

#[tokio::test]
async fn sublet_market_serve_runs_the_market() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("market.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = serve(&db, port);
    let client = Client::with_tls(
        &format!("http://127.0.0.1:{port}"),
        &sublet_market::client::ClientTls::insecure_http(),
    )
    .unwrap();
    let (signer, _) = Signer::generate().unwrap();
    let party = client
        .register(&signer, Role::Provider, "alpha")
        .await
        .unwrap();
    assert_eq!(party["id"], signer.party_id().as_str());
    drop(daemon);

    // Same database, new process: the party is still there.
    let _daemon = serve(&db, port);
    let again = client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}", signer.party_id()),
            &Value::Null,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(again["name"], "alpha");
}
