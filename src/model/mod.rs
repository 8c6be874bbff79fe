//! The diffusers models: one folder per model class (`unet_2d`), the building blocks they share
//! (`blocks`), the weight sources they load from (`weights`) and the static forward graph they
//! record into (`graph`).

pub mod blocks;
pub mod graph;
pub mod unet_2d;
pub mod weights;
