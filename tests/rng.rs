//! Philox 4x32-10 normal noise (`shaders/rng.wgsl`, `ops::rng`, `reference::rng`): Random123's
//! known-answer vectors on the CPU and the GPU, GPU normals against the f64 reference element by
//! element, exhaustive accuracy of the Box–Muller transform, independence of the batch layout,
//! and the statistics of 2^20 samples.

mod common;

use common::{ctx, Rng};
use wgpu_diffusion::gpu::{Dispatch, GpuContext};
use wgpu_diffusion::ops::rng::{
    box_muller_u32, normal_noise, normal_noise_steps, philox_u32, NoiseKey, NormalNoise,
    NormalNoiseSteps, RawWords,
};
use wgpu_diffusion::reference::compare;
use wgpu_diffusion::reference::rng::{box_muller, normal, normal_image, philox4x32_10};
use wgpu_diffusion::Tensor;

/// The accuracy budget of one normal against the f64 transform of the same words.
const ATOL: f64 = 2e-6;

/// Random123 `kat_vectors`, philox4x32_10: (counter, key, expected output).
const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    (
        [0, 0, 0, 0],
        [0, 0],
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
    ),
    (
        [0xffff_ffff; 4],
        [0xffff_ffff; 2],
        [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
    ),
    (
        [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
        [0xa409_3822, 0x299f_31d0],
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
    ),
];

fn run(ctx: &GpuContext, dispatch: &Dispatch, out: &Tensor) -> Vec<f32> {
    ctx.submit(&[dispatch]).unwrap_or_else(|e| panic!("{e}"));
    out.read(ctx).unwrap_or_else(|e| panic!("{e}"))
}

/// The GPU's noise for a tensor of `shape` (images first).
fn gpu_noise(
    ctx: &GpuContext,
    shape: &[usize],
    seed: u64,
    first_image: u32,
    step: u32,
    stream: u32,
) -> Vec<f32> {
    let out = Tensor::zeros(ctx, shape, "noise").unwrap_or_else(|e| panic!("{e}"));
    let d = normal_noise(
        ctx,
        &NormalNoise {
            out: &out,
            seed,
            first_image,
            step,
            stream,
        },
        "noise",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    run(ctx, &d, &out)
}

/// The reference for the same tensor.
fn cpu_noise(shape: &[usize], seed: u64, first_image: u32, step: u32, stream: u32) -> Vec<f64> {
    let images = shape[0];
    let numel: usize = shape[1..].iter().product();
    (0..images)
        .flat_map(|n| normal_image(seed, first_image + n as u32, step, stream, numel))
        .collect()
}

fn bits_to_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

fn gpu_philox(ctx: &GpuContext, calls: &[([u32; 4], [u32; 2])]) -> Vec<[u32; 4]> {
    let words: Vec<u32> = calls
        .iter()
        .flat_map(|(c, k)| c.iter().chain(k.iter()).copied())
        .collect();
    let input = Tensor::from_slice(ctx, &[calls.len(), 6], &bits_to_f32(&words), "philox in")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Tensor::zeros(ctx, &[calls.len(), 4], "philox out").unwrap_or_else(|e| panic!("{e}"));
    let d = philox_u32(
        ctx,
        &RawWords {
            input: &input,
            out: &out,
        },
        "philox",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    run(ctx, &d, &out)
        .chunks(4)
        .map(|w| {
            [
                w[0].to_bits(),
                w[1].to_bits(),
                w[2].to_bits(),
                w[3].to_bits(),
            ]
        })
        .collect()
}

#[test]
fn philox_known_answers_cpu() {
    for (counter, key, want) in KAT {
        let got = philox4x32_10(counter, key);
        assert_eq!(
            got, want,
            "philox4x32_10({counter:08x?}, {key:08x?}) = {got:08x?}, want {want:08x?}"
        );
    }
}

#[test]
fn philox_known_answers_and_random_counters_gpu() {
    let ctx = ctx();
    let mut rng = Rng::new(7);
    let mut calls: Vec<([u32; 4], [u32; 2])> = KAT.iter().map(|&(c, k, _)| (c, k)).collect();
    for _ in 0..4093 {
        let w = |rng: &mut Rng| rng.next_u64() as u32;
        calls.push((
            [w(&mut rng), w(&mut rng), w(&mut rng), w(&mut rng)],
            [w(&mut rng), w(&mut rng)],
        ));
    }
    let got = gpu_philox(&ctx, &calls);
    for (i, (counter, key, want)) in KAT.iter().enumerate() {
        assert_eq!(
            got[i], *want,
            "GPU philox4x32_10({counter:08x?}, {key:08x?}) = {:08x?}, want {want:08x?}",
            got[i]
        );
    }
    for (i, ((counter, key), got)) in calls.iter().zip(&got).enumerate() {
        let want = philox4x32_10(*counter, *key);
        assert_eq!(
            *got, want,
            "call {i}: GPU philox4x32_10({counter:08x?}, {key:08x?}) = {got:08x?}, CPU {want:08x?}"
        );
    }
}

/// Runs the shader's transform on `pairs` in chunks; returns the worst |gpu − f64| and where.
fn box_muller_max_error(ctx: &GpuContext, pairs: &[(u32, u32)]) -> (f64, (u32, u32), f32, f64) {
    let mut worst = (0.0, (0, 0), 0.0f32, 0.0);
    for chunk in pairs.chunks(1 << 21) {
        let words: Vec<u32> = chunk.iter().flat_map(|&(a, b)| [a, b]).collect();
        let input = Tensor::from_slice(ctx, &[chunk.len(), 2], &bits_to_f32(&words), "pairs")
            .unwrap_or_else(|e| panic!("{e}"));
        let out =
            Tensor::zeros(ctx, &[chunk.len(), 2], "normals").unwrap_or_else(|e| panic!("{e}"));
        let d = box_muller_u32(
            ctx,
            &RawWords {
                input: &input,
                out: &out,
            },
            "box_muller",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let got = run(ctx, &d, &out);
        for (&(a, b), z) in chunk.iter().zip(got.chunks(2)) {
            let want = box_muller(a, b);
            for j in 0..2 {
                let err = (f64::from(z[j]) - want[j]).abs();
                assert!(
                    err.is_finite(),
                    "box_muller({a:#x}, {b:#x})[{j}] = {}",
                    z[j]
                );
                if err > worst.0 {
                    worst = (err, (a, b), z[j], want[j]);
                }
            }
        }
    }
    worst
}

/// Every one of the 2^24 values of each word: the radius √(−2 ln u1) over all u1 (with u2 = 0,
/// so z0 = r exactly in f64 and z1 = 0), the rotation over all u2 at the largest radius (u1 =
/// 2^-24, r ≈ 5.77), and random pairs. Together they bound the error of every output.
#[test]
fn box_muller_accuracy_exhaustive() {
    let ctx = ctx();
    let radius: Vec<(u32, u32)> = (0..1u32 << 24).map(|k| (k << 8, 0)).collect();
    let (r_err, r_at, r_got, r_want) = box_muller_max_error(&ctx, &radius);
    let angle: Vec<(u32, u32)> = (0..1u32 << 24).map(|k| (0, k << 8 | 0xff)).collect();
    let (a_err, a_at, a_got, a_want) = box_muller_max_error(&ctx, &angle);
    let mut rng = Rng::new(11);
    let random: Vec<(u32, u32)> = (0..1 << 20)
        .map(|_| {
            let x = rng.next_u64();
            (x as u32, (x >> 32) as u32)
        })
        .collect();
    let (m_err, m_at, m_got, m_want) = box_muller_max_error(&ctx, &random);
    eprintln!(
        "box_muller max |gpu − f64| on {}: radius (all u1) {r_err:.3e} at {r_at:x?} ({r_got} vs \
         {r_want}); rotation at r = 5.77 (all u2) {a_err:.3e} at {a_at:x?} ({a_got} vs {a_want}); \
         random pairs {m_err:.3e} at {m_at:x?} ({m_got} vs {m_want})",
        ctx.adapter.describe()
    );
    for (what, err) in [("radius", r_err), ("rotation", a_err), ("random", m_err)] {
        assert!(err <= ATOL, "{what}: max error {err:.3e} > {ATOL:e}");
    }
}

#[test]
fn gpu_normals_match_reference() {
    let ctx = ctx();
    let seeds = [
        0u64,
        1,
        0xDEAD_BEEF,
        1 << 32,
        0x0123_4567_89AB_CDEF,
        u64::MAX,
    ];
    let mut worst = 0.0f64;
    for (i, &seed) in seeds.iter().enumerate() {
        for numel in [1usize, 3, 7, 4099] {
            let i = i as u32;
            let (first, step, stream) = (i * 5, 999 * i, i % 3);
            let shape = [3, numel];
            let got = gpu_noise(&ctx, &shape, seed, first, step, stream);
            let want = cpu_noise(&shape, seed, first, step, stream);
            let c = compare(
                &format!("seed {seed:#x} numel {numel} first {first} step {step} stream {stream}"),
                &got,
                &want,
                ATOL,
                0.0,
            );
            assert!(c.ok(), "{c}");
            worst = worst.max(c.max_abs);
        }
    }
    // Spot-check the element-wise API against the image-wise one.
    let got = gpu_noise(&ctx, &[2, 3, 5, 7], 42, 10, 4, 1);
    for e in [0usize, 1, 2, 3, 4, 104, 105, 209] {
        let (n, k) = (e / 105, e % 105);
        let want = normal(42, 10 + n as u32, 4, 1, k);
        assert!(
            (f64::from(got[e]) - want).abs() <= ATOL,
            "element {e}: {} vs {want}",
            got[e]
        );
    }
    eprintln!("normal_noise max |gpu − f64| = {worst:.3e}");
}

#[test]
fn batch_split_is_bit_exact() {
    let ctx = ctx();
    let per_image = [3usize, 5, 7];
    let shape = |n: usize| [n, per_image[0], per_image[1], per_image[2]];
    let (seed, step, stream) = (0x5EED_0000_0001u64, 17, 1);
    let whole = gpu_noise(&ctx, &shape(8), seed, 0, step, stream);
    let head = gpu_noise(&ctx, &shape(3), seed, 0, step, stream);
    let tail = gpu_noise(&ctx, &shape(5), seed, 3, step, stream);
    let split: Vec<f32> = head.iter().chain(&tail).copied().collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&whole), bits(&split), "images 0..8 ≠ 0..3 ++ 3..8");
    let numel = 105;
    for n in 0..8u32 {
        let one = gpu_noise(&ctx, &shape(1), seed, n, step, stream);
        let at = n as usize * numel;
        assert_eq!(
            bits(&one),
            bits(&whole[at..at + numel]),
            "image {n} alone differs from image {n} of the batch"
        );
    }
    let again = gpu_noise(&ctx, &shape(8), seed, 0, step, stream);
    assert_eq!(
        bits(&whole),
        bits(&again),
        "the same dispatch is not reproducible"
    );
    let shifted = gpu_noise(&ctx, &shape(8), seed, 1, step, stream);
    assert_eq!(
        bits(&shifted[..7 * numel]),
        bits(&whole[numel..]),
        "first_image = 1 does not shift the images by one"
    );
    assert_ne!(bits(&shifted[..numel]), bits(&whole[..numel]));
}

#[test]
fn planned_steps_match_single_dispatches() {
    let ctx = ctx();
    let steps = [0u32, 1, 5, 999];
    let (seed, first, stream) = (1u64 << 40 | 3, 2, 1);
    let out = Tensor::zeros(&ctx, &[2, 1, 9, 9], "noise").unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<NoiseKey> = steps
        .iter()
        .map(|&step| NoiseKey { step, stream })
        .collect();
    let args = NormalNoiseSteps {
        out: &out,
        seed,
        first_image: first,
        keys: &keys,
    };
    let plan = normal_noise_steps(&ctx, &args, "noise").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.len(), steps.len());
    // Replay in reverse and twice, as a sampler loop would, to show nothing carries over.
    for _ in 0..2 {
        for (d, &step) in plan.iter().zip(&steps).rev() {
            let got = run(&ctx, d, &out);
            let single = gpu_noise(&ctx, &[2, 1, 9, 9], seed, first, step, stream);
            assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                single.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "planned step {step} differs from a single dispatch"
            );
            let c = compare(
                &format!("step {step}"),
                &got,
                &cpu_noise(&[2, 81], seed, first, step, stream),
                ATOL,
                0.0,
            );
            assert!(c.ok(), "{c}");
        }
    }
}

fn moments(x: &[f32]) -> (f64, f64, f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut m2, mut m3, mut m4) = (0.0, 0.0, 0.0);
    for &v in x {
        let d = f64::from(v) - mean;
        m2 += d * d;
        m3 += d * d * d;
        m4 += d * d * d * d;
    }
    let var = m2 / n;
    (mean, var, m3 / n / var.powf(1.5), m4 / n / (var * var))
}

fn correlation(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let my = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (f64::from(a) - mx, f64::from(b) - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    sxy / (sxx * syy).sqrt()
}

const N_STAT: usize = 1 << 20;

#[test]
fn statistics_of_2_20_samples() {
    let ctx = ctx();
    // 16 images of 2^16 elements.
    let x = gpu_noise(&ctx, &[16, 1 << 16], 0xC0FF_EE00_1234, 0, 0, 0);
    assert_eq!(x.len(), N_STAT);
    assert!(x.iter().all(|v| v.is_finite()), "non-finite noise");
    let n = N_STAT as f64;
    let (mean, var, skew, kurt) = moments(&x);
    let beyond = |t: f32| x.iter().filter(|v| v.abs() > t).count() as f64 / n;
    // P(|Z| > 3), P(|Z| > 2) for a standard normal.
    let (p3, p2) = (0.002_699_796_063_260_2, 0.045_500_263_896_358_4);
    let (f3, f2) = (beyond(3.0), beyond(2.0));
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "n = 2^20: mean {mean:.2e}, var {var:.5}, skew {skew:.2e}, kurtosis {kurt:.4}, \
         P(|z|>3) {f3:.5} (want {p3:.5}), P(|z|>2) {f2:.5} (want {p2:.5}), max |z| {max}"
    );
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 0.01, "variance {var}");
    assert!(skew.abs() < 5.0 * (6.0 / n).sqrt(), "skewness {skew}");
    assert!(
        (kurt - 3.0).abs() < 5.0 * (24.0 / n).sqrt(),
        "kurtosis {kurt}"
    );
    for (f, p, t) in [(f3, p3, 3), (f2, p2, 2)] {
        let sigma = (p * (1.0 - p) / n).sqrt();
        assert!(
            (f - p).abs() < 5.0 * sigma,
            "P(|z| > {t}) = {f}, want {p} ± {}",
            5.0 * sigma
        );
    }
    // Box–Muller with u1 ≥ 2^-24 bounds |z| by √(48 ln 2).
    assert!(f64::from(max) <= (48.0 * 2f64.ln()).sqrt() + 1e-5);
    // Neighbours (the two outputs of one pair, and pairs of one Philox call) are uncorrelated.
    for lag in [1usize, 2, 3, 4] {
        let c = correlation(&x[..N_STAT - lag], &x[lag..]);
        assert!(c.abs() < 5.0 / n.sqrt(), "lag-{lag} autocorrelation {c}");
    }
}

#[test]
fn steps_streams_seeds_and_images_are_uncorrelated() {
    let ctx = ctx();
    let seed = 0x0000_0001_0000_0007u64;
    let shape = [4, 1 << 18];
    let base = gpu_noise(&ctx, &shape, seed, 0, 3, 0);
    let n = base.len() as f64;
    let variants = [
        ("step + 1", gpu_noise(&ctx, &shape, seed, 0, 4, 0)),
        ("stream + 1", gpu_noise(&ctx, &shape, seed, 0, 3, 1)),
        ("seed + 1", gpu_noise(&ctx, &shape, seed + 1, 0, 3, 0)),
        (
            "seed_hi + 1",
            gpu_noise(&ctx, &shape, seed + (1 << 32), 0, 3, 0),
        ),
        ("image + 1", gpu_noise(&ctx, &shape, seed, 1, 3, 0)),
    ];
    for (what, other) in &variants {
        let c = correlation(&base, other);
        eprintln!("corr(base, {what}) = {c:.2e}");
        assert!(c.abs() < 5.0 / n.sqrt(), "{what}: correlation {c}");
    }
}

#[test]
fn rejects_bad_arguments() {
    let ctx = ctx();
    let scalar = Tensor::zeros(&ctx, &[], "scalar").unwrap_or_else(|e| panic!("{e}"));
    assert!(normal_noise(
        &ctx,
        &NormalNoise {
            out: &scalar,
            seed: 0,
            first_image: 0,
            step: 0,
            stream: 0
        },
        "noise"
    )
    .is_err());
    let out = Tensor::zeros(&ctx, &[4, 8], "noise").unwrap_or_else(|e| panic!("{e}"));
    let err = normal_noise(
        &ctx,
        &NormalNoise {
            out: &out,
            seed: 0,
            first_image: u32::MAX - 2,
            step: 0,
            stream: 0,
        },
        "noise",
    );
    assert!(err.is_err(), "image index overflow accepted");
    assert!(normal_noise(
        &ctx,
        &NormalNoise {
            out: &out,
            seed: 0,
            first_image: u32::MAX - 3,
            step: 0,
            stream: 0
        },
        "noise"
    )
    .is_ok());
    let input = Tensor::zeros(&ctx, &[5, 6], "in").unwrap_or_else(|e| panic!("{e}"));
    let bad = Tensor::zeros(&ctx, &[4, 4], "out").unwrap_or_else(|e| panic!("{e}"));
    assert!(philox_u32(
        &ctx,
        &RawWords {
            input: &input,
            out: &bad
        },
        "philox"
    )
    .is_err());
    let odd = Tensor::zeros(&ctx, &[7], "in").unwrap_or_else(|e| panic!("{e}"));
    assert!(box_muller_u32(
        &ctx,
        &RawWords {
            input: &odd,
            out: &bad
        },
        "box_muller"
    )
    .is_err());
    assert!(philox_u32(
        &ctx,
        &RawWords {
            input: &input,
            out: &input
        },
        "philox"
    )
    .is_err());
}
