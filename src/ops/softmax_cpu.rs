//! In-place row softmax shaped for CPU adapters (`shaders/softmax_cpu.wgsl`): one subgroup per
//! row, vec4 loads, no barriers. [`crate::ops::softmax::softmax_rows`] sends rows here when the
//! context runs the CPU shape ([`crate::gpu::shape`]) and `cols % 4 == 0`; the results are
//! bit-identical to `softmax.wgsl`'s (the same 256 partials and trees).

use crate::error::Result;
use crate::gpu::{entry, Dispatch, GpuContext, Tensor, UniformLayout};
use crate::ops::per_subgroup;
use crate::ops::softmax::Params;

/// The parameter block is `softmax.wgsl`'s (checked against this shader by
/// `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
/// No flag bits.
pub const FLAGS: &[(&str, u32)] = &[];

/// Whether the kernel takes rows of `cols` values: whole vec4s per row.
pub fn fits(cols: usize) -> bool {
    cols.is_multiple_of(4)
}

/// Builds the launch; `params` are the checked parameters of the GPU-shaped kernel.
pub(crate) fn launch(
    ctx: &GpuContext,
    params: &Params,
    data: &Tensor,
    flops: u64,
    label: &str,
) -> Result<Dispatch> {
    let items = u64::from(params.rows);
    let storage = [&*data.buffer];
    per_subgroup(
        ctx,
        entry::softmax_cpu::MAIN,
        items,
        data.numel() == 0,
        (&storage, params),
        flops,
        label,
    )
}
