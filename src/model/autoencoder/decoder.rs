//! diffusers `Decoder` (`models/autoencoders/vae.py`): conv_in → mid block (resnet, attention,
//! resnet) → up blocks of `layers_per_block + 1` resnets with ×2 upsamplers except the last →
//! GroupNorm + SiLU (one fused launch) → conv_out. No time embedding; every norm has eps 1e-6.

use crate::error::Result;
use crate::model::autoencoder::blocks::{load_mid_block, UpDecoderBlock2D, VAE_NORM_EPS};
use crate::model::autoencoder::config::CoderConfig;
use crate::model::blocks::layers::{Conv2dLayer, ConvApply, GroupNormLayer};
use crate::model::blocks::mid::UNetMidBlock2D;
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;

/// The decoder half of an autoencoder, weights resident on the GPU.
#[derive(Debug)]
pub struct Decoder {
    pub conv_in: Conv2dLayer,
    pub mid_block: UNetMidBlock2D,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNormLayer,
    pub conv_out: Conv2dLayer,
}

impl Decoder {
    /// Loads `decoder.*` for latents of `latent_channels` channels.
    pub fn load(vb: &VarBuilder, cfg: &CoderConfig, latent_channels: usize) -> Result<Self> {
        let groups = cfg.norm_num_groups;
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let conv_in = Conv2dLayer::load(&vb.pp("conv_in"), latent_channels, rev[0], 3)?;
        let mid_block = load_mid_block(
            &vb.pp("mid_block"),
            groups,
            rev[0],
            cfg.mid_block_add_attention,
        )?;
        let mut up_blocks = Vec::new();
        let mut out_c = rev[0];
        for i in 0..cfg.up_block_types.len() {
            let in_c = out_c;
            out_c = rev[i];
            up_blocks.push(UpDecoderBlock2D::load(
                &vb.pp("up_blocks").pp(i),
                groups,
                cfg.layers_per_block + 1,
                (in_c, out_c),
                i + 1 == rev.len(),
            )?);
        }
        let c0 = cfg.block_out_channels[0];
        let conv_norm_out =
            GroupNormLayer::load(&vb.pp("conv_norm_out"), c0, groups, VAE_NORM_EPS)?;
        let conv_out = Conv2dLayer::load(&vb.pp("conv_out"), c0, cfg.out_channels, 3)?;
        Ok(Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// `z [N, latent, h, w]` → image `[N, out, h·2^k, w·2^k]`; per-block outputs are pushed to
    /// `blocks` under `{name}.conv_in`, `{name}.mid_block`, `{name}.up_blocks.i`,
    /// `{name}.conv_act`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        z: &Value,
        name: &str,
        blocks: &mut Vec<(String, Value)>,
    ) -> Result<Value> {
        let mut keep = |n: String, v: &Value| blocks.push((n, v.clone()));
        let mut x = self
            .conv_in
            .record(g, z, &ConvApply::same(1), &format!("{name}.conv_in"))?;
        keep(format!("{name}.conv_in"), &x);
        x = self
            .mid_block
            .record(g, &x, None, &format!("{name}.mid_block"))?;
        keep(format!("{name}.mid_block"), &x);
        for (i, block) in self.up_blocks.iter().enumerate() {
            let block_name = format!("{name}.up_blocks.{i}");
            x = block.record(g, &x, &block_name)?;
            keep(block_name, &x);
        }
        // conv_norm_out and conv_act are one fused launch.
        let h = self
            .conv_norm_out
            .record(g, &x, true, &format!("{name}.conv_act"))?;
        keep(format!("{name}.conv_act"), &h);
        self.conv_out
            .record(g, &h, &ConvApply::same(1), &format!("{name}.conv_out"))
    }
}
