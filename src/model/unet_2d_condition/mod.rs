//! diffusers `UNet2DConditionModel` (`models/unets/unet_2d_condition.py`), the text-conditioned
//! U-Net of Stable Diffusion 1.x/2.x and SD-Turbo: the `UNet2DModel` skeleton (time embedding,
//! conv_in, down blocks saving skips, mid block, up blocks concatenating them, norm, SiLU,
//! conv_out) whose attention blocks are `Transformer2DModel`s cross-attending to the text
//! encoder's hidden states. The down/up/mid blocks are the generic ones of
//! [`crate::model::unet_2d::blocks`] with [`Transformer2DModel`] as their attention layer.

pub mod config;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::model::blocks::embeddings::{center_input, silu, TimestepEmbedding, Timesteps};
use crate::model::blocks::layers::{Conv2dLayer, ConvApply, GroupNormLayer};
use crate::model::blocks::mid::UNetMidBlock2D;
use crate::model::blocks::resnet::{ResnetConfig, TimeProjections};
use crate::model::blocks::transformer::{Transformer2DModel, TransformerConfig};
use crate::model::graph::{Graph, MemoryReport, Value};
use crate::model::unet_2d::blocks::{BlockSpec, DownBlock2D, UpBlock2D, UpChannels};
use crate::model::unet_2d::{CONFIG_FILE, WEIGHTS_FILE};
use crate::model::weights::{VarBuilder, WeightSource};

use config::BlockSettings;
pub use config::UNet2DConditionConfig;

/// The whole model, weights resident on the GPU.
#[derive(Debug)]
pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    pub time_proj: Timesteps,
    pub time_embedding: TimestepEmbedding,
    pub conv_in: Conv2dLayer,
    pub down_blocks: Vec<DownBlock2D<Transformer2DModel>>,
    pub mid_block: Option<UNetMidBlock2D<Transformer2DModel>>,
    pub up_blocks: Vec<UpBlock2D<Transformer2DModel>>,
    pub conv_norm_out: GroupNormLayer,
    pub conv_out: Conv2dLayer,
    /// Every resnet's `time_emb_proj` as one layer (down blocks, mid block, up blocks, in order):
    /// one launch per forward; each resnet holds its columns
    /// ([`crate::model::blocks::resnet::TimeProjection::Slice`]).
    pub time_projections: TimeProjections,
    /// Number of parameters loaded.
    pub parameters: usize,
    /// Bytes one attention scores chunk may take in the graphs this model records (`None`:
    /// [`Graph::default_attention_budget`]); results do not depend on it.
    pub attention_budget: Option<u64>,
    ctx: Arc<GpuContext>,
}

impl UNet2DConditionModel {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` (a pipeline's
    /// `unet/` folder).
    pub fn load(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        let (config, weights) = Self::read_dir(dir)?;
        Self::from_source(ctx, config, &weights)
    }

    /// The parsed config and memory-mapped weights of a `unet/` folder (no GPU).
    pub fn read_dir(dir: &Path) -> Result<(UNet2DConditionConfig, WeightSource)> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what: "unet/ folder (config.json and diffusion_pytorch_model.safetensors)".into(),
            });
        }
        let config = UNet2DConditionConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = WeightSource::file(&dir.join(WEIGHTS_FILE))?;
        Ok((config, weights))
    }

    /// Builds the model from a config and a weight source; a checkpoint must hold exactly the
    /// model's tensors.
    pub fn from_source(
        ctx: &Arc<GpuContext>,
        config: UNet2DConditionConfig,
        source: &WeightSource,
    ) -> Result<Self> {
        let vb = VarBuilder::root(ctx, source);
        let cfg = &config;
        let ch = &cfg.block_out_channels;
        let c0 = ch[0];
        let temb = cfg.time_embed_dim();
        let time_proj = Timesteps {
            dim: c0,
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
        };
        let time_embedding = TimestepEmbedding::load(&vb.pp("time_embedding"), c0, temb)?;
        let conv_in =
            Conv2dLayer::load(&vb.pp("conv_in"), cfg.in_channels, c0, cfg.conv_in_kernel)?;
        let resnet = |osf: f64| ResnetConfig {
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            temb_channels: Some(temb),
            output_scale_factor: osf,
        };

        let mut down_blocks = Vec::new();
        let mut out_c = c0;
        for i in 0..ch.len() {
            let in_c = out_c;
            out_c = ch[i];
            let s = cfg.down_block(i);
            let tc = transformer_config(cfg, &s, out_c);
            let load = |vb: &VarBuilder| Transformer2DModel::load(vb, &tc);
            let spec = BlockSpec {
                resnet: resnet(1.0),
                layers: s.layers,
                attention: s
                    .cross_attention
                    .then_some(&load as &dyn Fn(&VarBuilder) -> Result<_>),
            };
            let downsample = (i + 1 < ch.len()).then_some(cfg.downsample_padding);
            down_blocks.push(DownBlock2D::load_with(
                &vb.pp("down_blocks").pp(i),
                &spec,
                in_c,
                out_c,
                downsample,
            )?);
        }
        let last = ch[ch.len() - 1];
        let mut mid_block = if cfg.has_mid_block {
            let vb = vb.pp("mid_block");
            let tc = transformer_config(cfg, &cfg.mid_block(), last);
            let attention = Transformer2DModel::load(&vb.pp("attentions.0"), &tc)?;
            Some(UNetMidBlock2D::load_with(
                &vb,
                &resnet(cfg.mid_block_scale_factor),
                attention,
                last,
            )?)
        } else {
            None
        };
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut prev = rev[0];
        for i in 0..rev.len() {
            let channels = UpChannels {
                prev,
                out: rev[i],
                last_skip: rev[(i + 1).min(rev.len() - 1)],
            };
            prev = rev[i];
            let s = cfg.up_block(i);
            let tc = transformer_config(cfg, &s, rev[i]);
            let load = |vb: &VarBuilder| Transformer2DModel::load(vb, &tc);
            let spec = BlockSpec {
                resnet: resnet(1.0),
                layers: s.layers,
                attention: s
                    .cross_attention
                    .then_some(&load as &dyn Fn(&VarBuilder) -> Result<_>),
            };
            up_blocks.push(UpBlock2D::load_with(
                &vb.pp("up_blocks").pp(i),
                &spec,
                channels,
                i + 1 < rev.len(),
            )?);
        }
        let conv_norm_out = GroupNormLayer::load(
            &vb.pp("conv_norm_out"),
            c0,
            cfg.norm_num_groups,
            cfg.norm_eps,
        )?;
        let conv_out = Conv2dLayer::load(
            &vb.pp("conv_out"),
            c0,
            cfg.out_channels,
            cfg.conv_out_kernel,
        )?;
        source.finish()?;
        let resnets = down_blocks
            .iter_mut()
            .flat_map(|b| b.resnets.iter_mut())
            .chain(mid_block.iter_mut().flat_map(|m| m.resnets.iter_mut()))
            .chain(up_blocks.iter_mut().flat_map(|b| b.resnets.iter_mut()));
        let time_projections = TimeProjections::fuse(ctx, resnets, "time_emb_proj")?;
        Ok(UNet2DConditionModel {
            time_proj,
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            time_projections,
            parameters: vb.parameters(),
            attention_budget: None,
            config,
            ctx: Arc::clone(ctx),
        })
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Plans the forward pass for `batch` latents of `height`×`width` conditioned on
    /// `context_len` text tokens.
    pub fn graph(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        context_len: usize,
    ) -> Result<CondUNetGraph> {
        CondUNetGraph::build(self, [batch, height, width, context_len], false)
    }

    /// Like [`UNet2DConditionModel::graph`], with every block output kept under its diffusers
    /// module name (`conv_in`, `down_blocks.0`, …, `mid_block`, `up_blocks.N`, `conv_act`).
    pub fn debug_graph(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        context_len: usize,
    ) -> Result<CondUNetGraph> {
        CondUNetGraph::build(self, [batch, height, width, context_len], true)
    }

    /// The activation memory a graph would allocate, without allocating it.
    pub fn plan_memory(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        context_len: usize,
    ) -> Result<MemoryReport> {
        Ok(Recorded::record(self, [batch, height, width, context_len])?
            .graph
            .plan())
    }
}

/// The transformer of a block with `s`'s settings over `channels` channels.
fn transformer_config(
    cfg: &UNet2DConditionConfig,
    s: &BlockSettings,
    channels: usize,
) -> TransformerConfig {
    TransformerConfig {
        channels,
        heads: s.heads,
        head_dim: channels / s.heads.max(1),
        layers: s.transformer_layers,
        cross_attention_dim: s.cross_attention_dim,
        groups: cfg.norm_num_groups,
        use_linear_projection: cfg.use_linear_projection,
        only_cross_attention: s.only_cross_attention,
    }
}

/// The values of one recorded forward pass.
struct Recorded<'a> {
    graph: Graph<'a>,
    sample: Value,
    timesteps: Value,
    context: Value,
    output: Value,
    blocks: Vec<(String, Value)>,
}

impl<'a> Recorded<'a> {
    /// diffusers' `UNet2DConditionModel.forward`, block by block.
    fn record(model: &'a UNet2DConditionModel, [n, height, width, t]: [usize; 4]) -> Result<Self> {
        let cfg = &model.config;
        if n == 0 || t == 0 {
            return Err(Error::invalid(
                "UNet2DConditionModel forward",
                format!("batch ({n}) and text tokens ({t}) must be at least 1"),
            ));
        }
        cfg.check_resolution(height, width)?;
        let mut g = Graph::new(&model.ctx);
        if let Some(budget) = model.attention_budget {
            g.set_attention_budget(budget);
        }
        let mut blocks = Vec::new();
        let sample = g.input(&[n, cfg.in_channels, height, width], "sample")?;
        let timesteps = g.input(&[n], "timesteps")?;
        let context = g.input(&[n, t, cfg.context_dim()], "encoder_hidden_states")?;

        let t_proj = model.time_proj.record(&mut g, &timesteps, "time_proj")?;
        let temb = model
            .time_embedding
            .record(&mut g, &t_proj, "time_embedding")?;
        blocks.push(("time_embedding".to_owned(), temb.clone()));
        let temb_act = silu(&mut g, &temb, "temb_act")?;
        // Every resnet's time_emb_proj(silu(temb)) in one launch; each reads its columns.
        let time = model
            .time_projections
            .record(&mut g, &temb_act, "time_emb_proj")?;

        let mut x = sample.clone();
        if cfg.center_input_sample {
            x = center_input(&mut g, &sample)?;
        }
        let pad = (cfg.conv_in_kernel - 1) / 2;
        x = model
            .conv_in
            .record(&mut g, &x, &ConvApply::same(pad), "conv_in")?;
        blocks.push(("conv_in".to_owned(), x.clone()));
        let mut skips = vec![x.clone()];
        for (i, block) in model.down_blocks.iter().enumerate() {
            let name = format!("down_blocks.{i}");
            x = block.record(&mut g, &x, &time, Some(&context), &mut skips, &name)?;
            blocks.push((name, x.clone()));
        }
        if let Some(mid) = &model.mid_block {
            x = mid.record_with(&mut g, &x, Some(&time), Some(&context), "mid_block")?;
            blocks.push(("mid_block".to_owned(), x.clone()));
        }
        for (i, block) in model.up_blocks.iter().enumerate() {
            let name = format!("up_blocks.{i}");
            x = block.record(&mut g, &x, &time, Some(&context), &mut skips, &name)?;
            blocks.push((name, x.clone()));
        }
        let h = model.conv_norm_out.record(&mut g, &x, true, "conv_act")?;
        blocks.push(("conv_act".to_owned(), h.clone()));
        let pad = (cfg.conv_out_kernel - 1) / 2;
        let output = model
            .conv_out
            .record(&mut g, &h, &ConvApply::same(pad), "conv_out")?;
        g.keep(&output);
        Ok(Recorded {
            graph: g,
            sample,
            timesteps,
            context,
            output,
            blocks,
        })
    }
}

/// The static forward graph of one (model, batch, resolution, text length).
#[derive(Debug)]
pub struct CondUNetGraph {
    ctx: Arc<GpuContext>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// Latent input [N, C_in, H, W].
    pub sample: Tensor,
    /// Timesteps [N].
    pub timesteps: Tensor,
    /// Text embeddings [N, T, cross_attention_dim] (token-major, as the encoder writes them).
    pub encoder_hidden_states: Tensor,
    /// Output [N, C_out, H, W].
    pub output: Tensor,
    /// Per-block outputs of a [`UNet2DConditionModel::debug_graph`].
    pub activations: BTreeMap<String, Tensor>,
    pub dispatches: Vec<Dispatch>,
    pub memory: MemoryReport,
}

impl CondUNetGraph {
    fn build(model: &UNet2DConditionModel, dims: [usize; 4], keep: bool) -> Result<Self> {
        let rec = Recorded::record(model, dims)?;
        let (finished, activations) = rec.graph.finish_keeping(&rec.blocks, keep)?;
        let [batch, height, width, _] = dims;
        Ok(CondUNetGraph {
            ctx: Arc::clone(&model.ctx),
            batch,
            height,
            width,
            sample: finished.tensor(&rec.sample),
            timesteps: finished.tensor(&rec.timesteps),
            encoder_hidden_states: finished.tensor(&rec.context),
            output: finished.tensor(&rec.output),
            activations,
            dispatches: finished.dispatches,
            memory: finished.memory,
        })
    }

    /// The device the graph runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Writes the text embeddings `[N, T, D]` (row-major), checked against the graph's shape.
    pub fn write_context(&self, embeds: &[f32]) -> Result<()> {
        if embeds.len() != self.encoder_hidden_states.numel() {
            return Err(Error::invalid(
                "UNet2DConditionModel forward",
                format!(
                    "{} text-embedding values for encoder_hidden_states {:?}",
                    embeds.len(),
                    self.encoder_hidden_states.shape
                ),
            ));
        }
        self.encoder_hidden_states.write(&self.ctx, embeds)
    }

    /// One forward pass: write the inputs, submit, read the output back.
    pub fn forward(&self, sample: &[f32], timesteps: &[f32], embeds: &[f32]) -> Result<Vec<f32>> {
        if timesteps.len() != self.batch {
            return Err(Error::invalid(
                "UNet2DConditionModel forward",
                format!(
                    "{} timesteps for a batch of {}",
                    timesteps.len(),
                    self.batch
                ),
            ));
        }
        self.sample.write(&self.ctx, sample)?;
        self.timesteps.write(&self.ctx, timesteps)?;
        self.write_context(embeds)?;
        let refs: Vec<&Dispatch> = self.dispatches.iter().collect();
        self.ctx.submit(&refs)?;
        self.output.read(&self.ctx)
    }

    /// Total FLOPs of one forward pass.
    pub fn flops(&self) -> u64 {
        self.dispatches.iter().map(|d| d.flops).sum()
    }
}
