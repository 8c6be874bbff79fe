// Counter-based standard-normal noise: Philox 4x32-10 (Salmon et al. 2011, "Parallel random
// numbers: as easy as 1, 2, 3"; the generator of Random123, cuRAND and JAX) followed by the
// Box–Muller transform.
// PyTorch equivalent in distribution: torch.randn(shape) (not bit-compatible with torch's
// generator; reproducible against src/reference/rng.rs instead).
//
// Element e of image i at sampler step s on stream t, for a 64-bit seed:
//   key     = (seed_lo, seed_hi)
//   counter = (e / 4, i, s, t)
//   (x0, x1, x2, x3) = philox4x32_10(counter, key)
//   (z0, z1) = box_muller(x0, x1), (z2, z3) = box_muller(x2, x3)
//   noise[e] = z_{e mod 4}
// so a value depends only on (seed, i, s, t, e): never on the batch size or on where the image
// sits in a batch (`first_image` is the global index of the output's image 0).
//
// Entry points (each declares its own globals and uses all of them, because pipelines use wgpu's
// automatic layout):
//   normal:         0 out [N, numel] f32, 1 params. One invocation per group of four consecutive
//                   elements of one image (one Philox call); the last group of an image whose
//                   numel is not a multiple of 4 writes only the elements that exist.
//   philox_u32:     0 input [n, 6] u32 (counter 0..3, key 0..1), 1 out [n, 4] u32, 2 params.
//                   One invocation per Philox call (known-answer tests).
//   box_muller_u32: 0 input [n, 2] u32 (the two Philox words of one pair), 1 out [n, 2] f32,
//                   2 params. One invocation per pair (exhaustive accuracy tests).
// The grid may be 2-D: the linear index is (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid, and
// invocations past the end return.
//
// Numerics. Philox is pure u32 arithmetic (the 32×32→64 multiply is built from 16-bit halves)
// and bit-exact on every adapter. Box–Muller of two words (a, b):
//   u1 = ((a >> 8) + 1) · 2^-24 ∈ (0, 1]   (never 0, so ln u1 is finite; u1 = 1 gives z = 0)
//   u2 =  (b >> 8)      · 2^-24 ∈ [0, 1)
//   r = √(−2 ln u1) ≤ √(48 ln 2) ≈ 5.77,  z0 = r · cos(2π u2),  z1 = r · sin(2π u2).
// WGSL's log / sin / cos / sqrt are too loose on Vulkan (sin/cos ~2^-11 absolute, log ~3 ulp,
// sqrt ~3 ulp), so none of them decides a result:
//   * ln: exponent/mantissa split by bitcast (u1 = 2^e · f, f ∈ [√½, √2)), then the Cephes logf
//     minimax polynomial in f − 1 (exact by Sterbenz) and ln 2 split into 0.693359375 (exact
//     times e) − 2.12194440e-4. Within ~1 ulp of ln u1.
//   * sqrt: the built-in, then one Newton step whose residual x − y² is formed exactly (y split
//     into 12-bit halves by masking its bits, so every partial product is exact and FMA
//     contraction cannot change it): within ~1 ulp.
//   * sincos of 2π u2: turns-based range reduction is exact — the nearest quadrant q comes from
//     the top bits of the 24-bit integer k = b >> 8, the remainder k − q·2^22 ∈ [−2^21, 2^21) is
//     an exact integer, and θ = remainder · (2π / 2^24) ∈ [−π/4, π/4) is one rounded product.
//     Cephes sinf / cosf minimax polynomials on [−π/4, π/4] (~1 ulp), rotated by q.
// Measured on lavapipe against the same transform in f64 (tests/rng.rs, exhaustively over all
// 2^24 values of each word): the radius over every u1 is within 3.6e-7, the rotation over every
// u2 at the largest radius within 9.2e-7, random pairs within 5.6e-7 — so |z_gpu − z_f64| < 1e-6
// for every output (|z| < 5.8; half an f32 ulp there is already 2.4e-7), against a 2e-6 budget.
// Other adapters differ only by rounding (FMA contraction), which cannot break the exact steps.
//
// Launcher: src/ops/rng.rs (the registry line is in src/gpu/kernel.rs).
// In sampling loops `normal` runs with an explicit bind-group layout: its params are read at a
// dynamic offset into one uniform buffer holding every draw's block.

// Invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
}

// ---- Philox 4x32-10 ----------------------------------------------------------------------------

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// (high, low) 32-bit halves of the 64-bit product a · b, from 16-bit partial products.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let p0 = a_lo * b_lo;
    let p1 = a_lo * b_hi;
    let p2 = a_hi * b_lo;
    let p3 = a_hi * b_hi;
    // At most 3 · 0xFFFF: no overflow.
    let mid = (p0 >> 16u) + (p1 & 0xFFFFu) + (p2 & 0xFFFFu);
    let hi = p3 + (p1 >> 16u) + (p2 >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox_round(c: vec4<u32>, k: vec2<u32>) -> vec4<u32> {
    let r0 = mulhilo(PHILOX_M0, c.x);
    let r1 = mulhilo(PHILOX_M1, c.z);
    return vec4<u32>(r1.x ^ c.y ^ k.x, r1.y, r0.x ^ c.w ^ k.y, r0.y);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        c = philox_round(c, k);
        k += vec2<u32>(PHILOX_W0, PHILOX_W1);
    }
    return c;
}

// ---- accurate elementary functions --------------------------------------------------------------

// ln x for a positive normal x (Cephes logf after a bitcast frexp).
fn ln_accurate(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    var e = f32(i32(bits >> 23u) - 127);
    var f = bitcast<f32>((bits & 0x007FFFFFu) | 0x3F800000u);
    if (f > 1.41421356) {
        f *= 0.5;
        e += 1.0;
    }
    let t = f - 1.0;
    let z = t * t;
    var poly = 7.0376836292e-2;
    poly = poly * t - 1.1514610310e-1;
    poly = poly * t + 1.1676998740e-1;
    poly = poly * t - 1.2420140846e-1;
    poly = poly * t + 1.4249322787e-1;
    poly = poly * t - 1.6668057665e-1;
    poly = poly * t + 2.0000714765e-1;
    poly = poly * t - 2.4999993993e-1;
    poly = poly * t + 3.3333331174e-1;
    var y = t * z * poly;
    y += e * -2.12194440e-4;
    y -= 0.5 * z;
    return (t + y) + e * 0.693359375;
}

// √x for x ≥ 0: the built-in refined by one Newton step with an exact residual.
fn sqrt_accurate(x: f32) -> f32 {
    let y = sqrt(x);
    if (!(y > 0.0)) {
        return y;
    }
    let y_hi = bitcast<f32>(bitcast<u32>(y) & 0xFFFFF000u);
    let y_lo = y - y_hi;
    let residual = ((x - y_hi * y_hi) - 2.0 * y_hi * y_lo) - y_lo * y_lo;
    return y + residual / (2.0 * y);
}

// sin(r) for |r| ≤ π/4 (Cephes sinf).
fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    let poly = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z;
    return r + r * poly;
}

// cos(r) for |r| ≤ π/4 (Cephes cosf).
fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    let poly = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z;
    return 1.0 - 0.5 * z + z * poly;
}

// 2π / 2^24: radians per unit of the 24-bit turn fraction.
const RADIANS_PER_TICK: f32 = 3.7450702829239286e-7;

// (cos, sin) of 2π · k / 2^24 for a 24-bit k, with exact range reduction.
fn sincos_turns(k: u32) -> vec2<f32> {
    // Nearest quarter turn (0..4; 4 is a full turn, i.e. quadrant 0).
    let nearest = (k + 0x200000u) >> 22u;
    let remainder = i32(k) - i32(nearest << 22u);
    let theta = f32(remainder) * RADIANS_PER_TICK;
    let c = cos_poly(theta);
    let s = sin_poly(theta);
    switch (nearest & 3u) {
        case 0u: {
            return vec2<f32>(c, s);
        }
        case 1u: {
            return vec2<f32>(-s, c);
        }
        case 2u: {
            return vec2<f32>(-c, -s);
        }
        default: {
            return vec2<f32>(s, -c);
        }
    }
}

// Two standard normals from two Philox words.
fn box_muller(a: u32, b: u32) -> vec2<f32> {
    // Exact: an integer in [1, 2^24] times a power of two.
    let u1 = f32((a >> 8u) + 1u) * 5.9604644775390625e-8;
    let r = sqrt_accurate(-2.0 * ln_accurate(u1));
    return r * sincos_turns(b >> 8u);
}

// ---- normal -------------------------------------------------------------------------------------

struct NormalParams {
    // Low and high 32 bits of the seed: the Philox key.
    seed_lo: u32,
    seed_hi: u32,
    // Global index of the output's image 0.
    first_image: u32,
    // Counter word 2 (sampler step).
    step: u32,
    // Counter word 3 (independent stream: initial latents, per-step noise, ...).
    stream: u32,
    // N: images in the output.
    images: u32,
    // Elements per image.
    numel: u32,
    // ceil(numel / 4): Philox calls per image.
    quads: u32,
}

@group(0) @binding(0) var<storage, read_write> normal_out: array<f32>;
@group(0) @binding(1) var<uniform> normal_p: NormalParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn normal(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = linear_index(wid, nwg, lid);
    if (q >= normal_p.images * normal_p.quads) {
        return;
    }
    let image = q / normal_p.quads;
    let quad = q % normal_p.quads;
    let x = philox4x32_10(
        vec4<u32>(quad, normal_p.first_image + image, normal_p.step, normal_p.stream),
        vec2<u32>(normal_p.seed_lo, normal_p.seed_hi),
    );
    let z01 = box_muller(x.x, x.y);
    let z23 = box_muller(x.z, x.w);
    var z = array<f32, 4>(z01.x, z01.y, z23.x, z23.y);
    let first = quad * 4u;
    let count = min(4u, normal_p.numel - first);
    let base = image * normal_p.numel + first;
    for (var j = 0u; j < count; j++) {
        normal_out[base + j] = z[j];
    }
}

// ---- philox_u32 ---------------------------------------------------------------------------------

struct CountParams {
    // Number of calls (philox_u32) or pairs (box_muller_u32).
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> philox_in: array<u32>;
@group(0) @binding(1) var<storage, read_write> philox_out: array<u32>;
@group(0) @binding(2) var<uniform> philox_p: CountParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn philox_u32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= philox_p.count) {
        return;
    }
    let src = i * 6u;
    let x = philox4x32_10(
        vec4<u32>(philox_in[src], philox_in[src + 1u], philox_in[src + 2u], philox_in[src + 3u]),
        vec2<u32>(philox_in[src + 4u], philox_in[src + 5u]),
    );
    let dst = i * 4u;
    philox_out[dst] = x.x;
    philox_out[dst + 1u] = x.y;
    philox_out[dst + 2u] = x.z;
    philox_out[dst + 3u] = x.w;
}

// ---- box_muller_u32 -----------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> pairs_in: array<u32>;
@group(0) @binding(1) var<storage, read_write> pairs_out: array<f32>;
@group(0) @binding(2) var<uniform> pairs_p: CountParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn box_muller_u32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= pairs_p.count) {
        return;
    }
    let z = box_muller(pairs_in[2u * i], pairs_in[2u * i + 1u]);
    pairs_out[2u * i] = z.x;
    pairs_out[2u * i + 1u] = z.y;
}
