//! Noise schedules and sampler step plans on the CPU in f64 (follows diffusers 0.42
//! `schedulers/`: `scheduling_ddpm.py`, `scheduling_ddim.py`, `scheduling_euler_discrete.py`,
//! `scheduling_heun_discrete.py`, `scheduling_euler_ancestral_discrete.py`,
//! `scheduling_dpmsolver_multistep.py`, `scheduling_flow_match_euler_discrete.py`, `scheduling_pndm.py`,
//! `deprecated/scheduling_sde_vp.py`).
//!
//! * [`SchedulerConfig`]: a `scheduler_config.json`, raw; [`SchedulerConfig::settings`] resolves
//!   what one [`SchedulerKind`] reads, with its class defaults (diffusers' `from_config`).
//! * [`NoiseSchedule`]: β, α, ᾱ and the DDPM posterior.
//! * [`StepPlan`]: timesteps, σ and per-stage update coefficients for N steps; the update every
//!   sampler reduces to is documented in [`plan`].
//! * [`sample_reference`]: the CPU sampling loop the GPU path is tested against.

pub mod config;
pub mod noise;
pub mod numeric;
pub mod plan;
pub mod reference;

pub use config::{
    BetaSchedule, DpmAlgorithmType, DpmSolverType, FinalSigmasType, InterpolationType,
    PredictionType, SamplerSettings, SchedulerConfig, SchedulerKind, TimestepSpacing, TimestepType,
    VarianceType,
};
pub use noise::{posterior_between, NoiseSchedule, Posterior, TablePrecision};
pub use plan::{
    HistoryWrite, NoiseLevels, PlanOptions, Stage, StepPlan, StepRecord, HISTORY_SLOTS,
};
pub use reference::sample_reference;
