//! `sample_reference`: a plain CPU f64 sampling loop over a [`StepPlan`] (follows the denoising
//! loop of diffusers 0.42 `pipelines/ddpm/pipeline_ddpm.py` / `pipelines/ddim/pipeline_ddim.py`:
//! `latents = init_noise_sigma·noise`, then per timestep `scale_model_input`, the model, and
//! `scheduler.step`). The GPU sampler is tested against it.

use crate::error::{Error, Result};

use super::plan::{StepPlan, HISTORY_SLOTS};

/// Runs `plan` on the CPU.
///
/// * `model(input, t)` returns the network output for `input = model_input_scale · x` at model
///   timestep `t`; it is called once per stage, in the order of `plan.model_timesteps`.
/// * `x_t` is the starting sample, already scaled: `plan.init_noise_sigma · z`.
/// * `noise(step)` returns standard normal noise for inference step `step`; it is called only
///   for the stages that draw noise (at most once per step), in step order.
///
/// Returns the final sample. Errors if the model or the noise returns a vector of the wrong
/// length.
pub fn sample_reference(
    plan: &StepPlan,
    mut model: impl FnMut(&[f64], f64) -> Vec<f64>,
    x_t: &[f64],
    mut noise: impl FnMut(usize) -> Vec<f64>,
) -> Result<Vec<f64>> {
    let len = x_t.len();
    let mut sample = x_t.to_vec();
    let mut history = vec![[0.0; HISTORY_SLOTS]; len];
    let mut input = vec![0.0; len];
    for (step, stage) in plan.stages() {
        for (scaled, &x) in input.iter_mut().zip(&sample) {
            *scaled = stage.model_input_scale * x;
        }
        let output = model(&input, stage.model_timestep);
        if output.len() != len {
            return Err(Error::invalid(
                "sample_reference",
                format!(
                    "the model returned {} values for a sample of {len} at step {step}",
                    output.len()
                ),
            ));
        }
        let drawn = if stage.draws_noise {
            let drawn = noise(step);
            if drawn.len() != len {
                return Err(Error::invalid(
                    "sample_reference",
                    format!(
                        "the noise source returned {} values for a sample of {len} at step {step}",
                        drawn.len()
                    ),
                ));
            }
            drawn
        } else {
            Vec::new()
        };
        for j in 0..len {
            let z = drawn.get(j).copied().unwrap_or(0.0);
            sample[j] = stage.update(sample[j], output[j], &mut history[j], z);
        }
    }
    Ok(sample)
}
