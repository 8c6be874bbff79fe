//! diffusers autoencoders (`models/autoencoders/`): [`AutoencoderKL`] (latent diffusion's KL
//! VAE: `decode` = post_quant_conv → [`Decoder`]; `encode` = [`Encoder`] → quant_conv → the mean
//! of the latent distribution) and [`VQModel`] (`decode` = nearest-codebook quantisation →
//! post_quant_conv → decoder). Latents are decoded as given: dividing by
//! [`AutoencoderKL::scaling_factor`] is the pipeline's job, as in diffusers' pipelines.
//! A decode whose activations exceed the binding limit runs in exact row bands ([`banded`]).

pub mod banded;
pub mod blocks;
pub mod config;
pub mod decoder;
pub mod encoder;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::model::blocks::layers::{Conv2dLayer, ConvApply};
use crate::model::graph::{Graph, MemoryReport, Value};
use crate::model::unet_2d::{CONFIG_FILE, WEIGHTS_FILE};
use crate::model::weights::{Init, VarBuilder, WeightSource};
use crate::ops::elementwise::{slice_channels, SliceChannels};
use crate::ops::vq_quantize::{vq_quantize, VqQuantize};

pub use banded::DecodeOptions;
use config::{AutoencoderKLConfig, VQModelConfig};
pub use decoder::Decoder;
pub use encoder::Encoder;

/// The diffusers module names of the per-block outputs a debug graph keeps.
type Blocks = Vec<(String, Value)>;

/// Checks that `dir` is a directory before reading its files.
fn model_dir(dir: &Path, class: &str) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::MissingFile {
            path: dir.to_path_buf(),
            what: format!(
                "{class} directory (expected config.json and diffusion_pytorch_model.safetensors)"
            ),
        })
    }
}

/// A 1×1 conv when present, else the input.
fn optional_conv<'a>(
    g: &mut Graph<'a>,
    conv: Option<&'a Conv2dLayer>,
    x: &Value,
    name: &str,
    blocks: &mut Blocks,
) -> Result<Value> {
    match conv {
        Some(c) => {
            let out = c.record(g, x, &ConvApply::same(0), name)?;
            blocks.push((name.to_owned(), out.clone()));
            Ok(out)
        }
        None => Ok(x.clone()),
    }
}

fn check_batch(n: usize, what: &str) -> Result<()> {
    if n == 0 {
        Err(Error::invalid(what, "batch size must be at least 1"))
    } else {
        Ok(())
    }
}

/// A latent size must be positive.
fn check_latent_size(h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 {
        return Err(Error::Resolution {
            height: h,
            width: w,
            message: "the latent height and width must be at least 1".to_owned(),
        });
    }
    Ok(())
}

/// Every downsampler (a 3×3 stride-2 conv after a (0, 1, 0, 1) pad) maps a size s ≥ 2 to ⌊s/2⌋.
fn check_image_size(h: usize, w: usize, downs: usize) -> Result<()> {
    let need = 1usize.checked_shl(downs as u32).unwrap_or(usize::MAX);
    if h < need || w < need {
        return Err(Error::Resolution {
            height: h,
            width: w,
            message: format!(
                "the encoder halves the image {downs} time(s) (len(block_out_channels) - 1), so \
                 height and width must be at least {need}"
            ),
        });
    }
    Ok(())
}

/// A decode graph's plan: its row bands (1: unsplit) and activation memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodePlan {
    /// Row bands of the decode after the mid block; 1 when every activation fits whole.
    pub bands: usize,
    /// The binding limit the plan fits (the adapter's, or the lower one asked for).
    pub binding_limit: u64,
    pub memory: MemoryReport,
}

/// The fewest bands (1 = unsplit, up to one latent row per band) whose graph fits the binding
/// limit: `record(bands)` records the graph, failing with [`Error::BufferTooLarge`] when a value
/// does not fit. Fitting depends on the band height, which only shrinks as bands are added, so
/// after 1 and `latent_h` bands a bisection finds the fewest (O(log h) recordings, none of which
/// allocates). `lowered` is the limit of [`DecodeOptions`] when it is below the device's.
fn fewest_bands<'a>(
    latent_h: usize,
    lowered: Option<u64>,
    mut record: impl FnMut(usize) -> Result<Recorded<'a>>,
) -> Result<Recorded<'a>> {
    let whole = record(1);
    if latent_h <= 1 || !matches!(whole, Err(Error::BufferTooLarge { .. })) {
        return whole.map_err(|e| no_band_fits(e, 1, lowered));
    }
    let (mut fails, mut fits) = (1, latent_h);
    let mut best = record(latent_h).map_err(|e| no_band_fits(e, latent_h, lowered))?;
    while fits - fails > 1 {
        let bands = fails + (fits - fails) / 2;
        match record(bands) {
            Ok(recorded) => {
                fits = bands;
                best = recorded;
            }
            Err(Error::BufferTooLarge { .. }) => fails = bands,
            Err(e) => return Err(e),
        }
    }
    Ok(best)
}

/// A decode that does not fit even in `bands` bands of one latent row: the error says so (and
/// whether the limit was lowered); any other error passes through.
fn no_band_fits(e: Error, bands: usize, lowered: Option<u64>) -> Error {
    let Error::BufferTooLarge {
        what,
        size,
        limit,
        adapter,
    } = e
    else {
        return e;
    };
    let lowered = match lowered {
        Some(l) if l == limit => format!(
            "; {limit} bytes is the lowered decode binding limit \
             (DecodeOptions::binding_limit / --decode-binding-limit), not the adapter's"
        ),
        _ => String::new(),
    };
    Error::BufferTooLarge {
        what: format!(
            "{what} (the decode does not fit even in {bands} row band(s), one per latent row; \
             the latent-resolution part runs whole{lowered})"
        ),
        size,
        limit,
        adapter,
    }
}

/// The limit of `options` when it is below the device's.
fn lowered_limit(ctx: &GpuContext, options: &DecodeOptions) -> Option<u64> {
    options
        .binding_limit
        .filter(|&l| l < ctx.max_binding_bytes())
}

/// The graph a decode records into: the device's binding limit, or the lower one of `options`.
fn decode_graph_for<'a>(ctx: &'a GpuContext, options: &DecodeOptions) -> Graph<'a> {
    match options.binding_limit {
        Some(limit) => Graph::with_binding_limit(ctx, limit),
        None => Graph::new(ctx),
    }
}

/// The decoder proper, whole or in `bands` row bands.
fn record_decoder<'a>(
    decoder: &'a Decoder,
    g: &mut Graph<'a>,
    z: &Value,
    bands: usize,
    blocks: &mut Blocks,
) -> Result<Value> {
    if bands == 1 {
        decoder.record(g, z, "decoder", blocks)
    } else {
        let rows = banded::latent_bands(z.shape[2], bands);
        decoder.record_banded(g, z, &rows, "decoder")
    }
}

/// diffusers `AutoencoderKL`, weights resident on the GPU.
#[derive(Debug)]
pub struct AutoencoderKL {
    pub config: AutoencoderKLConfig,
    pub encoder: Encoder,
    /// 1×1 conv over the `2·latent` moments (absent with `use_quant_conv: false`).
    pub quant_conv: Option<Conv2dLayer>,
    /// 1×1 conv over the latents (absent with `use_post_quant_conv: false`).
    pub post_quant_conv: Option<Conv2dLayer>,
    pub decoder: Decoder,
    /// Number of parameters loaded.
    pub parameters: usize,
    ctx: Arc<GpuContext>,
}

impl AutoencoderKL {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`.
    pub fn load(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        model_dir(dir, "AutoencoderKL")?;
        let config = AutoencoderKLConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = WeightSource::file(&dir.join(WEIGHTS_FILE))?;
        Self::from_source(ctx, config, &weights)
    }

    /// Builds the model from a parsed config and a weight source; a checkpoint must hold exactly
    /// the model's tensors.
    pub fn from_source(
        ctx: &Arc<GpuContext>,
        config: AutoencoderKLConfig,
        source: &WeightSource,
    ) -> Result<Self> {
        let vb = VarBuilder::root(ctx, source);
        let latent = config.latent_channels;
        let encoder = Encoder::load(&vb.pp("encoder"), &config.coder, 2 * latent)?;
        let quant_conv = match config.use_quant_conv {
            true => Some(Conv2dLayer::load(
                &vb.pp("quant_conv"),
                2 * latent,
                2 * latent,
                1,
            )?),
            false => None,
        };
        let post_quant_conv = match config.use_post_quant_conv {
            true => Some(Conv2dLayer::load(
                &vb.pp("post_quant_conv"),
                latent,
                latent,
                1,
            )?),
            false => None,
        };
        let decoder = Decoder::load(&vb.pp("decoder"), &config.coder, latent)?;
        source.finish()?;
        Ok(AutoencoderKL {
            encoder,
            quant_conv,
            post_quant_conv,
            decoder,
            parameters: vb.parameters(),
            config,
            ctx: Arc::clone(ctx),
        })
    }

    /// The latent scale the pipeline divides latents by before [`AutoencoderKL::decode_graph`]
    /// (config `scaling_factor`, diffusers' default 0.18215 when absent).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Output pixels per latent pixel along each axis (2^(number of upsamplers)).
    pub fn upscale(&self) -> usize {
        1 << self.config.coder.num_resamples()
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn record_decode(
        &self,
        (n, h, w): (usize, usize, usize),
        options: &DecodeOptions,
        bands: usize,
    ) -> Result<Recorded<'_>> {
        check_batch(n, "AutoencoderKL decode")?;
        check_latent_size(h, w)?;
        let mut g = decode_graph_for(&self.ctx, options);
        let mut blocks = Vec::new();
        let latents = g.input(&[n, self.config.latent_channels, h, w], "latents")?;
        let z = optional_conv(
            &mut g,
            self.post_quant_conv.as_ref(),
            &latents,
            "post_quant_conv",
            &mut blocks,
        )?;
        let output = record_decoder(&self.decoder, &mut g, &z, bands, &mut blocks)?;
        Ok(Recorded::new(g, latents, output, blocks, bands))
    }

    /// The decode recorded in the fewest row bands that fit the binding limit.
    fn record_fitting(
        &self,
        size: (usize, usize, usize),
        options: &DecodeOptions,
    ) -> Result<Recorded<'_>> {
        let lowered = lowered_limit(&self.ctx, options);
        fewest_bands(size.1, lowered, |bands| {
            self.record_decode(size, options, bands)
        })
    }

    /// The decode graph for `batch` latents of `latent_h`×`latent_w`: `sample = decoder(
    /// post_quant_conv(latents))`, `[batch, out_channels, latent_h·2^k, latent_w·2^k]`; in row
    /// bands when an activation would exceed the adapter's binding limit.
    pub fn decode_graph(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
    ) -> Result<AutoencoderGraph> {
        self.decode_graph_with(batch, latent_h, latent_w, &DecodeOptions::default())
    }

    /// [`AutoencoderKL::decode_graph`] planned against `options` (a lowered binding limit).
    pub fn decode_graph_with(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
        options: &DecodeOptions,
    ) -> Result<AutoencoderGraph> {
        self.record_fitting((batch, latent_h, latent_w), options)?
            .finish(&self.ctx, false)
    }

    /// The bands and activation memory [`AutoencoderKL::decode_graph_with`] would use, without
    /// allocating anything.
    pub fn decode_plan(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
        options: &DecodeOptions,
    ) -> Result<DecodePlan> {
        Ok(self
            .record_fitting((batch, latent_h, latent_w), options)?
            .plan())
    }

    /// Like [`AutoencoderKL::decode_graph`], keeping every per-block output (`post_quant_conv`,
    /// `decoder.conv_in`, `decoder.mid_block`, `decoder.up_blocks.i`, `decoder.conv_act`).
    pub fn debug_decode_graph(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
    ) -> Result<AutoencoderGraph> {
        self.record_decode((batch, latent_h, latent_w), &DecodeOptions::default(), 1)?
            .finish(&self.ctx, true)
    }

    /// The activation memory a decode graph would allocate, without allocating it.
    pub fn plan_memory(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
    ) -> Result<MemoryReport> {
        Ok(self
            .decode_plan(batch, latent_h, latent_w, &DecodeOptions::default())?
            .memory)
    }

    fn record_encode(&self, n: usize, h: usize, w: usize) -> Result<Recorded<'_>> {
        check_batch(n, "AutoencoderKL encode")?;
        check_image_size(h, w, self.config.coder.num_resamples())?;
        let mut g = Graph::new(&self.ctx);
        let mut blocks = Vec::new();
        let image = g.input(&[n, self.config.coder.in_channels, h, w], "image")?;
        let moments = self
            .encoder
            .record(&mut g, &image, "encoder", &mut blocks)?;
        let moments = optional_conv(
            &mut g,
            self.quant_conv.as_ref(),
            &moments,
            "quant_conv",
            &mut blocks,
        )?;
        // The distribution's mean: the first latent_channels channels of the moments.
        let latent = self.config.latent_channels;
        let mut shape = moments.shape.clone();
        shape[1] = latent;
        let mi = moments.id();
        let mean = g.op("latent_mean", &[&moments], &shape, move |b, out| {
            let args = SliceChannels {
                x: b.get(mi),
                out,
                start: 0,
            };
            slice_channels(b.ctx, &args, "latent_mean")
        })?;
        Ok(Recorded::new(g, image, mean, blocks, 1))
    }

    /// The encode graph for `batch` images of `height`×`width`: the mean of diffusers'
    /// `encode(x).latent_dist` (`[batch, latent_channels, ⌊height/2^k⌋, ⌊width/2^k⌋]`),
    /// unscaled (multiplying by `scaling_factor` is the pipeline's job).
    pub fn encode_graph(
        &self,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<AutoencoderGraph> {
        self.record_encode(batch, height, width)?
            .finish(&self.ctx, false)
    }

    /// Like [`AutoencoderKL::encode_graph`], keeping every per-block output (`encoder.conv_in`,
    /// `encoder.down_blocks.i`, `encoder.mid_block`, `encoder.conv_act`, `encoder.conv_out`,
    /// `quant_conv`).
    pub fn debug_encode_graph(
        &self,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<AutoencoderGraph> {
        self.record_encode(batch, height, width)?
            .finish(&self.ctx, true)
    }
}

/// diffusers `VQModel`, weights resident on the GPU.
#[derive(Debug)]
pub struct VQModel {
    pub config: VQModelConfig,
    pub encoder: Encoder,
    /// 1×1 conv `latent_channels → vq_embed_dim`.
    pub quant_conv: Conv2dLayer,
    /// `quantize.embedding.weight` `[num_vq_embeddings, vq_embed_dim]`.
    pub codebook: Tensor,
    /// 1×1 conv `vq_embed_dim → latent_channels`.
    pub post_quant_conv: Conv2dLayer,
    pub decoder: Decoder,
    /// Number of parameters loaded.
    pub parameters: usize,
    ctx: Arc<GpuContext>,
}

impl VQModel {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`.
    pub fn load(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        model_dir(dir, "VQModel")?;
        let config = VQModelConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = WeightSource::file(&dir.join(WEIGHTS_FILE))?;
        Self::from_source(ctx, config, &weights)
    }

    /// Builds the model from a parsed config and a weight source; a checkpoint must hold exactly
    /// the model's tensors (a codebook of the wrong shape names `quantize.embedding.weight`).
    pub fn from_source(
        ctx: &Arc<GpuContext>,
        config: VQModelConfig,
        source: &WeightSource,
    ) -> Result<Self> {
        let vb = VarBuilder::root(ctx, source);
        let latent = config.latent_channels;
        let dim = config.embed_dim();
        let entries = config.num_vq_embeddings;
        let encoder = Encoder::load(&vb.pp("encoder"), &config.coder, latent)?;
        let quant_conv = Conv2dLayer::load(&vb.pp("quant_conv"), latent, dim, 1)?;
        // diffusers initialises the codebook uniform ±1/K.
        let codebook = vb.pp("quantize.embedding").get(
            "weight",
            &[entries, dim],
            Init::Uniform(1.0 / entries as f32),
        )?;
        let post_quant_conv = Conv2dLayer::load(&vb.pp("post_quant_conv"), dim, latent, 1)?;
        let decoder = Decoder::load(&vb.pp("decoder"), &config.coder, latent)?;
        source.finish()?;
        Ok(VQModel {
            encoder,
            quant_conv,
            codebook,
            post_quant_conv,
            decoder,
            parameters: vb.parameters(),
            config,
            ctx: Arc::clone(ctx),
        })
    }

    /// The latent scale the pipeline divides latents by before decoding: config
    /// `scaling_factor`, or 1.0 when absent (see [`VQModelConfig::scaling_factor`]).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor()
    }

    /// Output pixels per latent pixel along each axis (2^(number of upsamplers)).
    pub fn upscale(&self) -> usize {
        1 << self.config.coder.num_resamples()
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn record_decode(
        &self,
        (n, h, w): (usize, usize, usize),
        quantize: bool,
        options: &DecodeOptions,
        bands: usize,
    ) -> Result<Recorded<'_>> {
        check_batch(n, "VQModel decode")?;
        check_latent_size(h, w)?;
        if !quantize && self.config.lookup_from_codebook {
            return Err(Error::invalid(
                "VQModel decode",
                format!(
                    "force_not_quantize with lookup_from_codebook: true (in {}) reads the input as \
                     codebook indices, which is not supported; decode with quantisation",
                    self.config.source.display()
                ),
            ));
        }
        let mut g = decode_graph_for(&self.ctx, options);
        let mut blocks = Vec::new();
        let latents = g.input(&[n, self.config.embed_dim(), h, w], "latents")?;
        let mut z = latents.clone();
        if quantize {
            let (li, codebook) = (latents.id(), &self.codebook);
            z = g.op("quantize", &[&latents], &latents.shape, move |b, out| {
                let args = VqQuantize {
                    z: b.get(li),
                    codebook,
                    out,
                };
                vq_quantize(b.ctx, &args, "quantize")
            })?;
            blocks.push(("quantize".to_owned(), z.clone()));
        }
        let z = optional_conv(
            &mut g,
            Some(&self.post_quant_conv),
            &z,
            "post_quant_conv",
            &mut blocks,
        )?;
        let output = record_decoder(&self.decoder, &mut g, &z, bands, &mut blocks)?;
        Ok(Recorded::new(g, latents, output, blocks, bands))
    }

    /// The decode recorded in the fewest row bands that fit the binding limit.
    fn record_fitting(
        &self,
        size: (usize, usize, usize),
        quantize: bool,
        options: &DecodeOptions,
    ) -> Result<Recorded<'_>> {
        let lowered = lowered_limit(&self.ctx, options);
        fewest_bands(size.1, lowered, |bands| {
            self.record_decode(size, quantize, options, bands)
        })
    }

    /// The decode graph for `batch` latents `[batch, vq_embed_dim, latent_h, latent_w]`:
    /// nearest-codebook quantisation on the GPU, post_quant_conv, decoder; in row bands when an
    /// activation would exceed the adapter's binding limit.
    pub fn decode_graph(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
    ) -> Result<AutoencoderGraph> {
        self.decode_graph_with(batch, latent_h, latent_w, &DecodeOptions::default())
    }

    /// [`VQModel::decode_graph`] planned against `options` (a lowered binding limit).
    pub fn decode_graph_with(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
        options: &DecodeOptions,
    ) -> Result<AutoencoderGraph> {
        self.record_fitting((batch, latent_h, latent_w), true, options)?
            .finish(&self.ctx, false)
    }

    /// The bands and activation memory [`VQModel::decode_graph_with`] would use, without
    /// allocating anything.
    pub fn decode_plan(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
        options: &DecodeOptions,
    ) -> Result<DecodePlan> {
        Ok(self
            .record_fitting((batch, latent_h, latent_w), true, options)?
            .plan())
    }

    /// diffusers' `decode(h, force_not_quantize=True)`: post_quant_conv and decoder only.
    pub fn decode_graph_not_quantized(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
    ) -> Result<AutoencoderGraph> {
        self.record_fitting(
            (batch, latent_h, latent_w),
            false,
            &DecodeOptions::default(),
        )?
        .finish(&self.ctx, false)
    }

    /// Like [`VQModel::decode_graph`], keeping every per-block output (`quantize`,
    /// `post_quant_conv`, `decoder.conv_in`, `decoder.mid_block`, `decoder.up_blocks.i`,
    /// `decoder.conv_act`).
    pub fn debug_decode_graph(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
    ) -> Result<AutoencoderGraph> {
        self.record_decode(
            (batch, latent_h, latent_w),
            true,
            &DecodeOptions::default(),
            1,
        )?
        .finish(&self.ctx, true)
    }

    /// The activation memory a (quantising) decode graph would allocate, without allocating it.
    pub fn plan_memory(
        &self,
        batch: usize,
        latent_h: usize,
        latent_w: usize,
    ) -> Result<MemoryReport> {
        Ok(self
            .decode_plan(batch, latent_h, latent_w, &DecodeOptions::default())?
            .memory)
    }

    fn record_encode(&self, n: usize, h: usize, w: usize) -> Result<Recorded<'_>> {
        check_batch(n, "VQModel encode")?;
        check_image_size(h, w, self.config.coder.num_resamples())?;
        let mut g = Graph::new(&self.ctx);
        let mut blocks = Vec::new();
        let image = g.input(&[n, self.config.coder.in_channels, h, w], "image")?;
        let x = self
            .encoder
            .record(&mut g, &image, "encoder", &mut blocks)?;
        let latents = self
            .quant_conv
            .record(&mut g, &x, &ConvApply::same(0), "quant_conv")?;
        blocks.push(("quant_conv".to_owned(), latents.clone()));
        Ok(Recorded::new(g, image, latents, blocks, 1))
    }

    /// The encode graph: diffusers' `encode(x).latents` (encoder → quant_conv, not quantised),
    /// `[batch, vq_embed_dim, ⌊height/2^k⌋, ⌊width/2^k⌋]`.
    pub fn encode_graph(
        &self,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<AutoencoderGraph> {
        self.record_encode(batch, height, width)?
            .finish(&self.ctx, false)
    }

    /// Like [`VQModel::encode_graph`], keeping every per-block output.
    pub fn debug_encode_graph(
        &self,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<AutoencoderGraph> {
        self.record_encode(batch, height, width)?
            .finish(&self.ctx, true)
    }
}

/// The values of one recorded graph.
struct Recorded<'a> {
    graph: Graph<'a>,
    input: Value,
    output: Value,
    blocks: Blocks,
    /// Row bands of a decode (1: unsplit, and every encode).
    bands: usize,
}

impl<'a> Recorded<'a> {
    fn new(
        mut graph: Graph<'a>,
        input: Value,
        output: Value,
        blocks: Blocks,
        bands: usize,
    ) -> Self {
        graph.keep(&output);
        Recorded {
            graph,
            input,
            output,
            blocks,
            bands,
        }
    }

    fn plan(&self) -> DecodePlan {
        DecodePlan {
            bands: self.bands,
            binding_limit: self.graph.binding_limit(),
            memory: self.graph.plan(),
        }
    }

    fn finish(mut self, ctx: &Arc<GpuContext>, keep: bool) -> Result<AutoencoderGraph> {
        if keep {
            for (_, v) in &self.blocks {
                self.graph.keep(v);
            }
        }
        let finished = self.graph.finish()?;
        let activations = if keep {
            self.blocks
                .iter()
                .map(|(name, v)| (name.clone(), finished.tensor(v)))
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(AutoencoderGraph {
            ctx: Arc::clone(ctx),
            input: finished.tensor(&self.input),
            output: finished.tensor(&self.output),
            activations,
            dispatches: finished.dispatches,
            memory: finished.memory,
            bands: self.bands,
        })
    }
}

/// A static encode or decode graph for one (model, batch, size): its input (latents for a
/// decode, images for an encode), its output, and the recorded dispatches.
#[derive(Debug)]
pub struct AutoencoderGraph {
    ctx: Arc<GpuContext>,
    /// Decode: latents `[N, C, h, w]`; encode: images `[N, C, H, W]`.
    pub input: Tensor,
    /// Decode: the image `[N, C_out, H, W]` in about [-1, 1]; encode: the latents.
    pub output: Tensor,
    /// Per-block outputs under the diffusers module names; only in a debug graph.
    pub activations: BTreeMap<String, Tensor>,
    pub dispatches: Vec<Dispatch>,
    /// Activation memory: planned (what this graph allocated) and one-buffer-per-op.
    pub memory: MemoryReport,
    /// Row bands the decode runs in after the mid block (1: unsplit; an encode is always 1).
    pub bands: usize,
}

impl AutoencoderGraph {
    /// Records the whole graph into one command buffer and submits it (no wait); the input
    /// tensor is written (or produced on the GPU) beforehand.
    pub fn submit(&self) -> Result<()> {
        let refs: Vec<&Dispatch> = self.dispatches.iter().collect();
        self.ctx.submit(&refs)
    }

    /// Writes `input`, runs the graph and reads the output back.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>> {
        self.input.write(&self.ctx, input)?;
        self.submit()?;
        self.output.read(&self.ctx)
    }

    /// Total FLOPs of one run (2 per multiply-add) as counted by the dispatches.
    pub fn flops(&self) -> u64 {
        self.dispatches.iter().map(|d| d.flops).sum()
    }
}
