//! The CPU f64 schedule code (`src/schedule/`) against diffusers 0.42.1, from the fixtures of
//! `scripts/make_schedule_fixtures.py` in `tests/fixtures/schedules/`:
//!
//! * `tables.json`: betas, ᾱ (and the DDPM posterior of the linear case) of every table case;
//! * `timesteps.json`: `scheduler.timesteps`, `scheduler.sigmas` and `init_noise_sigma` of every
//!   class / spacing / N case;
//! * `loops.json`: 10-step loops with the toy model `m = 0.3·x + 0.1·sin(t/100)` and the noise
//!   diffusers drew, including a scheduler_config of one class sampled by another
//!   (`Target.from_config(saved_json)`).
//!
//! Every quantity is exported twice: `*_f64` is diffusers' own code run in float64 and is compared
//! with [`TablePrecision::F64`]; `*_f32` is diffusers as shipped and is compared with
//! [`TablePrecision::DiffusersF32`], which rounds the tables where diffusers stores float32 but
//! keeps the per-step arithmetic in f64 (so the f32 loops differ by diffusers' own float32
//! rounding, measured at up to ~7e-5 of max|x| in the fixtures' README).
//!
//! Each test walks all the cases of its file and collects every failure, naming the case, the
//! quantity, the index, the expected and the found value; it prints the largest error it measured
//! per category (run with `--nocapture` to see them).
//!
//! The last group checks that bad scheduler configs and plan arguments are errors naming the key.

// `!(err <= tol)` is deliberate: a NaN error must fail.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::path::Path;

use serde_json::Value;
use wgpu_diffusion::schedule::{
    sample_reference, NoiseSchedule, PlanOptions, SchedulerConfig, SchedulerKind, StepPlan,
    TablePrecision,
};
use wgpu_diffusion::Error;

// ---------------------------------------------------------------------------------------------
// Tolerances
// ---------------------------------------------------------------------------------------------

/// Tables (β, ᾱ, posterior) against diffusers in float64: the same formulas in the same order, so
/// only the last bits of `cos` and the like may differ (measured ≤ 6e-16, except the zero-SNR
/// betas 1 − ᾱ_t/ᾱ_{t−1} ≈ 1e-3, where an ulp of the ratio is 2e-13 of β: measured 4.8e-13).
const TABLE_F64_REL: f64 = 1e-12;
/// Betas against float32 diffusers under `DiffusersF32`. `torch.linspace` differs from the
/// rounded exact value by one float32 ulp in ~30% of the entries (torch's SIMD kernel; see
/// `noise.rs`), ≤ 1.2e-7 relative.
const TABLE_F32_REL: f64 = 1e-6;
/// ᾱ against float32 diffusers under `DiffusersF32`: the running product carries the betas'
/// ulps.
const TABLE_F32_ALPHAS_CUMPROD_REL: f64 = 1e-6;
/// The same after zero-SNR rescaling. Besides linspace, torch's float32 `sqrt` is not correctly
/// rounded on the CPU (one ulp off in ~20% of the entries; `DiffusersF32` rounds correctly), and
/// near t = T the rescaling divides that ulp of √ᾱ_t by the cancelling √ᾱ_t − √ᾱ_{T−1}: measured
/// 3.7e-6 at t = 991, and the same recipe with torch's own linspace and sqrt reproduces diffusers
/// bit for bit.
const TABLE_F32_RESCALED_ALPHAS_CUMPROD_REL: f64 = 5e-6;
/// Betas rebuilt by zero-SNR rescaling, float32: |error| in units of 2⁻²⁴. β = 1 − ᾱ_t/ᾱ_{t−1}
/// takes the ratio's error above as an absolute one: measured 51 at t = 991.
const TABLE_F32_RESCALED_BETAS_ULPS: f64 = 64.0;
/// Timesteps and σ against diffusers in float64 (integer timesteps must match exactly).
const STEPS_F64_REL: f64 = 1e-12;
/// Timesteps and σ against float32 diffusers under `DiffusersF32` (integer timesteps exactly):
/// a few float32 ulps. The σ table inherits torch's float32 `** 0.5` (not correctly rounded) and
/// Karras timesteps numpy's float32 `log`, and `_sigma_to_t` divides by the difference of two
/// neighbouring log σ, which magnifies an ulp of log σ.
const STEPS_F32_REL: f64 = 1e-6;
/// A loop's final sample (and trajectory) against diffusers in float64, relative to max|x|: the
/// same arithmetic in another order, measured ≤ 5e-13 (the trajectory of a cosine schedule's
/// first steps, where x is ~100× larger than at the end, is the worst); 1e-11 leaves room for
/// another libm's `exp` / `ln` / `sin`.
const LOOP_F64_REL: f64 = 1e-11;
/// A loop's final sample against float32 diffusers, relative to max|x| (diffusers steps in float32).
const LOOP_F32_REL: f64 = 1e-4;

// ---------------------------------------------------------------------------------------------
// Fixture access
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schedules")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn field<'a>(case: &'a Value, key: &str) -> &'a Value {
    case.get(key).unwrap_or_else(|| {
        panic!(
            "fixture case {case_name} has no {key:?}",
            case_name = name_of(case)
        )
    })
}

fn name_of(case: &Value) -> String {
    match case.get("name").and_then(Value::as_str) {
        Some(name) => name.to_owned(),
        None => format!(
            "{} {} N={}",
            case.get("class_name")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            case.get("config").map(Value::to_string).unwrap_or_default(),
            case.get("num_inference_steps")
                .map(Value::to_string)
                .unwrap_or_default()
        ),
    }
}

/// The float32 values of the fixtures (`*_f32`, the start noise `z` and the step noise) are
/// written as the shortest decimal that round-trips the float32; this reads them back as that
/// exact float32 value (which is also what diffusers' float64 run was fed: `z.to(float64)`).
fn exact_f32(value: f64) -> f64 {
    f64::from(value as f32)
}

/// A number array; `*_f32` arrays and `z` are read as exact float32 values.
fn numbers(case: &Value, key: &str) -> Vec<f64> {
    let is_f32 = key.ends_with("_f32") || key == "z";
    field(case, key)
        .as_array()
        .unwrap_or_else(|| panic!("{}: {key} is not an array", name_of(case)))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{}: {key} holds {v}", name_of(case)))
        })
        .map(|v| if is_f32 { exact_f32(v) } else { v })
        .collect()
}

/// A number; a `*_f32` one is read as an exact float32 value.
fn number(case: &Value, key: &str) -> f64 {
    let value = field(case, key)
        .as_f64()
        .unwrap_or_else(|| panic!("{}: {key} is not a number", name_of(case)));
    if key.ends_with("_f32") {
        exact_f32(value)
    } else {
        value
    }
}

fn string<'a>(case: &'a Value, key: &str) -> &'a str {
    field(case, key)
        .as_str()
        .unwrap_or_else(|| panic!("{}: {key} is not a string", name_of(case)))
}

fn cases<'a>(file: &'a Value, key: &str) -> &'a [Value] {
    file.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("fixture has no {key:?} array"))
}

fn config(text: &str, label: &str) -> SchedulerConfig {
    SchedulerConfig::from_json_str(text, Path::new(label))
        .unwrap_or_else(|e| panic!("{label}: the fixture's scheduler config is rejected: {e}"))
}

fn kind(class_name: &str) -> SchedulerKind {
    SchedulerKind::from_class_name(class_name).unwrap_or_else(|e| panic!("{e}"))
}

fn precision_name(precision: TablePrecision) -> &'static str {
    match precision {
        TablePrecision::F64 => "f64",
        TablePrecision::DiffusersF32 => "f32",
    }
}

// ---------------------------------------------------------------------------------------------
// Error bookkeeping
// ---------------------------------------------------------------------------------------------

/// |found − expected| / |expected|; 0 when equal, ∞ when only the expected value is 0.
fn rel_err(expected: f64, found: f64) -> f64 {
    if expected == found {
        0.0
    } else {
        (found - expected).abs() / expected.abs()
    }
}

/// The largest error seen in one category and where.
#[derive(Default)]
struct Worst {
    value: f64,
    at: String,
}

impl Worst {
    fn note(&mut self, value: f64, at: impl FnOnce() -> String) {
        if value > self.value || (value.is_nan() && !self.value.is_nan()) {
            self.value = value;
            self.at = at();
        }
    }
}

impl Worst {
    fn merge(&mut self, other: &Worst) {
        if other.value > self.value || (other.value.is_nan() && !self.value.is_nan()) {
            self.value = other.value;
            self.at.clone_from(&other.at);
        }
    }
}

impl std::fmt::Display for Worst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            write!(f, "{:.3e}", self.value)
        } else {
            write!(f, "{:.3e} ({})", self.value, self.at)
        }
    }
}

/// Collects failures so one run reports every bad case.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn push(&mut self, message: String) {
        self.0.push(message);
    }

    fn assert_none(self, what: &str) {
        if !self.0.is_empty() {
            let shown = self.0.len().min(60);
            panic!(
                "{} {what} failure(s):\n  {}{}",
                self.0.len(),
                self.0[..shown].join("\n  "),
                if shown < self.0.len() { "\n  …" } else { "" }
            );
        }
    }
}

/// Element-wise relative comparison (`tol = 0`: exact); see [`compare_with`].
fn compare_rel(
    failures: &mut Failures,
    worst: &mut Worst,
    case: &str,
    quantity: &str,
    expected: &[f64],
    found: &[f64],
    tol: f64,
) {
    compare_with(
        failures,
        worst,
        case,
        quantity,
        expected,
        found,
        (tol, rel_err),
    );
}

/// Element-wise comparison with the error measure `error(expected, found)`. Lengths must agree.
/// Records the largest error in `worst` and the first out-of-tolerance index (plus the count) in
/// `failures`.
fn compare_with(
    failures: &mut Failures,
    worst: &mut Worst,
    case: &str,
    quantity: &str,
    expected: &[f64],
    found: &[f64],
    (tol, error): (f64, impl Fn(f64, f64) -> f64),
) {
    if expected.len() != found.len() {
        failures.push(format!(
            "{case}: {quantity}: expected {} values, found {}\n    expected {expected:?}\n    found    {found:?}",
            expected.len(),
            found.len()
        ));
        return;
    }
    let mut first_bad = None;
    let mut bad = 0;
    for (i, (&e, &f)) in expected.iter().zip(found).enumerate() {
        let err = error(e, f);
        worst.note(err, || format!("{case} {quantity}[{i}]"));
        if !(err <= tol) {
            bad += 1;
            first_bad.get_or_insert((i, e, f, err));
        }
    }
    if let Some((i, e, f, err)) = first_bad {
        failures.push(format!(
            "{case}: {quantity}[{i}]: expected {e:e}, found {f:e} (error {err:.3e} > {tol:e}; \
             {bad} of {} entries out of tolerance)",
            expected.len()
        ));
    }
}

/// max|found − expected| / max|expected|, checked against `tol`.
fn compare_scaled(
    failures: &mut Failures,
    worst: &mut Worst,
    case: &str,
    quantity: &str,
    expected: &[f64],
    found: &[f64],
    tol: f64,
) {
    if expected.len() != found.len() {
        failures.push(format!(
            "{case}: {quantity}: expected {} values, found {}",
            expected.len(),
            found.len()
        ));
        return;
    }
    let scale = expected.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let (mut max_err, mut at) = (0.0_f64, 0);
    for (i, (&e, &f)) in expected.iter().zip(found).enumerate() {
        let err = (f - e).abs() / scale;
        if err > max_err || err.is_nan() {
            max_err = err;
            at = i;
            if err.is_nan() {
                break;
            }
        }
    }
    worst.note(max_err, || format!("{case} {quantity}[{at}]"));
    if !(max_err <= tol) {
        failures.push(format!(
            "{case}: {quantity}[{at}]: expected {:e}, found {:e} (error {max_err:.3e} of max|x| = {scale:.4} > {tol:e})",
            expected[at], found[at]
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Tables
// ---------------------------------------------------------------------------------------------

#[test]
fn tables_match_diffusers() {
    let file = fixture("tables.json");
    let mut failures = Failures::default();
    let mut worst_f64 = Worst::default();
    let mut worst_f32 = Worst::default();
    let mut worst_f32_rescaled_betas = Worst::default();
    let mut worst_posterior = Worst::default();
    for case in cases(&file, "tables") {
        let name = name_of(case);
        let settings = config(string(case, "config_json"), &name)
            .settings(SchedulerKind::Ddpm)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for precision in [TablePrecision::F64, TablePrecision::DiffusersF32] {
            let p = precision_name(precision);
            let schedule = match NoiseSchedule::for_settings(&settings, precision) {
                Ok(schedule) => schedule,
                Err(e) => {
                    failures.push(format!("{name}: {p} schedule: {e}"));
                    continue;
                }
            };
            let (mut betas, mut alphas_cumprod) = (Worst::default(), Worst::default());
            let betas_key = format!("betas_{p}");
            let alphas_cumprod_key = format!("alphas_cumprod_{p}");
            let rescaled_f32 =
                precision == TablePrecision::DiffusersF32 && settings.rescale_betas_zero_snr;
            if rescaled_f32 {
                // β = 1 − ᾱ_t/ᾱ_{t−1} of the rescaled ᾱ: a float32 subtraction from ≈ 1, so
                // its error is absolute, in units of 2⁻²⁴ (an ulp of the ratio); relative to
                // β ≈ 1e-3 one such ulp is 6e-5 (diffusers' own f32-vs-f64 difference is 2e-4).
                compare_with(
                    &mut failures,
                    &mut betas,
                    &name,
                    &format!("{betas_key} (absolute, in units of 2^-24)"),
                    &numbers(case, &betas_key),
                    &schedule.betas,
                    (TABLE_F32_RESCALED_BETAS_ULPS, |e, f| {
                        (f - e).abs() * 2f64.powi(24)
                    }),
                );
            } else {
                compare_rel(
                    &mut failures,
                    &mut betas,
                    &name,
                    &betas_key,
                    &numbers(case, &betas_key),
                    &schedule.betas,
                    match precision {
                        TablePrecision::F64 => TABLE_F64_REL,
                        TablePrecision::DiffusersF32 => TABLE_F32_REL,
                    },
                );
            }
            compare_rel(
                &mut failures,
                &mut alphas_cumprod,
                &name,
                &alphas_cumprod_key,
                &numbers(case, &alphas_cumprod_key),
                &schedule.alphas_cumprod,
                match precision {
                    TablePrecision::F64 => TABLE_F64_REL,
                    TablePrecision::DiffusersF32 if rescaled_f32 => {
                        TABLE_F32_RESCALED_ALPHAS_CUMPROD_REL
                    }
                    TablePrecision::DiffusersF32 => TABLE_F32_ALPHAS_CUMPROD_REL,
                },
            );
            println!(
                "table {name} {p}: betas {} {betas}, alphas_cumprod max relative error {alphas_cumprod}",
                if rescaled_f32 {
                    "max |error| / 2^-24"
                } else {
                    "max relative error"
                }
            );
            match precision {
                TablePrecision::F64 => {
                    worst_f64.merge(&betas);
                    worst_f64.merge(&alphas_cumprod);
                }
                TablePrecision::DiffusersF32 => {
                    if rescaled_f32 {
                        worst_f32_rescaled_betas.merge(&betas);
                    } else {
                        worst_f32.merge(&betas);
                    }
                    worst_f32.merge(&alphas_cumprod);
                }
            }
            // The alphas are 1 − β, stored.
            let alphas: Vec<f64> = schedule
                .betas
                .iter()
                .map(|b| precision.store(1.0 - b))
                .collect();
            compare_rel(
                &mut failures,
                &mut Worst::default(),
                &name,
                &format!("alphas_{p} (1 − betas)"),
                &alphas,
                &schedule.alphas,
                0.0,
            );
        }
        // Ho et al.'s posterior (numpy float64 from the f64 tables).
        if let Some(posterior) = case.get("posterior") {
            let schedule = NoiseSchedule::for_settings(&settings, TablePrecision::F64)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let indices: Vec<usize> = numbers(posterior, "indices")
                .into_iter()
                .map(|i| i as usize)
                .collect();
            for (key, all) in [
                ("mean_coef1", schedule.posterior_mean_coef1()),
                ("mean_coef2", schedule.posterior_mean_coef2()),
                ("variance", schedule.posterior_variance()),
                (
                    "log_variance_clipped",
                    schedule.posterior_log_variance_clipped(),
                ),
            ] {
                let found: Vec<f64> = indices.iter().map(|&i| all[i]).collect();
                compare_rel(
                    &mut failures,
                    &mut worst_posterior,
                    &name,
                    &format!("posterior {key} at t = {indices:?}"),
                    &numbers(posterior, key),
                    &found,
                    TABLE_F64_REL,
                );
            }
            // The posterior of one consecutive step is the same thing.
            let variance = schedule.posterior_variance();
            for &t in &indices {
                let prev = t.checked_sub(1);
                let one = schedule
                    .posterior(t, prev)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                if rel_err(variance[t], one.variance) > TABLE_F64_REL {
                    failures.push(format!(
                        "{name}: posterior({t}, {prev:?}).variance: expected {:e}, found {:e}",
                        variance[t], one.variance
                    ));
                }
            }
        }
    }
    println!(
        "tables vs diffusers f64: max relative error {worst_f64}; posterior {worst_posterior}"
    );
    println!(
        "tables vs diffusers f32 (DiffusersF32): max relative error {worst_f32}; \
         zero-SNR betas max |error| / 2^-24 {worst_f32_rescaled_betas}"
    );
    failures.assert_none("table");
}

// ---------------------------------------------------------------------------------------------
// 2. Timesteps, σ, init_noise_sigma
// ---------------------------------------------------------------------------------------------

/// Drops what diffusers adds after the N-th timestep when `numpy.arange(T, 0, −T/N)` yields N + 1
/// entries under "trailing": a timestep −1 (Heun: twice) and its σ (Heun: twice). The port does
/// not copy that bug (see `Builder::trailing` in `plan.rs`). Returns whether it did. PNDM's list
/// holds N + 1 evaluations (the second timestep twice), then the −1.
fn drop_trailing_extra(
    kind: SchedulerKind,
    n: usize,
    timesteps: &mut Vec<f64>,
    sigmas: &mut Vec<f64>,
) -> bool {
    let heun = kind == SchedulerKind::Heun;
    let expected_len = match kind {
        SchedulerKind::Heun => 2 * n - 1,
        SchedulerKind::Pndm if n > 1 => n + 1,
        _ => n,
    };
    let extra = if heun { 2 } else { 1 };
    if timesteps.len() != expected_len + extra || timesteps.last() != Some(&-1.0) {
        return false;
    }
    timesteps.truncate(expected_len);
    if !sigmas.is_empty() {
        // σ: [..N (Heun: 2N − 1) values.., the extra σ (Heun: twice), final].
        let last = sigmas.pop().unwrap_or_default();
        sigmas.truncate(sigmas.len() - extra);
        sigmas.push(last);
    }
    true
}

/// Heun's `scheduler.sigmas`: σ₀, σ₁, σ₁, …, σ_{N−1}, σ_{N−1}, σ_N.
fn heun_expand(sigmas: &[f64]) -> Vec<f64> {
    let n = sigmas.len() - 1;
    let mut out = vec![sigmas[0]];
    for &s in &sigmas[1..n] {
        out.extend([s, s]);
    }
    out.push(sigmas[n]);
    out
}

#[test]
fn timesteps_sigmas_and_init_noise_sigma_match_diffusers() {
    let file = fixture("timesteps.json");
    let mut failures = Failures::default();
    let mut worst_t = [Worst::default(), Worst::default()];
    let mut worst_s = [Worst::default(), Worst::default()];
    let mut worst_init = [Worst::default(), Worst::default()];
    let mut classes = std::collections::BTreeMap::<String, usize>::new();
    for case in cases(&file, "cases") {
        let name = name_of(case);
        let kind = kind(string(case, "class_name"));
        *classes.entry(kind.to_string()).or_default() += 1;
        let n = number(case, "num_inference_steps") as usize;
        let config = config(&field(case, "config").to_string(), &name);
        let integer_timesteps = matches!(
            kind,
            SchedulerKind::Ddpm
                | SchedulerKind::Ddim
                | SchedulerKind::DpmSolverMultistep
                | SchedulerKind::Pndm
        );
        for (slot, precision) in [TablePrecision::F64, TablePrecision::DiffusersF32]
            .into_iter()
            .enumerate()
        {
            let p = precision_name(precision);
            let tol = match precision {
                TablePrecision::F64 => STEPS_F64_REL,
                TablePrecision::DiffusersF32 => STEPS_F32_REL,
            };
            let options = PlanOptions {
                eta: 0.0,
                precision,
            };
            let plan = match StepPlan::new(&config, kind, n, &options) {
                Ok(plan) => plan,
                Err(e) => {
                    failures.push(format!("{name}: {p} plan: {e}"));
                    continue;
                }
            };
            let mut expected_t = numbers(case, &format!("timesteps_{p}"));
            let sigma_key = format!("sigmas_{p}");
            let mut expected_s = if case.get(&sigma_key).is_some() {
                numbers(case, &sigma_key)
            } else {
                Vec::new()
            };
            drop_trailing_extra(kind, n, &mut expected_t, &mut expected_s);
            if plan.timesteps.len() != n || plan.steps.len() != n {
                failures.push(format!(
                    "{name}: {p} plan has {} timesteps and {} steps for N = {n}",
                    plan.timesteps.len(),
                    plan.steps.len()
                ));
            }
            // Heun's and PNDM's scheduler.timesteps (and Heun's sigmas) hold every model
            // evaluation.
            let (found_t, found_s) = match kind {
                SchedulerKind::Heun => (plan.model_timesteps.clone(), heun_expand(&plan.sigmas)),
                SchedulerKind::Pndm => (plan.model_timesteps.clone(), plan.sigmas.clone()),
                _ => (plan.timesteps.clone(), plan.sigmas.clone()),
            };
            compare_rel(
                &mut failures,
                &mut worst_t[slot],
                &name,
                &format!("timesteps_{p}"),
                &expected_t,
                &found_t,
                if integer_timesteps { 0.0 } else { tol },
            );
            if integer_timesteps {
                if let Some(t) = plan.timesteps.iter().find(|t| t.fract() != 0.0) {
                    failures.push(format!("{name}: {p}: timestep {t} is not an integer"));
                }
            }
            compare_rel(
                &mut failures,
                &mut worst_s[slot],
                &name,
                &format!("sigmas_{p}"),
                &expected_s,
                &found_s,
                tol,
            );
            let init = number(case, &format!("init_noise_sigma_{p}"));
            let err = rel_err(init, plan.init_noise_sigma);
            worst_init[slot].note(err, || name.clone());
            if !(err <= tol) {
                failures.push(format!(
                    "{name}: init_noise_sigma_{p}: expected {init:e}, found {:e} (relative error {err:.3e} > {tol:e})",
                    plan.init_noise_sigma
                ));
            }
            // Each step records the timestep it is for, and every stage the one the network sees.
            for (i, step) in plan.steps.iter().enumerate() {
                if step.timestep != plan.timesteps[i] {
                    failures.push(format!(
                        "{name}: {p}: step {i} records timestep {} but timesteps[{i}] = {}",
                        step.timestep, plan.timesteps[i]
                    ));
                }
            }
        }
    }
    for (slot, p) in ["f64", "f32"].into_iter().enumerate() {
        println!(
            "timesteps vs diffusers {p}: max relative error: timesteps {}, sigmas {}, init_noise_sigma {}",
            worst_t[slot], worst_s[slot], worst_init[slot]
        );
    }
    println!("timestep cases per sampler: {classes:?}");
    assert_eq!(
        classes.len(),
        SchedulerKind::ALL.len(),
        "every sampler must have timestep cases"
    );
    failures.assert_none("timestep");
}

// ---------------------------------------------------------------------------------------------
// 3. Toy-model loops
// ---------------------------------------------------------------------------------------------

fn toy_model(input: &[f64], t: f64) -> Vec<f64> {
    let shift = 0.1 * (t / 100.0).sin();
    input.iter().map(|x| 0.3 * x + shift).collect()
}

/// The plan cut after its first `stages` stages; with `mean_only` the last stage draws no noise
/// (score-SDE's `x_mean`, the sample diffusers' trajectory records).
fn truncated(plan: &StepPlan, stages: usize, mean_only: bool) -> StepPlan {
    let mut out = plan.clone();
    out.steps.clear();
    let mut left = stages;
    for step in &plan.steps {
        if left == 0 {
            break;
        }
        let mut step = step.clone();
        step.stages.truncate(left);
        left -= step.stages.len();
        out.steps.push(step);
    }
    if mean_only {
        if let Some(stage) = out.steps.last_mut().and_then(|s| s.stages.last_mut()) {
            stage.draws_noise = false;
        }
    }
    out
}

/// Runs `plan` from z with the fixture's noise (`noise[k]` is drawn at step `noise_steps[k]`).
fn run_plan(plan: &StepPlan, z: &[f64], noise: &[Vec<f64>], noise_steps: &[usize]) -> Vec<f64> {
    let x_t: Vec<f64> = z.iter().map(|v| plan.init_noise_sigma * v).collect();
    sample_reference(plan, toy_model, &x_t, |step| {
        let k = noise_steps
            .iter()
            .position(|&s| s == step)
            .unwrap_or_else(|| panic!("the plan draws noise at step {step}, diffusers did not"));
        noise[k].clone()
    })
    .unwrap_or_else(|e| panic!("sample_reference: {e}"))
}

#[test]
fn toy_loops_match_diffusers() {
    let file = fixture("loops.json");
    let mut failures = Failures::default();
    let mut worst_f64 = Worst::default();
    let mut worst_f32 = Worst::default();
    let mut worst_traj = Worst::default();
    let mut worst_model_t = [Worst::default(), Worst::default()];
    let mut kinds = std::collections::BTreeSet::new();
    for case in cases(&file, "cases") {
        let name = name_of(case);
        let kind = kind(string(case, "kind_class_name"));
        kinds.insert(kind.to_string());
        let config = config(string(case, "scheduler_config_json"), &name);
        let n = number(case, "num_inference_steps") as usize;
        let eta = number(case, "eta");
        let z = numbers(case, "z");
        let noise: Vec<Vec<f64>> = field(case, "noise")
            .as_array()
            .unwrap_or_else(|| panic!("{name}: noise is not an array"))
            .iter()
            .map(|v| {
                v.as_array()
                    .unwrap_or_else(|| panic!("{name}: noise entry is not an array"))
                    .iter()
                    .map(|x| exact_f32(x.as_f64().unwrap_or(f64::NAN)))
                    .collect()
            })
            .collect();
        let noise_steps: Vec<usize> = numbers(case, "noise_steps")
            .into_iter()
            .map(|s| s as usize)
            .collect();
        let mut case_errors = [f64::NAN; 2];
        for (slot, precision) in [TablePrecision::F64, TablePrecision::DiffusersF32]
            .into_iter()
            .enumerate()
        {
            let p = precision_name(precision);
            let plan = match StepPlan::new(&config, kind, n, &PlanOptions { eta, precision }) {
                Ok(plan) => plan,
                Err(e) => {
                    failures.push(format!("{name}: {p} plan: {e}"));
                    continue;
                }
            };
            // The network sees the same timesteps, and noise is drawn at the same steps.
            let model_tol = match precision {
                TablePrecision::F64 => STEPS_F64_REL,
                TablePrecision::DiffusersF32 => STEPS_F32_REL,
            };
            compare_rel(
                &mut failures,
                &mut worst_model_t[slot],
                &name,
                &format!("model_timesteps_{p}"),
                &numbers(case, &format!("model_timesteps_{p}")),
                &plan.model_timesteps,
                model_tol,
            );
            let draws: Vec<usize> = plan
                .stages()
                .filter(|(_, stage)| stage.draws_noise)
                .map(|(step, _)| step)
                .collect();
            // ScoreSdeVpScheduler.step_pred draws noise at every step, but the loop returns the
            // last step's noise-free x_mean, so the plan's last step draws none.
            let mut expected_draws = noise_steps.clone();
            if kind == SchedulerKind::ScoreSdeVp && expected_draws.last() == Some(&(n - 1)) {
                expected_draws.pop();
            }
            if draws != expected_draws {
                failures.push(format!(
                    "{name}: {p}: noise drawn at steps {draws:?}, expected {expected_draws:?} (diffusers drew at {noise_steps:?})"
                ));
                continue;
            }
            let final_sample = run_plan(&plan, &z, &noise, &noise_steps);
            let (key, tol, worst) = match precision {
                TablePrecision::F64 => ("final_f64", LOOP_F64_REL, &mut worst_f64),
                TablePrecision::DiffusersF32 => ("final_f32", LOOP_F32_REL, &mut worst_f32),
            };
            let mut this_case = Worst::default();
            compare_scaled(
                &mut failures,
                &mut this_case,
                &name,
                key,
                &numbers(case, key),
                &final_sample,
                tol,
            );
            worst.merge(&this_case);
            case_errors[slot] = this_case.value;
            // The f64 trajectory (first elements after every model evaluation) locates a
            // divergence at the stage where it starts.
            if precision == TablePrecision::F64 {
                let trajectory = field(case, "trajectory_f64")
                    .as_array()
                    .unwrap_or_else(|| panic!("{name}: trajectory_f64 is not an array"));
                let stage_count = plan.stages().count();
                if trajectory.len() != stage_count {
                    failures.push(format!(
                        "{name}: diffusers' loop has {} model evaluations, the plan {stage_count}",
                        trajectory.len()
                    ));
                    continue;
                }
                let mean_only = kind == SchedulerKind::ScoreSdeVp;
                let scale = numbers(case, "final_f64")
                    .iter()
                    .fold(0.0_f64, |m, v| m.max(v.abs()));
                for (j, entry) in trajectory.iter().enumerate() {
                    let expected: Vec<f64> = entry
                        .as_array()
                        .unwrap_or_else(|| panic!("{name}: trajectory entry is not an array"))
                        .iter()
                        .map(|x| x.as_f64().unwrap_or(f64::NAN))
                        .collect();
                    let partial = truncated(&plan, j + 1, mean_only);
                    let found = run_plan(&partial, &z, &noise, &noise_steps);
                    let scale = expected.iter().fold(scale, |m, v| m.max(v.abs()));
                    for (i, (&e, &f)) in expected.iter().zip(&found).enumerate() {
                        let err = (f - e).abs() / scale;
                        worst_traj.note(err, || format!("{name} stage {j} element {i}"));
                        if !(err <= LOOP_F64_REL) {
                            failures.push(format!(
                                "{name}: trajectory_f64 after stage {j}, element {i}: expected {e:e}, found {f:e} \
                                 (error {err:.3e} of max|x| = {scale:.4} > {LOOP_F64_REL:e})"
                            ));
                            break;
                        }
                    }
                }
            }
        }
        // diffusers' own float32-vs-float64 difference, for scale: the f32 comparison cannot be
        // expected to do much better, since diffusers steps in float32.
        println!(
            "loop {name} ({kind}): final error / max|x| vs f64 {:.3e}, vs f32 {:.3e} \
             (diffusers f32 vs f64: {:.3e})",
            case_errors[0],
            case_errors[1],
            number(case, "f32_vs_f64_max_rel")
        );
    }
    println!(
        "loops vs diffusers f64: max error / max|x|: final {worst_f64}; trajectory {worst_traj}"
    );
    println!("loops vs diffusers f32 (DiffusersF32): max error / max|x|: final {worst_f32}");
    println!(
        "loops: max relative error of model timesteps: f64 {}, f32 {}",
        worst_model_t[0], worst_model_t[1]
    );
    assert_eq!(
        kinds.len(),
        SchedulerKind::ALL.len(),
        "every sampler must have a loop case: {kinds:?}"
    );
    failures.assert_none("loop");
}

/// The "config_as_<other>" cases really are configs of another class: the sampler must read only
/// the keys its class accepts (diffusers' `from_config`), e.g. a DDPM config's
/// `clip_sample: true` does not make Euler ancestral clip, and its "leading" spacing carries over.
#[test]
fn config_of_another_class_follows_from_config() {
    let file = fixture("loops.json");
    let mut seen = 0;
    for case in cases(&file, "cases") {
        let name = name_of(case);
        if !name.contains("_config_as_") {
            continue;
        }
        seen += 1;
        let config = config(string(case, "scheduler_config_json"), &name);
        let source = config
            .class_kind()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let target = kind(string(case, "kind_class_name"));
        assert_ne!(source, target, "{name}: not a cross-class case");
        let settings = config
            .settings(target)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(settings.kind, target, "{name}: settings kind");
        let from_file: Value = serde_json::from_str(string(case, "scheduler_config_json"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(spacing) = from_file.get("timestep_spacing").and_then(Value::as_str) {
            assert_eq!(
                settings.timestep_spacing.to_string(),
                spacing,
                "{name}: timestep_spacing must carry over"
            );
        }
        if let Some(beta_start) = from_file.get("beta_start").and_then(Value::as_f64) {
            assert_eq!(
                settings.beta_start, beta_start,
                "{name}: beta_start must carry over"
            );
        }
        if matches!(
            target,
            SchedulerKind::EulerAncestral | SchedulerKind::DpmSolverMultistep
        ) {
            assert!(
                !settings.clip_sample,
                "{name}: {target} has no clip_sample; the source's value must be dropped"
            );
        }
    }
    assert_eq!(seen, 4, "expected the four config_as_<other> loop cases");
}

// ---------------------------------------------------------------------------------------------
// 4. Bad configurations and arguments
// ---------------------------------------------------------------------------------------------

fn parse(text: &str) -> wgpu_diffusion::Result<SchedulerConfig> {
    SchedulerConfig::from_json_str(text, Path::new("bad/scheduler_config.json"))
}

/// Asserts `result` is an `Error::Config` for `key` whose message mentions every `words`.
fn assert_config_error<T: std::fmt::Debug>(
    what: &str,
    result: wgpu_diffusion::Result<T>,
    key: &str,
    words: &[&str],
) {
    match result {
        Err(Error::Config {
            path,
            key: found,
            message,
        }) => {
            assert_eq!(found, key, "{what}: error names key {found:?}: {message}");
            assert_eq!(path, Path::new("bad/scheduler_config.json"), "{what}: path");
            let shown = Error::Config {
                path,
                key: found,
                message: message.clone(),
            }
            .to_string();
            assert!(shown.contains(key), "{what}: {shown:?} does not name {key}");
            for word in words {
                assert!(
                    message.contains(word),
                    "{what}: message {message:?} does not mention {word:?}"
                );
            }
        }
        other => panic!("{what}: expected a config error for {key:?}, got {other:?}"),
    }
}

/// Asserts `result` is an error whose text mentions every `words`.
fn assert_error_mentions<T: std::fmt::Debug>(
    what: &str,
    result: wgpu_diffusion::Result<T>,
    words: &[&str],
) {
    match result {
        Err(e) => {
            let text = e.to_string();
            for word in words {
                assert!(
                    text.contains(word),
                    "{what}: {text:?} does not mention {word:?}"
                );
            }
        }
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
    }
}

#[test]
fn bad_json_is_an_error_naming_the_key() {
    assert_config_error(
        "unknown beta_schedule",
        parse(r#"{"beta_schedule": "quadratic"}"#),
        "beta_schedule",
        &["quadratic", "linear", "scaled_linear", "squaredcos_cap_v2"],
    );
    assert_config_error(
        "unimplemented beta_schedule",
        parse(r#"{"beta_schedule": "sigmoid"}"#),
        "beta_schedule",
        &["sigmoid", "does not implement"],
    );
    assert_config_error(
        "unknown prediction_type",
        parse(r#"{"prediction_type": "x0"}"#),
        "prediction_type",
        &["x0", "epsilon", "v_prediction"],
    );
    assert_config_error(
        "unknown timestep_spacing",
        parse(r#"{"timestep_spacing": "uniform"}"#),
        "timestep_spacing",
        &["uniform", "trailing"],
    );
    assert_config_error(
        "prediction_type of the wrong type",
        parse(r#"{"prediction_type": 3}"#),
        "prediction_type",
        &["3", "string"],
    );
    assert_config_error(
        "num_train_timesteps as a string",
        parse(r#"{"num_train_timesteps": "1000"}"#),
        "num_train_timesteps",
        &["1000", "integer"],
    );
    assert_config_error(
        "negative steps_offset",
        parse(r#"{"steps_offset": -1}"#),
        "steps_offset",
        &["-1", "non-negative integer"],
    );
    assert_config_error(
        "fractional num_train_timesteps",
        parse(r#"{"num_train_timesteps": 999.5}"#),
        "num_train_timesteps",
        &["999.5"],
    );
    assert_config_error(
        "clip_sample as a string",
        parse(r#"{"clip_sample": "yes"}"#),
        "clip_sample",
        &["true or false"],
    );
    assert_config_error(
        "infinite beta_end",
        parse(r#"{"beta_end": Infinity}"#),
        "beta_end",
        &["finite"],
    );
    assert_config_error(
        "trained_betas with a string",
        parse(r#"{"trained_betas": [0.1, "x"]}"#),
        "trained_betas",
        &["array of finite numbers"],
    );
    assert_config_error(
        "malformed JSON",
        parse(r#"{"beta_schedule": "linear",,}"#),
        "(JSON syntax)",
        &["invalid JSON"],
    );
    assert_config_error(
        "truncated JSON",
        parse(r#"{"beta_schedule": "lin"#),
        "(JSON syntax)",
        &["invalid JSON"],
    );
    assert_config_error("empty file", parse(""), "(JSON syntax)", &["invalid JSON"]);
    assert_config_error(
        "not an object",
        parse("[1, 2, 3]"),
        "(top level)",
        &["JSON object"],
    );
    // Python's tokens and nulls are fine; unknown keys are ignored, as diffusers does.
    let ok = parse(
        r#"{"lambda_min_clipped": -Infinity, "trained_betas": null, "dynamic_thresholding_ratio": 0.995,
            "text": "Infinity, NaN"}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.lambda_min_clipped, Some(f64::NEG_INFINITY));
    assert_eq!(ok.trained_betas, None);
}

#[test]
fn unsupported_or_out_of_range_settings_are_errors_naming_the_key() {
    use SchedulerKind as K;
    let settings = |text: &str, kind: SchedulerKind| parse(text).and_then(|c| c.settings(kind));
    assert_config_error(
        "beta_start ≥ 1",
        settings(r#"{"beta_start": 1.5}"#, K::Ddpm),
        "beta_start",
        &["1.5"],
    );
    assert_config_error(
        "beta_end 0",
        settings(r#"{"beta_end": 0}"#, K::Euler),
        "beta_end",
        &["0"],
    );
    assert_config_error(
        "one training timestep",
        settings(r#"{"num_train_timesteps": 1}"#, K::Ddim),
        "num_train_timesteps",
        &["1"],
    );
    assert_config_error(
        "trained_betas of the wrong length",
        settings(
            r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}"#,
            K::Ddpm,
        ),
        "trained_betas",
        &["2 entries", "3"],
    );
    assert_config_error(
        "trained_betas above 1",
        settings(
            r#"{"num_train_timesteps": 2, "trained_betas": [0.1, 1.2]}"#,
            K::Ddpm,
        ),
        "trained_betas",
        &["1.2"],
    );
    assert_config_error(
        "negative clip_sample_range",
        settings(r#"{"clip_sample_range": -1.0}"#, K::Ddpm),
        "clip_sample_range",
        &["-1"],
    );
    assert_config_error(
        "learned variance for DDPM",
        settings(r#"{"variance_type": "learned_range"}"#, K::Ddpm),
        "variance_type",
        &["learned_range", "fixed_small"],
    );
    assert_config_error(
        "thresholding",
        settings(r#"{"thresholding": true}"#, K::Ddim),
        "thresholding",
        &["true"],
    );
    assert_config_error(
        "sample prediction for Euler ancestral",
        settings(r#"{"prediction_type": "sample"}"#, K::EulerAncestral),
        "prediction_type",
        &["sample", "epsilon"],
    );
    assert_config_error(
        "third-order DPM-Solver",
        settings(r#"{"solver_order": 3}"#, K::DpmSolverMultistep),
        "solver_order",
        &["3", "1, 2"],
    );
    assert_config_error(
        "SDE DPM-Solver",
        settings(
            r#"{"algorithm_type": "sde-dpmsolver++"}"#,
            K::DpmSolverMultistep,
        ),
        "algorithm_type",
        &["sde-dpmsolver++", "dpmsolver++"],
    );
    assert_config_error(
        "log-linear interpolation",
        settings(r#"{"interpolation_type": "log_linear"}"#, K::Euler),
        "interpolation_type",
        &["log_linear"],
    );
    assert_config_error(
        "exponential sigmas",
        settings(r#"{"use_exponential_sigmas": true}"#, K::Heun),
        "use_exponential_sigmas",
        &["true"],
    );
    assert_config_error(
        "zero shift",
        settings(r#"{"shift": 0.0}"#, K::FlowMatchEuler),
        "shift",
        &["0"],
    );
    assert_config_error(
        "dynamic shifting",
        settings(r#"{"use_dynamic_shifting": true}"#, K::FlowMatchEuler),
        "use_dynamic_shifting",
        &["true"],
    );
    assert_config_error(
        "v-prediction for score-SDE",
        settings(r#"{"prediction_type": "v_prediction"}"#, K::ScoreSdeVp),
        "prediction_type",
        &["v_prediction", "epsilon"],
    );
    assert_config_error(
        "sampling_eps 0",
        settings(r#"{"sampling_eps": 0}"#, K::ScoreSdeVp),
        "sampling_eps",
        &["0"],
    );
    assert_config_error(
        "unknown _class_name",
        parse(r#"{"_class_name": "LMSDiscreteScheduler"}"#).and_then(|c| c.class_kind()),
        "_class_name",
        &["LMSDiscreteScheduler", "DDPMScheduler"],
    );
    assert_config_error(
        "missing _class_name",
        parse("{}").and_then(|c| c.class_kind()),
        "_class_name",
        &["missing"],
    );
    // A key the sampler's class does not accept is dropped, not checked (diffusers' from_config):
    // DDPM has no solver_order, Euler has no thresholding.
    settings(r#"{"solver_order": 3}"#, K::Ddpm).unwrap_or_else(|e| panic!("{e}"));
    settings(r#"{"thresholding": true}"#, K::Euler).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_plan_arguments_are_errors() {
    let config = parse(r#"{"num_train_timesteps": 100}"#).unwrap_or_else(|e| panic!("{e}"));
    let options = PlanOptions::default();
    for kind in SchedulerKind::ALL {
        for steps in [0, 101] {
            assert_error_mentions(
                &format!("{kind} with {steps} steps"),
                StepPlan::new(&config, kind, steps, &options),
                &["num_inference_steps", "100", &steps.to_string()],
            );
        }
        let all = StepPlan::new(&config, kind, 100, &options);
        if kind == SchedulerKind::DpmSolverMultistep {
            // linspace(0, 99, 101)[1:] rounds two timesteps to the same one; the 2nd-order step
            // after the repeat divides by a zero λ step (diffusers: NaN).
            assert_error_mentions(
                "dpm++2m with N = T",
                all,
                &[
                    "num_inference_steps = 100",
                    "repeats timestep",
                    "solver_order 1",
                ],
            );
            let first_order = parse(r#"{"num_train_timesteps": 100, "solver_order": 1}"#)
                .unwrap_or_else(|e| panic!("{e}"));
            StepPlan::new(&first_order, kind, 100, &options)
                .unwrap_or_else(|e| panic!("first-order {kind} with N = T: {e}"));
        } else {
            all.unwrap_or_else(|e| panic!("{kind} with N = T: {e}"));
        }
    }
    for eta in [-0.5, f64::NAN, f64::INFINITY] {
        assert_error_mentions(
            &format!("DDIM with eta {eta}"),
            StepPlan::new(
                &config,
                SchedulerKind::Ddim,
                10,
                &PlanOptions {
                    eta,
                    ..PlanOptions::default()
                },
            ),
            &["eta"],
        );
    }
    // A steps_offset that pushes "leading" timesteps past T.
    let offset = parse(r#"{"num_train_timesteps": 100, "steps_offset": 50}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    for kind in [SchedulerKind::Ddpm, SchedulerKind::Ddim] {
        assert_error_mentions(
            &format!("{kind} with steps_offset 50"),
            StepPlan::new(&offset, kind, 10, &options),
            &["steps_offset 50", "timestep"],
        );
    }
    // A lambda_min_clipped that removes every timestep.
    let clipped = parse(r#"{"lambda_min_clipped": 100.0}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_error_mentions(
        "lambda_min_clipped 100",
        StepPlan::new(&clipped, SchedulerKind::DpmSolverMultistep, 10, &options),
        &["lambda_min_clipped"],
    );
}

// ---------------------------------------------------------------------------------------------
// 5. PNDM: image-to-image, settings, history slots and its errors
// ---------------------------------------------------------------------------------------------

/// PNDM image-to-image: `StepPlan::stages_from` against diffusers' loop over
/// `scheduler.timesteps[first_step:]` with the scheduler's counter restarted (what
/// `StableDiffusionImg2ImgPipeline` runs), from the same sample, in float64 and float32.
#[test]
fn pndm_image_to_image_matches_diffusers() {
    let file = fixture("loops.json");
    let mut failures = Failures::default();
    let mut worst = [Worst::default(), Worst::default()];
    let cases = cases(&file, "img2img_cases");
    assert!(cases.len() >= 4, "expected the PNDM img2img cases");
    for case in cases {
        let name = name_of(case);
        let config = config(string(case, "scheduler_config_json"), &name);
        let n = number(case, "num_inference_steps") as usize;
        let first_step = number(case, "first_step") as usize;
        let z = numbers(case, "z");
        for (slot, precision) in [TablePrecision::F64, TablePrecision::DiffusersF32]
            .into_iter()
            .enumerate()
        {
            let p = precision_name(precision);
            let options = PlanOptions {
                eta: 0.0,
                precision,
            };
            let plan = StepPlan::new(&config, SchedulerKind::Pndm, n, &options)
                .unwrap_or_else(|e| panic!("{name}: {p} plan: {e}"));
            let stages = plan
                .stages_from(first_step)
                .unwrap_or_else(|e| panic!("{name}: {p} stages_from: {e}"));
            // The stages regrouped into a plan of the executed steps, for sample_reference.
            let mut run = plan.clone();
            run.steps.clear();
            for (step, stage) in &stages {
                if run.steps.last().map(|_| run.steps.len() - 1 + first_step) != Some(*step) {
                    let mut record = plan.steps[*step].clone();
                    record.stages.clear();
                    run.steps.push(record);
                }
                if let Some(record) = run.steps.last_mut() {
                    record.stages.push(*stage);
                }
            }
            if run.steps.len() != n - first_step {
                failures.push(format!(
                    "{name}: {p}: {} executed steps, expected {}",
                    run.steps.len(),
                    n - first_step
                ));
            }
            let model_timesteps: Vec<f64> = stages.iter().map(|(_, s)| s.model_timestep).collect();
            compare_rel(
                &mut failures,
                &mut Worst::default(),
                &name,
                "model_timesteps",
                &numbers(case, "model_timesteps"),
                &model_timesteps,
                0.0,
            );
            let found = run_plan(&run, &z, &[], &[]);
            let (key, tol) = match precision {
                TablePrecision::F64 => ("final_f64", LOOP_F64_REL),
                TablePrecision::DiffusersF32 => ("final_f32", LOOP_F32_REL),
            };
            compare_scaled(
                &mut failures,
                &mut worst[slot],
                &name,
                key,
                &numbers(case, key),
                &found,
                tol,
            );
        }
    }
    println!(
        "pndm img2img vs diffusers: max error / max|x|: f64 {}, f32 {}",
        worst[0], worst[1]
    );
    failures.assert_none("pndm img2img");
}

#[test]
fn pndm_settings_history_slots_and_errors() {
    let options = PlanOptions::default();
    let sd = parse(
        r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true, "steps_offset": 1,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The folder's class selects the sampler; PNDMScheduler's own defaults apply.
    assert_eq!(sd.class_kind().ok(), Some(SchedulerKind::Pndm));
    assert_eq!(
        SchedulerKind::from_cli_name("pndm").ok(),
        Some(SchedulerKind::Pndm)
    );
    let settings = sd
        .settings(SchedulerKind::Pndm)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(settings.skip_prk_steps);
    assert!(
        !settings.set_alpha_to_one,
        "PNDMScheduler's default is false"
    );
    assert_eq!(settings.timestep_spacing.to_string(), "leading");
    // The same file read by DDIM keeps DDIM's own set_alpha_to_one default.
    assert!(
        sd.settings(SchedulerKind::Ddim)
            .unwrap_or_else(|e| panic!("{e}"))
            .set_alpha_to_one
    );

    // History slots: PLMS uses 4 (saved sample + 3 outputs), the warm-up 6, the rest 1.
    let plms =
        StepPlan::new(&sd, SchedulerKind::Pndm, 20, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plms.history_slots(), 4);
    assert_eq!(plms.num_model_evaluations(), 21);
    assert_eq!(
        plms.steps[0].stages.len(),
        2,
        "step 0 holds the duplicated timestep"
    );
    let prk_config = parse(r#"{"_class_name": "PNDMScheduler"}"#).unwrap_or_else(|e| panic!("{e}"));
    let prk = StepPlan::new(&prk_config, SchedulerKind::Pndm, 20, &options)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prk.history_slots(), 6);
    assert_eq!(prk.num_model_evaluations(), 29);
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::Heun,
        SchedulerKind::DpmSolverMultistep,
    ] {
        let plan = StepPlan::new(&sd, kind, 20, &options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.history_slots(), 1, "{kind}");
    }

    assert_config_error(
        "pndm with sample prediction",
        parse(r#"{"skip_prk_steps": true, "prediction_type": "sample"}"#)
            .and_then(|c| c.settings(SchedulerKind::Pndm)),
        "prediction_type",
        &["\"sample\"", "pndm", "\"epsilon\"", "\"v_prediction\""],
    );
    assert_error_mentions(
        "pndm warm-up with 3 steps",
        StepPlan::new(&prk_config, SchedulerKind::Pndm, 3, &options),
        &["skip_prk_steps", "at least 4", "got 3"],
    );
    assert_error_mentions(
        "pndm warm-up image-to-image",
        prk.stages_from(5),
        &["image-to-image", "skip_prk_steps true"],
    );
    assert_error_mentions(
        "pndm with steps_offset past T",
        parse(r#"{"num_train_timesteps": 100, "steps_offset": 50, "skip_prk_steps": true}"#)
            .and_then(|c| StepPlan::new(&c, SchedulerKind::Pndm, 10, &options)),
        &["pndm", "steps_offset 50", "timestep"],
    );
}
