//! The `UNet2DModel` module tree (diffusers `models/unets/unet_2d.py`, `unet_2d_blocks.py`,
//! `resnet.py`, `attention_processor.py`): structs whose fields are the diffusers names, loaded
//! from a prefixed weight view, and the static forward graph built once per (batch, resolution).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::model::config::{DownBlock, UNet2DConfig, UpBlock};
use crate::model::weights::Weights;
use crate::ops::conv2d::{conv2d, conv2d_output_hw, Conv2d, Padding};
use crate::ops::elementwise::{self, Affine, ConcatChannels, EmbeddingAdd, Silu};
use crate::ops::group_norm::{group_norm, GroupNorm};
use crate::ops::matmul::{linear, matmul, BiasAxis, Matmul};
use crate::ops::softmax::{softmax_rows, SoftmaxRows};
use crate::ops::timestep_embedding::{timestep_embedding, TimestepEmbedding};
use crate::ops::upsample::{upsample_nearest2x, UpsampleNearest2x};

/// File names inside a diffusers model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// A prefixed view of the weights file (candle's `VarBuilder::pp`): `vb.pp("norm1").get("weight")`
/// reads `down_blocks.0.resnets.1.norm1.weight` and uploads it.
struct WeightView<'a> {
    ctx: &'a GpuContext,
    weights: &'a Weights,
    prefix: String,
    params: &'a std::cell::Cell<usize>,
}

impl<'a> WeightView<'a> {
    fn pp(&self, name: impl std::fmt::Display) -> WeightView<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        WeightView {
            ctx: self.ctx,
            weights: self.weights,
            prefix,
            params: self.params,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn upload(&self, key: &str, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        self.params.set(self.params.get() + data.len());
        Tensor::from_slice(self.ctx, shape, &data, key)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let key = self.key(name);
        let data = self.weights.get(&key, shape)?;
        self.upload(&key, data, shape)
    }

    /// The first of several names present (legacy attention names).
    fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Tensor> {
        let keys: Vec<String> = names.iter().map(|n| self.key(n)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let data = self.weights.get_any(&refs, shape)?;
        self.upload(&keys[0], data, shape)
    }
}

/// `nn.Conv2d` weights; padding/stride are chosen by the owner.
#[derive(Debug)]
pub struct Conv2dLayer {
    pub weight: Tensor, // [out, in, k, k]
    pub bias: Tensor,   // [out]
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
}

impl Conv2dLayer {
    fn load(vb: &WeightView, cin: usize, cout: usize, k: usize) -> Result<Self> {
        Ok(Conv2dLayer {
            weight: vb.get("weight", &[cout, cin, k, k])?,
            bias: vb.get("bias", &[cout])?,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
        })
    }
}

/// `nn.Linear` weights in torch layout.
#[derive(Debug)]
pub struct LinearLayer {
    pub weight: Tensor, // [out, in]
    pub bias: Tensor,   // [out]
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearLayer {
    fn load(vb: &WeightView, fin: usize, fout: usize) -> Result<Self> {
        Ok(LinearLayer {
            weight: vb.get("weight", &[fout, fin])?,
            bias: vb.get("bias", &[fout])?,
            in_features: fin,
            out_features: fout,
        })
    }

    fn load_any(vb: &WeightView, names: &[&str], fin: usize, fout: usize) -> Result<Self> {
        let w: Vec<String> = names.iter().map(|n| format!("{n}.weight")).collect();
        let b: Vec<String> = names.iter().map(|n| format!("{n}.bias")).collect();
        Ok(LinearLayer {
            weight: vb.get_any(
                &w.iter().map(String::as_str).collect::<Vec<_>>(),
                &[fout, fin],
            )?,
            bias: vb.get_any(&b.iter().map(String::as_str).collect::<Vec<_>>(), &[fout])?,
            in_features: fin,
            out_features: fout,
        })
    }
}

/// `nn.GroupNorm` affine parameters.
#[derive(Debug)]
pub struct GroupNormLayer {
    pub weight: Tensor, // [C]
    pub bias: Tensor,   // [C]
    pub groups: usize,
    pub eps: f32,
}

impl GroupNormLayer {
    fn load(vb: &WeightView, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(GroupNormLayer {
            weight: vb.get("weight", &[channels])?,
            bias: vb.get("bias", &[channels])?,
            groups,
            eps: eps as f32,
        })
    }
}

/// diffusers `ResnetBlock2D` (time_scale_shift "default", SiLU, no up/down inside).
#[derive(Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNormLayer,
    pub conv1: Conv2dLayer,
    pub time_emb_proj: LinearLayer,
    pub norm2: GroupNormLayer,
    pub conv2: Conv2dLayer,
    /// 1×1 conv when in ≠ out channels.
    pub conv_shortcut: Option<Conv2dLayer>,
    pub output_scale_factor: f32,
}

impl ResnetBlock2D {
    fn load(
        vb: &WeightView,
        cfg: &UNet2DConfig,
        cin: usize,
        cout: usize,
        osf: f64,
    ) -> Result<Self> {
        let groups = cfg.norm_num_groups;
        let temb = cfg.time_embed_dim();
        Ok(ResnetBlock2D {
            norm1: GroupNormLayer::load(&vb.pp("norm1"), cin, groups, cfg.norm_eps)?,
            conv1: Conv2dLayer::load(&vb.pp("conv1"), cin, cout, 3)?,
            time_emb_proj: LinearLayer::load(&vb.pp("time_emb_proj"), temb, cout)?,
            norm2: GroupNormLayer::load(&vb.pp("norm2"), cout, groups, cfg.norm_eps)?,
            conv2: Conv2dLayer::load(&vb.pp("conv2"), cout, cout, 3)?,
            conv_shortcut: if cin != cout {
                Some(Conv2dLayer::load(&vb.pp("conv_shortcut"), cin, cout, 1)?)
            } else {
                None
            },
            output_scale_factor: osf as f32,
        })
    }
}

/// diffusers `Attention` as the UNet2D blocks use it: group norm, q/k/v/out projections
/// (`to_q/to_k/to_v/to_out.0`, or the legacy `query/key/value/proj_attn`), residual, rescale.
#[derive(Debug)]
pub struct AttentionBlock {
    pub group_norm: GroupNormLayer,
    pub to_q: LinearLayer,
    pub to_k: LinearLayer,
    pub to_v: LinearLayer,
    pub to_out: LinearLayer,
    pub heads: usize,
    pub head_dim: usize,
    pub rescale_output_factor: f32,
}

impl AttentionBlock {
    fn load(
        vb: &WeightView,
        cfg: &UNet2DConfig,
        c: usize,
        groups: usize,
        osf: f64,
    ) -> Result<Self> {
        Ok(AttentionBlock {
            group_norm: GroupNormLayer::load(&vb.pp("group_norm"), c, groups, cfg.norm_eps)?,
            to_q: LinearLayer::load_any(vb, &["to_q", "query"], c, c)?,
            to_k: LinearLayer::load_any(vb, &["to_k", "key"], c, c)?,
            to_v: LinearLayer::load_any(vb, &["to_v", "value"], c, c)?,
            to_out: LinearLayer::load_any(vb, &["to_out.0", "proj_attn"], c, c)?,
            heads: cfg.num_heads(c),
            head_dim: cfg.head_dim(c),
            rescale_output_factor: osf as f32,
        })
    }
}

/// `DownBlock2D` / `AttnDownBlock2D`.
#[derive(Debug)]
pub struct DownBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<AttentionBlock>,
    /// `downsamplers.0.conv`: 3×3 stride 2.
    pub downsampler: Option<Conv2dLayer>,
}

/// `UpBlock2D` / `AttnUpBlock2D`.
#[derive(Debug)]
pub struct UpBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<AttentionBlock>,
    /// `upsamplers.0.conv`: nearest ×2 then 3×3.
    pub upsampler: Option<Conv2dLayer>,
}

/// `UNetMidBlock2D`: resnet, (attention), resnet.
#[derive(Debug)]
pub struct MidBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attention: Option<AttentionBlock>,
}

/// The whole model, weights resident on the GPU.
#[derive(Debug)]
pub struct UNet2DModel {
    pub config: UNet2DConfig,
    pub time_embedding_linear_1: LinearLayer,
    pub time_embedding_linear_2: LinearLayer,
    /// `class_embedding.weight` [num_class_embeds, time_embed_dim].
    pub class_embedding: Option<Tensor>,
    pub conv_in: Conv2dLayer,
    pub down_blocks: Vec<DownBlock2D>,
    pub mid_block: Option<MidBlock2D>,
    pub up_blocks: Vec<UpBlock2D>,
    pub conv_norm_out: GroupNormLayer,
    pub conv_out: Conv2dLayer,
    /// Number of parameters loaded.
    pub parameters: usize,
    ctx: Arc<GpuContext>,
}

impl UNet2DModel {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`, validating every
    /// tensor's presence and shape and rejecting unused tensors.
    pub fn load(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what:
                    "model directory (expected config.json and diffusion_pytorch_model.safetensors)"
                        .into(),
            });
        }
        let config = UNet2DConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = Weights::open(&dir.join(WEIGHTS_FILE))?;
        Self::from_parts(ctx, config, &weights)
    }

    /// Builds the model from a parsed config and an open weights file.
    pub fn from_parts(
        ctx: &Arc<GpuContext>,
        config: UNet2DConfig,
        weights: &Weights,
    ) -> Result<Self> {
        let params = std::cell::Cell::new(0usize);
        let root = WeightView {
            ctx,
            weights,
            prefix: String::new(),
            params: &params,
        };
        let cfg = &config;
        let ch = &cfg.block_out_channels;
        let c0 = ch[0];
        let temb = cfg.time_embed_dim();
        let groups = cfg.norm_num_groups;
        let te = root.pp("time_embedding");
        let time_embedding_linear_1 = LinearLayer::load(&te.pp("linear_1"), c0, temb)?;
        let time_embedding_linear_2 = LinearLayer::load(&te.pp("linear_2"), temb, temb)?;
        let class_embedding = match cfg.num_class_embeds {
            Some(n) => Some(root.pp("class_embedding").get("weight", &[n, temb])?),
            None => None,
        };
        let conv_in = Conv2dLayer::load(&root.pp("conv_in"), cfg.in_channels, c0, 3)?;

        let mut down_blocks = Vec::new();
        let mut out_c = c0;
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let in_c = out_c;
            out_c = ch[i];
            let last = i + 1 == ch.len();
            let vb = root.pp("down_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                let rin = if j == 0 { in_c } else { out_c };
                resnets.push(ResnetBlock2D::load(
                    &vb.pp("resnets").pp(j),
                    cfg,
                    rin,
                    out_c,
                    1.0,
                )?);
                if *kind == DownBlock::AttnDown {
                    let a = vb.pp("attentions").pp(j);
                    attentions.push(AttentionBlock::load(&a, cfg, out_c, groups, 1.0)?);
                }
            }
            let downsampler = if last {
                None
            } else {
                Some(Conv2dLayer::load(
                    &vb.pp("downsamplers.0.conv"),
                    out_c,
                    out_c,
                    3,
                )?)
            };
            down_blocks.push(DownBlock2D {
                resnets,
                attentions,
                downsampler,
            });
        }

        let last_c = ch[ch.len() - 1];
        let mid_block = if cfg.mid_block_type.is_some() {
            let vb = root.pp("mid_block");
            let osf = cfg.mid_block_scale_factor;
            let attention = if cfg.add_attention {
                let a = vb.pp("attentions.0");
                Some(AttentionBlock::load(
                    &a,
                    cfg,
                    last_c,
                    cfg.attn_groups(),
                    osf,
                )?)
            } else {
                None
            };
            let resnets = vec![
                ResnetBlock2D::load(&vb.pp("resnets.0"), cfg, last_c, last_c, osf)?,
                ResnetBlock2D::load(&vb.pp("resnets.1"), cfg, last_c, last_c, osf)?,
            ];
            Some(MidBlock2D { resnets, attention })
        } else {
            None
        };

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_c = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev_c = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(rev.len() - 1)];
            let last = i + 1 == rev.len();
            let vb = root.pp("up_blocks").pp(i);
            let layers = cfg.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip_c = if j + 1 == layers { in_c } else { out_c };
                let rin = if j == 0 { prev_c } else { out_c };
                let r = vb.pp("resnets").pp(j);
                resnets.push(ResnetBlock2D::load(&r, cfg, rin + skip_c, out_c, 1.0)?);
                if *kind == UpBlock::AttnUp {
                    let a = vb.pp("attentions").pp(j);
                    attentions.push(AttentionBlock::load(&a, cfg, out_c, groups, 1.0)?);
                }
            }
            let upsampler = if last {
                None
            } else {
                Some(Conv2dLayer::load(
                    &vb.pp("upsamplers.0.conv"),
                    out_c,
                    out_c,
                    3,
                )?)
            };
            up_blocks.push(UpBlock2D {
                resnets,
                attentions,
                upsampler,
            });
        }
        let conv_norm_out =
            GroupNormLayer::load(&root.pp("conv_norm_out"), c0, groups, cfg.norm_eps)?;
        let conv_out = Conv2dLayer::load(&root.pp("conv_out"), c0, cfg.out_channels, 3)?;
        weights.finish()?;
        Ok(UNet2DModel {
            time_embedding_linear_1,
            time_embedding_linear_2,
            class_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            parameters: params.get(),
            config,
            ctx: Arc::clone(ctx),
        })
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Plans the forward pass for `batch` images of `height`×`width`: allocates every activation
    /// and records every dispatch once.
    pub fn graph(&self, batch: usize, height: usize, width: usize) -> Result<UNetGraph> {
        UNetGraph::build(self, batch, height, width)
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
    /// Per-block outputs under the fixture names (`conv_in`, `down_blocks.0`, `mid_block`, …).
    pub activations: BTreeMap<String, Tensor>,
    pub dispatches: Vec<Dispatch>,
    /// Bytes of activation buffers allocated for this graph.
    pub activation_bytes: u64,
    /// The largest activation buffer (label, bytes), to compare with the binding limit.
    pub largest_activation: (String, u64),
    num_class_embeds: Option<usize>,
}

/// Records ops for one graph, allocating activations as it goes.
/// What a convolution adds to its output before scaling: `(conv + bias + batch_bias +
/// residual) · output_scale`.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    batch_bias: Option<&'a Tensor>,
    residual: Option<&'a Tensor>,
    output_scale: f32,
}

impl Epilogue<'_> {
    /// Bias only.
    const PLAIN: Epilogue<'static> = Epilogue {
        batch_bias: None,
        residual: None,
        output_scale: 1.0,
    };
}

struct Builder<'a> {
    ctx: &'a GpuContext,
    dispatches: Vec<Dispatch>,
    bytes: u64,
    largest: (String, u64),
    n: usize,
}

impl Builder<'_> {
    fn alloc(&mut self, shape: &[usize], label: &str) -> Result<Tensor> {
        let t = Tensor::zeros(self.ctx, shape, label)?;
        self.bytes += t.bytes();
        if t.bytes() > self.largest.1 {
            self.largest = (label.to_string(), t.bytes());
        }
        Ok(t)
    }

    fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }

    fn conv(
        &mut self,
        layer: &Conv2dLayer,
        x: &Tensor,
        stride: usize,
        padding: Padding,
        epilogue: Epilogue,
        label: &str,
    ) -> Result<Tensor> {
        let Epilogue {
            batch_bias,
            residual,
            output_scale,
        } = epilogue;
        let (h, w) = (x.shape[2], x.shape[3]);
        let (ho, wo) = conv2d_output_hw(h, w, layer.kernel, layer.kernel, stride, padding)?;
        let out = self.alloc(&[self.n, layer.out_channels, ho, wo], label)?;
        let spec = Conv2d {
            input: x,
            weight: &layer.weight,
            bias: Some(&layer.bias),
            batch_bias,
            residual,
            out: &out,
            stride,
            padding,
            output_scale,
        };
        let d = conv2d(self.ctx, &spec, label)?;
        self.push(d);
        Ok(out)
    }

    fn norm(
        &mut self,
        layer: &GroupNormLayer,
        x: &Tensor,
        silu: bool,
        label: &str,
    ) -> Result<Tensor> {
        let out = self.alloc(&x.shape, label)?;
        let args = GroupNorm {
            input: x,
            gamma: &layer.weight,
            beta: &layer.bias,
            out: &out,
            groups: layer.groups,
            eps: layer.eps,
            silu,
        };
        let d = group_norm(self.ctx, &args, label)?;
        self.push(d);
        Ok(out)
    }

    fn linear(&mut self, layer: &LinearLayer, x: &Tensor, label: &str) -> Result<Tensor> {
        let out = self.alloc(&[x.shape[0], layer.out_features], label)?;
        let d = linear(self.ctx, x, &layer.weight, Some(&layer.bias), &out, label)?;
        self.push(d);
        Ok(out)
    }

    fn resnet(
        &mut self,
        r: &ResnetBlock2D,
        x: &Tensor,
        temb_act: &Tensor,
        name: &str,
    ) -> Result<Tensor> {
        let h = self.norm(&r.norm1, x, true, &format!("{name}.norm1"))?;
        let t = self.linear(&r.time_emb_proj, temb_act, &format!("{name}.time_emb_proj"))?;
        let same = Padding::same(1);
        let h = self.conv(
            &r.conv1,
            &h,
            1,
            same,
            Epilogue {
                batch_bias: Some(&t),
                ..Epilogue::PLAIN
            },
            &format!("{name}.conv1"),
        )?;
        let h = self.norm(&r.norm2, &h, true, &format!("{name}.norm2"))?;
        let shortcut = match &r.conv_shortcut {
            Some(c) => self.conv(
                c,
                x,
                1,
                Padding::same(0),
                Epilogue::PLAIN,
                &format!("{name}.conv_shortcut"),
            )?,
            None => x.clone(),
        };
        let scale = 1.0 / r.output_scale_factor;
        self.conv(
            &r.conv2,
            &h,
            1,
            same,
            Epilogue {
                residual: Some(&shortcut),
                output_scale: scale,
                ..Epilogue::PLAIN
            },
            &format!("{name}.conv2"),
        )
    }

    /// 1×1 projection of NCHW activations: out[n] = W·x[n] + b (+ residual), as one batched GEMM.
    fn project(
        &mut self,
        layer: &LinearLayer,
        x: &Tensor,
        residual: Option<&Tensor>,
        output_scale: f32,
        label: &str,
    ) -> Result<Tensor> {
        let (c_in, c_out) = (layer.in_features, layer.out_features);
        let tokens: usize = x.shape[2..].iter().product();
        let mut shape = x.shape.clone();
        shape[1] = c_out;
        let out = self.alloc(&shape, label)?;
        let mm = Matmul {
            a: &layer.weight,
            b: x,
            out: &out,
            bias: Some((&layer.bias, BiasAxis::M)),
            residual,
            batch: self.n,
            m: c_out,
            n: tokens,
            k: c_in,
            a_strides: [0, c_in, 1],
            b_strides: [c_in * tokens, tokens, 1],
            c_strides: [c_out * tokens, tokens, 1],
            alpha: 1.0,
            output_scale,
        };
        let d = matmul(self.ctx, &mm, label)?;
        self.push(d);
        Ok(out)
    }

    fn attention(&mut self, a: &AttentionBlock, x: &Tensor, name: &str) -> Result<Tensor> {
        let c = x.shape[1];
        let t: usize = x.shape[2..].iter().product();
        let (heads, d) = (a.heads, a.head_dim);
        let h = self.norm(&a.group_norm, x, false, &format!("{name}.group_norm"))?;
        let q = self.project(&a.to_q, &h, None, 1.0, &format!("{name}.to_q"))?;
        let k = self.project(&a.to_k, &h, None, 1.0, &format!("{name}.to_k"))?;
        let v = self.project(&a.to_v, &h, None, 1.0, &format!("{name}.to_v"))?;
        // Channel c = head·D + d, so (n, head) flattens to one batch index with stride D·T.
        let bh = self.n * heads;
        let label = format!("{name}.scores");
        let scores = self.alloc(&[bh, t, t], &label)?;
        let mm = Matmul {
            a: &q,
            b: &k,
            out: &scores,
            bias: None,
            residual: None,
            batch: bh,
            m: t,
            n: t,
            k: d,
            a_strides: [d * t, 1, t],
            b_strides: [d * t, t, 1],
            c_strides: [t * t, t, 1],
            alpha: 1.0 / (d as f32).sqrt(),
            output_scale: 1.0,
        };
        let dsp = matmul(self.ctx, &mm, &label)?;
        self.push(dsp);
        let args = SoftmaxRows {
            data: &scores,
            rows: bh * t,
            cols: t,
        };
        let dsp = softmax_rows(self.ctx, &args, &format!("{name}.softmax"))?;
        self.push(dsp);
        let label = format!("{name}.attn_values");
        let attn = self.alloc(&[self.n, c, t], &label)?;
        let mm = Matmul {
            a: &scores,
            b: &v,
            out: &attn,
            bias: None,
            residual: None,
            batch: bh,
            m: t,
            n: d,
            k: t,
            a_strides: [t * t, t, 1],
            b_strides: [d * t, 1, t],
            c_strides: [d * t, 1, t],
            alpha: 1.0,
            output_scale: 1.0,
        };
        let dsp = matmul(self.ctx, &mm, &label)?;
        self.push(dsp);
        let scale = 1.0 / a.rescale_output_factor;
        let mut out = self.project(&a.to_out, &attn, Some(x), scale, &format!("{name}.to_out"))?;
        out.shape = x.shape.clone();
        Ok(out)
    }
}

impl UNetGraph {
    fn build(model: &UNet2DModel, n: usize, height: usize, width: usize) -> Result<UNetGraph> {
        let cfg = &model.config;
        if n == 0 {
            return Err(Error::invalid(
                "UNet forward",
                "batch size must be at least 1",
            ));
        }
        cfg.check_resolution(height, width)?;
        let ctx = &model.ctx;
        let mut b = Builder {
            ctx,
            dispatches: Vec::new(),
            bytes: 0,
            largest: (String::new(), 0),
            n,
        };
        let mut acts = BTreeMap::new();
        let sample = b.alloc(&[n, cfg.in_channels, height, width], "sample")?;
        let timesteps = b.alloc(&[n], "timesteps")?;
        let class_labels = match model.class_embedding {
            Some(_) => Some(b.alloc(&[n], "class_labels")?),
            None => None,
        };

        // Time embedding: sinusoid → linear_1 → SiLU → linear_2 (+ class embedding).
        let c0 = cfg.block_out_channels[0];
        let proj = b.alloc(&[n, c0], "time_proj")?;
        let args = TimestepEmbedding {
            timesteps: &timesteps,
            out: &proj,
            dim: c0,
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
        };
        let d = timestep_embedding(ctx, &args, "time_proj")?;
        b.push(d);
        let l1 = b.linear(
            &model.time_embedding_linear_1,
            &proj,
            "time_embedding.linear_1",
        )?;
        let l1_act = b.alloc(&l1.shape, "time_embedding.act")?;
        let args = Silu {
            x: &l1,
            out: &l1_act,
        };
        b.push(elementwise::silu(ctx, &args, "time_embedding.act")?);
        let mut temb = b.linear(
            &model.time_embedding_linear_2,
            &l1_act,
            "time_embedding.linear_2",
        )?;
        acts.insert("time_embedding".to_string(), temb.clone());
        if let (Some(table), Some(labels)) = (&model.class_embedding, &class_labels) {
            let with_class = b.alloc(&temb.shape, "class_embedding")?;
            let args = EmbeddingAdd {
                table,
                labels,
                base: &temb,
                out: &with_class,
            };
            b.push(elementwise::embedding_add(ctx, &args, "class_embedding")?);
            temb = with_class;
        }
        // Every resnet projects SiLU(temb); compute it once.
        let temb_act = b.alloc(&temb.shape, "temb_act")?;
        let args = Silu {
            x: &temb,
            out: &temb_act,
        };
        b.push(elementwise::silu(ctx, &args, "temb_act")?);

        let mut x = sample.clone();
        if cfg.center_input_sample {
            let centered = b.alloc(&sample.shape, "center_input_sample")?;
            let args = Affine {
                x: &sample,
                out: &centered,
                mul: 2.0,
                add: -1.0,
            };
            b.push(elementwise::affine(ctx, &args, "center_input_sample")?);
            x = centered;
        }
        x = b.conv(
            &model.conv_in,
            &x,
            1,
            Padding::same(1),
            Epilogue::PLAIN,
            "conv_in",
        )?;
        acts.insert("conv_in".to_string(), x.clone());
        let mut skips = vec![x.clone()];

        for (i, block) in model.down_blocks.iter().enumerate() {
            for (j, r) in block.resnets.iter().enumerate() {
                x = b.resnet(r, &x, &temb_act, &format!("down_blocks.{i}.resnets.{j}"))?;
                if let Some(a) = block.attentions.get(j) {
                    x = b.attention(a, &x, &format!("down_blocks.{i}.attentions.{j}"))?;
                }
                skips.push(x.clone());
            }
            if let Some(conv) = &block.downsampler {
                // downsample_padding 0 (the original DDPM checkpoints) pads right and bottom by one.
                let p = cfg.downsample_padding;
                let padding = if p == 0 {
                    Padding {
                        top: 0,
                        bottom: 1,
                        left: 0,
                        right: 1,
                    }
                } else {
                    Padding::same(p)
                };
                let name = format!("down_blocks.{i}.downsamplers.0");
                x = b.conv(conv, &x, 2, padding, Epilogue::PLAIN, &name)?;
                skips.push(x.clone());
            }
            acts.insert(format!("down_blocks.{i}"), x.clone());
        }

        if let Some(mid) = &model.mid_block {
            x = b.resnet(&mid.resnets[0], &x, &temb_act, "mid_block.resnets.0")?;
            if let Some(a) = &mid.attention {
                x = b.attention(a, &x, "mid_block.attentions.0")?;
            }
            x = b.resnet(&mid.resnets[1], &x, &temb_act, "mid_block.resnets.1")?;
            acts.insert("mid_block".to_string(), x.clone());
        }

        for (i, block) in model.up_blocks.iter().enumerate() {
            for (j, r) in block.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| {
                    Error::invalid("UNet graph", "more up-block resnets than saved skips")
                })?;
                let name = format!("up_blocks.{i}.resnets.{j}");
                let mut shape = x.shape.clone();
                shape[1] += skip.shape[1];
                let cat = b.alloc(&shape, &format!("{name}.concat"))?;
                let args = ConcatChannels {
                    a: &x,
                    b: &skip,
                    out: &cat,
                };
                b.push(elementwise::concat_channels(
                    ctx,
                    &args,
                    &format!("{name}.concat"),
                )?);
                x = b.resnet(r, &cat, &temb_act, &name)?;
                if let Some(a) = block.attentions.get(j) {
                    x = b.attention(a, &x, &format!("up_blocks.{i}.attentions.{j}"))?;
                }
            }
            if let Some(conv) = &block.upsampler {
                let name = format!("up_blocks.{i}.upsamplers.0");
                let mut shape = x.shape.clone();
                shape[2] *= 2;
                shape[3] *= 2;
                let up = b.alloc(&shape, &format!("{name}.interpolate"))?;
                let args = UpsampleNearest2x {
                    input: &x,
                    out: &up,
                };
                b.push(upsample_nearest2x(
                    ctx,
                    &args,
                    &format!("{name}.interpolate"),
                )?);
                x = b.conv(
                    conv,
                    &up,
                    1,
                    Padding::same(1),
                    Epilogue::PLAIN,
                    &format!("{name}.conv"),
                )?;
            }
            acts.insert(format!("up_blocks.{i}"), x.clone());
        }

        let h = b.norm(&model.conv_norm_out, &x, true, "conv_norm_out+conv_act")?;
        acts.insert("conv_act".to_string(), h.clone());
        let output = b.conv(
            &model.conv_out,
            &h,
            1,
            Padding::same(1),
            Epilogue::PLAIN,
            "conv_out",
        )?;
        Ok(UNetGraph {
            ctx: Arc::clone(ctx),
            batch: n,
            height,
            width,
            sample,
            timesteps,
            class_labels,
            output,
            activations: acts,
            dispatches: b.dispatches,
            activation_bytes: b.bytes,
            largest_activation: b.largest,
            num_class_embeds: cfg.num_class_embeds,
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
