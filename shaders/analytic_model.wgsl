// A known-answer "network" for testing samplers: the exact denoiser of a Gaussian data set
// x₀ ~ N(μ, s²) (every element independent), so the distribution a correct sampler must produce
// is known in closed form. Used by tests, never by real sampling.
//
// Bindings: 0 input [B, ...] (read: the network input), 1 timesteps [B] (read), 2 table (read:
// ᾱ over the training timesteps, mode 0 only; a dummy otherwise), 3 out [B, ...] (read_write),
// 4 params (uniform).
//
// Per element, with t the image's timestep:
//   mode 0 (ε, discrete): ᾱ = ᾱ_table linearly interpolated at t (clamped to [0, T − 1]);
//   mode 1 (ε, continuous VP): τ = t / (T − 1), ᾱ = exp(−½τ²(β_max − β_min) − τβ_min);
//     ε̂ = √(1−ᾱ) / (ᾱs² + 1 − ᾱ) · (x − √ᾱ μ)   (E[ε | x] for x = √ᾱ x₀ + √(1−ᾱ) ε);
//   mode 2 (velocity, flow matching): σ = t / T, d = (1−σ)²s² + σ²,
//     v̂ = (σ − (1−σ)s²)/d · (x − (1−σ)μ) − μ     (E[ε − x₀ | x] for x = (1−σ)x₀ + σε).
// Numerics: f32; the CPU twin is `wgpu_diffusion::sampling::analytic::GaussianModel::eval`.
//
// Launcher: src/ops/analytic_model.rs (the registry line is in src/gpu/kernel.rs).

struct Params {
    count: u32,
    per_image: u32,
    mode: u32,
    table_len: u32,
    mean: f32,
    stddev: f32,
    beta_min: f32,
    beta_max: f32,
    train_steps: f32,
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
}

override WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> timesteps: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

fn alpha_cumprod(t: f32) -> f32 {
    if (p.mode == 1u) {
        let tau = t / (p.train_steps - 1.0);
        return exp(-0.5 * tau * tau * (p.beta_max - p.beta_min) - tau * p.beta_min);
    }
    let last = f32(p.table_len - 1u);
    let tc = clamp(t, 0.0, last);
    let i0 = u32(floor(tc));
    let i1 = min(i0 + 1u, p.table_len - 1u);
    let f = tc - f32(i0);
    return mix(table[i0], table[i1], f);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn gaussian(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid.x;
    if (i >= p.count) {
        return;
    }
    let t = timesteps[i / p.per_image];
    let x = input[i];
    let s2 = p.stddev * p.stddev;
    if (p.mode == 2u) {
        let sigma = t / p.train_steps;
        let d = (1.0 - sigma) * (1.0 - sigma) * s2 + sigma * sigma;
        out[i] = (sigma - (1.0 - sigma) * s2) / d * (x - (1.0 - sigma) * p.mean) - p.mean;
        return;
    }
    let a = alpha_cumprod(t);
    out[i] = sqrt(1.0 - a) / (a * s2 + 1.0 - a) * (x - sqrt(a) * p.mean);
}
