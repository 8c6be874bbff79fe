//! Pointwise ops of `shaders/elementwise.wgsl`: SiLU, scaled add, affine, channel concat and
//! slice, and the class-embedding lookup-and-add; plus the small shape helpers the other pointwise-style builders
//! (group norm, softmax, upsample, timestep embedding) share.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{
    entry, grid, shader_flags, uniform_struct, Dispatch, DispatchArgs, EntryPoint, GpuContext,
    Tensor, UniformLayout,
};

/// Invocations per workgroup (`WORKGROUP_SIZE` in the shader); one element each.
const WORKGROUP_SIZE: u32 = 256;

/// Converts a size to the kernels' u32 index type, naming it in the error.
pub(crate) fn to_u32(op: &str, what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| {
        Error::invalid(
            op,
            format!("{what} = {value} does not fit the kernel's 32-bit indices"),
        )
    })
}

/// Fails unless `tensor` has exactly `shape`.
pub(crate) fn expect_shape(op: &str, name: &str, tensor: &Tensor, shape: &[usize]) -> Result<()> {
    if tensor.shape != shape {
        return Err(Error::invalid(
            op,
            format!("{name} has shape {:?}, expected {shape:?}", tensor.shape),
        ));
    }
    Ok(())
}

/// Fails when the output shares its buffer with an input: a buffer cannot be bound read-only and
/// read-write in one dispatch.
pub(crate) fn expect_distinct(op: &str, out: &Tensor, inputs: &[(&str, &Tensor)]) -> Result<()> {
    for (name, input) in inputs {
        if Arc::ptr_eq(&out.buffer, &input.buffer) {
            return Err(Error::invalid(
                op,
                format!("the output shares its buffer with {name}; this op cannot run in place"),
            ));
        }
    }
    Ok(())
}

/// A 1-D grid of `count` elements at `workgroup_size` each, split into 2-D when it exceeds the
/// adapter's per-dimension limit.
pub(crate) fn element_grid(ctx: &GpuContext, count: u32, workgroup_size: u32) -> Result<[u32; 3]> {
    grid(ctx, u64::from(count).div_ceil(u64::from(workgroup_size)))
}

uniform_struct! {
    /// `SiluParams` of `elementwise.wgsl`.
    pub struct SiluParams = "SiluParams" {
        count: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform_struct! {
    /// `AddParams` of `elementwise.wgsl`.
    pub struct AddParams = "AddParams" {
        count: u32,
        scale: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

uniform_struct! {
    /// `AffineParams` of `elementwise.wgsl`.
    pub struct AffineParams = "AffineParams" {
        count: u32,
        mul: f32,
        addend: f32,
        _pad0: u32,
    }
}

uniform_struct! {
    /// `ConcatParams` of `elementwise.wgsl`.
    pub struct ConcatParams = "ConcatParams" {
        batch: u32,
        a_len: u32,
        b_len: u32,
        _pad0: u32,
    }
}

uniform_struct! {
    /// `EmbeddingParams` of `elementwise.wgsl`.
    pub struct EmbeddingParams = "EmbeddingParams" {
        count: u32,
        dim: u32,
        rows: u32,
        _pad0: u32,
    }
}

uniform_struct! {
    /// `SliceParams` of `elementwise.wgsl`.
    pub struct SliceParams = "SliceParams" {
        count: u32,
        x_len: u32,
        out_len: u32,
        offset: u32,
    }
}

uniform_struct! {
    /// `CopyRowsParams` of `elementwise.wgsl`.
    pub struct CopyRowsParams = "CopyRowsParams" {
        count: u32,
        width: u32,
        rows: u32,
        src_height: u32,
        dst_height: u32,
        src_row: u32,
        dst_row: u32,
        _pad0: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[
    SiluParams::LAYOUT,
    AddParams::LAYOUT,
    AffineParams::LAYOUT,
    ConcatParams::LAYOUT,
    EmbeddingParams::LAYOUT,
    SliceParams::LAYOUT,
    CopyRowsParams::LAYOUT,
];
shader_flags! {}

const CONSTANTS: &[(&str, f64)] = &[("WORKGROUP_SIZE", WORKGROUP_SIZE as f64)];

/// One pointwise launch of `entry` over `count` elements.
fn launch<P: bytemuck::Pod>(
    ctx: &GpuContext,
    entry: EntryPoint,
    label: &str,
    storage: &[&wgpu::Buffer],
    params: &P,
    count: u32,
) -> Result<Dispatch> {
    Dispatch::new(
        ctx,
        &DispatchArgs {
            entry,
            constants: CONSTANTS,
            label,
            storage,
            params,
            workgroups: element_grid(ctx, count, WORKGROUP_SIZE)?,
        },
    )
}

/// `out = x · sigmoid(x)` (`F.silu`). `x` and `out` have the same shape and distinct buffers.
#[derive(Clone, Copy, Debug)]
pub struct Silu<'a> {
    pub x: &'a Tensor,
    pub out: &'a Tensor,
}

/// Builds the launch for `args`.
pub fn silu(ctx: &GpuContext, args: &Silu, label: &str) -> Result<Dispatch> {
    const OP: &str = "silu";
    let Silu { x, out } = *args;
    expect_shape(OP, "out", out, &x.shape)?;
    expect_distinct(OP, out, &[("x", x)])?;
    let count = to_u32(OP, "elements", x.numel())?;
    let params = SiluParams {
        count,
        ..SiluParams::default()
    };
    let storage = [&*x.buffer, &*out.buffer];
    launch(
        ctx,
        entry::elementwise::SILU,
        label,
        &storage,
        &params,
        count,
    )
    .map(|d| d.with_flops(u64::from(count) * 4))
}

/// `out = (a + b) · scale`. All three tensors have the same shape; `out` has its own buffer.
#[derive(Clone, Copy, Debug)]
pub struct Add<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub out: &'a Tensor,
    pub scale: f32,
}

/// Builds the launch for `args`.
pub fn add(ctx: &GpuContext, args: &Add, label: &str) -> Result<Dispatch> {
    const OP: &str = "add";
    let Add { a, b, out, scale } = *args;
    expect_shape(OP, "b", b, &a.shape)?;
    expect_shape(OP, "out", out, &a.shape)?;
    expect_distinct(OP, out, &[("a", a), ("b", b)])?;
    if !scale.is_finite() {
        return Err(Error::invalid(OP, format!("scale {scale} is not finite")));
    }
    let count = to_u32(OP, "elements", a.numel())?;
    let params = AddParams {
        count,
        scale,
        ..AddParams::default()
    };
    let storage = [&*a.buffer, &*b.buffer, &*out.buffer];
    launch(
        ctx,
        entry::elementwise::ADD,
        label,
        &storage,
        &params,
        count,
    )
    .map(|d| d.with_flops(u64::from(count) * 2))
}

/// `out = x · mul + add` (`center_input_sample` is `mul = 2, add = −1`). Same shapes, distinct
/// buffers.
#[derive(Clone, Copy, Debug)]
pub struct Affine<'a> {
    pub x: &'a Tensor,
    pub out: &'a Tensor,
    pub mul: f32,
    pub add: f32,
}

/// Builds the launch for `args`.
pub fn affine(ctx: &GpuContext, args: &Affine, label: &str) -> Result<Dispatch> {
    const OP: &str = "affine";
    let Affine { x, out, mul, add } = *args;
    expect_shape(OP, "out", out, &x.shape)?;
    expect_distinct(OP, out, &[("x", x)])?;
    if !mul.is_finite() || !add.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("mul {mul} and add {add} must be finite"),
        ));
    }
    let count = to_u32(OP, "elements", x.numel())?;
    let params = AffineParams {
        count,
        mul,
        addend: add,
        ..AffineParams::default()
    };
    let storage = [&*x.buffer, &*out.buffer];
    launch(
        ctx,
        entry::elementwise::AFFINE,
        label,
        &storage,
        &params,
        count,
    )
    .map(|d| d.with_flops(u64::from(count) * 2))
}

/// `out = torch.cat([a, b], dim=1)`: `a` is `[N, Ca, ...]`, `b` is `[N, Cb, ...]` with the same
/// trailing dims, `out` is `[N, Ca + Cb, ...]`.
#[derive(Clone, Copy, Debug)]
pub struct ConcatChannels<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub out: &'a Tensor,
}

/// Builds the launch for `args`, checking the shapes.
pub fn concat_channels(ctx: &GpuContext, args: &ConcatChannels, label: &str) -> Result<Dispatch> {
    const OP: &str = "concat_channels";
    let ConcatChannels { a, b, out } = *args;
    if a.shape.len() < 2 || b.shape.len() != a.shape.len() {
        return Err(Error::invalid(
            OP,
            format!(
                "a {:?} and b {:?} must have the same rank, at least 2 ([N, C, ...])",
                a.shape, b.shape
            ),
        ));
    }
    if b.shape[0] != a.shape[0] || b.shape[2..] != a.shape[2..] {
        return Err(Error::invalid(
            OP,
            format!(
                "a {:?} and b {:?} must agree on every dim but the channels (dim 1)",
                a.shape, b.shape
            ),
        ));
    }
    let mut want = a.shape.clone();
    want[1] = a.shape[1] + b.shape[1];
    expect_shape(OP, "out", out, &want)?;
    expect_distinct(OP, out, &[("a", a), ("b", b)])?;
    let batch = a.shape[0];
    let spatial: usize = a.shape[2..].iter().product();
    let count = to_u32(OP, "output elements", out.numel())?;
    let params = ConcatParams {
        batch: to_u32(OP, "batch", batch)?,
        a_len: to_u32(OP, "a elements per sample", a.shape[1] * spatial)?,
        b_len: to_u32(OP, "b elements per sample", b.shape[1] * spatial)?,
        ..ConcatParams::default()
    };
    let storage = [&*a.buffer, &*b.buffer, &*out.buffer];
    launch(
        ctx,
        entry::elementwise::CONCAT_CHANNELS,
        label,
        &storage,
        &params,
        count,
    )
}

/// `out[n] = base[n] + table[labels[n]]`: `table` is `[rows, D]`, `labels` is `[N]` (f32 holding
/// integers, validated by the caller), `base` and `out` are `[N, D]`. The kernel clamps each
/// label into `[0, rows − 1]`, so a bad label reads a wrong row but never out of bounds.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddingAdd<'a> {
    pub table: &'a Tensor,
    pub labels: &'a Tensor,
    pub base: &'a Tensor,
    pub out: &'a Tensor,
}

/// Builds the launch for `args`, checking the shapes.
pub fn embedding_add(ctx: &GpuContext, args: &EmbeddingAdd, label: &str) -> Result<Dispatch> {
    const OP: &str = "embedding_add";
    let EmbeddingAdd {
        table,
        labels,
        base,
        out,
    } = *args;
    let [rows, dim] = table.shape[..] else {
        return Err(Error::invalid(
            OP,
            format!("table has shape {:?}, expected [rows, D]", table.shape),
        ));
    };
    if rows == 0 {
        return Err(Error::invalid(OP, "the table has no rows"));
    }
    let [batch] = labels.shape[..] else {
        return Err(Error::invalid(
            OP,
            format!("labels have shape {:?}, expected [N]", labels.shape),
        ));
    };
    expect_shape(OP, "base", base, &[batch, dim])?;
    expect_shape(OP, "out", out, &[batch, dim])?;
    expect_distinct(
        OP,
        out,
        &[("table", table), ("labels", labels), ("base", base)],
    )?;
    to_u32(OP, "table elements", table.numel())?;
    let count = to_u32(OP, "output elements", out.numel())?;
    let params = EmbeddingParams {
        count,
        dim: to_u32(OP, "D", dim)?,
        rows: to_u32(OP, "table rows", rows)?,
        ..EmbeddingParams::default()
    };
    let storage = [&*labels.buffer, &*base.buffer, &*table.buffer, &*out.buffer];
    launch(
        ctx,
        entry::elementwise::EMBEDDING_ADD,
        label,
        &storage,
        &params,
        count,
    )
}

/// `out = x[:, start:start + C_out]`: `x` is `[N, Cx, ...]`, `out` is `[N, C_out, ...]` with the
/// same trailing dims and `start + C_out ≤ Cx`.
#[derive(Clone, Copy, Debug)]
pub struct SliceChannels<'a> {
    pub x: &'a Tensor,
    pub out: &'a Tensor,
    pub start: usize,
}

/// Builds the launch for `args`, checking the shapes.
pub fn slice_channels(ctx: &GpuContext, args: &SliceChannels, label: &str) -> Result<Dispatch> {
    const OP: &str = "slice_channels";
    let SliceChannels { x, out, start } = *args;
    if x.shape.len() < 2
        || out.shape.len() != x.shape.len()
        || out.shape[0] != x.shape[0]
        || out.shape[2..] != x.shape[2..]
        || start + out.shape[1] > x.shape[1]
    {
        return Err(Error::invalid(
            OP,
            format!(
                "out {:?} is not channels {start}.. of x {:?} (same rank ≥ 2, batch and trailing \
                 dims; start + C_out ≤ C_x)",
                out.shape, x.shape
            ),
        ));
    }
    expect_distinct(OP, out, &[("x", x)])?;
    let spatial: usize = x.shape[2..].iter().product();
    let count = to_u32(OP, "output elements", out.numel())?;
    let params = SliceParams {
        count,
        x_len: to_u32(OP, "x elements per sample", x.shape[1] * spatial)?,
        out_len: to_u32(OP, "out elements per sample", out.shape[1] * spatial)?,
        offset: to_u32(OP, "slice offset", start * spatial)?,
    };
    let storage = [&*x.buffer, &*out.buffer];
    launch(
        ctx,
        entry::elementwise::SLICE_CHANNELS,
        label,
        &storage,
        &params,
        count,
    )
}

/// `dst[:, :, dst_row..dst_row + rows] = src[:, :, src_row..src_row + rows]` for `[N, C, H, W]`
/// tensors of the same N, C and W (row bands of one image: a band's halo, or a band written
/// into the whole output); the other rows of `dst` are left as they are.
#[derive(Clone, Copy, Debug)]
pub struct CopyRows<'a> {
    pub src: &'a Tensor,
    pub dst: &'a Tensor,
    pub src_row: usize,
    pub dst_row: usize,
    pub rows: usize,
}

/// Builds the launch for `args`, checking the shapes and row ranges.
pub fn copy_rows(ctx: &GpuContext, args: &CopyRows, label: &str) -> Result<Dispatch> {
    const OP: &str = "copy_rows";
    let CopyRows {
        src,
        dst,
        src_row,
        dst_row,
        rows,
    } = *args;
    let ([n, c, hs, w], [nd, cd, hd, wd]) = (&src.shape[..], &dst.shape[..]) else {
        return Err(Error::invalid(
            OP,
            format!(
                "src {:?} and dst {:?} must both be [N, C, H, W]",
                src.shape, dst.shape
            ),
        ));
    };
    if (n, c, w) != (nd, cd, wd) || src_row + rows > *hs || dst_row + rows > *hd {
        return Err(Error::invalid(
            OP,
            format!(
                "rows {src_row}..{} of src {:?} do not fit rows {dst_row}..{} of dst {:?} \
                 (N, C and W must agree)",
                src_row + rows,
                src.shape,
                dst_row + rows,
                dst.shape
            ),
        ));
    }
    expect_distinct(OP, dst, &[("src", src)])?;
    let count = to_u32(OP, "copied elements", n * c * rows * w)?;
    let params = CopyRowsParams {
        count,
        width: to_u32(OP, "W", *w)?,
        rows: to_u32(OP, "rows", rows)?,
        src_height: to_u32(OP, "src H", *hs)?,
        dst_height: to_u32(OP, "dst H", *hd)?,
        src_row: to_u32(OP, "src row", src_row)?,
        dst_row: to_u32(OP, "dst row", dst_row)?,
        ..CopyRowsParams::default()
    };
    let storage = [&*src.buffer, &*dst.buffer];
    launch(
        ctx,
        entry::elementwise::COPY_ROWS,
        label,
        &storage,
        &params,
        count,
    )
}
