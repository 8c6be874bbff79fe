//! Manual front end for the adapter benchmark until `wgpu-diffusion bench` is wired into the CLI:
//! `cargo run --example bench -- --preset cifar10-32 --batch 1,8 --runs 3 --profile`.

use clap::Parser;
use wgpu_diffusion::bench::{self, BenchArgs};
use wgpu_diffusion::GpuOptions;

#[derive(Parser)]
struct Cli {
    /// Adapter name substring (overrides WGPU_ADAPTER_NAME).
    #[arg(long)]
    adapter: Option<String>,
    /// Backends to consider (overrides WGPU_BACKEND).
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut options = GpuOptions::from_env();
    if cli.adapter.is_some() {
        options.adapter_name = cli.adapter.clone();
    }
    if cli.backend.is_some() {
        options.backends = cli.backend.clone();
    }
    bench::run(&cli.bench, &options)?;
    Ok(())
}
