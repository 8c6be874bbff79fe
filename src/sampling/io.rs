//! Files in and out of a sampling run: PNG images and grids, the `--save-tensor` /
//! `--init-noise` safetensors, and atomic writes (temp file in the target directory + rename),
//! so a failed run never leaves a half-written output.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Maps a sample value in [−1, 1] to 0..=255 (clamped, rounded).
pub fn quantize(v: f32) -> u8 {
    let x = ((v + 1.0) * 127.5).round();
    if x.is_nan() {
        0
    } else {
        x.clamp(0.0, 255.0) as u8
    }
}

/// One [C, H, W] image as RGBA8 (1 channel: gray; 3: RGB; other counts: the first channel).
pub fn to_rgba8(image: &[f32], c: usize, h: usize, w: usize) -> Vec<u8> {
    let plane = h * w;
    let mut out = Vec::with_capacity(plane * 4);
    for p in 0..plane {
        let (r, g, b) = if c >= 3 {
            (image[p], image[plane + p], image[2 * plane + p])
        } else {
            (image[p], image[p], image[p])
        };
        out.extend_from_slice(&[quantize(r), quantize(g), quantize(b), 255]);
    }
    out
}

/// A canvas of 8-bit pixels with `channels` (1 = L8, 3 = RGB8) per pixel.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Canvas {
            width,
            height,
            channels,
            pixels: vec![0; width * height * channels],
        }
    }

    /// Draws one [C, H, W] image with its top-left corner at (x, y).
    pub fn draw(&mut self, image: &[f32], c: usize, h: usize, w: usize, x: usize, y: usize) {
        let plane = h * w;
        for row in 0..h {
            for col in 0..w {
                let p = row * w + col;
                let at = ((y + row) * self.width + x + col) * self.channels;
                for k in 0..self.channels {
                    let src = if c >= self.channels { k } else { 0 };
                    self.pixels[at + k] = quantize(image[src * plane + p]);
                }
            }
        }
    }

    /// PNG bytes.
    pub fn encode_png(&self) -> Result<Vec<u8>> {
        let color = if self.channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        let mut bytes = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut bytes),
            &self.pixels,
            self.width as u32,
            self.height as u32,
            color,
        )
        .map_err(|e| Error::invalid("PNG encoding", e.to_string()))?;
        Ok(bytes)
    }
}

/// PNG channels for a model with `c` channels.
fn png_channels(c: usize) -> usize {
    if c >= 3 {
        3
    } else {
        1
    }
}

/// Gap between grid cells, in pixels.
pub const GAP: usize = 2;

/// `n` images [C, H, W] (concatenated in `data`) in a near-square grid.
pub fn grid(data: &[f32], n: usize, c: usize, h: usize, w: usize) -> Canvas {
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols);
    let mut canvas = Canvas::new(
        cols * w + (cols - 1) * GAP,
        rows * h + rows.saturating_sub(1) * GAP,
        png_channels(c),
    );
    let len = c * h * w;
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        canvas.draw(
            &data[i * len..(i + 1) * len],
            c,
            h,
            w,
            col * (w + GAP),
            r * (h + GAP),
        );
    }
    canvas
}

/// A trajectory strip: one column per snapshot, two rows per image (x_t above x̂₀), for the first
/// `images` images.
pub fn trajectory_strip(
    snapshots: &[(Vec<f32>, Vec<f32>)],
    images: usize,
    c: usize,
    h: usize,
    w: usize,
) -> Canvas {
    let cols = snapshots.len().max(1);
    let rows = 2 * images;
    let mut canvas = Canvas::new(
        cols * w + (cols - 1) * GAP,
        rows * h + rows.saturating_sub(1) * GAP,
        png_channels(c),
    );
    let len = c * h * w;
    for (j, (x, x0)) in snapshots.iter().enumerate() {
        for i in 0..images {
            let px = j * (w + GAP);
            canvas.draw(&x[i * len..(i + 1) * len], c, h, w, px, 2 * i * (h + GAP));
            canvas.draw(
                &x0[i * len..(i + 1) * len],
                c,
                h,
                w,
                px,
                (2 * i + 1) * (h + GAP),
            );
        }
    }
    canvas
}

/// A file being written atomically: bytes go to a temp file beside `target`, which replaces
/// `target` on [`AtomicFile::commit`] and is removed if dropped uncommitted.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<std::fs::File>,
}

impl AtomicFile {
    /// Creates the temp file now, so an unwritable destination fails before any work is done.
    pub fn create(target: &Path) -> Result<Self> {
        if target.is_dir() {
            return Err(Error::invalid(
                "output",
                format!("{} is a directory, expected a file path", target.display()),
            ));
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::invalid(
                "output",
                format!(
                    "cannot write {}: directory {} does not exist",
                    target.display(),
                    dir.display()
                ),
            ));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = std::fs::File::create(&temp).map_err(|e| {
            Error::invalid("output", format!("cannot write {}: {e}", target.display()))
        })?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    /// Writes `bytes`, syncs and renames over the target.
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let mut file = self.file.take().ok_or_else(|| {
            Error::invalid(
                "output",
                format!("{} already written", self.target.display()),
            )
        })?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&self.temp, e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        Ok(())
    }

    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// safetensors bytes holding one f32 tensor `name` of `shape`.
pub fn tensor_file(name: &str, shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), bytes)
        .map_err(|e| Error::invalid("safetensors", e.to_string()))?;
    safetensors::tensor::serialize([(name, view)], None)
        .map_err(|e| Error::invalid("safetensors", e.to_string()))
}

/// Reads the one f32 tensor of a safetensors file (`--init-noise`): its shape and values.
pub fn read_single_tensor(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    // Not `Error::io`: its source would be printed twice in an error chain.
    let bytes = std::fs::read(path)
        .map_err(|e| Error::invalid("cannot read", format!("{}: {e}", path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::SafeTensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let names = st.names();
    if names.len() != 1 {
        return Err(Error::SafeTensors {
            path: path.to_path_buf(),
            message: format!(
                "expected exactly one tensor, found {} ({})",
                names.len(),
                names
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let name = names[0].to_string();
    let view = st.tensor(&name).map_err(|e| Error::SafeTensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(Error::UnsupportedDtype {
            path: path.to_path_buf(),
            key: name,
            dtype: format!("{:?}", view.dtype()),
        });
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::SafeTensors {
            path: path.to_path_buf(),
            message: format!("tensor {name:?} holds a non-finite value at element {bad}"),
        });
    }
    Ok((view.shape().to_vec(), values))
}

/// Reads a PNG (or any format the `image` crate decodes) as [C, H, W] values in [−1, 1], with
/// `c` = 1 (luma) or 3 (RGB); the size must be `h × w`.
pub fn read_image(path: &Path, c: usize, h: usize, w: usize) -> Result<Vec<f32>> {
    let unreadable = |e: std::io::Error| {
        Error::option(
            "init_image.image",
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let img = image::ImageReader::open(path)
        .map_err(unreadable)?
        .with_guessed_format()
        .map_err(unreadable)?
        .decode()
        .map_err(|e| Error::option("init_image.image", format!("{}: {e}", path.display())))?;
    if (img.height() as usize, img.width() as usize) != (h, w) {
        return Err(Error::option(
            "init_image.image",
            format!(
                "{} is {}×{} (width×height); the model samples {w}×{h}",
                path.display(),
                img.width(),
                img.height()
            ),
        ));
    }
    let plane = h * w;
    let to_unit = |v: u8| f32::from(v) / 127.5 - 1.0;
    match c {
        1 => Ok(img.to_luma8().into_raw().into_iter().map(to_unit).collect()),
        3 => {
            let rgb = img.to_rgb8().into_raw();
            let mut out = vec![0.0; 3 * plane];
            for p in 0..plane {
                for k in 0..3 {
                    out[k * plane + p] = to_unit(rgb[3 * p + k]);
                }
            }
            Ok(out)
        }
        _ => Err(Error::option(
            "init_image.image",
            format!("the model has {c} channels; image inputs need 1 or 3"),
        )),
    }
}
