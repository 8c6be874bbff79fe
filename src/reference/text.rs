//! f64 CPU references for the text-encoder ops: layer norm over the last dimension, the causal
//! row softmax of square score blocks, `quick_gelu` and the exact `gelu` (through libm-quality
//! erfc in f64). Inputs are the f32 values the GPU sees; errors name the op and the length.

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

/// `F.layer_norm(x, (cols,), gamma, beta, eps)` on `rows` contiguous rows: two-pass mean and
/// biased variance in f64.
pub fn layer_norm(
    x: &[f32],
    rows: usize,
    cols: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Result<Vec<f64>> {
    const OP: &str = "layer_norm";
    check_len(OP, "x", x.len(), rows * cols)?;
    check_len(OP, "gamma", gamma.len(), cols)?;
    check_len(OP, "beta", beta.len(), cols)?;
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols.max(1)) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        out.extend(row.iter().enumerate().map(|(c, &v)| {
            (f64::from(v) - mean) * rstd * f64::from(gamma[c]) + f64::from(beta[c])
        }));
    }
    Ok(out)
}

/// Softmax of each row of `blocks` square `t × t` blocks with the causal mask: row r of a block
/// covers columns `0..=r`, the rest are 0 (torch's additive −inf mask).
pub fn causal_softmax(x: &[f32], blocks: usize, t: usize) -> Result<Vec<f64>> {
    check_len("causal_softmax", "x", x.len(), blocks * t * t)?;
    let mut out = Vec::with_capacity(x.len());
    for (row_index, row) in x.chunks(t.max(1)).enumerate() {
        let valid = row_index % t + 1;
        let max = row[..valid]
            .iter()
            .map(|&v| f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = row[..valid]
            .iter()
            .map(|&v| (f64::from(v) - max).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| e / sum));
        out.extend(std::iter::repeat_n(0.0, t - valid));
    }
    Ok(out)
}

/// `x · sigmoid(1.702 x)` (transformers' `QuickGELUActivation`).
pub fn quick_gelu(x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            v / (1.0 + (-1.702 * v).exp())
        })
        .collect()
}

/// `0.5 x (1 + erf(x/√2))` = `0.5 x erfc(−x/√2)` (`F.gelu`, exact form), in f64.
pub fn gelu(x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            0.5 * v * erfc(-v * std::f64::consts::FRAC_1_SQRT_2)
        })
        .collect()
}

/// The complementary error function in f64 (W. J. Cody's rational Chebyshev approximations, as
/// in most libms): relative error near f64 precision over the whole line, so it judges an f32
/// kernel without adding error of its own. The coefficients are Cody's published digits.
#[allow(clippy::excessive_precision)]
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let result = if ax < 0.5 {
        // erfc = 1 − erf, erf(x) = x·P(x²)/Q(x²).
        const P: [f64; 5] = [
            3.209_377_589_138_469_5e3,
            3.774_852_376_853_020_2e2,
            1.138_641_541_510_501_6e2,
            3.161_123_743_870_565_6,
            1.857_777_061_846_031_5e-1,
        ];
        const Q: [f64; 5] = [
            2.844_236_833_439_170_6e3,
            1.282_616_526_077_372_3e3,
            2.440_246_379_344_441_7e2,
            2.360_129_095_234_412_1e1,
            1.0,
        ];
        let z = x * x;
        let num = P[0] + z * (P[1] + z * (P[2] + z * (P[3] + z * P[4])));
        let den = Q[0] + z * (Q[1] + z * (Q[2] + z * (Q[3] + z * Q[4])));
        return 1.0 - x * num / den;
    } else if ax < 4.0 {
        const P: [f64; 9] = [
            1.230_339_354_797_997_2e3,
            2.051_078_377_826_071_5e3,
            1.712_047_612_634_070_6e3,
            8.819_522_212_417_690_9e2,
            2.986_351_381_974_001_3e2,
            6.611_919_063_714_163e1,
            8.883_149_794_388_375_9,
            5.641_884_969_886_700_9e-1,
            2.153_115_354_744_038_5e-8,
        ];
        const Q: [f64; 9] = [
            1.230_339_354_803_749_4e3,
            3.439_367_674_143_721_6e3,
            4.362_619_090_143_247e3,
            3.290_799_235_733_459_7e3,
            1.621_389_574_566_690_2e3,
            5.371_811_018_620_098_6e2,
            1.176_939_508_913_125e2,
            1.574_492_611_070_983_5e1,
            1.0,
        ];
        let num = P.iter().rev().fold(0.0, |acc, &c| acc * ax + c);
        let den = Q.iter().rev().fold(0.0, |acc, &c| acc * ax + c);
        (-ax * ax).exp() * num / den
    } else {
        const P: [f64; 6] = [
            -6.587_491_615_298_378e-4,
            -1.608_378_514_874_227_5e-2,
            -1.257_817_261_112_292_5e-1,
            -3.603_448_999_498_044_4e-1,
            -3.053_266_349_612_323_4e-1,
            -1.631_538_713_730_709_6e-2,
        ];
        const Q: [f64; 6] = [
            2.335_204_976_268_691_8e-3,
            6.051_834_131_244_132e-2,
            5.279_051_029_514_284e-1,
            1.872_952_849_923_460_4,
            2.568_520_192_289_822,
            1.0,
        ];
        let z = 1.0 / (ax * ax);
        let num = P.iter().rev().fold(0.0, |acc, &c| acc * z + c);
        let den = Q.iter().rev().fold(0.0, |acc, &c| acc * z + c);
        let frac_1_sqrt_pi = 0.564_189_583_547_756_3;
        (-ax * ax).exp() / ax * (frac_1_sqrt_pi + z * num / den)
    };
    if x < 0.0 {
        2.0 - result
    } else {
        result
    }
}
