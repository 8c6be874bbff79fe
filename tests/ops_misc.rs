//! GPU ops other than convolution and matmul against their f64 CPU references: group norm
//! (+SiLU), row softmax, the pointwise ops, nearest ×2 upsampling, the timestep embedding and
//! nearest-codebook quantisation, on
//! odd shapes that vary with the seed, plus the shape checks every builder performs.

mod common;

use common::{bits_differ, cpu_kernels_available, ctx, Rng};
use wgpu_diffusion::gpu::{Dispatch, GpuContext, Kernel, KernelChoice, Tensor};
use wgpu_diffusion::ops::{
    elementwise, group_norm, softmax, timestep_embedding, upsample, vq_quantize,
};
use wgpu_diffusion::reference::{compare, misc};

fn upload(ctx: &GpuContext, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(ctx, shape, data, "test input").unwrap()
}

fn zeros(ctx: &GpuContext, shape: &[usize]) -> Tensor {
    Tensor::zeros(ctx, shape, "test output").unwrap()
}

/// Submits one dispatch and reads `out` back.
fn run(ctx: &GpuContext, dispatch: &Dispatch, out: &Tensor) -> Vec<f32> {
    ctx.submit(&[dispatch]).unwrap();
    out.read(ctx).unwrap()
}

// ---- group norm -------------------------------------------------------------------------------

/// Runs group norm on `x` of `shape` with random gamma / beta and checks it against the reference.
fn check_group_norm(
    ctx: &GpuContext,
    rng: &mut Rng,
    shape: &[usize],
    x: &[f32],
    groups: usize,
    silu: bool,
    (atol, rtol): (f64, f64),
) -> f64 {
    let c = shape[1];
    let gamma = rng.vec(c, 0.5, 1.5);
    let beta = rng.vec(c, -0.5, 0.5);
    let eps = 1e-6f32;
    let input = upload(ctx, shape, x);
    let g = upload(ctx, &[c], &gamma);
    let b = upload(ctx, &[c], &beta);
    let out = zeros(ctx, shape);
    let d = group_norm::group_norm(
        ctx,
        &group_norm::GroupNorm {
            input: &input,
            gamma: &g,
            beta: &b,
            out: &out,
            groups,
            eps,
            silu,
        },
        "test",
    )
    .unwrap();
    let got = run(ctx, &d, &out);
    let want = misc::group_norm(x, shape, &gamma, &beta, groups, f64::from(eps), silu).unwrap();
    let cmp = compare(
        &format!("group_norm {shape:?} groups={groups} silu={silu}"),
        &got,
        &want,
        atol,
        rtol,
    );
    assert!(cmp.ok(), "{cmp}");
    cmp.max_abs
}

#[test]
fn group_norm_matches_reference_on_varied_shapes() {
    let ctx = ctx();
    let mut worst = 0.0f64;
    // The fixed odd cases of the brief first, then shapes drawn from the seed.
    for (n, c, h, w, groups) in [
        (1, 3, 5, 5, 1),
        (1, 3, 5, 5, 3),
        (3, 3, 5, 5, 1),
        (3, 3, 5, 5, 3),
    ] {
        let mut rng = Rng::new((n * 10 + groups) as u64);
        let shape = [n, c, h, w];
        let x = rng.vec(n * c * h * w, -2.0, 2.0);
        for silu in [false, true] {
            worst = worst.max(check_group_norm(
                &ctx,
                &mut rng,
                &shape,
                &x,
                groups,
                silu,
                (1e-5, 1e-5),
            ));
        }
    }
    for seed in 0..10 {
        let mut rng = Rng::new(seed);
        let n = [1, 3][rng.range(0, 1)];
        let c = [3, 4, 6, 9, 12][rng.range(0, 4)];
        let divisors: Vec<usize> = (1..=c).filter(|g| c % g == 0).collect();
        let groups = divisors[rng.range(0, divisors.len() - 1)];
        let (h, w) = (rng.range(1, 9), rng.range(1, 9));
        let shape = [n, c, h, w];
        let x = rng.vec(n * c * h * w, -3.0, 3.0);
        let silu = rng.range(0, 1) == 1;
        worst = worst.max(check_group_norm(
            &ctx,
            &mut rng,
            &shape,
            &x,
            groups,
            silu,
            (1e-5, 1e-5),
        ));
    }
    println!("group_norm varied shapes: max abs err {worst:.3e}");
}

#[test]
fn group_norm_accepts_rank_2_and_3_inputs() {
    let ctx = ctx();
    let mut rng = Rng::new(7);
    for shape in [vec![2, 6], vec![2, 6, 11]] {
        let x = rng.vec(shape.iter().product(), -1.0, 1.0);
        check_group_norm(&ctx, &mut rng, &shape, &x, 3, false, (1e-5, 1e-5));
    }
}

#[test]
fn group_norm_large_groups_use_the_strided_loops() {
    let ctx = ctx();
    let mut worst = 0.0f64;
    // 4 channels × 128×128 = 65536 values per group, and one group of ~300k values.
    for (seed, shape, groups) in [
        (1u64, [2usize, 8, 128, 128], 2usize),
        (2, [1, 2, 390, 390], 1),
    ] {
        let mut rng = Rng::new(seed);
        let x = rng.vec(shape.iter().product(), -2.0, 2.0);
        worst = worst.max(check_group_norm(
            &ctx,
            &mut rng,
            &shape,
            &x,
            groups,
            seed == 1,
            (2e-5, 2e-5),
        ));
    }
    println!("group_norm large groups: max abs err {worst:.3e}");
}

#[test]
fn group_norm_is_stable_on_a_large_common_offset() {
    // x = offset + small noise: E[x²] − E[x]² would lose every significant digit here (the
    // variance 1/3·1e-2 is ~1e-9 of E[x²] for offset 1000); the two-pass variance does not.
    let ctx = ctx();
    let mut worst = 0.0f64;
    for (seed, offset, noise) in [
        (3u64, 1000.0f32, 0.1f32),
        (4, -1000.0, 1.0),
        (5, 1.0e4, 0.5),
    ] {
        let mut rng = Rng::new(seed);
        let shape = [2, 4, 32, 33];
        let x: Vec<f32> = rng
            .vec(shape.iter().product(), -noise, noise)
            .into_iter()
            .map(|v| offset + v)
            .collect();
        worst = worst.max(check_group_norm(
            &ctx,
            &mut rng,
            &shape,
            &x,
            2,
            false,
            (1e-4, 1e-4),
        ));
    }
    println!("group_norm large offset: max abs err {worst:.3e}");
}

#[test]
fn group_norm_single_element_groups_give_beta() {
    let ctx = ctx();
    let mut rng = Rng::new(9);
    let shape = [3, 4, 1, 1];
    let x = rng.vec(12, -5.0, 5.0);
    check_group_norm(&ctx, &mut rng, &shape, &x, 4, false, (1e-6, 0.0));
    check_group_norm(&ctx, &mut rng, &shape, &x, 4, true, (1e-6, 0.0));
}

#[test]
fn group_norm_rejects_bad_shapes() {
    let ctx = ctx();
    let x = zeros(&ctx, &[2, 6, 4, 4]);
    let g6 = zeros(&ctx, &[6]);
    let g5 = zeros(&ctx, &[5]);
    let out = zeros(&ctx, &[2, 6, 4, 4]);
    let bad_out = zeros(&ctx, &[2, 6, 4, 5]);
    let flat = zeros(&ctx, &[6]);
    let gn = |ctx: &GpuContext,
              input: &Tensor,
              gamma: &Tensor,
              beta: &Tensor,
              out: &Tensor,
              groups: usize,
              eps: f32,
              silu: bool,
              label: &str| {
        let args = group_norm::GroupNorm {
            input,
            gamma,
            beta,
            out,
            groups,
            eps,
            silu,
        };
        group_norm::group_norm(ctx, &args, label)
    };
    assert!(gn(&ctx, &x, &g6, &g6, &out, 4, 1e-6, false, "t").is_err());
    assert!(gn(&ctx, &x, &g6, &g6, &out, 0, 1e-6, false, "t").is_err());
    assert!(gn(&ctx, &x, &g5, &g6, &out, 3, 1e-6, false, "t").is_err());
    assert!(gn(&ctx, &x, &g6, &g5, &out, 3, 1e-6, false, "t").is_err());
    assert!(gn(&ctx, &x, &g6, &g6, &bad_out, 3, 1e-6, false, "t").is_err());
    assert!(gn(&ctx, &flat, &g6, &g6, &flat, 3, 1e-6, false, "t").is_err());
    assert!(gn(&ctx, &x, &g6, &g6, &out, 3, f32::NAN, false, "t").is_err());
    assert!(gn(&ctx, &x, &g6, &g6, &x, 3, 1e-6, false, "t").is_err());
    assert!(gn(&ctx, &x, &g6, &g6, &out, 3, 1e-6, true, "t").is_ok());
}

// ---- softmax ----------------------------------------------------------------------------------

/// Runs the in-place softmax on `x` and checks it against the reference; returns the result.
fn check_softmax(ctx: &GpuContext, x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let data = upload(ctx, &[rows, cols], x);
    let d = softmax::softmax_rows(
        ctx,
        &softmax::SoftmaxRows {
            data: &data,
            rows,
            cols,
        },
        "test",
    )
    .unwrap();
    let got = run(ctx, &d, &data);
    let want = misc::softmax_rows(x, rows, cols).unwrap();
    let cmp = compare(&format!("softmax {rows}x{cols}"), &got, &want, 1e-6, 1e-5);
    assert!(cmp.ok(), "{cmp}");
    got
}

#[test]
fn softmax_matches_reference_on_varied_shapes() {
    let ctx = ctx();
    for seed in 0..10 {
        let mut rng = Rng::new(100 + seed);
        let rows = rng.range(1, 6);
        let cols = [1, 2, 7, 33, 255, 256, 257, 1000, 4097][rng.range(0, 8)];
        let x = rng.vec(rows * cols, -5.0, 5.0);
        check_softmax(&ctx, &x, rows, cols);
    }
}

#[test]
fn softmax_single_column_is_one() {
    let ctx = ctx();
    let got = check_softmax(&ctx, &[-3.0, 0.0, 80.0, -1e4, 7.5], 5, 1);
    assert!(got.iter().all(|&v| v == 1.0), "{got:?}");
}

#[test]
fn softmax_huge_logits_stay_finite_and_normalised() {
    let ctx = ctx();
    let mut rng = Rng::new(11);
    let (rows, cols) = (6, 513);
    let mut x = Vec::with_capacity(rows * cols);
    // ±80 logits, a 1e4 spread, and all-equal huge logits.
    x.extend(rng.vec(2 * cols, -80.0, 80.0));
    x.extend(rng.vec(2 * cols, -5000.0, 5000.0));
    x.extend(std::iter::repeat_n(1e4f32, cols));
    x.extend((0..cols).map(|i| if i % 2 == 0 { 80.0 } else { -80.0 }));
    let got = check_softmax(&ctx, &x, rows, cols);
    assert!(
        got.iter().all(|v| v.is_finite()),
        "non-finite probabilities"
    );
    for (r, row) in got.chunks(cols).enumerate() {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {r} sums to {sum}");
    }
}

#[test]
fn softmax_long_rows() {
    let ctx = ctx();
    let mut rng = Rng::new(12);
    let (rows, cols) = (3, 16384);
    let x = rng.vec(rows * cols, -10.0, 10.0);
    let got = check_softmax(&ctx, &x, rows, cols);
    for row in got.chunks(cols) {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
    }
}

#[test]
fn softmax_rejects_a_mismatched_size() {
    let ctx = ctx();
    let sm = |ctx: &GpuContext, data: &Tensor, rows: usize, cols: usize, label: &str| {
        softmax::softmax_rows(ctx, &softmax::SoftmaxRows { data, rows, cols }, label)
    };
    let data = zeros(&ctx, &[4, 6]);
    assert!(sm(&ctx, &data, 4, 5, "t").is_err());
    assert!(sm(&ctx, &data, 5, 6, "t").is_err());
    assert!(sm(&ctx, &data, usize::MAX, 2, "t").is_err());
    assert!(sm(&ctx, &data, 2, 12, "t").is_ok());
}

// ---- pointwise --------------------------------------------------------------------------------

#[test]
fn silu_matches_reference() {
    let ctx = ctx();
    for seed in 0..6 {
        let mut rng = Rng::new(200 + seed);
        let len = [1, 7, 255, 1000, 70001][rng.range(0, 4)];
        let mut xs = rng.vec(len, -20.0, 20.0);
        // Extremes: exp(−x) overflows for x < −88.7.
        xs[0] = -100.0;
        if len > 1 {
            xs[len - 1] = 100.0;
        }
        let x = upload(&ctx, &[len], &xs);
        let out = zeros(&ctx, &[len]);
        let got = run(
            &ctx,
            &elementwise::silu(&ctx, &elementwise::Silu { x: &x, out: &out }, "t").unwrap(),
            &out,
        );
        let cmp = compare(&format!("silu {len}"), &got, &misc::silu(&xs), 1e-6, 1e-5);
        assert!(cmp.ok(), "{cmp}");
    }
}

#[test]
fn add_scales_the_sum() {
    let ctx = ctx();
    for seed in 0..4 {
        let mut rng = Rng::new(300 + seed);
        let shape = [
            rng.range(1, 3),
            rng.range(1, 5),
            rng.range(1, 7),
            rng.range(1, 7),
        ];
        let len: usize = shape.iter().product();
        let (av, bv) = (rng.vec(len, -4.0, 4.0), rng.vec(len, -4.0, 4.0));
        let scale = [1.0f32, 0.5, 1.0 / 1.414][rng.range(0, 2)];
        let (a, b, out) = (
            upload(&ctx, &shape, &av),
            upload(&ctx, &shape, &bv),
            zeros(&ctx, &shape),
        );
        let d = elementwise::add(
            &ctx,
            &elementwise::Add {
                a: &a,
                b: &b,
                out: &out,
                scale,
            },
            "t",
        )
        .unwrap();
        let got = run(&ctx, &d, &out);
        let want = misc::add(&av, &bv, scale).unwrap();
        let cmp = compare(&format!("add {shape:?}"), &got, &want, 1e-6, 1e-6);
        assert!(cmp.ok(), "{cmp}");
    }
}

#[test]
fn affine_centers_the_input() {
    let ctx = ctx();
    let mut rng = Rng::new(400);
    let shape = [3, 3, 5, 5];
    let xs = rng.vec(225, 0.0, 1.0);
    let (x, out) = (upload(&ctx, &shape, &xs), zeros(&ctx, &shape));
    let d = elementwise::affine(
        &ctx,
        &elementwise::Affine {
            x: &x,
            out: &out,
            mul: 2.0,
            add: -1.0,
        },
        "t",
    )
    .unwrap();
    let got = run(&ctx, &d, &out);
    let cmp = compare(
        "affine 2x-1",
        &got,
        &misc::affine(&xs, 2.0, -1.0),
        1e-7,
        1e-7,
    );
    assert!(cmp.ok(), "{cmp}");
}

/// More than 65535 workgroups: the grid goes 2-D and the kernel must recover the linear index.
#[test]
fn affine_on_a_2d_grid() {
    let ctx = ctx();
    let limit = ctx.adapter.limits.max_compute_workgroups_per_dimension as usize;
    let len = limit * 256 + 777;
    if (len as u64) * 4 > ctx.max_binding_bytes() {
        // Cannot happen with the WebGPU minimum limits; keep the test meaningful elsewhere.
        panic!("adapter cannot bind {len} floats; lower the test size");
    }
    let xs: Vec<f32> = (0..len).map(|i| (i % 1021) as f32).collect();
    let (x, out) = (upload(&ctx, &[len], &xs), zeros(&ctx, &[len]));
    let d = elementwise::affine(
        &ctx,
        &elementwise::Affine {
            x: &x,
            out: &out,
            mul: 0.5,
            add: 3.0,
        },
        "t",
    )
    .unwrap();
    assert!(
        d.workgroups[1] > 1,
        "expected a 2-D grid, got {:?}",
        d.workgroups
    );
    let got = run(&ctx, &d, &out);
    let cmp = compare(
        "affine 2-D grid",
        &got,
        &misc::affine(&xs, 0.5, 3.0),
        0.0,
        0.0,
    );
    assert!(cmp.ok(), "{cmp}");
}

#[test]
fn concat_channels_matches_torch_cat() {
    let ctx = ctx();
    for seed in 0..6 {
        let mut rng = Rng::new(500 + seed);
        let (n, ca, cb, h, w) = (
            rng.range(1, 3),
            rng.range(1, 5),
            rng.range(1, 5),
            rng.range(1, 6),
            rng.range(1, 6),
        );
        let (av, bv) = (
            rng.vec(n * ca * h * w, -1.0, 1.0),
            rng.vec(n * cb * h * w, -1.0, 1.0),
        );
        let a = upload(&ctx, &[n, ca, h, w], &av);
        let b = upload(&ctx, &[n, cb, h, w], &bv);
        let out = zeros(&ctx, &[n, ca + cb, h, w]);
        let d = elementwise::concat_channels(
            &ctx,
            &elementwise::ConcatChannels {
                a: &a,
                b: &b,
                out: &out,
            },
            "t",
        )
        .unwrap();
        let got = run(&ctx, &d, &out);
        let want = misc::concat_channels(&av, &bv, n, ca, cb, h * w).unwrap();
        let cmp = compare(
            &format!("concat {n} {ca}+{cb} {h}x{w}"),
            &got,
            &want,
            0.0,
            0.0,
        );
        assert!(cmp.ok(), "{cmp}");
    }
}

#[test]
fn slice_channels_matches_torch_indexing() {
    let ctx = ctx();
    for seed in 0..6 {
        let mut rng = Rng::new(900 + seed);
        let (n, cx, h, w) = (
            rng.range(1, 3),
            rng.range(2, 9),
            rng.range(1, 6),
            rng.range(1, 6),
        );
        let start = rng.range(0, cx - 1);
        let c_out = rng.range(1, cx - start);
        let xv = rng.vec(n * cx * h * w, -1.0, 1.0);
        let x = upload(&ctx, &[n, cx, h, w], &xv);
        let out = zeros(&ctx, &[n, c_out, h, w]);
        let args = elementwise::SliceChannels {
            x: &x,
            out: &out,
            start,
        };
        let d = elementwise::slice_channels(&ctx, &args, "t").unwrap();
        let got = run(&ctx, &d, &out);
        let want = misc::slice_channels(&xv, n, cx, (start, c_out), h * w).unwrap();
        let cmp = compare(
            &format!("slice {n} {cx}[{start}..+{c_out}] {h}x{w}"),
            &got,
            &want,
            0.0,
            0.0,
        );
        assert!(cmp.ok(), "{cmp}");
    }
    // Past the channels: refused.
    let x = zeros(&ctx, &[1, 4, 2, 2]);
    let out = zeros(&ctx, &[1, 3, 2, 2]);
    let args = elementwise::SliceChannels {
        x: &x,
        out: &out,
        start: 2,
    };
    assert!(elementwise::slice_channels(&ctx, &args, "t").is_err());
}

#[test]
fn vq_quantize_matches_reference_and_breaks_ties_low() {
    let ctx = ctx();
    for seed in 0..6 {
        let mut rng = Rng::new(950 + seed);
        let (n, d, h, w, k) = (
            rng.range(1, 3),
            rng.range(1, 5),
            rng.range(1, 7),
            rng.range(1, 7),
            rng.range(1, 300),
        );
        let mut book = rng.vec(k * d, -1.0, 1.0);
        // A duplicated row: equal distances, the reference (torch.argmin) takes the lower index.
        if k >= 3 {
            let (src, dst) = (k - 1, 1);
            let row: Vec<f32> = book[src * d..(src + 1) * d].to_vec();
            book[dst * d..(dst + 1) * d].copy_from_slice(&row);
        }
        let mut zv = rng.vec(n * d * h * w, -1.2, 1.2);
        // Some pixels sit exactly on a codebook row (distance 0).
        for p in (0..n * h * w).step_by(3) {
            let j = rng.range(0, k - 1);
            let (s, q) = (p / (h * w), p % (h * w));
            for c in 0..d {
                zv[(s * d + c) * h * w + q] = book[j * d + c];
            }
        }
        let z = upload(&ctx, &[n, d, h, w], &zv);
        let codebook = upload(&ctx, &[k, d], &book);
        let out = zeros(&ctx, &[n, d, h, w]);
        let args = vq_quantize::VqQuantize {
            z: &z,
            codebook: &codebook,
            out: &out,
        };
        let dispatch = vq_quantize::vq_quantize(&ctx, &args, "t").unwrap();
        let got = run(&ctx, &dispatch, &out);
        let (want, indices) = misc::vq_quantize(&zv, &book, n, (k, d), h * w).unwrap();
        if k >= 3 {
            assert!(
                !indices.contains(&(k - 1)),
                "a tie went to the higher index"
            );
        }
        let cmp = compare(
            &format!("vq_quantize n{n} d{d} {h}x{w} k{k}"),
            &got,
            &want,
            0.0,
            0.0,
        );
        assert!(cmp.ok(), "{cmp}");
    }
    // Exact ties between different rows (distances 0.25 in f32, exactly): the lower index wins,
    // whichever row that is.
    for (book, want) in [
        ([0.0f32, 0.0, 0.0, 1.0, 0.0, 0.0], [0.0f32, 0.0, 0.0]),
        ([1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0]),
    ] {
        let z = upload(&ctx, &[1, 3, 1, 1], &[0.5, 0.0, 0.0]);
        let codebook = upload(&ctx, &[2, 3], &book);
        let out = zeros(&ctx, &[1, 3, 1, 1]);
        let args = vq_quantize::VqQuantize {
            z: &z,
            codebook: &codebook,
            out: &out,
        };
        let dispatch = vq_quantize::vq_quantize(&ctx, &args, "t").unwrap();
        assert_eq!(run(&ctx, &dispatch, &out), want, "codebook {book:?}");
        let (reference, _) = misc::vq_quantize(&[0.5, 0.0, 0.0], &book, 1, (2, 3), 1).unwrap();
        assert_eq!(reference, want.map(f64::from));
    }
    // A codebook of the wrong width is refused.
    let z = zeros(&ctx, &[1, 3, 2, 2]);
    let codebook = zeros(&ctx, &[5, 4]);
    let out = zeros(&ctx, &[1, 3, 2, 2]);
    let args = vq_quantize::VqQuantize {
        z: &z,
        codebook: &codebook,
        out: &out,
    };
    let e = vq_quantize::vq_quantize(&ctx, &args, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("[5, 4]"), "{e}");
}

#[test]
fn embedding_add_matches_reference() {
    let ctx = ctx();
    for seed in 0..4 {
        let mut rng = Rng::new(600 + seed);
        let (rows, dim, n) = (rng.range(1, 10), rng.range(1, 40), rng.range(1, 4));
        let table_v = rng.vec(rows * dim, -1.0, 1.0);
        let base_v = rng.vec(n * dim, -1.0, 1.0);
        let labels_v: Vec<f32> = (0..n).map(|_| rng.range(0, rows - 1) as f32).collect();
        let table = upload(&ctx, &[rows, dim], &table_v);
        let labels = upload(&ctx, &[n], &labels_v);
        let base = upload(&ctx, &[n, dim], &base_v);
        let out = zeros(&ctx, &[n, dim]);
        let d = elementwise::embedding_add(
            &ctx,
            &elementwise::EmbeddingAdd {
                table: &table,
                labels: &labels,
                base: &base,
                out: &out,
            },
            "t",
        )
        .unwrap();
        let got = run(&ctx, &d, &out);
        let want = misc::embedding_add(&table_v, dim, &labels_v, &base_v).unwrap();
        let cmp = compare(
            &format!("embedding_add {rows}x{dim} n={n}"),
            &got,
            &want,
            1e-7,
            0.0,
        );
        assert!(cmp.ok(), "{cmp}");
    }
}

#[test]
fn embedding_add_clamps_bad_labels() {
    let ctx = ctx();
    let (rows, dim) = (3, 5);
    let table_v: Vec<f32> = (0..rows * dim).map(|i| (i * 10) as f32).collect();
    let labels_v = [
        -3.0f32,
        1e9,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0,
    ];
    let n = labels_v.len();
    let base_v = vec![0.5f32; n * dim];
    let table = upload(&ctx, &[rows, dim], &table_v);
    let labels = upload(&ctx, &[n], &labels_v);
    let base = upload(&ctx, &[n, dim], &base_v);
    let out = zeros(&ctx, &[n, dim]);
    let d = elementwise::embedding_add(
        &ctx,
        &elementwise::EmbeddingAdd {
            table: &table,
            labels: &labels,
            base: &base,
            out: &out,
        },
        "t",
    )
    .unwrap();
    let got = run(&ctx, &d, &out);
    let row_of = |s: usize| -> Option<usize> {
        (0..rows).find(|&r| (0..dim).all(|j| got[s * dim + j] == 0.5 + table_v[r * dim + j]))
    };
    assert_eq!(row_of(0), Some(0), "label -3 → row 0: {got:?}");
    assert_eq!(row_of(1), Some(rows - 1), "label 1e9 → last row: {got:?}");
    assert!(
        row_of(2).is_some(),
        "NaN label must read some valid row: {got:?}"
    );
    assert_eq!(row_of(3), Some(rows - 1), "label +inf → last row: {got:?}");
    assert_eq!(row_of(4), Some(0), "label -inf → row 0: {got:?}");
    assert_eq!(row_of(5), Some(1), "label 1 → row 1: {got:?}");
    // The reference refuses what torch would refuse.
    assert!(misc::embedding_add(&table_v, dim, &labels_v, &base_v).is_err());
}

#[test]
fn pointwise_ops_reject_bad_shapes() {
    let ctx = ctx();
    let silu = |ctx: &GpuContext, x: &Tensor, out: &Tensor, label: &str| {
        elementwise::silu(ctx, &elementwise::Silu { x, out }, label)
    };
    let add = |ctx: &GpuContext, a: &Tensor, b: &Tensor, out: &Tensor, scale: f32, label: &str| {
        elementwise::add(ctx, &elementwise::Add { a, b, out, scale }, label)
    };
    let affine = |ctx: &GpuContext, x: &Tensor, out: &Tensor, mul: f32, add: f32, label: &str| {
        elementwise::affine(ctx, &elementwise::Affine { x, out, mul, add }, label)
    };
    let concat_channels = |ctx: &GpuContext, a: &Tensor, b: &Tensor, out: &Tensor, label: &str| {
        elementwise::concat_channels(ctx, &elementwise::ConcatChannels { a, b, out }, label)
    };
    let a = zeros(&ctx, &[2, 3, 4, 4]);
    let b = zeros(&ctx, &[2, 3, 4, 4]);
    let c = zeros(&ctx, &[2, 3, 4, 5]);
    let wide = zeros(&ctx, &[2, 6, 4, 4]);
    let flat = zeros(&ctx, &[96]);
    assert!(silu(&ctx, &a, &c, "t").is_err());
    assert!(silu(&ctx, &a, &flat, "t").is_err());
    assert!(silu(&ctx, &a, &a, "t").is_err(), "in place must be refused");
    assert!(add(&ctx, &a, &c, &b, 1.0, "t").is_err());
    assert!(add(&ctx, &a, &b, &c, 1.0, "t").is_err());
    assert!(add(&ctx, &a, &b, &a, 1.0, "t").is_err());
    assert!(add(&ctx, &a, &b, &wide, 1.0, "t").is_err());
    assert!(add(&ctx, &a, &a, &b, 1.0, "t").is_ok());
    assert!(affine(&ctx, &a, &c, 2.0, -1.0, "t").is_err());
    assert!(affine(&ctx, &a, &b, f32::NAN, -1.0, "t").is_err());
    assert!(concat_channels(&ctx, &a, &b, &a, "t").is_err());
    assert!(concat_channels(&ctx, &a, &c, &wide, "t").is_err());
    assert!(concat_channels(&ctx, &a, &flat, &wide, "t").is_err());
    assert!(concat_channels(&ctx, &a, &b, &wide, "t").is_ok());

    let table = zeros(&ctx, &[10, 8]);
    let labels = zeros(&ctx, &[3]);
    let base = zeros(&ctx, &[3, 8]);
    let out = zeros(&ctx, &[3, 8]);
    let empty_table = zeros(&ctx, &[0, 8]);
    let ea = |ctx: &GpuContext,
              table: &Tensor,
              labels: &Tensor,
              base: &Tensor,
              out: &Tensor,
              label: &str| {
        let args = elementwise::EmbeddingAdd {
            table,
            labels,
            base,
            out,
        };
        elementwise::embedding_add(ctx, &args, label)
    };
    assert!(ea(&ctx, &table, &labels, &base, &out, "t").is_ok());
    assert!(ea(&ctx, &flat, &labels, &base, &out, "t").is_err());
    assert!(ea(&ctx, &empty_table, &labels, &base, &out, "t").is_err());
    assert!(ea(&ctx, &table, &base, &base, &out, "t").is_err());
    assert!(ea(&ctx, &table, &labels, &zeros(&ctx, &[3, 7]), &out, "t").is_err());
    assert!(ea(&ctx, &table, &labels, &base, &zeros(&ctx, &[2, 8]), "t").is_err());
    assert!(ea(&ctx, &table, &labels, &base, &base, "t").is_err());
}

// ---- upsample ---------------------------------------------------------------------------------

#[test]
fn upsample_nearest2x_matches_reference() {
    let ctx = ctx();
    for seed in 0..6 {
        let mut rng = Rng::new(700 + seed);
        let (n, c, h, w) = (
            rng.range(1, 3),
            rng.range(1, 4),
            rng.range(1, 9),
            rng.range(1, 9),
        );
        let xs = rng.vec(n * c * h * w, -1.0, 1.0);
        let x = upload(&ctx, &[n, c, h, w], &xs);
        let out = zeros(&ctx, &[n, c, 2 * h, 2 * w]);
        let d = upsample::upsample_nearest2x(
            &ctx,
            &upsample::UpsampleNearest2x {
                input: &x,
                out: &out,
            },
            "t",
        )
        .unwrap();
        let got = run(&ctx, &d, &out);
        let want = misc::upsample_nearest2x(&xs, n, c, h, w).unwrap();
        let cmp = compare(&format!("upsample {n}x{c}x{h}x{w}"), &got, &want, 0.0, 0.0);
        assert!(cmp.ok(), "{cmp}");
    }
}

/// The odd sizes a UNet2DConditionModel's up path forwards (OH = 2H − 1): torch's nearest index
/// floor(dst · (f32)in/out), computed here in f32 as torch does.
#[test]
fn upsample_to_odd_sizes_matches_torch_nearest() {
    let ctx = ctx();
    for (h, w, oh, ow) in [(3, 2, 5, 4), (5, 4, 9, 7), (1, 1, 1, 2), (4, 3, 8, 5)] {
        let (n, c) = (2, 3);
        let mut rng = Rng::new(900 + h as u64);
        let xs = rng.vec(n * c * h * w, -1.0, 1.0);
        let x = upload(&ctx, &[n, c, h, w], &xs);
        let out = zeros(&ctx, &[n, c, oh, ow]);
        let d = upsample::upsample_nearest2x(
            &ctx,
            &upsample::UpsampleNearest2x {
                input: &x,
                out: &out,
            },
            "t",
        )
        .unwrap();
        let got = run(&ctx, &d, &out);
        let index = |dst: usize, i: usize, o: usize| {
            let scale = i as f32 / o as f32;
            ((dst as f32 * scale).floor() as usize).min(i - 1)
        };
        let want: Vec<f64> = (0..n * c * oh * ow)
            .map(|k| {
                let (plane, y, x) = (k / (oh * ow), (k / ow) % oh, k % ow);
                f64::from(xs[(plane * h + index(y, h, oh)) * w + index(x, w, ow)])
            })
            .collect();
        let cmp = compare(&format!("resize {h}x{w}->{oh}x{ow}"), &got, &want, 0.0, 0.0);
        assert!(cmp.ok(), "{cmp}");
    }
}

#[test]
fn upsample_rejects_bad_shapes() {
    let ctx = ctx();
    let x = zeros(&ctx, &[1, 2, 3, 5]);
    let up = |ctx: &GpuContext, input: &Tensor, out: &Tensor, label: &str| {
        upsample::upsample_nearest2x(ctx, &upsample::UpsampleNearest2x { input, out }, label)
    };
    assert!(up(&ctx, &x, &zeros(&ctx, &[1, 2, 6, 10]), "t").is_ok());
    assert!(up(&ctx, &x, &zeros(&ctx, &[1, 2, 5, 9]), "t").is_ok());
    assert!(up(&ctx, &x, &zeros(&ctx, &[1, 2, 6, 11]), "t").is_err());
    assert!(up(&ctx, &x, &zeros(&ctx, &[1, 2, 2, 10]), "t").is_err());
    assert!(up(&ctx, &x, &zeros(&ctx, &[1, 2, 10, 6]), "t").is_err());
    assert!(up(
        &ctx,
        &zeros(&ctx, &[2, 3, 5]),
        &zeros(&ctx, &[2, 6, 10]),
        "t"
    )
    .is_err());
    assert!(up(&ctx, &x, &x, "t").is_err());
}

// ---- timestep embedding -----------------------------------------------------------------------

/// GPU embedding vs the torch-mimicking reference; returns the max abs error.
fn timestep_error(
    ctx: &GpuContext,
    ts: &[f32],
    dim: usize,
    flip: bool,
    shift: f64,
) -> (f64, String) {
    let t = upload(ctx, &[ts.len()], ts);
    let out = zeros(ctx, &[ts.len(), dim]);
    let d = timestep_embedding::timestep_embedding(
        ctx,
        &timestep_embedding::TimestepEmbedding {
            timesteps: &t,
            out: &out,
            dim,
            flip_sin_to_cos: flip,
            freq_shift: shift,
        },
        "t",
    )
    .unwrap();
    let got = run(ctx, &d, &out);
    let want = misc::timestep_embedding(ts, dim, flip, shift).unwrap();
    let cmp = compare(
        &format!("timestep_embedding dim={dim} flip={flip} shift={shift}"),
        &got,
        &want,
        2e-6,
        0.0,
    );
    (cmp.max_abs, cmp.to_string())
}

#[test]
fn timestep_embedding_matches_torch_f32() {
    let ctx = ctx();
    let ts = [0.0f32, 1.0, 17.5, 421.25, 999.0, 999.999, 4000.5];
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for dim in [32, 64, 7, 128] {
        for flip in [false, true] {
            for shift in [0.0, 1.0] {
                let (err, report) = timestep_error(&ctx, &ts, dim, flip, shift);
                worst = worst.max(err);
                if err > 2e-6 {
                    failures.push(report);
                }
            }
        }
    }
    println!("timestep_embedding: max abs err {worst:.3e}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn timestep_embedding_random_timesteps_and_wide_dims() {
    let ctx = ctx();
    let mut worst = 0.0f64;
    for seed in 0..4 {
        let mut rng = Rng::new(800 + seed);
        let n = rng.range(1, 64);
        let mut ts = rng.vec(n, 0.0, 1000.0);
        ts.extend(rng.vec(4, -50.0, 50.0));
        ts.extend(rng.vec(4, 5000.0, 60000.0));
        let dim = [320, 256, 33, 512][seed as usize];
        let (err, report) = timestep_error(&ctx, &ts, dim, seed % 2 == 0, (seed % 2) as f64);
        assert!(err <= 2e-6, "{report}");
        worst = worst.max(err);
    }
    println!("timestep_embedding random: max abs err {worst:.3e}");
}

#[test]
fn timestep_embedding_tiny_dims() {
    let ctx = ctx();
    // dim 1 is a single zero column; dim 2 and 3 have one frequency (shift 0: 1 rad per step).
    let ts = [0.0f32, 3.0, 999.5];
    for dim in [1, 2, 3] {
        let (err, report) = timestep_error(&ctx, &ts, dim, false, 0.0);
        assert!(err <= 2e-6, "{report}");
    }
}

#[test]
fn timestep_frequencies_follow_torch_rounding() {
    let f = timestep_embedding::frequencies(64, 1.0).unwrap();
    assert_eq!(f.len(), 32);
    assert_eq!(f[0], 1.0);
    // exponent = f32(f32(-ln 1e4) · 31) / 31 rounds back to f32(-ln 1e4); exp(-ln 1e4) = 1e-4.
    let last = f64::from(f[31]);
    assert!((last - 1e-4).abs() < 1e-4 * 1e-6, "{last}");
    assert!(f.windows(2).all(|w| w[1] < w[0]));
    assert!(timestep_embedding::frequencies(2, 1.0).is_err());
    assert_eq!(
        timestep_embedding::frequencies(1, 0.0).unwrap(),
        Vec::<f32>::new()
    );
}

#[test]
fn timestep_embedding_rejects_bad_shapes() {
    let ctx = ctx();
    let t = zeros(&ctx, &[3]);
    let te = |ctx: &GpuContext,
              timesteps: &Tensor,
              out: &Tensor,
              dim: usize,
              flip_sin_to_cos: bool,
              freq_shift: f64,
              label: &str| {
        let args = timestep_embedding::TimestepEmbedding {
            timesteps,
            out,
            dim,
            flip_sin_to_cos,
            freq_shift,
        };
        timestep_embedding::timestep_embedding(ctx, &args, label)
    };
    assert!(te(&ctx, &t, &zeros(&ctx, &[3, 16]), 16, true, 0.0, "t").is_ok());
    assert!(te(&ctx, &t, &zeros(&ctx, &[3, 16]), 15, true, 0.0, "t").is_err());
    assert!(te(&ctx, &t, &zeros(&ctx, &[2, 16]), 16, true, 0.0, "t").is_err());
    assert!(te(
        &ctx,
        &zeros(&ctx, &[3, 1]),
        &zeros(&ctx, &[3, 16]),
        16,
        true,
        0.0,
        "t"
    )
    .is_err());
    assert!(te(&ctx, &t, &zeros(&ctx, &[3, 0]), 0, true, 0.0, "t").is_err());
    assert!(te(&ctx, &t, &zeros(&ctx, &[3, 2]), 2, true, 1.0, "t").is_err());
}

// ---- banded group norm and row copies ----------------------------------------------------------

/// Group norm of `x` (`[N, C, H, W]`) cut into the row bands `bands` with `copy_rows`, normalised
/// band by band with the whole image's statistics (`group_norm_partial` per band, then
/// `group_norm_apply`), written back into one tensor with `copy_rows`, against the reference.
fn check_banded_group_norm(
    rng: &mut Rng,
    shape: [usize; 4],
    x: &[f32],
    groups: usize,
    bands: &[std::ops::Range<usize>],
    (atol, rtol): (f64, f64),
) -> f64 {
    let ctx = ctx();
    let [n, c, h, w] = shape;
    assert_eq!(
        bands.last().map(|r| r.end),
        Some(h),
        "the bands cover every row"
    );
    let gamma = rng.vec(c, 0.5, 1.5);
    let beta = rng.vec(c, -0.5, 0.5);
    let eps = 1e-6f32;
    let input = upload(&ctx, &shape, x);
    let g = upload(&ctx, &[c], &gamma);
    let b = upload(&ctx, &[c], &beta);
    let stats = zeros(&ctx, &[bands.len(), n * groups, 4]);
    let out = zeros(&ctx, &shape);
    let pieces: Vec<(Tensor, Tensor)> = bands
        .iter()
        .map(|r| {
            (
                zeros(&ctx, &[n, c, r.len(), w]),
                zeros(&ctx, &[n, c, r.len(), w]),
            )
        })
        .collect();
    let mut dispatches = Vec::new();
    for (r, (band, _)) in bands.iter().zip(&pieces) {
        let args = elementwise::CopyRows {
            src: &input,
            dst: band,
            src_row: r.start,
            dst_row: 0,
            rows: r.len(),
        };
        dispatches.push(elementwise::copy_rows(&ctx, &args, "split").unwrap());
    }
    for (i, (band, _)) in pieces.iter().enumerate() {
        let args = group_norm::GroupNormPartial {
            input: band,
            stats: &stats,
            groups,
            band: i,
        };
        dispatches.push(group_norm::group_norm_partial(&ctx, &args, "partial").unwrap());
    }
    for (r, (band, normed)) in bands.iter().zip(&pieces) {
        let args = group_norm::GroupNormApply {
            input: band,
            stats: &stats,
            gamma: &g,
            beta: &b,
            out: normed,
            groups,
            eps,
            silu: true,
        };
        dispatches.push(group_norm::group_norm_apply(&ctx, &args, "apply").unwrap());
        let args = elementwise::CopyRows {
            src: normed,
            dst: &out,
            src_row: 0,
            dst_row: r.start,
            rows: r.len(),
        };
        dispatches.push(elementwise::copy_rows(&ctx, &args, "concat").unwrap());
    }
    let refs: Vec<&Dispatch> = dispatches.iter().collect();
    ctx.submit(&refs).unwrap();
    let got = out.read(&ctx).unwrap();
    let want = misc::group_norm(x, &shape, &gamma, &beta, groups, f64::from(eps), true).unwrap();
    let cmp = compare(
        &format!("banded group_norm {shape:?} groups={groups} bands={bands:?}"),
        &got,
        &want,
        atol,
        rtol,
    );
    assert!(cmp.ok(), "{cmp}");
    cmp.max_abs
}

#[test]
fn banded_group_norm_uses_the_whole_image_statistics() {
    let mut worst = 0.0f64;
    let mut rng = Rng::new(21);
    // Uneven bands (one of a single row), groups of 1 channel and of several.
    for (shape, groups, bands) in [
        ([2, 6, 7, 5], 3, vec![0..2, 2..3, 3..7]),
        ([1, 6, 7, 5], 6, vec![0..3, 3..7]),
        ([2, 4, 9, 3], 1, vec![0..1, 1..5, 5..8, 8..9]),
        ([1, 3, 5, 5], 3, std::iter::once(0..5).collect()),
    ] {
        let x = rng.vec(shape.iter().product(), -2.0, 3.0);
        worst = worst.max(check_banded_group_norm(
            &mut rng,
            shape,
            &x,
            groups,
            &bands,
            (1e-5, 1e-5),
        ));
    }
    // A large common offset, and bands whose means differ (a ramp down the rows).
    let shape = [1, 4, 8, 6];
    let x: Vec<f32> = rng
        .vec(shape.iter().product(), -0.5, 0.5)
        .into_iter()
        .enumerate()
        .map(|(i, v)| 1000.0 + v + ((i / 6) % 8) as f32)
        .collect();
    worst = worst.max(check_banded_group_norm(
        &mut rng,
        shape,
        &x,
        2,
        &[0..3, 3..4, 4..8],
        (1e-4, 1e-4),
    ));
    println!("banded group_norm: max abs err {worst:.3e}");
}

#[test]
fn copy_rows_rejects_ranges_outside_either_tensor() {
    let ctx = ctx();
    let src = zeros(&ctx, &[1, 2, 4, 3]);
    let dst = zeros(&ctx, &[1, 2, 3, 3]);
    let e = elementwise::copy_rows(
        &ctx,
        &elementwise::CopyRows {
            src: &src,
            dst: &dst,
            src_row: 2,
            dst_row: 0,
            rows: 3,
        },
        "bad",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rows 2..5") && e.contains("[1, 2, 4, 3]"), "{e}");
    let other = zeros(&ctx, &[1, 3, 3, 3]);
    let e = elementwise::copy_rows(
        &ctx,
        &elementwise::CopyRows {
            src: &src,
            dst: &other,
            src_row: 0,
            dst_row: 0,
            rows: 1,
        },
        "bad",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("N, C and W must agree"), "{e}");
}

/// The CPU-shaped group norm (`group_norm_cpu.wgsl`: one subgroup per group, the same 256 partial
/// sums and tree) gives the very bits of `group_norm.wgsl`'s `main` — one and many 256-element
/// chunks, runs that end inside a chunk, one channel per group, a large common offset, SiLU on
/// and off — and leaves spatial sizes off multiples of 4 to the GPU-shaped kernel.
#[test]
fn group_norm_cpu_shape_matches_gpu_shape_bit_for_bit() {
    let ctx = ctx();
    if !cpu_kernels_available(&ctx) {
        return;
    }
    let run_shape = |choice: KernelChoice, shape: &[usize], x: &[f32], groups: usize, silu| {
        ctx.set_kernels(choice).expect("kernel shape");
        let mut rng = Rng::new(77);
        let c = shape[1];
        let gamma = upload(&ctx, &[c], &rng.vec(c, 0.5, 1.5));
        let beta = upload(&ctx, &[c], &rng.vec(c, -0.5, 0.5));
        let input = upload(&ctx, shape, x);
        let out = zeros(&ctx, shape);
        let d = group_norm::group_norm(
            &ctx,
            &group_norm::GroupNorm {
                input: &input,
                gamma: &gamma,
                beta: &beta,
                out: &out,
                groups,
                eps: 1e-5,
                silu,
            },
            "test",
        )
        .expect("group_norm");
        (run(&ctx, &d, &out), d.kernel)
    };
    for (i, &(shape, groups, offset)) in [
        ([1usize, 4, 2, 2], 2usize, 0.0f32),
        ([2, 6, 4, 5], 3, 0.0),
        ([1, 64, 16, 16], 32, 0.0),
        ([2, 128, 32, 32], 32, 0.0),
        ([3, 40, 3, 12], 8, 0.0),
        ([1, 32, 8, 8], 32, 0.0),
        ([2, 16, 8, 4], 4, 1000.0),
    ]
    .iter()
    .enumerate()
    {
        let mut rng = Rng::new(i as u64 + 300);
        let x: Vec<f32> = rng
            .vec(shape.iter().product(), -2.0, 2.0)
            .into_iter()
            .map(|v| v + offset)
            .collect();
        let silu = i % 2 == 1;
        let (gpu, gk) = run_shape(KernelChoice::Gpu, &shape, &x, groups, silu);
        let (cpu, ck) = run_shape(KernelChoice::Cpu, &shape, &x, groups, silu);
        assert_eq!(gk, Kernel::GroupNorm);
        assert_eq!(ck, Kernel::GroupNormCpu, "{shape:?}");
        let differ = bits_differ(&gpu, &cpu);
        assert_eq!(
            differ,
            0,
            "{shape:?} groups {groups}: {differ} of {} differ",
            gpu.len()
        );
    }
    let x = Rng::new(1).vec(2 * 4 * 5 * 5, -1.0, 1.0);
    let (_, kernel) = run_shape(KernelChoice::Cpu, &[2, 4, 5, 5], &x, 2, false);
    assert_eq!(kernel, Kernel::GroupNorm, "S = 25 stays on group_norm.wgsl");
}

/// The CPU-shaped softmax (`softmax_cpu.wgsl`: one subgroup per row, the same partials and trees)
/// gives the very bits of `softmax.wgsl` — rows of one chunk and of many, rows ending inside a
/// chunk, large logits — and leaves rows off multiples of 4 to the GPU-shaped kernel.
#[test]
fn softmax_cpu_shape_matches_gpu_shape_bit_for_bit() {
    let ctx = ctx();
    if !cpu_kernels_available(&ctx) {
        return;
    }
    let run_shape = |choice: KernelChoice, x: &[f32], rows: usize, cols: usize| {
        ctx.set_kernels(choice).expect("kernel shape");
        let data = upload(&ctx, &[rows, cols], x);
        let d = softmax::softmax_rows(
            &ctx,
            &softmax::SoftmaxRows {
                data: &data,
                rows,
                cols,
            },
            "test",
        )
        .expect("softmax");
        (run(&ctx, &d, &data), d.kernel)
    };
    for (i, &(rows, cols, scale)) in [
        (1usize, 4usize, 1.0f32),
        (3, 12, 4.0),
        (17, 256, 8.0),
        (5, 1000, 30.0),
        (2, 2052, 1.0),
        (9, 77 * 4, 0.5),
    ]
    .iter()
    .enumerate()
    {
        let x = Rng::new(400 + i as u64).vec(rows * cols, -scale, scale);
        let (gpu, gk) = run_shape(KernelChoice::Gpu, &x, rows, cols);
        let (cpu, ck) = run_shape(KernelChoice::Cpu, &x, rows, cols);
        assert_eq!(gk, Kernel::Softmax);
        assert_eq!(ck, Kernel::SoftmaxCpu, "{rows}x{cols}");
        let differ = bits_differ(&gpu, &cpu);
        assert_eq!(differ, 0, "{rows}x{cols}: {differ} of {} differ", gpu.len());
    }
    let x = Rng::new(2).vec(3 * 7, -1.0, 1.0);
    let (_, kernel) = run_shape(KernelChoice::Cpu, &x, 3, 7);
    assert_eq!(kernel, Kernel::Softmax, "7 columns stay on softmax.wgsl");
}

// ---- concatenation (weight fusion at load) ----------------------------------------------------

#[test]
fn concat_outer_stacks_parts_and_rejects_mismatched_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(41);
    let shapes: [&[usize]; 3] = [&[3, 5], &[1, 5], &[7, 5]];
    let data: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
        .collect();
    let parts: Vec<Tensor> = shapes
        .iter()
        .zip(&data)
        .map(|(s, d)| upload(&ctx, s, d))
        .collect();
    let refs: Vec<&Tensor> = parts.iter().collect();
    let fused = Tensor::concat_outer(&ctx, &refs, "fused").unwrap();
    assert_eq!(fused.shape, vec![11, 5]);
    assert_eq!(fused.read(&ctx).unwrap(), data.concat());

    let odd = upload(&ctx, &[2, 4], &[0.0; 8]);
    let err = Tensor::concat_outer(&ctx, &[&parts[0], &odd], "fused")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[3, 5]") && err.contains("[2, 4]"), "{err}");
    let err = Tensor::concat_outer(&ctx, &[], "fused")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tensors"), "{err}");
}

/// `sampler_steps` refuses a model input or output too small for the rows its blocks address
/// (with guidance, `[cond; null]`: twice the images): the shader does not bound those accesses
/// itself, so it must stay in range with naga's runtime checks off.
#[test]
fn sampler_steps_check_the_guided_rows() {
    use wgpu_diffusion::ops::sampler_step::{
        sampler_steps, SamplerState, SamplerSteps, StageUpdate, StepParams, FLAG_CFG, FLAG_LAST,
    };
    let ctx = ctx();
    let n = 8;
    let t = |len: usize, label: &str| Tensor::zeros(&ctx, &[len], label).expect("tensor");
    let (noise, x, hist, x0, timesteps) = (
        t(n, "noise"),
        t(n, "x"),
        t(n, "hist"),
        t(n, "x0"),
        t(2, "timesteps"),
    );
    let block = |flags| StepParams {
        numel: n as u32,
        rows: 2,
        flags,
        hist_slots: 1,
        ..StepParams::default()
    };
    let stages = [StageUpdate {
        params: block(FLAG_CFG | FLAG_LAST),
        label: "last".into(),
    }];
    let run = |model_in: &Tensor, model_output: &Tensor| {
        let state = SamplerState {
            noise: &noise,
            x: &x,
            hist: &hist,
            model_in,
            timesteps: &timesteps,
            x0: &x0,
        };
        let steps = SamplerSteps {
            state,
            init_src: &noise,
            model_output,
            init: block(FLAG_CFG),
            stages: &stages,
        };
        sampler_steps(&ctx, &steps, "guided rows").map(|_| ())
    };
    let (both, one) = (t(2 * n, "both rows"), t(n, "one row"));
    run(&both, &both).expect("both rows fit");
    let e = run(&one, &both)
        .expect_err("model_in too small")
        .to_string();
    assert!(e.contains("model_in") && e.contains("2 × 8"), "{e}");
    let e = run(&both, &one).expect_err("output too small").to_string();
    assert!(e.contains("model_output") && e.contains("2 × 8"), "{e}");
}
