//! CPU reference for `shaders/rng.wgsl`: Philox 4x32-10 (Salmon et al. 2011, as in Random123,
//! cuRAND and JAX) in wrapping u32 arithmetic, and the Box–Muller transform evaluated in f64 from
//! the same u32 words, so the GPU's noise can be checked element by element.
//!
//! Element `e` of image `i` at step `s` on stream `t` uses key `(seed_lo, seed_hi)` and counter
//! `(e / 4, i, s, t)`; the four output words give two Box–Muller pairs, i.e. the normals of
//! elements `4·(e/4) .. 4·(e/4) + 3`.

/// Philox multipliers and Weyl key increments (Random123's `PHILOX_M4x32_*`, `PHILOX_W32_*`).
pub const PHILOX_M0: u32 = 0xD251_1F53;
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
pub const PHILOX_W0: u32 = 0x9E37_79B9;
pub const PHILOX_W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let product = u64::from(a) * u64::from(b);
    ((product >> 32) as u32, product as u32)
}

fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
    let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox 4x32 with 10 rounds: the four output words for `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        c = round(c, k);
        k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
    }
    c
}

/// The Philox key of a 64-bit seed: `(seed_lo, seed_hi)`.
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The two uniforms the transform uses: `u1 = ((a >> 8) + 1) · 2^-24 ∈ (0, 1]` and
/// `u2 = (b >> 8) · 2^-24 ∈ [0, 1)`. Both are exact in f32 and f64.
pub fn uniforms(a: u32, b: u32) -> (f64, f64) {
    let scale = 1.0 / f64::from(1u32 << 24);
    (f64::from((a >> 8) + 1) * scale, f64::from(b >> 8) * scale)
}

/// Box–Muller of two Philox words in f64: `r = √(−2 ln u1)`, `(r cos 2πu2, r sin 2πu2)`.
pub fn box_muller(a: u32, b: u32) -> [f64; 2] {
    let (u1, u2) = uniforms(a, b);
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
    [r * c, r * s]
}

/// The four normals of one Philox call: elements `4·quad .. 4·quad + 3` of `image`.
pub fn normal_quad(seed: u64, image: u32, step: u32, stream: u32, quad: u32) -> [f64; 4] {
    let x = philox4x32_10([quad, image, step, stream], key(seed));
    let [z0, z1] = box_muller(x[0], x[1]);
    let [z2, z3] = box_muller(x[2], x[3]);
    [z0, z1, z2, z3]
}

/// Element `element` of image `image` at `step` on `stream`. The quad index `element / 4` is a
/// u32 counter word (it wraps past 2^34 elements, far beyond any binding).
pub fn normal(seed: u64, image: u32, step: u32, stream: u32, element: usize) -> f64 {
    normal_quad(seed, image, step, stream, (element / 4) as u32)[element % 4]
}

/// The first `numel` elements of image `image` at `step` on `stream`.
pub fn normal_image(seed: u64, image: u32, step: u32, stream: u32, numel: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(numel.next_multiple_of(4));
    for quad in 0..numel.div_ceil(4) {
        out.extend(normal_quad(seed, image, step, stream, quad as u32));
    }
    out.truncate(numel);
    out
}
