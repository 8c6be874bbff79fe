//! The numpy / torch primitives diffusers' `set_timesteps` methods are built from (follows
//! diffusers 0.42 `schedulers/scheduling_euler_discrete.py` `_sigma_to_t` / `_convert_to_karras`,
//! numpy 2.4 `linspace`, `arange`, `interp` and `round`), reproduced operation for operation so
//! rounding ties and endpoints land where diffusers' do.

/// `numpy.linspace(start, stop, num)` in float64: `i·step + start` with `step = (stop − start)
/// / (num − 1)`, and the last entry set to `stop` exactly.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let delta = stop - start;
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let step = delta / div;
    let mut values: Vec<f64> = (0..num)
        .map(|i| {
            let i = i as f64;
            if step == 0.0 {
                i / div * delta + start
            } else {
                i * step + start
            }
        })
        .collect();
    if let Some(last) = values.last_mut() {
        *last = stop;
    }
    values
}

/// `numpy.arange(start, 0, -step)` for `start > 0`, `step > 0`: numpy fills `start + i·delta`
/// with `delta = (start − step) − start`; the length is `ceil(start / step)`.
pub fn arange_down_to_zero(start: f64, step: f64) -> Vec<f64> {
    let length = (start / step).ceil();
    if !(length >= 1.0) {
        return Vec::new();
    }
    let length = length as usize;
    let second = start + -step;
    let delta = second - start;
    (0..length)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `numpy.round` / `torch.round`: ties to even.
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Rounds to float32 and back (what storing a value in a float32 tensor does).
pub fn to_f32(x: f64) -> f64 {
    f64::from(x as f32)
}

/// `numpy.interp(x, arange(len(table)), table)`: linear interpolation between integer abscissae,
/// clamped to the end values outside `[0, len − 1]`.
pub fn interp_at(x: f64, table: &[f64]) -> f64 {
    let Some((&first, rest)) = table.split_first() else {
        return f64::NAN;
    };
    let last = rest.last().copied().unwrap_or(first);
    let last_index = (table.len() - 1) as f64;
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return first;
    }
    if x >= last_index {
        return last;
    }
    let j = x.floor();
    let index = j as usize;
    let low = table[index];
    if j == x {
        return low;
    }
    let slope = table[index + 1] - low;
    slope * (x - j) + low
}

/// Karras et al. (2022) σ spacing with ρ = 7 (diffusers `_convert_to_karras`):
/// `(σ_max^{1/ρ} + ramp·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ` with `ramp = linspace(0, 1, n)`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0_f64;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// diffusers `_sigma_to_t`: the fractional training timestep whose σ is `sigma`, interpolating
/// log σ linearly between the two neighbouring entries of `log_sigmas` (ascending in t).
/// `float32_difference` reproduces diffusers computing `low − high` on its float32 table.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64], float32_difference: bool) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // `cumsum(dists >= 0).argmax()`: the last index whose log σ is ≤ log_sigma (0 if none).
    let low_index = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(n - 2);
    let high_index = low_index + 1;
    let low = log_sigmas[low_index];
    let high = log_sigmas[high_index];
    let span = if float32_difference {
        f64::from(low as f32 - high as f32)
    } else {
        low - high
    };
    let w = ((low - log_sigma) / span).clamp(0.0, 1.0);
    (1.0 - w) * low_index as f64 + w * high_index as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_endpoints() {
        assert_eq!(linspace(0.0, 999.0, 1), vec![0.0]);
        assert_eq!(linspace(0.0, 999.0, 3), vec![0.0, 499.5, 999.0]);
        assert_eq!(round_half_even(499.5), 500.0);
        assert_eq!(round_half_even(498.5), 498.0);
    }

    #[test]
    fn arange_has_numpy_length() {
        // numpy.arange(1000, 0, -1000/61) has 62 entries (the last ≈ -5.7e-13).
        assert_eq!(arange_down_to_zero(1000.0, 1000.0 / 61.0).len(), 62);
        assert_eq!(arange_down_to_zero(1000.0, 100.0).len(), 10);
    }

    #[test]
    fn interp_clamps_and_interpolates() {
        let table = [1.0, 3.0, 7.0];
        assert_eq!(interp_at(-1.0, &table), 1.0);
        assert_eq!(interp_at(0.5, &table), 2.0);
        assert_eq!(interp_at(1.0, &table), 3.0);
        assert_eq!(interp_at(1.25, &table), 4.0);
        assert_eq!(interp_at(9.0, &table), 7.0);
    }
}
