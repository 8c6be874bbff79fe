//! diffusers `Transformer2DModel` with continuous input, as Stable Diffusion's U-Net uses it
//! (`models/transformers/transformer_2d.py`, `models/attention.py` `BasicTransformerBlock`,
//! `FeedForward`, `GEGLU`, and `attention_processor.py` `Attention` with `AttnProcessor2_0`):
//!
//! ```text
//! h = proj_in(group_norm(x))                     NCHW → tokens [N, H·W, inner]
//! for each block:  h += attn1(norm1(h))          self-attention (or cross, only_cross_attention)
//!                  h += attn2(norm2(h), context) cross-attention on the text embeddings
//!                  h += ff(norm3(h))             GEGLU feed-forward, 4× wide
//! out = proj_out(h) + x                          tokens → NCHW
//! ```
//!
//! `proj_in`/`proj_out` are 1×1 convolutions (`use_linear_projection` false) or linear layers
//! (true): the same product on the same memory, only the weight shape differs. The hidden states
//! are token-major (layer norm per token, linear layers over features); q/k/v are written
//! channel-major so the attention products need no transposes, and the output projection reads
//! them back with the residual fused. Scores are f32 throughout, so `upcast_attention` changes
//! nothing here.

use crate::error::{Error, Result};
use crate::model::blocks::attention::{multi_head_views, part_views, HeadStrides, Heads};
use crate::model::blocks::layers::{GroupNormLayer, LayerNormLayer, LinearLayer, ProjectionInput};
use crate::model::blocks::SpatialLayer;
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;
use crate::ops::activation::{geglu, Geglu};

/// The shape of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerConfig {
    /// Channels of the NCHW input and output.
    pub channels: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// `num_layers`: transformer blocks in sequence.
    pub layers: usize,
    /// Width of the encoder hidden states (the text embeddings).
    pub cross_attention_dim: usize,
    /// Groups of the input group norm (eps 1e-6).
    pub groups: usize,
    pub use_linear_projection: bool,
    /// `attn1` attends to the context instead of the hidden states.
    pub only_cross_attention: bool,
}

impl TransformerConfig {
    fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// diffusers `Attention` (bias-free q/k/v, biased `to_out.0`) over token-major hidden states;
/// keys and values come from the context when it is cross-attention.
#[derive(Debug)]
pub struct CrossAttention {
    /// The q/k/v projections, fused at load so one launch projects whatever reads one input.
    pub projections: QkvProjections,
    /// `to_out.0`.
    pub to_out: LinearLayer,
    pub heads: usize,
    pub head_dim: usize,
    /// Keys/values from the context (`encoder_hidden_states`) rather than the hidden states.
    pub cross: bool,
}

impl CrossAttention {
    /// `query_dim` features in and out; keys/values read `kv_dim` features.
    pub fn load(
        vb: &VarBuilder,
        query_dim: usize,
        kv_dim: usize,
        heads: usize,
        head_dim: usize,
        cross: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let to_q = LinearLayer::load_no_bias(&vb.pp("to_q"), query_dim, inner)?;
        let to_k = LinearLayer::load_no_bias(&vb.pp("to_k"), kv_dim, inner)?;
        let to_v = LinearLayer::load_no_bias(&vb.pp("to_v"), kv_dim, inner)?;
        let ctx = vb.context();
        let projections = if cross {
            QkvProjections::Cross {
                q: to_q,
                kv: LinearLayer::fuse_outputs(ctx, &[&to_k, &to_v], &vb.key("to_kv"))?,
            }
        } else {
            QkvProjections::SelfAttention {
                qkv: LinearLayer::fuse_outputs(ctx, &[&to_q, &to_k, &to_v], &vb.key("to_qkv"))?,
            }
        };
        Ok(CrossAttention {
            projections,
            to_out: LinearLayer::load(&vb.pp("to_out.0"), inner, query_dim)?,
            heads,
            head_dim,
            cross,
        })
    }

    /// `residual + to_out(attention(to_q(h), to_k(c), to_v(c)))`, `c` the context when
    /// cross-attention, else `h`; `h` and `residual` `[N, T, D]`, `context [N, Tc, Dc]`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        h: &Value,
        context: &Value,
        residual: &Value,
        name: &str,
    ) -> Result<Value> {
        let heads = Heads {
            heads: self.heads,
            head_dim: self.head_dim,
            causal: false,
        };
        let attn = match &self.projections {
            QkvProjections::SelfAttention { qkv } => {
                let label = format!("{name}.to_qkv");
                let projected = qkv.record_parts(g, h, ProjectionInput::Tokens, 3, &label)?;
                let views = part_views(&projected, self.heads, self.head_dim)?;
                let [q, k, v] = views[..] else {
                    return Err(Error::invalid(name, "expected q, k and v projections"));
                };
                let [batch, t, _] = h.shape[..] else {
                    return Err(Error::invalid(name, "hidden states are not [B, T, D]"));
                };
                let out_shape = [batch, self.heads * self.head_dim, t];
                multi_head_views(g, [q, k, v], heads, &out_shape, name)?
            }
            QkvProjections::Cross { q, kv } => {
                let q = q.record_to_channels(g, h, None, None, &format!("{name}.to_q"))?;
                let label = format!("{name}.to_kv");
                let projected = kv.record_parts(g, context, ProjectionInput::Tokens, 2, &label)?;
                let views = part_views(&projected, self.heads, self.head_dim)?;
                let [k, v] = views[..] else {
                    return Err(Error::invalid(name, "expected k and v projections"));
                };
                let t: usize = q.shape[2..].iter().product();
                let q_view = HeadStrides::channel_major(self.heads, self.head_dim, t);
                multi_head_views(g, [(&q, q_view), k, v], heads, &q.shape.clone(), name)?
            }
        };
        self.to_out
            .record_from_channels(g, &attn, Some(residual), &format!("{name}.to_out"))
    }
}

/// An attention's input projections as they are launched: self-attention projects q, k and v
/// from the hidden states in one GEMM; cross-attention projects q from the hidden states and k
/// and v together from the context.
#[derive(Debug)]
pub enum QkvProjections {
    /// `to_q`, `to_k`, `to_v` stacked: `[3·inner, query_dim]`.
    SelfAttention { qkv: LinearLayer },
    /// `to_q` `[inner, query_dim]`; `to_k`, `to_v` stacked: `[2·inner, kv_dim]`.
    Cross { q: LinearLayer, kv: LinearLayer },
}

/// diffusers `FeedForward(dim, activation_fn="geglu")`: `net.0.proj` to 2·4·dim, GEGLU,
/// `net.2` back to dim.
#[derive(Debug)]
pub struct FeedForward {
    /// `net.0.proj`.
    pub proj: LinearLayer,
    /// `net.2`.
    pub out: LinearLayer,
}

impl FeedForward {
    pub fn load(vb: &VarBuilder, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj: LinearLayer::load(&vb.pp("net.0.proj"), dim, 2 * inner)?,
            out: LinearLayer::load(&vb.pp("net.2"), inner, dim)?,
        })
    }

    /// `residual + net.2(geglu(net.0.proj(h)))`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        h: &Value,
        residual: &Value,
        name: &str,
    ) -> Result<Value> {
        let p = self
            .proj
            .record_tokens(g, h, None, &format!("{name}.net.0.proj"))?;
        let mut shape = p.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last /= 2;
        }
        let label = format!("{name}.net.0");
        let pi = p.id();
        let gated = g.op(&label.clone(), &[&p], &shape, move |b, out| {
            geglu(b.ctx, &Geglu { x: b.get(pi), out }, &label)
        })?;
        self.out
            .record_tokens(g, &gated, Some(residual), &format!("{name}.net.2"))
    }
}

/// diffusers `BasicTransformerBlock` with `norm_type="layer_norm"` (eps 1e-5).
#[derive(Debug)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNormLayer,
    pub attn1: CrossAttention,
    pub norm2: LayerNormLayer,
    pub attn2: CrossAttention,
    pub norm3: LayerNormLayer,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn load(vb: &VarBuilder, cfg: &TransformerConfig) -> Result<Self> {
        let d = cfg.inner();
        let (ctx_dim, eps) = (cfg.cross_attention_dim, 1e-5);
        let attn1_kv = if cfg.only_cross_attention { ctx_dim } else { d };
        Ok(BasicTransformerBlock {
            norm1: LayerNormLayer::load(&vb.pp("norm1"), d, eps)?,
            attn1: CrossAttention::load(
                &vb.pp("attn1"),
                d,
                attn1_kv,
                cfg.heads,
                cfg.head_dim,
                cfg.only_cross_attention,
            )?,
            norm2: LayerNormLayer::load(&vb.pp("norm2"), d, eps)?,
            attn2: CrossAttention::load(
                &vb.pp("attn2"),
                d,
                ctx_dim,
                cfg.heads,
                cfg.head_dim,
                true,
            )?,
            norm3: LayerNormLayer::load(&vb.pp("norm3"), d, eps)?,
            ff: FeedForward::load(&vb.pp("ff"), d)?,
        })
    }

    /// `h [N, T, D]` → `[N, T, D]`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        h: &Value,
        context: &Value,
        name: &str,
    ) -> Result<Value> {
        let n = self.norm1.record(g, h, &format!("{name}.norm1"))?;
        let h = self
            .attn1
            .record(g, &n, context, h, &format!("{name}.attn1"))?;
        let n = self.norm2.record(g, &h, &format!("{name}.norm2"))?;
        let h = self
            .attn2
            .record(g, &n, context, &h, &format!("{name}.attn2"))?;
        let n = self.norm3.record(g, &h, &format!("{name}.norm3"))?;
        self.ff.record(g, &n, &h, &format!("{name}.ff"))
    }
}

/// diffusers `Transformer2DModel` on NCHW input (see the module docs).
#[derive(Debug)]
pub struct Transformer2DModel {
    /// `norm` (GroupNorm, eps 1e-6).
    pub norm: GroupNormLayer,
    pub proj_in: LinearLayer,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: LinearLayer,
    pub config: TransformerConfig,
}

impl Transformer2DModel {
    pub fn load(vb: &VarBuilder, cfg: &TransformerConfig) -> Result<Self> {
        let (c, inner) = (cfg.channels, cfg.inner());
        if cfg.heads == 0 || cfg.head_dim == 0 {
            return Err(Error::invalid(
                vb.key("proj_in"),
                format!(
                    "{c} channels give {} heads of {} dimensions; both must be at least 1",
                    cfg.heads, cfg.head_dim
                ),
            ));
        }
        let (proj_in, proj_out) = if cfg.use_linear_projection {
            (
                LinearLayer::load(&vb.pp("proj_in"), c, inner)?,
                LinearLayer::load(&vb.pp("proj_out"), inner, c)?,
            )
        } else {
            (
                LinearLayer::load_conv1x1(&vb.pp("proj_in"), c, inner)?,
                LinearLayer::load_conv1x1(&vb.pp("proj_out"), inner, c)?,
            )
        };
        let mut transformer_blocks = Vec::with_capacity(cfg.layers);
        for j in 0..cfg.layers {
            transformer_blocks.push(BasicTransformerBlock::load(
                &vb.pp("transformer_blocks").pp(j),
                cfg,
            )?);
        }
        Ok(Transformer2DModel {
            norm: GroupNormLayer::load(&vb.pp("norm"), c, cfg.groups, 1e-6)?,
            proj_in,
            transformer_blocks,
            proj_out,
            config: *cfg,
        })
    }

    /// `x [N, C, H, W]`, `context [N, Tc, cross_attention_dim]` → `[N, C, H, W]`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        context: &Value,
        name: &str,
    ) -> Result<Value> {
        let want = self.config.cross_attention_dim;
        if context.shape.len() != 3 || context.shape[2] != want || context.shape[0] != x.shape[0] {
            return Err(Error::invalid(
                name,
                format!(
                    "encoder hidden states {:?} must be [{}, tokens, {want}] (cross_attention_dim)",
                    context.shape, x.shape[0]
                ),
            ));
        }
        let n = self.norm.record(g, x, false, &format!("{name}.norm"))?;
        let mut h = self
            .proj_in
            .record_from_channels(g, &n, None, &format!("{name}.proj_in"))?;
        for (j, block) in self.transformer_blocks.iter().enumerate() {
            h = block.record(g, &h, context, &format!("{name}.transformer_blocks.{j}"))?;
        }
        self.proj_out.record_to_channels(
            g,
            &h,
            Some(x),
            Some(&x.shape.clone()),
            &format!("{name}.proj_out"),
        )
    }
}

impl SpatialLayer for Transformer2DModel {
    fn record_spatial<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        context: Option<&Value>,
        name: &str,
    ) -> Result<Value> {
        let context = context.ok_or_else(|| {
            Error::invalid(
                name,
                "a cross-attention block needs encoder hidden states (the text embeddings)",
            )
        })?;
        self.record(g, x, context, name)
    }
}
