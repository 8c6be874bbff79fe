//! diffusers `Encoder` (`models/autoencoders/vae.py`): conv_in → down blocks (resnets, then a
//! stride-2 conv after the asymmetric `(0, 1, 0, 1)` pad, `downsample_padding=0`, except in the
//! last block) → mid block → GroupNorm + SiLU (fused) → conv_out to `2·latent` channels
//! (`double_z`, AutoencoderKL: mean and log-variance) or `latent` (VQModel).

use crate::error::Result;
use crate::model::autoencoder::blocks::{load_mid_block, DownEncoderBlock2D, VAE_NORM_EPS};
use crate::model::autoencoder::config::CoderConfig;
use crate::model::blocks::layers::{Conv2dLayer, ConvApply, GroupNormLayer};
use crate::model::blocks::mid::UNetMidBlock2D;
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;

/// The encoder half of an autoencoder, weights resident on the GPU.
#[derive(Debug)]
pub struct Encoder {
    pub conv_in: Conv2dLayer,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: UNetMidBlock2D,
    pub conv_norm_out: GroupNormLayer,
    pub conv_out: Conv2dLayer,
}

impl Encoder {
    /// Loads `encoder.*` writing `out_channels` channels (`2·latent` with `double_z`).
    pub fn load(vb: &VarBuilder, cfg: &CoderConfig, out_channels: usize) -> Result<Self> {
        let groups = cfg.norm_num_groups;
        let ch = &cfg.block_out_channels;
        let conv_in = Conv2dLayer::load(&vb.pp("conv_in"), cfg.in_channels, ch[0], 3)?;
        let mut down_blocks = Vec::new();
        let mut out_c = ch[0];
        for i in 0..cfg.down_block_types.len() {
            let in_c = out_c;
            out_c = ch[i];
            down_blocks.push(DownEncoderBlock2D::load(
                &vb.pp("down_blocks").pp(i),
                groups,
                cfg.layers_per_block,
                (in_c, out_c),
                i + 1 == ch.len(),
            )?);
        }
        let c_last = ch[ch.len() - 1];
        let mid_block = load_mid_block(
            &vb.pp("mid_block"),
            groups,
            c_last,
            cfg.mid_block_add_attention,
        )?;
        let conv_norm_out =
            GroupNormLayer::load(&vb.pp("conv_norm_out"), c_last, groups, VAE_NORM_EPS)?;
        let conv_out = Conv2dLayer::load(&vb.pp("conv_out"), c_last, out_channels, 3)?;
        Ok(Encoder {
            conv_in,
            down_blocks,
            mid_block,
            conv_norm_out,
            conv_out,
        })
    }

    /// `image [N, in, H, W]` → `[N, out, H', W']` (each downsampler maps a size s to ⌊s/2⌋);
    /// per-block outputs are pushed to `blocks` under `{name}.conv_in`, `{name}.down_blocks.i`,
    /// `{name}.mid_block`, `{name}.conv_act`, `{name}.conv_out`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        image: &Value,
        name: &str,
        blocks: &mut Vec<(String, Value)>,
    ) -> Result<Value> {
        let mut keep = |n: String, v: &Value| blocks.push((n, v.clone()));
        let mut x =
            self.conv_in
                .record(g, image, &ConvApply::same(1), &format!("{name}.conv_in"))?;
        keep(format!("{name}.conv_in"), &x);
        for (i, block) in self.down_blocks.iter().enumerate() {
            let block_name = format!("{name}.down_blocks.{i}");
            x = block.record(g, &x, &block_name)?;
            keep(block_name, &x);
        }
        x = self
            .mid_block
            .record(g, &x, None, &format!("{name}.mid_block"))?;
        keep(format!("{name}.mid_block"), &x);
        let h = self
            .conv_norm_out
            .record(g, &x, true, &format!("{name}.conv_act"))?;
        keep(format!("{name}.conv_act"), &h);
        let out = self
            .conv_out
            .record(g, &h, &ConvApply::same(1), &format!("{name}.conv_out"))?;
        keep(format!("{name}.conv_out"), &out);
        Ok(out)
    }
}
