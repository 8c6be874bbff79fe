//! diffusers `UNet2DModel` (`models/unets/unet_2d.py`): the module tree, whose fields are the
//! diffusers names, loads from any [`WeightSource`]; its forward graph is recorded once per
//! (batch, resolution). The top level only delegates to the blocks, in diffusers' order.

pub mod blocks;
pub mod config;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::model::blocks::embeddings::{
    add_class_embedding, center_input, silu, TimestepEmbedding, Timesteps,
};
use crate::model::blocks::layers::{Conv2dLayer, ConvApply, EmbeddingLayer, GroupNormLayer};
use crate::model::graph::{Graph, MemoryReport, Value};
use crate::model::weights::{VarBuilder, WeightSource};

use crate::model::blocks::mid::UNetMidBlock2D;
use crate::model::blocks::resnet::TimeProjections;
use blocks::{load_mid_block, DownBlock2D, UpBlock2D, UpChannels};
use config::{DownBlock, UNet2DConfig, UpBlock};

/// File names inside a diffusers model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// The whole model, weights resident on the GPU.
#[derive(Debug)]
pub struct UNet2DModel {
    pub config: UNet2DConfig,
    pub time_proj: Timesteps,
    pub time_embedding: TimestepEmbedding,
    /// `class_embedding.weight` [num_class_embeds, time_embed_dim].
    pub class_embedding: Option<EmbeddingLayer>,
    pub conv_in: Conv2dLayer,
    pub down_blocks: Vec<DownBlock2D>,
    pub mid_block: Option<UNetMidBlock2D>,
    pub up_blocks: Vec<UpBlock2D>,
    pub conv_norm_out: GroupNormLayer,
    pub conv_out: Conv2dLayer,
    /// Every resnet's `time_emb_proj` as one layer (down blocks, mid block, up blocks, in order):
    /// one launch per forward; each resnet holds its columns
    /// ([`crate::model::blocks::resnet::TimeProjection::Slice`]).
    pub time_projections: TimeProjections,
    /// Number of parameters loaded.
    pub parameters: usize,
    ctx: Arc<GpuContext>,
}

impl UNet2DModel {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`, validating every
    /// tensor's presence and shape and rejecting unused tensors.
    pub fn load(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        let (config, weights) = Self::read_dir(dir)?;
        Self::from_source(ctx, config, &weights)
    }

    /// The parsed `config.json` and the memory-mapped weights of a model directory (no GPU).
    pub fn read_dir(dir: &Path) -> Result<(UNet2DConfig, WeightSource)> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what:
                    "model directory (expected config.json and diffusion_pytorch_model.safetensors)"
                        .into(),
            });
        }
        let config = UNet2DConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = WeightSource::file(&dir.join(WEIGHTS_FILE))?;
        Ok((config, weights))
    }

    /// Builds the model from a parsed config and a weight source (a checkpoint, tensors in
    /// memory, or random initialisation). A checkpoint must hold exactly the model's tensors.
    pub fn from_source(
        ctx: &Arc<GpuContext>,
        config: UNet2DConfig,
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
        let class_embedding = match cfg.num_class_embeds {
            Some(n) => Some(EmbeddingLayer::load(&vb.pp("class_embedding"), n, temb)?),
            None => None,
        };
        let conv_in = Conv2dLayer::load(&vb.pp("conv_in"), cfg.in_channels, c0, 3)?;

        let mut down_blocks = Vec::new();
        let mut out_c = c0;
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let in_c = out_c;
            out_c = ch[i];
            down_blocks.push(DownBlock2D::load(
                &vb.pp("down_blocks").pp(i),
                cfg,
                *kind == DownBlock::AttnDown,
                in_c,
                out_c,
                i + 1 == ch.len(),
            )?);
        }
        let mut mid_block = match cfg.mid_block_type {
            Some(_) => Some(load_mid_block(&vb.pp("mid_block"), cfg, ch[ch.len() - 1])?),
            None => None,
        };
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_c = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let channels = UpChannels {
                prev: out_c,
                out: rev[i],
                last_skip: rev[(i + 1).min(rev.len() - 1)],
            };
            out_c = rev[i];
            up_blocks.push(UpBlock2D::load(
                &vb.pp("up_blocks").pp(i),
                cfg,
                *kind == UpBlock::AttnUp,
                channels,
                i + 1 == rev.len(),
            )?);
        }
        let conv_norm_out = GroupNormLayer::load(
            &vb.pp("conv_norm_out"),
            c0,
            cfg.norm_num_groups,
            cfg.norm_eps,
        )?;
        let conv_out = Conv2dLayer::load(&vb.pp("conv_out"), c0, cfg.out_channels, 3)?;
        source.finish()?;
        let resnets = down_blocks
            .iter_mut()
            .flat_map(|b| b.resnets.iter_mut())
            .chain(mid_block.iter_mut().flat_map(|m| m.resnets.iter_mut()))
            .chain(up_blocks.iter_mut().flat_map(|b| b.resnets.iter_mut()));
        let time_projections = TimeProjections::fuse(ctx, resnets, "time_emb_proj")?;
        Ok(UNet2DModel {
            time_proj,
            time_embedding,
            class_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            time_projections,
            parameters: vb.parameters(),
            config,
            ctx: Arc::clone(ctx),
        })
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Plans the forward pass for `batch` images of `height`×`width`: allocates the activations
    /// of the liveness plan and records every dispatch once.
    pub fn graph(&self, batch: usize, height: usize, width: usize) -> Result<UNetGraph> {
        UNetGraph::build(self, batch, height, width, false)
    }

    /// Like [`UNet2DModel::graph`], but every per-block output (named as the diffusers module
    /// that produces it: `conv_in`, `down_blocks.0`, …, `conv_act`) keeps a buffer of its own,
    /// so it can be read after a run — for comparing block by block with diffusers.
    pub fn debug_graph(&self, batch: usize, height: usize, width: usize) -> Result<UNetGraph> {
        UNetGraph::build(self, batch, height, width, true)
    }

    /// The activation memory a graph of `batch` images would allocate, without allocating it.
    pub fn plan_memory(&self, batch: usize, height: usize, width: usize) -> Result<MemoryReport> {
        let recorded = Recorded::record(self, batch, height, width)?;
        Ok(recorded.graph.plan())
    }
}

/// The values of one recorded forward pass.
struct Recorded<'a> {
    graph: Graph<'a>,
    sample: Value,
    timesteps: Value,
    class_labels: Option<Value>,
    output: Value,
    /// Per-block outputs under the diffusers module names.
    blocks: Vec<(String, Value)>,
}

impl<'a> Recorded<'a> {
    /// The forward of diffusers' `UNet2DModel.forward`, block by block.
    fn record(model: &'a UNet2DModel, n: usize, height: usize, width: usize) -> Result<Self> {
        let cfg = &model.config;
        if n == 0 {
            return Err(Error::invalid(
                "UNet forward",
                "batch size must be at least 1",
            ));
        }
        cfg.check_resolution(height, width)?;
        let mut g = Graph::new(&model.ctx);
        let mut blocks = Vec::new();
        let sample = g.input(&[n, cfg.in_channels, height, width], "sample")?;
        let timesteps = g.input(&[n], "timesteps")?;
        let class_labels = match model.class_embedding {
            Some(_) => Some(g.input(&[n], "class_labels")?),
            None => None,
        };

        // Time embedding: sinusoid → linear_1 → SiLU → linear_2 (+ class embedding).
        let t_proj = model.time_proj.record(&mut g, &timesteps, "time_proj")?;
        blocks.push(("time_proj".to_owned(), t_proj.clone()));
        let mut temb = model
            .time_embedding
            .record(&mut g, &t_proj, "time_embedding")?;
        blocks.push(("time_embedding".to_owned(), temb.clone()));
        if let (Some(table), Some(labels)) = (&model.class_embedding, &class_labels) {
            temb = add_class_embedding(&mut g, table, labels, &temb, "class_embedding")?;
        }
        // Every resnet projects SiLU(temb); compute it once.
        let temb_act = silu(&mut g, &temb, "temb_act")?;
        // Every resnet's time_emb_proj(silu(temb)) in one launch; each reads its columns.
        let time = model
            .time_projections
            .record(&mut g, &temb_act, "time_emb_proj")?;

        let mut x = sample.clone();
        if cfg.center_input_sample {
            x = center_input(&mut g, &sample)?;
        }
        x = model
            .conv_in
            .record(&mut g, &x, &ConvApply::same(1), "conv_in")?;
        blocks.push(("conv_in".to_owned(), x.clone()));
        let mut skips = vec![x.clone()];
        for (i, block) in model.down_blocks.iter().enumerate() {
            let name = format!("down_blocks.{i}");
            x = block.record(&mut g, &x, &time, None, &mut skips, &name)?;
            blocks.push((name, x.clone()));
        }
        if let Some(mid) = &model.mid_block {
            x = mid.record(&mut g, &x, Some(&time), "mid_block")?;
            blocks.push(("mid_block".to_owned(), x.clone()));
        }
        for (i, block) in model.up_blocks.iter().enumerate() {
            let name = format!("up_blocks.{i}");
            x = block.record(&mut g, &x, &time, None, &mut skips, &name)?;
            blocks.push((name, x.clone()));
        }
        // conv_norm_out and conv_act are one fused launch.
        let h = model.conv_norm_out.record(&mut g, &x, true, "conv_act")?;
        blocks.push(("conv_act".to_owned(), h.clone()));
        let output = model
            .conv_out
            .record(&mut g, &h, &ConvApply::same(1), "conv_out")?;
        g.keep(&output);
        Ok(Recorded {
            graph: g,
            sample,
            timesteps,
            class_labels,
            output,
            blocks,
        })
    }
}

/// The static forward graph for one (model, batch, resolution): inputs, activations and the
/// recorded dispatches. [`UNetGraph::forward`] writes inputs, submits, and reads back once.
#[derive(Debug)]
pub struct UNetGraph {
    ctx: Arc<GpuContext>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// Model input x_t [N, C_in, H, W].
    pub sample: Tensor,
    /// Timesteps [N] (f32, may be fractional).
    pub timesteps: Tensor,
    /// Class labels [N] as f32 integers (conditional models only).
    pub class_labels: Option<Tensor>,
    /// Model output [N, C_out, H, W].
    pub output: Tensor,
    /// Per-block outputs under the diffusers module names (`conv_in`, `down_blocks.0`,
    /// `mid_block`, …, `conv_act`); only in a [`UNet2DModel::debug_graph`].
    pub activations: BTreeMap<String, Tensor>,
    pub dispatches: Vec<Dispatch>,
    /// Activation memory: planned (what this graph allocated) and one-buffer-per-op.
    pub memory: MemoryReport,
    num_class_embeds: Option<usize>,
}

impl UNetGraph {
    fn build(
        model: &UNet2DModel,
        n: usize,
        height: usize,
        width: usize,
        keep: bool,
    ) -> Result<Self> {
        let rec = Recorded::record(model, n, height, width)?;
        let (finished, activations) = rec.graph.finish_keeping(&rec.blocks, keep)?;
        Ok(UNetGraph {
            ctx: Arc::clone(&model.ctx),
            batch: n,
            height,
            width,
            sample: finished.tensor(&rec.sample),
            timesteps: finished.tensor(&rec.timesteps),
            class_labels: rec.class_labels.as_ref().map(|v| finished.tensor(v)),
            output: finished.tensor(&rec.output),
            activations,
            dispatches: finished.dispatches,
            memory: finished.memory,
            num_class_embeds: model.config.num_class_embeds,
        })
    }
    /// Writes the inputs (queued, not waited on). Labels are checked against `num_class_embeds`.
    pub fn write_inputs(
        &self,
        sample: &[f32],
        timesteps: &[f32],
        labels: Option<&[usize]>,
    ) -> Result<()> {
        self.sample.write(&self.ctx, sample)?;
        if timesteps.len() != self.batch {
            return Err(Error::invalid(
                "UNet forward",
                format!(
                    "{} timesteps for a batch of {}",
                    timesteps.len(),
                    self.batch
                ),
            ));
        }
        self.timesteps.write(&self.ctx, timesteps)?;
        self.write_class_labels(labels)
    }

    /// Writes the class labels alone (a sampler writes sample and timesteps on the GPU); the
    /// same checks as [`UNetGraph::write_inputs`].
    pub fn write_class_labels(&self, labels: Option<&[usize]>) -> Result<()> {
        match (&self.class_labels, labels, self.num_class_embeds) {
            (Some(t), Some(labels), Some(num)) => {
                if labels.len() != self.batch {
                    return Err(Error::invalid(
                        "UNet forward",
                        format!("{} class labels for a batch of {}", labels.len(), self.batch),
                    ));
                }
                if let Some(bad) = labels.iter().find(|&&l| l >= num) {
                    return Err(Error::invalid(
                        "class label",
                        format!("label {bad} is out of range: the model has num_class_embeds = {num} (labels 0..={})", num - 1),
                    ));
                }
                let as_f32: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
                t.write(&self.ctx, &as_f32)
            }
            (Some(_), None, _) => Err(Error::invalid(
                "UNet forward",
                "this model is class-conditional (num_class_embeds is set): class labels are required",
            )),
            (None, Some(_), _) => Err(Error::invalid(
                "UNet forward",
                "class labels given, but the model has no class embedding (num_class_embeds is not set)",
            )),
            _ => Ok(()),
        }
    }

    /// Records the whole forward pass into one command buffer and submits it (no wait).
    pub fn submit(&self) -> Result<()> {
        let refs: Vec<&Dispatch> = self.dispatches.iter().collect();
        self.ctx.submit(&refs)
    }

    /// One forward pass: write inputs, submit, read the output back.
    pub fn forward(
        &self,
        sample: &[f32],
        timesteps: &[f32],
        labels: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        self.write_inputs(sample, timesteps, labels)?;
        self.submit()?;
        self.output.read(&self.ctx)
    }

    /// Total FLOPs of one forward pass (2 per multiply-add) as counted by the dispatches.
    pub fn flops(&self) -> u64 {
        self.dispatches.iter().map(|d| d.flops).sum()
    }
}
