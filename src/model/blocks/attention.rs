//! diffusers `Attention` as the spatial blocks of `UNet2DModel` and the VAE use it (from
//! `attention_processor.py` with `AttnProcessor`): group norm over the channels, q/k/v
//! projections of the H·W tokens, softmax(q·kᵀ/√d)·v per head, output projection, residual,
//! divided by `rescale_output_factor`. Legacy checkpoints name the projections
//! `query/key/value/proj_attn`; they map at load.

use crate::error::Result;
use crate::model::blocks::layers::{GroupNormLayer, LinearLayer};
use crate::model::blocks::SpatialLayer;
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;
use crate::ops::causal_softmax::{causal_softmax, CausalSoftmax};
use crate::ops::matmul::{matmul, Matmul};
use crate::ops::softmax::{softmax_rows, SoftmaxRows};

/// Shape of a spatial attention block.
#[derive(Debug, Clone, Copy)]
pub struct SpatialAttentionConfig {
    pub channels: usize,
    pub heads: usize,
    pub groups: usize,
    pub eps: f64,
    pub rescale_output_factor: f64,
}

/// Self-attention over the pixels of an NCHW activation.
#[derive(Debug)]
pub struct AttentionBlock {
    pub group_norm: GroupNormLayer,
    pub to_q: LinearLayer,
    pub to_k: LinearLayer,
    pub to_v: LinearLayer,
    /// `to_out.0` (legacy `proj_attn`).
    pub to_out: LinearLayer,
    pub heads: usize,
    pub head_dim: usize,
    pub rescale_output_factor: f32,
}

impl AttentionBlock {
    pub fn load(vb: &VarBuilder, cfg: &SpatialAttentionConfig) -> Result<Self> {
        let c = cfg.channels;
        if cfg.heads == 0 || !c.is_multiple_of(cfg.heads) {
            return Err(crate::Error::invalid(
                vb.key("to_q"),
                format!("{c} channels do not split into {} heads", cfg.heads),
            ));
        }
        Ok(AttentionBlock {
            group_norm: GroupNormLayer::load(&vb.pp("group_norm"), c, cfg.groups, cfg.eps)?,
            to_q: LinearLayer::load_any(vb, &["to_q", "query"], c, c)?,
            to_k: LinearLayer::load_any(vb, &["to_k", "key"], c, c)?,
            to_v: LinearLayer::load_any(vb, &["to_v", "value"], c, c)?,
            to_out: LinearLayer::load_any(vb, &["to_out.0", "proj_attn"], c, c)?,
            heads: cfg.heads,
            head_dim: c / cfg.heads,
            rescale_output_factor: cfg.rescale_output_factor as f32,
        })
    }

    /// `x [N, C, H, W]` → same shape.
    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let (heads, d) = (self.heads, self.head_dim);
        let h = self
            .group_norm
            .record(g, x, false, &format!("{name}.group_norm"))?;
        let q = self
            .to_q
            .record_channels(g, &h, None, 1.0, &format!("{name}.to_q"))?;
        let k = self
            .to_k
            .record_channels(g, &h, None, 1.0, &format!("{name}.to_k"))?;
        let v = self
            .to_v
            .record_channels(g, &h, None, 1.0, &format!("{name}.to_v"))?;
        // Written as [N, C, T]: the same memory as x's [N, C, H, W].
        let attn = multi_head(
            g,
            [&q, &k, &v],
            Heads {
                heads,
                head_dim: d,
                causal: false,
            },
            &x.shape.clone(),
            name,
        )?;
        let scale = 1.0 / self.rescale_output_factor;
        self.to_out
            .record_channels(g, &attn, Some(x), scale, &format!("{name}.to_out"))
    }
}

impl SpatialLayer for AttentionBlock {
    fn record_spatial<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        _context: Option<&Value>,
        name: &str,
    ) -> Result<Value> {
        self.record(g, x, name)
    }
}

/// How [`multi_head`] splits the channels and masks the scores.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub head_dim: usize,
    /// Row r attends only to columns ≤ r (a text encoder's causal self-attention).
    pub causal: bool,
}

/// `softmax(q·kᵀ/√d)·v` per head, on channel-major `[N, heads·d, T]` q/k/v: channel
/// `c = head·d + i`, so (n, head) flattens to one batch index with stride d·T and no transpose is
/// needed. Scores `[N·heads, T, T]`; the result is written channel-major with shape `out_shape`
/// (the same memory as `[N, heads·d, T]`).
pub fn multi_head<'a>(
    g: &mut Graph<'a>,
    [q, k, v]: [&Value; 3],
    heads: Heads,
    out_shape: &[usize],
    name: &str,
) -> Result<Value> {
    let n = q.shape[0];
    let t: usize = q.shape[2..].iter().product();
    let tk: usize = k.shape[2..].iter().product();
    let d = heads.head_dim;
    let bh = n * heads.heads;
    let label = format!("{name}.scores");
    let (qi, ki) = (q.id(), k.id());
    let scores = g.op(&label.clone(), &[q, k], &[bh, t, tk], move |b, out| {
        let mm = Matmul {
            a: b.get(qi),
            b: b.get(ki),
            out,
            bias: None,
            residual: None,
            batch: bh,
            m: t,
            n: tk,
            k: d,
            a_strides: [d * t, 1, t],
            b_strides: [d * tk, tk, 1],
            c_strides: [t * tk, tk, 1],
            alpha: 1.0 / (d as f32).sqrt(),
            output_scale: 1.0,
        };
        matmul(b.ctx, &mm, &label)
    })?;
    if heads.causal {
        let label = format!("{name}.causal_softmax");
        g.op_in_place(&scores, &[], move |b, data| {
            let args = CausalSoftmax {
                data,
                blocks: bh,
                t,
            };
            causal_softmax(b.ctx, &args, &label)
        })?;
    } else {
        let label = format!("{name}.softmax");
        g.op_in_place(&scores, &[], move |b, data| {
            let args = SoftmaxRows {
                data,
                rows: bh * t,
                cols: tk,
            };
            softmax_rows(b.ctx, &args, &label)
        })?;
    }
    let label = format!("{name}.attn_values");
    let (si, vi) = (scores.id(), v.id());
    g.op(&label.clone(), &[&scores, v], out_shape, move |b, out| {
        let mm = Matmul {
            a: b.get(si),
            b: b.get(vi),
            out,
            bias: None,
            residual: None,
            batch: bh,
            m: t,
            n: d,
            k: tk,
            a_strides: [t * tk, tk, 1],
            b_strides: [d * tk, 1, tk],
            c_strides: [d * t, 1, t],
            alpha: 1.0,
            output_scale: 1.0,
        };
        matmul(b.ctx, &mm, &label)
    })
}
