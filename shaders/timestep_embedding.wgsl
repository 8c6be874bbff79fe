// Sinusoidal timestep embedding of float timesteps.
// PyTorch (diffusers `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift,
// scale=1, max_period=10000)`): arg[n, k] = t[n] · freq[k] in f32, k < half = dim / 2;
// out[n] = cat([sin(arg), cos(arg)]) ([cos, sin] when flipped), plus one zero column when dim is
// odd.
//
// Bindings: 0 timesteps [N] (f32, may be fractional), 1 freqs [half] (the f32 frequency table,
//           computed on the CPU exactly as torch does; see src/ops/timestep_embedding.rs),
//           2 output [N, dim], 3 params.
//
// One invocation per output element. The grid may be 2-D: the linear element index is
// (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid, and invocations past the end return.
//
// Numerics: torch forms arg as an f32 product and takes an (almost) correctly rounded sin/cos of
// it; args reach ~1000 rad and more. WGSL's sin/cos are only specified to ~2^-11 absolute on
// [−π, π] (worse outside), so they are not used:
//   * arg = t · freq is one f32 multiply, rounded exactly like torch's. Its bits pass through an
//     integer XOR with a uniform that is always 0, so the compiler cannot contract the product
//     into a later subtraction (an FMA there would use the unrounded product: an error of up to
//     half an ulp of arg, ~1e-4 at 4000 rad).
//   * Cody–Waite reduction: q = round(arg · 2/π), r = arg − q·π/2 with π/2 split into four f32
//     parts, the first three of at most 8 significant bits. For |q| < 2^16 (|arg| < ~1e5) the
//     products q·P1..q·P3 are exact, so r is exact up to the last one or two roundings (and FMA
//     contraction of those steps cannot change them); the split's residual is ~5e-17·|q|.
//   * sin and cos of r ∈ [−π/4, π/4] (slightly beyond when q rounds the other way) by the Cephes
//     single-precision minimax polynomials (~1 ulp), picked and negated by q mod 4.
// The result is within ~2e-7 of sin/cos of the f32 arg evaluated in f64.
//
// Launcher: src/ops/timestep_embedding.rs (the registry line is in src/gpu/kernel.rs).

// Invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;

struct Params {
    // Batch size N.
    batch: u32,
    // Embedding width (columns of the output).
    dim: u32,
    // dim / 2: the number of frequencies.
    half_dim: u32,
    // 1 = [cos, sin] (flip_sin_to_cos), 0 = [sin, cos].
    flip: u32,
    // Always 0; XORed into the product's bits to keep it a rounded f32 (see above).
    opaque_zero: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> timesteps: array<f32>;
@group(0) @binding(1) var<storage, read> freqs: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const TWO_OVER_PI: f32 = 0.636619772367581343;
// π/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4 + ~5e-17; the first three have ≤ 8 significant bits.
const PIO2_1: f32 = 1.5703125;                  // 0x1.92p+0
const PIO2_2: f32 = 4.825592041015625e-4;       // 0x1.fap-12
const PIO2_3: f32 = 1.2665987014770508e-6;      // 0x1.54p-20
const PIO2_4: f32 = 9.920936294705029e-10;      // 0x1.10b462p-30

// sin(r) for |r| ≤ ~π/4 (Cephes sinf).
fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    let poly = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z;
    return r + r * poly;
}

// cos(r) for |r| ≤ ~π/4 (Cephes cosf).
fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    let poly = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z;
    return 1.0 - 0.5 * z + z * poly;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
    if (i >= p.batch * p.dim) {
        return;
    }
    let n = i / p.dim;
    let col = i % p.dim;
    if (col >= 2u * p.half_dim) {
        // The zero column of an odd dim.
        output[i] = 0.0;
        return;
    }
    let second_half = col >= p.half_dim;
    let k = select(col, col - p.half_dim, second_half);
    // sin in the first half unless flipped; `want_cos` picks the other one.
    let want_cos = second_half != (p.flip != 0u);

    let product = timesteps[n] * freqs[k];
    let arg = bitcast<f32>(bitcast<u32>(product) ^ p.opaque_zero);

    let q = round(arg * TWO_OVER_PI);
    var r = arg - q * PIO2_1;
    r = r - q * PIO2_2;
    r = r - q * PIO2_3;
    r = r - q * PIO2_4;
    // q mod 4 (two's complement keeps it right for negative q) plus one for cos(x) = sin(x + π/2).
    let quadrant = (u32(i32(q)) + select(0u, 1u, want_cos)) & 3u;
    let s = sin_poly(r);
    let c = cos_poly(r);
    // sin(r + j·π/2) for j = 0..3: s, c, −s, −c.
    let v = select(s, c, (quadrant & 1u) != 0u);
    output[i] = select(v, -v, (quadrant & 2u) != 0u);
}
