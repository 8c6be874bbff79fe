//! The per-adapter correctness check: the `google_flags` fixture (a tiny model with the DDPM
//! checkpoints' flags, its weights, and diffusers' float64 output for a fixed input, made by
//! `scripts/make_fixtures.py`) is compiled into the binary and run through the adapter. An
//! adapter whose output is off by more than [`TOLERANCE`] of the output's scale is flagged
//! "WRONG" and left out of the ranking.

use std::path::Path;
use std::sync::Arc;

use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::unet_2d::config::UNet2DConfig;
use crate::model::unet_2d::UNet2DModel;
use crate::model::weights::{WeightSource, Weights};
use crate::reference::compare_scaled;

/// The fixture's name in reports.
pub const FIXTURE: &str = "google_flags";
/// Pass when max |ours − diffusers| ≤ TOLERANCE · max |diffusers| (the parity tests' bound).
pub const TOLERANCE: f64 = 1e-4;

const CONFIG: &str = include_str!("../../tests/fixtures/google_flags/config.json");
const WEIGHTS: &[u8] =
    include_bytes!("../../tests/fixtures/google_flags/diffusion_pytorch_model.safetensors");
const IO: &[u8] = include_bytes!("../../tests/fixtures/google_flags/io.safetensors");

/// The fixture's input and diffusers' output.
#[derive(Debug, Clone)]
pub struct FixtureIo {
    /// `sample` shape [N, C, H, W].
    pub shape: Vec<usize>,
    pub sample: Vec<f32>,
    pub timesteps: Vec<f32>,
    /// diffusers' output (computed in float64, stored as f32).
    pub output: Vec<f32>,
}

/// The verdict of one correctness check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Correctness {
    pub fixture: String,
    /// `"ok"` or `"WRONG"`.
    pub status: String,
    pub ok: bool,
    pub max_abs_err: f64,
    /// max |ours − reference| / max |reference|.
    pub max_rel_err: f64,
    pub tolerance: f64,
    /// The comparison report (bad element count, worst and first bad element).
    pub detail: String,
}

fn io_tensor(st: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |message: String| Error::SafeTensors {
        path: format!("<embedded {FIXTURE}>/io.safetensors").into(),
        message,
    };
    let t = st
        .tensor(name)
        .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(bad(format!("tensor {name:?} is {:?}, not F32", t.dtype())));
    }
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((t.shape().to_vec(), data))
}

/// The embedded fixture's input and reference output.
pub fn fixture_io() -> Result<FixtureIo> {
    let st = SafeTensors::deserialize(IO).map_err(|e| Error::SafeTensors {
        path: format!("<embedded {FIXTURE}>/io.safetensors").into(),
        message: e.to_string(),
    })?;
    let (shape, sample) = io_tensor(&st, "sample")?;
    let (_, timesteps) = io_tensor(&st, "timesteps")?;
    let (_, output) = io_tensor(&st, "output")?;
    if shape.len() != 4 {
        return Err(Error::invalid(
            "correctness fixture",
            format!("sample has shape {shape:?}, expected [N, C, H, W]"),
        ));
    }
    Ok(FixtureIo {
        shape,
        sample,
        timesteps,
        output,
    })
}

/// Compares an adapter's output with the reference.
pub fn judge(got: &[f32], reference: &[f32]) -> Correctness {
    let want: Vec<f64> = reference.iter().map(|&x| f64::from(x)).collect();
    let c = compare_scaled(&format!("{FIXTURE} output"), got, &want, TOLERANCE);
    let ok = c.ok();
    Correctness {
        fixture: FIXTURE.to_owned(),
        status: if ok { "ok" } else { "WRONG" }.to_owned(),
        ok,
        max_abs_err: c.max_abs,
        max_rel_err: c.max_rel_to_scale,
        tolerance: TOLERANCE,
        detail: c.to_string(),
    }
}

/// Runs the fixture's forward pass on `ctx` and judges the output.
pub fn check_adapter(ctx: &Arc<GpuContext>) -> Result<Correctness> {
    let io = fixture_io()?;
    let dir = Path::new("<embedded google_flags>");
    let config = UNet2DConfig::from_json_str(CONFIG, &dir.join("config.json"))?;
    let weights = WeightSource::Checkpoint(Weights::from_bytes(
        dir.join("diffusion_pytorch_model.safetensors"),
        WEIGHTS,
    )?);
    let model = UNet2DModel::from_source(ctx, config, &weights)?;
    let graph = model.graph(io.shape[0], io.shape[2], io.shape[3])?;
    let got = graph.forward(&io.sample, &io.timesteps, None)?;
    Ok(judge(&got, &io.output))
}
