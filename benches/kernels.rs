//! criterion benches of the main kernels on the default adapter (`WGPU_*` variables select it).
//! Every iteration records the dispatch, submits it and waits for the device, so the clock stops
//! only when the GPU work is done. Throughput is reported in FLOPs (2 per multiply-add).
//!
//! `cargo bench --bench kernels` (lavapipe: a few minutes); `-- --quick` for a short run.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgpu_diffusion::gpu::{Dispatch, GpuContext, GpuOptions, Tensor};
use wgpu_diffusion::ops::conv2d::{conv2d, Conv2d, Padding};
use wgpu_diffusion::ops::group_norm::{group_norm, GroupNorm};
use wgpu_diffusion::ops::matmul::{matmul, Matmul};

fn ctx() -> Arc<GpuContext> {
    GpuContext::new(&GpuOptions::from_env()).unwrap_or_else(|e| panic!("no GPU device: {e}"))
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn tensor(ctx: &GpuContext, shape: &[usize], seed: u32, label: &str) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_slice(ctx, shape, &values(n, seed), label).expect("tensor")
}

/// Times one dispatch: submit, then wait for the device inside the timed region.
fn bench_dispatch(c: &mut Criterion, name: &str, ctx: &GpuContext, d: &Dispatch) {
    // Warm the pipeline and the driver before criterion's own warm-up.
    ctx.submit(&[d]).expect("submit");
    ctx.wait().expect("wait");
    let mut group = c.benchmark_group("kernels");
    group.throughput(Throughput::Elements(d.flops));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(name, |b| {
        b.iter(|| {
            ctx.submit(&[d]).expect("submit");
            ctx.wait().expect("wait");
        })
    });
    group.finish();
}

fn conv3x3(c: &mut Criterion) {
    let ctx = ctx();
    let (n, ch, hw) = (8, 64, 32);
    let input = tensor(&ctx, &[n, ch, hw, hw], 1, "input");
    let weight = tensor(&ctx, &[ch, ch, 3, 3], 2, "weight");
    let bias = tensor(&ctx, &[ch], 3, "bias");
    let out = Tensor::zeros(&ctx, &[n, ch, hw, hw], "out").expect("out");
    let spec = Conv2d {
        input: &input,
        upsample: false,
        weight: &weight,
        bias: Some(&bias),
        batch_bias: None,
        batch_bias_view: None,
        residual: None,
        out: &out,
        stride: 1,
        padding: Padding::same(1),
        output_scale: 1.0,
    };
    let d = conv2d(&ctx, &spec, "bench conv3x3").expect("conv2d");
    bench_dispatch(c, "conv2d 3x3 64->64 32x32 b8", &ctx, &d);
}

fn matmul_512(c: &mut Criterion) {
    let ctx = ctx();
    let s = 512;
    let a = tensor(&ctx, &[s, s], 4, "a");
    let b = tensor(&ctx, &[s, s], 5, "b");
    let out = Tensor::zeros(&ctx, &[s, s], "out").expect("out");
    let mm = Matmul {
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
    };
    let d = matmul(&ctx, &mm, "bench matmul").expect("matmul");
    bench_dispatch(c, "matmul 512x512x512", &ctx, &d);
}

fn group_norm_256(c: &mut Criterion) {
    let ctx = ctx();
    let (n, ch, hw) = (8, 256, 32);
    let input = tensor(&ctx, &[n, ch, hw, hw], 6, "input");
    let gamma = tensor(&ctx, &[ch], 7, "gamma");
    let beta = tensor(&ctx, &[ch], 8, "beta");
    let out = Tensor::zeros(&ctx, &[n, ch, hw, hw], "out").expect("out");
    let args = GroupNorm {
        input: &input,
        gamma: &gamma,
        beta: &beta,
        out: &out,
        groups: 32,
        eps: 1e-6,
        silu: true,
    };
    let d = group_norm(&ctx, &args, "bench group_norm").expect("group_norm");
    bench_dispatch(c, "group_norm+silu 256ch 32x32 b8 32 groups", &ctx, &d);
}

criterion_group!(kernels, conv3x3, matmul_512, group_norm_256);
criterion_main!(kernels);
