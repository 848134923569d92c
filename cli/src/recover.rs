//! `sublet recover`: rebuild a lost metadata store from the providers' snapshot and journal,
//! and say what could not be recovered.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RecoverArgs {
    /// The same YAML file `sublet serve` runs.
    #[arg(long, short)]
    config: PathBuf,
    /// Directory for metadata, master key and identity; overrides spec.dataDir.
    #[arg(long, env = "SUBLET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Token presented to providers; overrides spec.providerToken.
    #[arg(long, env = "SUBLET_PROVIDER_TOKEN", hide_env_values = true)]
    provider_token: Option<String>,
    /// Replace an existing metadata file.
    #[arg(long)]
    force: bool,
    /// Also restore from snapshot manifests in the unsealed format of gateways before
    /// manifests were sealed with the master key (tried after every sealed one). Nothing
    /// authenticates them: anyone who can write to a provider could have planted them.
    /// Only for an installation that lost its disk before taking its first sealed snapshot.
    #[arg(long)]
    trust_unsealed_manifests: bool,
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    let RecoverArgs {
        config: config_path,
        data_dir,
        provider_token,
        force,
        trust_unsealed_manifests,
    } = args;
    let config = match sublet_crds::load_file(&config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(2);
        }
    };
    let overrides = sublet_gateway::runtime::Overrides {
        data_dir,
        provider_token,
        ..Default::default()
    };
    let done =
        sublet_gateway::runtime::recover(&config, &overrides, force, trust_unsealed_manifests)
            .await?;
    let replayed = &done.replayed;
    match &done.manifest {
        Some(manifest) => {
            println!(
                "restored the metadata snapshot of {} ({} bytes) to {}",
                chrono::DateTime::from_timestamp_millis(manifest.created)
                    .map_or_else(|| manifest.created.to_string(), |t| t.to_rfc3339()),
                manifest.size,
                done.path.display()
            );
            println!(
                "replayed the metadata journal written after it: {} segments, {} changes applied, {} already in the snapshot",
                replayed.segments, replayed.applied, replayed.skipped
            );
        }
        None => println!(
            "no metadata snapshot yet: rebuilt {} from the whole metadata journal: {} segments, {} changes applied, {} skipped",
            done.path.display(),
            replayed.segments,
            replayed.applied,
            replayed.skipped
        ),
    }
    for problem in &replayed.unreadable {
        println!("NOT REPLAYED: journal segment {problem} has no readable copy");
    }
    for problem in &replayed.failed {
        println!("NOT REPLAYED: {problem}");
    }
    if !replayed.unlisted.is_empty() {
        println!(
            "could not list the journal on {} providers: {}",
            replayed.unlisted.len(),
            replayed.unlisted.join(", ")
        );
    }
    if let Some(path) = &done.overlay {
        println!(
            "wrote back the policies applied through the admin API to {}",
            path.display()
        );
    }
    let after = &done.after;
    if after.shards == 0 {
        println!(
            "nothing is missing: the restored metadata names every shard this installation stored after the snapshot (or, without one, at all)"
        );
    } else {
        println!(
            "NOT RECOVERED: {} writes ({} shards, {} bytes, the newest at {}) were stored after \
             that snapshot and neither it nor the journal describes them (writes never \
             acknowledged, or journal segments lost); those objects must be uploaded again",
            after.writes,
            after.shards,
            after.bytes,
            after
                .newest
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map_or_else(|| "?".to_owned(), |t| t.to_rfc3339())
        );
    }
    if !after.unlisted.is_empty() {
        println!(
            "could not list {} providers, so that count may be short: {}",
            after.unlisted.len(),
            after.unlisted.join(", ")
        );
    }
    println!("start the gateway with `sublet serve`");
    Ok(())
}
