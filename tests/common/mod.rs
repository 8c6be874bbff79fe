//! Shared test helpers: the GPU context (a missing adapter fails loudly, never skips), seeded
//! random data, f32→f64 conversion, and edited copies of fixture pipeline folders.
#![allow(dead_code)]

use std::sync::Arc;

use wgpu_diffusion::model::weights::SplitMix64;
use wgpu_diffusion::{Error, GpuContext, GpuOptions};

/// The test device. Honours WGPU_BACKEND / WGPU_ADAPTER_NAME. Panics with install instructions
/// when no adapter exists: a missing adapter is a failing test, not a skip.
pub fn ctx() -> Arc<GpuContext> {
    match GpuContext::new(&GpuOptions::from_env()) {
        Ok(ctx) => ctx,
        Err(e @ Error::NoAdapter { .. }) => panic!(
            "{e}\n(`make test` installs mesa-vulkan-drivers automatically when apt-get is usable)"
        ),
        Err(e) => panic!("could not open a GPU device: {e}"),
    }
}

/// A small deterministic generator (the library's SplitMix64) so test inputs vary by seed
/// without extra crates.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Uniform integer in [lo, hi].
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Copies the files of `parts` (subfolders of `src`; `""` is `src` itself) into a temp dir,
/// applies `edit`, and returns the error of reading the copy's configs
/// (`PipelineConfig::load`, no GPU).
pub fn pipeline_folder_error(
    src: &std::path::Path,
    parts: &[&str],
    edit: impl Fn(&std::path::Path),
) -> String {
    let tmp = tempfile::tempdir().unwrap();
    for part in parts {
        std::fs::create_dir_all(tmp.path().join(part)).unwrap();
        for entry in std::fs::read_dir(src.join(part)).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                std::fs::copy(entry.path(), tmp.path().join(part).join(entry.file_name())).unwrap();
            }
        }
    }
    edit(tmp.path());
    wgpu_diffusion::sampling::PipelineConfig::load(tmp.path())
        .expect_err("bad folder")
        .to_string()
}

/// Replaces `from` (which must occur) by `to` in the file at `path`.
pub fn edit_json(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// `wgpu-diffusion inspect --model dir extra…` through the binary (the decode binding limit
/// variable cleared): its stdout, after asserting it succeeded.
pub fn inspect(dir: &std::path::Path, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-diffusion"))
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env_remove("WGPU_DIFFUSION_DECODE_BINDING_LIMIT")
        .arg("inspect")
        .arg("--model")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run inspect");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Whether `ctx` runs the CPU-shaped kernels (`wgpu_diffusion::gpu::shape`). An llvmpipe of 256-bit
/// vectors (CI's lavapipe on AVX2: 8-lane subgroups) must: there a missing CPU shape fails;
/// elsewhere (GL, a GPU, a 128-bit llvmpipe) the reason is printed and the caller's both-ways
/// comparison is skipped loudly.
pub fn cpu_kernels_available(ctx: &GpuContext) -> bool {
    match ctx.cpu_kernels_unsupported() {
        None => true,
        Some(why) => {
            let info = &ctx.adapter.info;
            let avx2_lavapipe = info.name.contains("llvmpipe")
                && info.name.contains("256 bits")
                && info.backend == wgpu_diffusion::wgpu::Backend::Vulkan;
            assert!(
                !avx2_lavapipe,
                "lavapipe on 256-bit vectors must run the CPU-shaped kernels, but: {why}"
            );
            eprintln!(
                "CPU-shaped kernels NOT exercised on {}: {why}",
                ctx.adapter.describe()
            );
            false
        }
    }
}

/// How many values of `a` and `b` differ in their bits.
pub fn bits_differ(a: &[f32], b: &[f32]) -> usize {
    assert_eq!(a.len(), b.len(), "compared outputs differ in length");
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}
