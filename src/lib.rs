//! wgpu-diffusion: sample images from diffusers `UNet2DModel` checkpoints entirely on the GPU
//! through wgpu. Weights in the diffusers format load into WGSL compute pipelines; every
//! arithmetic op of the forward pass runs as a compute shader.

// Config validation writes `!(x > 0.0)` on purpose: it rejects NaN along with the out-of-range.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod bench;
pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod reference;
pub mod sampling;
pub mod schedule;

pub use error::{Error, Result};
pub use gpu::{GpuContext, GpuOptions, Tensor};
