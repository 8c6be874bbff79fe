//! wgpu plumbing: adapter choice, the device context, the kernel registry and pipeline cache,
//! GPU tensors, recorded dispatches and the parameter-block declarations. Follows the shape of
//! wgpu's `repeated_compute` example: one long-lived context, work recorded separately from
//! device creation.

mod context;
mod dispatch;
mod kernel;
pub mod pipeline_cache;
pub mod planner;
pub mod shape;
mod tensor;
mod uniform;

pub use context::{choose, enumerate, AdapterSummary, Allocations, GpuContext, GpuOptions};
pub use dispatch::{
    grid, Access, BindLayout, Dispatch, DispatchArgs, ParamsBuffer, SharedBindings,
    SharedBindingsArgs, SharedDispatchArgs, UniformTable,
};
pub use kernel::{entry, EntryPoint, Kernel};
pub use shape::{KernelChoice, KernelShape, TilePolicy};
pub use tensor::Tensor;
pub(crate) use uniform::{shader_flags, uniform_struct};
pub use uniform::{Scalar, UniformField, UniformLayout, WgslScalar};
