//! The diffusers models: one folder per model class (`unet_2d`, `autoencoder`, and `clip_text`
//! for the prompt side), the building blocks they share (`blocks`), the weight sources they load
//! from (`weights`) and the static forward graph they record into (`graph`).

pub mod autoencoder;
pub mod blocks;
pub mod clip_text;
pub mod graph;
pub mod unet_2d;
pub mod unet_2d_condition;
pub mod weights;
