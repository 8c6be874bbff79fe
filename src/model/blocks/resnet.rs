//! diffusers `resnet.py` `ResnetBlock2D` (time_embedding_norm "default", SiLU, no up/down
//! inside), `downsampling.py` `Downsample2D` and `upsampling.py` `Upsample2D` (conv variants),
//! and [`TimeProjections`]: every resnet's `time_emb_proj` of a U-Net as one GEMM per forward.

use crate::error::Result;
use crate::gpu::GpuContext;
use crate::model::blocks::layers::{Conv2dLayer, ConvApply, GroupNormLayer, LinearLayer};
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;
use crate::ops::conv2d::{fold_upsample, BatchBiasView, Padding};
use crate::ops::upsample::{upsample_nearest2x, UpsampleNearest2x};

/// What a `ResnetBlock2D` is built with besides its channel counts.
#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    pub groups: usize,
    pub eps: f64,
    /// Width of the time embedding `time_emb_proj` reads; `None`: no time conditioning (the
    /// VAE's resnets).
    pub temb_channels: Option<usize>,
    /// The output is divided by this.
    pub output_scale_factor: f64,
}

/// Where a time-conditioned resnet's `time_emb_proj(silu(temb))` comes from.
#[derive(Debug)]
pub enum TimeProjection {
    /// Its own layer, as loaded: [`ResnetBlock2D::record`] is handed `silu(temb)` `[N, temb]`
    /// and records the projection itself (one small GEMM per resnet).
    Own(LinearLayer),
    /// Its columns of the model's fused projection ([`TimeProjections`]): `record` is handed the
    /// fused `[N, ΣCout]` value and conv1's epilogue reads columns `offset .. offset + channels`
    /// of each row, so the resnet records no launch of its own.
    Slice {
        /// The first of this resnet's columns.
        offset: usize,
        /// Its `Cout` (the width of its own layer).
        channels: usize,
    },
}

/// diffusers `ResnetBlock2D`.
#[derive(Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNormLayer,
    pub conv1: Conv2dLayer,
    /// `None`: no time conditioning (the VAE's resnets).
    pub time_emb_proj: Option<TimeProjection>,
    pub norm2: GroupNormLayer,
    pub conv2: Conv2dLayer,
    /// 1×1 conv when in ≠ out channels.
    pub conv_shortcut: Option<Conv2dLayer>,
    pub output_scale_factor: f32,
}

impl ResnetBlock2D {
    pub fn load(vb: &VarBuilder, cfg: &ResnetConfig, cin: usize, cout: usize) -> Result<Self> {
        Ok(ResnetBlock2D {
            norm1: GroupNormLayer::load(&vb.pp("norm1"), cin, cfg.groups, cfg.eps)?,
            conv1: Conv2dLayer::load(&vb.pp("conv1"), cin, cout, 3)?,
            time_emb_proj: match cfg.temb_channels {
                Some(temb) => Some(TimeProjection::Own(LinearLayer::load(
                    &vb.pp("time_emb_proj"),
                    temb,
                    cout,
                )?)),
                None => None,
            },
            norm2: GroupNormLayer::load(&vb.pp("norm2"), cout, cfg.groups, cfg.eps)?,
            conv2: Conv2dLayer::load(&vb.pp("conv2"), cout, cout, 3)?,
            conv_shortcut: if cin != cout {
                Some(Conv2dLayer::load(&vb.pp("conv_shortcut"), cin, cout, 1)?)
            } else {
                None
            },
            output_scale_factor: cfg.output_scale_factor as f32,
        })
    }

    /// `(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(temb_act))))) / osf`, where
    /// `temb_act` is `silu(temb)` (computed once per model). The time projection is the conv1
    /// epilogue's per-sample bias, the shortcut and the scale conv2's.
    ///
    /// `time` depends on [`ResnetBlock2D::time_emb_proj`]: `silu(temb)` for
    /// [`TimeProjection::Own`], the fused projections ([`TimeProjections::record`]) for
    /// [`TimeProjection::Slice`], `None` for a resnet without time conditioning.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        time: Option<&Value>,
        name: &str,
    ) -> Result<Value> {
        let h = self.norm1.record(g, x, true, &format!("{name}.norm1"))?;
        let (t, view) = match (&self.time_emb_proj, time) {
            (Some(TimeProjection::Own(proj)), Some(temb_act)) => (
                Some(proj.record(g, temb_act, &format!("{name}.time_emb_proj"))?),
                None,
            ),
            (Some(TimeProjection::Slice { offset, channels }), Some(fused)) => {
                let n = x.shape[0];
                let width = match fused.shape[..] {
                    [rows, width] if rows == n => width,
                    _ => {
                        return Err(crate::Error::invalid(
                            name,
                            format!(
                                "fused time projections {:?} are not [{n}, _] (input {:?})",
                                fused.shape, x.shape
                            ),
                        ))
                    }
                };
                if offset + channels > width {
                    return Err(crate::Error::invalid(
                        name,
                        format!(
                            "time projection columns {offset}..{} lie past the fused projections' {width}",
                            offset + channels
                        ),
                    ));
                }
                let view = BatchBiasView {
                    stride: width,
                    offset: *offset,
                };
                (Some(fused.clone()), Some(view))
            }
            (None, None) => (None, None),
            _ => {
                return Err(crate::Error::invalid(
                    name,
                    "the time embedding and time_emb_proj must both be present or both absent",
                ))
            }
        };
        let h = self.conv1.record(
            g,
            &h,
            &ConvApply {
                batch_bias: t.as_ref(),
                batch_bias_view: view,
                ..ConvApply::same(1)
            },
            &format!("{name}.conv1"),
        )?;
        let h = self.norm2.record(g, &h, true, &format!("{name}.norm2"))?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.record(g, x, &ConvApply::same(0), &format!("{name}.conv_shortcut"))?,
            None => x.clone(),
        };
        self.conv2.record(
            g,
            &h,
            &ConvApply {
                residual: Some(&shortcut),
                output_scale: 1.0 / self.output_scale_factor,
                ..ConvApply::same(1)
            },
            &format!("{name}.conv2"),
        )
    }
}

/// diffusers `Downsample2D` with `use_conv`: a 3×3 stride-2 conv.
#[derive(Debug)]
pub struct Downsample2D {
    pub conv: Conv2dLayer,
    /// `downsample_padding`: 0 (the original DDPM checkpoints) pads right and bottom by one.
    pub padding: usize,
}

impl Downsample2D {
    pub fn load(vb: &VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Downsample2D {
            conv: Conv2dLayer::load(&vb.pp("conv"), channels, channels, 3)?,
            padding,
        })
    }

    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let padding = if self.padding == 0 {
            Padding {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            }
        } else {
            Padding::same(self.padding)
        };
        let apply = ConvApply {
            stride: 2,
            padding,
            ..ConvApply::same(0)
        };
        self.conv.record(g, x, &apply, &format!("{name}.conv"))
    }
}

/// diffusers `Upsample2D` with `use_conv`: nearest ×2, then a 3×3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    pub conv: Conv2dLayer,
}

impl Upsample2D {
    pub fn load(vb: &VarBuilder, channels: usize) -> Result<Self> {
        Ok(Upsample2D {
            conv: Conv2dLayer::load(&vb.pp("conv"), channels, channels, 3)?,
        })
    }

    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        self.record_to(g, x, None, name)
    }

    /// Nearest upsampling to `size` (`[H, W]`; `None`: ×2), as diffusers' `Upsample2D` with
    /// `output_size` (a U-Net's up path forwards the next skip's size when the sample is not a
    /// multiple of its overall factor), then the conv. An exact ×2 is one launch (the conv reads
    /// the input through the upsampling) unless that would move a CPU-shaped context's conv off
    /// `conv2d_cpu` ([`fold_upsample`]); other sizes upsample into a tensor first.
    /// Either way the result is bit-identical.
    pub fn record_to<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        size: Option<[usize; 2]>,
        name: &str,
    ) -> Result<Value> {
        let mut shape = x.shape.clone();
        let doubled = [2 * shape[2], 2 * shape[3]];
        let [h, w] = size.unwrap_or(doubled);
        let k = self.conv.kernel;
        if [h, w] == doubled && fold_upsample(g.context(), (k, k), (shape[2], shape[3])) {
            // Exactly ×2: the interpolation is folded into the conv's input gather.
            let apply = ConvApply {
                upsample: true,
                ..ConvApply::same(1)
            };
            return self.conv.record(g, x, &apply, &format!("{name}.conv"));
        }
        shape[2] = h;
        shape[3] = w;
        let xi = x.id();
        let label = format!("{name}.interpolate");
        let up = g.op(&label.clone(), &[x], &shape, move |b, out| {
            let args = UpsampleNearest2x {
                input: b.get(xi),
                out,
            };
            upsample_nearest2x(b.ctx, &args, &label)
        })?;
        self.conv
            .record(g, &up, &ConvApply::same(1), &format!("{name}.conv"))
    }
}

/// Every resnet's `time_emb_proj` of a U-Net stacked along the outputs into one layer
/// ([`LinearLayer::fuse_outputs`]): one `[N, temb] → [N, ΣCout]` GEMM per forward instead of one
/// per resnet (22 for google/ddpm-cifar10-32), each resnet's conv1 then reading its columns
/// through a [`BatchBiasView`]. Each output is the same dot product in the same order as in the
/// resnet's own layer, so results are bit-identical to the per-resnet launches.
#[derive(Debug)]
pub struct TimeProjections {
    /// `[ΣCout, temb]` weights and `[ΣCout]` biases, resnet after resnet in fusing order.
    pub layer: LinearLayer,
}

impl TimeProjections {
    /// Fuses the own layers of `resnets` (those without time conditioning are skipped) and
    /// turns each into a [`TimeProjection::Slice`] of the result; the per-resnet weights are
    /// dropped, so only the fused copy stays on the device. Errors when no resnet has a layer of
    /// its own or one was already fused.
    pub fn fuse<'r>(
        ctx: &GpuContext,
        resnets: impl IntoIterator<Item = &'r mut ResnetBlock2D>,
        label: &str,
    ) -> Result<Self> {
        let mut resnets: Vec<&mut ResnetBlock2D> = resnets
            .into_iter()
            .filter(|r| r.time_emb_proj.is_some())
            .collect();
        let mut parts = Vec::with_capacity(resnets.len());
        for r in &resnets {
            match &r.time_emb_proj {
                Some(TimeProjection::Own(layer)) => parts.push(layer),
                _ => {
                    return Err(crate::Error::invalid(
                        label,
                        "a resnet's time projection is already a slice of a fused layer",
                    ))
                }
            }
        }
        let widths: Vec<usize> = parts.iter().map(|p| p.out_features).collect();
        let layer = LinearLayer::fuse_outputs(ctx, &parts, label)?;
        let mut offset = 0;
        for (r, channels) in resnets.iter_mut().zip(widths) {
            r.time_emb_proj = Some(TimeProjection::Slice { offset, channels });
            offset += channels;
        }
        Ok(TimeProjections { layer })
    }

    /// Records the fused projection of `temb_act` (`silu(temb)`, `[N, temb]`) into a
    /// `[N, ΣCout]` value, the `time` every fused resnet's [`ResnetBlock2D::record`] takes.
    pub fn record<'a>(&'a self, g: &mut Graph<'a>, temb_act: &Value, name: &str) -> Result<Value> {
        self.layer.record(g, temb_act, name)
    }
}
