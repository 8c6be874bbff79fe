//! In-place causal row softmax of square attention-score blocks (`torch.softmax(x + mask, -1)`
//! with transformers' −inf upper-triangular mask, on a `[blocks, T, T]` view) of
//! `shaders/causal_softmax.wgsl`: row r of each block attends to columns `0..=r`.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, grid, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, Tensor,
    UniformLayout,
};
use crate::ops::elementwise::to_u32;

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); a power of two for the tree.
const WORKGROUP_SIZE: u32 = 256;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

uniform_struct! {
    /// The kernel's parameter block (`Params` in `causal_softmax.wgsl`).
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

/// Replaces each row of `data` (`blocks · t · t` values: `blocks` square `t × t` score blocks,
/// row-major) by its causal softmax, in place: row r of a block keeps columns `0..=r` and gets
/// 0 in columns `r+1..t`.
#[derive(Clone, Copy, Debug)]
pub struct CausalSoftmax<'a> {
    pub data: &'a Tensor,
    pub blocks: usize,
    pub t: usize,
}

/// Builds the launch for `args`.
pub fn causal_softmax(ctx: &GpuContext, args: &CausalSoftmax, label: &str) -> Result<Dispatch> {
    const OP: &str = "causal_softmax";
    let CausalSoftmax { data, blocks, t } = *args;
    let rows = blocks.checked_mul(t);
    if rows.and_then(|r| r.checked_mul(t)) != Some(data.numel()) {
        return Err(Error::invalid(
            OP,
            format!(
                "{blocks} blocks of {t} × {t} do not match data of shape {:?} ({} elements)",
                data.shape,
                data.numel()
            ),
        ));
    }
    let rows = blocks * t;
    let numel = to_u32(OP, "elements", data.numel())?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "T", t)?,
        ..Params::default()
    };
    let workgroups = if numel == 0 {
        [0, 1, 1]
    } else {
        grid(ctx, rows as u64)?
    };
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::causal_softmax::MAIN,
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            label,
            storage: &[&data.buffer],
            params: &params,
            workgroups,
        },
    )
    .map(|d| d.with_flops(u64::from(numel) * 5))
}
