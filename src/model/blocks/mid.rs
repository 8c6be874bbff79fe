//! diffusers `UNetMidBlock2D` (`unet_2d_blocks.py`): resnet, (spatial attention), resnet — the
//! middle of `UNet2DModel` (time-conditioned) and of the autoencoders' encoder and decoder (no
//! time embedding) — and `UNetMidBlock2DCrossAttn`, the same with SD's `Transformer2DModel` in
//! place of the attention.

use crate::error::{Error, Result};
use crate::model::blocks::attention::{AttentionBlock, SpatialAttentionConfig};
use crate::model::blocks::resnet::{ResnetBlock2D, ResnetConfig};
use crate::model::blocks::SpatialLayer;
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;

/// `UNetMidBlock2D` with one attention layer (or none) between its two resnets.
#[derive(Debug)]
pub struct UNetMidBlock2D<A = AttentionBlock> {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<A>,
}

impl UNetMidBlock2D<AttentionBlock> {
    /// `channels` in and out; `attention` `None` builds none (`add_attention` false).
    pub fn load(
        vb: &VarBuilder,
        resnet: &ResnetConfig,
        attention: Option<&SpatialAttentionConfig>,
        channels: usize,
    ) -> Result<Self> {
        let attentions = match attention {
            Some(ac) => vec![AttentionBlock::load(&vb.pp("attentions.0"), ac)?],
            None => Vec::new(),
        };
        let resnets = vec![
            ResnetBlock2D::load(&vb.pp("resnets.0"), resnet, channels, channels)?,
            ResnetBlock2D::load(&vb.pp("resnets.1"), resnet, channels, channels)?,
        ];
        Ok(UNetMidBlock2D {
            resnets,
            attentions,
        })
    }

    /// `time` is what the resnets take ([`ResnetBlock2D::record`]): a U-Net's fused time
    /// projections, `None` for an autoencoder.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        time: Option<&Value>,
        name: &str,
    ) -> Result<Value> {
        self.record_with(g, x, time, None, name)
    }
}

impl<A: SpatialLayer> UNetMidBlock2D<A> {
    /// `resnets.0`, then `attentions.i` + `resnets.i+1` for each loaded attention layer
    /// (`UNetMidBlock2DCrossAttn` with `num_layers` 1).
    pub fn load_with(
        vb: &VarBuilder,
        resnet: &ResnetConfig,
        attention: A,
        channels: usize,
    ) -> Result<Self> {
        Ok(UNetMidBlock2D {
            resnets: vec![
                ResnetBlock2D::load(&vb.pp("resnets.0"), resnet, channels, channels)?,
                ResnetBlock2D::load(&vb.pp("resnets.1"), resnet, channels, channels)?,
            ],
            attentions: vec![attention],
        })
    }

    /// `context`: the text embeddings of a cross-attention mid block.
    pub fn record_with<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        time: Option<&Value>,
        context: Option<&Value>,
        name: &str,
    ) -> Result<Value> {
        let first = self
            .resnets
            .first()
            .ok_or_else(|| Error::invalid(name, "a mid block without resnets"))?;
        let mut x = first.record(g, x, time, &format!("{name}.resnets.0"))?;
        for (j, r) in self.resnets.iter().enumerate().skip(1) {
            if let Some(a) = self.attentions.get(j - 1) {
                x = a.record_spatial(g, &x, context, &format!("{name}.attentions.{}", j - 1))?;
            }
            x = r.record(g, &x, time, &format!("{name}.resnets.{j}"))?;
        }
        Ok(x)
    }
}
