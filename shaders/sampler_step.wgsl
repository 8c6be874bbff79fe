// The per-stage update of every sampler (src/schedule/plan.rs, "The generic update"), plus the
// setup of the first model input. One invocation per element of the n sampled images.
//
// Bindings (both entry points): 0 src (read: the model output for `step`, the init image for
// `init`), 1 noise [n, C, H, W] (read), 2 x [n, C, H, W] (read_write: the sample), 3 hist
// [S·n, C, H, W] (read_write: the S = hist_slots history slots H₀ … H_{S−1}, slot k at element
// k·numel), 4 model_in [B, C, H, W] (read_write: the
// network's next input), 5 timesteps [B] (read_write: the network's next timesteps), 6 x0
// [n, C, H, W] (read_write: this stage's x̂₀, for trajectories), 7 params (uniform).
// B = n, or 2n with classifier-free guidance (rows 0..n conditional, n..2n the null label, both
// fed the same sample).
//
// `step`, with m the model output (m = m_null + w·(m_cond − m_null) under guidance):
//   x̂₀ = p_x·x + p_m·m, clamped to ±r when CLIP;
//   x' = a·x + b·x̂₀ + c·m + Σₖ hₖ·Hₖ + d·z (k < hist_slots; d·z only when NOISE);
//   Hₖ' = x̂₀ (HIST_X0) | x before the update (HIST_X) | m (HIST_MODEL) | Hₖ (HIST_KEEP), the
//   code of slot k in bits 4k..4k+3 of hist_write; every slot is read before any is written.
//   model_in = next_input_scale·x' (both halves), timesteps = next_timestep, unless LAST.
// `init`: x = b·src + d·z (b = 0 ignores src), every H slot = 0, x̂₀ = x, then model_in /
// timesteps as above.
//
// Numerics: f32 with fma where the plan's f64 coefficients were rounded once to f32. The history
// sum starts from h₀·H₀ and adds the other slots only when hist_slots > 1, so a one-slot run
// computes exactly what it did before slots 1–5 existed (PNDM is the one multi-slot sampler).
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
    // History slots the run uses (1 ..= 6).
    hist_slots: u32,
    x0_from_sample: f32,
    x0_from_model: f32,
    clip_range: f32,
    guidance: f32,
    coef_sample: f32,
    coef_x0: f32,
    coef_model: f32,
    // h₀.
    coef_history: f32,
    noise_std: f32,
    next_input_scale: f32,
    next_timestep: f32,
    // The HIST_* code of slot k in bits 4k..4k+3.
    hist_write: u32,
    coef_history_1: f32,
    coef_history_2: f32,
    coef_history_3: f32,
    coef_history_4: f32,
    coef_history_5: f32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

const FLAG_CLIP: u32 = 1u;
const FLAG_NOISE: u32 = 2u;
const FLAG_CFG: u32 = 4u;
const FLAG_LAST: u32 = 32u;

const HIST_KEEP: u32 = 0u;
const HIST_X0: u32 = 1u;
const HIST_X: u32 = 2u;
const HIST_MODEL: u32 = 3u;

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
    var history = p.coef_history * hist[i];
    if (p.hist_slots > 1u) {
        history = fma(p.coef_history_1, hist[p.numel + i], history);
        if (p.hist_slots > 2u) {
            history = fma(p.coef_history_2, hist[2u * p.numel + i], history);
        }
        if (p.hist_slots > 3u) {
            history = fma(p.coef_history_3, hist[3u * p.numel + i], history);
        }
        if (p.hist_slots > 4u) {
            history = fma(p.coef_history_4, hist[4u * p.numel + i], history);
        }
        if (p.hist_slots > 5u) {
            history = fma(p.coef_history_5, hist[5u * p.numel + i], history);
        }
    }
    var xn = fma(p.coef_sample, xv, fma(p.coef_x0, x0, fma(p.coef_model, m, history)));
    if (has(FLAG_NOISE)) {
        xn = fma(p.noise_std, noise[i], xn);
    }
    for (var k = 0u; k < p.hist_slots; k++) {
        let code = (p.hist_write >> (4u * k)) & 15u;
        if (code == HIST_X0) {
            hist[k * p.numel + i] = x0;
        } else if (code == HIST_X) {
            hist[k * p.numel + i] = xv;
        } else if (code == HIST_MODEL) {
            hist[k * p.numel + i] = m;
        }
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
    for (var k = 0u; k < p.hist_slots; k++) {
        hist[k * p.numel + i] = 0.0;
    }
    x0_out[i] = xv;
    write_next(i, xv);
}
