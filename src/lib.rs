//! wgpu-diffusion: sample images from diffusers `UNet2DModel` checkpoints entirely on the GPU
//! through wgpu. Weights in the diffusers format load into WGSL compute pipelines; every
//! arithmetic op of the forward pass and of the sampler runs as a compute shader, and a run reads
//! back once.
//!
//! # Sampling from a Rust program
//!
//! The everyday API is re-exported at the crate root: load a diffusers model directory into a
//! [`Pipeline`], describe the run with [`SampleOptions`], and get [`Samples`] back (f32 tensors,
//! or 8-bit RGBA per image for a PNG encoder).
//!
//! ```no_run
//! use wgpu_diffusion::{Pipeline, SampleOptions, SchedulerKind};
//!
//! # fn main() -> wgpu_diffusion::Result<()> {
//! // Picks an adapter as the WGPU_BACKEND / WGPU_ADAPTER_NAME / WGPU_POWER_PREF variables say.
//! let pipeline = Pipeline::load("weights/fashion-ddpm".as_ref())?;
//! let samples = pipeline.sample(&SampleOptions {
//!     scheduler: Some(SchedulerKind::Ddim),
//!     steps: 20,
//!     num_images: 4,
//!     seed: 7,
//!     ..SampleOptions::default()
//! })?;
//! let [n, _channels, height, width] = samples.shape;
//! for i in 0..n {
//!     // Values in [-1, 1] mapped to 0..=255; grayscale replicated to RGB; alpha 255.
//!     let rgba: Vec<u8> = samples.to_rgba8(i);
//!     assert_eq!(rgba.len(), height * width * 4);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! To choose the adapter, build a [`GpuContext`] from [`GpuOptions`] and pass it to
//! [`Pipeline::load_with`]; an application that already owns a wgpu device shares it with
//! [`GpuContext::from_device`]. [`wgpu`] is re-exported so that such an application names the
//! same wgpu version as this crate. `examples/sample.rs` is a complete program that writes a PNG.
//!
//! # Features
//!
//! `cli` (default) builds the `wgpu-diffusion` command line and brings clap, indicatif and
//! anyhow. A library user depends with `default-features = false` and gets none of them.
//!
//! # What is public API
//!
//! The crate root's re-exports and the documented modules ([`sampling`], [`schedule`],
//! [`model`], [`gpu`], [`bench`](mod@bench), [`error`]) follow semver. The modules hidden from the docs
//! (`ops`, `reference`, `sampling::engine`, `sampling::analytic`) are public only so that the integration tests, benches and the
//! binary can reach the kernels and their CPU references; they are exempt from semver and may
//! change in any release.

// Config validation writes `!(x > 0.0)` on purpose: it rejects NaN along with the out-of-range.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod bench;
pub mod error;
// Not public API (exempt from semver): the fuzz targets' entry points, shared with the corpus
// replay test.
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod model;
// Not public API (exempt from semver): one launcher per shader, reached by the kernel tests and
// benches. Library users sample through `Pipeline`.
#[doc(hidden)]
pub mod ops;
// Not public API (exempt from semver): the CPU f64 references and comparison helpers the kernel
// tests check the GPU against.
#[doc(hidden)]
pub mod reference;
pub mod sampling;
pub mod schedule;

pub use error::{Error, Result};
pub use gpu::{GpuContext, GpuOptions, Tensor};
pub use sampling::{Pipeline, Progress, SampleOptions, Samples};
pub use schedule::SchedulerKind;
/// The wgpu this crate is built against, for applications that pass their own device to
/// [`GpuContext::from_device`].
pub use wgpu;
