//! Building blocks shared by the model classes. Each block owns its load (fields named as in
//! diffusers, read through a [`crate::model::weights::VarBuilder`] view) and its graph recording
//! (the dispatches of its forward, in diffusers' order), side by side as candle's
//! `stable_diffusion` modules do.

pub mod attention;
pub mod embeddings;
pub mod layers;
pub mod mid;
pub mod resnet;
