//! Memory-bounded attention (`blocks::attention::attention`) against the f64 CPU reference
//! (`reference::attention`) on odd shapes: self and cross (Tq ≠ Tk, Tk = 77), one query, causal
//! and not, channel-major and token-major layouts and keys/values shared across the batch; the
//! chunked path under tiny budgets against the materialised one (bit for bit); the planned scores
//! buffer against the budget; the chunk planner without a GPU; and the errors.

mod common;

use common::{ctx, Rng};
use wgpu_diffusion::gpu::GpuContext;
use wgpu_diffusion::model::blocks::attention::{
    attention, plan_attention, AttentionArgs, HeadStrides,
};
use wgpu_diffusion::model::graph::{Graph, MemoryReport};
use wgpu_diffusion::reference::attention::{self as reference, AttentionRef};
use wgpu_diffusion::reference::compare;

/// How an operand is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `[N, heads·d, T]`.
    Channels,
    /// `[N, T, heads·d]`.
    Tokens,
    /// `[1, T, heads·d]` read by every batch entry (batch stride 0).
    SharedTokens,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    batch: usize,
    heads: usize,
    d: usize,
    tq: usize,
    tk: usize,
    causal: bool,
    /// Layout of q and the output.
    q_layout: Layout,
    /// Layout of k and v.
    kv_layout: Layout,
}

impl Case {
    fn strides(&self, layout: Layout, tokens: usize) -> HeadStrides {
        match layout {
            Layout::Channels => HeadStrides::channel_major(self.heads, self.d, tokens),
            Layout::Tokens => HeadStrides::token_major(self.heads, self.d, tokens),
            Layout::SharedTokens => HeadStrides {
                batch: 0,
                ..HeadStrides::token_major(self.heads, self.d, tokens)
            },
        }
    }

    fn len(&self, layout: Layout, tokens: usize) -> usize {
        let batch = if layout == Layout::SharedTokens {
            1
        } else {
            self.batch
        };
        batch * self.heads * self.d * tokens
    }

    fn all_strides(&self) -> [HeadStrides; 4] {
        let q = self.strides(self.q_layout, self.tq);
        let kv = self.strides(self.kv_layout, self.tk);
        [q, kv, kv, q]
    }
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Inputs {
    fn new(case: &Case, rng: &mut Rng) -> Self {
        let q_len = case.len(case.q_layout, case.tq);
        let kv_len = case.len(case.kv_layout, case.tk);
        // Logits of a few units: the softmax is neither uniform nor one-hot.
        Inputs {
            q: rng.vec(q_len, -2.0, 2.0),
            k: rng.vec(kv_len, -2.0, 2.0),
            v: rng.vec(kv_len, -1.0, 1.0),
        }
    }
}

/// What one GPU run gives back.
struct Run {
    out: Vec<f32>,
    memory: MemoryReport,
    dispatches: usize,
}

/// Records the attention in a graph of its own (with `budget` bytes of scores when given), runs
/// it and reads the output.
fn run(ctx: &GpuContext, case: &Case, inputs: &Inputs, budget: Option<u64>) -> Run {
    let mut g = Graph::new(ctx);
    if let Some(bytes) = budget {
        g.set_attention_budget(bytes);
    }
    let q = g.input(&[inputs.q.len()], "q").unwrap();
    let k = g.input(&[inputs.k.len()], "k").unwrap();
    let v = g.input(&[inputs.v.len()], "v").unwrap();
    let out_shape = [case.len(case.q_layout, case.tq)];
    let out = attention(
        &mut g,
        &AttentionArgs {
            q: &q,
            k: &k,
            v: &v,
            strides: case.all_strides(),
            batch: case.batch,
            heads: case.heads,
            head_dim: case.d,
            q_tokens: case.tq,
            kv_tokens: case.tk,
            causal: case.causal,
            out_shape: &out_shape,
        },
        "attn",
    )
    .unwrap();
    g.keep(&out);
    let memory = g.plan();
    let finished = g.finish().unwrap();
    finished.tensor(&q).write(ctx, &inputs.q).unwrap();
    finished.tensor(&k).write(ctx, &inputs.k).unwrap();
    finished.tensor(&v).write(ctx, &inputs.v).unwrap();
    let dispatches: Vec<_> = finished.dispatches.iter().collect();
    ctx.submit(&dispatches).unwrap();
    Run {
        out: finished.tensor(&out).read(ctx).unwrap(),
        memory,
        dispatches: dispatches.len(),
    }
}

fn reference(case: &Case, inputs: &Inputs) -> Vec<f64> {
    let s = case
        .all_strides()
        .map(|s| [s.batch, s.head, s.token, s.dim]);
    reference::attention(&AttentionRef {
        q: &inputs.q,
        k: &inputs.k,
        v: &inputs.v,
        strides: s,
        batch: case.batch,
        heads: case.heads,
        head_dim: case.d,
        q_tokens: case.tq,
        kv_tokens: case.tk,
        causal: case.causal,
        out_len: case.len(case.q_layout, case.tq),
    })
    .unwrap()
}

fn cases() -> Vec<Case> {
    use Layout::*;
    let case = |batch, heads, d, tq, tk, causal, q_layout, kv_layout| Case {
        batch,
        heads,
        d,
        tq,
        tk,
        causal,
        q_layout,
        kv_layout,
    };
    vec![
        // Cross-attention on odd sizes: channel-major image queries, token-major text keys.
        case(2, 3, 5, 37, 11, false, Channels, Tokens),
        // One query over CLIP's 77 tokens, keys shared by the batch.
        case(2, 3, 5, 1, 77, false, Channels, SharedTokens),
        // Token-major everywhere (diffusers' [N, H·W, C] hidden states), Tk = 77.
        case(2, 2, 8, 40, 77, false, Tokens, Tokens),
        // Self-attention as UNet2DModel and the VAE record it.
        case(2, 3, 5, 25, 25, false, Channels, Channels),
        // CLIP's causal self-attention, odd sizes.
        case(2, 3, 5, 37, 37, true, Channels, Channels),
        case(1, 1, 3, 1, 1, true, Tokens, Tokens),
    ]
}

// Measured on llvmpipe: max abs error 1.9e-7 against f64 on these shapes; the tolerance leaves
// room for other adapters' exp.
const ATOL: f64 = 2e-6;
const RTOL: f64 = 1e-5;

#[test]
fn attention_matches_reference_on_odd_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(14);
    for case in cases() {
        let inputs = Inputs::new(&case, &mut rng);
        let got = run(&ctx, &case, &inputs, None);
        // One chunk whatever the layout: the products' batch splits into (sample, head).
        assert_eq!(
            got.dispatches, 3,
            "{case:?}: the default budget needs no chunks"
        );
        let want = reference(&case, &inputs);
        let cmp = compare(&format!("attention {case:?}"), &got.out, &want, ATOL, RTOL);
        assert!(cmp.ok(), "{cmp}");
    }
}

#[test]
fn chunked_attention_is_bit_identical_to_materialised() {
    let ctx = ctx();
    let mut rng = Rng::new(15);
    for case in cases() {
        let inputs = Inputs::new(&case, &mut rng);
        let whole = run(&ctx, &case, &inputs, None);
        let want = reference(&case, &inputs);
        let row = 4 * case.tk as u64;
        let block = row * case.tq as u64;
        // One row, three rows, one (batch, head) block, two blocks: every way of chunking.
        for budget in [row, 3 * row, block, 2 * block + row] {
            let chunked = run(&ctx, &case, &inputs, Some(budget));
            let planned = plan_attention(case.batch, case.heads, case.tq, case.tk, budget).unwrap();
            assert_eq!(
                chunked.dispatches,
                3 * planned.chunks.len(),
                "{case:?} budget {budget}"
            );
            let cmp = compare(
                &format!("chunked attention {case:?} budget {budget}"),
                &chunked.out,
                &want,
                ATOL,
                RTOL,
            );
            assert!(cmp.ok(), "{cmp}");
            let differing = whole
                .out
                .iter()
                .zip(&chunked.out)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(
                differing, None,
                "{case:?} budget {budget}: chunked output differs from the materialised one at \
                 this index"
            );
        }
    }
}

#[test]
fn planned_scores_respect_the_budget() {
    let ctx = ctx();
    let mut rng = Rng::new(16);
    // Scores dominate: 2 heads of 128 × 128 scores (128 KiB) against 1 KiB q, k, v and out.
    let case = Case {
        batch: 1,
        heads: 2,
        d: 1,
        tq: 128,
        tk: 128,
        causal: false,
        q_layout: Layout::Channels,
        kv_layout: Layout::Channels,
    };
    let inputs = Inputs::new(&case, &mut rng);
    let whole = run(&ctx, &case, &inputs, None);
    assert_eq!(
        whole.memory.largest,
        ("attn.scores".to_owned(), 2 * 128 * 128 * 4)
    );
    // 16 KiB: 32 rows; 4 KiB: 8 rows; 1 KiB: 2 rows (as large as q itself).
    for budget in [16384u64, 4096, 1024] {
        let chunked = run(&ctx, &case, &inputs, Some(budget));
        assert!(
            chunked.memory.largest.1 <= budget,
            "budget {budget}: largest planned value {:?}",
            chunked.memory.largest
        );
        assert!(chunked.memory.planned_bytes < whole.memory.planned_bytes);
        assert_eq!(chunked.out, whole.out, "budget {budget}");
    }
}

#[test]
fn default_budget_is_documented_value() {
    let ctx = ctx();
    let g = Graph::new(&ctx);
    let want = (64u64 << 20).min(ctx.max_binding_bytes() / 2);
    assert_eq!(g.attention_budget(), want);
    assert_eq!(Graph::default_attention_budget(&ctx), want);
}

#[test]
fn attention_plan_covers_every_row_once_within_budget() {
    let mut rng = Rng::new(17);
    for _ in 0..200 {
        let outer = rng.range(1, 4);
        let inner = rng.range(1, 9);
        let tq = rng.range(1, 90);
        let tk = rng.range(1, 90);
        let budget = 4 * rng.range(tk, 3 * outer * inner * tq * tk) as u64;
        let plan = plan_attention(outer, inner, tq, tk, budget).unwrap();
        let scores: usize = plan.scores_shape.iter().product();
        assert!(
            4 * scores as u64 <= budget,
            "{outer}×{inner}, {tq}×{tk}, budget {budget}: scores {:?}",
            plan.scores_shape
        );
        let mut seen = vec![0u8; outer * inner * tq];
        for c in &plan.chunks {
            assert!(c.units() <= plan.units_per_chunk && c.rows <= plan.rows_per_chunk);
            assert!(
                c.samples == 1 || c.heads == inner,
                "{c:?}: several samples, some heads"
            );
            for n in c.sample0..c.sample0 + c.samples {
                for h in c.head0..c.head0 + c.heads {
                    for r in c.row0..c.row0 + c.rows {
                        seen[(n * inner + h) * tq + r] += 1;
                    }
                }
            }
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "{outer}×{inner}, {tq}×{tk}, budget {budget}: a row is computed {:?} times",
            seen.iter().find(|&&n| n != 1)
        );
        // Everything that fits is one chunk.
        if 4 * (outer * inner * tq * tk) as u64 <= budget {
            assert_eq!(plan.chunks.len(), 1);
        }
    }
}

/// q, k and v read from one fused `[N, 3·heads·d, T]` projection (offsets 0, C·T and 2·C·T, batch
/// stride 3·C·T), as the spatial attention blocks record them, in one launch per product: bit for
/// bit what three separate operands give, chunked or not.
#[test]
fn fused_qkv_views_match_separate_operands() {
    let ctx = ctx();
    let mut rng = Rng::new(18);
    let (batch, heads, d, t) = (3, 2, 5, 19);
    let case = Case {
        batch,
        heads,
        d,
        tq: t,
        tk: t,
        causal: false,
        q_layout: Layout::Channels,
        kv_layout: Layout::Channels,
    };
    let inputs = Inputs::new(&case, &mut rng);
    let c = heads * d;
    let mut fused = Vec::with_capacity(3 * batch * c * t);
    for n in 0..batch {
        for part in [&inputs.q, &inputs.k, &inputs.v] {
            fused.extend_from_slice(&part[n * c * t..(n + 1) * c * t]);
        }
    }
    let one = HeadStrides::channel_major(heads, d, t);
    let view = |part: usize| HeadStrides {
        offset: part * c * t,
        batch: 3 * c * t,
        ..one
    };
    let block = 4 * (t * t) as u64;
    for budget in [None, Some(block), Some(4 * t as u64 * 3)] {
        let separate = run(&ctx, &case, &inputs, budget);
        let mut g = Graph::new(&ctx);
        if let Some(bytes) = budget {
            g.set_attention_budget(bytes);
        }
        let qkv = g.input(&[fused.len()], "qkv").unwrap();
        let out_shape = [batch * c * t];
        let out = attention(
            &mut g,
            &AttentionArgs {
                q: &qkv,
                k: &qkv,
                v: &qkv,
                strides: [view(0), view(1), view(2), one],
                batch,
                heads,
                head_dim: d,
                q_tokens: t,
                kv_tokens: t,
                causal: false,
                out_shape: &out_shape,
            },
            "attn",
        )
        .unwrap();
        g.keep(&out);
        let finished = g.finish().unwrap();
        finished.tensor(&qkv).write(&ctx, &fused).unwrap();
        let dispatches: Vec<_> = finished.dispatches.iter().collect();
        assert_eq!(dispatches.len(), separate.dispatches, "budget {budget:?}");
        if budget.is_none() {
            assert_eq!(
                dispatches.len(),
                3,
                "one launch per product for every (sample, head)"
            );
        }
        ctx.submit(&dispatches).unwrap();
        let got = finished.tensor(&out).read(&ctx).unwrap();
        assert_eq!(
            common::bits_differ(&got, &separate.out),
            0,
            "budget {budget:?}"
        );
    }
    // A view past the end of the fused value is refused, naming the operand.
    let mut g = Graph::new(&ctx);
    let qkv = g.input(&[fused.len()], "qkv").unwrap();
    let out_shape = [batch * c * t];
    let err = attention(
        &mut g,
        &AttentionArgs {
            q: &qkv,
            k: &qkv,
            v: &qkv,
            strides: [view(0), view(1), view(3), one],
            batch,
            heads,
            head_dim: d,
            q_tokens: t,
            kv_tokens: t,
            causal: false,
            out_shape: &out_shape,
        },
        "attn",
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("v:") && err.contains(&fused.len().to_string()),
        "{err}"
    );
}

#[test]
fn attention_errors_name_the_problem() {
    let ctx = ctx();
    let case = Case {
        batch: 1,
        heads: 2,
        d: 4,
        tq: 6,
        tk: 5,
        causal: false,
        q_layout: Layout::Tokens,
        kv_layout: Layout::Tokens,
    };
    let record = |case: Case, budget: u64, q_len: usize| {
        let mut g = Graph::new(&ctx);
        g.set_attention_budget(budget);
        let q = g.input(&[q_len], "q").unwrap();
        let kv_len = case.len(case.kv_layout, case.tk);
        let k = g.input(&[kv_len], "k").unwrap();
        let v = g.input(&[kv_len], "v").unwrap();
        let out_shape = [case.len(case.q_layout, case.tq)];
        attention(
            &mut g,
            &AttentionArgs {
                q: &q,
                k: &k,
                v: &v,
                strides: case.all_strides(),
                batch: case.batch,
                heads: case.heads,
                head_dim: case.d,
                q_tokens: case.tq,
                kv_tokens: case.tk,
                causal: case.causal,
                out_shape: &out_shape,
            },
            "attn",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let full = case.len(case.q_layout, case.tq);
    let err = record(case, 19, full);
    assert!(err.contains("19 bytes") && err.contains("5 keys"), "{err}");
    let err = record(
        Case {
            causal: true,
            ..case
        },
        1 << 20,
        full,
    );
    assert!(err.contains("6 queries and 5 keys"), "{err}");
    let err = record(case, 1 << 20, full - 1);
    assert!(
        err.contains("q:") && err.contains(&format!("{} elements", full - 1)),
        "{err}"
    );
}

/// The spatial attention block of UNet2DModel and the VAE (group norm, projections, attention,
/// output projection and residual) with random weights: under a one-row budget its output equals
/// the default (materialised) graph's bit for bit.
#[test]
fn spatial_attention_block_under_a_tiny_budget_matches_bit_for_bit() {
    use wgpu_diffusion::model::blocks::attention::{AttentionBlock, SpatialAttentionConfig};
    use wgpu_diffusion::model::weights::{VarBuilder, WeightSource};
    let ctx = ctx();
    let source = WeightSource::random(7, "random attention block");
    let vb = VarBuilder::root(&ctx, &source);
    let cfg = SpatialAttentionConfig {
        channels: 6,
        heads: 3,
        groups: 3,
        eps: 1e-6,
        rescale_output_factor: 1.0,
    };
    let block = AttentionBlock::load(&vb.pp("attentions.0"), &cfg).unwrap();
    let shape = [2, 6, 5, 7];
    let x_data = Rng::new(18).vec(shape.iter().product(), -2.0, 2.0);
    let t = 5 * 7;
    let forward = |budget: Option<u64>| {
        let mut g = Graph::new(&ctx);
        if let Some(bytes) = budget {
            g.set_attention_budget(bytes);
        }
        let x = g.input(&shape, "x").unwrap();
        let y = block.record(&mut g, &x, "attentions.0").unwrap();
        g.keep(&y);
        let finished = g.finish().unwrap();
        finished.tensor(&x).write(&ctx, &x_data).unwrap();
        let dispatches: Vec<_> = finished.dispatches.iter().collect();
        ctx.submit(&dispatches).unwrap();
        (finished.tensor(&y).read(&ctx).unwrap(), dispatches.len())
    };
    let (whole, whole_dispatches) = forward(None);
    for budget in [4 * t as u64, 4 * 8 * t as u64] {
        let (chunked, dispatches) = forward(Some(budget));
        assert!(
            dispatches > whole_dispatches,
            "budget {budget} did not chunk"
        );
        let differing = whole
            .iter()
            .zip(&chunked)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(differing, None, "budget {budget}: first differing element");
    }
    // q, k and v come from one fused launch while [2, 18, 35] f32 fits a binding; under a lower
    // binding limit each is projected on its own from its rows of the fused weight: same bits.
    let labels = |g: Graph| -> Vec<String> {
        g.finish()
            .unwrap()
            .dispatches
            .iter()
            // "kernel/entry: label"
            .map(|d| d.label.rsplit(": ").next().unwrap_or_default().to_owned())
            .collect()
    };
    let projections = |limit: Option<u64>| {
        let mut g = match limit {
            Some(bytes) => Graph::with_binding_limit(&ctx, bytes),
            None => Graph::new(&ctx),
        };
        let x = g.input(&shape, "x").unwrap();
        let y = block.record(&mut g, &x, "attentions.0").unwrap();
        g.keep(&y);
        labels(g)
            .into_iter()
            .filter(|l| l.contains("to_qkv"))
            .collect::<Vec<_>>()
    };
    assert_eq!(projections(None), ["attentions.0.to_qkv"]);
    let fused_bytes = 4 * 2 * 18 * t as u64;
    assert_eq!(
        projections(Some(fused_bytes - 4)),
        [
            "attentions.0.to_qkv.0",
            "attentions.0.to_qkv.1",
            "attentions.0.to_qkv.2"
        ]
    );
    let limited = {
        let mut g = Graph::with_binding_limit(&ctx, fused_bytes - 4);
        let x = g.input(&shape, "x").unwrap();
        let y = block.record(&mut g, &x, "attentions.0").unwrap();
        g.keep(&y);
        let finished = g.finish().unwrap();
        finished.tensor(&x).write(&ctx, &x_data).unwrap();
        let dispatches: Vec<_> = finished.dispatches.iter().collect();
        ctx.submit(&dispatches).unwrap();
        finished.tensor(&y).read(&ctx).unwrap()
    };
    assert_eq!(
        common::bits_differ(&whole, &limited),
        0,
        "split projections differ"
    );
}

/// The window launchers attention's chunks use refuse windows that leave their tensors.
#[test]
fn window_launchers_reject_windows_outside_their_tensors() {
    use wgpu_diffusion::gpu::Tensor;
    use wgpu_diffusion::ops::causal_softmax::{causal_softmax_rows, CausalSoftmaxRows};
    use wgpu_diffusion::ops::matmul::{matmul_at, Matmul, MatmulOffsets};
    let ctx = ctx();
    let zeros = |shape: &[usize]| Tensor::zeros(&ctx, shape, "test").unwrap();
    let (a, b, out) = (zeros(&[4, 6]), zeros(&[6, 5]), zeros(&[4, 5]));
    let mm = Matmul {
        a: &a,
        b: &b,
        out: &out,
        bias: None,
        residual: None,
        batch: 1,
        m: 2,
        n: 5,
        k: 6,
        a_strides: [0, 6, 1],
        b_strides: [0, 5, 1],
        c_strides: [0, 5, 1],
        alpha: 1.0,
        output_scale: 1.0,
    };
    let at = |a, c| MatmulOffsets {
        a,
        b: 0,
        c,
        bias: None,
        groups: None,
    };
    matmul_at(&ctx, &mm, at(12, 10), "rows 2..4").unwrap();
    let err = matmul_at(&ctx, &mm, at(13, 10), "a past its end")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a: offset 13") && err.contains("reach"),
        "{err}"
    );
    let err = matmul_at(&ctx, &mm, at(12, 11), "out past its end")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out: offset 11"), "{err}");

    let data = zeros(&[2, 3, 7]);
    let rows = |query_offset| CausalSoftmaxRows {
        data: &data,
        blocks: 2,
        block_rows: 3,
        t: 7,
        query_offset,
    };
    causal_softmax_rows(&ctx, &rows(4), "last rows").unwrap();
    let err = causal_softmax_rows(&ctx, &rows(5), "past the last query")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("query rows 5..5+3") && err.contains("7 queries"),
        "{err}"
    );
}

/// The figures README.md quotes: Stable Diffusion 1.5 at 512×512 (8 heads of 4096² scores per
/// image, batch 2 for guidance) and a 128×128-latent VAE mid block (one head of 16384² scores)
/// under the default 64 MiB budget.
#[test]
fn attention_plan_of_the_readme_workloads() {
    let mib = 1u64 << 20;
    let sd = plan_attention(2, 8, 4096, 4096, 64 * mib).unwrap();
    assert_eq!(sd.chunks.len(), 16);
    assert_eq!(sd.scores_shape, [1, 4096, 4096]);
    // Cross-attention over 77 text tokens fits whole: 16 × 4096 × 77 f32 ≈ 19 MiB.
    let cross = plan_attention(2, 8, 4096, 77, 64 * mib).unwrap();
    assert_eq!(cross.chunks.len(), 1);
    let vae = plan_attention(1, 1, 16384, 16384, 64 * mib).unwrap();
    assert_eq!(vae.chunks.len(), 16);
    assert_eq!(vae.scores_shape, [1, 1024, 16384]);
}

/// Time of one attention (`ATTN_BENCH` = `batch,heads,head_dim,tokens`, default `1,8,40,1024`)
/// materialised and under smaller budgets: `cargo test --release --test ops_attention
/// bench_attention_budgets -- --ignored --nocapture`. Prints milliseconds per attention (median of
/// 3 trials of 5 back-to-back runs in one submit) and checks the outputs agree bit for bit.
#[test]
#[ignore = "a measurement, not a check: run by hand"]
fn bench_attention_budgets() {
    use std::time::Instant;
    let spec: Vec<usize> = std::env::var("ATTN_BENCH")
        .unwrap_or_else(|_| "1,8,40,1024".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .expect("ATTN_BENCH: batch,heads,head_dim,tokens")
        })
        .collect();
    let [batch, heads, d, t] = spec[..] else {
        panic!("ATTN_BENCH needs 4 numbers: batch,heads,head_dim,tokens");
    };
    let ctx = ctx();
    let case = Case {
        batch,
        heads,
        d,
        tq: t,
        tk: t,
        causal: false,
        q_layout: Layout::Channels,
        kv_layout: Layout::Channels,
    };
    let inputs = Inputs::new(&case, &mut Rng::new(19));
    let scores_bytes = 4 * (batch * heads * t * t) as u64;
    let mib = 1u64 << 20;
    let mut budgets = vec![scores_bytes];
    for b in [64 * mib, 16 * mib, 4 * mib] {
        if b < scores_bytes {
            budgets.push(b);
        }
    }
    let mut reference_out: Option<Vec<f32>> = None;
    for budget in budgets {
        let mut g = Graph::new(&ctx);
        g.set_attention_budget(budget);
        let [q, k, v] =
            [&inputs.q, &inputs.k, &inputs.v].map(|data| g.input(&[data.len()], "input").unwrap());
        let out_shape = [inputs.q.len()];
        let out = attention(
            &mut g,
            &AttentionArgs {
                q: &q,
                k: &k,
                v: &v,
                strides: case.all_strides(),
                batch,
                heads,
                head_dim: d,
                q_tokens: t,
                kv_tokens: t,
                causal: false,
                out_shape: &out_shape,
            },
            "attn",
        )
        .unwrap();
        g.keep(&out);
        let memory = g.plan();
        let finished = g.finish().unwrap();
        for (value, data) in [(&q, &inputs.q), (&k, &inputs.k), (&v, &inputs.v)] {
            finished.tensor(value).write(&ctx, data).unwrap();
        }
        let once: Vec<_> = finished.dispatches.iter().collect();
        ctx.submit(&once).unwrap();
        ctx.wait().unwrap();
        let reps: Vec<_> = (0..5).flat_map(|_| once.iter().copied()).collect();
        let mut trials: Vec<f64> = (0..3)
            .map(|_| {
                let start = Instant::now();
                ctx.submit(&reps).unwrap();
                ctx.wait().unwrap();
                start.elapsed().as_secs_f64() * 1e3 / 5.0
            })
            .collect();
        trials.sort_by(f64::total_cmp);
        let got = finished.tensor(&out).read(&ctx).unwrap();
        match &reference_out {
            None => reference_out = Some(got),
            Some(want) => assert!(
                want.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "budget {budget}: chunked output differs from the materialised one"
            ),
        }
        println!(
            "attention {batch}×{heads} heads, d {d}, T {t} on {}: budget {:.1} MiB, {} \
             dispatches, largest value {:.1} MiB, planned {:.1} MiB: {:.2} ms (best {:.2})",
            ctx.adapter.info.name,
            budget as f64 / mib as f64,
            once.len(),
            memory.largest.1 as f64 / mib as f64,
            memory.planned_bytes as f64 / mib as f64,
            trials[1],
            trials[0]
        );
    }
}
