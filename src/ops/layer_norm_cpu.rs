//! Layer normalisation shaped for CPU adapters (`shaders/layer_norm_cpu.wgsl`): one subgroup per
//! row, vec4 loads, no barriers. [`crate::ops::layer_norm::layer_norm`] sends rows here when the
//! context runs the CPU shape ([`crate::gpu::shape`]) and `C % 4 == 0`; the results are
//! bit-identical to `layer_norm.wgsl`'s (the same 256 partials and tree).

use crate::error::Result;
use crate::gpu::{entry, Dispatch, GpuContext, Tensor, UniformLayout};
use crate::ops::layer_norm::Params;
use crate::ops::per_subgroup;

/// The parameter block is `layer_norm.wgsl`'s (checked against this shader by
/// `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
/// No flag bits.
pub const FLAGS: &[(&str, u32)] = &[];

/// Whether the kernel takes rows of `cols` values: whole vec4s per row (and of gamma, beta).
pub fn fits(cols: usize) -> bool {
    cols.is_multiple_of(4)
}

/// Builds the launch; `params` are the checked parameters of the GPU-shaped kernel.
pub(crate) fn launch(
    ctx: &GpuContext,
    params: &Params,
    [input, gamma, beta, out]: [&Tensor; 4],
    flops: u64,
    label: &str,
) -> Result<Dispatch> {
    let items = u64::from(params.rows);
    let storage = [&*input.buffer, &gamma.buffer, &beta.buffer, &out.buffer];
    per_subgroup(
        ctx,
        entry::layer_norm_cpu::MAIN,
        items,
        input.numel() == 0,
        (&storage, params),
        flops,
        label,
    )
}
