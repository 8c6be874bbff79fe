//! The adapter benchmark behind `wgpu-diffusion bench`: U-Net forward latency and images/s per
//! adapter and batch (and, for a latent workload, the decoder's decode latency), per-kernel GPU time (timestamp queries, or a labelled wall-clock fallback)
//! with GFLOP/s, GB/s and share per kernel family, memory we allocated, pipeline build time, and a
//! correctness check that keeps an adapter computing garbage out of the ranking.
//!
//! This module measures and returns a [`BenchReport`]; the binary (`src/cli/bench.rs`) parses the
//! flags into [`BenchOptions`] and renders the report as a table. Flags below are the CLI's names
//! of the [`BenchOptions`] fields.
//!
//! # Timing rules
//!
//! - A forward pass is timed from recording + submitting its one command buffer until
//!   `device.poll(wait)` returns: the GPU work is complete before the clock stops. Inputs are
//!   written once beforehand and the output is not read back inside the timed region (a sampler
//!   reads back once per run, not per step).
//! - `--warmup` passes run first and are excluded; the reported latency is the median of `--runs`
//!   passes, with min and max.
//! - A latent workload (`--preset ldm-celebahq-256`, or a pipeline folder with a decoder) then
//!   times its decode the same way: `batch` latents of the U-Net's sample shape (deterministic
//!   uniform noise) through the decode graph (row bands when past the binding limit), `--warmup`
//!   untimed and `--runs` timed decodes, and with `--profile` the decode's own per-kernel table.
//! - A text-to-image workload (`--preset sd15-512`, `--preset sd-turbo-512`, or a
//!   `StableDiffusionPipeline` folder) runs its U-Net as sampling with classifier-free guidance
//!   does: `2 · batch` rows (prompt and negative prompt) against deterministic text embeddings of
//!   77 tokens, and also times the text encoder on `2 · batch` prompts (`text_encode`).
//!   `--height/--width` are the image's for latent workloads (the latents are ÷ the VAE factor);
//!   the presets default to 512×512, and on a CPU adapter a reduced size keeps a check short.
//! - `--profile` then records every dispatch in its own compute pass bracketed by timestamp
//!   queries (`TIMESTAMP_QUERY`), taking each dispatch's median over up to 3 passes. Separate
//!   passes add barriers, so the profiled total is usually above the plain forward latency;
//!   shares are of the profiled total. Without timestamp queries each dispatch is submitted and
//!   waited for alone (`"timing": "wall-clock"`), which includes launch overhead.
//! - GFLOP/s counts 2 FLOPs per multiply-add, as `Dispatch::flops` records them (the same count as
//!   `inspect`'s MACs). GB/s is an estimate: each dispatch is charged the sizes of the storage
//!   buffers it binds (inputs, weights, output) once — the traffic of a kernel with perfect
//!   on-chip reuse, so a lower bound on what a tiled kernel really moves.
//!
//! # JSON report ([`write_json`], `--json FILE`; written atomically: temp file + rename)
//!
//! ```text
//! {
//!   "schema": "wgpu-diffusion-bench/1",
//!   "version": "0.1.0",                     crate version
//!   "created_unix_s": 1732467000,
//!   "host": { "os": "linux", "arch": "x86_64", "cpus": 2 },
//!   "workload": {
//!     "name": "cifar10-32",                 preset name, "bundled", or the --model directory
//!     "random_weights": true, "seed": 0,
//!     "parameters": 35746307, "in_channels": 3, "height": 32, "width": 32,
//!     "batches": [1, 8], "warmup": 2, "runs": 10,
//!     "steps": null, "scheduler": null,     recorded as given
//!     "profile": true,
//!     "decoder": null | "VQModel" | "AutoencoderKL",   a latent workload's decoder class
//!     "decoder_parameters": null | 55322782,
//!     "text_encoder_parameters": null | 123060480,     a text-to-image workload's CLIP
//!     "model_rows_per_image": 1 | 2                   2: the U-Net runs with guidance
//!   },
//!   "adapters": [{
//!     "name": "...", "backend": "Vulkan", "device_type": "Cpu", "driver": "...", "driver_info": "...",
//!     "timestamp_queries": true,
//!     "kernels": "cpu" | "gpu",              the kernel shape run (see `gpu::shape`)
//!     "shader_checks": null | true | false,  naga's runtime checks (`--shader-checks`); null:
//!                                            the device did not open
//!     "tiles": "" | "fixed" | "adaptive",    the GPU-shaped GEMMs' tile policy
//!                                            (`WGPU_DIFFUSION_TILES`); "": did not open
//!     "status": "ok" | "WRONG" | "error",    WRONG: failed the correctness check (not ranked)
//!     "error": null | "message",
//!     "correctness": null | { "fixture": "google_flags", "status": "ok" | "WRONG", "ok": true,
//!                              "max_abs_err": 1e-7, "max_rel_err": 3e-7, "tolerance": 1e-4,
//!                              "detail": "..." },
//!     "load_s": 0.4,                        weights to the GPU (U-Net and decoder from_source)
//!     "weights_bytes": 142985228,           U-Net + decoder, f32
//!     "results": [{
//!       "batch": 8,
//!       "error": null | "message",           e.g. a buffer over the adapter's binding limit
//!       "graph_build_s": 0.9,                activations + pipelines + bind groups
//!       "pipelines_compiled": 14,            compiled by this build (cache misses)
//!       "pipelines_total": 14,               ctx.pipeline_count() after it
//!       "dispatches": 180,
//!       "flops_per_forward": 97000000000,    2 per multiply-add, whole batch
//!       "macs_per_image": 6070000000,        = inspect's MACs
//!       "activation_bytes": 60000000,
//!       "peak_allocated_bytes": 203000000,   every part's weights + activations resident at once
//!       "parts_peak_bytes": null | 3.9e9,    several parts: one part at a time (--offload parts)
//!       "parts_peak_phase": null | "U-Net sampling",   the phase that sets it
//!       "forward_ms": { "median": 812.0, "min": 800.1, "max": 830.2, "runs": [..] },
//!       "images_per_s": 9.85,
//!       "gflops_per_s": 119.4,               flops_per_forward / median
//!       "output_finite": true,
//!       "sampler_step": null | {             present when --steps or --scheduler was given
//!         "scheduler": "ddim" | null, "steps": 20,
//!         "per_step_ms": null | { "median", "min", "max", "runs" },   whole sampling run / steps
//!         "note": "..."                      what it includes, or why it was not measured
//!       },
//!       "text_encode": null | { "error": null | "message", "prompts": 16, "dispatches": ..,
//!                               "activation_bytes": .., "encode_ms": { "median", .. } },
//!       "decode": null | {                   a latent workload's decoder, same batch
//!         "error": null | "message", "bands": 1, "graph_build_s": 0.3, "dispatches": 80,
//!         "flops_per_decode": .., "macs_per_image": .., "activation_bytes": ..,
//!         "decode_ms": { "median", "min", "max", "runs" }, "images_per_s": .., "gflops_per_s": ..,
//!         "output_finite": true, "kernels": null | { same as "kernels" below }
//!       },
//!       "kernels": null | {
//!         "timing": "gpu-timestamp" | "wall-clock", "passes": 3, "total_ms": 850.0,
//!         "families": [{ "family": "conv2d", "dispatches": 60, "ms": 700.0, "share": 0.82,
//!                        "flops": .., "bytes": .., "gflops_per_s": .., "gb_per_s": .. }],
//!         "top": [{ "label": "conv2d/main: up_blocks.0.resnets.0.conv1", "family": "conv2d",
//!                   "ms": 40.0, "flops": .., "bytes": .. }]
//!       }
//!     }]
//!   }],
//!   "ranking": [{ "adapter": "...", "backend": "Vulkan", "batch": 8, "images_per_s": 9.85 }]
//! }
//! ```
//! `ranking` holds only adapters whose correctness check passed, best images/s first, at the
//! largest batch every ranked adapter completed.

pub mod correctness;
pub mod preset;
pub mod profile;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gpu::{self, GpuContext, GpuOptions};
use crate::model::autoencoder::AutoencoderGraph;
use crate::model::clip_text::CLIPTextModel;
use crate::sampling::engine::Denoiser;
use crate::sampling::latent::LatentDecoder;
use crate::sampling::memory::{Phase, PhaseMemory, PipelineMemory};
use crate::sampling::unet::{AnyGraph, UNet};

pub use correctness::Correctness;
pub use preset::{Preset, Workload};
pub use profile::{KernelProfile, TimingSource};

/// The `schema` field of the JSON report.
pub const SCHEMA: &str = "wgpu-diffusion-bench/1";

/// How many passes `--profile` times (each dispatch's median over them).
const PROFILE_PASSES: usize = 3;

/// The timestep every benchmarked forward pass uses (mid-schedule; the value does not change the
/// work done).
const BENCH_TIMESTEP: f32 = 500.0;

/// What to benchmark and how (the library side of `wgpu-diffusion bench`, whose flags carry the
/// same names: `runs` is `--runs`). `Default` is the CLI's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Workload when `model` is `None`: `Bundled` (weights/fashion-ddpm), or the exact
    /// architecture of google/ddpm-cifar10-32 or google/ddpm-celebahq-256 with deterministic
    /// random weights.
    pub preset: Preset,
    /// A diffusers UNet2DModel directory to benchmark instead of a preset.
    pub model: Option<PathBuf>,
    /// Batch sizes (each at least 1).
    pub batch: Vec<usize>,
    /// Timed forward passes per batch (the median is reported). 0: plan only — every graph is
    /// built (weights, activations, pipelines) and its memory reported, nothing runs (what a
    /// workload would need on an adapter too slow to run it).
    pub runs: usize,
    /// Untimed forward passes before timing.
    pub warmup: usize,
    /// Sampling steps for the sampler-step latency (model directories only; default 20).
    pub steps: Option<usize>,
    /// Sampler for the sampler-step latency (`ddim`, `euler`, …; default: the model's).
    pub scheduler: Option<String>,
    /// Benchmark every adapter wgpu can see (through the selected backends), not just one.
    pub all_adapters: bool,
    /// Per-kernel GPU time (timestamp queries where the adapter has them).
    pub profile: bool,
    /// With `profile`, time dispatches by the CPU clock even where timestamps exist.
    pub wall_clock: bool,
    /// Seed of the random preset weights and of the input.
    pub seed: u64,
    /// Resolution (`None`: the workload's `sample_size`); the image's for latent workloads.
    pub height: Option<usize>,
    pub width: Option<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            preset: Preset::Cifar10_32,
            model: None,
            batch: vec![1, 8],
            runs: 10,
            warmup: 2,
            steps: None,
            scheduler: None,
            all_adapters: false,
            profile: false,
            wall_clock: false,
            seed: 0,
            height: None,
            width: None,
        }
    }
}

/// The whole report (also the JSON document).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub schema: String,
    pub version: String,
    pub created_unix_s: u64,
    pub host: Host,
    pub workload: WorkloadInfo,
    pub adapters: Vec<AdapterReport>,
    pub ranking: Vec<RankEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub os: String,
    pub arch: String,
    pub cpus: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadInfo {
    pub name: String,
    pub random_weights: bool,
    pub seed: u64,
    pub parameters: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub batches: Vec<usize>,
    pub warmup: usize,
    pub runs: usize,
    pub steps: Option<usize>,
    pub scheduler: Option<String>,
    pub profile: bool,
    /// A latent workload's decoder class (`VQModel`, `AutoencoderKL`).
    pub decoder: Option<String>,
    /// Its parameter count, when it loaded.
    pub decoder_parameters: Option<usize>,
    /// A text-to-image workload's text encoder parameters, when it loaded.
    pub text_encoder_parameters: Option<usize>,
    /// U-Net rows per image: 2 for text-to-image workloads (guidance), else 1.
    pub model_rows_per_image: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub timestamp_queries: bool,
    /// The kernel shape the device ran (`gpu` or `cpu`, [`gpu::shape`]).
    pub kernels: String,
    /// Whether the shaders carried naga's runtime checks ([`GpuContext::shader_checks`];
    /// `None` when the device did not open).
    pub shader_checks: Option<bool>,
    /// The GPU-shaped GEMMs' tile policy ([`gpu::TilePolicy`]; empty when the device did not
    /// open).
    pub tiles: String,
    /// `ok`, `WRONG` (failed the correctness check) or `error` (could not run).
    pub status: String,
    pub error: Option<String>,
    pub correctness: Option<Correctness>,
    pub load_s: f64,
    pub weights_bytes: u64,
    pub results: Vec<BatchResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Stats {
    pub fn of(runs: Vec<f64>) -> Stats {
        let mut sorted = runs.clone();
        let median = profile::median(&mut sorted);
        Stats {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            runs,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    pub batch: usize,
    pub error: Option<String>,
    pub graph_build_s: f64,
    pub pipelines_compiled: usize,
    pub pipelines_total: usize,
    pub dispatches: usize,
    pub flops_per_forward: u64,
    pub macs_per_image: u64,
    pub activation_bytes: u64,
    pub peak_allocated_bytes: u64,
    /// A workload of several parts: the peak with one part on the GPU at a time
    /// (`sample --offload parts`), and the phase that sets it.
    pub parts_peak_bytes: Option<u64>,
    pub parts_peak_phase: Option<String>,
    /// The largest planned buffer (label, bytes) vs the adapter's binding limit.
    pub largest_buffer: String,
    pub largest_buffer_bytes: u64,
    pub forward_ms: Option<Stats>,
    pub images_per_s: Option<f64>,
    pub gflops_per_s: Option<f64>,
    pub output_finite: Option<bool>,
    pub sampler_step: Option<SamplerStep>,
    /// A latent workload's decode of this batch.
    pub decode: Option<DecodeResult>,
    /// A text-to-image workload's text encoder on this batch's prompts and negative prompts.
    pub text_encode: Option<TextEncodeResult>,
    pub kernels: Option<KernelProfile>,
}

/// The text encoder on `prompts` prompts (77 tokens each).
#[derive(Debug, Clone, Serialize)]
pub struct TextEncodeResult {
    pub error: Option<String>,
    pub prompts: usize,
    pub dispatches: usize,
    pub activation_bytes: u64,
    pub encode_ms: Option<Stats>,
}

/// The decode of one batch of latents.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeResult {
    pub error: Option<String>,
    /// Row bands the decode runs in (1: unsplit; more when an activation is past the binding
    /// limit).
    pub bands: usize,
    pub graph_build_s: f64,
    pub dispatches: usize,
    /// 2 per multiply-add, whole batch.
    pub flops_per_decode: u64,
    pub macs_per_image: u64,
    pub activation_bytes: u64,
    pub decode_ms: Option<Stats>,
    pub images_per_s: Option<f64>,
    pub gflops_per_s: Option<f64>,
    pub output_finite: Option<bool>,
    pub kernels: Option<KernelProfile>,
}

impl DecodeResult {
    fn failed(error: String) -> Self {
        DecodeResult {
            error: Some(error),
            bands: 0,
            graph_build_s: 0.0,
            dispatches: 0,
            flops_per_decode: 0,
            macs_per_image: 0,
            activation_bytes: 0,
            decode_ms: None,
            images_per_s: None,
            gflops_per_s: None,
            output_finite: None,
            kernels: None,
        }
    }
}

impl BatchResult {
    /// A plan-only result (`runs` 0): no error, nothing timed.
    fn planned(mut self) -> Self {
        self.error = None;
        self
    }

    fn failed(batch: usize, error: String) -> Self {
        BatchResult {
            batch,
            error: Some(error),
            graph_build_s: 0.0,
            pipelines_compiled: 0,
            pipelines_total: 0,
            dispatches: 0,
            flops_per_forward: 0,
            macs_per_image: 0,
            activation_bytes: 0,
            peak_allocated_bytes: 0,
            parts_peak_bytes: None,
            parts_peak_phase: None,
            largest_buffer: String::new(),
            largest_buffer_bytes: 0,
            forward_ms: None,
            images_per_s: None,
            gflops_per_s: None,
            output_finite: None,
            sampler_step: None,
            decode: None,
            text_encode: None,
            kernels: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RankEntry {
    pub adapter: String,
    pub backend: String,
    pub batch: usize,
    pub images_per_s: f64,
}

/// Measures without reporting progress. An adapter failing its correctness check is reported,
/// not an error; a workload that cannot be built is.
pub fn measure(args: &BenchOptions, opts: &GpuOptions) -> Result<BenchReport> {
    measure_with_progress(args, opts, &|_| {})
}

/// Measures, passing a one-line note to `progress` as each stage ends (the CLI prints them on
/// stderr).
pub fn measure_with_progress(
    args: &BenchOptions,
    opts: &GpuOptions,
    progress: &dyn Fn(&str),
) -> Result<BenchReport> {
    if args.batch.is_empty() || args.batch.contains(&0) {
        return Err(Error::invalid(
            "bench",
            format!(
                "batch (--batch) must list sizes of at least 1, got {:?}",
                args.batch
            ),
        ));
    }
    let note = |msg: String| progress(&msg);
    let start = Instant::now();
    let workload = match &args.model {
        Some(dir) => Workload::dir(dir)?,
        None => Workload::preset(args.preset, args.seed)?,
    };
    let cfg = &workload.config;
    let f = workload.decoder.as_ref().map_or(1, |d| d.config.upscale());
    for (flag, v) in [
        ("height (--height)", args.height),
        ("width (--width)", args.width),
    ] {
        if let Some(v) = v {
            if v == 0 || !v.is_multiple_of(f) {
                return Err(Error::invalid(
                    "bench",
                    format!(
                        "{flag} {v} is not a positive multiple of the workload's VAE factor {f} \
                         (the image's size; the latents are {f}x smaller)"
                    ),
                ));
            }
        }
    }
    let (height, width) = cfg.resolution(args.height.map(|v| v / f), args.width.map(|v| v / f));
    cfg.check_resolution(height, width)?;
    note(format!(
        "workload {} ready in {:.2} s",
        workload.name,
        start.elapsed().as_secs_f64()
    ));
    let contexts = contexts(args, opts)?;
    let mut adapters = Vec::new();
    let mut parameters = 0;
    let mut decoder_parameters = None;
    let mut text_encoder_parameters = None;
    for ctx in contexts {
        let ctx = match ctx {
            Ok(ctx) => ctx,
            Err(failed) => {
                let (summary, e) = *failed;
                adapters.push(adapter_error(&summary, e.to_string()));
                continue;
            }
        };
        note(format!("adapter {}", ctx.adapter.describe()));
        let report = bench_adapter(&ctx, &workload, args, (height, width), &note);
        if let Some((p, d, t)) = report.1 {
            parameters = p;
            decoder_parameters = decoder_parameters.or(d);
            text_encoder_parameters = text_encoder_parameters.or(t);
        }
        adapters.push(report.0);
    }
    let ranking = rank(&adapters);
    Ok(BenchReport {
        schema: SCHEMA.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        host: Host {
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
        },
        workload: WorkloadInfo {
            name: workload.name.clone(),
            random_weights: workload.random_weights,
            seed: args.seed,
            parameters,
            in_channels: cfg.in_channels(),
            height,
            width,
            batches: args.batch.clone(),
            warmup: args.warmup,
            runs: args.runs,
            steps: args.steps,
            scheduler: args.scheduler.clone(),
            profile: args.profile,
            decoder: workload.decoder.as_ref().map(|d| d.class().to_owned()),
            decoder_parameters,
            text_encoder_parameters,
            model_rows_per_image: rows_per_image(&workload),
        },
        adapters,
        ranking,
    })
}

type ContextResult = std::result::Result<Arc<GpuContext>, Box<(gpu::AdapterSummary, Error)>>;

/// The device of each adapter to benchmark: the one `opts` selects, or every adapter.
fn contexts(args: &BenchOptions, opts: &GpuOptions) -> Result<Vec<ContextResult>> {
    if !args.all_adapters {
        return Ok(vec![Ok(GpuContext::new(opts)?)]);
    }
    let summaries = gpu::enumerate(opts)?;
    if summaries.is_empty() {
        return Err(Error::NoAdapter {
            details: String::new(),
        });
    }
    let backends = summaries.iter().fold(wgpu::Backends::empty(), |acc, s| {
        acc | s.info.backend.into()
    });
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    Ok(adapters
        .iter()
        .map(|a| {
            GpuContext::open(a, opts).map_err(|e| {
                Box::new((
                    gpu::AdapterSummary {
                        info: a.get_info(),
                        limits: a.limits(),
                        features: a.features(),
                    },
                    e,
                ))
            })
        })
        .collect())
}

fn adapter_base(summary: &gpu::AdapterSummary) -> AdapterReport {
    let info = &summary.info;
    AdapterReport {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        timestamp_queries: summary.features.contains(wgpu::Features::TIMESTAMP_QUERY),
        kernels: String::new(),
        shader_checks: None,
        tiles: String::new(),
        status: "ok".to_owned(),
        error: None,
        correctness: None,
        load_s: 0.0,
        weights_bytes: 0,
        results: Vec::new(),
    }
}

fn adapter_error(summary: &gpu::AdapterSummary, error: String) -> AdapterReport {
    let mut r = adapter_base(summary);
    r.status = "error".to_owned();
    r.error = Some(error);
    r
}

/// Parameters of the U-Net, and of the decoder and text encoder when the workload has them.
type PartParameters = (usize, Option<usize>, Option<usize>);

/// Benchmarks the workload on one device. Errors land in the report, so one broken adapter does
/// not stop the others. Also returns the U-Net's (and decoder's) parameter count when it loaded.
fn bench_adapter(
    ctx: &Arc<GpuContext>,
    workload: &Workload,
    args: &BenchOptions,
    (height, width): (usize, usize),
    note: &dyn Fn(String),
) -> (AdapterReport, Option<PartParameters>) {
    let mut report = adapter_base(&ctx.adapter);
    report.kernels = ctx.kernel_shape().name().to_owned();
    report.shader_checks = Some(ctx.shader_checks());
    report.tiles = ctx.tile_policy().name().to_owned();
    // Load and build the workload first, so its pipeline compile time is not hidden by the
    // correctness fixture warming the pipeline cache.
    let start = Instant::now();
    let model = match UNet::from_source(ctx, &workload.config, &workload.weights)
        .and_then(|m| ctx.wait().map(|()| m))
    {
        Ok(model) => model,
        Err(e) => {
            report.status = "error".to_owned();
            report.error = Some(format!("loading {}: {e}", workload.name));
            return (report, None);
        }
    };
    let decoder = match workload.decoder.as_ref().map(|d| d.load(ctx)).transpose() {
        Ok(decoder) => decoder,
        Err(e) => {
            report.status = "error".to_owned();
            report.error = Some(format!("loading {}'s decoder: {e}", workload.name));
            return (report, None);
        }
    };
    let text_encoder = match workload
        .text
        .as_ref()
        .map(|t| CLIPTextModel::from_source(ctx, t.config.clone(), &t.weights))
        .transpose()
    {
        Ok(encoder) => encoder,
        Err(e) => {
            report.status = "error".to_owned();
            report.error = Some(format!("loading {}'s text encoder: {e}", workload.name));
            return (report, None);
        }
    };
    report.load_s = start.elapsed().as_secs_f64();
    let decoder_parameters = decoder.as_ref().map(LatentDecoder::parameters);
    let text_parameters = text_encoder.as_ref().map(|t| t.parameters);
    report.weights_bytes = (model.parameters()
        + decoder_parameters.unwrap_or(0)
        + text_parameters.unwrap_or(0)) as u64
        * 4;
    note(format!(
        "  loaded {} parameters{}{} in {:.2} s",
        model.parameters(),
        match decoder_parameters {
            Some(p) => format!(" (+ {p} in the decoder)"),
            None => String::new(),
        },
        match text_parameters {
            Some(p) => format!(" (+ {p} in the text encoder)"),
            None => String::new(),
        },
        report.load_s
    ));
    for &batch in &args.batch {
        let mut result = bench_batch(ctx, &model, workload, args, batch, height, width)
            .unwrap_or_else(|e| BatchResult::failed(batch, e.to_string()));
        // The batch's memory plan, phase by phase (a text workload's encode has 2 prompts per
        // image: prompt and negative prompt).
        let mut phases = vec![PhaseMemory {
            phase: Phase::Sampling,
            weights: model.parameters() as u64 * 4,
            activations: result.activation_bytes,
        }];
        if let (Some(encoder), Some(text), None) = (&text_encoder, &workload.text, &result.error) {
            let encode = bench_text_encode(ctx, encoder, args, 2 * batch, text.tokens);
            phases.push(PhaseMemory {
                phase: Phase::TextEncode,
                weights: encoder.parameters as u64 * 4,
                activations: encode.activation_bytes,
            });
            match (&encode.error, &encode.encode_ms) {
                (Some(e), _) => note(format!("  batch {batch} text encode: error: {e}")),
                (None, Some(t)) => note(format!(
                    "  batch {batch} text encode of {} prompts: median {:.2} ms",
                    encode.prompts, t.median
                )),
                _ => {}
            }
            result.text_encode = Some(encode);
        }
        match (&result.error, &result.forward_ms) {
            (Some(e), _) => note(format!("  batch {batch}: error: {e}")),
            (None, Some(t)) => note(format!("  batch {batch}: median {:.2} ms", t.median)),
            _ => {}
        }
        if let (Some(decoder), None) = (&decoder, &result.error) {
            let decode = bench_decode(ctx, decoder, args, batch, (height, width))
                .unwrap_or_else(|e| DecodeResult::failed(e.to_string()));
            phases.push(PhaseMemory {
                phase: Phase::Decode,
                weights: decoder.parameters() as u64 * 4,
                activations: decode.activation_bytes,
            });
            match (&decode.error, &decode.decode_ms) {
                (Some(e), _) => note(format!("  batch {batch} decode: error: {e}")),
                (None, Some(t)) => note(format!(
                    "  batch {batch} decode: median {:.2} ms ({} band(s))",
                    t.median, decode.bands
                )),
                _ => {}
            }
            result.decode = Some(decode);
        }
        if result.error.is_none() {
            let plan = PipelineMemory { phases };
            result.peak_allocated_bytes = plan.resident_peak();
            if plan.phases.len() > 1 {
                let (peak, phase) = plan.parts_peak();
                result.parts_peak_bytes = Some(peak);
                result.parts_peak_phase = phase.map(|p| p.name().to_owned());
            }
        }
        report.results.push(result);
    }
    let parameters = model.parameters();
    drop(model);
    drop(decoder);
    drop(text_encoder);
    match correctness::check_adapter(ctx) {
        Ok(c) => {
            if !c.ok {
                report.status = "WRONG".to_owned();
            }
            note(format!(
                "  correctness ({}): {} (max rel err {:.2e})",
                c.fixture, c.status, c.max_rel_err
            ));
            report.correctness = Some(c);
        }
        Err(e) => {
            report.status = "error".to_owned();
            report.error = Some(format!("correctness check: {e}"));
        }
    }
    (
        report,
        Some((parameters, decoder_parameters, text_parameters)),
    )
}

/// U-Net rows per image: text-to-image workloads run with guidance (prompt + negative prompt).
fn rows_per_image(workload: &Workload) -> usize {
    if workload.text.is_some() {
        2
    } else {
        1
    }
}

/// Times the text encoder on `prompts` prompts of `tokens` deterministic token ids.
fn bench_text_encode(
    ctx: &Arc<GpuContext>,
    encoder: &CLIPTextModel,
    args: &BenchOptions,
    prompts: usize,
    tokens: usize,
) -> TextEncodeResult {
    let mut result = TextEncodeResult {
        error: None,
        prompts,
        dispatches: 0,
        activation_bytes: 0,
        encode_ms: None,
    };
    let run = || -> Result<(usize, u64, Stats)> {
        let graph = encoder.graph(prompts, tokens)?;
        if args.runs == 0 {
            return Ok((
                graph.dispatches.len(),
                graph.memory.planned_bytes,
                Stats::of(Vec::new()),
            ));
        }
        let vocab = encoder.config.vocab_size.max(1) as u64;
        let mut rng = crate::model::weights::SplitMix64::new(args.seed.wrapping_add(0x7E47));
        let ids: Vec<Vec<u32>> = (0..prompts)
            .map(|_| {
                (0..tokens)
                    .map(|_| u32::try_from(rng.next_u64() % vocab).unwrap_or(0))
                    .collect()
            })
            .collect();
        for _ in 0..args.warmup {
            graph.forward(encoder, &ids)?;
        }
        let mut runs = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let t = Instant::now();
            graph.forward(encoder, &ids)?;
            runs.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ctx.wait()?;
        Ok((
            graph.dispatches.len(),
            graph.memory.planned_bytes,
            Stats::of(runs),
        ))
    };
    match run() {
        Ok((dispatches, bytes, stats)) => {
            result.dispatches = dispatches;
            result.activation_bytes = bytes;
            result.encode_ms = (!stats.runs.is_empty()).then_some(stats);
        }
        Err(e) => result.error = Some(e.to_string()),
    }
    result
}

/// The deterministic decode input: uniform latents in [-1, 1) of the U-Net's sample shape.
fn decode_inputs(graph: &AutoencoderGraph, seed: u64) -> Vec<f32> {
    let mut rng = crate::model::weights::SplitMix64::new(seed.wrapping_add(0xDEC0DE));
    (0..graph.input.numel()).map(|_| rng.symmetric()).collect()
}

/// Times the decode of `batch` latents of `latent` size: graph build, warm-up, timed runs, and
/// the per-kernel profile when asked.
fn bench_decode(
    ctx: &Arc<GpuContext>,
    decoder: &LatentDecoder,
    args: &BenchOptions,
    batch: usize,
    (height, width): (usize, usize),
) -> Result<DecodeResult> {
    let start = Instant::now();
    let graph = decoder.decode_graph(batch, height, width)?;
    ctx.wait()?;
    let graph_build_s = start.elapsed().as_secs_f64();
    if args.runs == 0 {
        return Ok(DecodeResult {
            error: None,
            bands: graph.bands,
            graph_build_s,
            dispatches: graph.dispatches.len(),
            flops_per_decode: graph.flops(),
            macs_per_image: graph.flops() / 2 / batch as u64,
            activation_bytes: graph.memory.planned_bytes,
            ..DecodeResult::failed(String::new())
        });
    }
    graph.input.write(ctx, &decode_inputs(&graph, args.seed))?;
    for _ in 0..args.warmup {
        graph.submit()?;
        ctx.wait()?;
    }
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        graph.submit()?;
        ctx.wait()?;
        runs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let timed = Stats::of(runs);
    let output = graph.output.read(ctx)?;
    let flops = graph.flops();
    let kernels = if args.profile {
        Some(profile::profile(
            ctx,
            &graph.dispatches,
            PROFILE_PASSES.min(args.runs),
            args.wall_clock,
        )?)
    } else {
        None
    };
    let seconds = timed.median / 1e3;
    Ok(DecodeResult {
        error: None,
        bands: graph.bands,
        graph_build_s,
        dispatches: graph.dispatches.len(),
        flops_per_decode: flops,
        macs_per_image: flops / 2 / batch as u64,
        activation_bytes: graph.memory.planned_bytes,
        images_per_s: (seconds > 0.0).then(|| batch as f64 / seconds),
        gflops_per_s: (seconds > 0.0).then(|| flops as f64 / seconds / 1e9),
        decode_ms: Some(timed),
        output_finite: Some(output.iter().all(|v| v.is_finite())),
        kernels,
    })
}

/// The deterministic bench input: uniform noise in [-1, 1), timestep 500, labels `i % classes`,
/// and uniform text embeddings in [-1, 1) for a text-conditioned U-Net.
type BenchInputs = (Vec<f32>, Vec<f32>, Option<Vec<usize>>, Option<Vec<f32>>);

fn bench_inputs(graph: &AnyGraph, classes: Option<usize>, seed: u64) -> BenchInputs {
    let rows = graph.batch();
    let numel = graph.input().numel();
    let mut rng = crate::model::weights::SplitMix64::new(seed.wrapping_add(0x5EED));
    let sample = (0..numel).map(|_| rng.symmetric()).collect();
    let timesteps = vec![BENCH_TIMESTEP; rows];
    let labels = classes.map(|n| (0..rows).map(|i| i % n.max(1)).collect());
    let context = match graph {
        AnyGraph::Text(g) => Some(
            (0..g.encoder_hidden_states.numel())
                .map(|_| rng.symmetric())
                .collect(),
        ),
        AnyGraph::Plain(_) => None,
    };
    (sample, timesteps, labels, context)
}

fn bench_batch(
    ctx: &Arc<GpuContext>,
    model: &UNet,
    workload: &Workload,
    args: &BenchOptions,
    batch: usize,
    height: usize,
    width: usize,
) -> Result<BatchResult> {
    let pipelines_before = ctx.pipeline_count();
    let start = Instant::now();
    let tokens = workload.text.as_ref().map_or(0, |t| t.tokens);
    let graph = model.graph(batch * rows_per_image(workload), height, width, tokens)?;
    ctx.wait()?;
    let graph_build_s = start.elapsed().as_secs_f64();
    let pipelines_total = ctx.pipeline_count();
    let (sample, timesteps, labels, context) =
        bench_inputs(&graph, workload.config.num_class_embeds(), args.seed);
    graph.write_inputs(&sample, &timesteps, labels.as_deref(), context.as_deref())?;
    let submit = || -> Result<()> {
        let refs: Vec<&crate::gpu::Dispatch> = graph.dispatches().iter().collect();
        ctx.submit(&refs)?;
        ctx.wait()
    };
    let (label, bytes) = graph.memory().largest.clone();
    if args.runs == 0 {
        return Ok(BatchResult {
            graph_build_s,
            pipelines_compiled: pipelines_total - pipelines_before.min(pipelines_total),
            pipelines_total,
            dispatches: graph.dispatches().len(),
            flops_per_forward: graph.flops(),
            macs_per_image: graph.flops() / 2 / batch as u64,
            activation_bytes: graph.memory().planned_bytes,
            peak_allocated_bytes: model.parameters() as u64 * 4 + graph.memory().planned_bytes,
            parts_peak_bytes: None,
            parts_peak_phase: None,
            largest_buffer: label,
            largest_buffer_bytes: bytes,
            ..BatchResult::failed(batch, String::new())
        }
        .planned());
    }
    for _ in 0..args.warmup {
        submit()?;
    }
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        submit()?;
        runs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let forward = Stats::of(runs);
    let output = graph.output().read(ctx)?;
    let flops = graph.flops();
    let kernels = if args.profile {
        Some(profile::profile(
            ctx,
            graph.dispatches(),
            PROFILE_PASSES.min(args.runs),
            args.wall_clock,
        )?)
    } else {
        None
    };
    let seconds = forward.median / 1e3;
    Ok(BatchResult {
        batch,
        error: None,
        graph_build_s,
        pipelines_compiled: pipelines_total - pipelines_before.min(pipelines_total),
        pipelines_total,
        dispatches: graph.dispatches().len(),
        flops_per_forward: flops,
        macs_per_image: flops / 2 / batch as u64,
        activation_bytes: graph.memory().planned_bytes,
        peak_allocated_bytes: model.parameters() as u64 * 4 + graph.memory().planned_bytes,
        parts_peak_bytes: None,
        parts_peak_phase: None,
        largest_buffer: label,
        largest_buffer_bytes: bytes,
        images_per_s: (seconds > 0.0).then(|| batch as f64 / seconds),
        gflops_per_s: (seconds > 0.0).then(|| flops as f64 / seconds / 1e9),
        forward_ms: Some(forward),
        output_finite: Some(output.iter().all(|v| v.is_finite())),
        sampler_step: sampler_step_latency(ctx, workload, args, batch),
        decode: None,
        text_encode: None,
        kernels,
    })
}

/// The sampler-step measurement of one batch (present when `--steps` or `--scheduler` was given).
#[derive(Debug, Clone, Serialize)]
pub struct SamplerStep {
    /// The sampler's CLI name (`ddim`, `euler`, …), or the scheduler config's default.
    pub scheduler: Option<String>,
    pub steps: usize,
    /// Wall time of a whole sampling run (noise, every step, one readback) divided by `steps`:
    /// median, min, max over the runs.
    pub per_step_ms: Option<Stats>,
    /// Why nothing was measured, or what the number includes.
    pub note: String,
}

/// Latency of one sampler step (UNet forward + the `sampler_step` update kernel) for
/// `--scheduler` / `--steps` at `batch` images: times whole `Pipeline::sample` runs of a model
/// directory (one warm-up, then up to 3 timed runs) and divides by the step count. Random-weight
/// presets have no scheduler config, so they report why nothing was measured instead of a number.
pub fn sampler_step_latency(
    ctx: &Arc<GpuContext>,
    workload: &Workload,
    args: &BenchOptions,
    batch: usize,
) -> Option<SamplerStep> {
    if args.steps.is_none() && args.scheduler.is_none() {
        return None;
    }
    let steps = args.steps.unwrap_or(20);
    let mut result = SamplerStep {
        scheduler: args.scheduler.clone(),
        steps,
        per_step_ms: None,
        note: String::new(),
    };
    let Some(dir) = &workload.dir else {
        result.note = "not measured: a random-weight preset has no scheduler config; use \
                       --model DIR or --preset bundled"
            .to_owned();
        return Some(result);
    };
    match time_sampling(ctx, dir, args, batch, steps) {
        Ok(stats) => {
            result.per_step_ms = Some(stats);
            result.note = "whole sampling run (init noise, all steps, one readback) / steps".into();
        }
        Err(e) => result.note = format!("not measured: {e}"),
    }
    Some(result)
}

fn time_sampling(
    ctx: &Arc<GpuContext>,
    dir: &Path,
    args: &BenchOptions,
    batch: usize,
    steps: usize,
) -> Result<Stats> {
    use crate::sampling::{Pipeline, SampleOptions};
    use crate::schedule::SchedulerKind;
    let scheduler = match &args.scheduler {
        None => None,
        Some(name) => Some(
            SchedulerKind::ALL
                .iter()
                .copied()
                .find(|k| k.cli_name().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        SchedulerKind::ALL.iter().map(|k| k.cli_name()).collect();
                    Error::invalid(
                        "--scheduler",
                        format!(
                            "unknown sampler {name:?}; expected one of {}",
                            names.join(", ")
                        ),
                    )
                })?,
        ),
    };
    let pipeline = Pipeline::load_with(ctx, dir)?;
    let options = SampleOptions {
        scheduler,
        steps,
        seed: args.seed,
        num_images: batch,
        ..SampleOptions::default()
    };
    pipeline.sample(&options)?;
    let mut runs = Vec::new();
    for _ in 0..args.runs.clamp(1, 3) {
        let start = Instant::now();
        pipeline.sample(&options)?;
        runs.push(start.elapsed().as_secs_f64() * 1e3 / steps as f64);
    }
    Ok(Stats::of(runs))
}

/// Adapters that passed the correctness check, best first, at the largest batch they all ran.
fn rank(adapters: &[AdapterReport]) -> Vec<RankEntry> {
    let ranked: Vec<&AdapterReport> = adapters.iter().filter(|a| a.status == "ok").collect();
    let common_batch = ranked
        .iter()
        .map(|a| {
            a.results
                .iter()
                .filter(|r| r.images_per_s.is_some())
                .map(|r| r.batch)
                .collect::<std::collections::BTreeSet<_>>()
        })
        .reduce(|acc, s| acc.intersection(&s).copied().collect())
        .and_then(|s| s.last().copied());
    let Some(batch) = common_batch else {
        return Vec::new();
    };
    let mut entries: Vec<RankEntry> = ranked
        .iter()
        .filter_map(|a| {
            let r = a.results.iter().find(|r| r.batch == batch)?;
            Some(RankEntry {
                adapter: a.name.clone(),
                backend: a.backend.clone(),
                batch,
                images_per_s: r.images_per_s?,
            })
        })
        .collect();
    entries.sort_by(|a, b| b.images_per_s.total_cmp(&a.images_per_s));
    entries
}

/// Writes the report as pretty JSON to `path` atomically (a temp file beside it, then rename).
pub fn write_json(report: &BenchReport, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::invalid("bench JSON", e.to_string()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bench.json".to_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
