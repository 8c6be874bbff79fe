//! In-place row softmax (`torch.softmax(x, dim=-1)` on a `[rows, cols]` view) of
//! `shaders/softmax.wgsl`: one workgroup per row, max-subtracted, f32.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, grid, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, KernelShape,
    Tensor, UniformLayout,
};
use crate::ops::elementwise::to_u32;
use crate::ops::softmax_cpu;

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); a power of two for the tree.
const WORKGROUP_SIZE: u32 = 256;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

uniform_struct! {
    /// The kernel's parameter block (`Params` in `softmax.wgsl`).
    pub struct Params = "Params" {
        rows: u32,
        cols: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];
shader_flags! {}

/// Replaces each of the `rows` contiguous rows of `cols` values in `data` (any shape with
/// `rows · cols` elements) by its softmax, in place.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxRows<'a> {
    pub data: &'a Tensor,
    pub rows: usize,
    pub cols: usize,
}

/// Builds the launch for `args`.
pub fn softmax_rows(ctx: &GpuContext, args: &SoftmaxRows, label: &str) -> Result<Dispatch> {
    const OP: &str = "softmax_rows";
    let SoftmaxRows { data, rows, cols } = *args;
    if rows.checked_mul(cols) != Some(data.numel()) {
        return Err(Error::invalid(
            OP,
            format!(
                "{rows} rows × {cols} cols do not match data of shape {:?} ({} elements)",
                data.shape,
                data.numel()
            ),
        ));
    }
    let numel = to_u32(OP, "elements", data.numel())?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        ..Params::default()
    };
    if ctx.kernel_shape() == KernelShape::Cpu && softmax_cpu::fits(cols) {
        return softmax_cpu::launch(ctx, &params, data, u64::from(numel) * 5, label);
    }
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, rows as u64)?
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::softmax::MAIN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&data.buffer],
            params: &params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(u64::from(numel) * 5))
}
