//! diffusers `Attention` as the spatial blocks of `UNet2DModel` and the VAE use it (from
//! `attention_processor.py` with `AttnProcessor`): group norm over the channels, q/k/v
//! projections of the H·W tokens, softmax(q·kᵀ/√d)·v per head, output projection, residual,
//! divided by `rescale_output_factor`. Legacy checkpoints name the projections
//! `query/key/value/proj_attn`; they map at load. [`attention`] is the scaled dot-product
//! attention every model shares (self or cross, causal or not, any strided layout), chunked over
//! query rows and heads so that no scores buffer exceeds the graph's attention budget.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::model::blocks::layers::{GroupNormLayer, LinearLayer, Projected, ProjectionInput};
use crate::model::blocks::SpatialLayer;
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;
use crate::ops::causal_softmax::{causal_softmax_rows, CausalSoftmaxRows};
use crate::ops::matmul::{matmul_at, BatchGroups, Matmul, MatmulOffsets};
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
    /// `to_q`, `to_k` and `to_v` stacked along the outputs (`[3·C, C]`, fused at load): one launch
    /// projects all three ([`LinearLayer::fuse_outputs`]).
    pub to_qkv: LinearLayer,
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
        let to_q = LinearLayer::load_any(vb, &["to_q", "query"], c, c)?;
        let to_k = LinearLayer::load_any(vb, &["to_k", "key"], c, c)?;
        let to_v = LinearLayer::load_any(vb, &["to_v", "value"], c, c)?;
        Ok(AttentionBlock {
            group_norm: GroupNormLayer::load(&vb.pp("group_norm"), c, cfg.groups, cfg.eps)?,
            to_qkv: LinearLayer::fuse_outputs(
                vb.context(),
                &[&to_q, &to_k, &to_v],
                &vb.key("to_qkv"),
            )?,
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
        let projected = self.to_qkv.record_parts(
            g,
            &h,
            ProjectionInput::Channels,
            3,
            &format!("{name}.to_qkv"),
        )?;
        let views = part_views(&projected, heads, d)?;
        let [q, k, v] = views[..] else {
            return Err(Error::invalid(
                name,
                "q, k and v: expected three projections",
            ));
        };
        // Written as [N, C, T]: the same memory as x's [N, C, H, W].
        let attn = multi_head_views(
            g,
            [q, k, v],
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

/// The head views of the parts a fused projection wrote ([`LinearLayer::record_parts`]).
pub fn part_views(
    projected: &Projected,
    heads: usize,
    head_dim: usize,
) -> Result<Vec<(&Value, HeadStrides)>> {
    projected
        .parts
        .iter()
        .map(|part| {
            let value = projected.values.get(part.value).ok_or_else(|| {
                Error::invalid("attention", format!("no projection value {}", part.value))
            })?;
            let tokens = value.shape.get(2..).unwrap_or(&[]).iter().product();
            let view =
                HeadStrides::channel_major_part(heads, head_dim, tokens, part.index, part.of);
            Ok((value, view))
        })
        .collect()
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
    let tokens = |x: &Value| -> usize { x.shape.get(2..).unwrap_or(&[]).iter().product() };
    let (t, tk) = (tokens(q), tokens(k));
    let q_layout = HeadStrides::channel_major(heads.heads, heads.head_dim, t);
    let kv_layout = HeadStrides::channel_major(heads.heads, heads.head_dim, tk);
    multi_head_views(
        g,
        [(q, q_layout), (k, kv_layout), (v, kv_layout)],
        heads,
        out_shape,
        name,
    )
}

/// [`multi_head`] on q, k and v read through the given views (parts of fused projections, with
/// `tokens` derived from the views' values as the channel-major layout implies: Tq from the
/// query value's trailing dimensions, Tk from the key value's); the output is channel-major.
pub fn multi_head_views<'a>(
    g: &mut Graph<'a>,
    [(q, q_layout), (k, k_layout), (v, v_layout)]: [(&Value, HeadStrides); 3],
    heads: Heads,
    out_shape: &[usize],
    name: &str,
) -> Result<Value> {
    let n = q.shape.first().copied().unwrap_or(0);
    let tokens = |x: &Value| -> usize { x.shape.get(2..).unwrap_or(&[]).iter().product() };
    let (t, tk) = (tokens(q), tokens(k));
    let out_layout = HeadStrides::channel_major(heads.heads, heads.head_dim, t);
    attention(
        g,
        &AttentionArgs {
            q,
            k,
            v,
            strides: [q_layout, k_layout, v_layout, out_layout],
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
/// `(n, h, t, i)` lives at `offset + n·batch + h·head + t·token + i·dim` (the offset places q, k
/// and v inside one fused projection). Any layout a projection writes
/// fits, so callers never transpose: see [`HeadStrides::channel_major`] and
/// [`HeadStrides::token_major`]. A batch stride of 0 on k/v shares one key/value set between
/// every batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadStrides {
    pub offset: usize,
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
            offset: 0,
            batch: heads * head_dim * tokens,
            head: head_dim * tokens,
            token: 1,
            dim: tokens,
        }
    }

    /// Part `part` of `parts` channel-major operands stacked along the channels of one value
    /// `[N, parts·heads·d, T]` (a fused q/k/v or k/v projection).
    pub fn channel_major_part(
        heads: usize,
        head_dim: usize,
        tokens: usize,
        part: usize,
        parts: usize,
    ) -> Self {
        let one = Self::channel_major(heads, head_dim, tokens);
        HeadStrides {
            offset: part * one.batch,
            batch: parts * one.batch,
            ..one
        }
    }

    /// Token-major `[N, T, heads·d]` (a linear layer's output, e.g. text embeddings after
    /// `to_k` / `to_v`, or diffusers' `[N, H·W, C]` hidden states).
    pub fn token_major(heads: usize, head_dim: usize, tokens: usize) -> Self {
        HeadStrides {
            offset: 0,
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
        pairs
            .iter()
            .try_fold(self.offset, |acc, &(extent, stride)| {
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
/// `batch × heads` (sample, head) units, each a `q_tokens × kv_tokens` score block; a chunk is
/// whole samples (every head) when one sample's scores fit, else a run of heads of one sample,
/// else one head's query rows. Each chunk is one launch of each product however its operands are
/// laid out (the GEMM's batch index splits into sample and head: [`BatchGroups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionPlan {
    /// (sample, head) units per chunk (the last chunk may have fewer).
    pub units_per_chunk: usize,
    /// Query rows per chunk (the last chunk of a head may have fewer).
    pub rows_per_chunk: usize,
    /// Every chunk, in recording order.
    pub chunks: Vec<AttentionChunk>,
    /// Shape of the one scores value every chunk reuses: `[units_per_chunk, rows_per_chunk,
    /// kv_tokens]`.
    pub scores_shape: [usize; 3],
}

/// One chunk of [`AttentionPlan`]: samples `sample0 .. sample0 + samples`, heads `head0 .. head0 +
/// heads` of each, query rows `row0 .. row0 + rows`. Several samples only with every head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionChunk {
    pub sample0: usize,
    pub samples: usize,
    pub head0: usize,
    pub heads: usize,
    pub row0: usize,
    pub rows: usize,
}

impl AttentionChunk {
    /// (sample, head) units of the chunk.
    pub fn units(&self) -> usize {
        self.samples * self.heads
    }
}

/// `total` split into the fewest parts of at most `fit` (≥ 1), as even as possible: the part size.
fn even_parts(total: usize, fit: usize) -> usize {
    total.div_ceil(total.div_ceil(fit.max(1)))
}

/// Splits `batch × heads` units of `q_tokens × kv_tokens` f32 scores into chunks of at most
/// `budget_bytes` of scores each: groups of whole samples when one sample fits, else groups of
/// one sample's heads, else one head at a time with the query rows split as evenly as the budget
/// allows. Fails, naming the budget, when one row of scores (4·kv_tokens bytes) does not fit.
pub fn plan_attention(
    batch: usize,
    heads: usize,
    q_tokens: usize,
    kv_tokens: usize,
    budget_bytes: u64,
) -> Result<AttentionPlan> {
    let what = "attention scores budget";
    if batch == 0 || heads == 0 || q_tokens == 0 || kv_tokens == 0 {
        return Err(Error::invalid(
            what,
            format!(
                "empty attention: {batch} samples × {heads} heads, {q_tokens} queries, \
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
    let sample = block.saturating_mul(heads);
    let mut chunks = Vec::new();
    let mut push = |sample0, samples, head0, heads, row0, rows| {
        chunks.push(AttentionChunk {
            sample0,
            samples,
            head0,
            heads,
            row0,
            rows,
        })
    };
    let (units, rows) = if sample <= budget {
        let per = even_parts(batch, budget / sample);
        for s0 in (0..batch).step_by(per) {
            push(s0, per.min(batch - s0), 0, heads, 0, q_tokens);
        }
        (per * heads, q_tokens)
    } else if block <= budget {
        let per = even_parts(heads, budget / block);
        for n in 0..batch {
            for h0 in (0..heads).step_by(per) {
                push(n, 1, h0, per.min(heads - h0), 0, q_tokens);
            }
        }
        (per, q_tokens)
    } else {
        let per = even_parts(q_tokens, budget / kv_tokens);
        for n in 0..batch {
            for h in 0..heads {
                for r0 in (0..q_tokens).step_by(per) {
                    push(n, 1, h, 1, r0, per.min(q_tokens - r0));
                }
            }
        }
        (1, per)
    };
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
    let plan = plan_attention(
        args.batch,
        args.heads,
        q_tokens,
        kv_tokens,
        g.attention_budget(),
    )?;
    let chunked = plan.chunks.len() > 1;
    let alpha = 1.0 / (d as f32).sqrt();
    let (qi, ki, vi) = (args.q.id(), args.k.id(), args.v.id());
    let mut scores: Option<Value> = None;
    let mut out: Option<Value> = None;
    for (index, &chunk) in plan.chunks.iter().enumerate() {
        let AttentionChunk {
            sample0,
            head0,
            heads,
            row0,
            rows,
            ..
        } = chunk;
        let units = chunk.units();
        let suffix = if chunked {
            format!(".{index}")
        } else {
            String::new()
        };
        // Window origin of each operand; the product's batch entry z is head z % heads of
        // sample z / heads of the chunk.
        let origin = |s: &HeadStrides, row: usize| {
            s.offset + sample0 * s.batch + head0 * s.head + row * s.token
        };
        let scores_len = units * rows * kv_tokens;
        let block = rows * kv_tokens;

        let label = format!("{name}.scores{suffix}");
        let q_offsets = MatmulOffsets {
            a: origin(&qs, row0),
            b: origin(&ks, 0),
            c: 0,
            bias: None,
            groups: Some(BatchGroups {
                inner: heads,
                a: qs.batch,
                b: ks.batch,
                c: heads * block,
            }),
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
                c_strides: [block, kv_tokens, 1],
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
            bias: None,
            groups: Some(BatchGroups {
                inner: heads,
                a: heads * block,
                b: vs.batch,
                c: os.batch,
            }),
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
                a_strides: [block, kv_tokens, 1],
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
