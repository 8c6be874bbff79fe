//! The denoiser of a pipeline: a `UNet2DModel` (unconditional or class-conditional, pixel or
//! latent space) or a text-conditioned `UNet2DConditionModel` (Stable Diffusion). The sampling
//! run sees both through [`UNet`] / [`UNetConfig`]: channels, resolution rules, memory plans,
//! and one forward graph per model batch.

use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::model::graph::MemoryReport;
use crate::model::unet_2d::config::UNet2DConfig;
use crate::model::unet_2d::{UNet2DModel, UNetGraph};
use crate::model::unet_2d_condition::{CondUNetGraph, UNet2DConditionConfig, UNet2DConditionModel};

use super::engine::Denoiser;

/// The U-Net config of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum UNetConfig {
    /// diffusers `UNet2DModel`.
    Plain(UNet2DConfig),
    /// diffusers `UNet2DConditionModel` (text-conditioned).
    Text(UNet2DConditionConfig),
}

impl UNetConfig {
    /// The `UNet2DModel` config, when it is one.
    pub fn plain(&self) -> Option<&UNet2DConfig> {
        match self {
            UNetConfig::Plain(c) => Some(c),
            UNetConfig::Text(_) => None,
        }
    }

    pub fn in_channels(&self) -> usize {
        match self {
            UNetConfig::Plain(c) => c.in_channels,
            UNetConfig::Text(c) => c.in_channels,
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            UNetConfig::Plain(c) => c.out_channels,
            UNetConfig::Text(c) => c.out_channels,
        }
    }

    /// The config file it was read from.
    pub fn source(&self) -> &Path {
        match self {
            UNetConfig::Plain(c) => &c.source,
            UNetConfig::Text(c) => &c.source,
        }
    }

    /// `num_class_embeds` of a class-conditional `UNet2DModel`.
    pub fn num_class_embeds(&self) -> Option<usize> {
        match self {
            UNetConfig::Plain(c) => c.num_class_embeds,
            UNetConfig::Text(_) => None,
        }
    }

    /// The width of the text embeddings a text-conditioned U-Net attends to.
    pub fn context_dim(&self) -> Option<usize> {
        match self {
            UNetConfig::Plain(_) => None,
            UNetConfig::Text(c) => Some(c.context_dim()),
        }
    }

    /// The sample resolution: the requested height / width, else `sample_size`, else 32×32
    /// (`UNet2DModel`) or 64×64 (`UNet2DConditionModel`, SD 1.x's latent size).
    pub fn resolution(&self, height: Option<usize>, width: Option<usize>) -> (usize, usize) {
        match self {
            UNetConfig::Plain(c) => c.resolution(height, width),
            UNetConfig::Text(c) => {
                let (h, w) = c.sample_size.unwrap_or((64, 64));
                (height.unwrap_or(h), width.unwrap_or(w))
            }
        }
    }

    /// Checks that `height × width` survives the down and up path.
    pub fn check_resolution(&self, height: usize, width: usize) -> Result<()> {
        match self {
            UNetConfig::Plain(c) => c.check_resolution(height, width),
            UNetConfig::Text(c) => c.check_resolution(height, width),
        }
    }

    /// The factor the sample's height and width must be multiples of.
    pub fn downscale(&self) -> usize {
        match self {
            UNetConfig::Plain(c) => 1 << c.num_downsamples().min(16),
            UNetConfig::Text(c) => c.downscale(),
        }
    }
}

/// The U-Net of a pipeline, weights on the GPU.
#[derive(Debug)]
pub enum UNet {
    Plain(UNet2DModel),
    Text(UNet2DConditionModel),
}

impl UNet {
    /// Builds the U-Net `config` describes from `weights` (a checkpoint or random).
    pub fn from_source(
        ctx: &Arc<GpuContext>,
        config: &UNetConfig,
        weights: &crate::model::weights::WeightSource,
    ) -> Result<Self> {
        Ok(match config {
            UNetConfig::Plain(c) => UNet::Plain(UNet2DModel::from_source(ctx, c.clone(), weights)?),
            UNetConfig::Text(c) => {
                UNet::Text(UNet2DConditionModel::from_source(ctx, c.clone(), weights)?)
            }
        })
    }

    /// Parameters loaded.
    pub fn parameters(&self) -> usize {
        match self {
            UNet::Plain(m) => m.parameters,
            UNet::Text(m) => m.parameters,
        }
    }

    /// Its config.
    pub fn config(&self) -> UNetConfig {
        match self {
            UNet::Plain(m) => UNetConfig::Plain(m.config.clone()),
            UNet::Text(m) => UNetConfig::Text(m.config.clone()),
        }
    }

    /// The `UNet2DModel`, when it is one.
    pub fn plain(&self) -> Option<&UNet2DModel> {
        match self {
            UNet::Plain(m) => Some(m),
            UNet::Text(_) => None,
        }
    }

    /// The activation memory of a graph of `rows` samples (`context_len` text tokens for a
    /// text-conditioned U-Net).
    pub fn plan_memory(
        &self,
        rows: usize,
        h: usize,
        w: usize,
        context_len: usize,
    ) -> Result<MemoryReport> {
        match self {
            UNet::Plain(m) => m.plan_memory(rows, h, w),
            UNet::Text(m) => m.plan_memory(rows, h, w, context_len),
        }
    }

    /// The forward graph of `rows` samples.
    pub fn graph(&self, rows: usize, h: usize, w: usize, context_len: usize) -> Result<AnyGraph> {
        Ok(match self {
            UNet::Plain(m) => AnyGraph::Plain(m.graph(rows, h, w)?),
            UNet::Text(m) => AnyGraph::Text(m.graph(rows, h, w, context_len)?),
        })
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        match self {
            UNet::Plain(m) => m.context(),
            UNet::Text(m) => m.context(),
        }
    }
}

/// A forward graph of either U-Net.
#[derive(Debug)]
pub enum AnyGraph {
    Plain(UNetGraph),
    Text(CondUNetGraph),
}

impl AnyGraph {
    fn denoiser(&self) -> &dyn Denoiser {
        match self {
            AnyGraph::Plain(g) => g,
            AnyGraph::Text(g) => g,
        }
    }

    /// Total FLOPs of one forward pass.
    pub fn flops(&self) -> u64 {
        match self {
            AnyGraph::Plain(g) => g.flops(),
            AnyGraph::Text(g) => g.flops(),
        }
    }

    /// Writes `sample`, `timesteps`, and the class labels or text embeddings the model takes.
    pub fn write_inputs(
        &self,
        sample: &[f32],
        timesteps: &[f32],
        labels: Option<&[usize]>,
        context: Option<&[f32]>,
    ) -> Result<()> {
        match self {
            AnyGraph::Plain(g) => g.write_inputs(sample, timesteps, labels),
            AnyGraph::Text(g) => {
                let ctx = g.context();
                g.sample.write(ctx, sample)?;
                g.timesteps.write(ctx, timesteps)?;
                g.write_context(context.unwrap_or(&[]))
            }
        }
    }

    /// Its activation memory plan.
    pub fn memory(&self) -> &MemoryReport {
        match self {
            AnyGraph::Plain(g) => &g.memory,
            AnyGraph::Text(g) => &g.memory,
        }
    }
}

impl Denoiser for AnyGraph {
    fn batch(&self) -> usize {
        self.denoiser().batch()
    }
    fn input(&self) -> &Tensor {
        self.denoiser().input()
    }
    fn timesteps(&self) -> &Tensor {
        self.denoiser().timesteps()
    }
    fn output(&self) -> &Tensor {
        self.denoiser().output()
    }
    fn dispatches(&self) -> &[Dispatch] {
        self.denoiser().dispatches()
    }
}

impl Denoiser for CondUNetGraph {
    fn batch(&self) -> usize {
        self.batch
    }
    fn input(&self) -> &Tensor {
        &self.sample
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
