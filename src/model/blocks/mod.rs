//! Building blocks shared by the model classes. Each block owns its load (fields named as in
//! diffusers, read through a [`crate::model::weights::VarBuilder`] view) and its graph recording
//! (the dispatches of its forward, in diffusers' order), side by side as candle's
//! `stable_diffusion` modules do.

pub mod attention;
pub mod embeddings;
pub mod layers;
pub mod mid;
pub mod resnet;
pub mod transformer;

use crate::error::Result;
use crate::model::graph::{Graph, Value};

/// The layer after each resnet of an attention block (the spatial self-attention of
/// `UNet2DModel` and the autoencoders, or SD's `Transformer2DModel`): it sees the context (text
/// embeddings) when the model has one.
pub trait SpatialLayer {
    /// `x [N, C, H, W]` → same shape.
    fn record_spatial<'a>(
        &'a self,
        g: &mut Graph<'a>,
        x: &Value,
        context: Option<&Value>,
        name: &str,
    ) -> Result<Value>;
}
