//! A known-answer model for sampler tests: the exact denoiser of Gaussian data x₀ ~ N(μ, s²)
//! (`shaders/analytic_model.wgsl`), on the GPU as a [`Denoiser`] and on the CPU in f64
//! ([`GaussianModel::eval`]). Every sampler run with it must end near N(μ, s²), and the GPU run
//! must match the CPU loop [`crate::schedule::sample_reference`] with the same noise.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::ops::analytic_model::{gaussian_denoise, GaussianDenoise, GaussianMode};
use crate::sampling::engine::Denoiser;
use crate::schedule::{NoiseSchedule, SamplerSettings, SchedulerKind, TablePrecision};

/// How the model reads its timestep.
#[derive(Debug, Clone, PartialEq)]
pub enum Parametrization {
    /// ε-prediction; ᾱ(t) interpolated linearly in t from the training table.
    EpsilonDiscrete { alphas_cumprod: Vec<f64> },
    /// ε-prediction on the continuous VP SDE: t = τ·(T − 1).
    EpsilonContinuous {
        beta_min: f64,
        beta_max: f64,
        train_steps: f64,
    },
    /// Velocity ε − x₀ of rectified flow: t = σ·T.
    FlowVelocity { train_steps: f64 },
}

impl Parametrization {
    /// What a sampler with `settings` expects its network to be.
    pub fn for_settings(settings: &SamplerSettings) -> Result<Self> {
        Ok(match settings.kind {
            SchedulerKind::ScoreSdeVp => Parametrization::EpsilonContinuous {
                beta_min: settings.beta_min,
                beta_max: settings.beta_max,
                train_steps: settings.num_train_timesteps as f64,
            },
            SchedulerKind::FlowMatchEuler => Parametrization::FlowVelocity {
                train_steps: settings.num_train_timesteps as f64,
            },
            _ => Parametrization::EpsilonDiscrete {
                alphas_cumprod: NoiseSchedule::for_settings(settings, TablePrecision::F64)?
                    .alphas_cumprod,
            },
        })
    }
}

/// The Gaussian data set's exact denoiser.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianModel {
    pub mean: f64,
    pub std: f64,
    pub param: Parametrization,
}

impl GaussianModel {
    /// ᾱ at timestep t (ε modes).
    fn alpha_cumprod(&self, t: f64) -> f64 {
        match &self.param {
            Parametrization::EpsilonDiscrete { alphas_cumprod } => {
                let last = (alphas_cumprod.len() - 1) as f64;
                let tc = t.clamp(0.0, last);
                let i0 = tc.floor() as usize;
                let i1 = (i0 + 1).min(alphas_cumprod.len() - 1);
                let f = tc - i0 as f64;
                alphas_cumprod[i0] + f * (alphas_cumprod[i1] - alphas_cumprod[i0])
            }
            Parametrization::EpsilonContinuous {
                beta_min,
                beta_max,
                train_steps,
            } => {
                let tau = t / (train_steps - 1.0);
                (-0.5 * tau * tau * (beta_max - beta_min) - tau * beta_min).exp()
            }
            Parametrization::FlowVelocity { .. } => 1.0,
        }
    }

    /// The model output for one element `x` of the input at timestep `t` (f64).
    pub fn eval(&self, x: f64, t: f64) -> f64 {
        let s2 = self.std * self.std;
        let mu = self.mean;
        if let Parametrization::FlowVelocity { train_steps } = self.param {
            let sigma = t / train_steps;
            let d = (1.0 - sigma).powi(2) * s2 + sigma * sigma;
            return (sigma - (1.0 - sigma) * s2) / d * (x - (1.0 - sigma) * mu) - mu;
        }
        let a = self.alpha_cumprod(t);
        (1.0 - a).sqrt() / (a * s2 + 1.0 - a) * (x - a.sqrt() * mu)
    }
}

/// [`GaussianModel`] on the GPU for a batch of `[B, C, H, W]`.
pub struct GaussianDenoiser {
    input: Tensor,
    timesteps: Tensor,
    output: Tensor,
    _table: Tensor,
    dispatches: Vec<Dispatch>,
}

impl GaussianDenoiser {
    pub fn new(ctx: &GpuContext, model: &GaussianModel, shape: [usize; 4]) -> Result<Self> {
        const OP: &str = "analytic model";
        let [b, c, h, w] = shape;
        if b == 0 || c * h * w == 0 {
            return Err(Error::invalid(OP, format!("empty shape {shape:?}")));
        }
        let input = Tensor::zeros(ctx, &shape, "analytic input")?;
        let timesteps = Tensor::zeros(ctx, &[b], "analytic timesteps")?;
        let output = Tensor::zeros(ctx, &shape, "analytic output")?;
        let (mode, table, beta_min, beta_max, train_steps) = match &model.param {
            Parametrization::EpsilonDiscrete { alphas_cumprod } => {
                let t: Vec<f32> = alphas_cumprod.iter().map(|&a| a as f32).collect();
                let len = alphas_cumprod.len() as f64;
                (GaussianMode::EpsilonDiscrete, t, 0.0, 0.0, len)
            }
            Parametrization::EpsilonContinuous {
                beta_min,
                beta_max,
                train_steps,
            } => (
                GaussianMode::EpsilonContinuous,
                vec![0.0],
                *beta_min,
                *beta_max,
                *train_steps,
            ),
            Parametrization::FlowVelocity { train_steps } => (
                GaussianMode::FlowVelocity,
                vec![0.0],
                0.0,
                0.0,
                *train_steps,
            ),
        };
        if table.is_empty() {
            return Err(Error::invalid(OP, "empty ᾱ table"));
        }
        let table_t = Tensor::from_slice(ctx, &[table.len()], &table, "analytic ᾱ table")?;
        let d = gaussian_denoise(
            ctx,
            &GaussianDenoise {
                input: &input,
                timesteps: &timesteps,
                table: &table_t,
                out: &output,
                mode,
                mean: model.mean as f32,
                std: model.std as f32,
                beta_min: beta_min as f32,
                beta_max: beta_max as f32,
                train_steps: train_steps as f32,
            },
            "gaussian denoiser",
        )?;
        Ok(GaussianDenoiser {
            input,
            timesteps,
            output,
            _table: table_t,
            dispatches: vec![d],
        })
    }
}

impl Denoiser for GaussianDenoiser {
    fn batch(&self) -> usize {
        self.input.shape[0]
    }
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn timesteps(&self) -> &Tensor {
        &self.timesteps
    }
    fn output(&self) -> &Tensor {
        &self.output
    }
    fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }
}
