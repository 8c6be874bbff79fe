//! The down, mid and up blocks of `UNet2DModel` (diffusers `unet_2d_blocks.py`): `DownBlock2D` /
//! `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D` / `AttnUpBlock2D`.

use crate::error::{Error, Result};
use crate::model::blocks::attention::{AttentionBlock, SpatialAttentionConfig};
use crate::model::blocks::mid::UNetMidBlock2D;
use crate::model::blocks::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
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

/// `DownBlock2D` / `AttnDownBlock2D`: `layers_per_block` resnets (each followed by attention in
/// the attention variant), then a stride-2 downsampler except in the last block.
#[derive(Debug)]
pub struct DownBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<AttentionBlock>,
    pub downsamplers: Vec<Downsample2D>,
}

impl DownBlock2D {
    pub fn load(
        vb: &VarBuilder,
        cfg: &UNet2DConfig,
        attention: bool,
        in_c: usize,
        out_c: usize,
        last: bool,
    ) -> Result<Self> {
        let rc = resnet_config(cfg, 1.0);
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..cfg.layers_per_block {
            let rin = if j == 0 { in_c } else { out_c };
            resnets.push(ResnetBlock2D::load(
                &vb.pp("resnets").pp(j),
                &rc,
                rin,
                out_c,
            )?);
            if attention {
                let ac = attention_config(cfg, out_c, cfg.norm_num_groups, 1.0);
                attentions.push(AttentionBlock::load(&vb.pp("attentions").pp(j), &ac)?);
            }
        }
        let downsamplers = if last {
            Vec::new()
        } else {
            vec![Downsample2D::load(
                &vb.pp("downsamplers.0"),
                out_c,
                cfg.downsample_padding,
            )?]
        };
        Ok(DownBlock2D {
            resnets,
            attentions,
            downsamplers,
        })
    }

    /// Returns the block output; every resnet/attention output and the downsampler's are
    /// pushed to `skips` for the up path.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        temb_act: &Value,
        skips: &mut Vec<Value>,
        name: &str,
    ) -> Result<Value> {
        let mut x = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            x = r.record(g, &x, Some(temb_act), &format!("{name}.resnets.{j}"))?;
            if let Some(a) = self.attentions.get(j) {
                x = a.record(g, &x, &format!("{name}.attentions.{j}"))?;
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

/// `UpBlock2D` / `AttnUpBlock2D`: `layers_per_block + 1` resnets over the output concatenated
/// with a saved skip (each followed by attention in the attention variant), then a ×2
/// upsampler except in the last block.
#[derive(Debug)]
pub struct UpBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<AttentionBlock>,
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

impl UpBlock2D {
    pub fn load(
        vb: &VarBuilder,
        cfg: &UNet2DConfig,
        attention: bool,
        ch: UpChannels,
        last: bool,
    ) -> Result<Self> {
        let rc = resnet_config(cfg, 1.0);
        let layers = cfg.layers_per_block + 1;
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
                &rc,
                rin + skip_c,
                ch.out,
            )?);
            if attention {
                let ac = attention_config(cfg, ch.out, cfg.norm_num_groups, 1.0);
                attentions.push(AttentionBlock::load(&vb.pp("attentions").pp(j), &ac)?);
            }
        }
        let upsamplers = if last {
            Vec::new()
        } else {
            vec![Upsample2D::load(&vb.pp("upsamplers.0"), ch.out)?]
        };
        Ok(UpBlock2D {
            resnets,
            attentions,
            upsamplers,
        })
    }

    /// Pops one skip per resnet from `skips`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        temb_act: &Value,
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
            x = r.record(g, &cat, Some(temb_act), &rname)?;
            if let Some(a) = self.attentions.get(j) {
                x = a.record(g, &x, &format!("{name}.attentions.{j}"))?;
            }
        }
        for (j, u) in self.upsamplers.iter().enumerate() {
            x = u.record(g, &x, &format!("{name}.upsamplers.{j}"))?;
        }
        Ok(x)
    }
}

/// `torch.cat([a, b], dim=1)`.
fn concat_channels<'a>(g: &mut Graph<'a>, a: &Value, b: &Value, name: &str) -> Result<Value> {
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
