//! Which parts of a pipeline live on the GPU when, and what that costs: [`Offload`] chooses
//! between every part resident for the pipeline's lifetime and one part at a time (each phase
//! of a run — prompt encode, sampling, decode — uploads its part's weights when it starts and
//! frees them when it ends, as diffusers' `enable_model_cpu_offload`), and [`PipelineMemory`]
//! is the plan both are judged by: per phase, the weights and planned activations.
//!
//! Stable Diffusion 1.5 in f32 is the case this exists for: its parts hold 4067 MiB of weights,
//! over a 4 GiB adapter before any activation, but its largest phase (the U-Net with two rows
//! of guidance at 512×512) plans 3.5 GiB.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Result;

/// Which parts stay on the GPU between uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Offload {
    /// Every part resident when one default-size image plans within the memory budget that
    /// way (weights of every part + the U-Net's and the decode's activations), else
    /// [`Offload::Parts`]. Decided when the pipeline loads.
    #[default]
    Auto,
    /// Every part (text encoder, U-Net, decoder) uploaded at load and kept: no re-upload
    /// between runs or batches, the most memory.
    Off,
    /// One part at a time: a run's phases each upload their part and free it afterwards. The
    /// peak is the largest phase's; every group of batches re-uploads the U-Net and the
    /// decoder once (read again from the files, which the OS caches).
    Parts,
}

impl Offload {
    /// The names `FromStr` takes (the CLI's `--offload` values).
    pub const NAMES: &'static [&'static str] = &["auto", "off", "parts"];

    pub fn name(self) -> &'static str {
        match self {
            Offload::Auto => "auto",
            Offload::Off => "off",
            Offload::Parts => "parts",
        }
    }
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Offload {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Offload::Auto),
            "off" => Ok(Offload::Off),
            "parts" => Ok(Offload::Parts),
            _ => Err(format!(
                "unknown offload mode {s:?}; expected one of {}",
                Offload::NAMES.join(", ")
            )),
        }
    }
}

/// A phase of a run and the part it needs on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The text encoder encodes the run's distinct prompts.
    TextEncode,
    /// The U-Net samples (its activations plus the sampler's buffers).
    Sampling,
    /// The latent decoder decodes (its activations, in row bands past the binding limit).
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::TextEncode => "text encode",
            Phase::Sampling => "U-Net sampling",
            Phase::Decode => "decode",
        }
    }
}

/// One phase's GPU memory: the weights of its part and the activations it plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseMemory {
    pub phase: Phase,
    pub weights: u64,
    pub activations: u64,
}

impl PhaseMemory {
    pub fn total(&self) -> u64 {
        self.weights + self.activations
    }
}

/// A run's memory plan, phase by phase (a pixel-space model has the sampling phase only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PipelineMemory {
    pub phases: Vec<PhaseMemory>,
}

impl PipelineMemory {
    fn get(&self, phase: Phase) -> Option<&PhaseMemory> {
        self.phases.iter().find(|p| p.phase == phase)
    }

    /// Weights of every part.
    pub fn weights(&self) -> u64 {
        self.phases.iter().map(|p| p.weights).sum()
    }

    /// The peak with every part resident: all weights, plus the larger of the prompt encode's
    /// activations (freed before sampling) and the U-Net's with the decode's (a batch's
    /// sampling graphs stay while it decodes, so the next batch reuses them).
    pub fn resident_peak(&self) -> u64 {
        let act = |phase| self.get(phase).map_or(0, |p| p.activations);
        self.weights() + act(Phase::TextEncode).max(act(Phase::Sampling) + act(Phase::Decode))
    }

    /// The peak with one part at a time: the largest phase, and which it is.
    pub fn parts_peak(&self) -> (u64, Option<Phase>) {
        self.phases
            .iter()
            .max_by_key(|p| p.total())
            .map_or((0, None), |p| (p.total(), Some(p.phase)))
    }

    /// The peak under `offload` (resolved: `Auto` counts as resident).
    pub fn peak(&self, offload: Offload) -> u64 {
        match offload {
            Offload::Parts => self.parts_peak().0,
            Offload::Auto | Offload::Off => self.resident_peak(),
        }
    }
}

/// A part that is loaded on first use and, under [`Offload::Parts`], released after each phase.
/// Handing out `Arc`s keeps a part alive while a phase uses it, even if released meanwhile.
#[derive(Debug)]
pub(crate) struct Slot<T>(Mutex<Option<Arc<T>>>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot(Mutex::new(None))
    }
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<T>>> {
        // A panic while loading leaves the slot empty, never half-filled: the poison carries
        // no broken state.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The part, loading it with `load` when absent.
    pub(crate) fn get_or_load(&self, load: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let mut slot = self.lock();
        if let Some(part) = slot.as_ref() {
            return Ok(Arc::clone(part));
        }
        let part = Arc::new(load()?);
        *slot = Some(Arc::clone(&part));
        Ok(part)
    }

    /// The part, if loaded.
    pub(crate) fn loaded(&self) -> Option<Arc<T>> {
        self.lock().clone()
    }

    /// Drops the slot's reference: the GPU buffers go once no phase holds the part.
    pub(crate) fn release(&self) {
        self.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PipelineMemory {
        PipelineMemory {
            phases: vec![
                PhaseMemory {
                    phase: Phase::TextEncode,
                    weights: 100,
                    activations: 5,
                },
                PhaseMemory {
                    phase: Phase::Sampling,
                    weights: 700,
                    activations: 90,
                },
                PhaseMemory {
                    phase: Phase::Decode,
                    weights: 60,
                    activations: 200,
                },
            ],
        }
    }

    #[test]
    fn peaks_count_what_is_alive_together() {
        let p = plan();
        assert_eq!(p.weights(), 860);
        // Resident: every weight + the U-Net's and the decode's activations (> text's 5).
        assert_eq!(p.resident_peak(), 860 + 290);
        assert_eq!(p.parts_peak(), (790, Some(Phase::Sampling)));
        assert_eq!(p.peak(Offload::Parts), 790);
        assert_eq!(p.peak(Offload::Off), 1150);
        // A text encode larger than sampling + decode sets the resident peak.
        let mut q = p.clone();
        q.phases[0].activations = 1000;
        assert_eq!(q.resident_peak(), 1860);
        assert_eq!(q.parts_peak(), (1100, Some(Phase::TextEncode)));
        assert_eq!(PipelineMemory::default().parts_peak(), (0, None));
    }

    #[test]
    fn offload_names_round_trip() {
        for name in Offload::NAMES {
            let o: Offload = name.parse().expect("known name");
            assert_eq!(o.name(), *name);
        }
        let err = "swap".parse::<Offload>().expect_err("unknown");
        assert!(err.contains("auto, off, parts"), "{err}");
    }

    #[test]
    fn slot_loads_once_and_releases() {
        let slot: Slot<u32> = Slot::default();
        let mut loads = 0;
        let a = slot
            .get_or_load(|| {
                loads += 1;
                Ok(7)
            })
            .expect("load");
        let b = slot.get_or_load(|| Ok(8)).expect("cached");
        assert_eq!((*a, *b, loads), (7, 7, 1));
        slot.release();
        assert!(slot.loaded().is_none());
        // The phase's Arc outlives the release.
        assert_eq!(*a, 7);
        let err = slot.get_or_load(|| Err(crate::error::Error::invalid("t", "boom")));
        assert!(err.is_err() && slot.loaded().is_none());
    }
}
