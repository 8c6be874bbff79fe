//! wgpu plumbing: adapter choice, the device context, the kernel registry and pipeline cache,
//! GPU tensors, and recorded dispatches. Follows the shape of wgpu's `repeated_compute` example:
//! one long-lived context, work recorded separately from device creation.

mod context;
mod dispatch;
mod kernel;
pub mod planner;
mod tensor;

pub use context::{enumerate, AdapterSummary, GpuContext, GpuOptions};
pub use dispatch::{grid, Dispatch, ParamsBuffer};
pub use kernel::Kernel;
pub use tensor::Tensor;
