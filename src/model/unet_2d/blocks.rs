//! The down, mid and up blocks of `UNet2DModel` (diffusers `unet_2d_blocks.py`): `DownBlock2D` /
//! `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D` / `AttnUpBlock2D`. The down and up blocks are
//! generic over the layer that follows each resnet ([`SpatialLayer`]): the spatial
//! [`AttentionBlock`] here, SD's `Transformer2DModel` in `CrossAttnDownBlock2D` /
//! `CrossAttnUpBlock2D` (`crate::model::unet_2d_condition`).

use crate::error::{Error, Result};
use crate::model::blocks::attention::{AttentionBlock, SpatialAttentionConfig};
use crate::model::blocks::mid::UNetMidBlock2D;
use crate::model::blocks::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::model::blocks::SpatialLayer;
use crate::model::graph::{Graph, Value};
use crate::model::unet_2d::config::UNet2DConfig;
use crate::model::weights::VarBuilder;
use crate::ops::elementwise;

/// The resnet settings every block of a `UNet2DModel` shares.
fn resnet_config(cfg: &UNet2DConfig, output_scale_factor: f64) -> ResnetConfig {
    ResnetConfig {
        groups: cfg.norm_num_groups,
        eps: cfg.norm_eps,
        temb_channels: Some(cfg.time_embed_dim()),
        output_scale_factor,
    }
}

fn attention_config(
    cfg: &UNet2DConfig,
    channels: usize,
    groups: usize,
    osf: f64,
) -> SpatialAttentionConfig {
    SpatialAttentionConfig {
        channels,
        heads: cfg.num_heads(channels),
        groups,
        eps: cfg.norm_eps,
        rescale_output_factor: osf,
    }
}

/// Loads the attention layer of one resnet from its `attentions.j` view.
pub type LoadAttention<'f, A> = &'f dyn Fn(&VarBuilder) -> Result<A>;

/// How a down or up block is built: resnet settings, resnet count, and the loader of the layer
/// after each resnet (`None`: a block without attention).
pub struct BlockSpec<'f, A> {
    pub resnet: ResnetConfig,
    pub layers: usize,
    pub attention: Option<LoadAttention<'f, A>>,
}

/// `DownBlock2D` / `AttnDownBlock2D` / `CrossAttnDownBlock2D`: resnets (each followed by the
/// attention layer in the attention variants), then a stride-2 downsampler except in the last
/// block.
#[derive(Debug)]
pub struct DownBlock2D<A = AttentionBlock> {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<A>,
    pub downsamplers: Vec<Downsample2D>,
}

impl DownBlock2D<AttentionBlock> {
    /// A block of a `UNet2DModel`.
    pub fn load(
        vb: &VarBuilder,
        cfg: &UNet2DConfig,
        attention: bool,
        in_c: usize,
        out_c: usize,
        last: bool,
    ) -> Result<Self> {
        let ac = attention_config(cfg, out_c, cfg.norm_num_groups, 1.0);
        let load_attention = |vb: &VarBuilder| AttentionBlock::load(vb, &ac);
        let spec = BlockSpec {
            resnet: resnet_config(cfg, 1.0),
            layers: cfg.layers_per_block,
            attention: attention.then_some(&load_attention as &dyn Fn(&VarBuilder) -> Result<_>),
        };
        let downsample = (!last).then_some(cfg.downsample_padding);
        Self::load_with(vb, &spec, in_c, out_c, downsample)
    }
}

impl<A: SpatialLayer> DownBlock2D<A> {
    /// `downsample`: the padding of the downsampling convolution, `None` for the last block.
    pub fn load_with(
        vb: &VarBuilder,
        spec: &BlockSpec<A>,
        in_c: usize,
        out_c: usize,
        downsample: Option<usize>,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..spec.layers {
            let rin = if j == 0 { in_c } else { out_c };
            resnets.push(ResnetBlock2D::load(
                &vb.pp("resnets").pp(j),
                &spec.resnet,
                rin,
                out_c,
            )?);
            if let Some(load) = spec.attention {
                attentions.push(load(&vb.pp("attentions").pp(j))?);
            }
        }
        let downsamplers = match downsample {
            Some(padding) => vec![Downsample2D::load(
                &vb.pp("downsamplers.0"),
                out_c,
                padding,
            )?],
            None => Vec::new(),
        };
        Ok(DownBlock2D {
            resnets,
            attentions,
            downsamplers,
        })
    }

    /// Returns the block output; every resnet/attention output and the downsampler's are
    /// pushed to `skips` for the up path. `time` is what the resnets take
    /// ([`ResnetBlock2D::record`]): the model's fused time projections.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        time: &Value,
        context: Option<&Value>,
        skips: &mut Vec<Value>,
        name: &str,
    ) -> Result<Value> {
        let mut x = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            x = r.record(g, &x, Some(time), &format!("{name}.resnets.{j}"))?;
            if let Some(a) = self.attentions.get(j) {
                x = a.record_spatial(g, &x, context, &format!("{name}.attentions.{j}"))?;
            }
            skips.push(x.clone());
        }
        for (j, d) in self.downsamplers.iter().enumerate() {
            x = d.record(g, &x, &format!("{name}.downsamplers.{j}"))?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// `UNetMidBlock2D` as `UNet2DModel` builds it: resnets and attention scaled by
/// `mid_block_scale_factor`, attention groups `attn_norm_num_groups` (or `norm_num_groups`).
pub fn load_mid_block(
    vb: &VarBuilder,
    cfg: &UNet2DConfig,
    channels: usize,
) -> Result<UNetMidBlock2D> {
    let osf = cfg.mid_block_scale_factor;
    let attention = attention_config(cfg, channels, cfg.attn_groups(), osf);
    UNetMidBlock2D::load(
        vb,
        &resnet_config(cfg, osf),
        cfg.add_attention.then_some(&attention),
        channels,
    )
}

/// `UpBlock2D` / `AttnUpBlock2D` / `CrossAttnUpBlock2D`: resnets over the output concatenated
/// with a saved skip (each followed by the attention layer in the attention variants), then a ×2
/// upsampler except in the last block.
#[derive(Debug)]
pub struct UpBlock2D<A = AttentionBlock> {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<A>,
    pub upsamplers: Vec<Upsample2D>,
}

/// Channel widths an up block is built with.
#[derive(Debug, Clone, Copy)]
pub struct UpChannels {
    /// Output channels of the previous up block (or the mid block).
    pub prev: usize,
    /// This block's output channels.
    pub out: usize,
    /// Channels of the skip its last resnet concatenates.
    pub last_skip: usize,
}

impl UpBlock2D<AttentionBlock> {
    /// A block of a `UNet2DModel` (`layers_per_block + 1` resnets).
    pub fn load(
        vb: &VarBuilder,
        cfg: &UNet2DConfig,
        attention: bool,
        ch: UpChannels,
        last: bool,
    ) -> Result<Self> {
        let ac = attention_config(cfg, ch.out, cfg.norm_num_groups, 1.0);
        let load_attention = |vb: &VarBuilder| AttentionBlock::load(vb, &ac);
        let spec = BlockSpec {
            resnet: resnet_config(cfg, 1.0),
            layers: cfg.layers_per_block + 1,
            attention: attention.then_some(&load_attention as &dyn Fn(&VarBuilder) -> Result<_>),
        };
        Self::load_with(vb, &spec, ch, !last)
    }
}

impl<A: SpatialLayer> UpBlock2D<A> {
    /// `spec.layers` resnets; the last concatenates a skip of `ch.last_skip` channels.
    pub fn load_with(
        vb: &VarBuilder,
        spec: &BlockSpec<A>,
        ch: UpChannels,
        upsample: bool,
    ) -> Result<Self> {
        let layers = spec.layers;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..layers {
            let skip_c = if j + 1 == layers {
                ch.last_skip
            } else {
                ch.out
            };
            let rin = if j == 0 { ch.prev } else { ch.out };
            resnets.push(ResnetBlock2D::load(
                &vb.pp("resnets").pp(j),
                &spec.resnet,
                rin + skip_c,
                ch.out,
            )?);
            if let Some(load) = spec.attention {
                attentions.push(load(&vb.pp("attentions").pp(j))?);
            }
        }
        let upsamplers = if upsample {
            vec![Upsample2D::load(&vb.pp("upsamplers.0"), ch.out)?]
        } else {
            Vec::new()
        };
        Ok(UpBlock2D {
            resnets,
            attentions,
            upsamplers,
        })
    }

    /// Pops one skip per resnet from `skips`; `time` as in [`DownBlock2D::record`].
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        time: &Value,
        context: Option<&Value>,
        skips: &mut Vec<Value>,
        name: &str,
    ) -> Result<Value> {
        let mut x = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::invalid(name, "more up-block resnets than saved skips"))?;
            let rname = format!("{name}.resnets.{j}");
            let cat = concat_channels(g, &x, &skip, &format!("{rname}.concat"))?;
            x = r.record(g, &cat, Some(time), &rname)?;
            if let Some(a) = self.attentions.get(j) {
                x = a.record_spatial(g, &x, context, &format!("{name}.attentions.{j}"))?;
            }
        }
        // To the next skip's size: ×2 when the sample divides evenly, else the odd size the
        // down path produced (diffusers' `forward_upsample_size`).
        let size = skips.last().map(|s| [s.shape[2], s.shape[3]]);
        for (j, u) in self.upsamplers.iter().enumerate() {
            x = u.record_to(g, &x, size, &format!("{name}.upsamplers.{j}"))?;
        }
        Ok(x)
    }
}

/// `torch.cat([a, b], dim=1)`.
pub fn concat_channels<'a>(g: &mut Graph<'a>, a: &Value, b: &Value, name: &str) -> Result<Value> {
    let mut shape = a.shape.clone();
    shape[1] += b.shape[1];
    let (ai, bi) = (a.id(), b.id());
    let label = name.to_owned();
    g.op(name, &[a, b], &shape, move |bound, out| {
        let args = elementwise::ConcatChannels {
            a: bound.get(ai),
            b: bound.get(bi),
            out,
        };
        elementwise::concat_channels(bound.ctx, &args, &label)
    })
}
