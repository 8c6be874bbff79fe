// The per-stage update of every sampler (src/schedule/plan.rs, "The generic update"), plus the
// setup of the first model input. One invocation per element of the n sampled images.
//
// Bindings (both entry points): 0 src (read: the model output for `step`, the init image for
// `init`), 1 noise [n, C, H, W] (read), 2 x [n, C, H, W] (read_write: the sample), 3 hist
// [n, C, H, W] (read_write: the history buffer H), 4 model_in [B, C, H, W] (read_write: the
// network's next input), 5 timesteps [B] (read_write: the network's next timesteps), 6 x0
// [n, C, H, W] (read_write: this stage's x̂₀, for trajectories), 7 params (uniform).
// B = n, or 2n with classifier-free guidance (rows 0..n conditional, n..2n the null label, both
// fed the same sample).
//
// `step`, with m the model output (m = m_null + w·(m_cond − m_null) under guidance):
//   x̂₀ = p_x·x + p_m·m, clamped to ±r when CLIP;
//   x' = a·x + b·x̂₀ + c·m + h·H + d·z (d·z only when NOISE);
//   H' = x̂₀ (HIST_X0) | x before the update (HIST_X) | H (neither);
//   model_in = next_input_scale·x' (both halves), timesteps = next_timestep, unless LAST.
// `init`: x = b·src + d·z (b = 0 ignores src), H = 0, x̂₀ = x, then model_in / timesteps as above.
//
// Numerics: f32 with fma where the plan's f64 coefficients were rounded once to f32.
//
// Launcher: src/ops/sampler_step.rs (the registry line is in src/gpu/kernel.rs).
// Both entry points run with an explicit bind-group layout: `params` is read at a dynamic offset
// into one uniform buffer holding the setup's and every stage's block of a sampling run.

struct Params {
    // Elements of the n sampled images (n·C·H·W).
    numel: u32,
    // Rows of `timesteps` to write (B).
    rows: u32,
    flags: u32,
    _pad0: u32,
    x0_from_sample: f32,
    x0_from_model: f32,
    clip_range: f32,
    guidance: f32,
    coef_sample: f32,
    coef_x0: f32,
    coef_model: f32,
    coef_history: f32,
    noise_std: f32,
    next_input_scale: f32,
    next_timestep: f32,
    _pad1: f32,
}

const FLAG_CLIP: u32 = 1u;
const FLAG_NOISE: u32 = 2u;
const FLAG_CFG: u32 = 4u;
const FLAG_HIST_X0: u32 = 8u;
const FLAG_HIST_X: u32 = 16u;
const FLAG_LAST: u32 = 32u;

override WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> noise: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> hist: array<f32>;
@group(0) @binding(4) var<storage, read_write> model_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> timesteps: array<f32>;
@group(0) @binding(6) var<storage, read_write> x0_out: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

fn has(flag: u32) -> bool {
    return (p.flags & flag) != 0u;
}

fn linear_index(wid: vec3<u32>, lid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid.x;
}

// Writes the next model input for element i and, from the first `rows` invocations, the
// timesteps.
fn write_next(i: u32, xn: f32) {
    if (i < p.rows) {
        timesteps[i] = p.next_timestep;
    }
    if (has(FLAG_LAST)) {
        return;
    }
    let v = p.next_input_scale * xn;
    model_in[i] = v;
    if (has(FLAG_CFG)) {
        model_in[i + p.numel] = v;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_index(wid, lid, nwg);
    if (i >= p.numel) {
        return;
    }
    var m = src[i];
    if (has(FLAG_CFG)) {
        let m_null = src[i + p.numel];
        m = fma(p.guidance, m - m_null, m_null);
    }
    let xv = x[i];
    var x0 = fma(p.x0_from_sample, xv, p.x0_from_model * m);
    if (has(FLAG_CLIP)) {
        x0 = clamp(x0, -p.clip_range, p.clip_range);
    }
    let h = hist[i];
    var xn = fma(p.coef_sample, xv, fma(p.coef_x0, x0, fma(p.coef_model, m, p.coef_history * h)));
    if (has(FLAG_NOISE)) {
        xn = fma(p.noise_std, noise[i], xn);
    }
    if (has(FLAG_HIST_X0)) {
        hist[i] = x0;
    } else if (has(FLAG_HIST_X)) {
        hist[i] = xv;
    }
    x[i] = xn;
    x0_out[i] = x0;
    write_next(i, xn);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn init(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_index(wid, lid, nwg);
    if (i >= p.numel) {
        return;
    }
    var xv = p.noise_std * noise[i];
    if (p.coef_x0 != 0.0) {
        // The init image holds one image (C·H·W elements) shared by all n.
        xv = fma(p.coef_x0, src[i % arrayLength(&src)], xv);
    }
    x[i] = xv;
    hist[i] = 0.0;
    x0_out[i] = xv;
    write_next(i, xv);
}
