//! `wgpu-diffusion bench`: the flags (parsed into the library's [`BenchOptions`]), progress on
//! stderr, the human-readable table on stdout, and `--json`. The measuring lives in
//! `wgpu_diffusion::bench`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use wgpu_diffusion::bench::{
    self, profile, BatchResult, BenchOptions, BenchReport, DecodeResult, KernelProfile, Preset,
};
use wgpu_diffusion::sampling::io::AtomicFile;
use wgpu_diffusion::sampling::{PipelineConfig, SampleOptions};
use wgpu_diffusion::schedule::SchedulerKind;
use wgpu_diffusion::{Error, GpuOptions};

/// `--preset`: the CLI names of [`Preset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// The model shipped in `weights/fashion-ddpm` (trained weights, read from disk).
    #[value(name = "bundled")]
    Bundled,
    /// google/ddpm-cifar10-32: 35.7 M parameters, 32×32×3, attention at 16×16.
    #[value(name = "cifar10-32")]
    Cifar10_32,
    /// google/ddpm-celebahq-256: 113.7 M parameters, 256×256×3, attention at 16×16.
    #[value(name = "celebahq-256")]
    CelebaHq256,
    /// CompVis/ldm-celebahq-256: 274.1 M-parameter U-Net on 64×64×3 latents + 55.3 M VQ
    /// decoder to 256×256×3 (decode timed too).
    #[value(name = "ldm-celebahq-256")]
    LdmCelebaHq256,
    /// Stable Diffusion 1.5 at 512×512: CLIP ViT-L text encoder (123.1 M), 859.5 M U-Net run
    /// with guidance (2 rows per image), AutoencoderKL (83.7 M); encode and decode timed too.
    #[value(name = "sd15-512")]
    Sd15_512,
    /// SD-Turbo (SD 2.1's architecture) at 512×512: OpenCLIP ViT-H text encoder (340.4 M),
    /// 865.9 M U-Net, the same VAE.
    #[value(name = "sd-turbo-512")]
    SdTurbo512,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Preset {
        match p {
            PresetArg::Bundled => Preset::Bundled,
            PresetArg::Cifar10_32 => Preset::Cifar10_32,
            PresetArg::CelebaHq256 => Preset::CelebaHq256,
            PresetArg::LdmCelebaHq256 => Preset::LdmCelebaHq256,
            PresetArg::Sd15_512 => Preset::Sd15_512,
            PresetArg::SdTurbo512 => Preset::SdTurbo512,
        }
    }
}

/// `wgpu-diffusion bench` flags: [`BenchOptions`] plus `--json`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Workload: `bundled` (weights/fashion-ddpm), or the exact architecture of
    /// google/ddpm-cifar10-32, google/ddpm-celebahq-256, CompVis/ldm-celebahq-256 (U-Net +
    /// VQ decoder, decode timed too), Stable Diffusion 1.5 or SD-Turbo (text encoder + U-Net
    /// with guidance + VAE) with deterministic random weights.
    #[arg(long, value_enum, default_value_t = PresetArg::Cifar10_32)]
    pub preset: PresetArg,
    /// A diffusers UNet2DModel directory (or pipeline folder; a latent pipeline's decoder is
    /// timed too) to benchmark instead of a preset.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    /// Timed forward passes per batch (the median is reported); 0 plans only (memory, no run).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Untimed forward passes before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Sampling steps for the sampler-step latency (model directories only; default 20).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Sampler for the sampler-step latency (`ddim`, `euler`, …; default: the model's).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Benchmark every adapter wgpu can see (through the selected backends), not just one.
    #[arg(long)]
    pub all_adapters: bool,
    /// Also write the report as JSON to FILE (schema: see the bench module docs / README).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Per-kernel GPU time table (timestamp queries where the adapter has them).
    #[arg(long)]
    pub profile: bool,
    /// With --profile, time dispatches by the CPU clock even where timestamps exist.
    #[arg(long)]
    pub wall_clock: bool,
    /// Seed of the random preset weights and of the input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Height (the image's for latent workloads; default: the workload's sample size).
    #[arg(long)]
    pub height: Option<usize>,
    /// Width (the image's for latent workloads).
    #[arg(long)]
    pub width: Option<usize>,
}

impl BenchArgs {
    /// The library options these flags spell (every flag but `--json`).
    pub fn options(&self) -> BenchOptions {
        BenchOptions {
            preset: self.preset.into(),
            model: self.model.clone(),
            batch: self.batch.clone(),
            runs: self.runs,
            warmup: self.warmup,
            steps: self.steps,
            scheduler: self.scheduler.clone(),
            all_adapters: self.all_adapters,
            profile: self.profile,
            wall_clock: self.wall_clock,
            seed: self.seed,
            height: self.height,
            width: self.width,
        }
    }
}

/// Measures (progress on stderr), prints the table on stdout, writes `--json` if asked. Every
/// argument is checked first, `--json`'s path included (its temp file is created now), so a bad
/// one fails in a moment rather than after minutes of measuring.
pub fn run(args: &BenchArgs, gpu: &GpuOptions) -> Result<()> {
    let json_file = args
        .json
        .as_deref()
        .map(AtomicFile::create)
        .transpose()
        .context("--json")?;
    check_sampler_flags(args)?;
    let report = bench::measure_with_progress(&args.options(), gpu, &|note| eprintln!("{note}"))?;
    print!("{}", render_table(&report));
    if let Some(file) = json_file {
        let text =
            serde_json::to_string_pretty(&report).context("--json: serialising the report")?;
        let path = file.target().to_path_buf();
        file.commit((text + "\n").as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `--steps` and `--scheduler`, checked as `sample` would check them against the model's
/// scheduler config (a model directory or the bundled model; random-weight presets have none,
/// and their report says the sampler step was not measured).
fn check_sampler_flags(args: &BenchArgs) -> Result<()> {
    if args.steps.is_none() && args.scheduler.is_none() {
        return Ok(());
    }
    if args.steps == Some(0) {
        bail!("--steps: must be at least 1, got 0");
    }
    let scheduler = args
        .scheduler
        .as_deref()
        .map(SchedulerKind::from_cli_name)
        .transpose()
        .context("--scheduler")?;
    let dir = match (&args.model, args.preset) {
        (Some(dir), _) => dir.clone(),
        (None, PresetArg::Bundled) => crate::cli::sample::bundled_model(),
        (None, _) => return Ok(()),
    };
    let config =
        PipelineConfig::load(&dir).with_context(|| format!("loading model {}", dir.display()))?;
    let options = SampleOptions {
        scheduler,
        steps: args.steps.unwrap_or(DEFAULT_SAMPLER_STEPS),
        num_images: 1,
        ..SampleOptions::default()
    };
    match config.prepare(&options) {
        Ok(_) => Ok(()),
        Err(Error::InvalidOption {
            field: "steps",
            message,
        }) => {
            bail!("--steps: {message}")
        }
        Err(Error::InvalidOption {
            field: "scheduler",
            message,
        }) => {
            bail!("--scheduler: {message}")
        }
        // Other needs of the model (a prompt, a class) are the measurement's own business.
        Err(_) => Ok(()),
    }
}

/// Steps the sampler-step latency uses without `--steps` (the library's default).
const DEFAULT_SAMPLER_STEPS: usize = 20;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The human-readable report.
pub fn render_table(report: &BenchReport) -> String {
    let mut s = String::new();
    let w = &report.workload;
    let _ = writeln!(
        s,
        "workload {} — {:.2} M parameters{}{}, {}x{}x{}; {} warm-up + {} timed forward passes per \
         batch (submit → GPU done, median)",
        w.name,
        w.parameters as f64 / 1e6,
        match (&w.decoder, w.decoder_parameters) {
            (Some(class), Some(p)) => format!(" + {class} decoder {:.2} M", p as f64 / 1e6),
            (Some(class), None) => format!(" + {class} decoder"),
            _ => String::new(),
        },
        if w.random_weights {
            format!(", random weights seed {}", w.seed)
        } else {
            String::new()
        },
        w.in_channels,
        w.height,
        w.width,
        w.warmup,
        w.runs
    );
    for a in &report.adapters {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "adapter  {} — {}, {}, driver {} {}{}{}{}",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.driver_info,
            if a.kernels.is_empty() {
                String::new()
            } else {
                format!(", {}-shaped kernels", a.kernels)
            },
            match a.shader_checks {
                None => "",
                Some(true) => ", shader checks on",
                Some(false) => ", shader checks off",
            },
            if a.tiles.is_empty() {
                String::new()
            } else {
                format!(", {} GEMM tiles", a.tiles)
            }
        );
        if let Some(e) = &a.error {
            let _ = writeln!(s, "  ERROR: {e}");
        }
        match &a.correctness {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "  correctness ({} vs diffusers): {} — max rel err {:.2e} (tolerance {:.0e}){}",
                    c.fixture,
                    c.status,
                    c.max_rel_err,
                    c.tolerance,
                    if c.ok { "" } else { " — NOT RANKED" }
                );
                if !c.ok {
                    let _ = writeln!(s, "    {}", c.detail);
                }
            }
            None => {
                let _ = writeln!(s, "  correctness: not checked");
            }
        }
        if a.results.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "  load {:.2} s (weights {:.1} MiB)",
            a.load_s,
            mib(a.weights_bytes)
        );
        let _ = writeln!(
            s,
            "  {:>5} {:>11} {:>10} {:>10} {:>9} {:>8} {:>8} {:>9} {:>10} {:>9}",
            "batch",
            "median ms",
            "min ms",
            "max ms",
            "images/s",
            "GFLOP/s",
            "build s",
            "pipelines",
            "dispatches",
            "peak MiB"
        );
        for r in &a.results {
            if let Some(e) = &r.error {
                let _ = writeln!(s, "  {:>5} error: {e}", r.batch);
                continue;
            }
            let Some(t) = &r.forward_ms else {
                // --runs 0: the plan alone.
                let _ = writeln!(
                    s,
                    "  {:>5} {:>11} {:>10} {:>10} {:>9} {:>8} {:>8.2} {:>9} {:>10} {:>9.1}  (plan only: U-Net activations {:.1} MiB, largest {} {:.1} MiB)",
                    r.batch,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    r.graph_build_s,
                    format!("{}/{}", r.pipelines_compiled, r.pipelines_total),
                    r.dispatches,
                    mib(r.peak_allocated_bytes),
                    mib(r.activation_bytes),
                    r.largest_buffer,
                    mib(r.largest_buffer_bytes)
                );
                write_parts_peak(&mut s, r);
                continue;
            };
            let _ = writeln!(
                s,
                "  {:>5} {:>11.2} {:>10.2} {:>10.2} {:>9.2} {:>8.2} {:>8.2} {:>9} {:>10} {:>9.1}{}",
                r.batch,
                t.median,
                t.min,
                t.max,
                r.images_per_s.unwrap_or(0.0),
                r.gflops_per_s.unwrap_or(0.0),
                r.graph_build_s,
                format!("{}/{}", r.pipelines_compiled, r.pipelines_total),
                r.dispatches,
                mib(r.peak_allocated_bytes),
                if r.output_finite == Some(false) {
                    "  (output not finite!)"
                } else {
                    ""
                }
            );
            write_parts_peak(&mut s, r);
        }
        let _ = writeln!(
            s,
            "  MACs per image {:.3} G",
            a.results
                .iter()
                .find(|r| r.error.is_none())
                .map(|r| r.macs_per_image as f64 / 1e9)
                .unwrap_or(0.0)
        );
        if report.workload.model_rows_per_image > 1 {
            let _ = writeln!(
                s,
                "  U-Net rows per image: {} (classifier-free guidance, as sampling runs)",
                report.workload.model_rows_per_image
            );
        }
        for r in &a.results {
            if let Some(t) = &r.text_encode {
                match (&t.error, &t.encode_ms) {
                    (Some(e), _) => {
                        let _ = writeln!(s, "  text encode, batch {}: error: {e}", r.batch);
                    }
                    (None, Some(ms)) => {
                        let _ = writeln!(
                            s,
                            "  text encode, batch {} ({} prompts): median {:.2} ms, {} dispatches, activations {:.1} MiB",
                            r.batch,
                            t.prompts,
                            ms.median,
                            t.dispatches,
                            mib(t.activation_bytes)
                        );
                    }
                    (None, None) => {
                        let _ = writeln!(
                            s,
                            "  text encode, batch {} ({} prompts): plan only, {} dispatches, activations {:.1} MiB",
                            r.batch,
                            t.prompts,
                            t.dispatches,
                            mib(t.activation_bytes)
                        );
                    }
                }
            }
            if let Some(d) = &r.decode {
                render_decode(&mut s, r.batch, d);
            }
        }
        for r in &a.results {
            let Some(step) = &r.sampler_step else {
                continue;
            };
            let what = format!(
                "  sampler step, batch {} ({}, {} steps): ",
                r.batch,
                step.scheduler.as_deref().unwrap_or("model default"),
                step.steps
            );
            let _ = match &step.per_step_ms {
                Some(t) => writeln!(
                    s,
                    "{what}median {:.2} ms (min {:.2}, max {:.2}) — {}",
                    t.median, t.min, t.max, step.note
                ),
                None => writeln!(s, "{what}{}", step.note),
            };
        }
        for r in &a.results {
            if let Some(k) = &r.kernels {
                render_kernels(&mut s, &format!("batch {}", r.batch), k);
            }
            if let Some(k) = r.decode.as_ref().and_then(|d| d.kernels.as_ref()) {
                render_kernels(&mut s, &format!("decode, batch {}", r.batch), k);
            }
        }
    }
    if report.adapters.len() > 1 || !report.ranking.is_empty() {
        let _ = writeln!(s);
        match report.ranking.first() {
            Some(first) => {
                let _ = writeln!(s, "ranking (batch {}, correct adapters only):", first.batch);
                for (i, e) in report.ranking.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "  {}. {} ({}) {:.2} images/s",
                        i + 1,
                        e.adapter,
                        e.backend,
                        e.images_per_s
                    );
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "ranking: no adapter passed the correctness check and ran"
                );
            }
        }
    }
    s
}

/// Under a batch row of a workload of several parts: its peak MiB (every part resident) and
/// the peak with one part at a time (`sample --offload parts`).
fn write_parts_peak(s: &mut String, r: &BatchResult) {
    if let Some(bytes) = r.parts_peak_bytes {
        let _ = writeln!(
            s,
            "        peak {:.1} MiB with every part resident; {:.1} MiB one part at a time ({}, --offload parts)",
            mib(r.peak_allocated_bytes),
            mib(bytes),
            r.parts_peak_phase.as_deref().unwrap_or("?")
        );
    }
}

/// One decode line: latency, rate, bands and memory.
fn render_decode(s: &mut String, batch: usize, d: &DecodeResult) {
    if let Some(e) = &d.error {
        let _ = writeln!(s, "  decode, batch {batch}: error: {e}");
        return;
    }
    let Some(t) = &d.decode_ms else {
        let _ = writeln!(
            s,
            "  decode, batch {batch}: plan only, {:.3} G MACs/image, {} dispatches, {} row band(s), activations {:.1} MiB",
            d.macs_per_image as f64 / 1e9,
            d.dispatches,
            d.bands,
            mib(d.activation_bytes)
        );
        return;
    };
    let _ = writeln!(
        s,
        "  decode, batch {batch}: median {:.2} ms (min {:.2}, max {:.2}), {:.2} images/s, {:.2} \
         GFLOP/s, {:.3} G MACs/image, {} dispatches, {} row band(s), activations {:.1} MiB, \
         build {:.2} s{}",
        t.median,
        t.min,
        t.max,
        d.images_per_s.unwrap_or(0.0),
        d.gflops_per_s.unwrap_or(0.0),
        d.macs_per_image as f64 / 1e9,
        d.dispatches,
        d.bands,
        mib(d.activation_bytes),
        d.graph_build_s,
        if d.output_finite == Some(false) {
            "  (output not finite!)"
        } else {
            ""
        }
    );
}

fn render_kernels(s: &mut String, what: &str, k: &KernelProfile) {
    let _ = writeln!(
        s,
        "  per-kernel time, {what} ({}, median of {} pass(es), one compute pass per \
         dispatch): total {:.2} ms",
        k.timing.name(),
        k.passes,
        k.total_ms
    );
    let _ = writeln!(
        s,
        "    {:<20} {:>10} {:>10} {:>7} {:>9} {:>8}",
        "family", "dispatches", "ms", "share", "GFLOP/s", "GB/s*"
    );
    for f in &k.families {
        let _ = writeln!(
            s,
            "    {:<20} {:>10} {:>10.3} {:>6.1}% {:>9.2} {:>8.2}",
            f.family,
            f.dispatches,
            f.ms,
            100.0 * f.share,
            f.gflops_per_s,
            f.gb_per_s
        );
    }
    let _ = writeln!(
        s,
        "    * bytes = sizes of the bound buffers, each counted once (a lower bound on traffic)"
    );
    let _ = writeln!(s, "    slowest dispatches:");
    for d in &k.top {
        let _ = writeln!(
            s,
            "      {:>9.3} ms {:>8.2} GFLOP/s  {}",
            d.ms,
            profile::rate(d.flops, d.ms),
            d.label
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the library's defaults, so `bench` with no flags measures what
    /// `BenchOptions::default()` describes.
    #[test]
    fn flag_defaults_match_the_library_defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["bench"]).expect("parse");
        assert_eq!(cli.bench.options(), BenchOptions::default());
        assert!(cli.bench.json.is_none());
        let cli = <Cli as clap::Parser>::try_parse_from([
            "bench",
            "--preset",
            "celebahq-256",
            "--batch",
            "2,4",
            "--runs",
            "3",
        ])
        .expect("parse");
        let options = cli.bench.options();
        assert_eq!(options.preset, Preset::CelebaHq256);
        assert_eq!(options.batch, vec![2, 4]);
        assert_eq!(options.runs, 3);
    }

    /// Every preset's CLI name is the name the JSON report records.
    #[test]
    fn preset_flag_names_are_the_report_names() {
        for arg in PresetArg::value_variants() {
            let name = arg
                .to_possible_value()
                .expect("named")
                .get_name()
                .to_owned();
            assert_eq!(name, Preset::from(*arg).name());
        }
    }
}
