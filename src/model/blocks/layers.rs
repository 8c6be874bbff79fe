//! The leaf layers: `nn.Conv2d`, `nn.Linear`, `nn.GroupNorm` (with the SiLU that follows it
//! fused), `nn.LayerNorm` and `nn.Embedding`, each with its load and its recorded launch.
//!
//! Activations come in two layouts: channel-major `[N, C, T]` (NCHW images, and the q/k/v of
//! every attention, so `(sample, head)` is one batch index) and token-major `[N, T, C]` (a
//! transformer's hidden states, normalised per token). [`LinearLayer`] has one recording per
//! pair of layouts, so no transposing copy is ever needed.

use crate::error::Result;
use crate::gpu::{GpuContext, Tensor};
use crate::model::graph::{Graph, Value};
use crate::model::weights::{Init, VarBuilder};
use crate::ops::conv2d::{conv2d, conv2d_output_hw, BatchBiasView, Conv2d, Padding};
use crate::ops::group_norm::{group_norm, GroupNorm};
use crate::ops::layer_norm::{layer_norm, LayerNorm};
use crate::ops::matmul::{linear, matmul, matmul_at, BiasAxis, Matmul, MatmulOffsets};

/// `nn.Conv2d` weights; stride and padding are the owner's choice at record time.
#[derive(Debug)]
pub struct Conv2dLayer {
    pub weight: Tensor, // [out, in, k, k]
    pub bias: Tensor,   // [out]
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
}

/// How a convolution is applied, and what its epilogue adds.
#[derive(Debug, Clone)]
pub struct ConvApply<'v> {
    pub stride: usize,
    pub padding: Padding,
    /// `[N, Cout]` added per sample and channel (a ResNet's projected time embedding).
    pub batch_bias: Option<&'v Value>,
    /// How `batch_bias` is laid out (`None`: dense `[N, Cout]`); a slice of a wider value holding
    /// several layers' biases, e.g. one resnet's columns of the fused time projections.
    pub batch_bias_view: Option<BatchBiasView>,
    /// `[N, Cout, Ho, Wo]` added before the scale (a ResNet's shortcut).
    pub residual: Option<&'v Value>,
    /// Multiplies the whole sum.
    pub output_scale: f32,
    /// Convolve the nearest ×2 upsampling of the input (diffusers' `Upsample2D`, folded into
    /// the convolution's gather: the upsampled tensor is never stored).
    pub upsample: bool,
}

impl ConvApply<'_> {
    /// Stride 1 with `p` pixels of zero padding on every side (`k = 2p + 1` keeps the size).
    pub fn same(p: usize) -> Self {
        ConvApply {
            stride: 1,
            padding: Padding::same(p),
            batch_bias: None,
            batch_bias_view: None,
            residual: None,
            output_scale: 1.0,
            upsample: false,
        }
    }
}

impl Conv2dLayer {
    /// `weight [cout, cin, k, k]` and `bias [cout]`, initialised uniform ±1/√(cin·k²) when random.
    pub fn load(vb: &VarBuilder, cin: usize, cout: usize, k: usize) -> Result<Self> {
        let init = Init::Uniform(1.0 / ((cin * k * k) as f32).sqrt());
        Ok(Conv2dLayer {
            weight: vb.get("weight", &[cout, cin, k, k], init)?,
            bias: vb.get("bias", &[cout], init)?,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
        })
    }

    /// Records `conv2d(x)` with `apply`'s stride, padding and epilogue.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        apply: &ConvApply,
        name: &str,
    ) -> Result<Value> {
        let [n, _, h, w] = x.shape[..] else {
            return Err(crate::Error::invalid(
                name,
                format!("conv input {:?} is not [N, C, H, W]", x.shape),
            ));
        };
        let (h, w) = if apply.upsample {
            (2 * h, 2 * w)
        } else {
            (h, w)
        };
        let (ho, wo) =
            conv2d_output_hw(h, w, self.kernel, self.kernel, apply.stride, apply.padding)?;
        let mut reads = vec![x];
        reads.extend(apply.batch_bias);
        reads.extend(apply.residual);
        let (xi, bias, residual) = (
            x.id(),
            apply.batch_bias.map(Value::id),
            apply.residual.map(Value::id),
        );
        let (stride, padding, output_scale) = (apply.stride, apply.padding, apply.output_scale);
        let (batch_bias_view, upsample) = (apply.batch_bias_view, apply.upsample);
        let label = name.to_owned();
        g.op(
            name,
            &reads,
            &[n, self.out_channels, ho, wo],
            move |b, out| {
                let spec = Conv2d {
                    input: b.get(xi),
                    upsample,
                    weight: &self.weight,
                    bias: Some(&self.bias),
                    batch_bias: bias.map(|v| b.get(v)),
                    batch_bias_view,
                    residual: residual.map(|v| b.get(v)),
                    out,
                    stride,
                    padding,
                    output_scale,
                };
                conv2d(b.ctx, &spec, &label)
            },
        )
    }
}

/// What [`LinearLayer::record_parts`] recorded: the values (one fused, or one per part) and
/// where each part lives.
#[derive(Debug, Clone)]
pub struct Projected {
    pub values: Vec<Value>,
    pub parts: Vec<PartRef>,
}

/// Part of a [`Projected`]: channel block `index` of `of` equal blocks in `values[value]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRef {
    pub value: usize,
    pub index: usize,
    pub of: usize,
}

/// How [`LinearLayer::record_parts`] reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionInput {
    /// NCHW activations `[B, in, H, W]` (T = H·W); outputs `[B, out, H, W]`.
    Channels,
    /// Token-major hidden states `[B, T, in]`; outputs `[B, out, T]`.
    Tokens,
}

impl ProjectionInput {
    /// `(batch, tokens, x strides (batch, feature, token), the output's trailing dims)`.
    fn layout(
        self,
        x: &Value,
        fin: usize,
        name: &str,
    ) -> Result<(usize, usize, [usize; 3], Vec<usize>)> {
        let bad = |what: &str| {
            crate::Error::invalid(
                name,
                format!("{:?} is not {what} with {fin} input features", x.shape),
            )
        };
        match self {
            ProjectionInput::Channels => {
                let (&[batch, c], trailing) =
                    x.shape.split_at_checked(2).ok_or(bad("[B, C, ...]"))?
                else {
                    return Err(bad("[B, C, ...]"));
                };
                if c != fin {
                    return Err(bad("[B, C, ...]"));
                }
                let tokens = trailing.iter().product();
                Ok((batch, tokens, [fin * tokens, tokens, 1], trailing.to_vec()))
            }
            ProjectionInput::Tokens => {
                let [batch, t, d] = x.shape[..] else {
                    return Err(bad("[B, T, D]"));
                };
                if d != fin {
                    return Err(bad("[B, T, D]"));
                }
                Ok((batch, t, [t * fin, 1, fin], vec![t]))
            }
        }
    }
}

/// `nn.Linear` weights in torch layout (or a 1×1 `nn.Conv2d`'s, `[out, in, 1, 1]`: the same
/// memory).
#[derive(Debug)]
pub struct LinearLayer {
    pub weight: Tensor, // [out, in]
    /// `[out]`; `None` for `bias=False` layers (the q/k/v projections of SD's attention).
    pub bias: Option<Tensor>,
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearLayer {
    /// `weight [fout, fin]` and `bias [fout]`, initialised uniform ±1/√fin when random.
    pub fn load(vb: &VarBuilder, fin: usize, fout: usize) -> Result<Self> {
        Self::load_any(vb, &[""], fin, fout)
    }

    /// The first of several sub-module names the source holds (`""` is `vb` itself): legacy
    /// attention checkpoints name `to_q` `query`, `to_out.0` `proj_attn`.
    pub fn load_any(vb: &VarBuilder, names: &[&str], fin: usize, fout: usize) -> Result<Self> {
        let key = |n: &str, leaf: &str| {
            if n.is_empty() {
                leaf.to_owned()
            } else {
                format!("{n}.{leaf}")
            }
        };
        let weights: Vec<String> = names.iter().map(|n| key(n, "weight")).collect();
        let biases: Vec<String> = names.iter().map(|n| key(n, "bias")).collect();
        let weights: Vec<&str> = weights.iter().map(String::as_str).collect();
        let biases: Vec<&str> = biases.iter().map(String::as_str).collect();
        let init = Init::Uniform(1.0 / (fin as f32).sqrt());
        Ok(LinearLayer {
            weight: vb.get_any(&weights, &[fout, fin], init)?,
            bias: Some(vb.get_any(&biases, &[fout], init)?),
            in_features: fin,
            out_features: fout,
        })
    }

    /// `nn.Linear(fin, fout, bias=False)`: `weight` only.
    pub fn load_no_bias(vb: &VarBuilder, fin: usize, fout: usize) -> Result<Self> {
        let init = Init::Uniform(1.0 / (fin as f32).sqrt());
        Ok(LinearLayer {
            weight: vb.get("weight", &[fout, fin], init)?,
            bias: None,
            in_features: fin,
            out_features: fout,
        })
    }

    /// A 1×1 `nn.Conv2d(fin, fout)` used as a projection: `weight [fout, fin, 1, 1]`, `bias`.
    pub fn load_conv1x1(vb: &VarBuilder, fin: usize, fout: usize) -> Result<Self> {
        let init = Init::Uniform(1.0 / (fin as f32).sqrt());
        Ok(LinearLayer {
            weight: vb.get("weight", &[fout, fin, 1, 1], init)?,
            bias: Some(vb.get("bias", &[fout], init)?),
            in_features: fin,
            out_features: fout,
        })
    }

    /// One layer computing all of `parts` at once: their weights (and biases) stacked along the
    /// output features, so output `j` of part `i` is output `offset_i + j` of the result, with
    /// `offset_i` the sum of the earlier parts' `out_features`. Each output is the same dot
    /// product in the same order as in its part (bit-identical results). All parts must read the
    /// same `in_features` and agree on having a bias.
    pub fn fuse_outputs(ctx: &GpuContext, parts: &[&LinearLayer], label: &str) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(crate::Error::invalid(label, "no layers to fuse"));
        };
        let fin = first.in_features;
        if let Some(odd) = parts.iter().find(|p| p.in_features != fin) {
            return Err(crate::Error::invalid(
                label,
                format!(
                    "layers read {fin} and {} input features; fused layers must share their input",
                    odd.in_features
                ),
            ));
        }
        let fout = parts.iter().map(|p| p.out_features).sum();
        let as_matrix = |p: &LinearLayer| Tensor {
            buffer: p.weight.buffer.clone(),
            shape: vec![p.out_features, fin],
        };
        let weights: Vec<Tensor> = parts.iter().map(|p| as_matrix(p)).collect();
        let weight = Tensor::concat_outer(
            ctx,
            &weights.iter().collect::<Vec<_>>(),
            &format!("{label}.weight"),
        )?;
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bias.as_ref()).collect();
        let bias = match biases {
            Some(b) => Some(Tensor::concat_outer(ctx, &b, &format!("{label}.bias"))?),
            None if parts.iter().all(|p| p.bias.is_none()) => None,
            None => {
                return Err(crate::Error::invalid(
                    label,
                    "some layers have a bias and some do not; fused layers must agree",
                ))
            }
        };
        Ok(LinearLayer {
            weight,
            bias,
            in_features: fin,
            out_features: fout,
        })
    }

    /// `x [N, in] → [N, out]`.
    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let xi = x.id();
        let label = name.to_owned();
        g.op(
            name,
            &[x],
            &[x.shape[0], self.out_features],
            move |b, out| {
                linear(
                    b.ctx,
                    b.get(xi),
                    &self.weight,
                    self.bias.as_ref(),
                    out,
                    &label,
                )
            },
        )
    }

    /// A 1×1 projection of NCHW activations, `out[n] = W·x[n] + b (+ residual)) · output_scale`,
    /// as one batched GEMM over the tokens (the attention projections of the spatial blocks).
    pub fn record_channels<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        residual: Option<&Value>,
        output_scale: f32,
        name: &str,
    ) -> Result<Value> {
        let tokens: usize = x.shape[2..].iter().product();
        let mut shape = x.shape.clone();
        shape[1] = self.out_features;
        let x_strides = [self.in_features * tokens, tokens, 1];
        let rows = 0..self.out_features;
        self.record_channel_major(
            g,
            x,
            x_strides,
            tokens,
            rows,
            residual,
            output_scale,
            shape,
            name,
        )
    }

    /// `out[n] = (W[rows]·x[n] + b[rows] + residual[n]) · output_scale` written channel-major
    /// `[B, rows, T]` (shape `shape`), `x[n]`'s `[in, T]` read through `x_strides` (batch,
    /// feature, token): the one GEMM behind [`LinearLayer::record_channels`],
    /// [`LinearLayer::record_to_channels`] and [`LinearLayer::record_parts`]. `rows` is a window
    /// of the output features (a part of a fused layer), read in place.
    #[allow(clippy::too_many_arguments)]
    fn record_channel_major<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        x_strides: [usize; 3],
        tokens: usize,
        rows: std::ops::Range<usize>,
        residual: Option<&Value>,
        output_scale: f32,
        shape: Vec<usize>,
        name: &str,
    ) -> Result<Value> {
        let c_in = self.in_features;
        if rows.is_empty() || rows.end > self.out_features {
            return Err(crate::Error::invalid(
                name,
                format!(
                    "output rows {rows:?} are not a window of the layer's {} outputs",
                    self.out_features
                ),
            ));
        }
        let c_out = rows.len();
        let offsets = MatmulOffsets {
            a: rows.start * c_in,
            bias: Some(rows.start),
            ..MatmulOffsets::default()
        };
        let batch = x.shape[0];
        let mut reads = vec![x];
        reads.extend(residual);
        let (xi, ri) = (x.id(), residual.map(Value::id));
        let label = name.to_owned();
        g.op(name, &reads, &shape, move |b, out| {
            let mm = Matmul {
                a: &self.weight,
                b: b.get(xi),
                out,
                bias: self.bias.as_ref().map(|t| (t, BiasAxis::M)),
                residual: ri.map(|r| b.get(r)),
                batch,
                m: c_out,
                n: tokens,
                k: c_in,
                a_strides: [0, c_in, 1],
                b_strides: x_strides,
                c_strides: [c_out * tokens, tokens, 1],
                alpha: 1.0,
                output_scale,
            };
            matmul_at(b.ctx, &mm, offsets, &label)
        })
    }

    /// A fused layer's `parts` equal blocks of outputs (q, k and v stacked by
    /// [`LinearLayer::fuse_outputs`]) projected channel-major from `x`, read as
    /// [`ProjectionInput`] says: one launch writing `[B, out, T]` when that value fits the graph's
    /// binding limit, else one launch per part, each reading its rows of the fused weight in
    /// place. Every output element is the same dot product either way.
    pub fn record_parts<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        input: ProjectionInput,
        parts: usize,
        name: &str,
    ) -> Result<Projected> {
        let fout = self.out_features;
        if parts == 0 || !fout.is_multiple_of(parts) {
            return Err(crate::Error::invalid(
                name,
                format!("{fout} outputs do not split into {parts} equal parts"),
            ));
        }
        let (batch, tokens, x_strides, trailing) = input.layout(x, self.in_features, name)?;
        let shape = |rows: usize| {
            let mut shape = vec![batch, rows];
            shape.extend_from_slice(&trailing);
            shape
        };
        let fused_bytes = 4 * (batch * fout * tokens) as u64;
        let (bounds, names): (Vec<_>, Vec<_>) = if fused_bytes <= g.binding_limit() {
            (std::iter::once(0..fout).collect(), vec![name.to_owned()])
        } else {
            let part = fout / parts;
            (0..parts)
                .map(|i| (i * part..(i + 1) * part, format!("{name}.{i}")))
                .unzip()
        };
        let mut values = Vec::new();
        for (rows, label) in bounds.into_iter().zip(names) {
            let s = shape(rows.len());
            values.push(
                self.record_channel_major(g, x, x_strides, tokens, rows, None, 1.0, s, &label)?,
            );
        }
        let fused = values.len() == 1;
        let parts = (0..parts)
            .map(|i| PartRef {
                value: if fused { 0 } else { i },
                index: if fused { i } else { 0 },
                of: if fused { parts } else { 1 },
            })
            .collect();
        Ok(Projected { values, parts })
    }

    /// Token-major `x [..., T, in]` → `[..., T, out]` (`+ residual`, same shape as the output):
    /// one GEMM over every token.
    pub fn record_tokens<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        residual: Option<&Value>,
        name: &str,
    ) -> Result<Value> {
        let (fin, fout) = (self.in_features, self.out_features);
        let tokens = x.numel() / fin;
        let mut shape = x.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = fout;
        }
        let mut reads = vec![x];
        reads.extend(residual);
        let (xi, ri) = (x.id(), residual.map(Value::id));
        let label = name.to_owned();
        g.op(name, &reads, &shape, move |b, out| {
            let mm = Matmul {
                a: b.get(xi),
                b: &self.weight,
                out,
                bias: self.bias.as_ref().map(|t| (t, BiasAxis::N)),
                residual: ri.map(|r| b.get(r)),
                batch: 1,
                m: tokens,
                n: fout,
                k: fin,
                a_strides: [0, fin, 1],
                b_strides: [0, 1, fin],
                c_strides: [0, fout, 1],
                alpha: 1.0,
                output_scale: 1.0,
            };
            matmul(b.ctx, &mm, &label)
        })
    }

    /// Token-major `h [B, T, in]` → channel-major `[B, out, T]` (`+ residual [B, out, ...]`;
    /// the output takes `out_shape` when given, e.g. `[B, out, H, W]`): the q/k/v projections of
    /// attention, and a transformer's `proj_out` back onto its NCHW input.
    pub fn record_to_channels<'a>(
        &'a self,
        g: &mut Graph<'a>,
        h: &Value,
        residual: Option<&Value>,
        out_shape: Option<&[usize]>,
        name: &str,
    ) -> Result<Value> {
        let (fin, fout) = (self.in_features, self.out_features);
        let [batch, t, d] = h.shape[..] else {
            return Err(crate::Error::invalid(
                name,
                format!("{:?} is not [B, T, D]", h.shape),
            ));
        };
        if d != fin {
            return Err(crate::Error::invalid(
                name,
                format!("{:?} has {d} features, the layer takes {fin}", h.shape),
            ));
        }
        let shape = out_shape.map_or_else(|| vec![batch, fout, t], <[usize]>::to_vec);
        let rows = 0..fout;
        self.record_channel_major(g, h, [t * fin, 1, fin], t, rows, residual, 1.0, shape, name)
    }

    /// Channel-major `a [B, in, ...]` (T = the trailing dims) → token-major `[B, T, out]`
    /// (`+ residual [B, T, out]`): attention's output projection back into the hidden states, and
    /// a transformer's `proj_in` from its NCHW input.
    pub fn record_from_channels<'a>(
        &'a self,
        g: &mut Graph<'a>,
        a: &Value,
        residual: Option<&Value>,
        name: &str,
    ) -> Result<Value> {
        let (fin, fout) = (self.in_features, self.out_features);
        if a.shape.len() < 3 || a.shape[1] != fin {
            return Err(crate::Error::invalid(
                name,
                format!("{:?} is not [B, {fin}, T...]", a.shape),
            ));
        }
        let batch = a.shape[0];
        let t: usize = a.shape[2..].iter().product();
        let mut reads = vec![a];
        reads.extend(residual);
        let (ai, ri) = (a.id(), residual.map(Value::id));
        let label = name.to_owned();
        g.op(name, &reads, &[batch, t, fout], move |b, out| {
            let mm = Matmul {
                a: b.get(ai),
                b: &self.weight,
                out,
                bias: self.bias.as_ref().map(|t| (t, BiasAxis::N)),
                residual: ri.map(|r| b.get(r)),
                batch,
                m: t,
                n: fout,
                k: fin,
                a_strides: [fin * t, 1, t],
                b_strides: [0, 1, fin],
                c_strides: [t * fout, fout, 1],
                alpha: 1.0,
                output_scale: 1.0,
            };
            matmul(b.ctx, &mm, &label)
        })
    }
}

/// `nn.LayerNorm(D, eps)` affine parameters.
#[derive(Debug)]
pub struct LayerNormLayer {
    pub weight: Tensor, // [D]
    pub bias: Tensor,   // [D]
    pub eps: f32,
}

impl LayerNormLayer {
    /// `weight [D]` (ones when random) and `bias [D]` (zeros).
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNormLayer {
            weight: vb.get("weight", &[dim], Init::Ones)?,
            bias: vb.get("bias", &[dim], Init::Zeros)?,
            eps: eps as f32,
        })
    }

    /// `layer_norm(x)` over the last dimension, into a new value.
    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let xi = x.id();
        let label = name.to_owned();
        g.op(name, &[x], &x.shape.clone(), move |b, out| {
            let args = LayerNorm {
                input: b.get(xi),
                gamma: &self.weight,
                beta: &self.bias,
                out,
                eps: self.eps,
            };
            layer_norm(b.ctx, &args, &label)
        })
    }
}

/// `nn.GroupNorm` affine parameters.
#[derive(Debug)]
pub struct GroupNormLayer {
    pub weight: Tensor, // [C]
    pub bias: Tensor,   // [C]
    pub groups: usize,
    pub eps: f32,
}

impl GroupNormLayer {
    /// `weight [C]` (ones when random) and `bias [C]` (zeros).
    pub fn load(vb: &VarBuilder, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(GroupNormLayer {
            weight: vb.get("weight", &[channels], Init::Ones)?,
            bias: vb.get("bias", &[channels], Init::Zeros)?,
            groups,
            eps: eps as f32,
        })
    }

    /// `group_norm(x)`, followed by SiLU when `silu` (fused: diffusers' `norm → nonlinearity`).
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        silu: bool,
        name: &str,
    ) -> Result<Value> {
        let xi = x.id();
        let label = name.to_owned();
        g.op(name, &[x], &x.shape.clone(), move |b, out| {
            let args = GroupNorm {
                input: b.get(xi),
                gamma: &self.weight,
                beta: &self.bias,
                out,
                groups: self.groups,
                eps: self.eps,
                silu,
            };
            group_norm(b.ctx, &args, &label)
        })
    }
}

/// `nn.Embedding` table `[rows, dim]`.
#[derive(Debug)]
pub struct EmbeddingLayer {
    pub weight: Tensor,
    pub rows: usize,
    pub dim: usize,
}

impl EmbeddingLayer {
    /// `weight [rows, dim]` (uniform ±1 when random).
    pub fn load(vb: &VarBuilder, rows: usize, dim: usize) -> Result<Self> {
        Ok(EmbeddingLayer {
            weight: vb.get("weight", &[rows, dim], Init::Uniform(1.0))?,
            rows,
            dim,
        })
    }
}
