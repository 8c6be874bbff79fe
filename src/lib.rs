//! wgpu-diffusion: sample images from diffusers `UNet2DModel` checkpoints entirely on the GPU
//! through wgpu. Weights in the diffusers format load into WGSL compute pipelines; every
//! arithmetic op of the forward pass runs as a compute shader.

pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod reference;
pub mod schedule;

pub use error::{Error, Result};
pub use gpu::{GpuContext, GpuOptions, Tensor};
