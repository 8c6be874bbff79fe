//! In-place causal row softmax of square attention-score blocks (`torch.softmax(x + mask, -1)`
//! with transformers' −inf upper-triangular mask, on a `[blocks, T, T]` view) of
//! `shaders/causal_softmax.wgsl`: row r of each block attends to columns `0..=r`. A window of
//! query rows of such blocks (attention chunked over queries) goes through
//! [`causal_softmax_rows`].

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
        block_rows: u32,
        query_offset: u32,
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

/// Query rows `query_offset .. query_offset + block_rows` of `blocks` causal `t × t` score
/// blocks, stored as `blocks` row-major `[block_rows, t]` windows filling `data`: local row i of a
/// window is query position `query_offset + i` and keeps columns `0..=query_offset + i`.
#[derive(Clone, Copy, Debug)]
pub struct CausalSoftmaxRows<'a> {
    pub data: &'a Tensor,
    pub blocks: usize,
    pub block_rows: usize,
    pub t: usize,
    pub query_offset: usize,
}

/// Builds the launch for `args` (whole square blocks).
pub fn causal_softmax(ctx: &GpuContext, args: &CausalSoftmax, label: &str) -> Result<Dispatch> {
    let CausalSoftmax { data, blocks, t } = *args;
    let rows = CausalSoftmaxRows {
        data,
        blocks,
        block_rows: t,
        t,
        query_offset: 0,
    };
    causal_softmax_rows(ctx, &rows, label)
}

/// Builds the launch for a window of query rows. Each row is computed exactly as
/// [`causal_softmax`] computes that query's row of the whole block.
pub fn causal_softmax_rows(
    ctx: &GpuContext,
    args: &CausalSoftmaxRows,
    label: &str,
) -> Result<Dispatch> {
    const OP: &str = "causal_softmax";
    let CausalSoftmaxRows {
        data,
        blocks,
        block_rows,
        t,
        query_offset,
    } = *args;
    let rows = blocks.checked_mul(block_rows);
    if rows.and_then(|r| r.checked_mul(t)) != Some(data.numel()) {
        return Err(Error::invalid(
            OP,
            format!(
                "{blocks} blocks of {block_rows} × {t} do not match data of shape {:?} ({} \
                 elements)",
                data.shape,
                data.numel()
            ),
        ));
    }
    if query_offset
        .checked_add(block_rows)
        .is_none_or(|end| end > t)
    {
        return Err(Error::invalid(
            OP,
            format!(
                "query rows {query_offset}..{query_offset}+{block_rows} fall outside the {t} \
                 queries of a causal block (query_offset + block_rows must be ≤ T)"
            ),
        ));
    }
    let rows = blocks * block_rows;
    let numel = to_u32(OP, "elements", data.numel())?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "T", t)?,
        block_rows: to_u32(OP, "block rows", block_rows)?,
        query_offset: to_u32(OP, "query offset", query_offset)?,
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
