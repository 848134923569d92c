//! Browsers talking to a real `sublet dev`: form uploads through presigned POST policies
//! (boto3 signs them, python requests posts them as a browser would), the bucket CORS API
//! and preflights, and a web app in headless Chromium, served from another origin,
//! uploading through a presigned POST form and reading the object back with CORS.
//! Missing boto3 or browser pieces skip (or fail under `SUBLET_REQUIRE_CLIENTS` /
//! `SUBLET_REQUIRE_BROWSER`, which `.ci/run` sets).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sublet_e2e::browser::{self, chromium};
use sublet_e2e::clients::run_ok;
use sublet_e2e::dev::SubletDev;
use sublet_e2e::skip;

/// Longest a client script may take on a loaded 2-core machine (the big upload included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);
/// The big form upload's size: it must stream, not be gathered in the gateway's memory.
const BIG_MB: u32 = 100;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn python(dev: &SubletDev, bucket: &str) -> Command {
    let mut cmd = dev.client("python3");
    cmd.env("SUBLET_ENDPOINT", dev.endpoint())
        .env("BUCKET", bucket);
    cmd
}

#[test]
fn boto3_presigned_posts_and_cors_rules_work_as_on_s3() {
    if !skip::clients_present(&["boto3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let mut cmd = python(&dev, "forms");
    cmd.arg(script("boto3_post_cors.py"))
        .env("GATEWAY_PID", dev.pid().to_string())
        .env("BIG_MB", BIG_MB.to_string());
    let out = run_ok(&mut cmd, CLIENT_TIMEOUT);
    eprintln!("{out}");
    assert!(out.contains("post and cors checks passed"), "{out}");
}

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// Why the browser cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    browser::missing(&console_dir())
}

/// What the app's backend hands its page: a presigned POST for `uploads/${filename}` and a
/// presigned GET of the file the page will upload, after setting the bucket's CORS rules
/// for the app's origin.
const APP_BACKEND: &str = r#"
import json, os, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["SUBLET_ENDPOINT"], region_name="us-east-1",
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
bucket, origin = os.environ["BUCKET"], os.environ["ORIGIN"]
s3.create_bucket(Bucket=bucket)
s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
    "AllowedOrigins": [origin], "AllowedMethods": ["GET", "POST"],
    "AllowedHeaders": ["x-requested-with"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 5}]})
post = s3.generate_presigned_post(bucket, "uploads/${filename}",
    Fields={"success_action_status": "201"},
    Conditions=[{"success_action_status": "201"}, ["starts-with", "$key", "uploads/"],
                ["content-length-range", 1, 1 << 20]], ExpiresIn=600)
get = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "uploads/from-browser.txt"})
print(json.dumps({"post": post, "get": get}))
"#;

#[test]
fn a_cors_preflight_from_headless_chromium_uploading_through_a_presigned_post_form() {
    if !skip::clients_present(&["boto3"]) {
        return;
    }
    if let Some(why) = browser_missing() {
        skip::BROWSER.skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    // The app's page is served (by the driver) from another port: another origin.
    let origin = format!("http://{}", sublet_e2e::free_addr());
    let mut backend = python(&dev, "browser-app");
    backend.args(["-c", APP_BACKEND]).env("ORIGIN", &origin);
    let handed: serde_json::Value =
        serde_json::from_str(run_ok(&mut backend, CLIENT_TIMEOUT).trim()).unwrap();
    let config = serde_json::json!({
        "chromium": chromium().unwrap(),
        "origin": origin,
        "post": handed["post"],
        "get": handed["get"],
        "metrics": format!("http://{}/metrics", dev.admin_addr),
        "content": "uploaded by a web page, read back through CORS",
    });
    let config_path = tmp.path().join("browser.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let mut node = Command::new("node");
    node.arg(console_dir().join("browser-upload.mjs"))
        .arg(&config_path)
        .current_dir(console_dir());
    let out = run_ok(&mut node, CLIENT_TIMEOUT);
    eprintln!("{out}");
    assert!(out.contains("browser upload passed"), "{out}");
}
