// Strided batched matrix multiply with a fused epilogue.
//
// PyTorch: out = (alpha * torch.matmul(A, B) + bias + residual) * output_scale, where A, B, out and
// residual are arbitrary strided views (element strides per batch, row and column), so the same
// kernel serves linear layers (B = Wᵀ via strides), 1×1 projections on NCHW activations, attention
// scores Q·Kᵀ and P·V without any transposing copies.
//
//   C[b, m, n] = (alpha · Σ_k A[b, m, k] · B[b, k, n] + bias[bias_off + (m or n)] + residual[b, m, n]) · output_scale
//   A[b, m, k] at a_off + b·a_sb + m·a_sm + k·a_sk;  B[b, k, n] at b_off + b·b_sb + k·b_sk + n·b_sn;
//   C and residual [b, m, n] at c_off + b·c_sb + m·c_sm + n·c_sn
// (with the batch index split in two, (b / inner)·*_so + (b % inner)·*_sb: see Params).
// The element offsets let one launch work on a window of larger tensors (a chunk of attention's
// query rows and heads) without binding sub-ranges, whose offsets would need 256-byte alignment.
//
// Bindings: 0 a, 1 a4 (the same buffer seen as vec4s), 2 b, 3 b4 (likewise), 4 residual, 5 bias
// (inputs and weights; absent ones are bound to a dummy that the flags keep unread),
// 6 out (read_write), 7 params (uniform).
//
// Work split: one workgroup per (BM × BN) output tile of one batch entry, BM = 8·WG_M,
// BN = 8·WG_N; workgroup_id.z is the batch entry and wid.x + wid.y·num_workgroups.x (a 2-D grid
// past 65 535 tiles) is m tile · n_tiles + n tile. Each invocation owns an 8 × 8 micro-tile in 16
// vec4 registers: rows {4·ty .. 4·ty + 3} and {4·(ty + WG_M) ..}, columns likewise with tx and
// WG_N, so its shared-memory reads are whole vec4s and neighbouring invocations read neighbouring
// vec4s (no bank conflicts on GPUs; on llvmpipe, which scalarises every shared/storage access
// per SIMD lane, one lane iteration moves 4 floats). K is walked in BK-deep slices: all
// invocations stage the A slice ([BK][BM], k-major) and the B slice ([BK][BN]) in shared memory,
// zero past M, N and K so the product loop has no bounds checks, then each does BK × 64 FMAs from
// 4 vec4 shared loads per k. The staging reads vec4s from global memory where the layout allows
// (A_MODE / B_MODE): 4 × 4 blocks transposed in registers when the operand is contiguous along
// k, direct vec4s when it is contiguous along m / n.
//
// Numerics: f32 products accumulated in f32 with fma, in k order; alpha scales the accumulated
// sum, then bias and residual are added, then the sum is multiplied by output_scale.
//
// Launcher: src/ops/matmul.rs (the registry line is in src/gpu/kernel.rs).

struct Params {
    batch: u32,
    m: u32,
    n: u32,
    k: u32,
    a_sb: u32,
    a_sm: u32,
    a_sk: u32,
    b_sb: u32,
    b_sk: u32,
    b_sn: u32,
    c_sb: u32,
    c_sm: u32,
    c_sn: u32,
    // bit 0: bias present; bit 1: bias indexed along n (else along m); bit 2: residual present.
    flags: u32,
    alpha: f32,
    output_scale: f32,
    // n tiles per m tile, and all tiles of one batch entry (the grid may be 2-D and overshoot).
    n_tiles: u32,
    tiles: u32,
    // Element offsets of A, B and C / residual (0 for whole tensors).
    a_off: u32,
    b_off: u32,
    c_off: u32,
    // Batch entries per group, and each operand's stride between groups: entry z reads A at
    // a_off + (z / inner)·a_so + (z % inner)·a_sb (likewise B, C), so a (sample, head) pair of
    // attention is one entry whatever the two strides (inner = batch, *_so = 0: plain batch).
    inner: u32,
    a_so: u32,
    b_so: u32,
    c_so: u32,
    // Element offset of the bias (a window of a fused layer's bias).
    bias_off: u32,
    _pad1: u32,
    _pad2: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_BIAS_N: u32 = 2u;
const FLAG_RESIDUAL: u32 = 4u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

// Invocations along m and n; each covers 8 rows and 8 columns.
override WG_M: u32 = 8u;
override WG_N: u32 = 8u;
// Depth of one K slice held in shared memory (a multiple of 4).
override BK: u32 = 16u;
// How the A and B slices are read from global memory: 0 element by element (any strides);
// 1 as vec4s along k (a_sk = 1 / b_sk = 1); 2 as vec4s along m (a_sm = 1) / n (b_sn = 1). The
// vec4 modes need K (mode 1) or M / N (mode 2), the other strides and the offset to be multiples
// of 4; the host checks that before choosing them.
override A_MODE: u32 = 0u;
override B_MODE: u32 = 0u;

// [BK][BM / 4] and [BK][BN / 4] vec4 slices.
var<workgroup> a_s: array<vec4<f32>, BK * WG_M * 2u>;
var<workgroup> b_s: array<vec4<f32>, BK * WG_N * 2u>;

// Guarded loads: an out-of-range element reads index 0 (always valid) and is replaced by 0, so
// the zero fill needs no branch (llvmpipe executes both sides of a divergent branch anyway).
fn load_a(abase: u32, m: u32, k: u32) -> f32 {
    let ok = m < p.m && k < p.k;
    let v = a[select(0u, abase + m * p.a_sm + k * p.a_sk, ok)];
    return select(0.0, v, ok);
}

// Four consecutive elements starting at element `index` (a multiple of 4), or zeros.
fn load_a4(ok: bool, index: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), a4[select(0u, index / 4u, ok)], ok);
}

fn load_b4(ok: bool, index: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), b4[select(0u, index / 4u, ok)], ok);
}

fn load_b(bbase: u32, k: u32, n: u32) -> f32 {
    let ok = k < p.k && n < p.n;
    let v = b[select(0u, bbase + k * p.b_sk + n * p.b_sn, ok)];
    return select(0.0, v, ok);
}

// Fills a_s with A[batch, m0 .. m0 + BM, k0 .. k0 + BK] (k-major), zero outside M × K.
fn fill_a(li: u32, abase: u32, m0: u32, k0: u32) {
    let bm4 = WG_M * 2u;
    let threads = WG_M * WG_N;
    if (A_MODE == 1u) {
        // 4 × 4 blocks: four vec4 rows along k, transposed into four k rows of a_s.
        for (var s = li; s < BK * bm4 / 4u; s += threads) {
            let kb = (s / bm4) * 4u;
            let m = m0 + (s % bm4) * 4u;
            let k = k0 + kb;
            let base = abase + m * p.a_sm + k;
            let r0 = load_a4(m < p.m && k < p.k, base);
            let r1 = load_a4(m + 1u < p.m && k < p.k, base + p.a_sm);
            let r2 = load_a4(m + 2u < p.m && k < p.k, base + 2u * p.a_sm);
            let r3 = load_a4(m + 3u < p.m && k < p.k, base + 3u * p.a_sm);
            let dst = kb * bm4 + s % bm4;
            a_s[dst] = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
            a_s[dst + bm4] = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
            a_s[dst + 2u * bm4] = vec4<f32>(r0.z, r1.z, r2.z, r3.z);
            a_s[dst + 3u * bm4] = vec4<f32>(r0.w, r1.w, r2.w, r3.w);
        }
    } else if (A_MODE == 2u) {
        for (var s = li; s < BK * bm4; s += threads) {
            let m = m0 + (s % bm4) * 4u;
            let k = k0 + s / bm4;
            a_s[s] = load_a4(m < p.m && k < p.k, abase + k * p.a_sk + m);
        }
    } else {
        for (var s = li; s < BK * bm4; s += threads) {
            let m = m0 + (s % bm4) * 4u;
            let k = k0 + s / bm4;
            a_s[s] = vec4<f32>(
                load_a(abase, m, k),
                load_a(abase, m + 1u, k),
                load_a(abase, m + 2u, k),
                load_a(abase, m + 3u, k),
            );
        }
    }
}

// Fills b_s with B[batch, k0 .. k0 + BK, n0 .. n0 + BN] (k-major), zero outside K × N.
fn fill_b(li: u32, bbase: u32, n0: u32, k0: u32) {
    let bn4 = WG_N * 2u;
    let threads = WG_M * WG_N;
    if (B_MODE == 1u) {
        for (var s = li; s < BK * bn4 / 4u; s += threads) {
            let kb = (s / bn4) * 4u;
            let n = n0 + (s % bn4) * 4u;
            let k = k0 + kb;
            let base = bbase + n * p.b_sn + k;
            let c0 = load_b4(n < p.n && k < p.k, base);
            let c1 = load_b4(n + 1u < p.n && k < p.k, base + p.b_sn);
            let c2 = load_b4(n + 2u < p.n && k < p.k, base + 2u * p.b_sn);
            let c3 = load_b4(n + 3u < p.n && k < p.k, base + 3u * p.b_sn);
            let dst = kb * bn4 + s % bn4;
            b_s[dst] = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
            b_s[dst + bn4] = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
            b_s[dst + 2u * bn4] = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
            b_s[dst + 3u * bn4] = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
        }
    } else if (B_MODE == 2u) {
        for (var s = li; s < BK * bn4; s += threads) {
            let n = n0 + (s % bn4) * 4u;
            let k = k0 + s / bn4;
            b_s[s] = load_b4(n < p.n && k < p.k, bbase + k * p.b_sk + n);
        }
    } else {
        for (var s = li; s < BK * bn4; s += threads) {
            let n = n0 + (s % bn4) * 4u;
            let k = k0 + s / bn4;
            b_s[s] = vec4<f32>(
                load_b(bbase, k, n),
                load_b(bbase, k, n + 1u),
                load_b(bbase, k, n + 2u),
                load_b(bbase, k, n + 3u),
            );
        }
    }
}

// Applies the epilogue to four consecutive columns n0..n0+3 of row m and stores them.
fn store4(cbase: u32, m: u32, n0: u32, acc: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + j;
        if (n < p.n) {
            let idx = cbase + m * p.c_sm + n * p.c_sn;
            var v = p.alpha * acc[j];
            if ((p.flags & FLAG_BIAS) != 0u) {
                v += bias[p.bias_off + select(m, n, (p.flags & FLAG_BIAS_N) != 0u)];
            }
            if ((p.flags & FLAG_RESIDUAL) != 0u) {
                v += residual[idx];
            }
            out[idx] = v * p.output_scale;
        }
    }
}

@compute @workgroup_size(WG_N, WG_M, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = wid.x + wid.y * nwg.x;
    let batch = wid.z;
    if (tile >= p.tiles || batch >= p.batch) {
        return;
    }
    let gi = batch / p.inner;
    let ei = batch % p.inner;
    let abase = p.a_off + gi * p.a_so + ei * p.a_sb;
    let bbase = p.b_off + gi * p.b_so + ei * p.b_sb;
    let cbase = p.c_off + gi * p.c_so + ei * p.c_sb;
    let bm4 = WG_M * 2u; // vec4s per k row of the A slice
    let bn4 = WG_N * 2u;
    let m0 = (tile / p.n_tiles) * WG_M * 8u;
    let n0 = (tile % p.n_tiles) * WG_N * 8u;
    let tx = lid.x;
    let ty = lid.y;

    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        fill_a(li, abase, m0, k0);
        fill_b(li, bbase, n0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = a_s[kk * bm4 + ty];
            let a1 = a_s[kk * bm4 + ty + WG_M];
            let b0 = b_s[kk * bn4 + tx];
            let b1 = b_s[kk * bn4 + tx + WG_N];
            c00 = fma(vec4<f32>(a0.x), b0, c00); c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10); c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20); c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30); c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40); c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50); c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60); c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70); c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }

    let ma = m0 + ty * 4u;
    let mb = m0 + (ty + WG_M) * 4u;
    let na = n0 + tx * 4u;
    let nb = n0 + (tx + WG_N) * 4u;
    store4(cbase, ma, na, c00); store4(cbase, ma, nb, c01);
    store4(cbase, ma + 1u, na, c10); store4(cbase, ma + 1u, nb, c11);
    store4(cbase, ma + 2u, na, c20); store4(cbase, ma + 2u, nb, c21);
    store4(cbase, ma + 3u, na, c30); store4(cbase, ma + 3u, nb, c31);
    store4(cbase, mb, na, c40); store4(cbase, mb, nb, c41);
    store4(cbase, mb + 1u, na, c50); store4(cbase, mb + 1u, nb, c51);
    store4(cbase, mb + 2u, na, c60); store4(cbase, mb + 2u, nb, c61);
    store4(cbase, mb + 3u, na, c70); store4(cbase, mb + 3u, nb, c71);
}
