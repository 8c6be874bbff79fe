//! An exact decode in row bands, for images whose activations exceed the binding limit (Stable
//! Diffusion's VAE at 512² has 256-channel 512×512 activations, 256 MiB each). The
//! latent-resolution part (post_quant_conv, conv_in, the mid block with its attention over every
//! latent pixel) runs whole; from the first up block on, every activation is held as row bands,
//! each its own buffer within the limit, and the graph runs layer by layer over all bands:
//! a k×k convolution of a band reads its `(k − 1) / 2` halo rows, gathered from the neighbouring
//! bands (zero padding only at the image's top and bottom), so its output rows equal the unsplit
//! convolution's bit for bit; a nearest ×2 upsample maps a band to the band of twice the rows;
//! group norm takes its statistics over the whole image in two passes (per-band partial sums,
//! combined exactly; `shaders/group_norm.wgsl`). Not an overlapping-tile blend: the result is
//! the unsplit decode up to the rounding of the combined group-norm statistics.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::autoencoder::decoder::Decoder;
use crate::model::blocks::layers::{Conv2dLayer, ConvApply, GroupNormLayer};
use crate::model::blocks::resnet::ResnetBlock2D;
use crate::model::graph::{Graph, Value};
use crate::ops::conv2d::Padding;
use crate::ops::elementwise::{copy_rows, CopyRows};
use crate::ops::group_norm::{
    group_norm_apply, group_norm_partial, GroupNormApply, GroupNormPartial,
};
use crate::ops::upsample::{upsample_nearest2x, UpsampleNearest2x};

/// How a decode graph is planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The most bytes one activation may take. `None`: the adapter's limit (the smaller of
    /// `max_storage_buffer_binding_size` and `max_buffer_size`); a lower value (never a higher
    /// one) splits the decode into row bands on any adapter, as tests on lavapipe do.
    pub binding_limit: Option<u64>,
}

/// The split of `height` latent rows into `bands` bands of (nearly) equal rows.
pub fn latent_bands(height: usize, bands: usize) -> Vec<Range<usize>> {
    (0..bands)
        .map(|i| i * height / bands..(i + 1) * height / bands)
        .collect()
}

/// An activation `[N, C, height, W]` held as row bands, one value per band.
#[derive(Debug, Clone)]
struct Banded {
    bands: Vec<Value>,
    rows: Vec<Range<usize>>,
    height: usize,
}

impl Banded {
    fn map<'a>(
        &self,
        g: &mut Graph<'a>,
        mut f: impl FnMut(&mut Graph<'a>, usize) -> Result<Value>,
    ) -> Result<Banded> {
        let bands = (0..self.bands.len())
            .map(|i| f(g, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Banded {
            bands,
            rows: self.rows.clone(),
            height: self.height,
        })
    }
}

/// `[N, C, H, W]` of a value, or an error naming `name`.
fn dims(x: &Value, name: &str) -> Result<[usize; 4]> {
    match x.shape[..] {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::invalid(
            name,
            format!("{:?} is not [N, C, H, W]", x.shape),
        )),
    }
}

/// Records copies of `pieces` (source value, its first row, rows, destination row) into a new
/// value of `shape`: the first copy creates it, the others write their rows in place.
fn assemble<'a>(
    g: &mut Graph<'a>,
    shape: &[usize],
    pieces: &[(Value, usize, usize, usize)],
    name: &str,
) -> Result<Value> {
    let mut out: Option<Value> = None;
    for (k, (src, src_row, rows, dst_row)) in pieces.iter().enumerate() {
        let (si, src_row, rows, dst_row) = (src.id(), *src_row, *rows, *dst_row);
        let label = format!("{name}.{k}");
        let build = move |b: &crate::model::graph::Bound<'_>, dst: &crate::gpu::Tensor| {
            let args = CopyRows {
                src: b.get(si),
                dst,
                src_row,
                dst_row,
                rows,
            };
            copy_rows(b.ctx, &args, &label)
        };
        match &out {
            None => out = Some(g.op(name, &[src], shape, build)?),
            Some(v) => g.op_in_place(v, &[src], build)?,
        }
    }
    out.ok_or_else(|| Error::invalid(name, "nothing to copy"))
}

/// Rows `wanted` of a banded value as one value (the pieces of every band they overlap).
fn gather(g: &mut Graph<'_>, x: &Banded, wanted: Range<usize>, name: &str) -> Result<Value> {
    let [n, c, _, w] = dims(&x.bands[0], name)?;
    let mut pieces = Vec::new();
    for (band, rows) in x.bands.iter().zip(&x.rows) {
        let (lo, hi) = (rows.start.max(wanted.start), rows.end.min(wanted.end));
        if lo < hi {
            pieces.push((band.clone(), lo - rows.start, hi - lo, lo - wanted.start));
        }
    }
    assemble(g, &[n, c, wanted.len(), w], &pieces, name)
}

/// A whole value cut into the bands `rows`.
fn split(g: &mut Graph<'_>, x: &Value, rows: &[Range<usize>], name: &str) -> Result<Banded> {
    let [n, c, h, w] = dims(x, name)?;
    let bands = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let piece = [(x.clone(), r.start, r.len(), 0)];
            assemble(g, &[n, c, r.len(), w], &piece, &format!("{name}.band{i}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Banded {
        bands,
        rows: rows.to_vec(),
        height: h,
    })
}

/// The bands written into one whole value.
fn concat(g: &mut Graph<'_>, x: &Banded, name: &str) -> Result<Value> {
    let [n, c, _, w] = dims(&x.bands[0], name)?;
    let pieces: Vec<_> = x
        .bands
        .iter()
        .zip(&x.rows)
        .map(|(band, rows)| (band.clone(), 0, rows.len(), rows.start))
        .collect();
    assemble(g, &[n, c, x.height, w], &pieces, name)
}

/// Group norm (then SiLU when `silu`) over the whole image: each band's statistics, then each
/// band normalised with their combination.
fn group_norm<'a>(
    g: &mut Graph<'a>,
    layer: &'a GroupNormLayer,
    x: &Banded,
    silu: bool,
    name: &str,
) -> Result<Banded> {
    let [n, ..] = dims(&x.bands[0], name)?;
    let stats_shape = [x.bands.len(), n * layer.groups, 4];
    let mut stats: Option<Value> = None;
    for (band, value) in x.bands.iter().enumerate() {
        let (xi, groups) = (value.id(), layer.groups);
        let label = format!("{name}.stats{band}");
        let build = move |b: &crate::model::graph::Bound<'_>, out: &crate::gpu::Tensor| {
            let args = GroupNormPartial {
                input: b.get(xi),
                stats: out,
                groups,
                band,
            };
            group_norm_partial(b.ctx, &args, &label)
        };
        match &stats {
            None => stats = Some(g.op(&format!("{name}.stats"), &[value], &stats_shape, build)?),
            Some(s) => g.op_in_place(s, &[value], build)?,
        }
    }
    let stats = stats.ok_or_else(|| Error::invalid(name, "a banded value without bands"))?;
    x.map(g, |g, i| {
        let (xi, si) = (x.bands[i].id(), stats.id());
        let label = format!("{name}.band{i}");
        g.op(
            &label.clone(),
            &[&x.bands[i], &stats],
            &x.bands[i].shape.clone(),
            move |b, out| {
                let args = GroupNormApply {
                    input: b.get(xi),
                    stats: b.get(si),
                    gamma: &layer.weight,
                    beta: &layer.bias,
                    out,
                    groups: layer.groups,
                    eps: layer.eps,
                    silu,
                };
                group_norm_apply(b.ctx, &args, &label)
            },
        )
    })
}

/// A stride-1 "same" convolution (`(k − 1) / 2` zero padding) of every band, each reading its
/// halo rows from its neighbours; `residual` (banded like the output) and `output_scale` as in
/// [`ConvApply`].
fn conv<'a>(
    g: &mut Graph<'a>,
    layer: &'a Conv2dLayer,
    x: &Banded,
    residual: Option<&Banded>,
    output_scale: f32,
    name: &str,
) -> Result<Banded> {
    let p = (layer.kernel - 1) / 2;
    x.map(g, |g, i| {
        let rows = &x.rows[i];
        let lo = rows.start.saturating_sub(p);
        let hi = (rows.end + p).min(x.height);
        let input = if p == 0 {
            x.bands[i].clone()
        } else {
            gather(g, x, lo..hi, &format!("{name}.halo{i}"))?
        };
        let apply = ConvApply {
            padding: Padding {
                top: p - (rows.start - lo),
                bottom: p - (hi - rows.end),
                left: p,
                right: p,
            },
            residual: residual.map(|r| &r.bands[i]),
            output_scale,
            ..ConvApply::same(p)
        };
        layer.record(g, &input, &apply, &format!("{name}.band{i}"))
    })
}

/// `ResnetBlock2D` without time embedding, band by band (the autoencoders' resnets).
fn resnet<'a>(
    g: &mut Graph<'a>,
    block: &'a ResnetBlock2D,
    x: &Banded,
    name: &str,
) -> Result<Banded> {
    if block.time_emb_proj.is_some() {
        return Err(Error::invalid(
            name,
            "a banded decode has no time embedding for time_emb_proj",
        ));
    }
    let h = group_norm(g, &block.norm1, x, true, &format!("{name}.norm1"))?;
    let h = conv(g, &block.conv1, &h, None, 1.0, &format!("{name}.conv1"))?;
    let h = group_norm(g, &block.norm2, &h, true, &format!("{name}.norm2"))?;
    let shortcut = match &block.conv_shortcut {
        Some(c) => conv(g, c, x, None, 1.0, &format!("{name}.conv_shortcut"))?,
        None => x.clone(),
    };
    let scale = 1.0 / block.output_scale_factor;
    conv(
        g,
        &block.conv2,
        &h,
        Some(&shortcut),
        scale,
        &format!("{name}.conv2"),
    )
}

/// Nearest ×2 of every band: band rows `a..b` become `2a..2b`.
fn upsample(g: &mut Graph<'_>, x: &Banded, name: &str) -> Result<Banded> {
    let mut out = x.map(g, |g, i| {
        let mut shape = x.bands[i].shape.clone();
        shape[2] *= 2;
        shape[3] *= 2;
        let xi = x.bands[i].id();
        let label = format!("{name}.band{i}");
        g.op(&label.clone(), &[&x.bands[i]], &shape, move |b, out| {
            let args = UpsampleNearest2x {
                input: b.get(xi),
                out,
            };
            upsample_nearest2x(b.ctx, &args, &label)
        })
    })?;
    out.rows = x.rows.iter().map(|r| 2 * r.start..2 * r.end).collect();
    out.height = 2 * x.height;
    Ok(out)
}

impl Decoder {
    /// Like [`Decoder::record`], with everything after the mid block in the row bands `rows`
    /// of the latent (`z`'s) rows, which must cover `0..h` in order.
    pub fn record_banded<'a>(
        &'a self,
        g: &mut Graph<'a>,
        z: &Value,
        rows: &[Range<usize>],
        name: &str,
    ) -> Result<Value> {
        let x = self
            .conv_in
            .record(g, z, &ConvApply::same(1), &format!("{name}.conv_in"))?;
        let x = self
            .mid_block
            .record(g, &x, None, &format!("{name}.mid_block"))?;
        let mut x = split(g, &x, rows, &format!("{name}.mid_block.split"))?;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let block_name = format!("{name}.up_blocks.{i}");
            for (j, r) in block.resnets.iter().enumerate() {
                x = resnet(g, r, &x, &format!("{block_name}.resnets.{j}"))?;
            }
            for (j, u) in block.upsamplers.iter().enumerate() {
                let up_name = format!("{block_name}.upsamplers.{j}");
                x = upsample(g, &x, &format!("{up_name}.interpolate"))?;
                x = conv(g, &u.conv, &x, None, 1.0, &format!("{up_name}.conv"))?;
            }
        }
        let h = group_norm(
            g,
            &self.conv_norm_out,
            &x,
            true,
            &format!("{name}.conv_act"),
        )?;
        let out = conv(
            g,
            &self.conv_out,
            &h,
            None,
            1.0,
            &format!("{name}.conv_out"),
        )?;
        concat(g, &out, &format!("{name}.output"))
    }
}
