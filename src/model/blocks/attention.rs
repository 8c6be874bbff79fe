//! diffusers `Attention` as the spatial blocks of `UNet2DModel` and the VAE use it (from
//! `attention_processor.py` with `AttnProcessor`): group norm over the channels, q/k/v
//! projections of the H·W tokens, softmax(q·kᵀ/√d)·v per head, output projection, residual,
//! divided by `rescale_output_factor`. Legacy checkpoints name the projections
//! `query/key/value/proj_attn`; they map at load. [`attention`] is the scaled dot-product
//! attention every model shares (self or cross, causal or not, any strided layout), chunked over
//! query rows and heads so that no scores buffer exceeds the graph's attention budget.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::model::blocks::layers::{GroupNormLayer, LinearLayer};
use crate::model::blocks::SpatialLayer;
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;
use crate::ops::causal_softmax::{causal_softmax_rows, CausalSoftmaxRows};
use crate::ops::matmul::{matmul_at, Matmul, MatmulOffsets};
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

/// `softmax(q·kᵀ/√d)·v` per head, on channel-major `[N, heads·d, Tq]` q and `[N, heads·d, Tk]`
/// k/v (Tk = Tq for self-attention, the context length for cross-attention): channel
/// `c = head·d + i`, so (n, head) flattens to one batch index and no transpose is needed. The
/// result is written channel-major with shape `out_shape` (the same memory as
/// `[N, heads·d, Tq]`). Through [`attention`], within the graph's budget.
pub fn multi_head<'a>(
    g: &mut Graph<'a>,
    [q, k, v]: [&Value; 3],
    heads: Heads,
    out_shape: &[usize],
    name: &str,
) -> Result<Value> {
    let n = q.shape.first().copied().unwrap_or(0);
    let tokens = |x: &Value| -> usize { x.shape.get(2..).unwrap_or(&[]).iter().product() };
    let (t, tk) = (tokens(q), tokens(k));
    let q_layout = HeadStrides::channel_major(heads.heads, heads.head_dim, t);
    let kv_layout = HeadStrides::channel_major(heads.heads, heads.head_dim, tk);
    attention(
        g,
        &AttentionArgs {
            q,
            k,
            v,
            strides: [q_layout, kv_layout, kv_layout, q_layout],
            batch: n,
            heads: heads.heads,
            head_dim: heads.head_dim,
            q_tokens: t,
            kv_tokens: tk,
            causal: heads.causal,
            out_shape,
        },
        name,
    )
}

/// Element strides of one attention operand seen as `[batch, head, token, dim]`: element
/// `(n, h, t, i)` lives at `n·batch + h·head + t·token + i·dim`. Any layout a projection writes
/// fits, so callers never transpose: see [`HeadStrides::channel_major`] and
/// [`HeadStrides::token_major`]. A batch stride of 0 on k/v shares one key/value set between
/// every batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadStrides {
    pub batch: usize,
    pub head: usize,
    pub token: usize,
    pub dim: usize,
}

impl HeadStrides {
    /// Channel-major `[N, heads·d, T]` (an NCHW activation or a 1×1 projection of one, with
    /// `T = H·W` and channel `c = head·d + i`).
    pub fn channel_major(heads: usize, head_dim: usize, tokens: usize) -> Self {
        HeadStrides {
            batch: heads * head_dim * tokens,
            head: head_dim * tokens,
            token: 1,
            dim: tokens,
        }
    }

    /// Token-major `[N, T, heads·d]` (a linear layer's output, e.g. text embeddings after
    /// `to_k` / `to_v`, or diffusers' `[N, H·W, C]` hidden states).
    pub fn token_major(heads: usize, head_dim: usize, tokens: usize) -> Self {
        HeadStrides {
            batch: tokens * heads * head_dim,
            head: head_dim,
            token: heads * head_dim,
            dim: 1,
        }
    }

    /// Largest element index of a `[batch, heads, tokens, dim]` view, `None` on overflow or when
    /// an extent is 0.
    pub fn max_index(&self, [batch, heads, tokens, dim]: [usize; 4]) -> Option<usize> {
        let pairs = [
            (batch, self.batch),
            (heads, self.head),
            (tokens, self.token),
            (dim, self.dim),
        ];
        pairs.iter().try_fold(0usize, |acc, &(extent, stride)| {
            acc.checked_add(extent.checked_sub(1)?.checked_mul(stride)?)
        })
    }
}

/// One scaled dot-product attention, `out = softmax(q·kᵀ/√d [+ causal mask])·v` per (batch,
/// head): diffusers' `Attention` (`AttnProcessor`) after the projections, self or cross.
#[derive(Debug, Clone, Copy)]
pub struct AttentionArgs<'v> {
    /// Queries `[batch, heads, q_tokens, head_dim]` through `strides[0]`.
    pub q: &'v Value,
    /// Keys `[batch, heads, kv_tokens, head_dim]` through `strides[1]`.
    pub k: &'v Value,
    /// Values `[batch, heads, kv_tokens, head_dim]` through `strides[2]`.
    pub v: &'v Value,
    /// Layouts of q, k, v and the output, in that order.
    pub strides: [HeadStrides; 4],
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Query tokens (H·W for a U-Net's attention).
    pub q_tokens: usize,
    /// Key / value tokens (`q_tokens` for self-attention, 77 for CLIP text in cross-attention).
    pub kv_tokens: usize,
    /// Query r attends only to keys ≤ r (needs `q_tokens == kv_tokens`).
    pub causal: bool,
    /// Shape of the output value; `strides[3]` must stay inside it, and every element the caller
    /// later reads must be covered by the `[batch, heads, q_tokens, head_dim]` view.
    pub out_shape: &'v [usize],
}

/// How [`attention`] splits its work so that one scores buffer fits the budget. The work is
/// `outer` independent sets of `inner` (batch, head) units (`outer = 1, inner = batch·heads` when
/// every operand's batch stride is `heads ×` its head stride, so (n, h) flattens to one index;
/// else one set per batch entry), each unit a `q_tokens × kv_tokens` score block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionPlan {
    /// Units per chunk (the last chunk of a set may have fewer).
    pub units_per_chunk: usize,
    /// Query rows per chunk (the last chunk may have fewer).
    pub rows_per_chunk: usize,
    /// Every chunk, in recording order.
    pub chunks: Vec<AttentionChunk>,
    /// Shape of the one scores value every chunk reuses: `[units_per_chunk, rows_per_chunk,
    /// kv_tokens]`.
    pub scores_shape: [usize; 3],
}

/// One chunk of [`AttentionPlan`]: units `unit0 .. unit0 + units` of set `outer`, query rows
/// `row0 .. row0 + rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionChunk {
    pub outer: usize,
    pub unit0: usize,
    pub units: usize,
    pub row0: usize,
    pub rows: usize,
}

/// Splits `outer` sets of `inner` units of `q_tokens × kv_tokens` f32 scores into chunks of at
/// most `budget_bytes` of scores each: whole sets when they fit, else groups of units with every
/// query row, else one unit at a time with the query rows split as evenly as the budget allows.
/// Fails, naming the budget, when one row of scores (4·kv_tokens bytes) does not fit.
pub fn plan_attention(
    outer: usize,
    inner: usize,
    q_tokens: usize,
    kv_tokens: usize,
    budget_bytes: u64,
) -> Result<AttentionPlan> {
    let what = "attention scores budget";
    if outer == 0 || inner == 0 || q_tokens == 0 || kv_tokens == 0 {
        return Err(Error::invalid(
            what,
            format!(
                "empty attention: {outer} × {inner} (batch, head) units, {q_tokens} queries, \
                 {kv_tokens} keys"
            ),
        ));
    }
    let budget = usize::try_from(budget_bytes / 4).unwrap_or(usize::MAX);
    if kv_tokens > budget {
        return Err(Error::invalid(
            what,
            format!(
                "{budget_bytes} bytes cannot hold one row of scores over {kv_tokens} keys \
                 ({} bytes); raise it with Graph::set_attention_budget",
                4 * kv_tokens as u64
            ),
        ));
    }
    let block = q_tokens.saturating_mul(kv_tokens);
    let (units, rows) = if block <= budget {
        let fit = (budget / block).min(inner);
        (inner.div_ceil(inner.div_ceil(fit)), q_tokens)
    } else {
        let fit = budget / kv_tokens;
        (1, q_tokens.div_ceil(q_tokens.div_ceil(fit)))
    };
    let mut chunks = Vec::new();
    for outer_index in 0..outer {
        for unit0 in (0..inner).step_by(units) {
            for row0 in (0..q_tokens).step_by(rows) {
                chunks.push(AttentionChunk {
                    outer: outer_index,
                    unit0,
                    units: units.min(inner - unit0),
                    row0,
                    rows: rows.min(q_tokens - row0),
                });
            }
        }
    }
    Ok(AttentionPlan {
        units_per_chunk: units,
        rows_per_chunk: rows,
        chunks,
        scores_shape: [units, rows, kv_tokens],
    })
}

/// Checks that each operand's view fits its value, naming the operand at fault.
fn check_views(args: &AttentionArgs, name: &str) -> Result<()> {
    let out_numel: usize = args.out_shape.iter().product();
    let operands = [
        ("q", args.q.numel(), args.q_tokens),
        ("k", args.k.numel(), args.kv_tokens),
        ("v", args.v.numel(), args.kv_tokens),
        ("out", out_numel, args.q_tokens),
    ];
    for ((operand, numel, tokens), strides) in operands.into_iter().zip(args.strides) {
        let extents = [args.batch, args.heads, tokens, args.head_dim];
        match strides.max_index(extents) {
            Some(last) if last < numel => {}
            last => {
                return Err(Error::invalid(
                    format!("attention {name}"),
                    format!(
                        "{operand}: [batch, heads, tokens, dim] = {extents:?} with strides \
                         {strides:?} reach element {last:?}, but the value holds {numel} \
                         elements"
                    ),
                ))
            }
        }
    }
    if args.strides[3].batch == 0 && args.batch > 1 {
        return Err(Error::invalid(
            format!("attention {name}"),
            "out: a batch stride of 0 would write every batch entry to the same place",
        ));
    }
    Ok(())
}

/// `softmax(q·kᵀ/√d)·v` for every (batch, head), within the graph's attention budget
/// ([`Graph::attention_budget`]): the scores of at most that many bytes exist at once. When all
/// scores fit, this records one `[batch·heads, Tq, Tk]` scores product, its softmax and the
/// values product; otherwise it records those three launches per chunk of (batch, head) units
/// and query rows (see [`plan_attention`]), reusing one scores value and writing each chunk's
/// window of the output. Every output element is computed by the same kernels with the same
/// arithmetic either way, so the chunked result is bit-identical to the unchunked one
/// (`tests/ops_attention.rs` checks it).
pub fn attention<'a>(g: &mut Graph<'a>, args: &AttentionArgs, name: &str) -> Result<Value> {
    let (q_tokens, kv_tokens, d) = (args.q_tokens, args.kv_tokens, args.head_dim);
    if args.causal && q_tokens != kv_tokens {
        return Err(Error::invalid(
            format!("attention {name}"),
            format!(
                "causal attention needs as many queries as keys; got {q_tokens} queries and \
                 {kv_tokens} keys"
            ),
        ));
    }
    if args.heads == 0 || d == 0 {
        return Err(Error::invalid(
            format!("attention {name}"),
            format!("{} heads of dimension {d}: both must be ≥ 1", args.heads),
        ));
    }
    check_views(args, name)?;
    let [qs, ks, vs, os] = args.strides;
    // (n, h) flattens to one unit index when every batch stride is heads × the head stride.
    let flat = args.batch == 1 || args.strides.iter().all(|s| s.batch == args.heads * s.head);
    let (outer, inner) = if flat {
        (1, args.batch * args.heads)
    } else {
        (args.batch, args.heads)
    };
    let plan = plan_attention(outer, inner, q_tokens, kv_tokens, g.attention_budget())?;
    let chunked = plan.chunks.len() > 1;
    let alpha = 1.0 / (d as f32).sqrt();
    let (qi, ki, vi) = (args.q.id(), args.k.id(), args.v.id());
    let mut scores: Option<Value> = None;
    let mut out: Option<Value> = None;
    for (index, &chunk) in plan.chunks.iter().enumerate() {
        let AttentionChunk {
            outer: n,
            unit0,
            units,
            row0,
            rows,
        } = chunk;
        let suffix = if chunked {
            format!(".{index}")
        } else {
            String::new()
        };
        // Window origin of each operand; outer = batch entry only when not flat.
        let origin = |s: &HeadStrides, row: usize| n * s.batch + unit0 * s.head + row * s.token;
        let scores_len = units * rows * kv_tokens;

        let label = format!("{name}.scores{suffix}");
        let q_offsets = MatmulOffsets {
            a: origin(&qs, row0),
            b: origin(&ks, 0),
            c: 0,
        };
        let scores_build = move |b: &crate::model::graph::Bound<'_>, out: &Tensor| {
            let mm = Matmul {
                a: b.get(qi),
                b: b.get(ki),
                out,
                bias: None,
                residual: None,
                batch: units,
                m: rows,
                n: kv_tokens,
                k: d,
                a_strides: [qs.head, qs.token, qs.dim],
                b_strides: [ks.head, ks.dim, ks.token],
                c_strides: [rows * kv_tokens, kv_tokens, 1],
                alpha,
                output_scale: 1.0,
            };
            matmul_at(b.ctx, &mm, q_offsets, &label)
        };
        let s = match &scores {
            None => {
                let value = g.op(
                    &format!("{name}.scores"),
                    &[args.q, args.k],
                    &plan.scores_shape,
                    scores_build,
                )?;
                scores = Some(value.clone());
                value
            }
            Some(value) => {
                g.op_in_place(value, &[args.q, args.k], scores_build)?;
                value.clone()
            }
        };

        // The chunk's scores are its first `scores_len` elements, row-major.
        let window = move |data: &Tensor| Tensor {
            buffer: data.buffer.clone(),
            shape: vec![scores_len],
        };
        if args.causal {
            let label = format!("{name}.causal_softmax{suffix}");
            g.op_in_place(&s, &[], move |b, data| {
                let args = CausalSoftmaxRows {
                    data: &window(data),
                    blocks: units,
                    block_rows: rows,
                    t: kv_tokens,
                    query_offset: row0,
                };
                causal_softmax_rows(b.ctx, &args, &label)
            })?;
        } else {
            let label = format!("{name}.softmax{suffix}");
            g.op_in_place(&s, &[], move |b, data| {
                let args = SoftmaxRows {
                    data: &window(data),
                    rows: units * rows,
                    cols: kv_tokens,
                };
                softmax_rows(b.ctx, &args, &label)
            })?;
        }

        let label = format!("{name}.attn_values{suffix}");
        let si = s.id();
        let v_offsets = MatmulOffsets {
            a: 0,
            b: origin(&vs, 0),
            c: origin(&os, row0),
        };
        let values_build = move |b: &crate::model::graph::Bound<'_>, out: &Tensor| {
            let mm = Matmul {
                a: b.get(si),
                b: b.get(vi),
                out,
                bias: None,
                residual: None,
                batch: units,
                m: rows,
                n: d,
                k: kv_tokens,
                a_strides: [rows * kv_tokens, kv_tokens, 1],
                b_strides: [vs.head, vs.token, vs.dim],
                c_strides: [os.head, os.token, os.dim],
                alpha: 1.0,
                output_scale: 1.0,
            };
            matmul_at(b.ctx, &mm, v_offsets, &label)
        };
        match &out {
            None => {
                out = Some(g.op(
                    &format!("{name}.attn_values"),
                    &[&s, args.v],
                    args.out_shape,
                    values_build,
                )?);
            }
            Some(value) => g.op_in_place(value, &[&s, args.v], values_build)?,
        }
    }
    out.ok_or_else(|| Error::invalid(format!("attention {name}"), "no chunk was planned"))
}
