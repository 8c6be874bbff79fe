//! The diffusers model: config, weights, and the U-Net module tree.

pub mod config;
pub mod unet;
pub mod weights;
