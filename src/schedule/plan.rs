//! `StepPlan`: every timestep, σ and per-step coefficient of a sampling run, computed on the CPU
//! in f64 (follows diffusers 0.42 `set_timesteps` and `step` of `schedulers/scheduling_ddpm.py`,
//! `scheduling_ddim.py`, `scheduling_euler_discrete.py`, `scheduling_heun_discrete.py`,
//! `scheduling_euler_ancestral_discrete.py`, `scheduling_dpmsolver_multistep.py`,
//! `scheduling_flow_match_euler_discrete.py`, `scheduling_pndm.py` and
//! `deprecated/scheduling_sde_vp.py`).
//!
//! # The generic update
//!
//! Every sampler is a sequence of *stages*, one per model evaluation (Heun has two per step,
//! the others one). A stage is an element-wise affine update, so one GPU kernel serves all
//! samplers. With `x` the current sample, `H₀ … H₃` per-element history slots
//! (zero-initialised; [`HISTORY_SLOTS`]), `z` standard normal noise and `m` the model output for
//! the input `c_in·x` at `model_timestep`:
//!
//! ```text
//! x̂₀ = p_x·x + p_m·m                      (x0_from_sample, x0_from_model)
//! x̂₀ = clamp(x̂₀, −r, r)                   (only when clip_x0 = Some(r))
//! x' = a·x + b·x̂₀ + c·m + Σₖ hₖ·Hₖ + d·z  (coef_sample, coef_x0, coef_model, coef_history, noise_std)
//! Hₖ' = x̂₀ | x (before the update) | m | Hₖ  (history[k]: PredictedSample | SampleBeforeUpdate |
//!                                           ModelOutput | Keep)
//! ```
//!
//! Every slot is read before any is written. Noise is drawn only where `draws_noise` is set (at
//! most one stage per step). [`Stage::update`] is this formula for one element. Heun and
//! DPM-Solver++ use slot 0 only; PLMS (PNDM) uses all four.
//!
//! # x̂₀ from the prediction type
//!
//! Discrete (DDPM, DDIM) with ᾱ = ᾱ_t: ε: x̂₀ = (x − √(1−ᾱ)·m)/√ᾱ; sample: x̂₀ = m;
//! v: x̂₀ = √ᾱ·x − √(1−ᾱ)·m. σ-space (Euler, Heun, Euler ancestral) on the unscaled
//! x = x₀ + σ·ε: ε: x̂₀ = x − σ·m; sample: m; v: x̂₀ = x/(σ²+1) − σ/√(σ²+1)·m.
//! DPM-Solver++ on the VP sample with α = 1/√(σ²+1), σ_vp = σ·α: ε: (x − σ_vp·m)/α; sample: m;
//! v: α·x − σ_vp·m.
//!
//! # Per-sampler steps (s = step, t = its timestep)
//!
//! * **DDPM** (one stage): ᾱ_prev = ᾱ of the next timestep in the plan (1 after the last);
//!   β̂ = 1 − ᾱ_t/ᾱ_prev; x' = √ᾱ_prev·β̂/(1−ᾱ_t)·x̂₀ + √(ᾱ_t/ᾱ_prev)·(1−ᾱ_prev)/(1−ᾱ_t)·x +
//!   σ·z, with σ² = max((1−ᾱ_prev)/(1−ᾱ_t)·β̂, 1e-20) (`fixed_small`, `fixed_small_log`) or
//!   β̂ (`fixed_large`); noise only where t > 0. x̂₀ is clipped when `clip_sample`.
//! * **DDIM** (one stage): prev = t − T div N (ᾱ_prev = ᾱ_prev-table, or 1 / ᾱ₀ per
//!   `set_alpha_to_one` when prev < 0); σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_prev));
//!   x' = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z, where ε̂ is the *unclipped* noise estimate
//!   (m for ε; (x − √ᾱ·m)/√(1−ᾱ) for sample; √ᾱ·m + √(1−ᾱ)·x for v), folded into a and c.
//!   Noise is drawn every step when η > 0.
//! * **Euler** (one stage, model input x/√(σ²+1)): x' = x + (σ_next − σ)·(x − x̂₀)/σ, i.e.
//!   a = σ_next/σ, b = 1 − σ_next/σ (s_churn = 0, as in diffusers' default).
//! * **Heun** (two stages except the last step, whose σ_next = 0 leaves only the first):
//!   stage 1 at σ: x_mid = x + Δ·d₁ with d₁ = (x − x̂₀)/σ, Δ = σ_next − σ, saving H = x;
//!   stage 2 at σ_next on x_mid (model input x_mid/√(σ_next²+1)): d₂ = (x_mid − x̂₀')/σ_next,
//!   x' = H + Δ·(d₁ + d₂)/2 = ½·H + (½ + Δ/(2σ_next))·x_mid − Δ/(2σ_next)·x̂₀'. x̂₀ is clipped
//!   in both stages when `clip_sample`.
//! * **Euler ancestral**: σ_up = √(σ_next²(σ² − σ_next²)/σ²), σ_down = √(σ_next² − σ_up²);
//!   x' = x + (σ_down − σ)·(x − x̂₀)/σ + σ_up·z; noise every step.
//! * **DPM-Solver++(2M)** (one stage, model input x unscaled): λ = ln α − ln σ_vp, h = λ_next −
//!   λ_s. First order (the first step, `solver_order` 1, or the last step when `euler_at_final`,
//!   `lower_order_final` with fewer than 15 steps, or `final_sigmas_type="zero"`):
//!   x' = (σ_vp,next/σ_vp,s)·x + α_next·(1 − e^{−h})·x̂₀. Second order, with r = h_prev/h and
//!   H = previous x̂₀: x' = (σ_vp,next/σ_vp,s)·x + α_next(1 − e^{−h})·x̂₀ + k·(x̂₀ − H)/r with
//!   k = ½·α_next(1 − e^{−h}) (midpoint) or α_next((e^{−h} − 1)/h + 1) (heun). H ← x̂₀ every step.
//!   A second-order step right after a repeated σ (h_prev = 0, which N close to T can produce by
//!   rounding two timesteps to one; for `heun` also one across it, h = 0) divides by zero —
//!   diffusers returns NaN — so such a plan is an error.
//! * **Score-SDE VP** (Euler–Maruyama, continuous t from 1 to `sampling_eps`, Δ = −1/N — note
//!   1/N, not the spacing of the times, as in diffusers): β = β_min + t(β_max − β_min),
//!   std = √(1 − exp(−½t²(β_max−β_min) − tβ_min)); the model output m is read as ε (score =
//!   −m/std); x' = (1 − ½βΔ)·x + (βΔ/std)·m + √(β·(−Δ))·z. The network sees t·(T − 1). The last
//!   step returns the noise-free mean (score_sde's `noise_removal`), so it draws no noise.
//! * **Flow-match Euler**: x' = x + (σ_next − σ)·m (m is the velocity); with
//!   `stochastic_sampling`: x' = (1 − σ_next)·(x − σ·m) + σ_next·z. The network sees σ·T.
//! * **PNDM / PLMS** (`skip_prk_steps=True`; δ = T div N): the network sees
//!   t_{N−1}, t_{N−2}, t_{N−2}, t_{N−3}, …, t₀ (N + 1 evaluations, the second timestep twice;
//!   one for N = 1). Evaluation k combines the model outputs kept in `ets` (the newest four;
//!   the second evaluation's output is not kept) into M: M = m (k = 0), (m + m₀)/2 (k = 1,
//!   applied to the sample x₀ saved at k = 0, from t + δ to t), then (3m − e₁)/2,
//!   (23m − 16e₁ + 5e₂)/12 and (55m − 59e₁ + 37e₂ − 9e₃)/24 with eⱼ the j-th previous kept
//!   output; every other evaluation steps from t to t − δ. The update is `_get_prev_sample`
//!   (PNDM paper eq. 9) with ᾱ' = ᾱ of the target (1 or ᾱ₀ per `set_alpha_to_one` below 0):
//!   x' = √(ᾱ'/ᾱ)·x − (ᾱ' − ᾱ)·ε̂ / (ᾱ·√(1−ᾱ') + √(ᾱ(1−ᾱ)ᾱ')), ε̂ = M (epsilon) or
//!   √ᾱ·M + √(1−ᾱ)·x (v_prediction). Slot 0 keeps x₀, slots 1–3 a ring of the kept outputs, so
//!   the weights become per-slot coefficients. Step 0 holds the first two evaluations (it
//!   lands on t_{N−2}), step s ≥ 1 evaluation s + 1.

use crate::error::{Error, Result};

use super::config::{
    BetaSchedule, DpmSolverType, FinalSigmasType, PredictionType, SamplerSettings, SchedulerConfig,
    SchedulerKind, TimestepSpacing, TimestepType, VarianceType,
};
use super::noise::{NoiseSchedule, TablePrecision};
use super::numeric::{
    arange_down_to_zero, interp_at, karras_sigmas, linspace, round_half_even, sigma_to_t,
};

/// Options that are `step()` arguments in diffusers rather than config keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// DDIM's η (0 = deterministic DDIM, 1 = DDPM-like noise). Ignored by the other samplers.
    pub eta: f64,
    /// Table arithmetic; see [`TablePrecision`].
    pub precision: TablePrecision,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            eta: 0.0,
            precision: TablePrecision::DiffusersF32,
        }
    }
}

/// History slots per element: the one the 2nd-order samplers need; PNDM uses slot 0 for its
/// saved sample, 1–3 for a ring of three past model outputs and 4–5 for the Runge–Kutta
/// warm-up's middle outputs.
pub const HISTORY_SLOTS: usize = 6;

/// PNDM: the slot of the sample saved by a step's first evaluation.
const SAVED_SAMPLE: usize = 0;
/// PNDM: ring slots 1..=3 hold the kept model outputs (`ets` but its newest entry).
const ETS_SLOTS: usize = 3;
/// PNDM's Runge–Kutta warm-up: the second and third outputs of a step.
const RK_SECOND: usize = 4;
const RK_THIRD: usize = 5;

/// What a stage stores in one history slot after its update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryWrite {
    /// Leave it unchanged.
    Keep,
    /// Store this stage's (clipped) x̂₀ (DPM-Solver++ multistep).
    PredictedSample,
    /// Store x as it was before this stage's update (Heun's first stage, PLMS's first sample).
    SampleBeforeUpdate,
    /// Store this stage's (guided) model output (PLMS's `ets`).
    ModelOutput,
}

/// One model evaluation and the element-wise update that follows it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// The timestep passed to the network.
    pub model_timestep: f64,
    /// c_in: the network's input is `model_input_scale · x`.
    pub model_input_scale: f64,
    /// ᾱ of the (scaled) model input, i.e. the variance-preserving noise level the network is
    /// asked to denoise; `None` for flow matching, which is not variance preserving.
    pub model_alpha_cumprod: Option<f64>,
    /// p_x: coefficient of x in x̂₀.
    pub x0_from_sample: f64,
    /// p_m: coefficient of the model output in x̂₀.
    pub x0_from_model: f64,
    /// Clamp x̂₀ to ±range before it is used.
    pub clip_x0: Option<f64>,
    /// a: coefficient of x.
    pub coef_sample: f64,
    /// b: coefficient of (clipped) x̂₀.
    pub coef_x0: f64,
    /// c: coefficient of the raw model output.
    pub coef_model: f64,
    /// hₖ: coefficient of history slot k.
    pub coef_history: [f64; HISTORY_SLOTS],
    /// d: coefficient of the noise (0 when `draws_noise` is false).
    pub noise_std: f64,
    /// Whether diffusers draws noise at this stage (even when `noise_std` is 0).
    pub draws_noise: bool,
    /// What goes into each history slot afterwards.
    pub history: [HistoryWrite; HISTORY_SLOTS],
}

impl Stage {
    /// x̂₀ for one element (clipped when the stage clips).
    pub fn predicted_x0(&self, sample: f64, model_output: f64) -> f64 {
        let x0 = self.x0_from_sample * sample + self.x0_from_model * model_output;
        match self.clip_x0 {
            Some(range) => x0.clamp(-range, range),
            None => x0,
        }
    }

    /// The update of one element: returns the new sample and updates its history slots in
    /// place (all read before any is written). `noise` is ignored when the stage draws none.
    pub fn update(
        &self,
        sample: f64,
        model_output: f64,
        history: &mut [f64; HISTORY_SLOTS],
        noise: f64,
    ) -> f64 {
        let x0 = self.predicted_x0(sample, model_output);
        let noise_term = if self.draws_noise {
            self.noise_std * noise
        } else {
            0.0
        };
        let history_term: f64 = self
            .coef_history
            .iter()
            .zip(history.iter())
            .map(|(h, v)| h * v)
            .sum();
        let next = self.coef_sample * sample
            + self.coef_x0 * x0
            + self.coef_model * model_output
            + history_term
            + noise_term;
        for (slot, write) in history.iter_mut().zip(self.history) {
            match write {
                HistoryWrite::Keep => {}
                HistoryWrite::PredictedSample => *slot = x0,
                HistoryWrite::SampleBeforeUpdate => *slot = sample,
                HistoryWrite::ModelOutput => *slot = model_output,
            }
        }
        next
    }

    /// The history slots this stage reads or writes: 1 + the highest such slot (at least 1).
    pub fn history_slots(&self) -> usize {
        (0..HISTORY_SLOTS)
            .rev()
            .find(|&k| self.coef_history[k] != 0.0 || self.history[k] != HistoryWrite::Keep)
            .map_or(1, |k| k + 1)
    }

    fn new(model_timestep: f64) -> Self {
        Stage {
            model_timestep,
            model_input_scale: 1.0,
            model_alpha_cumprod: None,
            x0_from_sample: 0.0,
            x0_from_model: 0.0,
            clip_x0: None,
            coef_sample: 0.0,
            coef_x0: 0.0,
            coef_model: 0.0,
            coef_history: [0.0; HISTORY_SLOTS],
            noise_std: 0.0,
            draws_noise: false,
            history: [HistoryWrite::Keep; HISTORY_SLOTS],
        }
    }

    fn coefficients(&self) -> [(&'static str, f64); 14] {
        [
            ("model_timestep", self.model_timestep),
            ("model_input_scale", self.model_input_scale),
            ("x0_from_sample", self.x0_from_sample),
            ("x0_from_model", self.x0_from_model),
            ("coef_sample", self.coef_sample),
            ("coef_x0", self.coef_x0),
            ("coef_model", self.coef_model),
            ("coef_history[0]", self.coef_history[0]),
            ("coef_history[1]", self.coef_history[1]),
            ("coef_history[2]", self.coef_history[2]),
            ("coef_history[3]", self.coef_history[3]),
            ("coef_history[4]", self.coef_history[4]),
            ("coef_history[5]", self.coef_history[5]),
            ("noise_std", self.noise_std),
        ]
    }
}

/// The noise levels a step moves between, in the sampler's own parametrisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseLevels {
    /// DDPM / DDIM: training timesteps and their ᾱ (ᾱ_prev = 1 or ᾱ₀ past the end).
    Discrete {
        prev_timestep: i64,
        alpha_cumprod: f64,
        alpha_cumprod_prev: f64,
    },
    /// Euler / Heun / Euler ancestral / DPM-Solver++: σ = √((1−ᾱ)/ᾱ) before and after.
    Sigma { sigma: f64, sigma_next: f64 },
    /// Score-SDE VP: continuous time, its β(t), the marginal std and the (negative) step dt.
    Continuous {
        time: f64,
        dt: f64,
        beta: f64,
        std: f64,
    },
    /// Flow matching: x = (1 − σ)·x₀ + σ·noise.
    Flow { sigma: f64, sigma_next: f64 },
}

/// One inference step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// diffusers' `scheduler.timesteps` entry of this step.
    pub timestep: f64,
    pub levels: NoiseLevels,
    /// The model evaluations of this step, in order (two for Heun, except its last step).
    pub stages: Vec<Stage>,
}

/// A complete sampling plan for N inference steps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    pub kind: SchedulerKind,
    /// The settings the plan was built from.
    pub settings: SamplerSettings,
    pub precision: TablePrecision,
    /// `scheduler.timesteps`, one per inference step (Heun's repeats removed; see
    /// `model_timesteps`). Integers for DDPM / DDIM / DPM-Solver, floats for the others.
    pub timesteps: Vec<f64>,
    /// σ per step plus the final σ (N + 1 values) for Euler, Heun, Euler ancestral, DPM-Solver
    /// and flow matching; empty for DDPM, DDIM and score-SDE.
    pub sigmas: Vec<f64>,
    /// The timestep the network sees at each model evaluation, in order.
    pub model_timesteps: Vec<f64>,
    /// Scale of the initial noise: x_T = init_noise_sigma · z.
    pub init_noise_sigma: f64,
    pub steps: Vec<StepRecord>,
}

impl StepPlan {
    /// The plan of `kind` for `num_inference_steps` steps from a scheduler config (keys `kind`'s
    /// diffusers class does not accept are ignored; missing ones take its defaults).
    pub fn new(
        config: &SchedulerConfig,
        kind: SchedulerKind,
        num_inference_steps: usize,
        options: &PlanOptions,
    ) -> Result<Self> {
        let settings = config.settings(kind)?;
        Self::from_settings(&settings, num_inference_steps, options)
    }

    /// The plan for resolved settings.
    pub fn from_settings(
        settings: &SamplerSettings,
        num_inference_steps: usize,
        options: &PlanOptions,
    ) -> Result<Self> {
        let t = settings.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > t {
            return Err(Error::invalid(
                "sampler",
                format!(
                    "num_inference_steps must lie between 1 and num_train_timesteps ({t}); got {num_inference_steps}"
                ),
            ));
        }
        if !(options.eta >= 0.0 && options.eta.is_finite()) {
            return Err(Error::invalid(
                "sampler",
                format!("eta must be a finite number ≥ 0; got {}", options.eta),
            ));
        }
        let builder = Builder {
            settings,
            steps: num_inference_steps,
            precision: options.precision,
        };
        let plan = match settings.kind {
            SchedulerKind::Ddpm => builder.ddpm()?,
            SchedulerKind::Ddim => builder.ddim(options.eta)?,
            SchedulerKind::Euler => builder.euler()?,
            SchedulerKind::Heun => builder.heun()?,
            SchedulerKind::EulerAncestral => builder.euler_ancestral()?,
            SchedulerKind::DpmSolverMultistep => builder.dpm_solver()?,
            SchedulerKind::ScoreSdeVp => builder.score_sde_vp(),
            SchedulerKind::FlowMatchEuler => builder.flow_match(),
            SchedulerKind::Pndm => builder.pndm()?,
        };
        plan.check_finite()?;
        Ok(plan)
    }

    /// Every stage in order with the index of its step (the argument of the noise callback).
    pub fn stages(&self) -> impl Iterator<Item = (usize, &Stage)> {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(index, step)| step.stages.iter().map(move |stage| (index, stage)))
    }

    /// The number of model evaluations (N, 2N − 1 for Heun, N + 1 for PNDM with N > 1).
    pub fn num_model_evaluations(&self) -> usize {
        self.steps.iter().map(|s| s.stages.len()).sum()
    }

    /// History slots the plan's stages use (see [`HISTORY_SLOTS`]).
    pub fn history_slots(&self) -> usize {
        self.stages()
            .map(|(_, stage)| stage.history_slots())
            .max()
            .unwrap_or(1)
    }

    /// PNDM image-to-image: the stages diffusers runs when the pipeline starts at inference step
    /// `first_step` (`StableDiffusionImg2ImgPipeline` slices `scheduler.timesteps` — the
    /// N + 1 model timesteps — at `first_step` and the scheduler's PLMS counter restarts at 0),
    /// each with its step index (the first executed step holds the first two evaluations).
    /// For the other kinds, and at step 0, the plan's own stages from `first_step`.
    pub fn stages_from(&self, first_step: usize) -> Result<Vec<(usize, Stage)>> {
        if self.kind != SchedulerKind::Pndm || first_step == 0 {
            return Ok(self
                .stages()
                .filter(|(step, _)| *step >= first_step)
                .map(|(step, stage)| (step, *stage))
                .collect());
        }
        let builder = Builder {
            settings: &self.settings,
            steps: self.steps.len(),
            precision: self.precision,
        };
        if !self.settings.skip_prk_steps {
            return Err(Error::invalid(
                "sampler",
                "image-to-image with the pndm sampler needs skip_prk_steps true (diffusers' \
                 Runge–Kutta warm-up does not follow a shortened timestep list)",
            ));
        }
        let schedule = builder.schedule()?;
        let evaluations = self.model_timesteps.get(first_step..).unwrap_or(&[]);
        let stages = builder.plms_stages(&schedule, evaluations, 0, &mut Vec::new())?;
        Ok(stages
            .into_iter()
            .enumerate()
            .map(|(k, (stage, _))| (first_step + k.saturating_sub(1), stage))
            .collect())
    }

    fn check_finite(&self) -> Result<()> {
        for (index, stage) in self.stages() {
            if let Some((name, value)) = stage
                .coefficients()
                .into_iter()
                .find(|(_, v)| !v.is_finite())
            {
                let hint = if self.settings.rescale_betas_zero_snr {
                    " (rescale_betas_zero_snr makes the last ᾱ zero; use prediction_type \"v_prediction\")"
                } else {
                    ""
                };
                return Err(Error::invalid(
                    "sampler",
                    format!(
                        "the {} plan has a non-finite {name} = {value} at step {index} (timestep {}){hint}",
                        self.kind, self.steps[index].timestep
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// One PNDM model evaluation: its stage and the noise levels it steps between.
type Evaluation = (Stage, NoiseLevels);

/// A per-slot array with `first` in slot 0 and `rest` elsewhere (the one-slot samplers).
fn slot_zero<T: Copy>(first: T, rest: T) -> [T; HISTORY_SLOTS] {
    let mut slots = [rest; HISTORY_SLOTS];
    slots[0] = first;
    slots
}

/// x̂₀ coefficients (p_x, p_m) on the VP sample with ᾱ.
fn x0_discrete(prediction: PredictionType, alpha_cumprod: f64) -> (f64, f64) {
    let sqrt_alpha = alpha_cumprod.sqrt();
    let sqrt_one_minus = (1.0 - alpha_cumprod).sqrt();
    match prediction {
        PredictionType::Epsilon => (1.0 / sqrt_alpha, -sqrt_one_minus / sqrt_alpha),
        PredictionType::Sample => (0.0, 1.0),
        PredictionType::VPrediction => (sqrt_alpha, -sqrt_one_minus),
    }
}

/// x̂₀ coefficients (p_x, p_m) on the σ-space sample x = x₀ + σ·ε.
fn x0_sigma(prediction: PredictionType, sigma: f64) -> (f64, f64) {
    match prediction {
        PredictionType::Epsilon => (1.0, -sigma),
        PredictionType::Sample => (0.0, 1.0),
        PredictionType::VPrediction => {
            let norm = sigma * sigma + 1.0;
            (1.0 / norm, -sigma / norm.sqrt())
        }
    }
}

struct Builder<'a> {
    settings: &'a SamplerSettings,
    steps: usize,
    precision: TablePrecision,
}

impl Builder<'_> {
    fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::for_settings(self.settings, self.precision)
    }

    fn clip(&self) -> Option<f64> {
        self.settings
            .clip_sample
            .then_some(self.settings.clip_sample_range)
    }

    fn plan(
        &self,
        timesteps: Vec<f64>,
        sigmas: Vec<f64>,
        init_noise_sigma: f64,
        steps: Vec<StepRecord>,
    ) -> StepPlan {
        let model_timesteps = steps
            .iter()
            .flat_map(|s| s.stages.iter().map(|stage| stage.model_timestep))
            .collect();
        StepPlan {
            kind: self.settings.kind,
            settings: self.settings.clone(),
            precision: self.precision,
            timesteps,
            sigmas,
            model_timesteps,
            init_noise_sigma,
            steps,
        }
    }

    /// `numpy.arange(T, 0, -T/N).round() - 1`, first N entries (numpy sometimes yields N + 1
    /// entries, the last ≈ 0; diffusers then appends a timestep −1, which is not copied).
    fn trailing(&self, start: usize) -> Vec<f64> {
        let t = self.settings.num_train_timesteps as f64;
        arange_down_to_zero(start as f64, t / self.steps as f64)
            .into_iter()
            .take(self.steps)
            .map(|v| round_half_even(v) - 1.0)
            .collect()
    }

    fn leading(&self) -> Vec<f64> {
        let ratio = self.settings.num_train_timesteps / self.steps;
        let offset = self.settings.steps_offset;
        (0..self.steps)
            .rev()
            // Saturating: a huge steps_offset becomes a timestep check_discrete refuses,
            // naming steps_offset, rather than an overflow.
            .map(|i| (i * ratio).saturating_add(offset) as f64)
            .collect()
    }

    /// DDPM / DDIM `set_timesteps`: integers.
    fn integer_timesteps(&self) -> Vec<f64> {
        let t = self.settings.num_train_timesteps;
        match self.settings.timestep_spacing {
            TimestepSpacing::Linspace => linspace(0.0, (t - 1) as f64, self.steps)
                .into_iter()
                .rev()
                .map(round_half_even)
                .collect(),
            TimestepSpacing::Leading => self.leading(),
            TimestepSpacing::Trailing => self.trailing(t),
        }
    }

    /// Euler / Heun / Euler ancestral `set_timesteps`: float32 floats (linspace unrounded).
    fn float_timesteps(&self) -> Vec<f64> {
        let t = self.settings.num_train_timesteps;
        match self.settings.timestep_spacing {
            TimestepSpacing::Linspace => linspace(0.0, (t - 1) as f64, self.steps)
                .into_iter()
                .rev()
                .map(|v| self.precision.store(v))
                .collect(),
            TimestepSpacing::Leading => self.leading(),
            TimestepSpacing::Trailing => self.trailing(t),
        }
    }

    fn check_discrete(&self, timesteps: &[f64]) -> Result<()> {
        let t = self.settings.num_train_timesteps;
        if let Some(bad) = timesteps.iter().find(|&&v| v < 0.0 || v >= t as f64) {
            return Err(Error::invalid(
                "sampler",
                format!(
                    "{} with {} steps, timestep_spacing {} and steps_offset {} gives timestep {bad}, \
                     outside the {t} training timesteps",
                    self.settings.kind,
                    self.steps,
                    self.settings.timestep_spacing,
                    self.settings.steps_offset
                ),
            ));
        }
        Ok(())
    }

    /// The log of a σ table as diffusers computes it (`np.log` of a float32 array is float32).
    fn log_sigmas(&self, table: &[f64]) -> Vec<f64> {
        table.iter().map(|s| self.precision.store(s.ln())).collect()
    }

    fn init_noise_sigma(&self, sigmas: &[f64]) -> f64 {
        let max = sigmas.iter().copied().fold(0.0_f64, f64::max);
        match self.settings.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => {
                let p = self.precision;
                p.store(p.store(p.store(max * max) + 1.0).sqrt())
            }
        }
    }

    fn ddpm(&self) -> Result<StepPlan> {
        let schedule = self.schedule()?;
        let timesteps = self.integer_timesteps();
        self.check_discrete(&timesteps)?;
        let prediction = self.settings.prediction_type;
        let mut steps = Vec::with_capacity(self.steps);
        for (i, &t) in timesteps.iter().enumerate() {
            let prev = timesteps.get(i + 1).map_or(-1, |&p| p as i64);
            let alpha_cumprod = schedule.alphas_cumprod[t as usize];
            let alpha_cumprod_prev = schedule.alpha_cumprod(prev).unwrap_or(1.0);
            let beta_prod = 1.0 - alpha_cumprod;
            let beta_prod_prev = 1.0 - alpha_cumprod_prev;
            let current_alpha = alpha_cumprod / alpha_cumprod_prev;
            let current_beta = 1.0 - current_alpha;
            let (x0_from_sample, x0_from_model) = x0_discrete(prediction, alpha_cumprod);
            let variance = match self.settings.variance_type {
                VarianceType::FixedLarge => current_beta,
                _ => (beta_prod_prev / beta_prod * current_beta).max(1e-20),
            };
            let draws_noise = t > 0.0;
            let stage = Stage {
                model_alpha_cumprod: Some(alpha_cumprod),
                x0_from_sample,
                x0_from_model,
                clip_x0: self.clip(),
                coef_sample: current_alpha.sqrt() * beta_prod_prev / beta_prod,
                coef_x0: alpha_cumprod_prev.sqrt() * current_beta / beta_prod,
                noise_std: if draws_noise { variance.sqrt() } else { 0.0 },
                draws_noise,
                ..Stage::new(t)
            };
            steps.push(StepRecord {
                timestep: t,
                levels: NoiseLevels::Discrete {
                    prev_timestep: prev,
                    alpha_cumprod,
                    alpha_cumprod_prev,
                },
                stages: vec![stage],
            });
        }
        Ok(self.plan(timesteps, Vec::new(), 1.0, steps))
    }

    fn ddim(&self, eta: f64) -> Result<StepPlan> {
        let schedule = self.schedule()?;
        let timesteps = self.integer_timesteps();
        self.check_discrete(&timesteps)?;
        let final_alpha_cumprod = if self.settings.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        let stride = (self.settings.num_train_timesteps / self.steps) as i64;
        let prediction = self.settings.prediction_type;
        let mut steps = Vec::with_capacity(self.steps);
        for &t in &timesteps {
            let prev = t as i64 - stride;
            let alpha_cumprod = schedule.alphas_cumprod[t as usize];
            let alpha_cumprod_prev = schedule.alpha_cumprod(prev).unwrap_or(final_alpha_cumprod);
            let beta_prod = 1.0 - alpha_cumprod;
            let (x0_from_sample, x0_from_model) = x0_discrete(prediction, alpha_cumprod);
            // ε̂ = eps_from_sample·x + eps_from_model·m, from the unclipped prediction.
            let (eps_from_sample, eps_from_model) = match prediction {
                PredictionType::Epsilon => (0.0, 1.0),
                PredictionType::Sample => (
                    1.0 / beta_prod.sqrt(),
                    -alpha_cumprod.sqrt() / beta_prod.sqrt(),
                ),
                PredictionType::VPrediction => (beta_prod.sqrt(), alpha_cumprod.sqrt()),
            };
            let variance =
                (1.0 - alpha_cumprod_prev) / beta_prod * (1.0 - alpha_cumprod / alpha_cumprod_prev);
            let std_dev = eta * variance.sqrt();
            let direction = (1.0 - alpha_cumprod_prev - std_dev * std_dev)
                .max(0.0)
                .sqrt();
            let stage = Stage {
                model_alpha_cumprod: Some(alpha_cumprod),
                x0_from_sample,
                x0_from_model,
                clip_x0: self.clip(),
                coef_sample: direction * eps_from_sample,
                coef_x0: alpha_cumprod_prev.sqrt(),
                coef_model: direction * eps_from_model,
                noise_std: std_dev,
                draws_noise: eta > 0.0,
                ..Stage::new(t)
            };
            steps.push(StepRecord {
                timestep: t,
                levels: NoiseLevels::Discrete {
                    prev_timestep: prev,
                    alpha_cumprod,
                    alpha_cumprod_prev,
                },
                stages: vec![stage],
            });
        }
        Ok(self.plan(timesteps, Vec::new(), 1.0, steps))
    }

    /// Timesteps and σ (with the final σ appended) of the σ-space samplers.
    fn sigma_schedule(
        &self,
        final_sigma: FinalSigmasType,
        sigma_range: (Option<f64>, Option<f64>),
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let schedule = self.schedule()?;
        let table = schedule.sigmas();
        let mut timesteps = self.float_timesteps();
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp_at(t, &table)).collect();
        if self.settings.use_karras_sigmas {
            let sigma_min = sigma_range.0.or(sigmas.last().copied()).unwrap_or(0.0);
            let sigma_max = sigma_range.1.or(sigmas.first().copied()).unwrap_or(0.0);
            sigmas = karras_sigmas(sigma_min, sigma_max, self.steps);
            let log_sigmas = self.log_sigmas(&table);
            let float32 = self.precision == TablePrecision::DiffusersF32;
            timesteps = sigmas
                .iter()
                .map(|&s| self.precision.store(sigma_to_t(s, &log_sigmas, float32)))
                .collect();
        }
        sigmas.push(match final_sigma {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => table[0],
        });
        let sigmas = sigmas
            .into_iter()
            .map(|s| self.precision.store(s))
            .collect();
        Ok((timesteps, sigmas))
    }

    fn euler(&self) -> Result<StepPlan> {
        let s = self.settings;
        let (mut timesteps, sigmas) =
            self.sigma_schedule(s.final_sigmas_type, (s.sigma_min, s.sigma_max))?;
        if s.timestep_type == TimestepType::Continuous
            && s.prediction_type == PredictionType::VPrediction
        {
            let p = self.precision;
            timesteps = sigmas[..self.steps]
                .iter()
                .map(|sigma| p.store(0.25 * p.store(sigma.ln())))
                .collect();
        }
        let steps = (0..self.steps)
            .map(|i| {
                let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
                let (x0_from_sample, x0_from_model) = x0_sigma(s.prediction_type, sigma);
                let stage = Stage {
                    model_input_scale: 1.0 / (sigma * sigma + 1.0).sqrt(),
                    model_alpha_cumprod: Some(1.0 / (sigma * sigma + 1.0)),
                    x0_from_sample,
                    x0_from_model,
                    coef_sample: 1.0 + (sigma_next - sigma) / sigma,
                    coef_x0: -(sigma_next - sigma) / sigma,
                    ..Stage::new(timesteps[i])
                };
                StepRecord {
                    timestep: timesteps[i],
                    levels: NoiseLevels::Sigma { sigma, sigma_next },
                    stages: vec![stage],
                }
            })
            .collect();
        let init = self.init_noise_sigma(&sigmas);
        Ok(self.plan(timesteps, sigmas, init, steps))
    }

    fn heun(&self) -> Result<StepPlan> {
        let s = self.settings;
        let (timesteps, sigmas) = self.sigma_schedule(FinalSigmasType::Zero, (None, None))?;
        let clip = self.clip();
        let steps = (0..self.steps)
            .map(|i| {
                let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
                let dt = sigma_next - sigma;
                let (x0_from_sample, x0_from_model) = x0_sigma(s.prediction_type, sigma);
                let first = Stage {
                    model_input_scale: 1.0 / (sigma * sigma + 1.0).sqrt(),
                    model_alpha_cumprod: Some(1.0 / (sigma * sigma + 1.0)),
                    x0_from_sample,
                    x0_from_model,
                    clip_x0: clip,
                    coef_sample: 1.0 + dt / sigma,
                    coef_x0: -dt / sigma,
                    history: slot_zero(HistoryWrite::SampleBeforeUpdate, HistoryWrite::Keep),
                    ..Stage::new(timesteps[i])
                };
                let mut stages = vec![first];
                if i + 1 < self.steps {
                    let (x0_from_sample, x0_from_model) = x0_sigma(s.prediction_type, sigma_next);
                    let half_ratio = dt / (2.0 * sigma_next);
                    stages.push(Stage {
                        model_input_scale: 1.0 / (sigma_next * sigma_next + 1.0).sqrt(),
                        model_alpha_cumprod: Some(1.0 / (sigma_next * sigma_next + 1.0)),
                        x0_from_sample,
                        x0_from_model,
                        clip_x0: clip,
                        coef_sample: 0.5 + half_ratio,
                        coef_x0: -half_ratio,
                        coef_history: slot_zero(0.5, 0.0),
                        ..Stage::new(timesteps[i + 1])
                    });
                }
                StepRecord {
                    timestep: timesteps[i],
                    levels: NoiseLevels::Sigma { sigma, sigma_next },
                    stages,
                }
            })
            .collect();
        let init = self.init_noise_sigma(&sigmas);
        Ok(self.plan(timesteps, sigmas, init, steps))
    }

    fn euler_ancestral(&self) -> Result<StepPlan> {
        let s = self.settings;
        let (timesteps, sigmas) = self.sigma_schedule(FinalSigmasType::Zero, (None, None))?;
        let steps = (0..self.steps)
            .map(|i| {
                let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
                let sigma_up =
                    (sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next)
                        / (sigma * sigma))
                        .max(0.0)
                        .sqrt();
                let sigma_down = (sigma_next * sigma_next - sigma_up * sigma_up)
                    .max(0.0)
                    .sqrt();
                let dt = sigma_down - sigma;
                let (x0_from_sample, x0_from_model) = x0_sigma(s.prediction_type, sigma);
                let stage = Stage {
                    model_input_scale: 1.0 / (sigma * sigma + 1.0).sqrt(),
                    model_alpha_cumprod: Some(1.0 / (sigma * sigma + 1.0)),
                    x0_from_sample,
                    x0_from_model,
                    coef_sample: 1.0 + dt / sigma,
                    coef_x0: -dt / sigma,
                    noise_std: sigma_up,
                    draws_noise: true,
                    ..Stage::new(timesteps[i])
                };
                StepRecord {
                    timestep: timesteps[i],
                    levels: NoiseLevels::Sigma { sigma, sigma_next },
                    stages: vec![stage],
                }
            })
            .collect();
        let init = self.init_noise_sigma(&sigmas);
        Ok(self.plan(timesteps, sigmas, init, steps))
    }

    fn dpm_solver(&self) -> Result<StepPlan> {
        let s = self.settings;
        let p = self.precision;
        let schedule = self.schedule()?;
        let table = schedule.sigmas();
        let total = s.num_train_timesteps;
        // lambda_min_clipped: drop the noisiest timesteps whose λ = log α − log σ is below it.
        let last_timestep = if s.lambda_min_clipped == f64::NEG_INFINITY {
            total
        } else {
            let clipped = schedule
                .alphas_cumprod
                .iter()
                .rev()
                .map(|&a| {
                    let log_alpha = p.store(p.store(a.sqrt()).ln());
                    let log_sigma = p.store(p.store(p.store(1.0 - a).sqrt()).ln());
                    p.store(log_alpha - log_sigma)
                })
                .take_while(|&lambda| lambda < s.lambda_min_clipped)
                .count();
            total - clipped
        };
        if last_timestep == 0 {
            return Err(Error::invalid(
                "sampler",
                format!(
                    "lambda_min_clipped = {} removes every timestep",
                    s.lambda_min_clipped
                ),
            ));
        }
        let mut timesteps: Vec<f64> = match s.timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut values = linspace(0.0, (last_timestep - 1) as f64, self.steps + 1);
                values.remove(0);
                values.into_iter().rev().map(round_half_even).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = last_timestep / (self.steps + 1);
                (1..=self.steps)
                    .rev()
                    .map(|i| (i * ratio).saturating_add(s.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => self.trailing(last_timestep),
        };
        let mut sigmas: Vec<f64>;
        if s.use_karras_sigmas {
            sigmas = karras_sigmas(table[0], table[total - 1], self.steps);
            let log_sigmas = self.log_sigmas(&table);
            let float32 = p == TablePrecision::DiffusersF32;
            timesteps = sigmas
                .iter()
                .map(|&sigma| {
                    let t = sigma_to_t(sigma, &log_sigmas, float32);
                    // Rounded unless cosine, then cast to int64 (truncation).
                    let t = if s.beta_schedule == BetaSchedule::SquaredcosCapV2 {
                        t
                    } else {
                        round_half_even(t)
                    };
                    t.trunc()
                })
                .collect();
        } else {
            sigmas = timesteps.iter().map(|&t| interp_at(t, &table)).collect();
        }
        let count = timesteps.len();
        sigmas.push(match s.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => table[0],
        });
        let sigmas: Vec<f64> = sigmas.into_iter().map(|v| p.store(v)).collect();
        let alpha_sigma = |sigma: f64| {
            let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
            (alpha, sigma * alpha)
        };
        let lambda = |sigma: f64| {
            let (alpha, sigma_vp) = alpha_sigma(sigma);
            alpha.ln() - sigma_vp.ln()
        };
        let mut steps = Vec::with_capacity(count);
        for i in 0..count {
            let (sigma_s, sigma_t) = (sigmas[i], sigmas[i + 1]);
            let (alpha_s, sigma_vp_s) = alpha_sigma(sigma_s);
            let (alpha_t, sigma_vp_t) = alpha_sigma(sigma_t);
            let (x0_from_sample, x0_from_model) = match s.prediction_type {
                PredictionType::Epsilon => (1.0 / alpha_s, -sigma_vp_s / alpha_s),
                PredictionType::Sample => (0.0, 1.0),
                PredictionType::VPrediction => (alpha_s, -sigma_vp_s),
            };
            let is_last = i + 1 == count;
            let lower_order_final = is_last
                && (s.euler_at_final
                    || (s.lower_order_final && count < 15)
                    || s.final_sigmas_type == FinalSigmasType::Zero);
            let first_order = s.solver_order == 1 || i == 0 || lower_order_final || sigma_t == 0.0;
            let (coef_sample, coef_x0, coef_history) = if sigma_t == 0.0 {
                // λ_t = ∞: e^{−h} = 0 and the step lands on α_t·x̂₀ = x̂₀.
                (0.0, alpha_t, 0.0)
            } else {
                let h = lambda(sigma_t) - lambda(sigma_s);
                // α_t·(1 − e^{−h}) = −α_t·(e^{−h} − 1)
                let data_coef = -alpha_t * (-h).exp_m1();
                let ratio = sigma_vp_t / sigma_vp_s;
                if first_order {
                    (ratio, data_coef, 0.0)
                } else {
                    let h_prev = lambda(sigma_s) - lambda(sigmas[i - 1]);
                    if h_prev == 0.0 || (h == 0.0 && s.solver_type == DpmSolverType::Heun) {
                        // A repeated σ (N close to T rounds two timesteps to one): the 2nd-order
                        // term divides by a zero λ step (diffusers returns NaN there). Midpoint
                        // across it (h = 0) is fine: its correction is 0/∞.
                        return Err(Error::invalid(
                            "sampler",
                            format!(
                                "num_inference_steps = {count} repeats timestep {} in the dpm++2m plan \
                                 (timestep_spacing {}), and a second-order step across a repeated σ \
                                 divides by zero; use fewer steps or solver_order 1",
                                timesteps[i],
                                s.timestep_spacing
                            ),
                        ));
                    }
                    let r = h_prev / h;
                    let correction = match s.solver_type {
                        DpmSolverType::Midpoint => 0.5 * data_coef,
                        DpmSolverType::Heun => alpha_t * ((-h).exp_m1() / h + 1.0),
                    };
                    (ratio, data_coef + correction / r, -correction / r)
                }
            };
            let stage = Stage {
                model_alpha_cumprod: Some(alpha_s * alpha_s),
                x0_from_sample,
                x0_from_model,
                coef_sample,
                coef_x0,
                coef_history: slot_zero(coef_history, 0.0),
                history: slot_zero(HistoryWrite::PredictedSample, HistoryWrite::Keep),
                ..Stage::new(timesteps[i])
            };
            steps.push(StepRecord {
                timestep: timesteps[i],
                levels: NoiseLevels::Sigma {
                    sigma: sigma_s,
                    sigma_next: sigma_t,
                },
                stages: vec![stage],
            });
        }
        Ok(self.plan(timesteps, sigmas, 1.0, steps))
    }

    fn score_sde_vp(&self) -> StepPlan {
        let s = self.settings;
        let n = self.steps;
        let times: Vec<f64> = linspace(1.0, s.sampling_eps, n)
            .into_iter()
            .map(|t| self.precision.store(t))
            .collect();
        let dt = -1.0 / n as f64;
        let model_scale = (s.num_train_timesteps - 1) as f64;
        let steps = times
            .iter()
            .enumerate()
            .map(|(i, &time)| {
                let log_mean_coeff =
                    -0.25 * time * time * (s.beta_max - s.beta_min) - 0.5 * time * s.beta_min;
                let std = (-(2.0 * log_mean_coeff).exp_m1()).sqrt();
                let beta = s.beta_min + time * (s.beta_max - s.beta_min);
                let last = i + 1 == n;
                let stage = Stage {
                    model_alpha_cumprod: Some((2.0 * log_mean_coeff).exp()),
                    coef_sample: 1.0 - 0.5 * beta * dt,
                    coef_model: beta * dt / std,
                    noise_std: if last { 0.0 } else { (beta * -dt).sqrt() },
                    draws_noise: !last,
                    ..Stage::new(time * model_scale)
                };
                StepRecord {
                    timestep: time,
                    levels: NoiseLevels::Continuous {
                        time,
                        dt,
                        beta,
                        std,
                    },
                    stages: vec![stage],
                }
            })
            .collect();
        self.plan(times, Vec::new(), 1.0, steps)
    }

    fn flow_match(&self) -> StepPlan {
        let s = self.settings;
        let p = self.precision;
        let total = s.num_train_timesteps as f64;
        // __init__: σ over the training grid, shifted in float32 tensors.
        let shifted_f32 = |sigma: f64| match p {
            TablePrecision::F64 => s.shift * sigma / (1.0 + (s.shift - 1.0) * sigma),
            TablePrecision::DiffusersF32 => {
                let (shift, sigma) = (s.shift as f32, sigma as f32);
                f64::from(shift * sigma / (1.0 + (s.shift - 1.0) as f32 * sigma))
            }
        };
        let sigma_max = shifted_f32(1.0);
        let sigma_min = shifted_f32(p.store(1.0 / total));
        // set_timesteps: numpy float64.
        let mut sigmas: Vec<f64> = linspace(sigma_max * total, sigma_min * total, self.steps)
            .into_iter()
            .map(|t| t / total)
            .map(|sigma| s.shift * sigma / (1.0 + (s.shift - 1.0) * sigma))
            .collect();
        if let Some(terminal) = s.shift_terminal {
            let last_one_minus = 1.0 - sigmas.last().copied().unwrap_or(0.0);
            let scale = last_one_minus / (1.0 - terminal);
            for sigma in sigmas.iter_mut() {
                *sigma = 1.0 - (1.0 - *sigma) / scale;
            }
        }
        if s.use_karras_sigmas {
            let (low, high) = (sigmas.last().copied(), sigmas.first().copied());
            sigmas = karras_sigmas(low.unwrap_or(0.0), high.unwrap_or(1.0), self.steps);
        }
        let mut sigmas: Vec<f64> = sigmas.into_iter().map(|v| p.store(v)).collect();
        let final_sigma = if s.invert_sigmas {
            for sigma in sigmas.iter_mut() {
                *sigma = p.store(1.0 - *sigma);
            }
            1.0
        } else {
            0.0
        };
        let timesteps: Vec<f64> = sigmas.iter().map(|sigma| p.store(sigma * total)).collect();
        sigmas.push(final_sigma);
        let steps = (0..self.steps)
            .map(|i| {
                let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
                let stage = if s.stochastic_sampling {
                    Stage {
                        x0_from_sample: 1.0,
                        x0_from_model: -sigma,
                        coef_x0: 1.0 - sigma_next,
                        noise_std: sigma_next,
                        draws_noise: true,
                        ..Stage::new(timesteps[i])
                    }
                } else {
                    Stage {
                        coef_sample: 1.0,
                        coef_model: sigma_next - sigma,
                        ..Stage::new(timesteps[i])
                    }
                };
                StepRecord {
                    timestep: timesteps[i],
                    levels: NoiseLevels::Flow { sigma, sigma_next },
                    stages: vec![stage],
                }
            })
            .collect();
        self.plan(timesteps, sigmas, 1.0, steps)
    }

    /// PNDMScheduler: the Runge–Kutta warm-up unless `skip_prk_steps`, then PLMS (see the
    /// module docs).
    fn pndm(&self) -> Result<StepPlan> {
        let schedule = self.schedule()?;
        let timesteps = self.integer_timesteps();
        self.check_discrete(&timesteps)?;
        let (stages, steps_of) = if self.settings.skip_prk_steps {
            // scheduler.timesteps: t_{N−1}, t_{N−2}, t_{N−2}, t_{N−3}, …, t₀ (t₀ for N = 1).
            let mut evaluations = timesteps.clone();
            if timesteps.len() > 1 {
                evaluations.insert(1, timesteps[1]);
            }
            let stages = self.plms_stages(&schedule, &evaluations, 0, &mut Vec::new())?;
            // Step 0 holds the first two evaluations, step s ≥ 1 evaluation s + 1.
            let steps_of: Vec<usize> = (0..stages.len()).map(|k| k.saturating_sub(1)).collect();
            (stages, steps_of)
        } else {
            let (mut stages, mut kept) = self.prk_stages(&schedule, &timesteps)?;
            // PLMS over t_{N−4}, …, t₀ with the three outputs the warm-up kept.
            let plms = self.plms_stages(&schedule, &timesteps[3..], stages.len(), &mut kept)?;
            stages.extend(plms);
            // Steps 0–2 hold four Runge–Kutta evaluations each, step s ≥ 3 evaluation s + 9.
            let steps_of: Vec<usize> = (0..stages.len())
                .map(|k| if k < 12 { k / 4 } else { k - 9 })
                .collect();
            (stages, steps_of)
        };
        let mut steps: Vec<StepRecord> = Vec::with_capacity(self.steps);
        for ((stage, levels), step) in stages.into_iter().zip(steps_of) {
            match steps.get_mut(step) {
                // Later evaluations of a step complete it: the step lands where the last goes.
                Some(record) => {
                    if let (
                        NoiseLevels::Discrete {
                            prev_timestep,
                            alpha_cumprod_prev,
                            ..
                        },
                        NoiseLevels::Discrete {
                            prev_timestep: to,
                            alpha_cumprod_prev: alpha_to,
                            ..
                        },
                    ) = (&mut record.levels, levels)
                    {
                        *prev_timestep = to;
                        *alpha_cumprod_prev = alpha_to;
                    }
                    record.stages.push(stage);
                }
                None => steps.push(StepRecord {
                    timestep: timesteps[step],
                    levels,
                    stages: vec![stage],
                }),
            }
        }
        Ok(self.plan(timesteps, Vec::new(), 1.0, steps))
    }

    /// ᾱ of training timestep `t`; an error naming the plan when `t` is past the table.
    fn pndm_alpha(&self, schedule: &NoiseSchedule, t: i64) -> Result<f64> {
        schedule.alpha_cumprod(t).ok_or_else(|| {
            let s = self.settings;
            Error::invalid(
                "sampler",
                format!(
                    "the pndm plan for {} steps (timestep_spacing {}, steps_offset {}) steps from \
                     timestep {t}, outside the {} training timesteps; use fewer steps",
                    self.steps, s.timestep_spacing, s.steps_offset, s.num_train_timesteps
                ),
            )
        })
    }

    /// One `PNDMScheduler._get_prev_sample` call from training timestep `from` to `to` on the
    /// network's output at `model_t`: the stage with x' = a·x + b·M where M is the combined
    /// model output (`coef_sample = a`, `coef_model = b`; the callers distribute them), and its
    /// noise levels.
    fn pndm_update(
        &self,
        schedule: &NoiseSchedule,
        model_t: f64,
        from: i64,
        to: i64,
    ) -> Result<Evaluation> {
        let s = self.settings;
        let alpha = self.pndm_alpha(schedule, from)?;
        let final_alpha_cumprod = if s.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        let alpha_prev = schedule.alpha_cumprod(to).unwrap_or(final_alpha_cumprod);
        let model_alpha = self.pndm_alpha(schedule, model_t as i64)?;
        // x' = sample_coeff·x − k·ε̂ (PNDM eq. 9).
        let sample_coeff = (alpha_prev / alpha).sqrt();
        let k = (alpha_prev - alpha)
            / (alpha * (1.0 - alpha_prev).sqrt() + (alpha * (1.0 - alpha) * alpha_prev).sqrt());
        // ε̂ = M, or √ᾱ·M + √(1−ᾱ)·x for v_prediction.
        let (a, b) = match s.prediction_type {
            PredictionType::VPrediction => {
                (sample_coeff - k * (1.0 - alpha).sqrt(), -k * alpha.sqrt())
            }
            _ => (sample_coeff, -k),
        };
        let (x0_from_sample, x0_from_model) = x0_discrete(s.prediction_type, model_alpha);
        let stage = Stage {
            model_alpha_cumprod: Some(model_alpha),
            x0_from_sample,
            x0_from_model,
            coef_sample: a,
            coef_model: b,
            ..Stage::new(model_t)
        };
        let levels = NoiseLevels::Discrete {
            prev_timestep: to,
            alpha_cumprod: alpha,
            alpha_cumprod_prev: alpha_prev,
        };
        Ok((stage, levels))
    }

    /// The 12 evaluations of `PNDMScheduler.step_prk` (`skip_prk_steps=False`): three
    /// Runge–Kutta steps t_{N−1} → t_{N−2} → t_{N−3} → t_{N−4}, each from the sample saved at
    /// its first evaluation with the outputs m₁ … m₄ at t, t − h, t − h and t − δ (h = δ div 2),
    /// the last combining (m₁ + 2m₂ + 2m₃ + m₄)/6. Returns the stages and the ring slots of the
    /// three kept outputs (each step's m₁, diffusers' `ets`).
    fn prk_stages(
        &self,
        schedule: &NoiseSchedule,
        timesteps: &[f64],
    ) -> Result<(Vec<Evaluation>, Vec<usize>)> {
        let s = self.settings;
        let n = self.steps;
        if n < 4 {
            return Err(Error::invalid(
                "sampler",
                format!(
                    "the pndm sampler's Runge–Kutta warm-up (skip_prk_steps false) needs at least 4 \
                     steps, got {n} (diffusers fails there too); use more steps or set \
                     skip_prk_steps true"
                ),
            ));
        }
        let half = (s.num_train_timesteps / n / 2) as i64;
        // prk_timesteps: for each of the three steps t → t', [t, t' + h, t' + h, t'].
        let mut prk = Vec::with_capacity(12);
        for pair in timesteps[..4].windows(2) {
            let (t, next) = (pair[0] as i64, pair[1] as i64);
            prk.extend([t, next + half, next + half, next]);
        }
        let mut kept = Vec::with_capacity(3);
        let mut out = Vec::with_capacity(12);
        for (counter, &t) in prk.iter().enumerate() {
            let to = if counter % 2 == 1 { t } else { t - half };
            let from = prk[counter / 4 * 4];
            let (mut stage, levels) = self.pndm_update(schedule, t as f64, from, to)?;
            let (a, b) = (stage.coef_sample, stage.coef_model);
            // Every evaluation steps the sample saved by the step's first one.
            stage.coef_sample = 0.0;
            stage.coef_history[SAVED_SAMPLE] = a;
            match counter % 4 {
                0 => {
                    stage.history[SAVED_SAMPLE] = HistoryWrite::SampleBeforeUpdate;
                    let slot = kept.len() + 1;
                    stage.history[slot] = HistoryWrite::ModelOutput;
                    kept.push(slot);
                    // From the current sample: it is the one being saved.
                    stage.coef_sample = a;
                    stage.coef_history[SAVED_SAMPLE] = 0.0;
                }
                1 => stage.history[RK_SECOND] = HistoryWrite::ModelOutput,
                2 => stage.history[RK_THIRD] = HistoryWrite::ModelOutput,
                _ => {
                    stage.coef_model = b / 6.0;
                    if let Some(&first) = kept.last() {
                        stage.coef_history[first] = b / 6.0;
                    }
                    stage.coef_history[RK_SECOND] = b / 3.0;
                    stage.coef_history[RK_THIRD] = b / 3.0;
                }
            }
            out.push((stage, levels));
        }
        Ok((out, kept))
    }

    /// `PNDMScheduler.step_plms` for the model timesteps `evaluations`, its counter starting at
    /// `counter_start` with `kept` (oldest first) the ring slots of the outputs `ets` holds
    /// (after the Runge–Kutta warm-up: three; otherwise none). Each stage with its noise levels.
    fn plms_stages(
        &self,
        schedule: &NoiseSchedule,
        evaluations: &[f64],
        counter_start: usize,
        kept: &mut Vec<usize>,
    ) -> Result<Vec<Evaluation>> {
        let delta = (self.settings.num_train_timesteps / self.steps) as i64;
        let mut out = Vec::with_capacity(evaluations.len());
        for (index, &model_t) in evaluations.iter().enumerate() {
            let counter = counter_start + index;
            let t = model_t as i64;
            // The second call re-does the first step, from t + δ to t.
            let (from, to) = if counter == 1 {
                (t + delta, t)
            } else {
                (t, t - delta)
            };
            let (mut stage, levels) = self.pndm_update(schedule, model_t, from, to)?;
            let (a, b) = (stage.coef_sample, stage.coef_model);
            // Weights of (m, e₁, e₂, e₃): the current output and the kept ones, newest first.
            let weights: &[f64] = match (counter, kept.len()) {
                (0, _) => &[1.0],
                (1, _) => &[0.5, 0.5],
                (_, 1) => &[1.5, -0.5],
                (_, 2) => &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
                _ => &[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
            };
            stage.coef_model = b * weights[0];
            for (w, &slot) in weights[1..].iter().zip(kept.iter().rev()) {
                stage.coef_history[slot] += b * w;
            }
            if counter == 1 {
                // ... on the sample the first call saved, not the current one.
                stage.coef_sample = 0.0;
                stage.coef_history[SAVED_SAMPLE] += a;
            }
            if counter == 0 {
                stage.history[SAVED_SAMPLE] = HistoryWrite::SampleBeforeUpdate;
            }
            if counter != 1 {
                // ets keeps the newest four: the oldest kept output's slot takes this one
                // (slots are read before they are written).
                let slot = if kept.len() == ETS_SLOTS {
                    kept.remove(0)
                } else {
                    kept.len() + 1
                };
                stage.history[slot] = HistoryWrite::ModelOutput;
                kept.push(slot);
            }
            out.push((stage, levels));
        }
        Ok(out)
    }
}
