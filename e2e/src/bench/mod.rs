//! `sublet-bench`: a load generator for any S3 endpoint. Its own small SigV4 client
//! ([`sigv4`], [`client`]) drives the phases ([`phases`]) with bodies every GET checks
//! ([`content`]); [`stats`] turns what it measured into a table and JSON.

pub mod client;
pub mod content;
pub mod phases;
pub mod sigv4;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

/// Command line of `sublet-bench`.
#[derive(Parser, Debug)]
#[command(
    name = "sublet-bench",
    about = "Load generator for S3 endpoints: throughput, ops/s and latency, every GET verified"
)]
pub struct Args {
    /// S3 endpoint, plain HTTP (path-style requests).
    #[arg(
        long,
        env = "SUBLET_BENCH_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    pub endpoint: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_key: String,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Bucket to use; created when missing.
    #[arg(long, default_value = "sublet-bench")]
    pub bucket: String,
    /// Key prefix of everything written (default: `bench-<unix time>/`). Runs that share a
    /// prefix share objects: `get` alone reads what an earlier `put` wrote.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Phases to run, comma-separated, in this order whatever the order given:
    /// put,get,small-put,small-get,multipart,mixed,list
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "put,get,small-put,small-get,multipart,mixed,list"
    )]
    pub phases: Vec<String>,
    /// Concurrent streams (one connection each).
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    /// Stop each phase after this long (e.g. 30s, 5m) even if its count is not reached.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Objects written by `put`, read by `get` and `mixed`.
    #[arg(long, short = 'n', default_value_t = 64)]
    pub objects: u64,
    /// Size of those objects (e.g. 64Mi, 1M, 4Ki).
    #[arg(long, short = 's', default_value = "64Mi", value_parser = parse_size)]
    pub size: u64,
    /// Objects written by `small-put` and read by `small-get`.
    #[arg(long, default_value_t = 2000)]
    pub small_objects: u64,
    #[arg(long, default_value = "4Ki", value_parser = parse_size)]
    pub small_size: u64,
    /// Size of the one object `multipart` uploads and reads back.
    #[arg(long, default_value = "1Gi", value_parser = parse_size)]
    pub multipart_size: u64,
    /// Its part size (and the range size it is read back in).
    #[arg(long, default_value = "16Mi", value_parser = parse_size)]
    pub part_size: u64,
    /// Operations of `mixed` (70% GETs of `put`'s objects, 30% PUTs of new ones).
    #[arg(long, default_value_t = 200)]
    pub mixed_ops: u64,
    /// Empty objects `list` writes and then lists.
    #[arg(long, default_value_t = 100_000)]
    pub list_keys: u64,
    /// How many times `list` lists them all.
    #[arg(long, default_value_t = 2)]
    pub list_passes: u64,
    /// Sign every body's SHA-256 instead of sending UNSIGNED-PAYLOAD.
    #[arg(long)]
    pub sign_payload: bool,
    /// Write the results as JSON to this file (`-` for stdout, after the table).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// A label stored in the JSON (e.g. which server this was).
    #[arg(long)]
    pub label: Option<String>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `4096`, `4Ki`, `4KiB`, `64Mi`, `1G` (K, M, G, T are powers of 1000; Ki, Mi, Gi,
/// Ti powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix('B').unwrap_or(t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: write e.g. 4096, 4Ki, 64Mi or 1G"))?;
    let scale: u64 = match unit {
        "" => 1,
        "K" | "k" => 1000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        "T" => 1_000_000_000_000,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}`; use K, Ki, M, Mi, G, Gi, T or Ti"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses `90`, `90s`, `5m`, `1h`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 30s, 5m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}`; use ms, s, m or h")),
    }
}

/// Runs the benchmark the arguments describe; the process exit code.
pub async fn main(args: Args) -> i32 {
    for p in &args.phases {
        if !phases::PHASES.contains(&p.as_str()) {
            eprintln!(
                "error: --phases: unknown phase `{p}`; choose from {}",
                phases::PHASES.join(",")
            );
            return 2;
        }
    }
    let signer = sigv4::Signer {
        access_key: args.access_key.clone(),
        secret_key: args.secret_key.clone(),
        region: args.region.clone(),
        service: "s3".into(),
    };
    let target = match client::Target::new(&args.endpoint, signer, &args.bucket, args.sign_payload)
    {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("error: --endpoint: {e}");
            return 2;
        }
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench-{started}/"));
    if let Err(e) = phases::ensure_bucket(&target).await {
        eprintln!("error: bucket {} at {}: {e}", args.bucket, args.endpoint);
        return 1;
    }
    let settings = phases::Settings {
        target,
        prefix: prefix.clone(),
        concurrency: args.concurrency.max(1),
        duration: args.duration,
        objects: args.objects,
        object_size: args.size,
        small_objects: args.small_objects,
        small_size: args.small_size,
        multipart_size: args.multipart_size,
        part_size: args.part_size,
        mixed_ops: args.mixed_ops,
        list_keys: args.list_keys,
        list_passes: args.list_passes,
        progress: !args.quiet,
    };
    let summaries = phases::run(&settings, &args.phases).await;
    print!("{}", stats::table(&summaries));
    let errors: u64 = summaries.iter().map(|s| s.errors).sum();
    for s in &summaries {
        for m in &s.error_samples {
            eprintln!("{}: {m}", s.phase);
        }
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "tool": "sublet-bench",
            "label": args.label,
            "endpoint": args.endpoint,
            "bucket": args.bucket,
            "prefix": prefix,
            "started_unix": started,
            "concurrency": settings.concurrency,
            "duration_limit_secs": args.duration.map(|d| d.as_secs_f64()),
            "sign_payload": args.sign_payload,
            "phases": summaries.iter().map(stats::Summary::to_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        if path.as_os_str() == "-" {
            println!("{text}");
        } else if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("error: writing {}: {e}", path.display());
            return 1;
        }
    }
    if errors > 0 {
        eprintln!("{errors} operations failed");
        return 3;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_kinds_of_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4Ki"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("99999999999Ti").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 weeks").is_err());
    }
}
