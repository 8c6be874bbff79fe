//! Headless sampling from another Rust program: load a diffusers model directory, sample a few
//! images on the GPU and write them side by side into one PNG (with the `image` crate).
//!
//! ```text
//! cargo run --example sample -- [MODEL_DIR] [OUT.png] [NUM_IMAGES] [STEPS]
//! ```
//!
//! Defaults: the bundled `weights/fashion-ddpm`, `sample.png`, 4 images, 10 DDIM steps, seed 0.
//! The adapter is chosen by `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` / `WGPU_POWER_PREF`.
//! `examples/external` builds this same file in a crate that depends on wgpu-diffusion with
//! `default-features = false`, as a user's crate would.

use std::path::PathBuf;
use std::process::ExitCode;

use wgpu_diffusion::{Pipeline, SampleOptions, SchedulerKind};

/// The command line: positional, each optional.
struct Args {
    model: PathBuf,
    out: PathBuf,
    num_images: usize,
    steps: usize,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 4 || args.iter().any(|a| a == "-h" || a == "--help") {
        return Err("usage: sample [MODEL_DIR] [OUT.png] [NUM_IMAGES] [STEPS]".to_owned());
    }
    let count = |i: usize, name: &str, default: usize| match args.get(i) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}: expected a positive integer, got {text:?}")),
        },
    };
    Ok(Args {
        model: args
            .first()
            .map_or_else(|| PathBuf::from("weights/fashion-ddpm"), PathBuf::from),
        out: args
            .get(1)
            .map_or_else(|| PathBuf::from("sample.png"), PathBuf::from),
        num_images: count(2, "NUM_IMAGES", 4)?,
        steps: count(3, "STEPS", 10)?,
    })
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let pipeline = Pipeline::load(&args.model)?;
    println!(
        "loaded {} ({} parameters) on {}",
        args.model.display(),
        pipeline.unet()?.parameters(),
        pipeline.context().adapter.describe()
    );
    let samples = pipeline.sample(&SampleOptions {
        scheduler: Some(SchedulerKind::Ddim),
        steps: args.steps,
        num_images: args.num_images,
        seed: 0,
        ..SampleOptions::default()
    })?;
    // Samples are [N, C, H, W] floats in [-1, 1]; `to_rgba8` quantises one image to H × W × 4
    // bytes. Lay the images out in one row.
    let [n, _channels, height, width] = samples.shape;
    let row_bytes = width * 4;
    let mut strip = vec![0u8; n * row_bytes * height];
    for i in 0..n {
        let rgba = samples.to_rgba8(i);
        for y in 0..height {
            let dst = (y * n + i) * row_bytes;
            strip[dst..dst + row_bytes].copy_from_slice(&rgba[y * row_bytes..(y + 1) * row_bytes]);
        }
    }
    image::save_buffer(
        &args.out,
        &strip,
        u32::try_from(n * width)?,
        u32::try_from(height)?,
        image::ExtendedColorType::Rgba8,
    )?;
    println!(
        "wrote {} ({n} images of {height}x{width}, {} steps)",
        args.out.display(),
        args.steps
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
