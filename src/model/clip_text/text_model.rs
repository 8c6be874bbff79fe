//! transformers `CLIPTextModel` (`models/clip/modeling_clip.py`): token and position embeddings,
//! pre-LN encoder layers with causal self-attention and an MLP, and the final layer norm; the
//! output is `last_hidden_state` [B, T, D], what Stable Diffusion conditions on.
//!
//! The token table stays on the CPU: SD's 49408 × 768 f32 table is 145 MiB, over the 128 MiB
//! binding limit of many adapters, and an encode needs only B·77 of its rows. The rows are
//! gathered on the CPU and the position embedding added there too (`[77, D]`, one f32 add per
//! element: the same single rounding as torch's `inputs_embeds + position_embeds`, and no launch
//! or upload of its own); the GPU graph starts at the `[B, T, D]` embeddings.
//!
//! Attention runs without transposing copies: q, k and v are written channel-major per prompt
//! (`[B, D, T]`, as the U-Net's spatial attention holds its tokens), so `(prompt, head)` is one
//! batch index for the score and value products, and the output projection reads that layout back
//! into `[B, T, D]` with the residual fused.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Tensor};
use crate::model::blocks::attention::{multi_head_views, part_views, Heads};
use crate::model::blocks::layers::{LinearLayer, ProjectionInput};
use crate::model::graph::{Graph, MemoryReport, Value};
use crate::model::weights::{Init, VarBuilder, WeightSource};
use crate::ops::activation::{self, Act, Activation};

use super::config::CLIPTextConfig;

/// File names inside a `text_encoder/` folder.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

pub use crate::model::blocks::layers::LayerNormLayer;

/// transformers `CLIPAttention`: causal multi-head self-attention with biased projections.
#[derive(Debug)]
pub struct CLIPAttention {
    /// `q_proj`, `k_proj` and `v_proj` stacked along the outputs (`[3·D, D]`, fused at load): one
    /// launch projects all three.
    pub qkv_proj: LinearLayer,
    pub out_proj: LinearLayer,
    pub heads: usize,
    pub head_dim: usize,
}

impl CLIPAttention {
    pub fn load(vb: &VarBuilder, cfg: &CLIPTextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let q = LinearLayer::load(&vb.pp("q_proj"), d, d)?;
        let k = LinearLayer::load(&vb.pp("k_proj"), d, d)?;
        let v = LinearLayer::load(&vb.pp("v_proj"), d, d)?;
        Ok(CLIPAttention {
            qkv_proj: LinearLayer::fuse_outputs(vb.context(), &[&q, &k, &v], &vb.key("qkv_proj"))?,
            out_proj: LinearLayer::load(&vb.pp("out_proj"), d, d)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `x + out_proj(attention(h))`, with `h = layer_norm1(x)`; both `[B, T, D]`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        h: &Value,
        x: &Value,
        name: &str,
    ) -> Result<Value> {
        let [batch, t, d] = h.shape[..] else {
            return Err(Error::invalid(
                name,
                format!("{:?} is not [B, T, D]", h.shape),
            ));
        };
        let (heads, hd) = (self.heads, self.head_dim);
        let projected = self.qkv_proj.record_parts(
            g,
            h,
            ProjectionInput::Tokens,
            3,
            &format!("{name}.qkv_proj"),
        )?;
        let views = part_views(&projected, heads, hd)?;
        let [q, k, v] = views[..] else {
            return Err(Error::invalid(
                name,
                "q, k and v: expected three projections",
            ));
        };
        let attn = multi_head_views(
            g,
            [q, k, v],
            Heads {
                heads,
                head_dim: hd,
                causal: true,
            },
            &[batch, d, t],
            name,
        )?;
        // out[b, t, o] = Σ_c attn[b, c, t]·W[o, c] + bias[o] + x[b, t, o].
        self.out_proj
            .record_from_channels(g, &attn, Some(x), &format!("{name}.out_proj"))
    }
}

/// transformers `CLIPMLP`: `fc2(act(fc1(x)))`.
#[derive(Debug)]
pub struct CLIPMLP {
    pub fc1: LinearLayer,
    pub fc2: LinearLayer,
    pub activation: Activation,
}

impl CLIPMLP {
    pub fn load(vb: &VarBuilder, cfg: &CLIPTextConfig) -> Result<Self> {
        Ok(CLIPMLP {
            fc1: LinearLayer::load(&vb.pp("fc1"), cfg.hidden_size, cfg.intermediate_size)?,
            fc2: LinearLayer::load(&vb.pp("fc2"), cfg.intermediate_size, cfg.hidden_size)?,
            activation: cfg.hidden_act,
        })
    }

    /// `x + fc2(act(fc1(h)))`.
    pub fn record<'a>(
        &'a self,
        g: &mut Graph<'a>,
        h: &Value,
        x: &Value,
        name: &str,
    ) -> Result<Value> {
        let f = self.fc1.record_tokens(g, h, None, &format!("{name}.fc1"))?;
        let label = format!("{name}.activation_fn");
        let fi = f.id();
        let act = self.activation;
        let a = g.op(&label.clone(), &[&f], &f.shape.clone(), move |b, out| {
            activation::activation(
                b.ctx,
                &Act {
                    x: b.get(fi),
                    out,
                    activation: act,
                },
                &label,
            )
        })?;
        self.fc2
            .record_tokens(g, &a, Some(x), &format!("{name}.fc2"))
    }
}

/// transformers `CLIPEncoderLayer` (pre-LN): `x += attn(ln1(x)); x += mlp(ln2(x))`.
#[derive(Debug)]
pub struct CLIPEncoderLayer {
    pub self_attn: CLIPAttention,
    pub layer_norm1: LayerNormLayer,
    pub mlp: CLIPMLP,
    pub layer_norm2: LayerNormLayer,
}

impl CLIPEncoderLayer {
    pub fn load(vb: &VarBuilder, cfg: &CLIPTextConfig) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(CLIPEncoderLayer {
            self_attn: CLIPAttention::load(&vb.pp("self_attn"), cfg)?,
            layer_norm1: LayerNormLayer::load(&vb.pp("layer_norm1"), d, eps)?,
            mlp: CLIPMLP::load(&vb.pp("mlp"), cfg)?,
            layer_norm2: LayerNormLayer::load(&vb.pp("layer_norm2"), d, eps)?,
        })
    }

    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let h = self
            .layer_norm1
            .record(g, x, &format!("{name}.layer_norm1"))?;
        let x = self
            .self_attn
            .record(g, &h, x, &format!("{name}.self_attn"))?;
        let h = self
            .layer_norm2
            .record(g, &x, &format!("{name}.layer_norm2"))?;
        self.mlp.record(g, &h, &x, &format!("{name}.mlp"))
    }
}

/// transformers `CLIPTextEmbeddings`, held on the CPU (see the module docs).
#[derive(Debug)]
pub struct CLIPTextEmbeddings {
    /// `token_embedding.weight` [vocab_size, D], row-major.
    pub token_embedding: Vec<f32>,
    /// `position_embedding.weight` [max_position_embeddings, D].
    pub position_embedding: Vec<f32>,
    pub dim: usize,
}

impl CLIPTextEmbeddings {
    /// `token_embedding(ids) + position_embedding(0..T)` for each prompt's ids (all of one
    /// length T ≤ max_position_embeddings): `[B, T, D]` row-major.
    pub fn embed(&self, input_ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        let d = self.dim;
        let vocab = self.token_embedding.len() / d;
        let max_pos = self.position_embedding.len() / d;
        let t = input_ids.first().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(input_ids.len() * t * d);
        for (p, ids) in input_ids.iter().enumerate() {
            if ids.len() != t || t > max_pos {
                return Err(Error::invalid(
                    "CLIP text embeddings",
                    format!(
                        "prompt {p} has {} token ids; every prompt needs the same number, at most \
                         max_position_embeddings = {max_pos} (prompt 0 has {t})",
                        ids.len()
                    ),
                ));
            }
            for (pos, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(Error::invalid(
                        "CLIP text embeddings",
                        format!(
                            "prompt {p}, position {pos}: token id {id} is outside the vocabulary \
                             (vocab_size {vocab})"
                        ),
                    ));
                }
                let tok = &self.token_embedding[id * d..(id + 1) * d];
                let posv = &self.position_embedding[pos * d..(pos + 1) * d];
                out.extend(tok.iter().zip(posv).map(|(a, b)| a + b));
            }
        }
        Ok(out)
    }
}

/// The whole text encoder; layer weights resident on the GPU, embeddings on the CPU.
#[derive(Debug)]
pub struct CLIPTextModel {
    pub config: CLIPTextConfig,
    pub embeddings: CLIPTextEmbeddings,
    pub layers: Vec<CLIPEncoderLayer>,
    pub final_layer_norm: LayerNormLayer,
    /// Number of parameters loaded (the CPU tables included).
    pub parameters: usize,
    ctx: Arc<GpuContext>,
}

impl CLIPTextModel {
    /// Loads `dir/config.json` and `dir/model.safetensors` (a `text_encoder/` folder), validating
    /// every tensor's presence and shape and rejecting unused tensors.
    pub fn load(ctx: &Arc<GpuContext>, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what: "text encoder directory (expected config.json and model.safetensors)".into(),
            });
        }
        let config = CLIPTextConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        if !weights_path.is_file() {
            return Err(Error::MissingFile {
                path: weights_path,
                what: "model.safetensors (the text encoder weights)".into(),
            });
        }
        let weights = WeightSource::file(&weights_path)?;
        Self::from_source(ctx, config, &weights)
    }

    /// Builds the model from a config and a weight source. Keys are transformers' names, under
    /// `text_model.` (the Stable Diffusion hub files, written by transformers 4) or without it
    /// (transformers 5's `save_pretrained`); `text_model.embeddings.position_ids`, when present,
    /// must be `0..max_position_embeddings`.
    pub fn from_source(
        ctx: &Arc<GpuContext>,
        config: CLIPTextConfig,
        source: &WeightSource,
    ) -> Result<Self> {
        const PREFIX: &str = "text_model";
        let prefixed = match source.checkpoint() {
            Some(w) => w.keys().any(|k| k.starts_with("text_model.")),
            None => true,
        };
        let root = VarBuilder::root(ctx, source);
        let vb = if prefixed { root.pp(PREFIX) } else { root };
        let cfg = &config;
        let d = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let token_embedding = source.get(
            &emb.pp("token_embedding").key("weight"),
            &[cfg.vocab_size, d],
            Init::Uniform(1.0),
        )?;
        let position_embedding = source.get(
            &emb.pp("position_embedding").key("weight"),
            &[cfg.max_position_embeddings, d],
            Init::Uniform(1.0),
        )?;
        if let Some(w) = source.checkpoint() {
            let key = emb.key("position_ids");
            if let Some(shape) = w.shape_of(&key).map(<[usize]>::to_vec) {
                let p = cfg.max_position_embeddings;
                if shape != [1, p] && shape != [p] {
                    return Err(Error::ShapeMismatch {
                        path: w.path().to_path_buf(),
                        key,
                        expected: vec![1, p],
                        found: shape,
                    });
                }
                let ids = w.get_i64(&key, &shape)?;
                if let Some((i, &bad)) = ids.iter().enumerate().find(|&(i, &v)| v != i as i64) {
                    return Err(Error::Config {
                        path: w.path().to_path_buf(),
                        key,
                        message: format!(
                            "holds {bad} at index {i}; expected the positions 0..{p} in order \
                             (this encoder adds position embedding i to token i)"
                        ),
                    });
                }
            }
        }
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| CLIPEncoderLayer::load(&vb.pp("encoder").pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm =
            LayerNormLayer::load(&vb.pp("final_layer_norm"), d, cfg.layer_norm_eps)?;
        source.finish()?;
        Ok(CLIPTextModel {
            parameters: vb.parameters() + token_embedding.len() + position_embedding.len(),
            embeddings: CLIPTextEmbeddings {
                token_embedding,
                position_embedding,
                dim: d,
            },
            layers,
            final_layer_norm,
            config,
            ctx: Arc::clone(ctx),
        })
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The forward graph for `batch` prompts of `seq_len` tokens.
    pub fn graph(&self, batch: usize, seq_len: usize) -> Result<TextEncoderGraph> {
        TextEncoderGraph::build(self, batch, seq_len, false)
    }

    /// Like [`CLIPTextModel::graph`], keeping `hidden_states.{0..=L}` (the embeddings and each
    /// layer's output, as transformers' `output_hidden_states`) readable after a run.
    pub fn debug_graph(&self, batch: usize, seq_len: usize) -> Result<TextEncoderGraph> {
        TextEncoderGraph::build(self, batch, seq_len, true)
    }

    /// The activation memory a graph would allocate, without allocating it.
    pub fn plan_memory(&self, batch: usize, seq_len: usize) -> Result<MemoryReport> {
        Ok(Recorded::record(self, batch, seq_len)?.graph.plan())
    }

    /// `last_hidden_state` `[B, T, D]` of the prompts' token ids (one graph, one submit).
    pub fn encode(&self, input_ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        let t = input_ids.first().map_or(0, Vec::len);
        self.graph(input_ids.len(), t)?.forward(self, input_ids)
    }
}

struct Recorded<'a> {
    graph: Graph<'a>,
    input: Value,
    output: Value,
    hidden_states: Vec<Value>,
}

impl<'a> Recorded<'a> {
    fn record(model: &'a CLIPTextModel, batch: usize, t: usize) -> Result<Self> {
        let cfg = &model.config;
        if batch == 0 || t == 0 || t > cfg.max_position_embeddings {
            return Err(Error::invalid(
                "CLIP text forward",
                format!(
                    "{batch} prompts of {t} tokens: need at least one prompt and 1..={} tokens",
                    cfg.max_position_embeddings
                ),
            ));
        }
        let mut g = Graph::new(&model.ctx);
        let input = g.input(&[batch, t, cfg.hidden_size], "inputs_embeds")?;
        let mut hidden_states = vec![input.clone()];
        let mut x = input.clone();
        for (i, layer) in model.layers.iter().enumerate() {
            x = layer.record(&mut g, &x, &format!("encoder.layers.{i}"))?;
            hidden_states.push(x.clone());
        }
        let output = model
            .final_layer_norm
            .record(&mut g, &x, "final_layer_norm")?;
        g.keep(&output);
        Ok(Recorded {
            graph: g,
            input,
            output,
            hidden_states,
        })
    }
}

/// The static forward graph for one (model, batch, sequence length).
#[derive(Debug)]
pub struct TextEncoderGraph {
    ctx: Arc<GpuContext>,
    pub batch: usize,
    pub seq_len: usize,
    /// Input: the embeddings `[B, T, D]` (written from the CPU).
    pub inputs_embeds: Tensor,
    /// `last_hidden_state` `[B, T, D]`.
    pub output: Tensor,
    /// `hidden_states.{i}` (only in a [`CLIPTextModel::debug_graph`]): 0 is the embeddings, i the
    /// output of encoder layer i − 1.
    pub hidden_states: Vec<Tensor>,
    pub dispatches: Vec<Dispatch>,
    pub memory: MemoryReport,
}

impl TextEncoderGraph {
    fn build(model: &CLIPTextModel, batch: usize, t: usize, keep: bool) -> Result<Self> {
        let mut rec = Recorded::record(model, batch, t)?;
        if keep {
            for v in &rec.hidden_states {
                rec.graph.keep(v);
            }
        }
        let finished = rec.graph.finish()?;
        let hidden_states = if keep {
            rec.hidden_states
                .iter()
                .map(|v| finished.tensor(v))
                .collect()
        } else {
            Vec::new()
        };
        Ok(TextEncoderGraph {
            ctx: Arc::clone(&model.ctx),
            batch,
            seq_len: t,
            inputs_embeds: finished.tensor(&rec.input),
            output: finished.tensor(&rec.output),
            hidden_states,
            dispatches: finished.dispatches,
            memory: finished.memory,
        })
    }

    /// Embeds `input_ids` on the CPU, runs the graph and reads `last_hidden_state` back.
    pub fn forward(&self, model: &CLIPTextModel, input_ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        if input_ids.len() != self.batch || input_ids.iter().any(|ids| ids.len() != self.seq_len) {
            return Err(Error::invalid(
                "CLIP text forward",
                format!(
                    "the graph takes {} prompts of {} token ids",
                    self.batch, self.seq_len
                ),
            ));
        }
        let embeds = model.embeddings.embed(input_ids)?;
        self.inputs_embeds.write(&self.ctx, &embeds)?;
        let refs: Vec<&Dispatch> = self.dispatches.iter().collect();
        self.ctx.submit(&refs)?;
        self.output.read(&self.ctx)
    }
}
