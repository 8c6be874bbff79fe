//! `NoiseSchedule`: the training betas, alphas and ᾱ (follows diffusers 0.42
//! `schedulers/scheduling_ddpm.py`: `DDPMScheduler.__init__`, `betas_for_alpha_bar`,
//! `rescale_zero_terminal_snr`, `_get_variance`), plus the DDPM posterior q(x_{t−1} | x_t, x₀).
//!
//! diffusers builds these tables in float32 (`torch.linspace(..., dtype=torch.float32)`, float32
//! `1 − β`, `torch.cumprod`, which accumulates in float64 on the CPU and stores float32). This
//! module computes the formulas in float64 ([`TablePrecision::F64`]) and can also round at the
//! points where diffusers stores float32 ([`TablePrecision::DiffusersF32`]). The float32 variant
//! matches diffusers to the last bit except where torch's CPU kernels are not correctly rounded;
//! there this crate uses the correctly rounded value instead:
//!
//! * `torch.linspace`, whose float32 result depends on the CPU's SIMD path (one ulp off the
//!   rounded exact value in ~1/3 of the entries, differently for torch's AVX-512, AVX2 and
//!   scalar kernels);
//! * float32 `sqrt` / `** 0.5` (one ulp off in ~1/5 of the entries on an AVX-512 CPU), used by
//!   `rescale_zero_terminal_snr` and the σ table.
//!
//! Both are one-ulp differences, but the zero-SNR rescaling magnifies them near t = T, where
//! √ᾱ_t − √ᾱ_{T−1} cancels: there ᾱ differs from float32 diffusers by up to ~4e-6 relative and
//! β by ~50·2⁻²⁴ (`tests/schedule.rs` measures all of this against diffusers).

use crate::error::{Error, Result};

use super::config::{BetaSchedule, SamplerSettings, SchedulerKind};
use super::numeric::{linspace, to_f32};

/// Which arithmetic the schedule tables (and the σ / timestep tables derived from them) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TablePrecision {
    /// The formulas in float64 throughout.
    F64,
    /// float64 formulas rounded to float32 wherever diffusers stores a float32 tensor (betas,
    /// alphas, ᾱ, the σ table `((1 − ᾱ)/ᾱ)^½` computed with float32 operations, interpolated
    /// sigmas, float timesteps). Per-step coefficients are then computed in float64 from those
    /// values. This reproduces what a model trained and sampled with diffusers actually sees,
    /// and it is the default for sampling.
    #[default]
    DiffusersF32,
}

impl TablePrecision {
    /// Rounds `x` the way a float32 tensor would store it (identity for `F64`).
    pub fn store(self, x: f64) -> f64 {
        match self {
            TablePrecision::F64 => x,
            TablePrecision::DiffusersF32 => to_f32(x),
        }
    }
}

/// The forward-process tables over the T training timesteps, index t = 0 … T − 1.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    /// β_t.
    pub betas: Vec<f64>,
    /// α_t = 1 − β_t.
    pub alphas: Vec<f64>,
    /// ᾱ_t = ∏_{s ≤ t} α_s.
    pub alphas_cumprod: Vec<f64>,
    /// The arithmetic the tables were built with.
    pub precision: TablePrecision,
}

/// The DDPM posterior q(x_prev | x_t, x₀) = N(mean_coef_x0·x₀ + mean_coef_xt·x_t, variance)
/// for one (possibly strided) step t → prev.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Posterior {
    /// Coefficient of x₀ in the mean: √ᾱ_prev·β̂_t / (1 − ᾱ_t), with β̂_t = 1 − ᾱ_t/ᾱ_prev.
    pub mean_coef_x0: f64,
    /// Coefficient of x_t in the mean: √(ᾱ_t/ᾱ_prev)·(1 − ᾱ_prev) / (1 − ᾱ_t).
    pub mean_coef_xt: f64,
    /// (1 − ᾱ_prev)/(1 − ᾱ_t)·β̂_t (0 at the last step, where ᾱ_prev = 1).
    pub variance: f64,
}

impl NoiseSchedule {
    fn from_f64_betas(betas: Vec<f64>, precision: TablePrecision) -> Self {
        let betas: Vec<f64> = betas.into_iter().map(|b| precision.store(b)).collect();
        let alphas: Vec<f64> = betas.iter().map(|b| precision.store(1.0 - b)).collect();
        let alphas_cumprod = cumprod(&alphas, precision);
        NoiseSchedule {
            betas,
            alphas,
            alphas_cumprod,
            precision,
        }
    }

    /// From explicit betas (diffusers `trained_betas`); each must lie in [0, 1].
    pub fn from_betas(betas: Vec<f64>, precision: TablePrecision) -> Result<Self> {
        if betas.len() < 2 {
            return Err(Error::invalid(
                "noise schedule",
                format!("need at least 2 betas, got {}", betas.len()),
            ));
        }
        if let Some(b) = betas.iter().find(|b| !(0.0..=1.0).contains(*b)) {
            return Err(Error::invalid(
                "noise schedule",
                format!("beta {b} lies outside [0, 1]"),
            ));
        }
        Ok(Self::from_f64_betas(betas, precision))
    }

    /// `beta_schedule="linear"`: `linspace(beta_start, beta_end, T)`.
    pub fn linear(
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        precision: TablePrecision,
    ) -> Result<Self> {
        check_timesteps(num_train_timesteps)?;
        Self::from_betas(
            linspace(beta_start, beta_end, num_train_timesteps),
            precision,
        )
    }

    /// `beta_schedule="scaled_linear"`: `linspace(√beta_start, √beta_end, T)²`.
    pub fn scaled_linear(
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        precision: TablePrecision,
    ) -> Result<Self> {
        check_timesteps(num_train_timesteps)?;
        let roots = linspace(beta_start.sqrt(), beta_end.sqrt(), num_train_timesteps);
        let betas = roots
            .into_iter()
            .map(|r| match precision {
                // diffusers squares the float32 linspace in float32.
                TablePrecision::DiffusersF32 => {
                    let r = r as f32;
                    f64::from(r * r)
                }
                TablePrecision::F64 => r * r,
            })
            .collect();
        Self::from_betas(betas, precision)
    }

    /// `beta_schedule="squaredcos_cap_v2"`: diffusers `betas_for_alpha_bar` with the cosine
    /// ᾱ(t) = cos²((t + 0.008)/1.008 · π/2) and β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999), where
    /// i/T is a float division (computed in float64 by diffusers too).
    pub fn squaredcos_cap_v2(
        num_train_timesteps: usize,
        precision: TablePrecision,
    ) -> Result<Self> {
        check_timesteps(num_train_timesteps)?;
        let alpha_bar = |t: f64| {
            ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                .cos()
                .powi(2)
        };
        let total = num_train_timesteps as f64;
        let betas = (0..num_train_timesteps)
            .map(|i| {
                let t1 = i as f64 / total;
                let t2 = (i + 1) as f64 / total;
                (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
            })
            .collect();
        Self::from_betas(betas, precision)
    }

    /// The schedule `settings` describe, including `rescale_betas_zero_snr` and, for the
    /// σ-space classes that do it (Euler, Euler ancestral, DPM-Solver), diffusers' replacement
    /// of the final ᾱ = 0 by 2⁻²⁴.
    pub fn for_settings(settings: &SamplerSettings, precision: TablePrecision) -> Result<Self> {
        let t = settings.num_train_timesteps;
        let schedule = match &settings.trained_betas {
            Some(betas) => Self::from_betas(betas.clone(), precision)?,
            None => match settings.beta_schedule {
                BetaSchedule::Linear => {
                    Self::linear(settings.beta_start, settings.beta_end, t, precision)?
                }
                BetaSchedule::ScaledLinear => {
                    Self::scaled_linear(settings.beta_start, settings.beta_end, t, precision)?
                }
                BetaSchedule::SquaredcosCapV2 => Self::squaredcos_cap_v2(t, precision)?,
            },
        };
        if !settings.rescale_betas_zero_snr {
            return Ok(schedule);
        }
        let mut rescaled = schedule.rescaled_zero_terminal_snr();
        if matches!(
            settings.kind,
            SchedulerKind::Euler
                | SchedulerKind::EulerAncestral
                | SchedulerKind::DpmSolverMultistep
        ) {
            if let Some(last) = rescaled.alphas_cumprod.last_mut() {
                *last = 2f64.powi(-24);
            }
        }
        Ok(rescaled)
    }

    /// diffusers `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1): shifts and scales
    /// √ᾱ so that √ᾱ₀ is kept and √ᾱ_{T−1} becomes 0, then rebuilds the betas.
    pub fn rescaled_zero_terminal_snr(&self) -> Self {
        let p = self.precision;
        let sqrt = |x: f64| match p {
            TablePrecision::F64 => x.sqrt(),
            TablePrecision::DiffusersF32 => f64::from((x as f32).sqrt()),
        };
        let mut sqrt_alphas_cumprod: Vec<f64> =
            self.alphas_cumprod.iter().map(|&a| sqrt(a)).collect();
        let first = sqrt_alphas_cumprod.first().copied().unwrap_or(1.0);
        let last = sqrt_alphas_cumprod.last().copied().unwrap_or(0.0);
        let scale = p.store(first / p.store(first - last));
        for v in sqrt_alphas_cumprod.iter_mut() {
            *v = p.store(p.store(*v - last) * scale);
        }
        let alphas_cumprod: Vec<f64> = sqrt_alphas_cumprod.iter().map(|v| p.store(v * v)).collect();
        let mut alphas = Vec::with_capacity(alphas_cumprod.len());
        alphas.extend(alphas_cumprod.first().copied());
        alphas.extend(alphas_cumprod.windows(2).map(|w| p.store(w[1] / w[0])));
        let betas: Vec<f64> = alphas.iter().map(|a| p.store(1.0 - a)).collect();
        let alphas: Vec<f64> = betas.iter().map(|b| p.store(1.0 - b)).collect();
        let alphas_cumprod = cumprod(&alphas, p);
        NoiseSchedule {
            betas,
            alphas,
            alphas_cumprod,
            precision: p,
        }
    }

    /// The same betas rounded the way diffusers stores them (see [`TablePrecision`]); the
    /// alphas and ᾱ are rebuilt from the rounded betas.
    pub fn rounded_to_f32(&self) -> Self {
        Self::from_f64_betas(self.betas.clone(), TablePrecision::DiffusersF32)
    }

    /// T, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// σ_t = √((1 − ᾱ_t)/ᾱ_t), the noise level of the σ-space (variance-exploding) view
    /// x_σ = x_t/√ᾱ_t = x₀ + σ·ε. Under `DiffusersF32` the subtraction, division and square root
    /// are float32 operations, as in diffusers' `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|&a| match self.precision {
                TablePrecision::F64 => ((1.0 - a) / a).sqrt(),
                TablePrecision::DiffusersF32 => {
                    let a = a as f32;
                    f64::from(((1.0 - a) / a).sqrt())
                }
            })
            .collect()
    }

    /// ᾱ at `t`, or `None` outside the table.
    pub fn alpha_cumprod(&self, t: i64) -> Option<f64> {
        usize::try_from(t)
            .ok()
            .and_then(|t| self.alphas_cumprod.get(t).copied())
    }

    /// q(x_prev | x_t, x₀) for the step from training timestep `t` to `prev` (`None`: past
    /// the end of the chain, ᾱ_prev = 1). `prev = Some(t − 1)` is Ho et al.'s eq. 7; a larger
    /// stride is what DDPM sampling with fewer steps uses (diffusers `_get_variance`).
    pub fn posterior(&self, t: usize, prev: Option<usize>) -> Result<Posterior> {
        let alpha_cumprod_t = self.alphas_cumprod.get(t).copied().ok_or_else(|| {
            Error::invalid(
                "posterior",
                format!(
                    "timestep {t} is outside the schedule (T = {})",
                    self.num_train_timesteps()
                ),
            )
        })?;
        let alpha_cumprod_prev = match prev {
            None => 1.0,
            Some(p) if p < t => self.alphas_cumprod[p],
            Some(p) => {
                return Err(Error::invalid(
                    "posterior",
                    format!("previous timestep {p} must be smaller than t = {t}"),
                ))
            }
        };
        Ok(posterior_between(alpha_cumprod_t, alpha_cumprod_prev))
    }

    /// Ho et al.'s posterior mean coefficient of x₀ for every t (`posterior_mean_coef1`):
    /// β_t·√ᾱ_{t−1}/(1 − ᾱ_t), with ᾱ_{−1} = 1.
    pub fn posterior_mean_coef1(&self) -> Vec<f64> {
        self.consecutive_posteriors()
            .map(|p| p.mean_coef_x0)
            .collect()
    }

    /// Ho et al.'s posterior mean coefficient of x_t for every t (`posterior_mean_coef2`):
    /// (1 − ᾱ_{t−1})·√α_t/(1 − ᾱ_t).
    pub fn posterior_mean_coef2(&self) -> Vec<f64> {
        self.consecutive_posteriors()
            .map(|p| p.mean_coef_xt)
            .collect()
    }

    /// β̃_t = β_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t) for every t (0 at t = 0).
    pub fn posterior_variance(&self) -> Vec<f64> {
        self.consecutive_posteriors().map(|p| p.variance).collect()
    }

    /// log β̃_t with the t = 0 entry (log 0) replaced by log β̃_1, as in Ho et al.'s code
    /// (`np.log(np.append(posterior_variance[1], posterior_variance[1:]))`).
    pub fn posterior_log_variance_clipped(&self) -> Vec<f64> {
        let variance = self.posterior_variance();
        let first = variance.get(1).copied().unwrap_or(f64::NAN);
        variance
            .iter()
            .enumerate()
            .map(|(t, v)| if t == 0 { first.ln() } else { v.ln() })
            .collect()
    }

    fn consecutive_posteriors(&self) -> impl Iterator<Item = Posterior> + '_ {
        (0..self.num_train_timesteps()).map(|t| {
            let prev = if t == 0 {
                1.0
            } else {
                self.alphas_cumprod[t - 1]
            };
            posterior_between(self.alphas_cumprod[t], prev)
        })
    }
}

/// The posterior of one step from ᾱ_t to ᾱ_prev.
pub fn posterior_between(alpha_cumprod_t: f64, alpha_cumprod_prev: f64) -> Posterior {
    let beta_prod_t = 1.0 - alpha_cumprod_t;
    let beta_prod_prev = 1.0 - alpha_cumprod_prev;
    let current_alpha = alpha_cumprod_t / alpha_cumprod_prev;
    let current_beta = 1.0 - current_alpha;
    Posterior {
        mean_coef_x0: alpha_cumprod_prev.sqrt() * current_beta / beta_prod_t,
        mean_coef_xt: current_alpha.sqrt() * beta_prod_prev / beta_prod_t,
        variance: beta_prod_prev / beta_prod_t * current_beta,
    }
}

/// `torch.cumprod` on the CPU: a float64 running product (stored as float32 under
/// `DiffusersF32`, which is what torch does for a float32 tensor).
fn cumprod(alphas: &[f64], precision: TablePrecision) -> Vec<f64> {
    let mut running = 1.0_f64;
    alphas
        .iter()
        .map(|a| {
            running *= a;
            precision.store(running)
        })
        .collect()
}

fn check_timesteps(num_train_timesteps: usize) -> Result<()> {
    if num_train_timesteps < 2 {
        return Err(Error::invalid(
            "noise schedule",
            format!("num_train_timesteps must be at least 2, got {num_train_timesteps}"),
        ));
    }
    Ok(())
}
