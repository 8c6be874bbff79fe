// The GELU-family activations of transformers' CLIP MLP, element-wise, and diffusers' GEGLU.
// PyTorch: quick_gelu: y = x * torch.sigmoid(1.702 * x) (transformers' QuickGELUActivation);
//          gelu:       y = F.gelu(x) = 0.5 * x * (1 + erf(x / √2)) (the exact, erf form);
//          geglu:      h, gate = x.chunk(2, dim=-1); y = h * F.gelu(gate) (diffusers' GEGLU, the
//                      feed-forward of SD's transformer blocks), x [rows, 2F] → y [rows, F].
//
// Bindings: 0 x [count] ([rows, 2·features] for geglu), 1 y [count] (distinct buffers), 2 params.
//
// One invocation per element; the grid may be 2-D (linear id = (wid.x + wid.y · nwg.x) ·
// WORKGROUP_SIZE + lid) and invocations past `count` return at once.
//
// Numerics: f32. quick_gelu is x / (1 + exp(−1.702 x)), which is −0 (not NaN) when the exp
// overflows for very negative x. WGSL has no erf, so gelu is written through the complementary
// error function of a ≥ 0, erfc(a/√2) (`gauss_tail`): gelu(x) = 0.5·x·erfc(−x/√2), which is
// 0.5·x·gauss_tail(|x|) for x < 0 (no cancellation in the negative tail, where gelu → 0) and
// 0.5·x·(2 − gauss_tail(x)) for x ≥ 0. erfc is the Chebyshev fit of Numerical Recipes (`erfcc`,
// fractional error < 1.2e-7 for every argument): erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2).
// The exponent −z² = −x²/2 is formed without rounding x/√2 first: x = h + l with h holding the top
// 12 significand bits, so h² is exact, and exp(−h²/2) is applied as exp(−h²/4)² (it stays a normal
// f32 down to the tail's underflow) times exp(−(x − h)(x + h)/2 + P(t)). Measured against f64 on a
// dense grid over [−14, 14] plus log-spaced tails (tests/ops_text.rs): see README.
//
// Launcher: src/ops/activation.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // Number of output elements.
    count: u32,
    // geglu: F, the width of one output row (x rows hold 2F: h then gate). Unused otherwise.
    features: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

// Linear element index of this invocation.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
}

// erfc(a / √2) for a ≥ 0 (Numerical Recipes' erfcc coefficients).
fn gauss_tail(a: f32) -> f32 {
    let z = a * 0.70710678118654752;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    // a = h + l, h = a with the low 12 significand bits cleared: h·h is exact.
    let h = bitcast<f32>(bitcast<u32>(a) & 0xfffff000u);
    let e = exp(-0.25 * (h * h));
    let rest = exp(-0.5 * ((a - h) * (a + h)) + poly);
    return ((t * rest) * e) * e;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn quick_gelu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wid, nwg, lid);
    if (i >= p.count) {
        return;
    }
    let v = x[i];
    y[i] = v / (1.0 + exp(-1.702 * v));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn gelu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wid, nwg, lid);
    if (i >= p.count) {
        return;
    }
    y[i] = gelu_of(x[i]);
}

// 0.5·v·erfc(−v/√2), written per sign so neither tail cancels.
fn gelu_of(v: f32) -> f32 {
    var phi2: f32;
    if (v < 0.0) {
        phi2 = gauss_tail(-v);
    } else {
        phi2 = 2.0 - gauss_tail(v);
    }
    return 0.5 * v * phi2;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn geglu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wid, nwg, lid);
    if (i >= p.count) {
        return;
    }
    let row = i / p.features;
    let j = i - row * p.features;
    let base = row * 2u * p.features + j;
    y[i] = x[base] * gelu_of(x[base + p.features]);
}
