//! The Rust side of every WGSL `var<uniform>` parameter block and `const FLAG_*`, declared once
//! through [`uniform_struct!`] and [`shader_flags!`] so a test (`tests/kernel_layout.rs`) can
//! compare them with the structs and constants naga parses from the shader: member names, byte
//! offsets, scalar types, total size and flag values. The lighter twin of ratchet's derived
//! layouts: nothing is generated from the WGSL, but nothing can drift from it unnoticed.

/// A WGSL scalar type a parameter block may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    U32,
    I32,
    F32,
}

impl Scalar {
    /// The WGSL spelling.
    pub fn wgsl(self) -> &'static str {
        match self {
            Scalar::U32 => "u32",
            Scalar::I32 => "i32",
            Scalar::F32 => "f32",
        }
    }
}

/// Rust types that have a WGSL scalar twin of the same size and alignment (4 bytes).
pub trait WgslScalar: bytemuck::Pod {
    const SCALAR: Scalar;
}

impl WgslScalar for u32 {
    const SCALAR: Scalar = Scalar::U32;
}

impl WgslScalar for i32 {
    const SCALAR: Scalar = Scalar::I32;
}

impl WgslScalar for f32 {
    const SCALAR: Scalar = Scalar::F32;
}

/// One member of a parameter block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniformField {
    pub name: &'static str,
    /// Byte offset (`std::mem::offset_of!`).
    pub offset: usize,
    pub scalar: Scalar,
}

/// A `#[repr(C)]` parameter block as the layout test sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniformLayout {
    /// The Rust struct's name (`StepParams`).
    pub rust_name: &'static str,
    /// The WGSL struct it mirrors (`Params`).
    pub wgsl_name: &'static str,
    /// `size_of` in bytes (a multiple of 16, asserted at compile time).
    pub size: usize,
    pub fields: &'static [UniformField],
}

/// Declares a parameter block: a `#[repr(C)]`, `Pod` struct of 4-byte scalars (every field
/// public, padding fields included and named as in the shader) plus its `LAYOUT` for the test
/// against the WGSL struct named after `=`, and a compile-time check that the size is a multiple
/// of 16 bytes.
///
/// ```ignore
/// uniform_struct! {
///     /// `Params` of `softmax.wgsl`.
///     pub struct Params = "Params" {
///         rows: u32,
///         cols: u32,
///         _pad0: u32,
///         _pad1: u32,
///     }
/// }
/// ```
macro_rules! uniform_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident = $wgsl:literal {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )+
        }

        impl $name {
            /// Member names, offsets and types, compared with the shader's struct by
            /// `tests/kernel_layout.rs`.
            pub const LAYOUT: $crate::gpu::UniformLayout = $crate::gpu::UniformLayout {
                rust_name: stringify!($name),
                wgsl_name: $wgsl,
                size: std::mem::size_of::<$name>(),
                fields: &[
                    $( $crate::gpu::UniformField {
                        name: stringify!($field),
                        offset: std::mem::offset_of!($name, $field),
                        scalar: <$ty as $crate::gpu::WgslScalar>::SCALAR,
                    }, )+
                ],
            };
        }

        const _: () = assert!(
            std::mem::size_of::<$name>().is_multiple_of(16),
            concat!(stringify!($name), " must be padded to a multiple of 16 bytes"),
        );
    };
}
pub(crate) use uniform_struct;

/// Declares a launcher's `FLAG_*` bits as `pub const NAME: u32` plus `FLAGS`, the list
/// `tests/kernel_layout.rs` compares with the shader's `const FLAG_*` declarations.
macro_rules! shader_flags {
    ( $( $(#[$meta:meta])* $name:ident = $value:expr ),* $(,)? ) => {
        $( $(#[$meta])* pub const $name: u32 = $value; )*

        /// Every flag bit of this launcher by name, as the shader declares them.
        pub const FLAGS: &[(&str, u32)] = &[ $( (stringify!($name), $name), )* ];
    };
}
pub(crate) use shader_flags;
