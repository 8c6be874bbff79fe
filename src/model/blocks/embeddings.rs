//! Time and class conditioning (diffusers `embeddings.py`): `Timesteps` (the sinusoidal
//! projection), `TimestepEmbedding` (linear → SiLU → linear) and the class-label lookup added to
//! it.

use crate::error::Result;
use crate::model::blocks::layers::{EmbeddingLayer, LinearLayer};
use crate::model::graph::{Graph, Value};
use crate::model::weights::VarBuilder;
use crate::ops::elementwise;
use crate::ops::timestep_embedding::{
    timestep_embedding, TimestepEmbedding as TimestepEmbeddingArgs,
};

/// diffusers `Timesteps`: `get_timestep_embedding(t, dim, flip_sin_to_cos, freq_shift)`. No
/// weights.
#[derive(Debug, Clone, Copy)]
pub struct Timesteps {
    pub dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
}

impl Timesteps {
    /// `timesteps [N]` → `[N, dim]`.
    pub fn record<'a>(&'a self, g: &mut Graph<'a>, timesteps: &Value, name: &str) -> Result<Value> {
        let ti = timesteps.id();
        let label = name.to_owned();
        g.op(
            name,
            &[timesteps],
            &[timesteps.shape[0], self.dim],
            move |b, out| {
                let args = TimestepEmbeddingArgs {
                    timesteps: b.get(ti),
                    out,
                    dim: self.dim,
                    flip_sin_to_cos: self.flip_sin_to_cos,
                    freq_shift: self.freq_shift,
                };
                timestep_embedding(b.ctx, &args, &label)
            },
        )
    }
}

/// diffusers `TimestepEmbedding` (act_fn "silu", no condition projection).
#[derive(Debug)]
pub struct TimestepEmbedding {
    pub linear_1: LinearLayer,
    pub linear_2: LinearLayer,
}

impl TimestepEmbedding {
    pub fn load(vb: &VarBuilder, in_channels: usize, dim: usize) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: LinearLayer::load(&vb.pp("linear_1"), in_channels, dim)?,
            linear_2: LinearLayer::load(&vb.pp("linear_2"), dim, dim)?,
        })
    }

    /// `linear_2(silu(linear_1(x)))`.
    pub fn record<'a>(&'a self, g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
        let h = self.linear_1.record(g, x, &format!("{name}.linear_1"))?;
        let h = silu(g, &h, &format!("{name}.act"))?;
        self.linear_2.record(g, &h, &format!("{name}.linear_2"))
    }
}

/// `F.silu(x)` into a new value.
pub fn silu<'a>(g: &mut Graph<'a>, x: &Value, name: &str) -> Result<Value> {
    let xi = x.id();
    let label = name.to_owned();
    g.op(name, &[x], &x.shape.clone(), move |b, out| {
        elementwise::silu(b.ctx, &elementwise::Silu { x: b.get(xi), out }, &label)
    })
}

/// `base + class_embedding(labels)`: the class conditioning of a `UNet2DModel` (labels `[N]`
/// as f32 integers, range-checked when written).
pub fn add_class_embedding<'a>(
    g: &mut Graph<'a>,
    table: &'a EmbeddingLayer,
    labels: &Value,
    base: &Value,
    name: &str,
) -> Result<Value> {
    let (li, bi) = (labels.id(), base.id());
    let label = name.to_owned();
    g.op(name, &[labels, base], &base.shape.clone(), move |b, out| {
        let args = elementwise::EmbeddingAdd {
            table: &table.weight,
            labels: b.get(li),
            base: b.get(bi),
            out,
        };
        elementwise::embedding_add(b.ctx, &args, &label)
    })
}

/// `2·x − 1` into a new value (`center_input_sample`).
pub fn center_input<'a>(g: &mut Graph<'a>, x: &Value) -> Result<Value> {
    let xi = x.id();
    g.op(
        "center_input_sample",
        &[x],
        &x.shape.clone(),
        move |b, out| {
            let args = elementwise::Affine {
                x: b.get(xi),
                out,
                mul: 2.0,
                add: -1.0,
            };
            elementwise::affine(b.ctx, &args, "center_input_sample")
        },
    )
}
