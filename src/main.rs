//! The `wgpu-diffusion` command line (the default `cli` feature): `sample` generates images,
//! `bench` measures adapters, `adapters` lists what wgpu can see, `inspect` summarises a model
//! (parameters, MACs, memory vs the adapter's limits), `encode-prompt` runs the CLIP tokenizer and
//! text encoder. clap, indicatif and anyhow live in the binary only (here and `src/cli/`); the
//! library never sees them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use wgpu_diffusion::gpu::planner::default_memory_budget;
use wgpu_diffusion::gpu::{self, GpuContext, GpuOptions};
use wgpu_diffusion::model::autoencoder::DecodeOptions;
use wgpu_diffusion::model::clip_text::PromptEncoder;
use wgpu_diffusion::model::unet_2d::UNet2DModel;
use wgpu_diffusion::model::unet_2d_condition::UNet2DConditionModel;
use wgpu_diffusion::sampling::engine::Denoiser;
use wgpu_diffusion::sampling::{
    LatentDecoder, LoadOptions, Offload, Pipeline, SampleOptions, UNet,
};
use wgpu_diffusion::Error;

mod cli;

#[derive(Parser)]
#[command(
    name = "wgpu-diffusion",
    version,
    about = "Diffusion U-Nets on any GPU through wgpu"
)]
struct Cli {
    /// Adapter name substring (overrides WGPU_ADAPTER_NAME).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Backends to consider: vulkan, metal, dx12, gl (comma list; overrides WGPU_BACKEND).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Neither read nor write the on-disk pipeline cache (Vulkan; by default
    /// $XDG_CACHE_HOME/wgpu-diffusion or ~/.cache/wgpu-diffusion; WGPU_DIFFUSION_PIPELINE_CACHE
    /// names another directory, or `off`).
    #[arg(long, global = true)]
    no_pipeline_cache: bool,
    /// Kernel family: `auto` (CPU-shaped kernels on a CPU adapter with 8-lane subgroups, such as
    /// lavapipe; GPU-shaped elsewhere), `gpu` or `cpu` (overrides WGPU_DIFFUSION_KERNELS). Both
    /// give bit-identical images.
    #[arg(long, global = true, value_name = "SHAPE")]
    kernels: Option<String>,
    /// Shader runtime checks (naga's): `on` (default) or `off` (overrides
    /// WGPU_DIFFUSION_SHADER_CHECKS). `off` drops the index clamps, buffer bounds checks (Metal,
    /// DX12), loop bounding and integer-division guards; every index in our shaders is guarded
    /// explicitly, and both give bit-identical images.
    #[arg(long, global = true, value_name = "on|off")]
    shader_checks: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images: the whole sampling loop runs on the GPU, one readback per batch.
    Sample(Box<cli::sample::SampleArgs>),
    /// Benchmark adapters: forward latency, per-kernel GPU time, correctness vs diffusers.
    Bench(Box<cli::bench::BenchArgs>),
    /// Tokenize prompts and encode them with a pipeline's CLIP text encoder (`prompt_embeds`).
    EncodePrompt(Box<cli::encode_prompt::EncodePromptArgs>),
    /// List every adapter wgpu can see, with the limits and features that matter here.
    Adapters {
        /// Exit with status 3 when no adapter exists (used by `make` to install lavapipe).
        #[arg(long)]
        check: bool,
    },
    /// Summarise a diffusers UNet2DModel directory: architecture, parameters, MACs, memory.
    Inspect {
        /// Directory holding config.json and diffusion_pytorch_model.safetensors.
        #[arg(long)]
        model: PathBuf,
        /// Batch size for the activation-memory estimate.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Height (default: the config's sample_size).
        #[arg(long)]
        height: Option<usize>,
        /// Width (default: the config's sample_size).
        #[arg(long)]
        width: Option<usize>,
        /// Plan a latent pipeline's decode against this binding limit (bytes) instead of the
        /// adapter's, as `sample --decode-binding-limit` does.
        #[arg(
            long,
            value_name = "BYTES",
            env = "WGPU_DIFFUSION_DECODE_BINDING_LIMIT"
        )]
        decode_binding_limit: Option<u64>,
        /// Where the parts live: `auto` (every part resident when one default-size image
        /// plans within the memory budget that way, else `parts`), `off` (every part
        /// resident), `parts` (one part on the GPU at a time), as `sample --offload`.
        #[arg(long, default_value = "auto", value_name = "auto|off|parts")]
        offload: Offload,
        /// The memory budget in MiB that `--offload auto` judges (default: the adapter's).
        #[arg(long, value_name = "MIB")]
        memory_budget: Option<u64>,
    },
}

fn gpu_options(cli: &Cli) -> GpuOptions {
    let mut options = GpuOptions::from_env();
    if cli.adapter.is_some() {
        options.adapter_name = cli.adapter.clone();
    }
    if cli.backend.is_some() {
        options.backends = cli.backend.clone();
    }
    if cli.kernels.is_some() {
        options.kernels = cli.kernels.clone();
    }
    if cli.shader_checks.is_some() {
        options.shader_checks = cli.shader_checks.clone();
    }
    if cli.no_pipeline_cache {
        options.pipeline_cache_dir = None;
    }
    options
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn adapters(cli: &Cli, check: bool) -> Result<ExitCode> {
    let options = gpu_options(cli);
    let list = gpu::enumerate(&options)?;
    if list.is_empty() {
        let err = Error::NoAdapter {
            details: String::new(),
        };
        eprintln!("error: {err}");
        return Ok(ExitCode::from(if check { 3 } else { 1 }));
    }
    let infos: Vec<wgpu::AdapterInfo> = list.iter().map(|a| a.info.clone()).collect();
    let default = gpu::choose(&infos, &options)?;
    let checks = if options.parse_shader_checks()? {
        "on (naga's defaults; --shader-checks off builds without them)"
    } else {
        "off (no index clamps, buffer bounds checks, loop bounding or division guards)"
    };
    let tiles_what = "GEMM tile policy (WGPU_DIFFUSION_TILES)";
    // A bad value is refused before anything is printed.
    gpu::TilePolicy::parse(
        tiles_what,
        options.tiles.as_deref(),
        wgpu::DeviceType::Other,
    )?;
    for (i, a) in list.iter().enumerate() {
        let info = &a.info;
        let l = &a.limits;
        let mark = if default == Some(i) {
            "  (default: sample, bench and the tests use this one)"
        } else {
            ""
        };
        println!("[{i}] {}{mark}", info.name);
        println!(
            "    backend {:?}, type {:?}, vendor 0x{:04x}, device 0x{:04x}",
            info.backend, info.device_type, info.vendor, info.device
        );
        println!("    driver {} ({})", info.driver, info.driver_info);
        println!(
            "    max storage binding {}, max buffer {}, workgroups/dim {}, invocations/workgroup {}, workgroup storage {} B",
            mib(l.max_storage_buffer_binding_size),
            mib(l.max_buffer_size),
            l.max_compute_workgroups_per_dimension,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_storage_size
        );
        println!(
            "    shader-f16 {}, timestamp queries {}",
            yes(a.features.contains(wgpu::Features::SHADER_F16)),
            yes(a.features.contains(wgpu::Features::TIMESTAMP_QUERY))
        );
        let shape = match gpu::KernelChoice::Auto.resolve(a) {
            Ok(gpu::KernelShape::Cpu) => "cpu-shaped (subgroup broadcasts, no barriers)".to_owned(),
            _ => match gpu::shape::cpu_shape_unsupported(a) {
                Some(why) => format!("gpu-shaped (no cpu shape: {why})"),
                None => "gpu-shaped (cpu shape available: --kernels cpu)".to_owned(),
            },
        };
        let tiles = gpu::TilePolicy::parse(tiles_what, options.tiles.as_deref(), info.device_type)?;
        println!("    kernels {shape}");
        println!(
            "    gpu-shaped GEMM tiles {} (WGPU_DIFFUSION_TILES=auto|fixed|adaptive)",
            tiles.name()
        );
        println!("    shader runtime checks {checks}");
    }
    Ok(ExitCode::SUCCESS)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn inspect(
    cli: &Cli,
    dir: &Path,
    (batch, height, width): (usize, Option<usize>, Option<usize>),
    decode: &DecodeOptions,
    load: &LoadOptions,
) -> Result<ExitCode> {
    let ctx: Arc<GpuContext> = GpuContext::new(&gpu_options(cli))?;
    let pipeline = Pipeline::load_with_options(&ctx, dir, load)
        .with_context(|| format!("loading model {}", dir.display()))?;
    // A latent pipeline's --height/--width are the image's.
    let f = pipeline.upscale();
    let (h, w) = pipeline
        .unet_config
        .resolution(height.map(|v| v / f), width.map(|v| v / f));
    println!("model        {}", dir.display());
    println!("adapter      {}", ctx.adapter.describe());
    {
        let model = pipeline.unet()?;
        match &*model {
            UNet::Plain(m) => describe_unet_2d(m, h, w),
            UNet::Text(m) => describe_unet_2d_condition(m, h, w),
        }
        let graph = model.graph(batch, h, w, pipeline.context_tokens())?;
        let macs = graph.flops() / 2 / batch as u64;
        println!(
            "parameters   {} ({:.2} M)",
            model.parameters(),
            model.parameters() as f64 / 1e6
        );
        println!(
            "MACs         {:.3} G per image per forward ({} dispatches per forward)",
            macs as f64 / 1e9,
            graph.dispatches().len()
        );
        println!(
            "weights      {} on the GPU (f32)",
            mib(model.parameters() as u64 * 4)
        );
        let memory = graph.memory();
        println!(
            "activations  {} planned at batch {batch} ({} per image, {} buffers; one buffer per op would be {}, {:.1}x more)",
            mib(memory.planned_bytes),
            mib(memory.planned_bytes / batch as u64),
            memory.buffers,
            mib(memory.unplanned_bytes),
            memory.unplanned_bytes as f64 / memory.planned_bytes.max(1) as f64
        );
        let limit = ctx.max_binding_bytes();
        let (label, bytes) = &memory.largest;
        println!(
            "largest      {label}: {} vs binding limit {} ({:.1}% of it)",
            mib(*bytes),
            mib(limit),
            100.0 * *bytes as f64 / limit as f64
        );
    }
    // One part on the GPU at a time when offloaded.
    pipeline.release_parts();
    if let Some(encoder) = pipeline.prompt_encoder()? {
        print_text_encoder(&encoder, &ctx)?;
    }
    pipeline.release_parts();
    if let Some(decoder) = pipeline.decoder()? {
        print_decoder(&decoder, &ctx, (h, w), decode)?;
    }
    pipeline.release_parts();
    if pipeline.decoder_config.is_some() || pipeline.text_config.is_some() {
        print_memory_plan(&pipeline, batch, (h, w), decode, load)?;
    }
    print_auto_batch(&pipeline, h, w, decode)?;
    println!("pipelines    {} compiled", ctx.pipeline_count());
    Ok(ExitCode::SUCCESS)
}

/// Options that make a run at `images` per batch of `h`×`w` (latent) pixels, with guidance
/// where the model has it when `guided`.
fn plan_options(
    pipeline: &Pipeline,
    (h, w): (usize, usize),
    images: usize,
    guided: bool,
    decode: &DecodeOptions,
) -> SampleOptions {
    let cfg = &pipeline.unet_config;
    let f = pipeline.upscale();
    let text = cfg.context_dim().is_some();
    let scale = if text { 7.5 } else { 2.0 };
    SampleOptions {
        num_images: images,
        steps: 1,
        height: Some(h * f),
        width: Some(w * f),
        class_labels: cfg.num_class_embeds().map(|_| vec![0]),
        prompts: text.then(|| vec![String::new()]),
        // Unguided: 1.0 turns a text pipeline's default 7.5 off; others take none.
        guidance_scale: if guided {
            Some(scale)
        } else {
            text.then_some(1.0)
        },
        decode_binding_limit: decode.binding_limit,
        ..SampleOptions::default()
    }
}

/// A latent or text-to-image pipeline's memory, phase by phase, every part resident and one
/// part at a time, and which of the two `sample` runs with.
fn print_memory_plan(
    pipeline: &Pipeline,
    batch: usize,
    size: (usize, usize),
    decode: &DecodeOptions,
    load: &LoadOptions,
) -> Result<()> {
    let guided = pipeline.text_config.is_some();
    let options = plan_options(pipeline, size, batch, guided, decode);
    let spec = pipeline.prepare(&options)?;
    let plan = pipeline.memory(&spec, batch)?.ok_or_else(|| {
        anyhow::anyhow!("batch {batch} passes the adapter's binding limit; try --batch 1")
    })?;
    println!(
        "memory plan  at batch {batch}{}: weights + activations per phase",
        if guided {
            " with guidance (2 U-Net rows per image)"
        } else {
            ""
        }
    );
    for p in &plan.phases {
        println!(
            "  {:<15} {} + {} = {}",
            p.phase.name(),
            mib(p.weights),
            mib(p.activations),
            mib(p.total())
        );
    }
    let (peak, phase) = plan.parts_peak();
    let budget = load
        .memory_budget
        .unwrap_or_else(|| default_memory_budget(&pipeline.context().adapter));
    println!(
        "  every part resident {} (all weights {}); one part at a time {}{}",
        mib(plan.resident_peak()),
        mib(plan.weights()),
        mib(peak),
        phase.map_or(String::new(), |p| format!(" ({})", p.name()))
    );
    println!(
        "offload      {} (--offload {}; memory budget {})",
        match pipeline.offload() {
            Offload::Parts => "parts: each phase uploads its part and frees it after",
            _ => "off: every part resident",
        },
        load.offload,
        mib(budget)
    );
    Ok(())
}

/// A `UNet2DModel`'s structure.
fn describe_unet_2d(model: &UNet2DModel, h: usize, w: usize) {
    let cfg = &model.config;
    println!(
        "in/out       {} -> {} channels, sample {}x{}{}",
        cfg.in_channels,
        cfg.out_channels,
        h,
        w,
        if cfg.center_input_sample {
            ", center_input_sample"
        } else {
            ""
        }
    );
    println!(
        "time         sinusoidal dim {} (flip_sin_to_cos {}, freq_shift {}), embedding {}",
        cfg.block_out_channels[0],
        cfg.flip_sin_to_cos,
        cfg.freq_shift,
        cfg.time_embed_dim()
    );
    if let Some(n) = cfg.num_class_embeds {
        println!("classes      {n} (class_embedding lookup added to the time embedding)");
    }
    println!(
        "norm         {} groups, eps {:e}; downsample_padding {}; layers_per_block {}",
        cfg.norm_num_groups, cfg.norm_eps, cfg.downsample_padding, cfg.layers_per_block
    );
    let mut res = (h, w);
    for (i, (kind, c)) in cfg
        .down_block_types
        .iter()
        .zip(&cfg.block_out_channels)
        .enumerate()
    {
        let attn = if matches!(
            kind,
            wgpu_diffusion::model::unet_2d::config::DownBlock::AttnDown
        ) {
            format!(
                ", attention {} head(s) x {}",
                cfg.num_heads(*c),
                cfg.head_dim(*c)
            )
        } else {
            String::new()
        };
        println!(
            "down {i}       {kind:?} {c} ch at {}x{}{attn}",
            res.0, res.1
        );
        if i + 1 < cfg.block_out_channels.len() {
            res = (res.0 / 2, res.1 / 2);
        }
    }
    if let Some(mid) = &model.mid_block {
        let attn = match mid.attentions.first() {
            Some(a) => format!("attention {} head(s) x {}", a.heads, a.head_dim),
            None => "no attention".to_string(),
        };
        println!(
            "mid          {} ch at {}x{}, {attn}",
            cfg.block_out_channels[cfg.block_out_channels.len() - 1],
            res.0,
            res.1
        );
    }
    let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
    for (i, (kind, c)) in cfg.up_block_types.iter().zip(&rev).enumerate() {
        println!("up {i}         {kind:?} {c} ch at {}x{}", res.0, res.1);
        if i + 1 < rev.len() {
            res = (res.0 * 2, res.1 * 2);
        }
    }
}

/// A `UNet2DConditionModel`'s structure.
fn describe_unet_2d_condition(model: &UNet2DConditionModel, h: usize, w: usize) {
    let cfg = &model.config;
    println!(
        "in/out       {} -> {} latent channels, sample {h}x{w}; text context {} wide",
        cfg.in_channels,
        cfg.out_channels,
        cfg.context_dim()
    );
    println!(
        "time         sinusoidal dim {} (flip_sin_to_cos {}, freq_shift {}), embedding {}",
        cfg.block_out_channels[0],
        cfg.flip_sin_to_cos,
        cfg.freq_shift,
        cfg.time_embed_dim()
    );
    println!(
        "norm         {} groups, eps {:e}; {} projections{}",
        cfg.norm_num_groups,
        cfg.norm_eps,
        if cfg.use_linear_projection {
            "linear"
        } else {
            "1x1 conv"
        },
        if cfg.upcast_attention {
            "; upcast_attention (f32 anyway)"
        } else {
            ""
        }
    );
    let mut res = (h, w);
    let describe = |s: &wgpu_diffusion::model::unet_2d_condition::config::BlockSettings,
                    c: usize| {
        if s.cross_attention {
            format!(
                ", {} transformer layer(s) of {} head(s) x {}{}",
                s.transformer_layers,
                s.heads,
                c / s.heads.max(1),
                if s.only_cross_attention {
                    " (only cross-attention)"
                } else {
                    ""
                }
            )
        } else {
            String::new()
        }
    };
    for (i, c) in cfg.block_out_channels.iter().enumerate() {
        let s = cfg.down_block(i);
        println!(
            "down {i}       {:?} {c} ch at {}x{}, {} resnet(s){}",
            cfg.down_block_types[i],
            res.0,
            res.1,
            s.layers,
            describe(&s, *c)
        );
        if i + 1 < cfg.block_out_channels.len() {
            res = (res.0 / 2, res.1 / 2);
        }
    }
    let last = cfg.block_out_channels[cfg.block_out_channels.len() - 1];
    if model.mid_block.is_some() {
        println!(
            "mid          UNetMidBlock2DCrossAttn {last} ch at {}x{}{}",
            res.0,
            res.1,
            describe(&cfg.mid_block(), last)
        );
    }
    let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
    for (i, c) in rev.iter().enumerate() {
        let s = cfg.up_block(i);
        println!(
            "up {i}         {:?} {c} ch at {}x{}, {} resnet(s){}",
            cfg.up_block_types[i],
            res.0,
            res.1,
            s.layers,
            describe(&s, *c)
        );
        if i + 1 < rev.len() {
            res = (res.0 * 2, res.1 * 2);
        }
    }
}

/// A text-to-image pipeline's prompt encoder: parameters and the plan of encoding one prompt and
/// its negative prompt. Returns its weights plus that plan, in bytes.
fn print_text_encoder(encoder: &PromptEncoder, ctx: &GpuContext) -> Result<()> {
    let cfg = &encoder.text_encoder.config;
    let tokens = encoder.tokenizer.model_max_length();
    let params = encoder.text_encoder.parameters as u64;
    let memory = encoder.text_encoder.plan_memory(2, tokens)?;
    let (label, bytes) = &memory.largest;
    println!(
        "text encoder CLIPTextModel {} layers x {} wide ({}), {tokens} tokens; {} parameters ({} f32); encode of 2 prompts plans {}, largest {label}: {} vs binding limit {}",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.hidden_act.name(),
        params,
        mib(params * 4),
        mib(memory.planned_bytes),
        mib(*bytes),
        mib(ctx.max_binding_bytes())
    );
    Ok(())
}

/// A latent pipeline's decoder: class, output, parameters, MACs and memory of one decode.
/// Returns its weights plus one decode's plan, in bytes.
fn print_decoder(
    decoder: &LatentDecoder,
    ctx: &GpuContext,
    (latent_h, latent_w): (usize, usize),
    options: &DecodeOptions,
) -> Result<()> {
    let class = match decoder {
        LatentDecoder::VQModel(_) => "VQModel",
        LatentDecoder::AutoencoderKL(_) => "AutoencoderKL",
    };
    let f = decoder.upscale();
    println!(
        "decoder      {class}: latents / {} -> {} channels at {}x{} (x{f}), {} parameters ({} f32)",
        decoder.scaling_factor(),
        decoder.out_channels(),
        latent_h * f,
        latent_w * f,
        decoder.parameters(),
        mib(decoder.parameters() as u64 * 4)
    );
    let graph = decoder.decode_graph_with(1, latent_h, latent_w, options)?;
    let device_limit = ctx.max_binding_bytes();
    let binding_limit = options
        .binding_limit
        .map_or(device_limit, |l| l.min(device_limit));
    let memory = &graph.memory;
    let (label, bytes) = &memory.largest;
    println!(
        "decode       {:.3} G MACs per image; activations {} planned per image ({} buffers; one per op {}); largest {label}: {} vs binding limit {}",
        graph.flops() as f64 / 2e9,
        mib(memory.planned_bytes),
        memory.buffers,
        mib(memory.unplanned_bytes),
        mib(*bytes),
        mib(binding_limit)
    );
    let limit = match options.binding_limit {
        Some(l) if l < device_limit => format!("{} = {l} B (lowered)", mib(l)),
        _ => format!("{} = {device_limit} B", mib(device_limit)),
    };
    if graph.bands == 1 {
        println!("decode bands 1 (unsplit): every activation fits the binding limit {limit}");
    } else {
        println!(
            "decode bands {} row bands after the mid block (exact: halo rows per conv, whole-image group norm), every activation within the binding limit {limit}",
            graph.bands
        );
    }
    Ok(())
}

/// The batch `sample` picks without --batch-size at this resolution (up to 4096 images), plain
/// and with classifier-free guidance (two model rows per image) where the model has it.
fn print_auto_batch(
    pipeline: &Pipeline,
    height: usize,
    width: usize,
    decode: &DecodeOptions,
) -> Result<()> {
    const MAX_IMAGES: usize = 4096;
    let cfg = &pipeline.unet_config;
    let budget = default_memory_budget(&pipeline.context().adapter);
    let batch = |guided: bool| -> Result<usize> {
        let options = plan_options(pipeline, (height, width), MAX_IMAGES, guided, decode);
        Ok(pipeline.batch_for(&pipeline.prepare(&options)?)?)
    };
    let plain = batch(false)?;
    let guided = match (cfg.num_class_embeds(), pipeline.classes.null) {
        _ if cfg.context_dim().is_some() => format!(", {} with guidance", batch(true)?),
        (Some(_), Some(_)) => format!(", {} with guidance", batch(true)?),
        _ => String::new(),
    };
    println!(
        "auto batch   {plain} images per GPU batch{guided} (sample without --batch-size: binding and buffer limits, memory budget {}; capped at {MAX_IMAGES})",
        mib(budget)
    );
    Ok(())
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP: delete the temp files of outputs not yet written and
/// exit at once with 128 + the signal number, as a shell reports a killed command. Waiting for
/// the GPU work in flight could take minutes; nothing half-written is left either way.
#[cfg(unix)]
fn exit_on_interrupt() {
    extern "C" fn on_signal(signal: libc::c_int) {
        wgpu_diffusion::sampling::io::remove_temp_files();
        let note = b"\ninterrupted: no output written\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer outlives the call.
        unsafe {
            libc::write(2, note.as_ptr().cast(), note.len());
            libc::_exit(128 + signal);
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only makes async-signal-safe calls (unlink, write, _exit).
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

#[cfg(not(unix))]
fn exit_on_interrupt() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_on_interrupt();
    let result = match &cli.command {
        Command::Sample(args) => cli::sample::run(args, &gpu_options(&cli)),
        Command::Bench(args) => {
            cli::bench::run(args, &gpu_options(&cli)).map(|()| ExitCode::SUCCESS)
        }
        Command::EncodePrompt(args) => cli::encode_prompt::run(args, &gpu_options(&cli)),
        Command::Adapters { check } => adapters(&cli, *check),
        Command::Inspect {
            model,
            batch,
            height,
            width,
            decode_binding_limit,
            offload,
            memory_budget,
        } => {
            let size = (*batch as usize, *height, *width);
            let decode = DecodeOptions {
                binding_limit: *decode_binding_limit,
            };
            let load = LoadOptions {
                offload: *offload,
                memory_budget: memory_budget.map(|mib| mib.saturating_mul(1 << 20)),
            };
            inspect(&cli, model, size, &decode, &load)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
