//! The GEMM-shaped GPU ops — strided batched matmul and implicit-GEMM conv2d — against their f64
//! CPU references on odd shapes (every epilogue term on and off, every stride pattern the model
//! uses, random shape draws over several seeds), shape validation, and throughput figures.

mod common;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use common::{bits_differ, cpu_kernels_available, ctx, Rng};
use wgpu_diffusion::gpu::{Dispatch, GpuContext, Kernel, KernelChoice};
use wgpu_diffusion::ops::conv2d::{conv2d, conv2d_output_hw, BatchBiasView, Conv2d, Padding};
use wgpu_diffusion::ops::matmul::{linear, matmul, BiasAxis, Matmul};
use wgpu_diffusion::ops::upsample::{upsample_nearest2x, UpsampleNearest2x};
use wgpu_diffusion::reference::{compare, conv as reference, Comparison};
use wgpu_diffusion::{Error, Tensor};

fn upload(ctx: &GpuContext, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(ctx, shape, data, "test input").expect("upload")
}

fn zeros(ctx: &GpuContext, shape: &[usize]) -> Tensor {
    Tensor::zeros(ctx, shape, "test output").expect("zeros")
}

/// Runs `d` and reads `out` back.
fn run(ctx: &GpuContext, d: &Dispatch, out: &Tensor) -> Vec<f32> {
    ctx.submit(&[d]).expect("submit");
    out.read(ctx).expect("read")
}

/// The tolerance for a K-term f32 dot product of O(1) terms scaled by 1/√K: f32 rounding grows
/// like √K·ε per term, so atol 1e-5·√K with a small rtol leaves an order of magnitude of margin.
fn check(name: &str, got: &[f32], want: &[f64], k: usize) -> Comparison {
    compare(name, got, want, 1e-5 * (k as f64).sqrt().max(1.0), 1e-5)
}

/// Correctness tests share this lock; throughput tests take it exclusively, so their figures are
/// not diluted by other tests competing for the (possibly CPU-emulated) device.
static DEVICE: RwLock<()> = RwLock::new(());

fn shared_device() -> RwLockReadGuard<'static, ()> {
    DEVICE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive_device() -> RwLockWriteGuard<'static, ()> {
    DEVICE.write().unwrap_or_else(|e| e.into_inner())
}

/// Throughput of `d`: after a warm-up, records it five times in one submit and waits; three such
/// trials, returning (best, median) GFLOP/s (the best is the least disturbed by other processes).
fn gflops(ctx: &GpuContext, d: &Dispatch) -> (f64, f64) {
    const REPS: usize = 5;
    ctx.submit(&[d]).expect("warm-up submit");
    ctx.wait().expect("warm-up wait");
    let batch: Vec<&Dispatch> = std::iter::repeat_n(d, REPS).collect();
    let mut trials: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            ctx.submit(&batch).expect("submit");
            ctx.wait().expect("wait");
            let secs = start.elapsed().as_secs_f64();
            (d.flops * REPS as u64) as f64 / secs / 1e9
        })
        .collect();
    trials.sort_by(f64::total_cmp);
    (trials[2], trials[1])
}

// ---------------------------------------------------------------------------------------------
// conv2d

/// One convolution case: shapes, padding and which epilogue terms are on.
#[derive(Clone, Copy, Debug)]
struct ConvCase {
    batch: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: Padding,
    bias: bool,
    batch_bias: bool,
    /// `(stride, offset)`: the per-sample bias is read through a `BatchBiasView` of a wider
    /// buffer (`offset + batch · stride` elements); `None`: a dense `[N, Cout]` one.
    bb_view: Option<(usize, usize)>,
    residual: bool,
    scale: f32,
    /// The input (`h × w`) is read as its nearest ×2 upsampling: the conv runs over `2h × 2w`.
    upsample: bool,
}

impl ConvCase {
    fn new(batch: usize, cin: usize, cout: usize, hw: usize, k: usize, stride: usize) -> Self {
        ConvCase {
            batch,
            cin,
            cout,
            h: hw,
            w: hw,
            kh: k,
            kw: k,
            stride,
            pad: Padding::same(k / 2),
            bias: true,
            batch_bias: false,
            bb_view: None,
            residual: false,
            scale: 1.0,
            upsample: false,
        }
    }
}

/// `F.interpolate(x, scale_factor=2, mode="nearest")` of `[planes, h, w]` data.
fn upsample_ref(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(planes * 4 * h * w);
    for p in 0..planes {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                out.push(x[(p * h + y / 2) * w + xx / 2]);
            }
        }
    }
    out
}

/// Runs `case` on the GPU and the CPU reference with data from `seed` and compares.
fn conv_case(ctx: &GpuContext, case: ConvCase, seed: u64) -> Comparison {
    conv_run(ctx, case, seed).2
}

/// [`conv_case`] that also returns the output and the kernel that computed it.
fn conv_run(ctx: &GpuContext, case: ConvCase, seed: u64) -> (Vec<f32>, Kernel, Comparison) {
    conv_run_with(ctx, case, seed, false)
}

/// [`conv_run`]; with `separate_upsample` an `upsample` case first runs `upsample_nearest2x`
/// into a tensor of its own and convolves that (the unfused path), with the same data.
fn conv_run_with(
    ctx: &GpuContext,
    case: ConvCase,
    seed: u64,
    separate_upsample: bool,
) -> (Vec<f32>, Kernel, Comparison) {
    let c = case;
    let mut rng = Rng::new(seed);
    // The size the convolution runs over.
    let (ch, cw) = if c.upsample {
        (2 * c.h, 2 * c.w)
    } else {
        (c.h, c.w)
    };
    let (ho, wo) = conv2d_output_hw(ch, cw, c.kh, c.kw, c.stride, c.pad).expect("output size");
    let k = c.cin * c.kh * c.kw;
    let wscale = 1.0 / (k as f32).sqrt();
    let x = rng.vec(c.batch * c.cin * c.h * c.w, -1.0, 1.0);
    let w = rng.vec(c.cout * k, -wscale, wscale);
    let bias = rng.vec(c.cout, -1.0, 1.0);
    // With a view: the whole wider buffer, and the dense [N, Cout] the view selects (what the
    // reference adds).
    let (bb_data, bb_shape) = match c.bb_view {
        None => (rng.vec(c.batch * c.cout, -1.0, 1.0), vec![c.batch, c.cout]),
        Some((stride, offset)) => {
            let len = offset + c.batch * stride;
            (rng.vec(len, -1.0, 1.0), vec![len])
        }
    };
    let batch_bias: Vec<f32> = match c.bb_view {
        None => bb_data.clone(),
        Some((stride, offset)) => (0..c.batch)
            .flat_map(|n| bb_data[n * stride + offset..][..c.cout].to_vec())
            .collect(),
    };
    let residual = rng.vec(c.batch * c.cout * ho * wo, -1.0, 1.0);
    let out_shape = [c.batch, c.cout, ho, wo];

    let x_t = upload(ctx, &[c.batch, c.cin, c.h, c.w], &x);
    let w_t = upload(ctx, &[c.cout, c.cin, c.kh, c.kw], &w);
    let bias_t = upload(ctx, &[c.cout], &bias);
    let bb_t = upload(ctx, &bb_shape, &bb_data);
    let res_t = upload(ctx, &out_shape, &residual);
    let out = zeros(ctx, &out_shape);
    // The unfused path: the upsampled tensor and its launch.
    let unfused = (separate_upsample && c.upsample).then(|| {
        let up_t = zeros(ctx, &[c.batch, c.cin, ch, cw]);
        let args = UpsampleNearest2x {
            input: &x_t,
            out: &up_t,
        };
        let up = upsample_nearest2x(ctx, &args, "test upsample").expect("upsample dispatch");
        (up_t, up)
    });
    let d = conv2d(
        ctx,
        &Conv2d {
            input: unfused.as_ref().map_or(&x_t, |(up_t, _)| up_t),
            upsample: c.upsample && unfused.is_none(),
            weight: &w_t,
            bias: c.bias.then_some(&bias_t),
            batch_bias: c.batch_bias.then_some(&bb_t),
            batch_bias_view: c
                .bb_view
                .map(|(stride, offset)| BatchBiasView { stride, offset }),
            residual: c.residual.then_some(&res_t),
            out: &out,
            stride: c.stride,
            padding: c.pad,
            output_scale: c.scale,
        },
        "test",
    )
    .expect("conv2d dispatch");
    assert_eq!(
        d.flops,
        2 * (c.batch * c.cout * ho * wo * k) as u64,
        "{c:?}: FLOP count"
    );
    let got = match &unfused {
        Some((_, up)) => {
            ctx.submit(&[up, &d]).expect("submit");
            out.read(ctx).expect("read")
        }
        None => run(ctx, &d, &out),
    };
    let x_conv = if c.upsample {
        upsample_ref(&x, c.batch * c.cin, c.h, c.w)
    } else {
        x.clone()
    };
    let want = reference::conv2d(&reference::Conv2dRef {
        input: &x_conv,
        in_shape: [c.batch, c.cin, ch, cw],
        weight: &w,
        w_shape: [c.cout, c.cin, c.kh, c.kw],
        bias: c.bias.then_some(&bias[..]),
        batch_bias: c.batch_bias.then_some(&batch_bias[..]),
        residual: c.residual.then_some(&residual[..]),
        stride: c.stride,
        pad: [c.pad.top, c.pad.bottom, c.pad.left, c.pad.right],
        output_scale: f64::from(c.scale),
    });
    let cmp = check(&format!("{c:?}"), &got, &want, k);
    (got, d.kernel, cmp)
}

/// The CPU-shaped kernel (`conv2d_cpu.wgsl`: subgroup broadcasts, no barriers) gives the very
/// bits of the GPU-shaped one on every layer it takes — 3×3 rows that tile the subgroup (W = 4, 8,
/// 16, 32) and rows that do not (W = 12, 20, 64: edge pixels from memory), even heights (two
/// output rows per lane) and odd ones (one), 1×1, stride 2 (Downsample2D), Cout and pixel
/// counts off the 8-lane blocks, every epilogue term — and declines the layers it does not fit.
/// CI's lavapipe always has it; another adapter without 8-lane subgroups must refuse `cpu`
/// with the reason.
#[test]
fn conv_cpu_shape_matches_gpu_shape_bit_for_bit() {
    let _device = shared_device();
    let ctx = ctx();
    if !cpu_kernels_available(&ctx) {
        return;
    }
    let mut cases = vec![];
    for (i, &(batch, cin, cout, h, w, k)) in [
        (1, 3, 8, 4, 4, 3),
        (2, 5, 13, 5, 8, 3),
        (1, 16, 16, 16, 16, 3),
        (3, 7, 24, 32, 32, 3),
        (1, 4, 3, 6, 12, 3),
        (2, 9, 17, 3, 20, 3),
        (1, 2, 9, 2, 64, 3),
        (2, 6, 11, 7, 8, 1),
        (1, 33, 40, 4, 16, 1),
        (1, 1, 1, 1, 4, 1),
        (2, 8, 16, 7, 16, 3),
        (1, 3, 5, 1, 8, 3),
    ]
    .iter()
    .enumerate()
    {
        let mut case = ConvCase::new(batch, cin, cout, h, k, 1);
        case.w = w;
        case.bias = i % 2 == 0;
        case.batch_bias = i % 3 != 1;
        case.residual = i % 4 != 2;
        case.scale = if i % 2 == 0 { 1.0 } else { 0.75 };
        cases.push(case);
    }
    // Stride 2, 3x3, padding 1 or right/bottom only (Downsample2D): rows that tile the subgroup
    // and rows that do not.
    for (i, &(batch, cin, cout, h, w)) in [
        (1, 3, 8, 4, 8),
        (2, 5, 13, 8, 16),
        (1, 4, 9, 6, 64),
        (1, 2, 8, 2, 128),
        (3, 7, 17, 10, 24),
        (1, 4, 9, 6, 64),
        (2, 3, 5, 4, 128),
    ]
    .iter()
    .enumerate()
    {
        let mut case = ConvCase::new(batch, cin, cout, h, 3, 2);
        case.w = w;
        case.pad = if i % 2 == 0 {
            Padding::same(1)
        } else {
            Padding {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            }
        };
        case.bias = i % 2 == 1;
        case.residual = i % 3 == 0;
        cases.push(case);
    }
    for (i, &case) in cases.iter().enumerate() {
        let seed = 500 + i as u64;
        ctx.set_kernels(KernelChoice::Gpu).expect("gpu shape");
        let (gpu, gk, gc) = conv_run(&ctx, case, seed);
        assert!(gc.ok(), "gpu shape {gc}");
        assert_eq!(gk, Kernel::Conv2d, "{case:?}");
        ctx.set_kernels(KernelChoice::Cpu).expect("cpu shape");
        let (cpu, ck, cc) = conv_run(&ctx, case, seed);
        assert!(cc.ok(), "cpu shape {cc}");
        assert_eq!(
            ck,
            Kernel::Conv2dCpu,
            "{case:?} did not take the CPU-shaped kernel"
        );
        let differ = bits_differ(&gpu, &cpu);
        assert_eq!(
            differ,
            0,
            "{case:?}: {differ} of {} values differ",
            gpu.len()
        );
    }
    // Layers outside the kernel stay on conv2d.wgsl under the CPU shape.
    let mut odd_width = ConvCase::new(1, 4, 8, 6, 3, 1);
    odd_width.w = 7;
    let mut strided = ConvCase::new(1, 4, 8, 8, 3, 2);
    strided.pad = Padding::same(1);
    strided.w = 12;
    let mut asymmetric = ConvCase::new(1, 4, 8, 8, 3, 1);
    asymmetric.pad = Padding {
        top: 0,
        bottom: 1,
        left: 0,
        right: 1,
    };
    for case in [odd_width, strided, asymmetric] {
        let (_, kernel, cmp) = conv_run(&ctx, case, 9);
        assert!(cmp.ok(), "{cmp}");
        assert_eq!(kernel, Kernel::Conv2d, "{case:?}");
    }
}

/// Upsample2D folded into the convolution (`upsample`: the input read as its nearest ×2
/// upsampling through the gather) against the f64 reference on the upsampled input, and bit for
/// bit against the unfused path (`upsample_nearest2x` into a tensor, then the conv) — on the
/// GPU-shaped kernel for every case (odd sizes, 1×1, stride 2, asymmetric padding) and, where the
/// device has it, on the CPU-shaped `k3r2u` entry for 3×3 "same" layers with W % 4 == 0: rows
/// that tile the subgroup (W = 4, 16) and rows whose edges come from memory (W = 12, 20, 64),
/// Cout off the 8-lane blocks, every epilogue term.
#[test]
fn conv_reads_nearest_upsampled_input() {
    let _device = shared_device();
    let ctx = ctx();
    let up = |batch, cin, cout, h, w, k, stride, i: usize| {
        let mut c = ConvCase::new(batch, cin, cout, h, k, stride);
        c.w = w;
        c.upsample = true;
        c.bias = i.is_multiple_of(2);
        c.batch_bias = i % 3 != 1;
        c.residual = i % 4 != 2;
        c.scale = if i.is_multiple_of(2) { 1.0 } else { 0.75 };
        c
    };
    // (case, whether the CPU-shaped kernel takes it)
    let mut cases = vec![
        (up(1, 3, 8, 2, 4, 3, 1, 0), true),
        (up(2, 5, 13, 3, 12, 3, 1, 1), true),
        (up(1, 16, 16, 8, 16, 3, 1, 2), true),
        (up(3, 7, 17, 5, 20, 3, 1, 3), true),
        (up(1, 4, 9, 1, 64, 3, 1, 4), true),
        (up(2, 8, 24, 4, 8, 3, 1, 5), true),
        // conv2d.wgsl under either shape: odd width, 1x1, stride 2.
        (up(2, 5, 7, 3, 5, 3, 1, 6), false),
        (up(1, 6, 5, 4, 4, 1, 1, 7), false),
        (up(1, 3, 6, 4, 6, 3, 2, 8), false),
    ];
    let mut tail = up(1, 4, 5, 3, 4, 3, 1, 9);
    tail.pad = Padding {
        top: 0,
        bottom: 1,
        left: 0,
        right: 1,
    };
    cases.push((tail, false));
    let cpu = cpu_kernels_available(&ctx);
    for (i, (case, cpu_fits)) in cases.into_iter().enumerate() {
        let seed = 900 + i as u64;
        ctx.set_kernels(KernelChoice::Gpu).expect("gpu shape");
        let (gpu, gk, gc) = conv_run(&ctx, case, seed);
        assert!(gc.ok(), "gpu shape {gc}");
        assert_eq!(gk, Kernel::Conv2d, "{case:?}");
        let (unfused, _, uc) = conv_run_with(&ctx, case, seed, true);
        assert!(uc.ok(), "unfused {uc}");
        let differ = bits_differ(&gpu, &unfused);
        assert_eq!(
            differ, 0,
            "{case:?}: {differ} values differ from the unfused path"
        );
        if !cpu {
            continue;
        }
        ctx.set_kernels(KernelChoice::Cpu).expect("cpu shape");
        let (cpu_out, ck, cc) = conv_run(&ctx, case, seed);
        assert!(cc.ok(), "cpu shape {cc}");
        let expected = if cpu_fits {
            Kernel::Conv2dCpu
        } else {
            Kernel::Conv2d
        };
        assert_eq!(ck, expected, "{case:?}");
        let differ = bits_differ(&gpu, &cpu_out);
        assert_eq!(
            differ, 0,
            "{case:?}: {differ} values differ between the kernel shapes"
        );
    }
}

/// A per-sample bias read through a strided, offset view (one resnet's columns of the fused
/// time projections `[N, ΣCout]`): odd Cout, batch 3, rows wider than Cout, a nonzero offset —
/// against the f64 reference fed the columns the view selects, on the GPU-shaped kernel and, where
/// the device has it, the CPU-shaped one, which must give the same bits. A kernel that ignored the
/// stride or the offset would add other columns and fail the comparison.
#[test]
fn conv_batch_bias_view() {
    let _device = shared_device();
    let ctx = ctx();
    let with_view = |case: ConvCase, stride: usize, offset: usize| ConvCase {
        batch_bias: true,
        bb_view: Some((stride, offset)),
        residual: true,
        scale: 0.75,
        ..case
    };
    let mut wide = ConvCase::new(3, 5, 13, 8, 3, 1);
    wide.w = 16;
    let mut one_by_one = ConvCase::new(3, 6, 7, 4, 1, 1);
    one_by_one.w = 8;
    let cases = [
        // 3x3 and 1x1 "same" layers on W % 4 == 0: the CPU-shaped kernel takes them.
        with_view(wide, 29, 11),
        with_view(one_by_one, 40, 33),
        // Rows one wider than Cout.
        with_view(ConvCase::new(3, 4, 9, 8, 3, 1), 10, 1),
        // Odd width: conv2d.wgsl under either shape.
        with_view(ConvCase::new(3, 3, 5, 7, 3, 1), 17, 12),
    ];
    let cpu = cpu_kernels_available(&ctx);
    for (i, case) in cases.into_iter().enumerate() {
        let seed = 700 + i as u64;
        ctx.set_kernels(KernelChoice::Gpu).expect("gpu shape");
        let (gpu, gk, gc) = conv_run(&ctx, case, seed);
        assert!(gc.ok(), "gpu shape {gc}");
        assert_eq!(gk, Kernel::Conv2d, "{case:?}");
        if !cpu {
            continue;
        }
        ctx.set_kernels(KernelChoice::Cpu).expect("cpu shape");
        let (cpu_out, ck, cc) = conv_run(&ctx, case, seed);
        assert!(cc.ok(), "cpu shape {cc}");
        let expected = if i < 3 {
            Kernel::Conv2dCpu
        } else {
            Kernel::Conv2d
        };
        assert_eq!(ck, expected, "{case:?}");
        let differ = bits_differ(&gpu, &cpu_out);
        assert_eq!(
            differ,
            0,
            "{case:?}: {differ} of {} values differ",
            gpu.len()
        );
    }
    ctx.set_kernels(KernelChoice::Auto).expect("auto shape");
}

/// A `batch_bias` view must stay inside its operand, with rows at least Cout apart; the error
/// names the operand, the view and the sizes. Checked before the kernel shape is chosen, so both
/// shapes refuse alike.
#[test]
fn conv_rejects_bad_batch_bias_view() {
    let _device = shared_device();
    let ctx = ctx();
    let x = zeros(&ctx, &[2, 4, 8, 8]);
    let w = zeros(&ctx, &[6, 4, 3, 3]);
    let out = zeros(&ctx, &[2, 6, 8, 8]);
    // Two rows of 10: sample 1's channels 0..6 at offset 4 end exactly at element 20.
    let bb = zeros(&ctx, &[2, 10]);
    let good = Conv2d {
        input: &x,
        upsample: false,
        weight: &w,
        bias: None,
        batch_bias: Some(&bb),
        batch_bias_view: Some(BatchBiasView {
            stride: 10,
            offset: 4,
        }),
        residual: None,
        out: &out,
        stride: 1,
        padding: Padding::same(1),
        output_scale: 1.0,
    };
    for choice in [KernelChoice::Gpu, KernelChoice::Auto] {
        ctx.set_kernels(choice).expect("kernel shape");
        conv2d(&ctx, &good, "good view").expect("a view that fits builds");
        let cases = [
            (
                10,
                5,
                vec![
                    "batch_bias",
                    "stride 10, offset 5",
                    "21",
                    "[2, 10]",
                    "has 20",
                ],
            ),
            (
                15,
                0,
                vec!["batch_bias", "stride 15, offset 0", "21", "has 20"],
            ),
            (5, 0, vec!["batch_bias", "stride 5", "Cout = 6"]),
            (usize::MAX, 0, vec!["batch_bias", "more than usize::MAX"]),
        ];
        for (stride, offset, needles) in cases {
            let bad = Conv2d {
                batch_bias_view: Some(BatchBiasView { stride, offset }),
                ..good
            };
            match conv2d(&ctx, &bad, "bad view") {
                Err(e @ Error::InvalidArgument { .. }) => {
                    let msg = e.to_string();
                    for needle in needles {
                        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
                    }
                }
                Err(e) => {
                    panic!("stride {stride}, offset {offset}: expected InvalidArgument, got {e}")
                }
                Ok(_) => {
                    panic!("stride {stride}, offset {offset}: a view past the end was accepted")
                }
            }
        }
    }
    // Without a view the operand must be exactly [N, Cout].
    let dense_bad = Conv2d {
        batch_bias_view: None,
        ..good
    };
    assert!(conv2d(&ctx, &dense_bad, "dense").is_err());
    ctx.set_kernels(KernelChoice::Auto).expect("auto shape");
}

#[test]
fn conv_output_size() {
    let p1 = Padding::same(1);
    assert_eq!(conv2d_output_hw(32, 32, 3, 3, 1, p1).unwrap(), (32, 32));
    assert_eq!(conv2d_output_hw(32, 32, 3, 3, 2, p1).unwrap(), (16, 16));
    let down = Padding {
        top: 0,
        bottom: 1,
        left: 0,
        right: 1,
    };
    assert_eq!(conv2d_output_hw(32, 32, 3, 3, 2, down).unwrap(), (16, 16));
    assert_eq!(conv2d_output_hw(5, 5, 3, 3, 2, down).unwrap(), (2, 2));
    assert_eq!(
        conv2d_output_hw(5, 7, 1, 1, 1, Padding::same(0)).unwrap(),
        (5, 7)
    );
    assert!(conv2d_output_hw(2, 2, 3, 3, 1, Padding::same(0)).is_err());
    assert!(conv2d_output_hw(8, 8, 3, 3, 0, p1).is_err());
}

#[test]
fn conv_edge_cases() {
    let _device = shared_device();
    let ctx = ctx();
    let down = Padding {
        top: 0,
        bottom: 1,
        left: 0,
        right: 1,
    };
    let cases = [
        // The UNet's first layer: 3 channels in, tiny image.
        ConvCase::new(1, 3, 8, 5, 3, 1),
        // 1×1 convolutions (conv_shortcut), no padding, odd channel counts.
        ConvCase::new(1, 5, 7, 5, 1, 1),
        ConvCase {
            residual: true,
            scale: 0.5,
            ..ConvCase::new(3, 13, 5, 6, 1, 1)
        },
        // Downsample2D with padding 0: asymmetric pad, stride 2, odd and even sizes.
        ConvCase {
            pad: down,
            ..ConvCase::new(1, 4, 4, 5, 3, 2)
        },
        ConvCase {
            pad: down,
            ..ConvCase::new(3, 6, 6, 8, 3, 2)
        },
        // Stride 2 with symmetric padding.
        ConvCase::new(2, 3, 5, 7, 3, 2),
        // Every epilogue term, batch 3, output scale 1/√2.
        ConvCase {
            batch_bias: true,
            residual: true,
            scale: std::f32::consts::FRAC_1_SQRT_2,
            ..ConvCase::new(3, 5, 9, 5, 3, 1)
        },
        // No bias at all; only the per-sample bias.
        ConvCase {
            bias: false,
            batch_bias: true,
            ..ConvCase::new(2, 3, 3, 5, 3, 1)
        },
        // No padding: the 3×3 window covers the whole 3×3 image (one output pixel).
        ConvCase {
            pad: Padding::same(0),
            ..ConvCase::new(1, 2, 3, 3, 3, 1)
        },
        // Non-square kernel and image, lopsided padding.
        ConvCase {
            w: 9,
            kw: 2,
            pad: Padding {
                top: 2,
                bottom: 0,
                left: 1,
                right: 3,
            },
            ..ConvCase::new(2, 3, 4, 5, 3, 1)
        },
        // K (33·9) not a multiple of the K slice, Cout and pixels past one 128-wide tile.
        ConvCase {
            batch_bias: true,
            residual: true,
            ..ConvCase::new(2, 33, 130, 9, 3, 1)
        },
        // 1-pixel image, 1 channel.
        ConvCase::new(1, 1, 1, 1, 3, 1),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let c = conv_case(&ctx, case, 100 + i as u64);
        assert!(c.ok(), "{c}");
    }
}

#[test]
fn conv_random_shapes() {
    let _device = shared_device();
    let ctx = ctx();
    let mut shapes = std::collections::HashSet::new();
    for seed in 0..12u64 {
        let mut rng = Rng::new(seed);
        let k = [1, 3, 3, 2][rng.range(0, 3)];
        let case = ConvCase {
            batch: rng.range(1, 3),
            cin: rng.range(1, 24),
            cout: rng.range(1, 40),
            h: rng.range(1, 13),
            w: rng.range(1, 13),
            kh: k,
            kw: k,
            stride: rng.range(1, 2),
            pad: Padding {
                top: rng.range(0, 2),
                bottom: rng.range(0, 2),
                left: rng.range(0, 2),
                right: rng.range(0, 2),
            },
            bias: rng.range(0, 1) == 1,
            batch_bias: rng.range(0, 1) == 1,
            bb_view: None,
            residual: rng.range(0, 1) == 1,
            scale: rng.uniform(0.25, 2.0),
            // Every third draw reads its input upsampled ×2 (drawn apart from the rng stream).
            upsample: seed % 3 == 2,
        };
        let scale = if case.upsample { 2 } else { 1 };
        let (ch, cw) = (case.h * scale, case.w * scale);
        if conv2d_output_hw(ch, cw, k, k, case.stride, case.pad).is_err() {
            continue;
        }
        shapes.insert((case.batch, case.cin, case.cout, case.h, case.w, k));
        // Both kernel shapes where the device has the CPU one (the draws with W % 4 == 0 and a
        // "same" 1x1 / 3x3 kernel take conv2d_cpu.wgsl there).
        for choice in [KernelChoice::Gpu, KernelChoice::Auto] {
            ctx.set_kernels(choice).expect("kernel shape");
            let c = conv_case(&ctx, case, 1000 + seed);
            assert!(c.ok(), "seed {seed} ({choice:?}): {c}");
        }
    }
    assert!(shapes.len() >= 8, "the draws did not vary: {shapes:?}");
}

#[test]
fn conv_rejects_bad_shapes() {
    let _device = shared_device();
    let ctx = ctx();
    let x = zeros(&ctx, &[2, 4, 8, 8]);
    let w = zeros(&ctx, &[6, 4, 3, 3]);
    let out = zeros(&ctx, &[2, 6, 8, 8]);
    let bias = zeros(&ctx, &[6]);
    let good = Conv2d {
        input: &x,
        upsample: false,
        weight: &w,
        bias: Some(&bias),
        batch_bias: None,
        batch_bias_view: None,
        residual: None,
        out: &out,
        stride: 1,
        padding: Padding::same(1),
        output_scale: 1.0,
    };
    conv2d(&ctx, &good, "good").expect("a consistent conv builds");

    let w_cin = zeros(&ctx, &[6, 5, 3, 3]);
    let w_3d = zeros(&ctx, &[6, 4, 9]);
    let x_3d = zeros(&ctx, &[4, 8, 8]);
    let out_bad = zeros(&ctx, &[2, 6, 7, 7]);
    let bias_bad = zeros(&ctx, &[5]);
    let bb_bad = zeros(&ctx, &[2, 5]);
    let res_bad = zeros(&ctx, &[2, 6, 8, 7]);
    let x_tiny = zeros(&ctx, &[2, 4, 2, 2]);
    let bad: Vec<(&str, Conv2d)> = vec![
        (
            "weight Cin",
            Conv2d {
                weight: &w_cin,
                ..good
            },
        ),
        (
            "3-D weight",
            Conv2d {
                weight: &w_3d,
                ..good
            },
        ),
        (
            "3-D input",
            Conv2d {
                input: &x_3d,
                ..good
            },
        ),
        (
            "out shape",
            Conv2d {
                out: &out_bad,
                ..good
            },
        ),
        (
            "bias length",
            Conv2d {
                bias: Some(&bias_bad),
                ..good
            },
        ),
        (
            "batch bias",
            Conv2d {
                batch_bias: Some(&bb_bad),
                ..good
            },
        ),
        (
            "residual",
            Conv2d {
                residual: Some(&res_bad),
                ..good
            },
        ),
        ("stride 0", Conv2d { stride: 0, ..good }),
        // Read upsampled, the 8x8 input convolves at 16x16: the 8x8 out no longer fits.
        (
            "upsampled out shape",
            Conv2d {
                upsample: true,
                ..good
            },
        ),
        (
            "kernel > input",
            Conv2d {
                padding: Padding::same(0),
                input: &x_tiny,
                ..good
            },
        ),
        (
            "in place",
            Conv2d {
                residual: Some(&out),
                ..good
            },
        ),
    ];
    for (what, conv) in bad {
        match conv2d(&ctx, &conv, what) {
            Err(Error::InvalidArgument { .. }) => {}
            Err(e) => panic!("{what}: expected InvalidArgument, got {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// matmul

/// A matmul case: sizes, strides (as in [`Matmul`]), epilogue terms.
#[derive(Clone, Copy, Debug)]
struct MmCase {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a_strides: [usize; 3],
    b_strides: [usize; 3],
    c_strides: [usize; 3],
    bias: Option<BiasAxis>,
    residual: bool,
    alpha: f32,
    scale: f32,
}

/// Element count a strided view needs.
fn extent(sizes: [usize; 3], strides: [usize; 3]) -> usize {
    1 + sizes
        .iter()
        .zip(strides)
        .map(|(s, st)| (s - 1) * st)
        .sum::<usize>()
}

fn mm_case(ctx: &GpuContext, c: MmCase, seed: u64) -> Comparison {
    mm_run(ctx, c, seed).2
}

/// [`mm_case`] that also returns the output and the kernel that computed it.
fn mm_run(ctx: &GpuContext, c: MmCase, seed: u64) -> (Vec<f32>, Kernel, Comparison) {
    let mut rng = Rng::new(seed);
    let a_len = extent([c.batch, c.m, c.k], c.a_strides);
    let b_len = extent([c.batch, c.k, c.n], c.b_strides);
    let c_len = extent([c.batch, c.m, c.n], c.c_strides);
    let scale = 1.0 / (c.k as f32).sqrt();
    let a = rng.vec(a_len, -1.0, 1.0);
    let b = rng.vec(b_len, -scale, scale);
    let bias_len = match c.bias {
        Some(BiasAxis::N) => c.n,
        _ => c.m,
    };
    let bias = rng.vec(bias_len, -1.0, 1.0);
    let residual = rng.vec(c_len, -1.0, 1.0);
    let a_t = upload(ctx, &[a_len], &a);
    let b_t = upload(ctx, &[b_len], &b);
    let bias_t = upload(ctx, &[bias_len], &bias);
    let res_t = upload(ctx, &[c_len], &residual);
    let out = zeros(ctx, &[c_len]);
    let d = matmul(
        ctx,
        &Matmul {
            a: &a_t,
            b: &b_t,
            out: &out,
            bias: c.bias.map(|axis| (&bias_t, axis)),
            residual: c.residual.then_some(&res_t),
            batch: c.batch,
            m: c.m,
            n: c.n,
            k: c.k,
            a_strides: c.a_strides,
            b_strides: c.b_strides,
            c_strides: c.c_strides,
            alpha: c.alpha,
            output_scale: c.scale,
        },
        "test",
    )
    .expect("matmul dispatch");
    let got = run(ctx, &d, &out);
    let want = reference::matmul_strided(&reference::MatmulRef {
        a: &a,
        b: &b,
        bias: c.bias.map(|axis| (&bias[..], axis)),
        residual: c.residual.then_some(&residual[..]),
        dims: [c.batch, c.m, c.n, c.k],
        a_strides: c.a_strides,
        b_strides: c.b_strides,
        c_strides: c.c_strides,
        alpha: f64::from(c.alpha),
        output_scale: f64::from(c.scale),
        out_len: c_len,
    });
    let cmp = check(&format!("{c:?}"), &got, &want, c.k);
    (got, d.kernel, cmp)
}

/// The CPU-shaped matmul (`matmul_cpu.wgsl`) gives the very bits of the GPU-shaped one on every
/// layout the model uses (vec4 reads along k, along n, element by element), K off multiples of
/// 4, rows and columns off the 32 × 32 subgroup tile, products it runs transposed (few rows, many
/// columns), every epilogue term. CI's lavapipe always has it (see the conv test).
#[test]
fn matmul_cpu_shape_matches_gpu_shape_bit_for_bit() {
    let _device = shared_device();
    let ctx = ctx();
    if !cpu_kernels_available(&ctx) {
        return;
    }
    let mut seed = 700;
    for (batch, m, n, k) in [
        (1, 1, 1, 1),
        (2, 3, 5, 7),
        (1, 64, 64, 64),
        (3, 70, 33, 130),
        (2, 1, 300, 40),
        (1, 300, 2, 12),
        (1, 9, 40, 8),
    ] {
        for (name, a_strides, b_strides, c_strides) in layouts(m, n, k) {
            seed += 1;
            let case = MmCase {
                batch,
                m,
                n,
                k,
                a_strides,
                b_strides,
                c_strides,
                bias: [None, Some(BiasAxis::M), Some(BiasAxis::N)][seed % 3],
                residual: seed % 2 == 0,
                alpha: if seed % 4 == 0 { 0.125 } else { 1.0 },
                scale: if seed % 5 == 0 { 0.75 } else { 1.0 },
            };
            ctx.set_kernels(KernelChoice::Gpu).expect("gpu shape");
            let (gpu, gk, gc) = mm_run(&ctx, case, seed as u64);
            assert!(gc.ok(), "gpu shape, {name}: {gc}");
            assert_eq!(gk, Kernel::Matmul);
            ctx.set_kernels(KernelChoice::Cpu).expect("cpu shape");
            let (cpu, ck, cc) = mm_run(&ctx, case, seed as u64);
            assert!(cc.ok(), "cpu shape, {name}: {cc}");
            assert_eq!(ck, Kernel::MatmulCpu);
            let differ = bits_differ(&gpu, &cpu);
            assert_eq!(
                differ,
                0,
                "{name} {case:?}: {differ} of {} values differ",
                gpu.len()
            );
        }
    }
}

/// A named stride pattern: (name, a_strides, b_strides, c_strides).
type Layout = (&'static str, [usize; 3], [usize; 3], [usize; 3]);

/// The layouts the model uses, for a problem of `batch` × (m, n, k).
fn layouts(m: usize, n: usize, k: usize) -> Vec<Layout> {
    vec![
        // Row-major A[M,K], B[K,N], C[M,N].
        ("row-major", [m * k, k, 1], [k * n, n, 1], [m * n, n, 1]),
        // Linear: B = Wᵀ with W [N, K] shared by the batch.
        ("linear", [m * k, k, 1], [0, 1, k], [m * n, n, 1]),
        // 1×1 projection on NCHW: A = W [Cout, Cin] shared, B = X[n] [Cin, T], C [Cout, T].
        ("1x1 projection", [0, k, 1], [k * n, n, 1], [m * n, n, 1]),
        // Attention scores: Q, K stored [D, T] per head; A[t, d] = Q[d, t], B[d, s] = K[d, s].
        ("scores", [k * m, 1, m], [k * n, n, 1], [m * n, n, 1]),
        // P·V: P [T, S], V stored [D, S] per head; out stored [D, T].
        ("P·V", [m * k, k, 1], [n * k, 1, k], [n * m, 1, m]),
    ]
}

#[test]
fn matmul_model_layouts() {
    let _device = shared_device();
    let ctx = ctx();
    let mut seed = 0;
    for (batch, m, n, k) in [
        (1, 1, 1, 1),
        (2, 3, 5, 7),
        (1, 64, 64, 64),
        (3, 70, 33, 130),
    ] {
        for (name, a_strides, b_strides, c_strides) in layouts(m, n, k) {
            for (bias, residual, alpha, scale) in [
                (None, false, 1.0, 1.0),
                (Some(BiasAxis::M), true, 0.125, 1.0),
                (Some(BiasAxis::N), false, 1.0, 0.5),
                (None, true, 2.0, 0.7),
            ] {
                seed += 1;
                let case = MmCase {
                    batch,
                    m,
                    n,
                    k,
                    a_strides,
                    b_strides,
                    c_strides,
                    bias,
                    residual,
                    alpha,
                    scale,
                };
                let c = mm_case(&ctx, case, seed);
                assert!(c.ok(), "{name}: {c}");
            }
        }
    }
}

#[test]
fn matmul_random_shapes() {
    let _device = shared_device();
    let ctx = ctx();
    let mut shapes = std::collections::HashSet::new();
    for seed in 0..12u64 {
        let mut rng = Rng::new(seed + 50);
        let (batch, m, n, k) = (
            rng.range(1, 3),
            rng.range(1, 150),
            rng.range(1, 150),
            rng.range(1, 150),
        );
        shapes.insert((batch, m, n, k));
        let all = layouts(m, n, k);
        let pick = |rng: &mut Rng| all[rng.range(0, all.len() - 1)];
        // Mix the operands' layouts independently (the batch stride of a layout with a shared
        // operand is 0, which is fine for any of them).
        let (_, a_strides, _, _) = pick(&mut rng);
        let (_, _, b_strides, _) = pick(&mut rng);
        let (_, _, _, c_strides) = pick(&mut rng);
        let bias = [None, Some(BiasAxis::M), Some(BiasAxis::N)][rng.range(0, 2)];
        let case = MmCase {
            batch,
            m,
            n,
            k,
            a_strides,
            b_strides,
            c_strides,
            bias,
            residual: rng.range(0, 1) == 1,
            alpha: rng.uniform(0.1, 2.0),
            scale: rng.uniform(0.25, 2.0),
        };
        let c = mm_case(&ctx, case, seed);
        assert!(c.ok(), "seed {seed}: {c}");
    }
    assert!(shapes.len() >= 10, "the draws did not vary: {shapes:?}");
}

#[test]
fn linear_matches_reference() {
    let _device = shared_device();
    let ctx = ctx();
    for (seed, (m, n, k)) in [(1, 1, 1), (5, 7, 3), (9, 130, 67), (2, 512, 128)]
        .into_iter()
        .enumerate()
    {
        let mut rng = Rng::new(seed as u64 + 7);
        let x = rng.vec(m * k, -1.0, 1.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let b = rng.vec(n, -1.0, 1.0);
        let (x_t, w_t, b_t) = (
            upload(&ctx, &[m, k], &x),
            upload(&ctx, &[n, k], &w),
            upload(&ctx, &[n], &b),
        );
        for with_bias in [false, true] {
            let out = zeros(&ctx, &[m, n]);
            let d = linear(&ctx, &x_t, &w_t, with_bias.then_some(&b_t), &out, "linear")
                .expect("linear");
            let got = run(&ctx, &d, &out);
            // y[i, j] = Σ x[i, :]·w[j, :] + b[j], in f64.
            let want: Vec<f64> = (0..m * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    let dot: f64 = (0..k)
                        .map(|kk| f64::from(x[i * k + kk]) * f64::from(w[j * k + kk]))
                        .sum();
                    dot + if with_bias { f64::from(b[j]) } else { 0.0 }
                })
                .collect();
            let c = compare("linear", &got, &want, 1e-5 * k as f64, 1e-5);
            assert!(c.ok(), "m {m} n {n} k {k} bias {with_bias}: {c}");
        }
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    let _device = shared_device();
    let ctx = ctx();
    let a = zeros(&ctx, &[4, 6]);
    let b = zeros(&ctx, &[6, 5]);
    let out = zeros(&ctx, &[4, 5]);
    let bias_n = zeros(&ctx, &[5]);
    let good = Matmul {
        a: &a,
        b: &b,
        out: &out,
        bias: Some((&bias_n, BiasAxis::N)),
        residual: None,
        batch: 1,
        m: 4,
        n: 5,
        k: 6,
        a_strides: [0, 6, 1],
        b_strides: [0, 5, 1],
        c_strides: [0, 5, 1],
        alpha: 1.0,
        output_scale: 1.0,
    };
    matmul(&ctx, &good, "good").expect("a consistent matmul builds");
    let small = zeros(&ctx, &[19]);
    let bad: Vec<(&str, Matmul)> = vec![
        ("a too small", Matmul { k: 7, ..good }),
        (
            "b too small",
            Matmul {
                b_strides: [0, 6, 1],
                ..good
            },
        ),
        (
            "out too small",
            Matmul {
                out: &small,
                ..good
            },
        ),
        (
            "batch overruns",
            Matmul {
                batch: 2,
                a_strides: [24, 6, 1],
                ..good
            },
        ),
        (
            "bias axis",
            Matmul {
                bias: Some((&bias_n, BiasAxis::M)),
                ..good
            },
        ),
        (
            "residual too small",
            Matmul {
                residual: Some(&small),
                ..good
            },
        ),
        ("empty", Matmul { m: 0, ..good }),
        (
            "in place",
            Matmul {
                residual: Some(&out),
                ..good
            },
        ),
    ];
    for (what, mm) in bad {
        match matmul(&ctx, &mm, what) {
            Err(Error::InvalidArgument { .. }) => {}
            Err(e) => panic!("{what}: expected InvalidArgument, got {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
    let w_bad = zeros(&ctx, &[5, 7]);
    let out_bad = zeros(&ctx, &[4, 4]);
    assert!(linear(&ctx, &a, &w_bad, None, &out, "k mismatch").is_err());
    let w_ok = zeros(&ctx, &[5, 6]);
    let x_1d = zeros(&ctx, &[24]);
    assert!(linear(&ctx, &a, &w_ok, None, &out_bad, "out").is_err());
    assert!(linear(&ctx, &x_1d, &w_ok, None, &out, "1-D x").is_err());
}

// ---------------------------------------------------------------------------------------------
// throughput

/// The UNet's most common conv: 3×3, 64 → 64 channels, 32×32, batch 8 (604 MFLOP per launch).
/// Prints GFLOP/s; checks a strided sample of the output against the reference.
#[test]
fn conv_3x3_64ch_32px_b8_throughput() {
    let _device = exclusive_device();
    let ctx = ctx();
    let (b, c, hw) = (8, 64, 32);
    let mut rng = Rng::new(3);
    let x = rng.vec(b * c * hw * hw, -1.0, 1.0);
    let w = rng.vec(c * c * 9, -1.0 / 24.0, 1.0 / 24.0);
    let bias = rng.vec(c, -0.1, 0.1);
    let temb = rng.vec(b * c, -0.1, 0.1);
    let (x_t, w_t, bias_t, temb_t) = (
        upload(&ctx, &[b, c, hw, hw], &x),
        upload(&ctx, &[c, c, 3, 3], &w),
        upload(&ctx, &[c], &bias),
        upload(&ctx, &[b, c], &temb),
    );
    let out = zeros(&ctx, &[b, c, hw, hw]);
    let conv = Conv2d {
        input: &x_t,
        upsample: false,
        weight: &w_t,
        bias: Some(&bias_t),
        batch_bias: Some(&temb_t),
        batch_bias_view: None,
        residual: None,
        out: &out,
        stride: 1,
        padding: Padding::same(1),
        output_scale: 1.0,
    };
    let d = conv2d(&ctx, &conv, "resnet conv1").expect("conv2d");
    let (best, median) = gflops(&ctx, &d);
    println!(
        "conv2d 3x3 64->64 32x32 batch 8 on {}: {best:.2} GFLOP/s (median of 3: {median:.2})",
        ctx.adapter.info.name
    );
    let got = out.read(&ctx).expect("read");
    let want = reference::conv2d(&reference::Conv2dRef {
        input: &x,
        in_shape: [b, c, hw, hw],
        weight: &w,
        w_shape: [c, c, 3, 3],
        bias: Some(&bias),
        batch_bias: Some(&temb),
        residual: None,
        stride: 1,
        pad: [1; 4],
        output_scale: 1.0,
    });
    let cmp = check("conv 64ch", &got, &want, c * 9);
    assert!(cmp.ok(), "{cmp}");
}

fn mm_throughput(ctx: &GpuContext, name: &str, mm: &Matmul) {
    let d = matmul(ctx, mm, name).expect("matmul");
    let (best, median) = gflops(ctx, &d);
    println!(
        "matmul {name} on {}: {best:.2} GFLOP/s (median of 3: {median:.2})",
        ctx.adapter.info.name
    );
}

/// A square 512³ product and the two attention products of a 32×32 feature map with 8 heads of
/// 64 channels (T = 1024): scores Q·Kᵀ/√d and P·V, in the NCHW-per-head layouts the model uses.
#[test]
fn matmul_throughput() {
    let _device = exclusive_device();
    let ctx = ctx();
    let mut rng = Rng::new(9);
    let s = 512;
    let a = upload(&ctx, &[s, s], &rng.vec(s * s, -1.0, 1.0));
    let b = upload(&ctx, &[s, s], &rng.vec(s * s, -1.0, 1.0));
    let out = zeros(&ctx, &[s, s]);
    mm_throughput(
        &ctx,
        "512x512x512",
        &Matmul {
            a: &a,
            b: &b,
            out: &out,
            bias: None,
            residual: None,
            batch: 1,
            m: s,
            n: s,
            k: s,
            a_strides: [0, s, 1],
            b_strides: [0, s, 1],
            c_strides: [0, s, 1],
            alpha: 1.0,
            output_scale: 1.0,
        },
    );

    let (heads, d, t) = (8, 64, 1024);
    let q = upload(&ctx, &[heads, d, t], &rng.vec(heads * d * t, -1.0, 1.0));
    let k = upload(&ctx, &[heads, d, t], &rng.vec(heads * d * t, -1.0, 1.0));
    let scores = zeros(&ctx, &[heads, t, t]);
    mm_throughput(
        &ctx,
        "attention scores 8x(1024x1024x64)",
        &Matmul {
            a: &q,
            b: &k,
            out: &scores,
            bias: None,
            residual: None,
            batch: heads,
            m: t,
            n: t,
            k: d,
            a_strides: [d * t, 1, t],
            b_strides: [d * t, t, 1],
            c_strides: [t * t, t, 1],
            alpha: 1.0 / (d as f32).sqrt(),
            output_scale: 1.0,
        },
    );
    let pv = zeros(&ctx, &[heads, d, t]);
    mm_throughput(
        &ctx,
        "attention P.V 8x(1024x64x1024)",
        &Matmul {
            a: &scores,
            b: &k,
            out: &pv,
            bias: None,
            residual: None,
            batch: heads,
            m: t,
            n: d,
            k: t,
            a_strides: [t * t, t, 1],
            b_strides: [d * t, 1, t],
            c_strides: [d * t, 1, t],
            alpha: 1.0,
            output_scale: 1.0,
        },
    );
}

/// More tiles than one grid dimension holds (65 535): the launch folds into a 2-D grid and the
/// kernel recovers the tile from wid.x + wid.y·num_workgroups.x.
#[test]
fn matmul_two_dimensional_grid() {
    let _device = shared_device();
    let ctx = ctx();
    let limit = ctx.adapter.limits.max_compute_workgroups_per_dimension as usize;
    // 128-column tiles for n > 64; one more tile than fits in x.
    let n = limit * 128 + 3;
    let case = MmCase {
        batch: 1,
        m: 1,
        n,
        k: 2,
        a_strides: [0, 2, 1],
        b_strides: [0, n, 1],
        c_strides: [0, n, 1],
        bias: Some(BiasAxis::N),
        residual: false,
        alpha: 1.0,
        scale: 1.0,
    };
    let c = mm_case(&ctx, case, 5);
    assert!(c.ok(), "{c}");
}

/// A batch split into (group, entry) with its own stride per level (`MatmulOffsets::groups`, how
/// attention reads q / k / v out of one fused projection): against the f64 reference on compact
/// copies of the same operands, with both kernel shapes where the CPU shape exists (bit for bit
/// between them), including the transposed CPU-shaped product (few rows, many columns) and vec4
/// reads; a batch that does not split into whole groups is refused.
#[test]
fn matmul_grouped_batch_matches_reference() {
    use wgpu_diffusion::ops::matmul::{matmul_at, BatchGroups, MatmulOffsets};
    let _device = shared_device();
    let ctx = ctx();
    let shapes = if cpu_kernels_available(&ctx) {
        vec![KernelChoice::Gpu, KernelChoice::Cpu]
    } else {
        vec![KernelChoice::Auto]
    };
    let mut seed = 900;
    // (groups, inner, m, n, k): odd sizes; (2, 3, 2, 70, 8) runs transposed on the CPU shape.
    for (groups, inner, m, n, k) in [(2, 3, 5, 7, 9), (3, 2, 16, 12, 8), (2, 3, 2, 70, 8)] {
        seed += 1;
        let mut rng = Rng::new(seed);
        let batch = groups * inner;
        // A: slot 1 of [groups, 3, inner, m, k] (a fused projection's middle third).
        let (a_sb, a_so) = (m * k, 3 * inner * m * k);
        let a_off = inner * m * k;
        let a = rng.vec(groups * a_so, -1.0, 1.0);
        // B: [groups, n, inner, k] read as [k, n] per entry (token-major keys).
        let (b_sb, b_so) = (k, n * inner * k);
        let b = rng.vec(groups * b_so, -0.5, 0.5);
        // C: [groups, inner, m, n] with two spare rows per group.
        let (c_sb, c_so) = (m * n, inner * m * n + 2 * n);
        let c_len = groups * c_so;
        let residual = rng.vec(c_len, -1.0, 1.0);
        let mut a_c = Vec::new();
        let mut b_c = Vec::new();
        let mut res_c = Vec::new();
        for g in 0..groups {
            for e in 0..inner {
                let base = a_off + g * a_so + e * a_sb;
                a_c.extend_from_slice(&a[base..base + m * k]);
                for kk in 0..k {
                    for nn in 0..n {
                        b_c.push(b[g * b_so + e * b_sb + nn * inner * k + kk]);
                    }
                }
                let base = g * c_so + e * c_sb;
                res_c.extend_from_slice(&residual[base..base + m * n]);
            }
        }
        let want = reference::matmul_strided(&reference::MatmulRef {
            a: &a_c,
            b: &b_c,
            bias: None,
            residual: Some(&res_c),
            dims: [batch, m, n, k],
            a_strides: [m * k, k, 1],
            b_strides: [k * n, n, 1],
            c_strides: [m * n, n, 1],
            alpha: 0.5,
            output_scale: 1.0,
            out_len: batch * m * n,
        });
        let mut outputs = Vec::new();
        for &shape in &shapes {
            ctx.set_kernels(shape).expect("kernel shape");
            let a_t = upload(&ctx, &[a.len()], &a);
            let b_t = upload(&ctx, &[b.len()], &b);
            let res_t = upload(&ctx, &[c_len], &residual);
            let out = zeros(&ctx, &[c_len]);
            let mm = Matmul {
                a: &a_t,
                b: &b_t,
                out: &out,
                bias: None,
                residual: Some(&res_t),
                batch,
                m,
                n,
                k,
                a_strides: [a_sb, k, 1],
                b_strides: [b_sb, 1, inner * k],
                c_strides: [c_sb, n, 1],
                alpha: 0.5,
                output_scale: 1.0,
            };
            let offsets = MatmulOffsets {
                a: a_off,
                b: 0,
                c: 0,
                bias: None,
                groups: Some(BatchGroups {
                    inner,
                    a: a_so,
                    b: b_so,
                    c: c_so,
                }),
            };
            let d = matmul_at(&ctx, &mm, offsets, "grouped").expect("grouped matmul");
            let got = run(&ctx, &d, &out);
            let mut compact = Vec::new();
            for g in 0..groups {
                compact.extend_from_slice(&got[g * c_so..g * c_so + inner * m * n]);
                // The spare rows between groups stay untouched.
                assert!(got[g * c_so + inner * m * n..(g + 1) * c_so]
                    .iter()
                    .all(|&v| v == 0.0));
            }
            let cmp = check(
                &format!("grouped {shape:?} {m}x{n}x{k}"),
                &compact,
                &want,
                k,
            );
            assert!(cmp.ok(), "{cmp}");
            outputs.push(compact);

            // One entry short of whole groups.
            let bad = matmul_at(
                &ctx,
                &Matmul {
                    batch: inner * groups - 1,
                    ..mm
                },
                offsets,
                "grouped",
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
            assert!(bad.contains("groups of"), "{bad}");
        }
        if let [gpu, cpu] = &outputs[..] {
            assert_eq!(bits_differ(gpu, cpu), 0, "{m}x{n}x{k}: shapes differ");
        }
    }
}

/// The adaptive tile policy (smaller workgroup tiles for small layers, what GPUs get by default)
/// computes the very bits of the fixed one: every output is the same fma chain over k. Run with
/// the GPU-shaped kernels on layers where the two policies pick different tiles.
#[test]
fn adaptive_tiles_match_fixed_tiles_bit_for_bit() {
    use wgpu_diffusion::gpu::TilePolicy;
    let _device = shared_device();
    let ctx = ctx();
    ctx.set_kernels(KernelChoice::Gpu).expect("gpu shape");
    let convs = [
        // cifar10-32 at batch 1: 8 fixed tiles, 64 adaptive ones.
        ConvCase::new(1, 12, 128, 32, 3, 1),
        // Odd sizes, every epilogue term, stride 2.
        ConvCase {
            batch_bias: true,
            residual: true,
            scale: 0.5,
            ..ConvCase::new(2, 5, 37, 19, 3, 2)
        },
    ];
    for (i, case) in convs.into_iter().enumerate() {
        let (ho, wo) = conv2d_output_hw(case.h, case.w, case.kh, case.kw, case.stride, case.pad)
            .expect("output size");
        let npix = case.batch * ho * wo;
        assert_ne!(
            TilePolicy::Fixed.workgroup_shape(case.cout, npix, 1),
            TilePolicy::Adaptive.workgroup_shape(case.cout, npix, 1),
            "{case:?}: the policies should differ here"
        );
        let mut outs = Vec::new();
        for policy in [TilePolicy::Fixed, TilePolicy::Adaptive] {
            ctx.set_tile_policy(policy);
            let (out, kernel, cmp) = conv_run(&ctx, case, 1200 + i as u64);
            assert_eq!(kernel, Kernel::Conv2d);
            assert!(cmp.ok(), "{policy:?}: {cmp}");
            outs.push(out);
        }
        assert_eq!(bits_differ(&outs[0], &outs[1]), 0, "{case:?}");
    }
    for (batch, m, n, k) in [(1, 128, 256, 64), (3, 70, 33, 130)] {
        assert_ne!(
            TilePolicy::Fixed.workgroup_shape(m, n, batch),
            TilePolicy::Adaptive.workgroup_shape(m, n, batch)
        );
        let case = MmCase {
            batch,
            m,
            n,
            k,
            a_strides: [m * k, k, 1],
            b_strides: [k * n, n, 1],
            c_strides: [m * n, n, 1],
            bias: Some(BiasAxis::M),
            residual: true,
            alpha: 0.5,
            scale: 1.0,
        };
        let mut outs = Vec::new();
        for policy in [TilePolicy::Fixed, TilePolicy::Adaptive] {
            ctx.set_tile_policy(policy);
            let (out, kernel, cmp) = mm_run(&ctx, case, 1300 + m as u64);
            assert_eq!(kernel, Kernel::Matmul);
            assert!(cmp.ok(), "{policy:?}: {cmp}");
            outs.push(out);
        }
        assert_eq!(bits_differ(&outs[0], &outs[1]), 0, "{m}x{n}x{k}");
    }
}
