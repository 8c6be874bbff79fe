//! f64 CPU references for the GEMM-shaped ops: `F.conv2d` with asymmetric padding and the fused
//! bias / per-sample bias / residual / scale epilogue (`shaders/conv2d.wgsl`), and the strided
//! batched matmul with its epilogue (`shaders/matmul.wgsl`). Loops are ordered so the innermost
//! one walks contiguous memory without branches, because tests run them on real layer sizes.

use crate::ops::matmul::BiasAxis;

/// `F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride)` followed by
/// `(· + batch_bias[n, co] + residual) · output_scale`, in f64.
///
/// `in_shape` is `[N, Cin, H, W]`, `w_shape` `[Cout, Cin, kh, kw]`, `pad` is
/// `[top, bottom, left, right]`; `batch_bias` is `[N, Cout]` and `residual` `[N, Cout, Ho, Wo]`.
/// Returns the `[N, Cout, Ho, Wo]` output, or an empty vector when the shapes are inconsistent
/// (channel mismatch, stride 0, padded input smaller than the kernel).
#[derive(Clone, Copy, Debug)]
pub struct Conv2dRef<'a> {
    pub input: &'a [f32],
    pub in_shape: [usize; 4],
    pub weight: &'a [f32],
    pub w_shape: [usize; 4],
    pub bias: Option<&'a [f32]>,
    pub batch_bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub stride: usize,
    pub pad: [usize; 4],
    pub output_scale: f64,
}

/// Computes [`Conv2dRef`].
pub fn conv2d(args: &Conv2dRef) -> Vec<f64> {
    let Conv2dRef {
        input,
        in_shape,
        weight,
        w_shape,
        bias,
        batch_bias,
        residual,
        stride,
        pad,
        output_scale,
    } = *args;
    let [batch, cin, h, w] = in_shape;
    let [cout, wcin, kh, kw] = w_shape;
    let [top, bottom, left, right] = pad;
    let (hp, wp) = (h + top + bottom, w + left + right);
    if cin != wcin || stride == 0 || hp < kh || wp < kw {
        return Vec::new();
    }
    let (ho, wo) = ((hp - kh) / stride + 1, (wp - kw) / stride + 1);
    let mut out = vec![0.0f64; batch * cout * ho * wo];
    let weight: Vec<f64> = weight.iter().map(|&v| f64::from(v)).collect();
    let input: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
    // For each kernel column kx, the output columns whose input column lies inside the image:
    // ix = ox·stride + kx − left ∈ [0, w).
    let ox_range = |kx: usize| -> (usize, usize) {
        let lo = left.saturating_sub(kx).div_ceil(stride);
        let hi = if w + left > kx {
            ((w + left - kx - 1) / stride + 1).min(wo)
        } else {
            0
        };
        (lo, hi.max(lo))
    };
    for n in 0..batch {
        for co in 0..cout {
            let plane = &mut out[(n * cout + co) * ho * wo..][..ho * wo];
            for ci in 0..cin {
                let image = &input[(n * cin + ci) * h * w..][..h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = weight[((co * cin + ci) * kh + ky) * kw + kx];
                        let (ox_lo, ox_hi) = ox_range(kx);
                        for oy in 0..ho {
                            let iy = oy * stride + ky;
                            if iy < top || iy - top >= h {
                                continue;
                            }
                            let row = &image[(iy - top) * w..][..w];
                            let dst = &mut plane[oy * wo..][..wo];
                            for ox in ox_lo..ox_hi {
                                dst[ox] += wv * row[ox * stride + kx - left];
                            }
                        }
                    }
                }
            }
            let shift = bias.map_or(0.0, |b| f64::from(b[co]))
                + batch_bias.map_or(0.0, |b| f64::from(b[n * cout + co]));
            let base = (n * cout + co) * ho * wo;
            for (i, v) in plane.iter_mut().enumerate() {
                let res = residual.map_or(0.0, |r| f64::from(r[base + i]));
                *v = (*v + shift + res) * output_scale;
            }
        }
    }
    out
}

/// The strided batched matmul of [`crate::ops::matmul::Matmul`], in f64:
/// `C[b, m, n] = (alpha · Σ_k A[b, m, k] · B[b, k, n] + bias + residual[b, m, n]) · output_scale`
/// with `A[b, m, k]` at `b·a_strides[0] + m·a_strides[1] + k·a_strides[2]`, `B[b, k, n]` at
/// `b·b_strides[0] + k·b_strides[1] + n·b_strides[2]`, `C` and `residual` at `c_strides`.
/// Returns a vector of `out_len` elements; those no `(b, m, n)` maps to stay 0.
#[derive(Clone, Copy, Debug)]
pub struct MatmulRef<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub bias: Option<(&'a [f32], BiasAxis)>,
    pub residual: Option<&'a [f32]>,
    /// `[batch, m, n, k]`.
    pub dims: [usize; 4],
    pub a_strides: [usize; 3],
    pub b_strides: [usize; 3],
    pub c_strides: [usize; 3],
    pub alpha: f64,
    pub output_scale: f64,
    pub out_len: usize,
}

/// Computes [`MatmulRef`].
pub fn matmul_strided(args: &MatmulRef) -> Vec<f64> {
    let MatmulRef {
        a,
        b,
        bias,
        residual,
        dims: [batch, m, n, k],
        a_strides,
        b_strides,
        c_strides,
        alpha,
        output_scale,
        out_len,
    } = *args;
    let mut out = vec![0.0f64; out_len];
    let mut row = vec![0.0f64; n];
    let mut b_row = vec![0.0f64; n];
    for bi in 0..batch {
        for mi in 0..m {
            row.iter_mut().for_each(|v| *v = 0.0);
            for ki in 0..k {
                let av = f64::from(a[bi * a_strides[0] + mi * a_strides[1] + ki * a_strides[2]]);
                let b_base = bi * b_strides[0] + ki * b_strides[1];
                for (ni, dst) in b_row.iter_mut().enumerate() {
                    *dst = f64::from(b[b_base + ni * b_strides[2]]);
                }
                for (acc, bv) in row.iter_mut().zip(&b_row) {
                    *acc += av * bv;
                }
            }
            for (ni, acc) in row.iter().enumerate() {
                let idx = bi * c_strides[0] + mi * c_strides[1] + ni * c_strides[2];
                let mut v = alpha * acc;
                if let Some((bias, axis)) = bias {
                    v += f64::from(match axis {
                        BiasAxis::M => bias[mi],
                        BiasAxis::N => bias[ni],
                    });
                }
                if let Some(r) = residual {
                    v += f64::from(r[idx]);
                }
                out[idx] = v * output_scale;
            }
        }
    }
    out
}
