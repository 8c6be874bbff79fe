// 2-D convolution as an implicit GEMM, with a fused epilogue.
//
// PyTorch: out = (F.conv2d(F.pad(x, (left, right, top, bottom)), w, bias, stride)
//                 + batch_bias[:, :, None, None] + residual) * output_scale
// where x is the input, or with UPSAMPLE = 1 its nearest ×2 upsampling
// F.interpolate(input, scale_factor=2, mode="nearest") (diffusers' Upsample2D), read through the
// gather and never materialised
// (symmetric padding is the usual `padding=p`; diffusers' Downsample2D with padding 0 pads only
// right and bottom). batch_bias is the ResNet block's per-(sample, channel) time-embedding
// projection; residual is its shortcut, output_scale 1 / output_scale_factor.
//
// GEMM view: M = Cout, N = batch·Ho·Wo (output pixels, image-major), K = Cin·kh·kw in the weight's
// own order (ci, ky, kx), so A[m, k] = weight[m·K + k] and B[k, n] is the im2col matrix, which is
// never materialised: B slices are gathered from the input into shared memory on the fly, zero
// where the kernel window hangs over the padding.
//
// Bindings: 0 input [N, Cin, H, W], 1 residual [N, Cout, Ho, Wo], 2 batch_bias [N, Cout] (rows
// bb_stride apart, from element bb_offset) (inputs),
// 3 weight [Cout, Cin, kh, kw], 4 weight4 (the same buffer seen as vec4s), 5 bias [Cout],
// 6 ktab (the im2col column table, below) (weights), 7 out [N, Cout, Ho, Wo] (read_write),
// 8 params (uniform). Absent optional operands are bound to a dummy that the flags keep unread.
//
// ktab[k] = (ci·H·W + ky·W + kx, ky, kx, k < K) for every k of the padded K range: the per-k part
// of the gather address and the window offsets for the padding test, built once on the CPU so the
// kernel does no integer division in its K loop. Each pixel contributes
// base = img·Cin·H·W + iy0·W + ix0 with iy0 = oy·stride − top, ix0 = ox·stride − left (wrapping
// u32: a window row above the image wraps to a huge value and fails `iy < H`).
// UPSAMPLE = 1: H and W are the upsampled size (2·src_h, 2·src_w) the window and padding test
// run over; ktab[k].x is ci·src_h·src_w and the element read is
// img·Cin·src_h·src_w + ktab.x + (iy >> 1)·src_w + (ix >> 1).
//
// Work split: one workgroup per (BM × BN) output tile, BM = 8·WG_M, BN = 8·WG_N; the linear
// workgroup id wid.x + wid.y·num_workgroups.x (a 2-D grid past 65 535 tiles) is
// Cout tile · n_tiles + pixel tile, so consecutive workgroups share a weight tile. Each
// invocation owns an 8 × 8 micro-tile in 16 vec4 registers: rows {4·ty ..} and {4·(ty + WG_M) ..},
// pixels {4·tx ..} and {4·(tx + WG_N) ..}. Per BK-deep K slice all invocations fill the shared A
// slice ([BK][BM], from the weights; read as 4 × 4 vec4 blocks and transposed in registers when
// K % 4 == 0) and B slice ([BK][BN], the gather), then each does BK × 64 FMAs from 4 vec4 shared
// loads per k (on llvmpipe, which scalarises every shared/storage access per SIMD lane, the number
// of such lane iterations per FMA is what sets the speed). Every invocation gathers the same
// 4-pixel group of B in every slice (WG_M must be even), so its pixel decomposition is computed
// once, before the K loop.
//
// Numerics: f32 products accumulated in f32 with fma in k order; the epilogue adds bias, batch
// bias and residual to the sum and then multiplies by output_scale.
//
// Launcher: src/ops/conv2d.rs (the registry line is in src/gpu/kernel.rs).

struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    // Cin · kh · kw.
    k: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    // batch · Ho · Wo.
    npix: u32,
    // bit 0: bias present; bit 1: batch_bias present; bit 2: residual present.
    flags: u32,
    output_scale: f32,
    // Pixel tiles per Cout tile, and all tiles (the grid may be 2-D and overshoot).
    n_tiles: u32,
    tiles: u32,
    // batch_bias[n, co] is element n·bb_stride + bb_offset + co (dense [N, Cout]: Cout, 0; one
    // resnet's columns of the model's fused time projections otherwise).
    bb_stride: u32,
    bb_offset: u32,
    // UPSAMPLE = 1: the stored input's width (W / 2); unused otherwise.
    src_w: u32,
    _pad1: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_BATCH_BIAS: u32 = 2u;
const FLAG_RESIDUAL: u32 = 4u;

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> residual: array<f32>;
@group(0) @binding(2) var<storage, read> batch_bias: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> weight4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> ktab: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

// Invocations along Cout and along pixels; each covers 8 of each. WG_M must be even.
override WG_M: u32 = 8u;
override WG_N: u32 = 8u;
// Depth of one K slice held in shared memory (a multiple of 4; ktab is padded to a multiple of it).
override BK: u32 = 16u;
// 1: K is a multiple of 4, so weight rows are read as vec4s (weight4, the same buffer) in 4 × 4
// blocks and transposed into the k-major A slice; 0: element by element.
override W_VEC4: u32 = 0u;
// 1: the input is read as its nearest ×2 upsampling (H, W above are the upsampled size).
override UPSAMPLE: u32 = 0u;

// [BK][BM / 4] and [BK][BN / 4] vec4 slices.
var<workgroup> a_s: array<vec4<f32>, BK * WG_M * 2u>;
var<workgroup> b_s: array<vec4<f32>, BK * WG_N * 2u>;

// Weight A[m, k], zero outside Cout × K (index 0 is read instead, then discarded).
fn load_w(m: u32, k: u32) -> f32 {
    let ok = m < p.cout && k < p.k;
    return select(0.0, weight[select(0u, m * p.k + k, ok)], ok);
}

// Fills a_s with weight rows m0 .. m0 + BM, columns k0 .. k0 + BK (k-major), zero outside.
fn fill_a(li: u32, m0: u32, k0: u32) {
    let bm4 = WG_M * 2u;
    let threads = WG_M * WG_N;
    if (W_VEC4 == 1u) {
        for (var s = li; s < BK * bm4 / 4u; s += threads) {
            let kb = (s / bm4) * 4u;
            let m = m0 + (s % bm4) * 4u;
            let k = k0 + kb;
            let r0 = load_w4(m, k);
            let r1 = load_w4(m + 1u, k);
            let r2 = load_w4(m + 2u, k);
            let r3 = load_w4(m + 3u, k);
            let dst = kb * bm4 + s % bm4;
            a_s[dst] = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
            a_s[dst + bm4] = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
            a_s[dst + 2u * bm4] = vec4<f32>(r0.z, r1.z, r2.z, r3.z);
            a_s[dst + 3u * bm4] = vec4<f32>(r0.w, r1.w, r2.w, r3.w);
        }
    } else {
        for (var s = li; s < BK * bm4; s += threads) {
            let k = k0 + s / bm4;
            let m = m0 + (s % bm4) * 4u;
            a_s[s] = vec4<f32>(load_w(m, k), load_w(m + 1u, k), load_w(m + 2u, k), load_w(m + 3u, k));
        }
    }
}

// Weights A[m, k .. k + 4] (k a multiple of 4, K too), zero outside Cout × K.
fn load_w4(m: u32, k: u32) -> vec4<f32> {
    let ok = m < p.cout && k < p.k;
    return select(vec4<f32>(0.0), weight4[select(0u, (m * p.k + k) / 4u, ok)], ok);
}

// Applies the epilogue to output channel `co` of four pixels (image `img`, pixel `pix` within the
// image, `valid` false past batch·Ho·Wo) and stores them.
fn store4(co: u32, img: vec4<u32>, pix: vec4<u32>, valid: vec4<bool>, acc: vec4<f32>) {
    if (co >= p.cout) {
        return;
    }
    let hw = p.ho * p.wo;
    var shift = 0.0;
    if ((p.flags & FLAG_BIAS) != 0u) {
        shift = bias[co];
    }
    for (var j = 0u; j < 4u; j++) {
        if (valid[j]) {
            let idx = (img[j] * p.cout + co) * hw + pix[j];
            var v = acc[j] + shift;
            if ((p.flags & FLAG_BATCH_BIAS) != 0u) {
                v += batch_bias[img[j] * p.bb_stride + p.bb_offset + co];
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
    if (tile >= p.tiles) {
        return;
    }
    let bm4 = WG_M * 2u; // vec4s per k row of the A slice
    let bn4 = WG_N * 2u;
    let threads = WG_M * WG_N;
    let m0 = (tile / p.n_tiles) * WG_M * 8u;
    let n0 = (tile % p.n_tiles) * WG_N * 8u;
    let tx = lid.x;
    let ty = lid.y;
    let hw_out = p.ho * p.wo;
    let plane = p.h * p.w;

    // The 4 pixels this invocation gathers in every B slice (threads is a multiple of bn4, so
    // li % bn4 is the same for all of its slots).
    let gather_n = n0 + (li % bn4) * 4u + vec4<u32>(0u, 1u, 2u, 3u);
    let g_img = gather_n / vec4<u32>(hw_out);
    let g_pix = gather_n - g_img * vec4<u32>(hw_out);
    let g_oy = g_pix / vec4<u32>(p.wo);
    let g_ox = g_pix - g_oy * vec4<u32>(p.wo);
    // Pixels past the end get a window row that never passes the `iy < H` test.
    let g_iy0 = select(
        vec4<u32>(0x80000000u),
        g_oy * vec4<u32>(p.stride) - vec4<u32>(p.pad_top),
        gather_n < vec4<u32>(p.npix),
    );
    let g_ix0 = g_ox * vec4<u32>(p.stride) - vec4<u32>(p.pad_left);
    var g_base = g_img * vec4<u32>(p.cin * plane) + g_iy0 * vec4<u32>(p.w) + g_ix0;
    if (UPSAMPLE == 1u) {
        g_base = g_img * vec4<u32>(p.cin * (plane / 4u));
    }

    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        fill_a(li, m0, k0);
        for (var s = li; s < BK * bn4; s += threads) {
            let kt = ktab[k0 + s / bn4];
            let ok = (g_iy0 + vec4<u32>(kt.y) < vec4<u32>(p.h))
                & (g_ix0 + vec4<u32>(kt.z) < vec4<u32>(p.w))
                & vec4<bool>(kt.w != 0u);
            var at = g_base + vec4<u32>(kt.x);
            if (UPSAMPLE == 1u) {
                let iy = g_iy0 + vec4<u32>(kt.y);
                let ix = g_ix0 + vec4<u32>(kt.z);
                at += (iy >> vec4<u32>(1u)) * vec4<u32>(p.src_w) + (ix >> vec4<u32>(1u));
            }
            let idx = select(vec4<u32>(0u), at, ok);
            let v = vec4<f32>(input[idx.x], input[idx.y], input[idx.z], input[idx.w]);
            b_s[s] = select(vec4<f32>(0.0), v, ok);
        }
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

    // The epilogue's pixel decomposition for the two 4-pixel column groups.
    let na = n0 + tx * 4u + vec4<u32>(0u, 1u, 2u, 3u);
    let nb = n0 + (tx + WG_N) * 4u + vec4<u32>(0u, 1u, 2u, 3u);
    let img_a = na / vec4<u32>(hw_out);
    let img_b = nb / vec4<u32>(hw_out);
    let pix_a = na - img_a * vec4<u32>(hw_out);
    let pix_b = nb - img_b * vec4<u32>(hw_out);
    let ok_a = na < vec4<u32>(p.npix);
    let ok_b = nb < vec4<u32>(p.npix);
    let ma = m0 + ty * 4u;
    let mb = m0 + (ty + WG_M) * 4u;
    store4(ma, img_a, pix_a, ok_a, c00); store4(ma, img_b, pix_b, ok_b, c01);
    store4(ma + 1u, img_a, pix_a, ok_a, c10); store4(ma + 1u, img_b, pix_b, ok_b, c11);
    store4(ma + 2u, img_a, pix_a, ok_a, c20); store4(ma + 2u, img_b, pix_b, ok_b, c21);
    store4(ma + 3u, img_a, pix_a, ok_a, c30); store4(ma + 3u, img_b, pix_b, ok_b, c31);
    store4(mb, img_a, pix_a, ok_a, c40); store4(mb, img_b, pix_b, ok_b, c41);
    store4(mb + 1u, img_a, pix_a, ok_a, c50); store4(mb + 1u, img_b, pix_b, ok_b, c51);
    store4(mb + 2u, img_a, pix_a, ok_a, c60); store4(mb + 2u, img_b, pix_b, ok_b, c61);
    store4(mb + 3u, img_a, pix_a, ok_a, c70); store4(mb + 3u, img_b, pix_b, ok_b, c71);
}
