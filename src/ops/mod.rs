//! Launchers for every GPU kernel, one file per `shaders/X.wgsl` (`src/ops/X.rs`, named in the
//! shader's header): each takes one args struct, validates shapes, fills the kernel's parameter
//! block (declared with `uniform_struct!`, with its `UNIFORMS` and `FLAGS` lists for the layout
//! test) and returns a [`Dispatch`](crate::gpu::Dispatch) to be recorded (once per graph, replayed
//! every forward). The matching CPU references live in [`crate::reference`].

pub mod activation;
pub mod analytic_model;
pub mod causal_softmax;
pub mod conv2d;
pub mod conv2d_cpu;
pub mod elementwise;
pub mod group_norm;
pub mod group_norm_cpu;
pub mod layer_norm;
pub mod layer_norm_cpu;
pub mod matmul;
pub mod matmul_cpu;
pub mod non_finite;
pub mod rng;
pub mod sampler_step;
pub mod softmax;
pub mod softmax_cpu;
pub mod timestep_embedding;
pub mod upsample;
pub mod vq_quantize;
