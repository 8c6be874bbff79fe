//! The latent decoder of a latent-diffusion pipeline folder (diffusers `LDMPipeline`'s `vqvae`
//! part: a `VQModel` or an `AutoencoderKL`). The sampler runs on the latents; the decoder turns
//! `latents / scaling_factor` into the image, as `LDMPipeline.__call__` does.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::autoencoder::config::{AutoencoderKLConfig, VQModelConfig};
use crate::model::autoencoder::{
    AutoencoderGraph, AutoencoderKL, DecodeOptions, DecodePlan, VQModel,
};
use crate::model::graph::MemoryReport;
use crate::model::unet_2d::CONFIG_FILE;
use crate::sampling::unet::UNetConfig;

/// A decoder part's class, as `model_index.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderClass {
    VQModel,
    AutoencoderKL,
}

impl DecoderClass {
    /// The class names a decoder part may have.
    pub const NAMES: &'static [&'static str] = &["VQModel", "AutoencoderKL"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "VQModel" => Some(DecoderClass::VQModel),
            "AutoencoderKL" => Some(DecoderClass::AutoencoderKL),
            _ => None,
        }
    }
}

/// A decoder part of a pipeline folder: its class and folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderPart {
    pub class: DecoderClass,
    pub dir: PathBuf,
}

/// A decoder's config, read without a GPU.
#[derive(Debug, Clone, PartialEq)]
pub enum DecoderConfig {
    VQModel(VQModelConfig),
    AutoencoderKL(AutoencoderKLConfig),
}

impl DecoderConfig {
    /// Reads `part`'s config.json and checks its latents are the U-Net's samples.
    pub fn read(part: &DecoderPart, unet: &UNetConfig) -> Result<Self> {
        let path = part.dir.join(CONFIG_FILE);
        let config = match part.class {
            DecoderClass::VQModel => DecoderConfig::VQModel(VQModelConfig::from_file(&path)?),
            DecoderClass::AutoencoderKL => {
                DecoderConfig::AutoencoderKL(AutoencoderKLConfig::from_file(&path)?)
            }
        };
        let (key, channels) = config.latent_channels();
        if channels != unet.in_channels() || channels != unet.out_channels() {
            return Err(Error::Config {
                path,
                key: key.into(),
                message: format!(
                    "the decoder takes {channels}-channel latents but the U-Net ({}) maps {} to {} channels",
                    unet.source().display(),
                    unet.in_channels(),
                    unet.out_channels()
                ),
            });
        }
        Ok(config)
    }

    /// The config key and value of the channels the decoder's input has.
    fn latent_channels(&self) -> (&'static str, usize) {
        match self {
            DecoderConfig::VQModel(c) => match c.vq_embed_dim {
                Some(d) => ("vq_embed_dim", d),
                None => ("latent_channels", c.latent_channels),
            },
            DecoderConfig::AutoencoderKL(c) => ("latent_channels", c.latent_channels),
        }
    }

    /// Channels of the decoded image.
    pub fn out_channels(&self) -> usize {
        match self {
            DecoderConfig::VQModel(c) => c.coder.out_channels,
            DecoderConfig::AutoencoderKL(c) => c.coder.out_channels,
        }
    }

    /// Image pixels per latent pixel along each axis.
    pub fn upscale(&self) -> usize {
        let coder = match self {
            DecoderConfig::VQModel(c) => &c.coder,
            DecoderConfig::AutoencoderKL(c) => &c.coder,
        };
        1 << coder.num_resamples()
    }
}

/// A loaded decoder.
#[derive(Debug)]
pub enum LatentDecoder {
    VQModel(VQModel),
    AutoencoderKL(AutoencoderKL),
}

impl LatentDecoder {
    /// Loads `part` onto `ctx`.
    pub fn load(ctx: &Arc<GpuContext>, part: &DecoderPart) -> Result<Self> {
        Ok(match part.class {
            DecoderClass::VQModel => LatentDecoder::VQModel(VQModel::load(ctx, &part.dir)?),
            DecoderClass::AutoencoderKL => {
                LatentDecoder::AutoencoderKL(AutoencoderKL::load(ctx, &part.dir)?)
            }
        })
    }

    /// What the latents are divided by before decoding.
    pub fn scaling_factor(&self) -> f64 {
        match self {
            LatentDecoder::VQModel(m) => m.scaling_factor(),
            LatentDecoder::AutoencoderKL(m) => m.scaling_factor(),
        }
    }

    /// Image pixels per latent pixel along each axis.
    pub fn upscale(&self) -> usize {
        match self {
            LatentDecoder::VQModel(m) => m.upscale(),
            LatentDecoder::AutoencoderKL(m) => m.upscale(),
        }
    }

    /// Channels of the decoded image.
    pub fn out_channels(&self) -> usize {
        match self {
            LatentDecoder::VQModel(m) => m.config.coder.out_channels,
            LatentDecoder::AutoencoderKL(m) => m.config.coder.out_channels,
        }
    }

    /// Parameters loaded.
    pub fn parameters(&self) -> usize {
        match self {
            LatentDecoder::VQModel(m) => m.parameters,
            LatentDecoder::AutoencoderKL(m) => m.parameters,
        }
    }

    /// The decode graph of `batch` latents of `h`×`w` (a `VQModel` quantises first), in row
    /// bands when an activation would exceed the adapter's binding limit.
    pub fn decode_graph(&self, batch: usize, h: usize, w: usize) -> Result<AutoencoderGraph> {
        self.decode_graph_with(batch, h, w, &DecodeOptions::default())
    }

    /// [`LatentDecoder::decode_graph`] planned against `options` (a lowered binding limit).
    pub fn decode_graph_with(
        &self,
        batch: usize,
        h: usize,
        w: usize,
        options: &DecodeOptions,
    ) -> Result<AutoencoderGraph> {
        match self {
            LatentDecoder::VQModel(m) => m.decode_graph_with(batch, h, w, options),
            LatentDecoder::AutoencoderKL(m) => m.decode_graph_with(batch, h, w, options),
        }
    }

    /// The row bands and activation memory of [`LatentDecoder::decode_graph_with`], without
    /// allocating anything (what `inspect` reports).
    pub fn decode_plan(
        &self,
        batch: usize,
        h: usize,
        w: usize,
        options: &DecodeOptions,
    ) -> Result<DecodePlan> {
        match self {
            LatentDecoder::VQModel(m) => m.decode_plan(batch, h, w, options),
            LatentDecoder::AutoencoderKL(m) => m.decode_plan(batch, h, w, options),
        }
    }

    /// The activation memory of [`LatentDecoder::decode_graph`], without allocating it.
    pub fn plan_memory(&self, batch: usize, h: usize, w: usize) -> Result<MemoryReport> {
        match self {
            LatentDecoder::VQModel(m) => m.plan_memory(batch, h, w),
            LatentDecoder::AutoencoderKL(m) => m.plan_memory(batch, h, w),
        }
    }

    /// `latents / scaling_factor`, decoded: the image `[n, C_out, h·f, w·f]`.
    pub fn decode(&self, graph: &AutoencoderGraph, latents: &[f32]) -> Result<Vec<f32>> {
        // In f32, as diffusers divides float32 latents by the float config value.
        let scale = self.scaling_factor() as f32;
        let scaled: Vec<f32> = latents.iter().map(|&x| x / scale).collect();
        graph.run(&scaled)
    }

    /// One image `[C_out, h·f, w·f]` (values in [−1, 1]) encoded into the latents a sampler
    /// starts from, `encode(image) · scaling_factor`: the mean of an `AutoencoderKL`'s latent
    /// distribution (diffusers' img2img draws a sample from it; its spread is tiny for trained
    /// VAEs, and the mean keeps runs deterministic), a `VQModel`'s unquantised latents.
    pub fn encode(&self, image: &[f32], h: usize, w: usize) -> Result<Vec<f32>> {
        let graph = match self {
            LatentDecoder::VQModel(m) => m.encode_graph(1, h, w)?,
            LatentDecoder::AutoencoderKL(m) => m.encode_graph(1, h, w)?,
        };
        let scale = self.scaling_factor() as f32;
        Ok(graph.run(image)?.into_iter().map(|x| x * scale).collect())
    }
}
