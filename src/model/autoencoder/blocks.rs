//! The blocks of the VAE `Encoder` / `Decoder` (diffusers `unet_2d_blocks.py`):
//! `DownEncoderBlock2D`, `UpDecoderBlock2D` and the `UNetMidBlock2D` as the autoencoders build it
//! (no time embedding, resnet eps 1e-6, one attention head spanning every channel).

use crate::error::Result;
use crate::model::blocks::attention::SpatialAttentionConfig;
use crate::model::blocks::mid::UNetMidBlock2D;
use crate::model::blocks::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;

/// The GroupNorm eps diffusers' `Encoder` and `Decoder` hard-code for every norm.
pub const VAE_NORM_EPS: f64 = 1e-6;

/// The resnet settings every VAE block shares.
pub fn resnet_config(groups: usize) -> ResnetConfig {
    ResnetConfig {
        groups,
        eps: VAE_NORM_EPS,
        temb_channels: None,
        output_scale_factor: 1.0,
    }
}

/// `DownEncoderBlock2D`: `layers_per_block` resnets, then (except in the last block) a
/// stride-2 conv after diffusers' asymmetric `(0, 1, 0, 1)` pad (`downsample_padding=0`).
#[derive(Debug)]
pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsamplers: Vec<Downsample2D>,
}

impl DownEncoderBlock2D {
    pub fn load(
        vb: &VarBuilder,
        groups: usize,
        layers: usize,
        (in_c, out_c): (usize, usize),
        last: bool,
    ) -> Result<Self> {
        let resnets = load_resnets(vb, groups, layers, in_c, out_c)?;
        let downsamplers = if last {
            Vec::new()
        } else {
            vec![Downsample2D::load(&vb.pp("downsamplers.0"), out_c, 0)?]
        };
        Ok(DownEncoderBlock2D {
            resnets,
            downsamplers,
        })
    }

    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let mut x = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            x = r.record(g, &x, None, &format!("{name}.resnets.{j}"))?;
        }
        for (j, d) in self.downsamplers.iter().enumerate() {
            x = d.record(g, &x, &format!("{name}.downsamplers.{j}"))?;
        }
        Ok(x)
    }
}

/// `layers` resnets `resnets.0 …`, the first `in_c → out_c`, the others `out_c → out_c`.
fn load_resnets(
    vb: &VarBuilder,
    groups: usize,
    layers: usize,
    in_c: usize,
    out_c: usize,
) -> Result<Vec<ResnetBlock2D>> {
    let rc = resnet_config(groups);
    (0..layers)
        .map(|j| {
            let rin = if j == 0 { in_c } else { out_c };
            ResnetBlock2D::load(&vb.pp("resnets").pp(j), &rc, rin, out_c)
        })
        .collect()
}

/// `UpDecoderBlock2D`: `layers_per_block + 1` resnets, then (except in the last block) nearest
/// ×2 and a 3×3 conv.
#[derive(Debug)]
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsamplers: Vec<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn load(
        vb: &VarBuilder,
        groups: usize,
        layers: usize,
        (in_c, out_c): (usize, usize),
        last: bool,
    ) -> Result<Self> {
        let resnets = load_resnets(vb, groups, layers, in_c, out_c)?;
        let upsamplers = if last {
            Vec::new()
        } else {
            vec![Upsample2D::load(&vb.pp("upsamplers.0"), out_c)?]
        };
        Ok(UpDecoderBlock2D {
            resnets,
            upsamplers,
        })
    }

    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let mut x = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            x = r.record(g, &x, None, &format!("{name}.resnets.{j}"))?;
        }
        for (j, u) in self.upsamplers.iter().enumerate() {
            x = u.record(g, &x, &format!("{name}.upsamplers.{j}"))?;
        }
        Ok(x)
    }
}

/// The autoencoders' `UNetMidBlock2D`: resnet, (attention: one head, `norm_num_groups` groups,
/// eps 1e-6), resnet; no time embedding.
pub fn load_mid_block(
    vb: &VarBuilder,
    groups: usize,
    channels: usize,
    attention: bool,
) -> Result<UNetMidBlock2D> {
    let ac = SpatialAttentionConfig {
        channels,
        heads: 1,
        groups,
        eps: VAE_NORM_EPS,
        rescale_output_factor: 1.0,
    };
    UNetMidBlock2D::load(
        vb,
        &resnet_config(groups),
        attention.then_some(&ac),
        channels,
    )
}
