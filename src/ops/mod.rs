//! Builders for every GPU op: each validates shapes, fills the kernel's `#[repr(C)]` parameter
//! block and returns a [`Dispatch`](crate::gpu::Dispatch) to be recorded (once per graph, replayed
//! every forward). The matching CPU references live in [`crate::reference`].

pub mod conv2d;
pub mod elementwise;
pub mod group_norm;
pub mod matmul;
pub mod rng;
pub mod softmax;
pub mod timestep_embedding;
pub mod upsample;
