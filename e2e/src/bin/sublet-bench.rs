//! `sublet-bench`: drives an S3 endpoint through the benchmark phases and prints the
//! results as a table (and JSON with `--json`). See docs/benchmarks.md.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = sublet_e2e::bench::Args::parse();
    std::process::exit(sublet_e2e::bench::main(args).await);
}
