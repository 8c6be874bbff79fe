//! Strided batched GEMM with a fused bias / residual / scale epilogue (`shaders/matmul.wgsl`):
//! linear layers (`torch.nn.Linear`), 1×1 projections on NCHW activations and the two products of
//! attention (`Q·Kᵀ·scale`, `P·V`), all without transposing copies.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, grid, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, KernelShape,
    Tensor, UniformLayout,
};
use crate::ops::conv2d::vec4_view;
use crate::ops::matmul_cpu;

/// Which output axis a bias vector runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasAxis {
    /// `bias[m]`: one value per output row (per output channel of a 1×1 conv on NCHW).
    M,
    /// `bias[n]`: one value per output column (per output feature of a linear layer).
    N,
}

/// One strided batched product `out[b] = (alpha · A[b]·B[b] + bias + residual[b]) · output_scale`.
/// Element strides are `[batch, row, column]`: `A[b, m, k]` lives at
/// `b·a_strides[0] + m·a_strides[1] + k·a_strides[2]`, `B[b, k, n]` at
/// `b·b_strides[0] + k·b_strides[1] + n·b_strides[2]`, `out` and `residual` `[b, m, n]` at
/// `b·c_strides[0] + m·c_strides[1] + n·c_strides[2]`.
#[derive(Clone, Copy, Debug)]
pub struct Matmul<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub out: &'a Tensor,
    /// Optional bias and the axis it is indexed along.
    pub bias: Option<(&'a Tensor, BiasAxis)>,
    /// Optional tensor added before `output_scale`, with `out`'s strides.
    pub residual: Option<&'a Tensor>,
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_strides: [usize; 3],
    pub b_strides: [usize; 3],
    pub c_strides: [usize; 3],
    /// Scales the product before bias and residual (1/√d for attention scores).
    pub alpha: f32,
    /// Scales the whole sum (diffusers' `1 / rescale_output_factor`).
    pub output_scale: f32,
}

uniform_struct! {
    /// The kernel's parameter block (`Params` in `matmul.wgsl`).
    pub struct Params = "Params" {
        batch: u32,
        m: u32,
        n: u32,
        k: u32,
        a_sb: u32,
        a_sm: u32,
        a_sk: u32,
        b_sb: u32,
        b_sk: u32,
        b_sn: u32,
        c_sb: u32,
        c_sm: u32,
        c_sn: u32,
        flags: u32,
        alpha: f32,
        output_scale: f32,
        n_tiles: u32,
        tiles: u32,
        a_off: u32,
        b_off: u32,
        c_off: u32,
        inner: u32,
        a_so: u32,
        b_so: u32,
        c_so: u32,
        bias_off: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Element offsets at which [`matmul_at`] starts reading `a` and `b` and writing `out` (and
/// reading `residual`): a window of larger tensors, such as one chunk of attention's query rows
/// and heads. `A[b, m, k]` then lives at `a + b·a_strides[0] + m·a_strides[1] + k·a_strides[2]`,
/// and likewise for `b` and `c`.
///
/// With `groups`, the batch index splits in two: entry `z` of the product is entry `z % inner`
/// of group `z / inner`, and an operand's window for it starts `(z / inner)·group stride +
/// (z % inner)·batch stride` past its offset. One launch then covers every (sample, head) pair of
/// an attention whose operands are not one stride apart per pair (q, k and v read from one fused
/// projection, or token-major hidden states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulOffsets {
    pub a: usize,
    pub b: usize,
    pub c: usize,
    /// The bias is a window of a longer one (a fused layer's) starting at this element; `None`:
    /// the bias holds exactly one value per row (or column).
    pub bias: Option<usize>,
    pub groups: Option<BatchGroups>,
}

/// How [`MatmulOffsets::groups`] splits the batch: `inner` entries per group (the batch must be a
/// multiple of it), and each operand's element stride from one group to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchGroups {
    pub inner: usize,
    pub a: usize,
    pub b: usize,
    pub c: usize,
}

/// The batch seen as `[groups, inner]`: extents and, per operand, the group stride (a plain
/// batch is one group of `batch` entries).
pub(crate) struct BatchSplit {
    pub groups: usize,
    pub inner: usize,
    pub a: usize,
    pub b: usize,
    pub c: usize,
}

impl BatchSplit {
    fn of(op: &str, batch: usize, groups: Option<BatchGroups>) -> Result<Self> {
        match groups {
            None => Ok(BatchSplit {
                groups: 1,
                inner: batch,
                a: 0,
                b: 0,
                c: 0,
            }),
            Some(g) if g.inner > 0 && batch.is_multiple_of(g.inner) => Ok(BatchSplit {
                groups: batch / g.inner,
                inner: g.inner,
                a: g.a,
                b: g.b,
                c: g.c,
            }),
            Some(g) => Err(Error::invalid(
                op,
                format!(
                    "a batch of {batch} does not split into groups of {} entries",
                    g.inner
                ),
            )),
        }
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];

shader_flags! {
    FLAG_BIAS = 1,
    /// The bias runs along n (else along m).
    FLAG_BIAS_N = 2,
    FLAG_RESIDUAL = 4,
}

/// Depth of the K slice each workgroup stages in shared memory (the `BK` override).
const BK: u32 = 16;

/// Converts a size or stride to the kernel's u32, naming it in the error.
pub(crate) fn to_u32(op: &str, what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| {
        Error::invalid(
            op,
            format!("{what} = {value} does not fit the kernel's 32-bit indices"),
        )
    })
}

/// Largest element index `offset + Σ (extent_i − 1)·stride_i` of a strided view, or `None` on
/// overflow or when an extent is zero.
fn max_index(offset: usize, extents: [usize; 4], strides: [usize; 4]) -> Option<usize> {
    let mut total = offset;
    for (e, s) in extents.iter().zip(strides) {
        total = total.checked_add(e.checked_sub(1)?.checked_mul(s)?)?;
    }
    Some(total)
}

/// Checks that a strided view fits its tensor (and the kernel's u32 index arithmetic).
fn check_view(
    op: &str,
    name: &str,
    tensor: &Tensor,
    (offset, extents, strides): (usize, [usize; 4], [usize; 4]),
) -> Result<()> {
    let last = max_index(offset, extents, strides).ok_or_else(|| {
        Error::invalid(
            op,
            format!(
                "{name}: offset {offset} with extents {extents:?} and strides {strides:?} overflow"
            ),
        )
    })?;
    if last >= tensor.numel() {
        return Err(Error::invalid(
            op,
            format!(
                "{name}: offset {offset} with extents {extents:?} and strides {strides:?} reach \
                 element {last}, but the tensor has shape {:?} ({} elements)",
                tensor.shape,
                tensor.numel()
            ),
        ));
    }
    to_u32(op, &format!("{name} max index"), last)?;
    Ok(())
}

/// Builds the launch for `mm`. Every operand's largest index must fall inside its tensor.
pub fn matmul(ctx: &GpuContext, mm: &Matmul, label: &str) -> Result<Dispatch> {
    matmul_at(ctx, mm, MatmulOffsets::default(), label)
}

/// Like [`matmul`], on the windows of `a`, `b` and `out` that start at `offsets`. Each output
/// element is computed exactly as [`matmul`] computes it (same k order, same fma chain), so a
/// product split into windows is bit-identical to the whole.
pub fn matmul_at(
    ctx: &GpuContext,
    mm: &Matmul,
    offsets: MatmulOffsets,
    label: &str,
) -> Result<Dispatch> {
    let op = format!("matmul {label}");
    let op = op.as_str();
    if mm.batch == 0 || mm.m == 0 || mm.n == 0 || mm.k == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "empty product: batch {}, m {}, n {}, k {}",
                mm.batch, mm.m, mm.n, mm.k
            ),
        ));
    }
    let split = BatchSplit::of(op, mm.batch, offsets.groups)?;
    let view = |offset: usize, rows: usize, cols: usize, group: usize, [sb, sr, sc]: [usize; 3]| {
        (
            offset,
            [split.groups, split.inner, rows, cols],
            [group, sb, sr, sc],
        )
    };
    let a_view = view(offsets.a, mm.m, mm.k, split.a, mm.a_strides);
    let b_view = view(offsets.b, mm.k, mm.n, split.b, mm.b_strides);
    let c_view = view(offsets.c, mm.m, mm.n, split.c, mm.c_strides);
    check_view(op, "a", mm.a, a_view)?;
    check_view(op, "b", mm.b, b_view)?;
    check_view(op, "out", mm.out, c_view)?;
    if let Some(res) = mm.residual {
        check_view(op, "residual", res, c_view)?;
    }
    let inputs = [Some(mm.a), Some(mm.b), mm.residual, mm.bias.map(|(t, _)| t)];
    if inputs.iter().flatten().any(|t| *t.buffer == *mm.out.buffer) {
        return Err(Error::invalid(
            op,
            "out shares a buffer with an input; the kernel cannot update in place",
        ));
    }
    let mut flags = 0;
    if let Some((bias, axis)) = mm.bias {
        let want = match axis {
            BiasAxis::M => mm.m,
            BiasAxis::N => mm.n,
        };
        let fits = match offsets.bias {
            None => bias.numel() == want,
            Some(start) => start
                .checked_add(want)
                .is_some_and(|end| end <= bias.numel()),
        };
        if !fits {
            return Err(Error::invalid(
                op,
                format!(
                    "bias along {axis:?} needs {want} elements{}, got shape {:?}",
                    offsets
                        .bias
                        .map(|start| format!(" from element {start}"))
                        .unwrap_or_default(),
                    bias.shape
                ),
            ));
        }
        flags |= FLAG_BIAS;
        if axis == BiasAxis::N {
            flags |= FLAG_BIAS_N;
        }
    }
    if mm.residual.is_some() {
        flags |= FLAG_RESIDUAL;
    }
    if ctx.kernel_shape() == KernelShape::Cpu {
        return matmul_cpu::launch(ctx, mm, offsets, &split, flags, op, label);
    }
    let u = |what: &str, v: usize| to_u32(op, what, v);
    let (wg_m, wg_n) = ctx.tile_policy().workgroup_shape(mm.m, mm.n, mm.batch);
    let n_tiles = mm.n.div_ceil(wg_n as usize * 8);
    let m_tiles = mm.m.div_ceil(wg_m as usize * 8);
    let params = Params {
        batch: u("batch", mm.batch)?,
        m: u("m", mm.m)?,
        n: u("n", mm.n)?,
        k: u("k", mm.k)?,
        a_sb: u("a batch stride", mm.a_strides[0])?,
        a_sm: u("a row stride", mm.a_strides[1])?,
        a_sk: u("a column stride", mm.a_strides[2])?,
        b_sb: u("b batch stride", mm.b_strides[0])?,
        b_sk: u("b row stride", mm.b_strides[1])?,
        b_sn: u("b column stride", mm.b_strides[2])?,
        c_sb: u("out batch stride", mm.c_strides[0])?,
        c_sm: u("out row stride", mm.c_strides[1])?,
        c_sn: u("out column stride", mm.c_strides[2])?,
        flags,
        alpha: mm.alpha,
        output_scale: mm.output_scale,
        n_tiles: u("n tiles", n_tiles)?,
        tiles: u("tiles", n_tiles * m_tiles)?,
        a_off: u("a offset", offsets.a)?,
        b_off: u("b offset", offsets.b)?,
        c_off: u("out offset", offsets.c)?,
        inner: u("batch group", split.inner)?,
        a_so: u("a group stride", split.a)?,
        b_so: u("b group stride", split.b)?,
        c_so: u("out group stride", split.c)?,
        bias_off: u("bias offset", offsets.bias.unwrap_or(0))?,
        ..Params::default()
    };
    // Absent optional operands bind `a` (never read: the flags are clear); a read-only binding
    // must not alias the read-write output.
    let residual = mm.residual.unwrap_or(mm.a);
    let bias = mm.bias.map(|(t, _)| t).unwrap_or(mm.a);
    let a_mode = vec4_mode(
        offsets.a,
        split.batches(split.a, mm.a_strides[0]),
        mm.m,
        mm.k,
        [mm.a_strides[1], mm.a_strides[2]],
    );
    let b_mode = vec4_mode(
        offsets.b,
        split.batches(split.b, mm.b_strides[0]),
        mm.n,
        mm.k,
        [mm.b_strides[2], mm.b_strides[1]],
    );
    // The vec4 views are only read in their modes (which imply ≥ 4 elements), but must bind at
    // least one whole vec4.
    let mut spare_a = None;
    let a4 = vec4_view(ctx, mm.a, &mut spare_a);
    let mut spare_b = None;
    let b4 = vec4_view(ctx, mm.b, &mut spare_b);
    let mut workgroups = grid(ctx, (n_tiles * m_tiles) as u64)?;
    workgroups[2] = u("batch", mm.batch)?;
    let flops = 2 * (mm.batch * mm.m * mm.n * mm.k) as u64;
    Ok(Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::matmul::MAIN,
            constants: &[
                ("WG_M", f64::from(wg_m)),
                ("WG_N", f64::from(wg_n)),
                ("BK", f64::from(BK)),
                ("A_MODE", f64::from(a_mode)),
                ("B_MODE", f64::from(b_mode)),
            ],
            label,
            storage: &[
                &mm.a.buffer,
                a4,
                &mm.b.buffer,
                b4,
                &residual.buffer,
                &bias.buffer,
                &mm.out.buffer,
            ],
            params: &params,
            workgroups,
        },
    )?
    .with_flops(flops))
}

impl BatchSplit {
    /// `(extent, stride)` of the group and inner batch axes of an operand whose batch stride is
    /// `sb` and group stride `so`.
    pub(crate) fn batches(&self, so: usize, sb: usize) -> [(usize, usize); 2] {
        [(self.groups, so), (self.inner, sb)]
    }
}

/// How the kernel may read an operand with `rows` rows (m for A, n for B) and depth `k`, given its
/// batch axes (`(extent, stride)` each) and `[row, k]` element strides: 1 = vec4s along k, 2 =
/// vec4s along the rows, 0 = element by element. A vec4 mode needs the contiguous extent, every
/// other stride and the offset (and so every vec4 start) to be multiples of 4 elements.
pub(crate) fn vec4_mode(
    offset: usize,
    batches: [(usize, usize); 2],
    rows: usize,
    k: usize,
    [sr, sk]: [usize; 2],
) -> u32 {
    let aligned = |stride: usize, extent: usize| extent == 1 || stride.is_multiple_of(4);
    let batch_ok = batches.iter().all(|&(e, s)| aligned(s, e)) && offset.is_multiple_of(4);
    if sk == 1 && k.is_multiple_of(4) && aligned(sr, rows) && batch_ok {
        1
    } else if sr == 1 && rows.is_multiple_of(4) && aligned(sk, k) && batch_ok {
        2
    } else {
        0
    }
}

/// `torch.nn.functional.linear`: `out[M, N] = x[M, K] · weightᵀ + bias`, with `weight` in torch's
/// `[N, K]` layout (read transposed through strides, no copy).
pub fn linear(
    ctx: &GpuContext,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
    label: &str,
) -> Result<Dispatch> {
    let op = format!("linear {label}");
    let (&[m, k], &[n, wk]) = (x.shape.as_slice(), weight.shape.as_slice()) else {
        return Err(Error::invalid(
            op,
            format!(
                "x must be [M, K] and weight [N, K]; got {:?} and {:?}",
                x.shape, weight.shape
            ),
        ));
    };
    if wk != k {
        return Err(Error::invalid(
            op,
            format!(
                "x {:?} has {k} features but weight {:?} expects {wk}",
                x.shape, weight.shape
            ),
        ));
    }
    if out.shape != [m, n] {
        return Err(Error::invalid(
            op,
            format!("out must be [{m}, {n}], got {:?}", out.shape),
        ));
    }
    matmul(
        ctx,
        &Matmul {
            a: x,
            b: weight,
            out,
            bias: bias.map(|b| (b, BiasAxis::N)),
            residual: None,
            batch: 1,
            m,
            n,
            k,
            a_strides: [0, k, 1],
            b_strides: [0, 1, k],
            c_strides: [0, n, 1],
            alpha: 1.0,
            output_scale: 1.0,
        },
        label,
    )
}
