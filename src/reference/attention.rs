//! f64 CPU reference for scaled dot-product attention (diffusers' `AttnProcessor` after the
//! projections, transformers' CLIP attention with its causal mask): self or cross, on strided
//! `[batch, head, token, dim]` views of q, k, v and the output, as
//! [`crate::model::blocks::attention::attention`] reads and writes them.

use crate::error::{Error, Result};

/// One attention problem. Strides are element strides `[batch, head, token, dim]`: element
/// `(n, h, t, i)` of q lives at `n·s[0] + h·s[1] + t·s[2] + i·s[3]` of `q`, and likewise.
#[derive(Debug, Clone, Copy)]
pub struct AttentionRef<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Strides of q, k, v and the output.
    pub strides: [[usize; 4]; 4],
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub q_tokens: usize,
    pub kv_tokens: usize,
    /// Query r sees keys 0..=r only (torch's additive −inf upper-triangular mask).
    pub causal: bool,
    /// Length of the output; elements outside the view stay 0.
    pub out_len: usize,
}

fn check_view(name: &str, len: usize, extents: [usize; 4], strides: [usize; 4]) -> Result<()> {
    let last = extents
        .iter()
        .zip(strides)
        .try_fold(0usize, |acc, (&e, s)| {
            acc.checked_add(e.checked_sub(1)?.checked_mul(s)?)
        });
    match last {
        Some(last) if last < len => Ok(()),
        _ => Err(Error::invalid(
            "reference attention",
            format!(
                "{name}: extents {extents:?} with strides {strides:?} reach element {last:?} \
                 of {len} values"
            ),
        )),
    }
}

/// `softmax(q·kᵀ/√d [+ mask])·v` per (batch, head), in f64.
pub fn attention(args: &AttentionRef) -> Result<Vec<f64>> {
    let AttentionRef {
        batch,
        heads,
        head_dim: d,
        q_tokens,
        kv_tokens,
        ..
    } = *args;
    if args.causal && q_tokens != kv_tokens {
        return Err(Error::invalid(
            "reference attention",
            format!("causal needs q_tokens == kv_tokens, got {q_tokens} and {kv_tokens}"),
        ));
    }
    let [qs, ks, vs, os] = args.strides;
    check_view("q", args.q.len(), [batch, heads, q_tokens, d], qs)?;
    check_view("k", args.k.len(), [batch, heads, kv_tokens, d], ks)?;
    check_view("v", args.v.len(), [batch, heads, kv_tokens, d], vs)?;
    check_view("out", args.out_len, [batch, heads, q_tokens, d], os)?;
    let at = |s: [usize; 4], n: usize, h: usize, t: usize, i: usize| {
        n * s[0] + h * s[1] + t * s[2] + i * s[3]
    };
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; args.out_len];
    for n in 0..batch {
        for h in 0..heads {
            for r in 0..q_tokens {
                let visible = if args.causal { r + 1 } else { kv_tokens };
                let scores: Vec<f64> = (0..visible)
                    .map(|c| {
                        (0..d)
                            .map(|i| {
                                f64::from(args.q[at(qs, n, h, r, i)])
                                    * f64::from(args.k[at(ks, n, h, c, i)])
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for i in 0..d {
                    let value: f64 = exps
                        .iter()
                        .enumerate()
                        .map(|(c, e)| e * f64::from(args.v[at(vs, n, h, c, i)]))
                        .sum();
                    out[at(os, n, h, r, i)] = value / sum;
                }
            }
        }
    }
    Ok(out)
}
