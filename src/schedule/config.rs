//! `SchedulerConfig`: a diffusers `scheduler_config.json` (follows diffusers 0.42
//! `configuration_utils.py` `ConfigMixin.from_config` / `extract_init_dict`, and the `__init__`
//! signatures and defaults of `schedulers/scheduling_{ddpm,ddim,euler_discrete,heun_discrete,
//! euler_ancestral_discrete,dpmsolver_multistep,flow_match_euler_discrete,pndm}.py` and
//! `schedulers/deprecated/scheduling_sde_vp.py`).
//!
//! The file keeps the raw values it holds ([`SchedulerConfig`]); a sampler reads the keys its
//! diffusers class accepts and takes that class's default for the rest ([`SamplerSettings`]).
//! That is what `OtherScheduler.from_config(saved_config)` does in diffusers when one class is
//! swapped for another: every key the new class accepts is passed on, the others are dropped.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The most training timesteps a scheduler config may declare: the schedule's f64 tables (a
/// few per timestep) then stay under a hundred MiB.
pub const MAX_TRAIN_TIMESTEPS: usize = 1 << 20;

/// The nine samplers. Each follows one diffusers scheduler class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDPMScheduler`: ancestral sampling of Ho et al. 2020.
    Ddpm,
    /// `DDIMScheduler`: Song et al. 2021, with `eta` controlling the noise.
    Ddim,
    /// `EulerDiscreteScheduler`: Euler's method on the probability-flow ODE in σ-space.
    Euler,
    /// `HeunDiscreteScheduler`: Heun's 2nd-order method in σ-space (two model calls per step).
    Heun,
    /// `EulerAncestralDiscreteScheduler`: Euler step to σ_down plus fresh noise σ_up.
    EulerAncestral,
    /// `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"` (DPM-Solver++(2M)).
    DpmSolverMultistep,
    /// `ScoreSdeVpScheduler`: Euler–Maruyama on the reverse VP SDE (continuous time).
    ScoreSdeVp,
    /// `FlowMatchEulerDiscreteScheduler`: Euler's method on a rectified-flow velocity.
    FlowMatchEuler,
    /// `PNDMScheduler` with `skip_prk_steps=True`: PLMS, the linear multistep method of
    /// Liu et al. 2022 on the model outputs (what Stable Diffusion 1.x/2.x folders name).
    Pndm,
}

impl SchedulerKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [SchedulerKind; 9] = [
        SchedulerKind::Ddpm,
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::Heun,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::ScoreSdeVp,
        SchedulerKind::FlowMatchEuler,
        SchedulerKind::Pndm,
    ];

    /// The `--sampler` name.
    pub fn cli_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddpm => "ddpm",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
            SchedulerKind::Heun => "heun",
            SchedulerKind::EulerAncestral => "euler-ancestral",
            SchedulerKind::DpmSolverMultistep => "dpm++2m",
            SchedulerKind::ScoreSdeVp => "sde-vp",
            SchedulerKind::FlowMatchEuler => "flow-euler",
            SchedulerKind::Pndm => "pndm",
        }
    }

    /// The diffusers class this kind follows (`_class_name` in scheduler_config.json).
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddpm => "DDPMScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::Heun => "HeunDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            SchedulerKind::ScoreSdeVp => "ScoreSdeVpScheduler",
            SchedulerKind::FlowMatchEuler => "FlowMatchEulerDiscreteScheduler",
            SchedulerKind::Pndm => "PNDMScheduler",
        }
    }

    /// Parses a `--sampler` name; the error lists the valid names.
    pub fn from_cli_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.cli_name() == name)
            .ok_or_else(|| {
                Error::invalid(
                    "sampler",
                    format!(
                        "unknown sampler {name:?}; supported samplers: {}",
                        Self::ALL.map(|k| k.cli_name()).join(", ")
                    ),
                )
            })
    }

    /// Parses a diffusers class name; the error lists the supported classes.
    pub fn from_class_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.class_name() == name)
            .ok_or_else(|| {
                Error::invalid(
                    "scheduler class",
                    format!(
                        "unsupported scheduler class {name:?}; supported classes: {}",
                        Self::ALL.map(|k| k.class_name()).join(", ")
                    ),
                )
            })
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// Declares a config enum whose JSON form is one of a fixed set of strings, plus the diffusers
/// values this crate recognises but does not implement (named in the error message).
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        $name:ident, key $key:literal, what $what:literal,
        { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
        unsupported [ $( $other:literal ),* ]
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant with its diffusers spelling.
            pub const VALUES: &'static [($name, &'static str)] = &[ $( ($name::$variant, $text) ),+ ];

            /// The diffusers spelling of this value.
            pub fn diffusers_name(self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }

            /// Parses the diffusers spelling; the message names the value and lists the supported ones.
            pub fn parse(text: &str) -> std::result::Result<Self, String> {
                if let Some((value, _)) = Self::VALUES.iter().find(|(_, t)| *t == text) {
                    return Ok(*value);
                }
                let supported = Self::VALUES
                    .iter()
                    .map(|(_, t)| format!("{t:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let unsupported: &[&str] = &[ $( $other ),* ];
                if unsupported.contains(&text) {
                    Err(format!(
                        "{text:?} is a diffusers {} that wgpu-diffusion does not implement; supported: {supported}",
                        $what
                    ))
                } else {
                    Err(format!("{text:?} is not a known {}; supported: {supported}", $what))
                }
            }

            /// The JSON key holding this setting.
            pub const KEY: &'static str = $key;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.diffusers_name())
            }
        }
    };
}

config_enum!(
    /// `beta_schedule`: how the training betas are spaced.
    BetaSchedule, key "beta_schedule", what "beta schedule",
    {
        /// `torch.linspace(beta_start, beta_end, T)`.
        Linear = "linear",
        /// `torch.linspace(√beta_start, √beta_end, T)²` (Stable Diffusion).
        ScaledLinear = "scaled_linear",
        /// Nichol & Dhariwal's cosine ᾱ, discretised by `betas_for_alpha_bar` (max β 0.999).
        SquaredcosCapV2 = "squaredcos_cap_v2",
    }
    unsupported ["sigmoid", "laplace", "exp"]
);

config_enum!(
    /// `prediction_type`: what the network outputs.
    PredictionType, key "prediction_type", what "prediction type",
    {
        /// The noise ε.
        Epsilon = "epsilon",
        /// The clean sample x₀.
        Sample = "sample",
        /// v = √ᾱ·ε − √(1−ᾱ)·x₀ (Salimans & Ho 2022).
        VPrediction = "v_prediction",
    }
    unsupported ["flow_prediction", "original_sample"]
);

config_enum!(
    /// `timestep_spacing`: how N inference timesteps are picked among the T training ones.
    TimestepSpacing, key "timestep_spacing", what "timestep spacing",
    {
        /// `(0..N)·(T div N)` reversed, plus `steps_offset`.
        Leading = "leading",
        /// `round(T, T − T/N, …) − 1`.
        Trailing = "trailing",
        /// `round(linspace(0, T − 1, N))` reversed.
        Linspace = "linspace",
    }
    unsupported []
);

config_enum!(
    /// `variance_type` of `DDPMScheduler` (`DPMSolverMultistepScheduler` only checks for the
    /// learned types).
    VarianceType, key "variance_type", what "variance type",
    {
        /// Posterior variance β̃_t = (1−ᾱ_prev)/(1−ᾱ_t)·β_t (clamped at 1e-20).
        FixedSmall = "fixed_small",
        /// exp(½·log β̃_t) used as the standard deviation: the same noise as `fixed_small`.
        FixedSmallLog = "fixed_small_log",
        /// β_t.
        FixedLarge = "fixed_large",
        /// Broken in diffusers (takes √log β_t); rejected when a sampler reads it.
        FixedLargeLog = "fixed_large_log",
        /// The model predicts the variance (extra output channels); rejected when read.
        Learned = "learned",
        /// The model interpolates log β̃ and log β (extra output channels); rejected when read.
        LearnedRange = "learned_range",
    }
    unsupported []
);

config_enum!(
    /// `interpolation_type` of `EulerDiscreteScheduler`.
    InterpolationType, key "interpolation_type", what "interpolation type",
    {
        /// `np.interp` of the σ table at the (fractional) timesteps.
        Linear = "linear",
        /// Rejected when read (diffusers builds N+2 sigmas for N timesteps with it).
        LogLinear = "log_linear",
    }
    unsupported []
);

config_enum!(
    /// `timestep_type` of `EulerDiscreteScheduler`.
    TimestepType, key "timestep_type", what "timestep type",
    {
        /// The network sees the (fractional) training timestep.
        Discrete = "discrete",
        /// With `prediction_type="v_prediction"` the network sees ¼·ln σ.
        Continuous = "continuous",
    }
    unsupported []
);

config_enum!(
    /// `final_sigmas_type`: the σ after the last step.
    FinalSigmasType, key "final_sigmas_type", what "final sigmas type",
    {
        /// σ = 0: the last step lands on the predicted x₀.
        Zero = "zero",
        /// σ = σ_table[0] = √((1−ᾱ₀)/ᾱ₀).
        SigmaMin = "sigma_min",
    }
    unsupported []
);

config_enum!(
    /// `algorithm_type` of `DPMSolverMultistepScheduler`.
    DpmAlgorithmType, key "algorithm_type", what "DPM-Solver algorithm type",
    {
        /// DPM-Solver++ (data prediction); `"deis"` is read as this, as diffusers does.
        DpmSolverPlusPlus = "dpmsolver++",
        /// DPM-Solver (noise prediction, deprecated in diffusers); rejected when read.
        DpmSolver = "dpmsolver",
        /// SDE-DPM-Solver++; rejected when read.
        SdeDpmSolverPlusPlus = "sde-dpmsolver++",
        /// SDE-DPM-Solver; rejected when read.
        SdeDpmSolver = "sde-dpmsolver",
    }
    unsupported []
);

config_enum!(
    /// `solver_type` of `DPMSolverMultistepScheduler` (2nd-order correction term).
    DpmSolverType, key "solver_type", what "DPM-Solver solver type",
    {
        /// D1 coefficient ½·α_t(1 − e^{−h}).
        Midpoint = "midpoint",
        /// D1 coefficient α_t((e^{−h} − 1)/h + 1).
        Heun = "heun",
    }
    unsupported []
);

/// Where a configuration came from, for error messages.
fn config_error(source: &Path, key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        path: source.to_path_buf(),
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The raw contents of a diffusers `scheduler_config.json`: every key this crate knows, as
/// written in the file (`None` when absent or `null`). Unknown keys are ignored, as diffusers
/// ignores keys a class does not accept. Enumerated strings are validated on load; whether a
/// value is supported by a particular sampler is checked by [`SchedulerConfig::settings`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchedulerConfig {
    /// The file (or label) the config came from; used in error messages.
    pub source: PathBuf,
    /// `_class_name`.
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<PredictionType>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub variance_type: Option<VarianceType>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
    /// `PNDMScheduler`: PLMS only (true) or the Runge–Kutta warm-up first (false, its default).
    pub skip_prk_steps: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub interpolation_type: Option<InterpolationType>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_type: Option<TimestepType>,
    pub final_sigmas_type: Option<FinalSigmasType>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<DpmAlgorithmType>,
    pub solver_type: Option<DpmSolverType>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub lambda_min_clipped: Option<f64>,
    pub use_dynamic_shifting: Option<bool>,
    pub shift: Option<f64>,
    pub shift_terminal: Option<f64>,
    pub invert_sigmas: Option<bool>,
    pub stochastic_sampling: Option<bool>,
    pub beta_min: Option<f64>,
    pub beta_max: Option<f64>,
    pub sampling_eps: Option<f64>,
}

/// Replaces the bare `NaN`, `Infinity` and `-Infinity` tokens Python's json module writes (for
/// example `"lambda_min_clipped": -Infinity`) by strings, so serde_json accepts the file.
fn quote_non_finite_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|token| rest.starts_with(token));
        match token {
            Some(token) => {
                out.push('"');
                out.push_str(token);
                out.push('"');
                rest = &rest[token.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Reads typed values out of the JSON object, naming key and value on failure.
struct Reader<'a> {
    object: &'a Map<String, Value>,
    source: &'a Path,
}

impl Reader<'_> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, value: &Value, expected: &str) -> Error {
        let mut shown = value.to_string();
        if shown.len() > 80 {
            shown.truncate(80);
            shown.push('…');
        }
        config_error(
            self.source,
            key,
            format!("bad value {shown}: expected {expected}"),
        )
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let number = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
            Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
            _ => None,
        };
        number
            .map(Some)
            .ok_or_else(|| self.bad(key, value, "a number"))
    }

    fn finite(&self, key: &str) -> Result<Option<f64>> {
        let value = self.number(key)?;
        match value {
            Some(v) if !v.is_finite() => Err(config_error(
                self.source,
                key,
                format!("bad value {v}: expected a finite number"),
            )),
            _ => Ok(value),
        }
    }

    /// A non-negative integer; integral floats such as `1000.0` are accepted.
    fn integer(&self, key: &str) -> Result<Option<usize>> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let integer = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        integer
            .and_then(|i| usize::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| self.bad(key, value, "a non-negative integer"))
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        value
            .as_bool()
            .map(Some)
            .ok_or_else(|| self.bad(key, value, "true or false"))
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        value
            .as_str()
            .map(Some)
            .ok_or_else(|| self.bad(key, value, "a string"))
    }

    fn choice<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        match self.string(key)? {
            None => Ok(None),
            Some(text) => parse(text)
                .map(Some)
                .map_err(|message| config_error(self.source, key, message)),
        }
    }

    fn numbers(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let list = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|item| item.as_f64().filter(|f| f.is_finite()))
                .collect::<Option<Vec<f64>>>()
        });
        list.map(Some)
            .ok_or_else(|| self.bad(key, value, "an array of finite numbers"))
    }
}

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingFile {
                    path: path.to_path_buf(),
                    what: "scheduler_config.json (the diffusers scheduler config)".to_owned(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let text = String::from_utf8(bytes)
            .map_err(|e| config_error(path, "(file)", format!("not UTF-8 text: {e}")))?;
        Self::from_json_str(&text, path)
    }

    /// Parses scheduler_config.json text; `source` names it in error messages. Python's
    /// `NaN` / `Infinity` / `-Infinity` tokens are accepted.
    pub fn from_json_str(text: &str, source: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(&quote_non_finite_tokens(text))
            .map_err(|e| config_error(source, "(JSON syntax)", format!("invalid JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(config_error(
                source,
                "(top level)",
                "expected a JSON object of scheduler settings",
            ));
        };
        let r = Reader { object, source };
        let config = SchedulerConfig {
            source: source.to_path_buf(),
            class_name: r.string("_class_name")?.map(str::to_owned),
            num_train_timesteps: r.integer("num_train_timesteps")?,
            beta_start: r.finite("beta_start")?,
            beta_end: r.finite("beta_end")?,
            beta_schedule: r.choice(BetaSchedule::KEY, BetaSchedule::parse)?,
            trained_betas: r.numbers("trained_betas")?,
            prediction_type: r.choice(PredictionType::KEY, PredictionType::parse)?,
            clip_sample: r.boolean("clip_sample")?,
            clip_sample_range: r.finite("clip_sample_range")?,
            thresholding: r.boolean("thresholding")?,
            variance_type: r.choice(VarianceType::KEY, VarianceType::parse)?,
            timestep_spacing: r.choice(TimestepSpacing::KEY, TimestepSpacing::parse)?,
            steps_offset: r.integer("steps_offset")?,
            set_alpha_to_one: r.boolean("set_alpha_to_one")?,
            skip_prk_steps: r.boolean("skip_prk_steps")?,
            rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr")?,
            interpolation_type: r.choice(InterpolationType::KEY, InterpolationType::parse)?,
            use_karras_sigmas: r.boolean("use_karras_sigmas")?,
            use_exponential_sigmas: r.boolean("use_exponential_sigmas")?,
            use_beta_sigmas: r.boolean("use_beta_sigmas")?,
            use_lu_lambdas: r.boolean("use_lu_lambdas")?,
            use_flow_sigmas: r.boolean("use_flow_sigmas")?,
            sigma_min: r.finite("sigma_min")?,
            sigma_max: r.finite("sigma_max")?,
            timestep_type: r.choice(TimestepType::KEY, TimestepType::parse)?,
            final_sigmas_type: r.choice(FinalSigmasType::KEY, FinalSigmasType::parse)?,
            solver_order: r.integer("solver_order")?,
            // diffusers maps the retired "deis" to "dpmsolver++" (register_to_config).
            algorithm_type: r.choice(DpmAlgorithmType::KEY, |text| match text {
                "deis" => Ok(DpmAlgorithmType::DpmSolverPlusPlus),
                other => DpmAlgorithmType::parse(other),
            })?,
            // ... and "logrho" / "bh1" / "bh2" solver types to "midpoint".
            solver_type: r.choice(DpmSolverType::KEY, |text| match text {
                "logrho" | "bh1" | "bh2" => Ok(DpmSolverType::Midpoint),
                other => DpmSolverType::parse(other),
            })?,
            lower_order_final: r.boolean("lower_order_final")?,
            euler_at_final: r.boolean("euler_at_final")?,
            lambda_min_clipped: r.number("lambda_min_clipped")?,
            use_dynamic_shifting: r.boolean("use_dynamic_shifting")?,
            shift: r.finite("shift")?,
            shift_terminal: r.finite("shift_terminal")?,
            invert_sigmas: r.boolean("invert_sigmas")?,
            stochastic_sampling: r.boolean("stochastic_sampling")?,
            beta_min: r.finite("beta_min")?,
            beta_max: r.finite("beta_max")?,
            sampling_eps: r.finite("sampling_eps")?,
        };
        Ok(config)
    }

    /// The sampler `_class_name` names; an error when the file names none or an unsupported one.
    pub fn class_kind(&self) -> Result<SchedulerKind> {
        let supported = SchedulerKind::ALL.map(|k| k.class_name()).join(", ");
        match &self.class_name {
            None => Err(config_error(
                &self.source,
                "_class_name",
                format!("missing; choose a sampler explicitly or name one of: {supported}"),
            )),
            Some(name) => SchedulerKind::from_class_name(name).map_err(|_| {
                config_error(
                    &self.source,
                    "_class_name",
                    format!("{name:?} is not a supported scheduler class; supported: {supported}"),
                )
            }),
        }
    }

    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        config_error(&self.source, key, message)
    }

    /// Rejects `key = true` for a feature `kind` does not implement.
    fn reject_flag(&self, flag: Option<bool>, key: &str, kind: SchedulerKind) -> Result<()> {
        if flag == Some(true) {
            return Err(self.err(
                key,
                format!("true is not supported by the {kind} sampler of wgpu-diffusion (supported: false)"),
            ));
        }
        Ok(())
    }

    /// The settings `kind` reads from this config, with the defaults of its diffusers class for
    /// the keys the file lacks. Values the class supports in diffusers but this crate does not
    /// implement are errors naming the key and value and listing what is supported.
    pub fn settings(&self, kind: SchedulerKind) -> Result<SamplerSettings> {
        use SchedulerKind as K;
        let mut s = SamplerSettings::defaults(kind);
        // Keys every class with a beta table accepts.
        let has_betas = !matches!(kind, K::ScoreSdeVp | K::FlowMatchEuler);
        if let Some(t) = self.num_train_timesteps {
            s.num_train_timesteps = t;
        }
        if has_betas {
            s.beta_start = self.beta_start.unwrap_or(s.beta_start);
            s.beta_end = self.beta_end.unwrap_or(s.beta_end);
            s.beta_schedule = self.beta_schedule.unwrap_or(s.beta_schedule);
            s.trained_betas.clone_from(&self.trained_betas);
            s.timestep_spacing = self.timestep_spacing.unwrap_or(s.timestep_spacing);
            s.steps_offset = self.steps_offset.unwrap_or(s.steps_offset);
            s.prediction_type = self.prediction_type.unwrap_or(s.prediction_type);
        }
        if matches!(
            kind,
            K::Ddpm | K::Ddim | K::Euler | K::EulerAncestral | K::DpmSolverMultistep
        ) {
            s.rescale_betas_zero_snr = self.rescale_betas_zero_snr.unwrap_or(false);
        }
        if matches!(kind, K::Ddpm | K::Ddim | K::Heun) {
            s.clip_sample = self.clip_sample.unwrap_or(s.clip_sample);
            s.clip_sample_range = self.clip_sample_range.unwrap_or(s.clip_sample_range);
        }
        if matches!(kind, K::Ddpm | K::Ddim | K::DpmSolverMultistep) {
            self.reject_flag(self.thresholding, "thresholding", kind)?;
        }
        if matches!(
            kind,
            K::Euler | K::Heun | K::DpmSolverMultistep | K::FlowMatchEuler
        ) {
            s.use_karras_sigmas = self.use_karras_sigmas.unwrap_or(false);
            self.reject_flag(self.use_exponential_sigmas, "use_exponential_sigmas", kind)?;
            self.reject_flag(self.use_beta_sigmas, "use_beta_sigmas", kind)?;
        }
        match kind {
            K::Ddpm => {
                let variance = self.variance_type.unwrap_or(VarianceType::FixedSmall);
                if !matches!(
                    variance,
                    VarianceType::FixedSmall
                        | VarianceType::FixedSmallLog
                        | VarianceType::FixedLarge
                ) {
                    return Err(self.err(
                        VarianceType::KEY,
                        format!(
                            "{variance:?} is not supported by the ddpm sampler (learned variances need the \
                             model's extra variance channels; \"fixed_large_log\" is broken in diffusers); \
                             supported: \"fixed_small\", \"fixed_small_log\", \"fixed_large\"",
                            variance = variance.diffusers_name()
                        ),
                    ));
                }
                s.variance_type = variance;
            }
            K::Ddim => {
                s.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(true);
            }
            K::Euler => {
                if let Some(InterpolationType::LogLinear) = self.interpolation_type {
                    return Err(self.err(
                        InterpolationType::KEY,
                        "\"log_linear\" is not supported by the euler sampler; supported: \"linear\"",
                    ));
                }
                s.sigma_min = self.sigma_min;
                s.sigma_max = self.sigma_max;
                s.timestep_type = self.timestep_type.unwrap_or(TimestepType::Discrete);
                s.final_sigmas_type = self.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
            }
            K::Heun => {}
            K::Pndm => {
                // PNDMScheduler's own default is false (diffusers' `__init__`).
                s.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(false);
                // Its default is the Runge–Kutta warm-up; SD configs set true (PLMS only).
                s.skip_prk_steps = self.skip_prk_steps.unwrap_or(false);
                if s.prediction_type == PredictionType::Sample {
                    return Err(self.err(
                        PredictionType::KEY,
                        "\"sample\" is not supported by the pndm sampler (PNDMScheduler raises \
                         ValueError); supported: \"epsilon\", \"v_prediction\"",
                    ));
                }
            }
            K::EulerAncestral => {
                if s.prediction_type == PredictionType::Sample {
                    return Err(self.err(
                        PredictionType::KEY,
                        "\"sample\" is not supported by the euler-ancestral sampler (diffusers raises \
                         NotImplementedError); supported: \"epsilon\", \"v_prediction\"",
                    ));
                }
            }
            K::DpmSolverMultistep => {
                s.solver_order = self.solver_order.unwrap_or(2);
                if !(1..=2).contains(&s.solver_order) {
                    return Err(self.err(
                        "solver_order",
                        format!(
                            "{} is not supported by the dpm++2m sampler; supported: 1, 2",
                            s.solver_order
                        ),
                    ));
                }
                let algorithm = self
                    .algorithm_type
                    .unwrap_or(DpmAlgorithmType::DpmSolverPlusPlus);
                if algorithm != DpmAlgorithmType::DpmSolverPlusPlus {
                    return Err(self.err(
                        DpmAlgorithmType::KEY,
                        format!(
                            "{:?} is not supported by the dpm++2m sampler; supported: \"dpmsolver++\"",
                            algorithm.diffusers_name()
                        ),
                    ));
                }
                s.solver_type = self.solver_type.unwrap_or(DpmSolverType::Midpoint);
                s.lower_order_final = self.lower_order_final.unwrap_or(true);
                s.euler_at_final = self.euler_at_final.unwrap_or(false);
                s.final_sigmas_type = self.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
                s.lambda_min_clipped = self.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
                if s.lambda_min_clipped.is_nan() {
                    return Err(self.err("lambda_min_clipped", "bad value NaN: expected a number"));
                }
                self.reject_flag(self.use_lu_lambdas, "use_lu_lambdas", kind)?;
                self.reject_flag(self.use_flow_sigmas, "use_flow_sigmas", kind)?;
                self.reject_flag(self.use_dynamic_shifting, "use_dynamic_shifting", kind)?;
                if let Some(v @ (VarianceType::Learned | VarianceType::LearnedRange)) =
                    self.variance_type
                {
                    return Err(self.err(
                        VarianceType::KEY,
                        format!(
                            "{:?} (a model with extra variance channels) is not supported by the dpm++2m \
                             sampler; supported: null or any fixed variance type",
                            v.diffusers_name()
                        ),
                    ));
                }
            }
            K::ScoreSdeVp => {
                s.beta_min = self.beta_min.unwrap_or(s.beta_min);
                s.beta_max = self.beta_max.unwrap_or(s.beta_max);
                s.sampling_eps = self.sampling_eps.unwrap_or(s.sampling_eps);
                // ScoreSdeVpScheduler has no prediction_type: it reads the model output as ε.
                // A config that says otherwise would be sampled wrongly, so it is refused.
                if let Some(p) = self
                    .prediction_type
                    .filter(|p| *p != PredictionType::Epsilon)
                {
                    return Err(self.err(
                        PredictionType::KEY,
                        format!(
                            "{:?}: the sde-vp sampler reads the model output as the noise ε; \
                             supported: \"epsilon\"",
                            p.diffusers_name()
                        ),
                    ));
                }
            }
            K::FlowMatchEuler => {
                s.shift = self.shift.unwrap_or(1.0);
                s.shift_terminal = self.shift_terminal.filter(|v| *v != 0.0);
                s.invert_sigmas = self.invert_sigmas.unwrap_or(false);
                s.stochastic_sampling = self.stochastic_sampling.unwrap_or(false);
                self.reject_flag(self.use_dynamic_shifting, "use_dynamic_shifting", kind)?;
            }
        }
        s.validate(&self.source)?;
        Ok(s)
    }
}

/// Everything one sampler reads from a scheduler config, resolved with its class's defaults.
/// Fields the class does not have hold the neutral value that reproduces its behaviour (for
/// example `clip_sample = false` for Euler, which never clips).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSettings {
    pub kind: SchedulerKind,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas; replace `beta_schedule` when present.
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    /// Whether the predicted x₀ is clamped to `±clip_sample_range` (DDPM, DDIM, Heun).
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// DDPM's noise variance.
    pub variance_type: VarianceType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// DDIM and PNDM: whether ᾱ after the last step is 1 (else ᾱ₀).
    pub set_alpha_to_one: bool,
    /// PNDM: PLMS only (true), or its Runge–Kutta warm-up first (false).
    pub skip_prk_steps: bool,
    /// Rescale betas to zero terminal SNR (Lin et al. 2023, Algorithm 1).
    pub rescale_betas_zero_snr: bool,
    /// Karras et al. 2022 σ spacing (ρ = 7).
    pub use_karras_sigmas: bool,
    /// Euler's Karras range overrides.
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_type: TimestepType,
    pub final_sigmas_type: FinalSigmasType,
    pub solver_order: usize,
    pub solver_type: DpmSolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub lambda_min_clipped: f64,
    /// Flow matching: σ ↦ shift·σ / (1 + (shift − 1)·σ).
    pub shift: f64,
    pub shift_terminal: Option<f64>,
    pub invert_sigmas: bool,
    pub stochastic_sampling: bool,
    /// Score-SDE VP: β(t) = beta_min + t·(beta_max − beta_min), t ∈ [sampling_eps, 1].
    pub beta_min: f64,
    pub beta_max: f64,
    pub sampling_eps: f64,
}

impl SamplerSettings {
    /// The defaults of `kind`'s diffusers class (`__init__` signature).
    pub fn defaults(kind: SchedulerKind) -> Self {
        use SchedulerKind as K;
        let (beta_start, beta_end) = match kind {
            K::Heun => (0.00085, 0.012),
            _ => (0.0001, 0.02),
        };
        let timestep_spacing = match kind {
            K::Ddpm | K::Ddim | K::Pndm => TimestepSpacing::Leading,
            _ => TimestepSpacing::Linspace,
        };
        SamplerSettings {
            kind,
            num_train_timesteps: if kind == K::ScoreSdeVp { 2000 } else { 1000 },
            beta_start,
            beta_end,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            clip_sample: matches!(kind, K::Ddpm | K::Ddim),
            clip_sample_range: 1.0,
            variance_type: VarianceType::FixedSmall,
            timestep_spacing,
            steps_offset: 0,
            set_alpha_to_one: kind != K::Pndm,
            // PNDMScheduler's default is false; every Stable Diffusion config sets true.
            skip_prk_steps: false,
            rescale_betas_zero_snr: false,
            use_karras_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_type: TimestepType::Discrete,
            final_sigmas_type: FinalSigmasType::Zero,
            solver_order: 2,
            solver_type: DpmSolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            lambda_min_clipped: f64::NEG_INFINITY,
            shift: 1.0,
            shift_terminal: None,
            invert_sigmas: false,
            stochastic_sampling: false,
            beta_min: 0.1,
            beta_max: 20.0,
            sampling_eps: 1e-3,
        }
    }

    /// Range checks; errors name the key and value.
    pub fn validate(&self, source: &Path) -> Result<()> {
        let bad = |key: &str, message: String| Err(config_error(source, key, message));
        let t = self.num_train_timesteps;
        if t < 2 {
            return bad(
                "num_train_timesteps",
                format!("{t} is too small: at least 2 training timesteps are needed"),
            );
        }
        // The schedule's tables hold one f64 per training timestep: bound them before any is
        // allocated (1e12 asked for terabytes and aborted the process).
        if t > MAX_TRAIN_TIMESTEPS {
            return bad(
                "num_train_timesteps",
                format!(
                    "{t} is too large: at most {MAX_TRAIN_TIMESTEPS} training timesteps are \
                     supported (diffusers models use 1000)"
                ),
            );
        }
        if let Some(betas) = &self.trained_betas {
            if betas.len() != t {
                return bad(
                    "trained_betas",
                    format!(
                        "has {} entries but num_train_timesteps is {t}; they must match",
                        betas.len()
                    ),
                );
            }
            // A beta of 1 leaves no signal (ᾱ = 0): every sampler would divide by zero.
            if let Some(b) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
                return bad(
                    "trained_betas",
                    format!("holds {b}; every beta must lie in [0, 1)"),
                );
            }
        }
        for (key, value) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if !(value > 0.0 && value < 1.0) {
                return bad(key, format!("{value} must lie in (0, 1)"));
            }
        }
        if !(self.clip_sample_range > 0.0) {
            return bad(
                "clip_sample_range",
                format!("{} must be positive", self.clip_sample_range),
            );
        }
        if !(self.shift > 0.0) {
            return bad("shift", format!("{} must be positive", self.shift));
        }
        if let Some(terminal) = self.shift_terminal {
            if !(terminal > 0.0 && terminal < 1.0) {
                return bad("shift_terminal", format!("{terminal} must lie in (0, 1)"));
            }
        }
        for (key, value) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(v) = value.filter(|v| !(*v > 0.0)) {
                return bad(key, format!("{v} must be positive"));
            }
        }
        if !(self.sampling_eps > 0.0 && self.sampling_eps <= 1.0) {
            return bad(
                "sampling_eps",
                format!("{} must lie in (0, 1]", self.sampling_eps),
            );
        }
        if !(self.beta_min > 0.0 && self.beta_max > self.beta_min) {
            return bad(
                "beta_max",
                format!(
                    "beta_min = {} and beta_max = {} must satisfy 0 < beta_min < beta_max",
                    self.beta_min, self.beta_max
                ),
            );
        }
        Ok(())
    }
}
