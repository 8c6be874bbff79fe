//! The text-encoder kernels against their f64 CPU references (`reference::text`): layer norm over
//! the last dimension, the causal softmax of square score blocks, quick_gelu and the exact gelu
//! (whose erf approximation is measured on a dense grid with tails), on odd shapes, plus the
//! shape checks of every builder.

mod common;

use common::{bits_differ, cpu_kernels_available, ctx, Rng};
use wgpu_diffusion::gpu::{Dispatch, GpuContext, Kernel, KernelChoice, Tensor};
use wgpu_diffusion::ops::activation::{self, Act, Activation};
use wgpu_diffusion::ops::causal_softmax::{self, CausalSoftmax};
use wgpu_diffusion::ops::layer_norm::{self, LayerNorm};
use wgpu_diffusion::reference::{compare, text};

fn upload(ctx: &GpuContext, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(ctx, shape, data, "test input").unwrap()
}

fn zeros(ctx: &GpuContext, shape: &[usize]) -> Tensor {
    Tensor::zeros(ctx, shape, "test output").unwrap()
}

fn run(ctx: &GpuContext, dispatch: &Dispatch, out: &Tensor) -> Vec<f32> {
    ctx.submit(&[dispatch]).unwrap();
    out.read(ctx).unwrap()
}

// ---- layer norm -------------------------------------------------------------------------------

fn check_layer_norm(ctx: &GpuContext, rng: &mut Rng, shape: &[usize], x: &[f32], eps: f32) {
    let cols = *shape.last().unwrap();
    let rows = x.len() / cols;
    let gamma = rng.vec(cols, 0.5, 1.5);
    let beta = rng.vec(cols, -0.5, 0.5);
    let input = upload(ctx, shape, x);
    let g = upload(ctx, &[cols], &gamma);
    let b = upload(ctx, &[cols], &beta);
    let out = zeros(ctx, shape);
    let d = layer_norm::layer_norm(
        ctx,
        &LayerNorm {
            input: &input,
            gamma: &g,
            beta: &b,
            out: &out,
            eps,
        },
        "test",
    )
    .unwrap();
    let got = run(ctx, &d, &out);
    let want = text::layer_norm(x, rows, cols, &gamma, &beta, f64::from(eps)).unwrap();
    let cmp = compare(&format!("layer_norm {shape:?}"), &got, &want, 2e-5, 2e-5);
    assert!(cmp.ok(), "{cmp}");
}

#[test]
fn layer_norm_matches_reference_on_odd_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(13);
    // One value per row (output = beta), rows shorter and longer than the workgroup, CLIP's
    // [B·77, 768], a 3-D shape, and rows drawn from the seed.
    let mut shapes: Vec<Vec<usize>> = vec![
        vec![3, 1],
        vec![1, 7],
        vec![5, 33],
        vec![2, 77, 64],
        vec![154, 768],
        vec![3, 1000],
    ];
    for _ in 0..3 {
        shapes.push(vec![rng.range(1, 40), rng.range(1, 600)]);
    }
    for shape in &shapes {
        let n: usize = shape.iter().product();
        let x = rng.vec(n, -3.0, 3.0);
        check_layer_norm(&ctx, &mut rng, shape, &x, 1e-5);
    }
    // A large common offset: the pivot keeps the normalised output precise.
    let x: Vec<f32> = (0..4 * 300)
        .map(|_| 1000.0 + rng.uniform(-1.0, 1.0))
        .collect();
    check_layer_norm(&ctx, &mut rng, &[4, 300], &x, 1e-5);
    // A constant row: variance 0, so the output is beta (eps keeps it finite).
    check_layer_norm(&ctx, &mut rng, &[2, 50], &[0.25; 100], 1e-5);
}

#[test]
fn layer_norm_rejects_bad_shapes() {
    let ctx = ctx();
    let x = zeros(&ctx, &[4, 8]);
    let g = zeros(&ctx, &[8]);
    let g7 = zeros(&ctx, &[7]);
    let out = zeros(&ctx, &[4, 8]);
    let args = |gamma, out, eps| LayerNorm {
        input: &x,
        gamma,
        beta: &g,
        out,
        eps,
    };
    let err = layer_norm::layer_norm(&ctx, &args(&g7, &out, 1e-5), "t").unwrap_err();
    assert!(err.to_string().contains("gamma has shape [7]"), "{err}");
    let err = layer_norm::layer_norm(&ctx, &args(&g, &x, 1e-5), "t").unwrap_err();
    assert!(err.to_string().contains("in place"), "{err}");
    let err = layer_norm::layer_norm(&ctx, &args(&g, &out, f32::NAN), "t").unwrap_err();
    assert!(err.to_string().contains("eps"), "{err}");
}

// ---- causal softmax ---------------------------------------------------------------------------

fn check_causal(ctx: &GpuContext, x: &[f32], blocks: usize, t: usize) {
    let data = upload(ctx, &[blocks, t, t], x);
    let d = causal_softmax::causal_softmax(
        ctx,
        &CausalSoftmax {
            data: &data,
            blocks,
            t,
        },
        "test",
    )
    .unwrap();
    let got = run(ctx, &d, &data);
    let want = text::causal_softmax(x, blocks, t).unwrap();
    let cmp = compare(
        &format!("causal_softmax {blocks}×{t}×{t}"),
        &got,
        &want,
        1e-6,
        1e-5,
    );
    assert!(cmp.ok(), "{cmp}");
    // Masked columns are exactly 0 and every row sums to 1.
    for (r, row) in got.chunks(t).enumerate() {
        let q = r % t;
        assert!(row[q + 1..].iter().all(|&v| v == 0.0), "row {r}: {row:?}");
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {r} sums to {sum}");
    }
}

#[test]
fn causal_softmax_matches_reference_on_odd_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(77);
    // T = 1 (a single always-visible column), odd T, CLIP's 77 with 4 heads × 2 prompts, and a
    // row longer than the workgroup (300 > 256).
    for (blocks, t) in [
        (3, 1),
        (1, 7),
        (8, 77),
        (2, 300),
        (rng.range(1, 5), rng.range(2, 90)),
    ] {
        let x = rng.vec(blocks * t * t, -8.0, 8.0);
        check_causal(&ctx, &x, blocks, t);
    }
    // Large logits in the visible part stay finite; huge or non-finite values in the masked part
    // never leak into a row (torch's −inf mask ignores them too).
    let t = 9;
    let mut x = rng.vec(2 * t * t, -80.0, 80.0);
    for (i, v) in x.iter_mut().enumerate() {
        let (r, c) = ((i / t) % t, i % t);
        if c > r {
            *v = match i % 3 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                _ => 1e30,
            };
        }
    }
    let data = upload(&ctx, &[2, t, t], &x);
    let d = causal_softmax::causal_softmax(
        &ctx,
        &CausalSoftmax {
            data: &data,
            blocks: 2,
            t,
        },
        "t",
    )
    .unwrap();
    let got = run(&ctx, &d, &data);
    let visible: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % t > (i / t) % t { 0.0 } else { v })
        .collect();
    let want = text::causal_softmax(&visible, 2, t).unwrap();
    let cmp = compare("causal_softmax masked non-finite", &got, &want, 1e-6, 1e-5);
    assert!(cmp.ok(), "{cmp}");
}

#[test]
fn causal_softmax_rejects_non_square_blocks() {
    let ctx = ctx();
    let data = zeros(&ctx, &[2, 3, 4]);
    let err = causal_softmax::causal_softmax(
        &ctx,
        &CausalSoftmax {
            data: &data,
            blocks: 2,
            t: 3,
        },
        "t",
    )
    .unwrap_err();
    assert!(err.to_string().contains("2 blocks of 3 × 3"), "{err}");
}

// ---- activations ------------------------------------------------------------------------------

fn run_activation(ctx: &GpuContext, x: &[f32], activation: Activation) -> Vec<f32> {
    let input = upload(ctx, &[x.len()], x);
    let out = zeros(ctx, &[x.len()]);
    let d = activation::activation(
        ctx,
        &Act {
            x: &input,
            out: &out,
            activation,
        },
        "test",
    )
    .unwrap();
    run(ctx, &d, &out)
}

/// A dense grid over [−lim, lim] plus log-spaced magnitudes 1e-30..lim of both signs (the tails
/// and the tiny arguments).
fn dense_grid(lim: f32) -> Vec<f32> {
    let n = 280_000;
    let mut x: Vec<f32> = (0..=n)
        .map(|i| -lim + 2.0 * lim * i as f32 / n as f32)
        .collect();
    for i in 0..=2000 {
        let m = 10f64.powf(-30.0 + (30.0 + f64::from(lim).log10()) * f64::from(i) / 2000.0);
        x.push(m as f32);
        x.push(-m as f32);
    }
    x.extend([0.0, -0.0, f32::MIN_POSITIVE, 1e30, -1e30]);
    x
}

/// Worst errors over `x` with |x| ≤ `within`: (max abs error, max error relative to |ref| where
/// |ref| ≥ 1e-30 — below that the f32 result nears the subnormal range, which GPUs may flush to
/// zero — and the x where that relative error occurs).
fn errors(x: &[f32], got: &[f32], want: &[f64], within: f32) -> (f64, f64, f32) {
    let mut worst = (0.0f64, 0.0f64, 0.0f32);
    for ((&x, &g), &w) in x.iter().zip(got).zip(want) {
        let err = (f64::from(g) - w).abs();
        assert!(err.is_finite(), "x = {x}: got {g}, want {w}");
        if x.abs() > within {
            continue;
        }
        worst.0 = worst.0.max(err);
        if w.abs() >= 1e-30 && err / w.abs() > worst.1 {
            worst.1 = err / w.abs();
            worst.2 = x;
        }
    }
    worst
}

#[test]
fn gelu_erf_approximation_is_accurate_to_float32() {
    let ctx = ctx();
    let x = dense_grid(14.0);
    let got = run_activation(&ctx, &x, Activation::Gelu);
    let want = text::gelu(&x);
    for within in [f32::INFINITY, 8.0, 4.0] {
        let (abs, rel, at) = errors(&x, &got, &want, within);
        println!(
            "gelu vs f64, |x| <= {within}: max abs {abs:.3e}, max rel {rel:.3e} (at x = {at})"
        );
    }
    // |x| ≤ 8 (where CLIP's pre-activations live), the negative tail included, where
    // 1 + erf(x/√2) would cancel: the erfc fit itself is within 1.2e-7; what remains is f32
    // rounding and the GPU's exp (llvmpipe: ~3e-6 relative at exp(−15)).
    let (_, rel, at) = errors(&x, &got, &want, 8.0);
    assert!(rel <= 4e-6, "gelu max relative error {rel:.3e} at x = {at}");
    // Everywhere: the far negative tail carries the error of the GPU's exp at large arguments
    // (WGSL allows 3 + 2|arg| ulp), still far below any value that matters next to O(1) outputs.
    let (abs, rel, at) = errors(&x, &got, &want, f32::INFINITY);
    assert!(rel <= 2e-5, "gelu max relative error {rel:.3e} at x = {at}");
    assert!(abs <= 1e-6, "gelu max absolute error {abs:.3e}");
}

#[test]
fn quick_gelu_matches_reference() {
    let ctx = ctx();
    let x = dense_grid(60.0);
    let got = run_activation(&ctx, &x, Activation::QuickGelu);
    let want = text::quick_gelu(&x);
    for within in [f32::INFINITY, 8.0] {
        let (abs, rel, at) = errors(&x, &got, &want, within);
        println!("quick_gelu vs f64, |x| <= {within}: max abs {abs:.3e}, max rel {rel:.3e} (at x = {at})");
    }
    let (_, rel, at) = errors(&x, &got, &want, 8.0);
    assert!(
        rel <= 1e-6,
        "quick_gelu max relative error {rel:.3e} at x = {at}"
    );
    let (abs, rel, at) = errors(&x, &got, &want, f32::INFINITY);
    assert!(
        rel <= 2e-5,
        "quick_gelu max relative error {rel:.3e} at x = {at}"
    );
    assert!(abs <= 2e-6, "quick_gelu max absolute error {abs:.3e}");
    // Odd lengths (grid tails) on random data.
    let mut rng = Rng::new(5);
    for n in [1, 255, 257, 1001] {
        let x = rng.vec(n, -6.0, 6.0);
        for act in [Activation::QuickGelu, Activation::Gelu] {
            let got = run_activation(&ctx, &x, act);
            let want = match act {
                Activation::QuickGelu => text::quick_gelu(&x),
                Activation::Gelu => text::gelu(&x),
            };
            let cmp = compare(&format!("{} n={n}", act.name()), &got, &want, 1e-6, 2e-6);
            assert!(cmp.ok(), "{cmp}");
        }
    }
}

#[test]
fn activation_rejects_bad_shapes() {
    let ctx = ctx();
    let x = zeros(&ctx, &[10]);
    let out = zeros(&ctx, &[11]);
    let err = activation::activation(
        &ctx,
        &Act {
            x: &x,
            out: &out,
            activation: Activation::Gelu,
        },
        "t",
    )
    .unwrap_err();
    assert!(err.to_string().contains("out has shape [11]"), "{err}");
    let err = activation::activation(
        &ctx,
        &Act {
            x: &x,
            out: &x,
            activation: Activation::QuickGelu,
        },
        "t",
    )
    .unwrap_err();
    assert!(err.to_string().contains("in place"), "{err}");
}

#[test]
fn reference_erfc_matches_known_values() {
    // math.erfc of CPython (the platform libm).
    for (x, want) in [
        (0.0, 1.0),
        (0.3, 0.6713732405408726),
        (-0.45, 1.4754817197869237),
        (0.5, 0.4795001221869535),
        (1.5, 0.033894853524689274),
        (-2.0, 1.9953222650189528),
        (3.99, 1.6739211364520814e-08),
        (4.0, 1.541725790028002e-08),
        (5.5, 7.357847917974398e-15),
        (10.0, 2.088487583762545e-45),
        (26.0, 5.663192408856143e-296),
    ] {
        let got = text::erfc(x);
        assert!(
            ((got - want) / want).abs() < 1e-13,
            "erfc({x}) = {got}, want {want}"
        );
    }
}

// ---- GEGLU ------------------------------------------------------------------------------------

#[test]
fn geglu_matches_reference_on_odd_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(41);
    for (rows, f) in [(1, 1), (7, 13), (37, 5), (3, 129)] {
        let x = rng.vec(rows * 2 * f, -6.0, 6.0);
        let gates: Vec<f32> = (0..rows)
            .flat_map(|r| x[r * 2 * f + f..(r + 1) * 2 * f].to_vec())
            .collect();
        let g = text::gelu(&gates);
        let want: Vec<f64> = (0..rows * f)
            .map(|i| f64::from(x[(i / f) * 2 * f + i % f]) * g[i])
            .collect();
        let xt = upload(&ctx, &[rows, 2 * f], &x);
        let out = zeros(&ctx, &[rows, f]);
        let d = activation::geglu(&ctx, &activation::Geglu { x: &xt, out: &out }, "t").unwrap();
        let got = run(&ctx, &d, &out);
        let c = compare(&format!("geglu [{rows}, {f}]"), &got, &want, 1e-5, 1e-5);
        println!("{c}");
        assert!(c.ok(), "{c}");
    }
    let x = zeros(&ctx, &[4, 6]);
    let out = zeros(&ctx, &[4, 4]);
    let err = activation::geglu(&ctx, &activation::Geglu { x: &x, out: &out }, "t").unwrap_err();
    assert!(err.to_string().contains("twice as wide"), "{err}");
}

/// The CPU-shaped layer norm (`layer_norm_cpu.wgsl`: one subgroup per row, the same partials and
/// tree) gives the very bits of `layer_norm.wgsl` — CLIP widths (768, 1024), rows of one 256-chunk
/// and of several, rows ending inside a chunk, a large common offset — and leaves widths off
/// multiples of 4 to the GPU-shaped kernel.
#[test]
fn layer_norm_cpu_shape_matches_gpu_shape_bit_for_bit() {
    let ctx = ctx();
    if !cpu_kernels_available(&ctx) {
        return;
    }
    let run_shape = |choice: KernelChoice, x: &[f32], rows: usize, cols: usize| {
        ctx.set_kernels(choice).expect("kernel shape");
        let mut rng = Rng::new(5);
        let gamma = upload(&ctx, &[cols], &rng.vec(cols, 0.5, 1.5));
        let beta = upload(&ctx, &[cols], &rng.vec(cols, -0.5, 0.5));
        let input = upload(&ctx, &[rows, cols], x);
        let out = zeros(&ctx, &[rows, cols]);
        let d = layer_norm::layer_norm(
            &ctx,
            &LayerNorm {
                input: &input,
                gamma: &gamma,
                beta: &beta,
                out: &out,
                eps: 1e-5,
            },
            "test",
        )
        .expect("layer_norm");
        (run(&ctx, &d, &out), d.kernel)
    };
    for (i, &(rows, cols, offset)) in [
        (1usize, 4usize, 0.0f32),
        (3, 36, 0.0),
        (77, 768, 0.0),
        (5, 1024, 0.0),
        (2, 1300, 100.0),
        (9, 260, 0.0),
    ]
    .iter()
    .enumerate()
    {
        let x: Vec<f32> = Rng::new(600 + i as u64)
            .vec(rows * cols, -2.0, 2.0)
            .into_iter()
            .map(|v| v + offset)
            .collect();
        let (gpu, gk) = run_shape(KernelChoice::Gpu, &x, rows, cols);
        let (cpu, ck) = run_shape(KernelChoice::Cpu, &x, rows, cols);
        assert_eq!(gk, Kernel::LayerNorm);
        assert_eq!(ck, Kernel::LayerNormCpu, "{rows}x{cols}");
        let differ = bits_differ(&gpu, &cpu);
        assert_eq!(differ, 0, "{rows}x{cols}: {differ} of {} differ", gpu.len());
    }
    let x = Rng::new(3).vec(2 * 9, -1.0, 1.0);
    let (_, kernel) = run_shape(KernelChoice::Cpu, &x, 2, 9);
    assert_eq!(
        kernel,
        Kernel::LayerNorm,
        "9 columns stay on layer_norm.wgsl"
    );
}
