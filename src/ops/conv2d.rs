//! 2-D convolution (`torch.nn.functional.conv2d` plus asymmetric padding) as an implicit GEMM with
//! a fused bias / per-sample bias / residual / scale epilogue (`shaders/conv2d.wgsl`): the conv
//! layers of diffusers' ResNet blocks, Downsample2D and Upsample2D.

use crate::error::{Error, Result};
use crate::gpu::{
    entry, grid, shader_flags, uniform_struct, Dispatch, DispatchArgs, GpuContext, KernelShape,
    Tensor, UniformLayout,
};
use crate::ops::conv2d_cpu;
use crate::ops::matmul::to_u32;

/// Zero padding on each side of the input, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    /// The same padding `p` on all four sides (PyTorch's `padding=p`).
    pub fn same(p: usize) -> Self {
        Padding {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

/// Where channel `co` of sample `n` sits in a `batch_bias` operand: element
/// `n · stride + offset + co`. The dense `[N, Cout]` layout is `stride = Cout, offset = 0`; a
/// wider row with an offset reads one slice of several layers' biases stacked along the
/// channels (every resnet's time-embedding projection computed by one GEMM,
/// `crate::model::blocks::resnet::TimeProjections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchBiasView {
    /// Elements from one sample's row to the next (at least Cout).
    pub stride: usize,
    /// Element of sample 0's channel 0.
    pub offset: usize,
}

impl BatchBiasView {
    /// The dense `[N, cout]` layout.
    pub fn dense(cout: usize) -> Self {
        BatchBiasView {
            stride: cout,
            offset: 0,
        }
    }
}

/// One convolution launch:
/// `out = (conv2d(pad(x), weight) + bias[co] + batch_bias[n, co] + residual) · output_scale`, `x`
/// being `input`, or its nearest ×2 upsampling when `upsample` is set.
#[derive(Clone, Copy, Debug)]
pub struct Conv2d<'a> {
    /// `[N, Cin, H, W]` (`[N, Cin, H / 2, W / 2]` with `upsample`).
    pub input: &'a Tensor,
    /// Read `input` as `F.interpolate(input, scale_factor=2, mode="nearest")` — diffusers'
    /// `Upsample2D` folded into the convolution's input gather: the upsampled tensor (4× the
    /// input) is never written, and the result is bit-identical to upsampling first.
    pub upsample: bool,
    /// `[Cout, Cin, kh, kw]`.
    pub weight: &'a Tensor,
    /// `[Cout]`.
    pub bias: Option<&'a Tensor>,
    /// `[N, Cout]`, added to every pixel of channel `co` of sample `n` (the time embedding);
    /// read through `batch_bias_view` when one is given.
    pub batch_bias: Option<&'a Tensor>,
    /// How `batch_bias` is laid out; `None`: dense `[N, Cout]` (its element count must then be
    /// exactly N · Cout).
    pub batch_bias_view: Option<BatchBiasView>,
    /// `[N, Cout, Ho, Wo]`, added before the scale (the ResNet shortcut).
    pub residual: Option<&'a Tensor>,
    /// `[N, Cout, Ho, Wo]`.
    pub out: &'a Tensor,
    pub stride: usize,
    pub padding: Padding,
    /// Multiplies the whole sum (diffusers' `1 / output_scale_factor`).
    pub output_scale: f32,
}

uniform_struct! {
    /// The kernel's parameter block (`Params` in `conv2d.wgsl`).
    pub struct Params = "Params" {
        batch: u32,
        cin: u32,
        h: u32,
        w: u32,
        cout: u32,
        ho: u32,
        wo: u32,
        /// Cin · kh · kw.
        k: u32,
        stride: u32,
        pad_top: u32,
        pad_left: u32,
        /// batch · Ho · Wo.
        npix: u32,
        flags: u32,
        output_scale: f32,
        n_tiles: u32,
        tiles: u32,
        /// `batch_bias` row stride and element offset ([`BatchBiasView`]).
        bb_stride: u32,
        bb_offset: u32,
        /// With `upsample`: the stored input's width.
        src_w: u32,
        _pad1: u32,
    }
}

/// Parameter blocks of this launcher (checked against the shader by `tests/kernel_layout.rs`).
pub const UNIFORMS: &[UniformLayout] = &[Params::LAYOUT];

shader_flags! {
    FLAG_BIAS = 1,
    FLAG_BATCH_BIAS = 2,
    FLAG_RESIDUAL = 4,
}

/// The epilogue's flag bits for `conv`'s optional operands (shared with `conv2d_cpu.wgsl`).
pub(crate) fn epilogue_flags(conv: &Conv2d) -> u32 {
    let mut flags = 0;
    if conv.bias.is_some() {
        flags |= FLAG_BIAS;
    }
    if conv.batch_bias.is_some() {
        flags |= FLAG_BATCH_BIAS;
    }
    if conv.residual.is_some() {
        flags |= FLAG_RESIDUAL;
    }
    flags
}

/// The vec4 view of `tensor` to bind: its own buffer, or `spare` (made here) where the tensor is
/// smaller than one vec4 — the view is then never read, but a binding must hold a whole vec4.
pub(crate) fn vec4_view<'a>(
    ctx: &GpuContext,
    tensor: &'a Tensor,
    spare: &'a mut Option<wgpu::Buffer>,
) -> &'a wgpu::Buffer {
    if tensor.bytes() >= 16 {
        &tensor.buffer
    } else {
        spare.insert(vec4_spare(ctx))
    }
}

/// The `batch_bias` view as the kernels take it (`(stride, offset)` in elements, dense when
/// there is no operand), checked: rows at least Cout apart, and the last sample's last channel
/// inside the operand.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BbView {
    pub stride: u32,
    pub offset: u32,
}

/// `conv`'s `batch_bias` view for a launch of `batch` samples × `cout` channels, checked against
/// the operand (`op` names the layer in errors); both kernel shapes take the result.
pub(crate) fn batch_bias_view(
    op: &str,
    conv: &Conv2d,
    batch: usize,
    cout: usize,
) -> Result<BbView> {
    let view = conv.batch_bias_view.unwrap_or(BatchBiasView::dense(cout));
    if let Some(bb) = conv.batch_bias {
        match conv.batch_bias_view {
            None if bb.numel() != batch * cout => {
                return Err(Error::invalid(
                    op,
                    format!("batch_bias must be [{batch}, {cout}], got {:?}", bb.shape),
                ));
            }
            None => {}
            Some(v) => {
                if v.stride < cout {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "batch_bias view stride {} is less than Cout = {cout}: sample rows \
                             would overlap",
                            v.stride
                        ),
                    ));
                }
                // One past the last element read (sample batch - 1, channel cout - 1).
                let end = (batch - 1)
                    .checked_mul(v.stride)
                    .and_then(|e| e.checked_add(v.offset))
                    .and_then(|e| e.checked_add(cout));
                match end {
                    // The kernels index in u32.
                    Some(end) if end <= bb.numel() => {
                        to_u32(op, "batch_bias view extent", end)?;
                    }
                    _ => {
                        let needs = end
                            .map_or_else(|| "more than usize::MAX".to_owned(), |e| e.to_string());
                        return Err(Error::invalid(
                            op,
                            format!(
                                "batch_bias view (stride {}, offset {}) of {batch} samples x {cout} \
                                 channels needs {needs} elements, but batch_bias {:?} has {}",
                                v.stride,
                                v.offset,
                                bb.shape,
                                bb.numel()
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(BbView {
        stride: to_u32(op, "batch_bias stride", view.stride)?,
        offset: to_u32(op, "batch_bias offset", view.offset)?,
    })
}

/// Whether a stride-1, padding-1 `(kh, kw)` convolution of the nearest ×2 upsampling of an
/// `(h, w)` input should read it through the gather (`Conv2d::upsample`) rather than from an
/// upsampled tensor: always, unless `ctx` runs the CPU shape and folding would move the layer off
/// `conv2d_cpu` — its fused entry (`k3r2u`) needs an input width that is a multiple of 4, while
/// the unfused conv takes any upsampled width that is one (a 14-wide input: fused it would fall
/// back to conv2d.wgsl, several times slower on a CPU adapter than the launch it saves).
pub fn fold_upsample(ctx: &GpuContext, (kh, kw): (usize, usize), (h, w): (usize, usize)) -> bool {
    if ctx.kernel_shape() != KernelShape::Cpu {
        return true;
    }
    let same = Padding::same(1);
    conv2d_cpu::fits((kh, kw), 1, same, (h, w), true).is_some()
        || conv2d_cpu::fits((kh, kw), 1, same, (2 * h, 2 * w), false).is_none()
}

/// K slice depth (the `BK` override); `ktab` is padded to a multiple of it.
const BK: usize = 16;

/// Output height and width of a `kh × kw` convolution with `stride` over an `h × w` input padded
/// by `padding`: `(h + top + bottom − kh) / stride + 1`, and likewise for the width.
pub fn conv2d_output_hw(
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: Padding,
) -> Result<(usize, usize)> {
    if stride == 0 || kh == 0 || kw == 0 {
        return Err(Error::invalid(
            "conv2d",
            format!("stride ({stride}) and kernel size ({kh}x{kw}) must be positive"),
        ));
    }
    let hp = h + padding.top + padding.bottom;
    let wp = w + padding.left + padding.right;
    if hp < kh || wp < kw {
        return Err(Error::invalid(
            "conv2d",
            format!(
                "a {kh}x{kw} kernel does not fit the {h}x{w} input padded to {hp}x{wp} ({padding:?})"
            ),
        ));
    }
    Ok(((hp - kh) / stride + 1, (wp - kw) / stride + 1))
}

/// The im2col column table: for each k = (ci, ky, kx) of `[0, K)` padded to a multiple of `BK`,
/// `(ci·H·W + ky·W + kx, ky, kx, 1)` (`upsample`: `(ci·H·W / 4, ky, kx, 1)`, the kernel adds the
/// halved window position itself); padding entries are all zero (so `k < K` reads as false).
/// `h × w` is the size the window runs over.
fn gather_table(
    cin: usize,
    (kh, kw): (usize, usize),
    (h, w): (usize, usize),
    upsample: bool,
) -> Vec<[u32; 4]> {
    let k = cin * kh * kw;
    let mut table = vec![[0u32; 4]; k.div_ceil(BK) * BK];
    for ci in 0..cin {
        for ky in 0..kh {
            for kx in 0..kw {
                let offset = if upsample {
                    ci * (h / 2) * (w / 2)
                } else {
                    ci * h * w + ky * w + kx
                };
                table[(ci * kh + ky) * kw + kx] = [offset as u32, ky as u32, kx as u32, 1];
            }
        }
    }
    table
}

/// A 16-byte buffer to bind where a vec4 view is declared but never read and the real operand is
/// smaller than one vec4 (pipelines use automatic layouts, so every binding must be filled).
pub(crate) fn vec4_spare(ctx: &GpuContext) -> wgpu::Buffer {
    ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("unused vec4 view"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

fn shape4(op: &str, name: &str, t: &Tensor) -> Result<[usize; 4]> {
    match t.shape.as_slice() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        other => Err(Error::invalid(
            op,
            format!("{name} must be 4-D, got shape {other:?}"),
        )),
    }
}

/// Builds the launch for `conv`, checking every shape. Reports `2·N·Cout·Ho·Wo·Cin·kh·kw` FLOPs.
pub fn conv2d(ctx: &GpuContext, conv: &Conv2d, label: &str) -> Result<Dispatch> {
    let op = format!("conv2d {label}");
    let op = op.as_str();
    let [batch, cin, src_h, src_w] = shape4(op, "input", conv.input)?;
    // The size the convolution runs over.
    let (h, w) = if conv.upsample {
        (2 * src_h, 2 * src_w)
    } else {
        (src_h, src_w)
    };
    let [cout, wcin, kh, kw] = shape4(op, "weight", conv.weight)?;
    if wcin != cin {
        return Err(Error::invalid(
            op,
            format!(
                "weight {:?} expects {wcin} input channels but input {:?} has {cin}",
                conv.weight.shape, conv.input.shape
            ),
        ));
    }
    if batch == 0 || cin == 0 || cout == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "empty tensors: input {:?}, weight {:?}",
                conv.input.shape, conv.weight.shape
            ),
        ));
    }
    let (ho, wo) = conv2d_output_hw(h, w, kh, kw, conv.stride, conv.padding)
        .map_err(|e| Error::invalid(op, e.to_string()))?;
    let out_shape = [batch, cout, ho, wo];
    if conv.out.shape != out_shape {
        return Err(Error::invalid(
            op,
            format!("out must be {out_shape:?}, got {:?}", conv.out.shape),
        ));
    }
    if let Some(bias) = conv.bias {
        if bias.shape != [cout] {
            return Err(Error::invalid(
                op,
                format!("bias must be [{cout}], got {:?}", bias.shape),
            ));
        }
    }
    let bb_view = batch_bias_view(op, conv, batch, cout)?;
    if let Some(res) = conv.residual {
        if res.shape != out_shape {
            return Err(Error::invalid(
                op,
                format!("residual must be {out_shape:?}, got {:?}", res.shape),
            ));
        }
    }
    let inputs = [
        Some(conv.input),
        Some(conv.weight),
        conv.bias,
        conv.batch_bias,
        conv.residual,
    ];
    if inputs
        .iter()
        .flatten()
        .any(|t| *t.buffer == *conv.out.buffer)
    {
        return Err(Error::invalid(
            op,
            "out shares a buffer with an input; the kernel cannot update in place",
        ));
    }
    let k = cin * kh * kw;
    let npix = batch * ho * wo;
    // Every index the kernel forms is below one of these element counts.
    to_u32(op, "input elements", conv.input.numel())?;
    to_u32(op, "output elements", conv.out.numel())?;
    to_u32(op, "weight elements", conv.weight.numel())?;
    if conv.upsample {
        // The kernel's plane arithmetic runs at the upsampled size.
        to_u32(op, "upsampled input elements", batch * cin * h * w)?;
    }
    if ctx.kernel_shape() == KernelShape::Cpu {
        let fit = conv2d_cpu::fits(
            (kh, kw),
            conv.stride,
            conv.padding,
            (src_h, src_w),
            conv.upsample,
        );
        if let Some(variant) = fit {
            let layer = conv2d_cpu::Layer {
                batch,
                cin,
                h: src_h,
                w: src_w,
                cout,
                variant,
                batch_bias: bb_view,
            };
            return conv2d_cpu::launch(ctx, conv, &layer, op, label);
        }
    }
    let u = |what: &str, v: usize| to_u32(op, what, v);
    let (wg_m, wg_n) = ctx.tile_policy().workgroup_shape(cout, npix, 1);
    let n_tiles = npix.div_ceil(wg_n as usize * 8);
    let m_tiles = cout.div_ceil(wg_m as usize * 8);
    let flags = epilogue_flags(conv);
    let params = Params {
        batch: u("batch", batch)?,
        cin: u("Cin", cin)?,
        h: u("H", h)?,
        w: u("W", w)?,
        cout: u("Cout", cout)?,
        ho: u("Ho", ho)?,
        wo: u("Wo", wo)?,
        k: u("K", k)?,
        stride: u("stride", conv.stride)?,
        pad_top: u("top padding", conv.padding.top)?,
        pad_left: u("left padding", conv.padding.left)?,
        npix: u("N·Ho·Wo", npix)?,
        flags,
        output_scale: conv.output_scale,
        n_tiles: u("pixel tiles", n_tiles)?,
        tiles: u("tiles", n_tiles * m_tiles)?,
        bb_stride: bb_view.stride,
        bb_offset: bb_view.offset,
        src_w: if conv.upsample {
            u("input W", src_w)?
        } else {
            0
        },
        _pad1: 0,
    };
    let table = gather_table(cin, (kh, kw), (h, w), conv.upsample);
    let ktab = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(&format!("{op}: im2col table")),
        contents: bytemuck::cast_slice(&table),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let workgroups = grid(ctx, (n_tiles * m_tiles) as u64)?;
    // Absent optional operands bind the weight (never read: their flag is clear).
    let dummy = conv.weight;
    // The vec4 view of the weights is only read when K % 4 == 0, but must bind a whole vec4.
    let mut spare = None;
    let weight4 = vec4_view(ctx, conv.weight, &mut spare);
    let flops = 2 * (npix * cout * k) as u64;
    Ok(Dispatch::new(
        ctx,
        &DispatchArgs {
            entry: entry::conv2d::MAIN,
            constants: &[
                ("WG_M", f64::from(wg_m)),
                ("WG_N", f64::from(wg_n)),
                ("BK", BK as f64),
                ("W_VEC4", if k.is_multiple_of(4) { 1.0 } else { 0.0 }),
                ("UPSAMPLE", if conv.upsample { 1.0 } else { 0.0 }),
            ],
            label,
            storage: &[
                &conv.input.buffer,
                &conv.residual.unwrap_or(dummy).buffer,
                &conv.batch_bias.unwrap_or(dummy).buffer,
                &conv.weight.buffer,
                weight4,
                &conv.bias.unwrap_or(dummy).buffer,
                &ktab,
                &conv.out.buffer,
            ],
            params: &params,
            workgroups,
        },
    )?
    .with_flops(flops))
}
