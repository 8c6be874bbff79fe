//! The library's one error type. Every message names the file, key or value at fault and what was
//! expected, so a user can act on it without reading the source.
//!
//! The variants fall in three groups ([`Error::is_user_error`], [`Error::is_internal`]):
//!
//! * **User input**: what the caller passed is wrong and changing it fixes the run. Options
//!   ([`Error::InvalidOption`], which names the [`SampleOptions`](crate::sampling::SampleOptions)
//!   field, e.g. `num_images`, never a CLI flag), the requested resolution
//!   ([`Error::Resolution`]), the model directory's files ([`Error::Io`], [`Error::MissingFile`],
//!   [`Error::Config`], [`Error::SafeTensors`], [`Error::MissingTensor`], [`Error::ShapeMismatch`],
//!   [`Error::UnsupportedDtype`], [`Error::UnusedTensors`]) and the GPU selection
//!   ([`Error::AdapterNotFound`], [`Error::BadGpuOption`]).
//! * **Environment**: the machine cannot run the request ([`Error::NoAdapter`],
//!   [`Error::RequestDevice`], [`Error::Gpu`], [`Error::BufferTooLarge`]).
//! * **Numerics**: the run itself produced NaN or infinite values ([`Error::NonFinite`]),
//!   usually from extreme options or weights; never written as an image.
//! * **Internal misuse**: a library-internal API was called with inconsistent shapes or
//!   parameters ([`Error::InvalidArgument`]) or a shader failed to build ([`Error::Shader`]): a bug
//!   in the library or in code driving its internals directly, not something an option can fix.

use std::path::PathBuf;

/// Everything that can go wrong in the library (see the module docs for which variants are user
/// input, environment or internal misuse). New variants may be added: match with a `_` arm.
/// `main.rs` wraps these with `anyhow` context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// wgpu found no usable adapter at all.
    #[error(
        "no GPU adapter found{details}. wgpu-diffusion needs a Vulkan, Metal, DX12 or GL adapter; \
         on a machine without a GPU install Mesa's software Vulkan driver (lavapipe): \
         `sudo apt-get install -y mesa-vulkan-drivers` (Debian/Ubuntu) or `dnf install mesa-vulkan-drivers` (Fedora)"
    )]
    NoAdapter { details: String },

    /// An adapter was asked for by name (`--adapter` / `WGPU_ADAPTER_NAME`) and none matched.
    #[error("no adapter matches {wanted:?}; available adapters: {available}")]
    AdapterNotFound { wanted: String, available: String },

    /// An environment variable or option selecting the GPU has a value we cannot interpret.
    #[error("{name}={value:?} is not valid: expected {expected}")]
    BadGpuOption {
        name: String,
        value: String,
        expected: String,
    },

    /// The adapter refused to create a device with the limits/features we asked for.
    #[error("could not open a device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A WGSL shader failed to compile or a pipeline failed validation.
    #[error("shader {kernel} (entry point {entry_point}) failed to build: {message}")]
    Shader {
        kernel: String,
        entry_point: String,
        message: String,
    },

    /// A GPU operation failed at run time (validation error, device lost, mapping failure).
    #[error("GPU error during {context}: {message}")]
    Gpu { context: String, message: String },

    /// Internal misuse: an operation was given tensors of incompatible shapes or a parameter it
    /// cannot handle (`op` names the operation).
    #[error("{op}: {message}")]
    InvalidArgument { op: String, message: String },

    /// User input: a [`SampleOptions`](crate::sampling::SampleOptions) field holds a value that
    /// the options themselves, the model or the sampler rule out. `field` is the field's path as
    /// written in Rust (`num_images`, `class_labels`, `init_image.strength`,
    /// `overrides.use_karras_sigmas`); front ends map it to their own names (the CLI to flags).
    #[error("{field}: {message}")]
    InvalidOption {
        field: &'static str,
        message: String,
    },

    /// A buffer would exceed what the adapter can bind in one storage binding.
    #[error(
        "{what} needs a {size} byte buffer but adapter {adapter:?} binds at most {limit} bytes per \
         storage buffer; use a smaller batch or resolution"
    )]
    BufferTooLarge {
        what: String,
        size: u64,
        limit: u64,
        adapter: String,
    },

    /// Reading or writing a file failed. The OS error is part of the message (not a `source`,
    /// so `{:#}` chains do not print it twice).
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A file the model directory must contain is absent.
    #[error("{path}: missing {what}")]
    MissingFile { path: PathBuf, what: String },

    /// config.json (or another JSON file) is malformed or holds a value we do not support.
    #[error("{path}: {key}: {message}")]
    Config {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// A safetensors file is malformed: truncated, bad header, offsets past the end.
    #[error("{path}: not a valid safetensors file: {message}")]
    SafeTensors { path: PathBuf, message: String },

    /// A tensor the model needs is absent from the weights file.
    #[error("{path}: missing tensor {key:?}{hint}")]
    MissingTensor {
        path: PathBuf,
        key: String,
        hint: String,
    },

    /// A tensor has a different shape than the config implies.
    #[error(
        "{path}: tensor {key:?} has shape {found:?}, expected {expected:?} (from config.json)"
    )]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor is stored in a dtype we cannot convert to f32.
    #[error("{path}: tensor {key:?} has dtype {dtype}; supported dtypes are F32, F16 and BF16")]
    UnsupportedDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },

    /// The weights file holds tensors the model does not use (a config/weights mismatch).
    #[error("{path}: {count} tensor(s) not used by the model described in config.json: {keys}")]
    UnusedTensors {
        path: PathBuf,
        count: usize,
        keys: String,
    },

    /// A run produced NaN or infinite values: the arithmetic overflowed (a huge guidance scale
    /// or η, weights out of range, a scheduler config that leaves no signal). Reported instead
    /// of writing a black image. `first_step` names the inference step after which the GPU's
    /// per-step check first saw one (empty for decoded images).
    #[error(
        "the {what} hold {count} non-finite value(s) (NaN or ±inf), the first in image \
         {image}{first_step}; nothing was written. The sampling arithmetic overflowed: lower \
         guidance_scale or eta, or check the model's weights and scheduler config"
    )]
    NonFinite {
        what: String,
        count: usize,
        image: usize,
        first_step: String,
    },

    /// The requested resolution cannot pass through the model's down/up blocks.
    #[error("resolution {height}x{width}: {message}")]
    Resolution {
        height: usize,
        width: usize,
        message: String,
    },
}

/// Shorthand used throughout the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the caller's input is at fault (options, resolution, model files, GPU selection):
    /// changing what was passed fixes it. See the module docs for the grouping.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidOption { .. }
                | Error::Resolution { .. }
                | Error::Io { .. }
                | Error::MissingFile { .. }
                | Error::Config { .. }
                | Error::SafeTensors { .. }
                | Error::MissingTensor { .. }
                | Error::ShapeMismatch { .. }
                | Error::UnsupportedDtype { .. }
                | Error::UnusedTensors { .. }
                | Error::AdapterNotFound { .. }
                | Error::BadGpuOption { .. }
        )
    }

    /// Whether the error is internal misuse (inconsistent arguments to an internal operation, a
    /// shader that does not build): a bug, not something the caller's options can fix.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::InvalidArgument { .. } | Error::Shader { .. })
    }

    /// A user-input error in the [`SampleOptions`](crate::sampling::SampleOptions) field `field`.
    pub(crate) fn option(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidOption {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op: op.into(),
            message: message.into(),
        }
    }

    pub(crate) fn gpu(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Gpu {
            context: context.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}
