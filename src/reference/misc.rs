//! f64 CPU references for the non-convolution ops: group norm (+SiLU), row softmax, SiLU, scaled
//! add, affine, channel concat, class-embedding add, nearest ×2 upsampling and the timestep
//! embedding (which mimics torch's f32 rounding of the argument). Inputs are the f32 values the
//! GPU sees; every error names the op and the mismatched length or shape.

use crate::error::{Error, Result};

fn check_len(op: &str, name: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::invalid(
            format!("reference {op}"),
            format!("{name} has {got} values, expected {want}"),
        ));
    }
    Ok(())
}

fn silu64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// `F.group_norm(x, groups, gamma, beta, eps)` (then SiLU when `silu`): `x` is `[N, C, ...]`
/// with `shape` giving the dims, `gamma` and `beta` are `[C]`. Two-pass mean and biased variance
/// in f64.
pub fn group_norm(
    x: &[f32],
    shape: &[usize],
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Vec<f64>> {
    const OP: &str = "group_norm";
    if shape.len() < 2 || groups == 0 || !shape[1].is_multiple_of(groups) {
        return Err(Error::invalid(
            format!("reference {OP}"),
            format!("shape {shape:?} cannot be split into {groups} groups over dim 1"),
        ));
    }
    let (n, c) = (shape[0], shape[1]);
    let spatial: usize = shape[2..].iter().product();
    check_len(OP, "x", x.len(), n * c * spatial)?;
    check_len(OP, "gamma", gamma.len(), c)?;
    check_len(OP, "beta", beta.len(), c)?;
    let cpg = c / groups;
    let count = cpg * spatial;
    let mut out = vec![0.0; x.len()];
    for s in 0..n {
        for g in 0..groups {
            let base = (s * c + g * cpg) * spatial;
            let values = &x[base..base + count];
            let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / count as f64;
            let var = values
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / count as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (e, &v) in values.iter().enumerate() {
                let ch = g * cpg + e / spatial;
                let y = (f64::from(v) - mean) * rstd * f64::from(gamma[ch]) + f64::from(beta[ch]);
                out[base + e] = if silu { silu64(y) } else { y };
            }
        }
    }
    Ok(out)
}

/// Softmax over each of the `rows` contiguous rows of `cols` values.
pub fn softmax_rows(x: &[f32], rows: usize, cols: usize) -> Result<Vec<f64>> {
    check_len("softmax_rows", "x", x.len(), rows * cols)?;
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols.max(1)) {
        let max = row
            .iter()
            .map(|&v| f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| e / sum));
    }
    Ok(out)
}

/// `x · sigmoid(x)`.
pub fn silu(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| silu64(f64::from(v))).collect()
}

/// `(a + b) · scale`.
pub fn add(a: &[f32], b: &[f32], scale: f32) -> Result<Vec<f64>> {
    check_len("add", "b", b.len(), a.len())?;
    Ok(a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) + f64::from(y)) * f64::from(scale))
        .collect())
}

/// `x · mul + add`.
pub fn affine(x: &[f32], mul: f32, add: f32) -> Vec<f64> {
    x.iter()
        .map(|&v| f64::from(v) * f64::from(mul) + f64::from(add))
        .collect()
}

/// `torch.cat([a, b], dim=1)` for `a` `[n, ca, spatial]` and `b` `[n, cb, spatial]` (spatial =
/// the product of the trailing dims).
pub fn concat_channels(
    a: &[f32],
    b: &[f32],
    n: usize,
    ca: usize,
    cb: usize,
    spatial: usize,
) -> Result<Vec<f64>> {
    check_len("concat_channels", "a", a.len(), n * ca * spatial)?;
    check_len("concat_channels", "b", b.len(), n * cb * spatial)?;
    let (a_len, b_len) = (ca * spatial, cb * spatial);
    let mut out = Vec::with_capacity(a.len() + b.len());
    for s in 0..n {
        out.extend(a[s * a_len..(s + 1) * a_len].iter().map(|&v| f64::from(v)));
        out.extend(b[s * b_len..(s + 1) * b_len].iter().map(|&v| f64::from(v)));
    }
    Ok(out)
}

/// `x[:, start:start + c_out]` for `x` `[n, cx, spatial]`.
pub fn slice_channels(
    x: &[f32],
    n: usize,
    cx: usize,
    (start, c_out): (usize, usize),
    spatial: usize,
) -> Result<Vec<f64>> {
    check_len("slice_channels", "x", x.len(), n * cx * spatial)?;
    if start + c_out > cx {
        return Err(Error::invalid(
            "slice_channels",
            format!("channels {start}..{} of {cx}", start + c_out),
        ));
    }
    let mut out = Vec::with_capacity(n * c_out * spatial);
    for s in 0..n {
        let begin = (s * cx + start) * spatial;
        out.extend(
            x[begin..begin + c_out * spatial]
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    Ok(out)
}

/// Nearest-codebook quantisation (diffusers `VectorQuantizer.forward`): for every pixel of `z`
/// `[n, d, hw]`, the codebook row `[k, d]` at the least squared distance (ties: the lower
/// index, as `torch.argmin`), as `[n, d, hw]`, and the chosen indices `[n, hw]`.
pub fn vq_quantize(
    z: &[f32],
    codebook: &[f32],
    n: usize,
    (k, d): (usize, usize),
    hw: usize,
) -> Result<(Vec<f64>, Vec<usize>)> {
    check_len("vq_quantize", "z", z.len(), n * d * hw)?;
    check_len("vq_quantize", "codebook", codebook.len(), k * d)?;
    let mut out = vec![0.0; n * d * hw];
    let mut indices = vec![0; n * hw];
    for s in 0..n {
        for p in 0..hw {
            let mut best = (f64::INFINITY, 0);
            for j in 0..k {
                let dist: f64 = (0..d)
                    .map(|c| {
                        let diff =
                            f64::from(z[(s * d + c) * hw + p]) - f64::from(codebook[j * d + c]);
                        diff * diff
                    })
                    .sum();
                if dist < best.0 {
                    best = (dist, j);
                }
            }
            indices[s * hw + p] = best.1;
            for c in 0..d {
                out[(s * d + c) * hw + p] = f64::from(codebook[best.1 * d + c]);
            }
        }
    }
    Ok((out, indices))
}

/// `base[n] + table[labels[n]]` for `table` `[rows, dim]`, `labels` `[N]`, `base` `[N, dim]`.
/// Fails on a label that is not an integer in `[0, rows)`, as `nn.Embedding` would.
pub fn embedding_add(table: &[f32], dim: usize, labels: &[f32], base: &[f32]) -> Result<Vec<f64>> {
    const OP: &str = "embedding_add";
    if dim == 0 || !table.len().is_multiple_of(dim) {
        return Err(Error::invalid(
            format!("reference {OP}"),
            format!("a table of {} values is not [rows, {dim}]", table.len()),
        ));
    }
    let rows = table.len() / dim;
    check_len(OP, "base", base.len(), labels.len() * dim)?;
    let mut out = Vec::with_capacity(base.len());
    for (n, &label) in labels.iter().enumerate() {
        if label.fract() != 0.0 || label < 0.0 || label as f64 >= rows as f64 {
            return Err(Error::invalid(
                format!("reference {OP}"),
                format!("label {label} of sample {n} is not a class index below {rows}"),
            ));
        }
        let row = &table[label as usize * dim..(label as usize + 1) * dim];
        out.extend(
            base[n * dim..(n + 1) * dim]
                .iter()
                .zip(row)
                .map(|(&b, &t)| f64::from(b) + f64::from(t)),
        );
    }
    Ok(out)
}

/// `F.interpolate(x, scale_factor=2, mode="nearest")` for `x` `[n, c, h, w]`.
pub fn upsample_nearest2x(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Result<Vec<f64>> {
    check_len("upsample_nearest2x", "x", x.len(), n * c * h * w)?;
    let mut out = Vec::with_capacity(x.len() * 4);
    for plane in 0..n * c {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                out.push(f64::from(x[(plane * h + oy / 2) * w + ox / 2]));
            }
        }
    }
    Ok(out)
}

/// diffusers `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift = freq_shift,
/// scale = 1, max_period = 10000)` as torch evaluates it in f32, `[N, dim]` row-major:
/// `exponent = f32(f32(−ln 1e4) · i) / f32(dim/2 − freq_shift)` (f32 ops), `freq = f32(exp)`,
/// `arg = f32(t · freq)`; then sin and cos of that f32 argument in f64 (torch's f32 sin/cos are
/// within an ulp of these). `[sin, cos]`, or `[cos, sin]` when flipped; a zero column when `dim`
/// is odd. Fails when `dim/2 − freq_shift` is zero.
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Result<Vec<f64>> {
    let half = dim / 2;
    let denominator = (half as f64 - freq_shift) as f32;
    if half > 0 && denominator == 0.0 {
        return Err(Error::invalid(
            "reference timestep_embedding",
            format!("dim / 2 − freq_shift = {half} − {freq_shift} is zero"),
        ));
    }
    let neg_log = -(10000.0f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (f64::from(neg_log * i as f32 / denominator).exp()) as f32)
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f64> = freqs.iter().map(|&f| f64::from(t * f)).collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        if flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Ok(out)
}

/// What `non_finite.wgsl`'s final check reports for `x`: the number of NaN / ±inf elements and
/// the index of the first.
pub fn non_finite(x: &[f32]) -> (usize, Option<usize>) {
    let count = x.iter().filter(|v| !v.is_finite()).count();
    (count, x.iter().position(|v| !v.is_finite()))
}
