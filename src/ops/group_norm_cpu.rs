//! Group normalisation shaped for CPU adapters (`shaders/group_norm_cpu.wgsl`): one subgroup per
//! (sample, group), vec4 loads, no barriers. [`crate::ops::group_norm::group_norm`] sends a norm
//! here when the context runs the CPU shape ([`crate::gpu::shape`]) and the spatial size is a
//! multiple of 4; the results are bit-identical to `group_norm.wgsl`'s `main` (the same 256
//! partial sums and the same tree).

use crate::error::Result;
use crate::gpu::{entry, Dispatch, GpuContext, Tensor, UniformLayout};
use crate::ops::group_norm::Params;
use crate::ops::per_subgroup;

/// The parameter block is `group_norm.wgsl`'s `Params` (checked against this shader by
/// `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
/// No flag bits.
pub const FLAGS: &[(&str, u32)] = &[];

/// Whether the kernel takes a norm over `spatial` elements per channel: whole vec4s per channel.
pub fn fits(spatial: usize) -> bool {
    spatial.is_multiple_of(4)
}

/// Builds the launch; `params` are the checked parameters of the GPU-shaped kernel.
pub(crate) fn launch(
    ctx: &GpuContext,
    params: &Params,
    [input, gamma, beta, out]: [&Tensor; 4],
    flops: u64,
    label: &str,
) -> Result<Dispatch> {
    let items = u64::from(params.batch) * u64::from(params.groups);
    let storage = [&*input.buffer, &gamma.buffer, &beta.buffer, &out.buffer];
    per_subgroup(
        ctx,
        entry::group_norm_cpu::MAIN,
        items,
        input.numel() == 0,
        (&storage, params),
        flops,
        label,
    )
}
