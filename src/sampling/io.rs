//! Files in and out of a sampling run: PNG images, grids and trajectory strips (upscaled,
//! bordered and captioned with font8x8's embedded 8×8 bitmap font, so no system font is looked
//! up), the `--save-tensor` / `--init-noise` safetensors, and atomic writes (temp file in the
//! target directory + rename), so a failed run never leaves a half-written output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ClassNames;
use crate::error::{Error, Result};
use crate::model::weights::Weights;
use crate::schedule::{NoiseLevels, StepPlan};

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
    /// A black canvas.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Canvas::filled(width, height, channels, 0)
    }

    /// A canvas of one gray level.
    pub fn filled(width: usize, height: usize, channels: usize, gray: u8) -> Self {
        Canvas {
            width,
            height,
            channels,
            pixels: vec![gray; width * height * channels],
        }
    }

    /// The channel values of pixel (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let at = (y * self.width + x) * self.channels;
        &self.pixels[at..at + self.channels]
    }

    /// Draws one [C, H, W] image with its top-left corner at (x, y), each pixel as a
    /// `scale` × `scale` block (nearest neighbour).
    pub fn draw(
        &mut self,
        image: &[f32],
        [c, h, w]: [usize; 3],
        (x, y): (usize, usize),
        scale: usize,
    ) {
        let plane = h * w;
        let channels = self.channels;
        debug_assert!(x + w * scale <= self.width && y + h * scale <= self.height);
        let mut line = vec![0u8; w * scale * channels];
        for row in 0..h {
            for col in 0..w {
                for k in 0..channels {
                    let src = if c >= channels { k } else { 0 };
                    let v = quantize(image[src * plane + row * w + col]);
                    for dx in 0..scale {
                        line[(col * scale + dx) * channels + k] = v;
                    }
                }
            }
            for dy in 0..scale {
                let at = ((y + row * scale + dy) * self.width + x) * channels;
                self.pixels[at..at + line.len()].copy_from_slice(&line);
            }
        }
    }

    /// Sets pixel (x, y) to `gray` in every channel; outside the canvas, nothing.
    fn set(&mut self, x: usize, y: usize, gray: u8) {
        if x < self.width && y < self.height {
            let at = (y * self.width + x) * self.channels;
            self.pixels[at..at + self.channels].fill(gray);
        }
    }

    /// Writes `text` in the 8×8 bitmap font, each font pixel `text_scale` pixels wide, with the
    /// top-left corner of its first cell at (x, y). What falls outside the canvas is clipped.
    pub fn draw_text(&mut self, text: &str, x: usize, y: usize, text_scale: usize, gray: u8) {
        let cell = GLYPH * text_scale;
        let mut cells: usize = 0;
        for ch in text.chars() {
            let (rows, at) = if ch == COMBINING_CIRCUMFLEX {
                // Over the previous letter.
                (CIRCUMFLEX, cells.saturating_sub(1))
            } else if is_combining(ch) {
                continue;
            } else {
                cells += 1;
                (glyph(ch), cells - 1)
            };
            let left = x + at * cell;
            for (r, bits) in rows.iter().enumerate() {
                for b in 0..GLYPH {
                    if bits & (1 << b) != 0 {
                        for dy in 0..text_scale {
                            for dx in 0..text_scale {
                                self.set(left + b * text_scale + dx, y + r * text_scale + dy, gray);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes `text` centred in the `width` pixels from `x`, cut with an ellipsis to fit.
    fn draw_text_centred(
        &mut self,
        text: &str,
        x: usize,
        width: usize,
        y: usize,
        text_scale: usize,
    ) {
        let cell = GLYPH * text_scale;
        let text = truncate(text, width / cell);
        let used = text_cells(&text) * cell;
        self.draw_text(&text, x + (width - used) / 2, y, text_scale, TEXT_GRAY);
    }

    /// PNG bytes.
    pub fn encode_png(&self) -> Result<Vec<u8>> {
        self.encode(ImageFormat::Png)
    }

    /// The canvas encoded as `format` (JPEG at quality 95; WebP lossless, the only WebP the
    /// `image` crate writes).
    pub fn encode(&self, format: ImageFormat) -> Result<Vec<u8>> {
        let color = if self.channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        let (width, height) = (self.width as u32, self.height as u32);
        let mut bytes = Vec::new();
        let written = match format {
            ImageFormat::Png => image::ImageEncoder::write_image(
                image::codecs::png::PngEncoder::new(&mut bytes),
                &self.pixels,
                width,
                height,
                color,
            ),
            ImageFormat::Jpeg => image::ImageEncoder::write_image(
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95),
                &self.pixels,
                width,
                height,
                color,
            ),
            ImageFormat::WebP => image::ImageEncoder::write_image(
                image::codecs::webp::WebPEncoder::new_lossless(&mut bytes),
                &self.pixels,
                width,
                height,
                color,
            ),
        };
        written
            .map_err(|e| Error::invalid(format!("{} encoding", format.name()), e.to_string()))?;
        Ok(bytes)
    }
}

/// The formats a picture output (grid, trajectory strip) can be written in, chosen by the
/// output path's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    WebP,
}

impl ImageFormat {
    /// The extensions accepted, as listed in messages.
    pub const EXTENSIONS: &'static str = ".png, .jpg / .jpeg or .webp";

    /// The format `path`'s extension names (case-insensitive): `.png`, `.jpg` / `.jpeg`,
    /// `.webp`. Any other extension, or none, is refused: writing PNG bytes under a `.jpg` name
    /// would make a file other programs misread.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(ImageFormat::Png),
            Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
            Some("webp") => Ok(ImageFormat::WebP),
            Some(other) => Err(Error::invalid(
                "output file",
                format!(
                    "{}: cannot write an image with extension .{other}; use {}",
                    path.display(),
                    Self::EXTENSIONS
                ),
            )),
            None => Err(Error::invalid(
                "output file",
                format!(
                    "{}: no file extension to choose the image format from; use {}",
                    path.display(),
                    Self::EXTENSIONS
                ),
            )),
        }
    }

    /// The format's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "PNG",
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::WebP => "WebP",
        }
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

// ---------------------------------------------------------------------------------------------
// Text: font8x8's public-domain 8×8 glyphs (one byte per row, bit 0 the leftmost pixel), plus
// the few the labels need that it lacks.

/// Glyph cell, in font pixels.
pub const GLYPH: usize = 8;
const COMBINING_CIRCUMFLEX: char = '\u{302}';
/// The circumflex drawn over the previous cell (x̂): rows 0–1, centred on column 3.
const CIRCUMFLEX: [u8; 8] = [0x08, 0x14, 0, 0, 0, 0, 0, 0];
/// Glyphs font8x8 lacks: the ellipsis, subscript zero and subscript t (x̂₀, xₜ).
const EXTRA_GLYPHS: [(char, [u8; 8]); 3] = [
    ('…', [0, 0, 0, 0, 0, 0, 0x49, 0]),
    ('₀', [0, 0, 0, 0x02, 0x05, 0x05, 0x05, 0x02]),
    ('ₜ', [0, 0, 0, 0x02, 0x07, 0x02, 0x02, 0x04]),
];

fn is_combining(ch: char) -> bool {
    ('\u{300}'..='\u{36f}').contains(&ch)
}

/// The glyph of `ch`: Basic Latin, Latin-1, Greek, or ours; `?` for anything else.
fn glyph(ch: char) -> [u8; 8] {
    use font8x8::UnicodeFonts;
    EXTRA_GLYPHS
        .iter()
        .find(|(c, _)| *c == ch)
        .map(|(_, g)| *g)
        .or_else(|| font8x8::BASIC_FONTS.get(ch))
        .or_else(|| font8x8::LATIN_FONTS.get(ch))
        .or_else(|| font8x8::GREEK_FONTS.get(ch))
        .or_else(|| font8x8::BASIC_FONTS.get('?'))
        .unwrap_or([0xFF; 8])
}

/// Glyph cells `text` takes (combining marks take none).
pub fn text_cells(text: &str) -> usize {
    text.chars().filter(|c| !is_combining(*c)).count()
}

/// `text` in at most `max_cells` cells: unchanged when it fits, else cut and ended with `…`.
pub fn truncate(text: &str, max_cells: usize) -> String {
    if text_cells(text) <= max_cells {
        return text.to_owned();
    }
    let Some(keep) = max_cells.checked_sub(1) else {
        return String::new();
    };
    let mut out = String::new();
    let mut cells = 0;
    for ch in text.chars() {
        if !is_combining(ch) {
            if cells == keep {
                break;
            }
            cells += 1;
        }
        out.push(ch);
    }
    let mut out = out.trim_end().to_owned();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------------------
// Captions

/// What a grid tile's caption says: what conditioned the image and its index in the run
/// (with the run's seed, the index identifies the image's noise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    /// The class name or the prompt; empty for an unconditional image.
    pub subject: String,
    pub index: usize,
}

impl Caption {
    /// The caption line in at most `max_cells` glyph cells: `subject #index`, cutting the
    /// subject (with `…`) before the index.
    pub fn fit(&self, max_cells: usize) -> String {
        let tag = format!("#{}", self.index);
        if self.subject.is_empty() {
            return truncate(&tag, max_cells);
        }
        let full = format!("{} {tag}", self.subject);
        if text_cells(&full) <= max_cells {
            return full;
        }
        // One letter and the ellipsis at least, else cut the whole line.
        let room = max_cells.saturating_sub(text_cells(&tag) + 1);
        if room >= 2 {
            format!("{} {tag}", truncate(&self.subject, room))
        } else {
            truncate(&full, max_cells)
        }
    }
}

/// What conditioned the images of a run, for their captions.
#[derive(Debug, Clone, Copy)]
pub enum CaptionSource<'a> {
    /// Unconditional: the caption is the image index alone.
    None,
    /// Class-conditional: each image's label ([`RunSpec::labels`](super::RunSpec::labels),
    /// cycled) and a display name per label; a label without one reads `class N`.
    Class {
        labels: &'a [usize],
        names: &'a BTreeMap<usize, String>,
    },
    /// Prompt-conditioned: one prompt per image (cycled).
    Prompt(&'a [String]),
}

impl CaptionSource<'_> {
    /// The captions of images `0..n`.
    pub fn captions(&self, n: usize) -> Vec<Caption> {
        (0..n)
            .map(|index| {
                let subject = match self {
                    CaptionSource::None => String::new(),
                    CaptionSource::Class { labels, names } if !labels.is_empty() => {
                        let label = labels[index % labels.len()];
                        names
                            .get(&label)
                            .cloned()
                            .unwrap_or_else(|| format!("class {label}"))
                    }
                    CaptionSource::Prompt(prompts) if !prompts.is_empty() => {
                        prompts[index % prompts.len()].clone()
                    }
                    _ => String::new(),
                };
                Caption { subject, index }
            })
            .collect()
    }
}

/// One display name per label of a `classes.json`: its longest name (the alphabetically first
/// of equally long ones), skipping plural aliases (`sneakers` beside `sneaker`) — so `0` reads
/// `t-shirt/top` rather than its alias `top`, and `7` reads `sneaker`.
pub fn class_display_names(classes: &ClassNames) -> BTreeMap<usize, String> {
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    for (name, &label) in &classes.names {
        let plural_alias = name
            .strip_suffix('s')
            .is_some_and(|singular| classes.names.get(singular) == Some(&label));
        let longer = names
            .get(&label)
            .is_none_or(|have| name.chars().count() > have.chars().count());
        if longer && !plural_alias {
            names.insert(label, name.clone());
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Grids and trajectory strips

/// Gray of the borders between tiles and of the caption, header and label bands.
pub const BORDER_GRAY: u8 = 224;
/// Gray of the text.
pub const TEXT_GRAY: u8 = 32;
/// Border between tiles, in pixels (at every scale).
pub const BORDER: usize = 2;
/// [`auto_scale`] makes a tile's larger side at least this many pixels.
pub const MIN_TILE: usize = 128;
/// The largest scale.
pub const MAX_SCALE: usize = 32;
/// The largest grid or strip, in bytes of pixels.
pub const MAX_CANVAS_BYTES: usize = 1 << 30;
/// Height of a caption band under a tile, in font pixels: 2 above the glyph, 8, 2 below.
const CAPTION_BAND: usize = 12;
/// Height of a strip's header band: two lines (step, noise level) with 2 pixels around each.
const HEADER_BAND: usize = 22;
/// Width of a strip's label band: two glyph cells (`xₜ`, `x̂₀`) and 2 pixels either side.
const LABEL_BAND: usize = 20;

/// How grids and trajectory strips are drawn. Per-image PNGs ignore it: they stay at the
/// model's resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridStyle {
    /// Nearest-neighbour upscale of every tile (1 to [`MAX_SCALE`]); `None`: [`auto_scale`].
    pub scale: Option<usize>,
    /// Grid columns; `None`: ⌈√n⌉, near square. More columns than images make one row.
    pub cols: Option<usize>,
    /// A caption under each grid tile; a strip's header (step, t or σ) and row labels.
    pub captions: bool,
}

impl Default for GridStyle {
    fn default() -> Self {
        GridStyle {
            scale: None,
            cols: None,
            captions: true,
        }
    }
}

impl GridStyle {
    /// Checks the fields; errors name them (`grid.scale`, `grid.cols`).
    pub fn validate(&self) -> Result<()> {
        if let Some(k) = self.scale {
            if !(1..=MAX_SCALE).contains(&k) {
                return Err(Error::option(
                    "grid.scale",
                    format!("must be 1 to {MAX_SCALE}, got {k}"),
                ));
            }
        }
        if self.cols == Some(0) {
            return Err(Error::option("grid.cols", "must be at least 1, got 0"));
        }
        Ok(())
    }

    /// The scale of an `h` × `w` model's tiles.
    pub fn scale_for(&self, h: usize, w: usize) -> usize {
        self.scale.unwrap_or_else(|| auto_scale(h, w))
    }
}

/// The default scale: the smallest K with K·max(h, w) ≥ [`MIN_TILE`] (128 px), at most
/// [`MAX_SCALE`]. So 28 px → 5 (140 px), 32 → 4, 33–42 → 4, 43–63 → 3, 64 → 2, 65–127 → 2,
/// and 128 px or more → 1.
pub fn auto_scale(h: usize, w: usize) -> usize {
    MIN_TILE.div_ceil(h.max(w).max(1)).clamp(1, MAX_SCALE)
}

/// Font pixel size for text about tiles `tile_w` wide: 1 below 512 px, then one more per
/// 256 px, so a caption keeps at least 16 cells.
pub fn text_scale(tile_w: usize) -> usize {
    (tile_w / 256).max(1)
}

/// Where everything of a grid or strip goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    scale: usize,
    tile_w: usize,
    tile_h: usize,
    text_scale: usize,
    cols: usize,
    rows: usize,
    /// Top-left of the first tile (after a strip's label and header bands).
    left: usize,
    top: usize,
    /// Tile origin to the next one: tile plus border (plus caption band, in a grid).
    step_x: usize,
    step_y: usize,
    width: usize,
    height: usize,
}

impl Layout {
    fn tiles(h: usize, w: usize, style: &GridStyle) -> Result<(usize, usize, usize, usize)> {
        style.validate()?;
        let scale = style.scale_for(h, w);
        let tile_w = w * scale;
        Ok((scale, tile_w, h * scale, text_scale(tile_w)))
    }

    fn grid(n: usize, h: usize, w: usize, style: &GridStyle) -> Result<Self> {
        let (scale, tile_w, tile_h, text_scale) = Layout::tiles(h, w, style)?;
        let n = n.max(1);
        let cols = style
            .cols
            .unwrap_or_else(|| (n as f64).sqrt().ceil() as usize)
            .clamp(1, n);
        let rows = n.div_ceil(cols);
        let band = if style.captions {
            CAPTION_BAND * text_scale
        } else {
            0
        };
        Ok(Layout {
            scale,
            tile_w,
            tile_h,
            text_scale,
            cols,
            rows,
            left: 0,
            top: 0,
            step_x: tile_w + BORDER,
            step_y: tile_h + band + BORDER,
            width: cols * (tile_w + BORDER) - BORDER,
            height: rows * (tile_h + band + BORDER) - BORDER,
        })
    }

    fn strip(columns: usize, images: usize, h: usize, w: usize, style: &GridStyle) -> Result<Self> {
        let (scale, tile_w, tile_h, text_scale) = Layout::tiles(h, w, style)?;
        let (cols, rows) = (columns.max(1), 2 * images.max(1));
        let (left, top) = if style.captions {
            (
                LABEL_BAND * text_scale + BORDER,
                HEADER_BAND * text_scale + BORDER,
            )
        } else {
            (0, 0)
        };
        Ok(Layout {
            scale,
            tile_w,
            tile_h,
            text_scale,
            cols,
            rows,
            left,
            top,
            step_x: tile_w + BORDER,
            step_y: tile_h + BORDER,
            width: left + cols * (tile_w + BORDER) - BORDER,
            height: top + rows * (tile_h + BORDER) - BORDER,
        })
    }

    /// Checks that the canvas of this layout stays under [`MAX_CANVAS_BYTES`].
    fn check(&self, c: usize, what: &str) -> Result<()> {
        let bytes = self
            .width
            .saturating_mul(self.height)
            .saturating_mul(png_channels(c));
        if bytes > MAX_CANVAS_BYTES {
            return Err(Error::option(
                "grid.scale",
                format!(
                    "{what} would be {}×{} pixels at scale {} ({bytes} bytes, over the {} MiB limit); lower the scale or the number of images",
                    self.width,
                    self.height,
                    self.scale,
                    MAX_CANVAS_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    /// The empty (border-gray) canvas of this layout, after checking its size.
    fn canvas(&self, c: usize, what: &str) -> Result<Canvas> {
        self.check(c, what)?;
        Ok(Canvas::filled(
            self.width,
            self.height,
            png_channels(c),
            BORDER_GRAY,
        ))
    }

    /// Top-left of the tile in column `col`, row `row`.
    fn origin(&self, col: usize, row: usize) -> (usize, usize) {
        (self.left + col * self.step_x, self.top + row * self.step_y)
    }
}

/// Width × height of the grid [`grid`] draws for `n` images [C, H, W], checking `style` and
/// the size (so a front end can reject them before sampling).
pub fn grid_dimensions(
    n: usize,
    [c, h, w]: [usize; 3],
    style: &GridStyle,
) -> Result<(usize, usize)> {
    let layout = Layout::grid(n, h, w, style)?;
    layout.check(c, "the grid")?;
    Ok((layout.width, layout.height))
}

/// The `n` images [C, H, W] of `data` in a grid of `style`: tiles upscaled, a border of
/// [`BORDER_GRAY`] between them, and with `style.captions` each tile's caption under it
/// (`captions[i]`, or the index alone where `captions` has none).
pub fn grid(
    data: &[f32],
    n: usize,
    [c, h, w]: [usize; 3],
    style: &GridStyle,
    captions: &[Caption],
) -> Result<Canvas> {
    let layout = Layout::grid(n, h, w, style)?;
    let mut canvas = layout.canvas(c, "the grid")?;
    let len = c * h * w;
    let cells = layout.tile_w / (GLYPH * layout.text_scale);
    for i in 0..n {
        let (x, y) = layout.origin(i % layout.cols, i / layout.cols);
        canvas.draw(
            &data[i * len..(i + 1) * len],
            [c, h, w],
            (x, y),
            layout.scale,
        );
        if style.captions {
            let line = captions.get(i).map_or_else(
                || {
                    Caption {
                        subject: String::new(),
                        index: i,
                    }
                    .fit(cells)
                },
                |caption| caption.fit(cells),
            );
            canvas.draw_text_centred(
                &line,
                x,
                layout.tile_w,
                y + layout.tile_h + 2 * layout.text_scale,
                layout.text_scale,
            );
        }
    }
    Ok(canvas)
}

/// One image [C, H, W] at the model's resolution (a per-image PNG).
pub fn image(data: &[f32], c: usize, h: usize, w: usize) -> Canvas {
    let mut canvas = Canvas::new(w, h, png_channels(c));
    canvas.draw(data, [c, h, w], (0, 0), 1);
    canvas
}

/// Row labels of a trajectory strip: the sample after the step, and the x̂₀ it used.
pub const STRIP_LABELS: [&str; 2] = ["xₜ", "x\u{302}₀"];

/// The header of each strip column: `step k/N` (1-based, of the whole plan) and the noise
/// level the step starts from, the one its x̂₀ is predicted at: `t=…` for DDPM / DDIM (the
/// timestep) and score-SDE (continuous time), `σ=…` for the σ samplers and flow matching.
pub fn strip_headers(plan: &StepPlan, steps: &[usize]) -> Vec<[String; 2]> {
    steps
        .iter()
        .map(|&s| {
            let level = match plan.steps.get(s).map(|r| (r.timestep, r.levels)) {
                Some((t, NoiseLevels::Discrete { .. })) => format!("t={}", t.round()),
                Some((_, NoiseLevels::Continuous { time, .. })) => {
                    format!("t={}", significant(time))
                }
                Some((_, NoiseLevels::Sigma { sigma, .. } | NoiseLevels::Flow { sigma, .. })) => {
                    format!("σ={}", significant(sigma))
                }
                None => String::new(),
            };
            [format!("step {}/{}", s + 1, plan.steps.len()), level]
        })
        .collect()
}

/// `v` with three significant digits (at least none after the point).
fn significant(v: f64) -> String {
    let digits = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    format!("{v:.digits$}")
}

/// Width × height of the strip [`trajectory_strip`] draws, checking `style` and the size.
pub fn strip_dimensions(
    columns: usize,
    images: usize,
    [c, h, w]: [usize; 3],
    style: &GridStyle,
) -> Result<(usize, usize)> {
    let layout = Layout::strip(columns, images, h, w, style)?;
    layout.check(c, "the trajectory strip")?;
    Ok((layout.width, layout.height))
}

/// A trajectory strip: one column per snapshot, two rows per image (x_t above x̂₀), for the
/// first `images` images; with `style.captions` a header band with `headers[j]` (two lines,
/// see [`strip_headers`]) over column j and [`STRIP_LABELS`] left of the rows.
pub fn trajectory_strip(
    snapshots: &[(Vec<f32>, Vec<f32>)],
    images: usize,
    [c, h, w]: [usize; 3],
    headers: &[[String; 2]],
    style: &GridStyle,
) -> Result<Canvas> {
    let layout = Layout::strip(snapshots.len(), images, h, w, style)?;
    let mut canvas = layout.canvas(c, "the trajectory strip")?;
    let len = c * h * w;
    let ts = layout.text_scale;
    for (j, (x, x0)) in snapshots.iter().enumerate() {
        for i in 0..images {
            for (k, data) in [x, x0].into_iter().enumerate() {
                let (px, py) = layout.origin(j, 2 * i + k);
                canvas.draw(
                    &data[i * len..(i + 1) * len],
                    [c, h, w],
                    (px, py),
                    layout.scale,
                );
            }
        }
    }
    if style.captions {
        for (j, lines) in headers.iter().take(layout.cols).enumerate() {
            let (x, _) = layout.origin(j, 0);
            for (k, line) in lines.iter().enumerate() {
                let y = (2 + k * (GLYPH + 2)) * ts;
                canvas.draw_text_centred(line, x, layout.tile_w, y, ts);
            }
        }
        for row in 0..layout.rows {
            let (_, y) = layout.origin(0, row);
            let y = y + layout.tile_h.saturating_sub(GLYPH * ts) / 2;
            canvas.draw_text(STRIP_LABELS[row % 2], 2 * ts, y, ts, TEXT_GRAY);
        }
    }
    Ok(canvas)
}

/// Temp files created by this process so far: each gets its own number, so two outputs can
/// never share a temp name, whatever their targets.
static TEMP_FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The temp files of live [`AtomicFile`]s, for [`remove_temp_files`] to delete when the process
/// is interrupted (Ctrl-C, SIGTERM) and no destructor will run. Fixed slots of leaked C strings
/// swapped atomically: no lock and no allocation, so a signal handler can read them.
#[cfg(unix)]
mod live_temps {
    use std::ffi::{c_char, CString};
    use std::path::Path;
    use std::ptr::null_mut;
    use std::sync::atomic::{AtomicPtr, Ordering};

    /// More than a run ever has open at once (grid, tensor, strip, one --out-dir image).
    const SLOTS: usize = 64;
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: AtomicPtr<c_char> = AtomicPtr::new(null_mut());
    static LIVE: [AtomicPtr<c_char>; SLOTS] = [EMPTY; SLOTS];

    /// Records `path`; returns its slot (`None` when every slot is taken or the path holds a
    /// NUL byte: the file is then only removed by its destructor).
    pub fn register(path: &Path) -> Option<usize> {
        use std::os::unix::ffi::OsStrExt;
        let raw = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
        for (i, slot) in LIVE.iter().enumerate() {
            if slot
                .compare_exchange(null_mut(), raw, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(i);
            }
        }
        // SAFETY: `raw` came from `CString::into_raw` above and was stored nowhere.
        drop(unsafe { CString::from_raw(raw) });
        None
    }

    /// Forgets slot `i` (the file was renamed or removed).
    pub fn unregister(i: usize) {
        let raw = LIVE[i].swap(null_mut(), Ordering::AcqRel);
        if !raw.is_null() {
            // SAFETY: every non-null slot holds a pointer from `CString::into_raw`, and the swap
            // took it out, so it is freed once.
            drop(unsafe { CString::from_raw(raw) });
        }
    }

    /// Unlinks every recorded temp file. Only async-signal-safe calls (`unlink`).
    pub fn remove_all() {
        for slot in &LIVE {
            let raw = slot.load(Ordering::Acquire);
            if !raw.is_null() {
                // SAFETY: a non-null slot holds a valid NUL-terminated path (see `register`).
                unsafe { libc::unlink(raw) };
            }
        }
    }
}

/// Elsewhere no signal handler runs: temp files are only removed by their destructors.
#[cfg(not(unix))]
mod live_temps {
    pub fn register(_: &std::path::Path) -> Option<usize> {
        None
    }
    pub fn unregister(_: usize) {}
    pub fn remove_all() {}
}

/// Deletes the temp files of every [`AtomicFile`] not yet committed or dropped. For a signal
/// handler (the binary's Ctrl-C handling): it only calls `unlink`, so it is async-signal-safe.
pub fn remove_temp_files() {
    live_temps::remove_all();
}

/// Whether `path` is spelled as a directory: it ends with a path separator (`out/`) or with
/// `.` / `..`, so it can never be a file.
fn names_a_directory(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy();
    text.ends_with(std::path::MAIN_SEPARATOR)
        || text.ends_with('/')
        || matches!(
            path.components().next_back(),
            Some(std::path::Component::CurDir | std::path::Component::ParentDir)
        )
        || path.file_name().is_none()
}

/// Checks that `target` can be an output file: not a directory, nor spelled as one (`out/`),
/// in a directory that exists. Creates nothing.
pub fn check_output_path(target: &Path) -> Result<()> {
    if target.as_os_str().is_empty() {
        return Err(Error::invalid(
            "output file",
            "the path is empty, expected a file path",
        ));
    }
    if target.is_dir() || names_a_directory(target) {
        return Err(Error::invalid(
            "output file",
            format!("{} is a directory, expected a file path", target.display()),
        ));
    }
    let dir = parent_dir(target);
    if !dir.is_dir() {
        return Err(Error::invalid(
            "output file",
            format!(
                "cannot write {}: directory {} does not exist",
                target.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Checks that `dir` can become an output directory without creating it: it is a directory
/// already, or the nearest part of it that exists is one (so `create_dir_all` can make the rest).
pub fn check_output_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid("output file", "the directory path is empty"));
    }
    let mut existing = dir;
    loop {
        if existing.exists() {
            break;
        }
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => return Ok(()),
        }
    }
    if !existing.is_dir() {
        return Err(Error::invalid(
            "output file",
            format!(
                "cannot use {} as a directory: {} exists and is not a directory",
                dir.display(),
                existing.display()
            ),
        ));
    }
    Ok(())
}

/// The directory a file `target` is written in (`.` for a bare name).
fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `path` made absolute against the current directory, with its directory part resolved
/// through symlinks where it exists, so two spellings of one file compare equal.
pub fn normalized_path(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    if let Ok(real) = absolute.canonicalize() {
        return real;
    }
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => normalized_path(parent).join(name),
        _ => absolute,
    }
}

/// A file being written atomically: bytes go to a temp file beside `target`, which replaces
/// `target` on [`AtomicFile::commit`]. The temp file is removed if the file is dropped
/// uncommitted and when writing or renaming fails, so no failure leaves it behind.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<std::fs::File>,
    /// The temp file's slot in the interrupt-cleanup list.
    slot: Option<usize>,
}

impl AtomicFile {
    /// Creates the temp file now, so an unwritable destination fails before any work is done.
    pub fn create(target: &Path) -> Result<Self> {
        check_output_path(target)?;
        let dir = parent_dir(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let number = TEMP_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}.{number}.tmp", std::process::id()));
        // Recorded before it exists, so an interrupt can never miss it.
        let slot = live_temps::register(&temp);
        let file = match std::fs::File::create(&temp) {
            Ok(file) => file,
            Err(e) => {
                if let Some(i) = slot {
                    live_temps::unregister(i);
                }
                return Err(Error::invalid(
                    "output file",
                    format!("cannot write {}: {e}", target.display()),
                ));
            }
        };
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            file: Some(file),
            slot,
        })
    }

    /// Writes `bytes`, syncs and renames over the target. On failure the temp file is removed
    /// and the target left as it was.
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::invalid(
                "output file",
                format!("{} already written", self.target.display()),
            ));
        };
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&self.temp, e));
        drop(file);
        let renamed = written.and_then(|()| {
            std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))
        });
        if renamed.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        if let Some(i) = self.slot.take() {
            live_temps::unregister(i);
        }
        renamed
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temp file the bytes go to before the rename.
    pub fn temp(&self) -> &Path {
        &self.temp
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.temp);
        }
        if let Some(i) = self.slot.take() {
            live_temps::unregister(i);
        }
    }
}

/// safetensors bytes holding the f32 tensors `(name, shape, values)` and the string pairs
/// `metadata` (the header's `__metadata__`; none when empty).
pub fn tensor_file(
    tensors: &[(&str, &[usize], &[f32])],
    metadata: &[(&str, String)],
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|&(name, shape, data)| {
            let bytes: &[u8] = bytemuck::cast_slice(data);
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), bytes)
                .map(|view| (name, view))
                .map_err(|e| Error::invalid("safetensors", e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    });
    safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::invalid("safetensors", e.to_string()))
}

/// The one f32 tensor of a safetensors file, with the file's `__metadata__`.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// The header's `__metadata__` string pairs (empty without one).
    pub metadata: BTreeMap<String, String>,
}

/// Reads the one tensor of a safetensors file (`--init-noise`) as f32 (F32, or F16 / BF16
/// converted exactly): its shape, values and metadata. The file is validated by the same strict
/// parser as model weights ([`Weights`]), and a non-finite value is refused.
pub fn read_single_tensor(path: &Path) -> Result<SingleTensor> {
    if path.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, expected a safetensors tensor file",
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    single_tensor_from_bytes(path, &bytes)
}

/// [`read_single_tensor`] on a file's bytes already in memory; `path` names it in messages.
pub fn single_tensor_from_bytes(path: &Path, bytes: &[u8]) -> Result<SingleTensor> {
    let weights = Weights::from_bytes(path, bytes)?;
    let names: Vec<&str> = weights.keys().collect();
    let [name] = names.as_slice() else {
        return Err(Error::SafeTensors {
            path: path.to_path_buf(),
            message: format!(
                "expected exactly one tensor, found {} ({})",
                names.len(),
                names.join(", ")
            ),
        });
    };
    let shape = weights.shape_of(name).unwrap_or_default().to_vec();
    let values = weights.get(name, &shape)?;
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::SafeTensors {
            path: path.to_path_buf(),
            message: format!("tensor {name:?} holds a non-finite value at element {bad}"),
        });
    }
    Ok(SingleTensor {
        shape,
        values,
        metadata: weights.metadata().clone(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{PlanOptions, SamplerSettings, SchedulerKind};

    /// Pixels of `canvas` in the rectangle [x0, x1) × [y0, y1) equal to `gray` (first channel).
    fn count(
        canvas: &Canvas,
        (x0, x1): (usize, usize),
        (y0, y1): (usize, usize),
        gray: u8,
    ) -> usize {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| canvas.pixel(x, y)[0] == gray)
            .count()
    }

    /// `n` images 1×h×w with values in [0, 0.5] (quantised to 128..=191: never the border or
    /// text gray), image i's pixel p = (i·h·w + p) mod 64 / 128.
    fn images(n: usize, h: usize, w: usize) -> Vec<f32> {
        (0..n * h * w).map(|k| (k % 64) as f32 / 128.0).collect()
    }

    /// Files in `dir` named like `AtomicFile` temp files.
    fn temp_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn atomic_files_never_share_a_temp_and_a_failed_rename_removes_it() {
        let tmp = tempfile::TempDir::new().unwrap();
        let target = tmp.path().join("out.png");
        let a = AtomicFile::create(&target).unwrap();
        let b = AtomicFile::create(&target).unwrap();
        assert_ne!(a.temp(), b.temp());
        drop(b);
        assert_eq!(temp_files(tmp.path()).len(), 1);
        // The target turns into a non-empty directory meanwhile: the rename fails.
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), "x").unwrap();
        let err = a.commit(b"bytes").unwrap_err();
        assert!(err.to_string().contains("out.png"), "{err}");
        assert!(
            temp_files(tmp.path()).is_empty(),
            "{:?}",
            temp_files(tmp.path())
        );
        assert!(target.join("keep").is_file());
    }

    #[test]
    fn output_paths_spelled_as_directories_are_refused() {
        let tmp = tempfile::TempDir::new().unwrap();
        for path in ["new/", "new/..", "."] {
            let err = check_output_path(&tmp.path().join(path)).unwrap_err();
            assert!(err.to_string().contains("is a directory"), "{path}: {err}");
        }
        assert!(AtomicFile::create(&tmp.path().join("x/")).is_err());
        assert!(temp_files(tmp.path()).is_empty());
        check_output_path(&tmp.path().join("ok.png")).unwrap();
        // An out-dir may not exist yet, but what exists of it must be a directory.
        check_output_dir(&tmp.path().join("a/b/c")).unwrap();
        std::fs::write(tmp.path().join("f"), "x").unwrap();
        let err = check_output_dir(&tmp.path().join("f/b")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(!tmp.path().join("a").exists());
    }

    #[test]
    fn image_format_comes_from_the_extension() {
        let format = |p: &str| ImageFormat::from_path(Path::new(p));
        assert_eq!(format("a.png").unwrap(), ImageFormat::Png);
        assert_eq!(format("a.PNG").unwrap(), ImageFormat::Png);
        assert_eq!(format("a.jpg").unwrap(), ImageFormat::Jpeg);
        assert_eq!(format("dir.x/a.jpeg").unwrap(), ImageFormat::Jpeg);
        assert_eq!(format("a.webp").unwrap(), ImageFormat::WebP);
        assert!(format("a.gif").unwrap_err().to_string().contains(".gif"));
        assert!(format("a")
            .unwrap_err()
            .to_string()
            .contains("no file extension"));
        let canvas = image(&images(1, 5, 7), 1, 5, 7);
        let decode = |f: ImageFormat, want: image::ImageFormat| {
            let bytes = canvas.encode(f).unwrap();
            let back = image::load_from_memory_with_format(&bytes, want).unwrap();
            assert_eq!((back.width(), back.height()), (7, 5), "{f:?}");
            back.to_luma8()
        };
        // PNG and lossless WebP give the pixels back exactly; JPEG within its loss.
        let png = decode(ImageFormat::Png, image::ImageFormat::Png);
        assert_eq!(png.into_raw(), canvas.pixels);
        let webp = decode(ImageFormat::WebP, image::ImageFormat::WebP);
        assert_eq!(webp.into_raw(), canvas.pixels);
        let jpeg = decode(ImageFormat::Jpeg, image::ImageFormat::Jpeg);
        let worst = jpeg
            .into_raw()
            .iter()
            .zip(&canvas.pixels)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 8, "JPEG off by {worst}");
    }

    #[test]
    fn auto_scale_makes_tiles_128_px_and_leaves_large_models() {
        for (side, scale) in [
            (28, 5),
            (32, 4),
            (33, 4),
            (43, 3),
            (64, 2),
            (65, 2),
            (96, 2),
            (127, 2),
            (128, 1),
            (256, 1),
            (512, 1),
            (1, MAX_SCALE),
        ] {
            assert_eq!(auto_scale(side, side), scale, "{side} px");
        }
        // The larger side decides.
        assert_eq!(auto_scale(28, 56), 3);
        assert_eq!(GridStyle::default().scale_for(28, 28), 5);
        let fixed = GridStyle {
            scale: Some(1),
            ..GridStyle::default()
        };
        assert_eq!(fixed.scale_for(28, 28), 1);
    }

    #[test]
    fn bad_styles_name_their_field() {
        let field = |style: GridStyle| match style.validate() {
            Err(Error::InvalidOption { field, message }) => (field, message),
            other => panic!("{style:?}: {other:?}"),
        };
        let scale = |k| GridStyle {
            scale: Some(k),
            ..GridStyle::default()
        };
        assert_eq!(
            field(scale(0)),
            ("grid.scale", "must be 1 to 32, got 0".into())
        );
        assert_eq!(field(scale(33)).0, "grid.scale");
        let cols = GridStyle {
            cols: Some(0),
            ..GridStyle::default()
        };
        assert_eq!(field(cols).0, "grid.cols");
        // 4096 images of 256 px at scale 32 would take terabytes: refused before allocating.
        let err = grid_dimensions(4096, [3, 256, 256], &scale(32)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption { field: "grid.scale", message } if message.contains("MiB limit")),
            "{err}"
        );
        assert!(grid_dimensions(4096, [3, 256, 256], &scale(1)).is_ok());
    }

    #[test]
    fn text_is_cut_with_an_ellipsis_and_combining_marks_take_no_cell() {
        assert_eq!(text_cells("x\u{302}₀"), 2);
        assert_eq!(text_cells(STRIP_LABELS[0]), 2);
        assert_eq!(truncate("ankle boot", 10), "ankle boot");
        assert_eq!(truncate("ankle boot", 9), "ankle bo…");
        // No space before the ellipsis.
        assert_eq!(truncate("ankle boot", 7), "ankle…");
        assert_eq!(truncate("ankle boot", 1), "…");
        assert_eq!(truncate("ankle boot", 0), "");
        assert_eq!(truncate("x\u{302}₀yz", 3), "x\u{302}₀…");
        // Glyphs: font8x8's Latin and Greek, ours, `?` for the rest.
        assert_ne!(glyph('σ'), glyph('?'));
        assert_ne!(glyph('é'), glyph('?'));
        assert_ne!(glyph('₀'), glyph('0'));
        assert_eq!(glyph('漢'), glyph('?'));
        assert_ne!(glyph('…'), [0; 8]);
    }

    #[test]
    fn captions_name_the_class_or_prompt_and_the_index() {
        let names = BTreeMap::from([(0, "cat".to_owned()), (1, "dog".to_owned())]);
        let labels = [0, 1, 4];
        let class = CaptionSource::Class {
            labels: &labels,
            names: &names,
        }
        .captions(4);
        let lines: Vec<String> = class.iter().map(|c| c.fit(16)).collect();
        assert_eq!(lines, ["cat #0", "dog #1", "class 4 #2", "cat #3"]);
        let none: Vec<String> = CaptionSource::None
            .captions(2)
            .iter()
            .map(|c| c.fit(16))
            .collect();
        assert_eq!(none, ["#0", "#1"]);

        // A prompt is cut before the index, which always shows.
        let prompts = ["a photograph of an astronaut riding a horse".to_owned()];
        let prompt = CaptionSource::Prompt(&prompts).captions(2);
        assert_eq!(prompt[1].subject, prompts[0]);
        assert_eq!(prompt[1].fit(16), "a photograph… #1");
        assert_eq!(text_cells(&prompt[1].fit(16)), 16);
        assert_eq!(prompt[0].fit(100), format!("{} #0", prompts[0]));
        // Too narrow for a letter of the prompt: the whole line is cut.
        assert_eq!(prompt[0].fit(4), "a p…");
    }

    #[test]
    fn class_names_prefer_the_longest_singular_name() {
        let classes = ClassNames {
            names: [
                ("t-shirt/top", 0),
                ("top", 0),
                ("sneaker", 7),
                ("sneakers", 7),
                ("ankle boot", 9),
                ("ankle_boot", 9),
                ("boots", 9),
                ("null", 10),
                ("unconditional", 10),
            ]
            .into_iter()
            .map(|(n, l)| (n.to_owned(), l))
            .collect(),
            null: Some(10),
        };
        let names = class_display_names(&classes);
        let expected: BTreeMap<usize, String> = [
            (0, "t-shirt/top"),
            (7, "sneaker"),
            (9, "ankle boot"),
            (10, "unconditional"),
        ]
        .into_iter()
        .map(|(l, n)| (l, n.to_owned()))
        .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn grid_upscales_borders_and_captions_each_tile() {
        let (n, h, w) = (3, 16, 16);
        let data = images(n, h, w);
        let style = GridStyle {
            scale: Some(2),
            cols: None,
            captions: true,
        };
        let captions = CaptionSource::None.captions(n);
        let grid = grid(&data, n, [1, h, w], &style, &captions).unwrap();
        // 2 columns (⌈√3⌉), 2 rows; 32 px tiles, 12 px caption bands, 2 px borders.
        let (tile, band) = (32, CAPTION_BAND);
        assert_eq!(
            (grid.width, grid.height),
            (2 * tile + BORDER, 2 * (tile + band) + BORDER)
        );
        assert_eq!(
            grid_dimensions(n, [1, h, w], &style).unwrap(),
            (grid.width, grid.height)
        );
        // Nearest neighbour: every tile pixel is its source pixel.
        for i in 0..n {
            let (x0, y0) = ((i % 2) * (tile + BORDER), (i / 2) * (tile + band + BORDER));
            for y in 0..tile {
                for x in 0..tile {
                    let want = quantize(data[i * h * w + (y / 2) * w + x / 2]);
                    assert_eq!(
                        grid.pixel(x0 + x, y0 + y)[0],
                        want,
                        "tile {i} at ({x}, {y})"
                    );
                }
            }
        }
        // The vertical border, all the way down, and the horizontal one between the rows.
        let border_px = BORDER * grid.height;
        assert_eq!(
            count(&grid, (tile, tile + BORDER), (0, grid.height), BORDER_GRAY),
            border_px
        );
        let row_end = tile + band;
        assert_eq!(
            count(
                &grid,
                (0, grid.width),
                (row_end, row_end + BORDER),
                BORDER_GRAY
            ),
            BORDER * grid.width
        );
        // Each caption is "#i", centred under its tile; the empty fourth cell has none.
        for i in 0..n {
            let (x0, y0) = (
                (i % 2) * (tile + BORDER),
                (i / 2) * (tile + band + BORDER) + tile,
            );
            let mut want = Canvas::filled(tile, band, 1, BORDER_GRAY);
            want.draw_text(&format!("#{i}"), (tile - 2 * GLYPH) / 2, 2, 1, TEXT_GRAY);
            assert!(count(&want, (0, tile), (0, band), TEXT_GRAY) > 10);
            for y in 0..band {
                for x in 0..tile {
                    assert_eq!(
                        grid.pixel(x0 + x, y0 + y),
                        want.pixel(x, y),
                        "caption {i} ({x}, {y})"
                    );
                }
            }
        }
        let (x3, y3) = (tile + BORDER, tile + band + BORDER);
        assert_eq!(
            count(&grid, (x3, x3 + tile), (y3, y3 + tile + band), BORDER_GRAY),
            tile * (tile + band)
        );

        // Without captions: no bands and no text anywhere.
        let plain = GridStyle {
            captions: false,
            cols: Some(3),
            ..style
        };
        let bare = super::grid(&data, n, [1, h, w], &plain, &captions).unwrap();
        assert_eq!((bare.width, bare.height), (3 * tile + 2 * BORDER, tile));
        assert_eq!(
            count(&bare, (0, bare.width), (0, bare.height), TEXT_GRAY),
            0
        );
        // More columns than images: one row.
        let wide = GridStyle {
            cols: Some(10),
            ..plain
        };
        assert_eq!(
            grid_dimensions(n, [1, h, w], &wide).unwrap(),
            (bare.width, bare.height)
        );
    }

    #[test]
    fn per_image_canvas_stays_at_model_resolution() {
        let data = images(1, 5, 7);
        let one = image(&data, 1, 5, 7);
        assert_eq!((one.width, one.height, one.channels), (7, 5, 1));
        assert_eq!(one.pixel(6, 4)[0], quantize(data[34]));
        let rgb = image(&images(1, 5, 7).repeat(3), 3, 5, 7);
        assert_eq!(rgb.channels, 3);
    }

    #[test]
    fn strip_has_a_step_header_and_row_labels() {
        let (images_n, h, w) = (2, 16, 16);
        let len = images_n * h * w;
        let snapshots: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
            .map(|j| (vec![0.25 + 0.01 * j as f32; len], vec![0.5; len]))
            .collect();
        let headers = vec![
            ["step 1/9".to_owned(), "t=900".to_owned()],
            ["step 5/9".to_owned(), "t=500".to_owned()],
            ["step 9/9".to_owned(), "t=100".to_owned()],
        ];
        let style = GridStyle {
            scale: Some(8),
            cols: None,
            captions: true,
        };
        let strip = trajectory_strip(&snapshots, images_n, [1, h, w], &headers, &style).unwrap();
        let tile = 128;
        let (left, top) = (LABEL_BAND + BORDER, HEADER_BAND + BORDER);
        let rows = 2 * images_n;
        assert_eq!(
            (strip.width, strip.height),
            (
                left + 3 * (tile + BORDER) - BORDER,
                top + rows * (tile + BORDER) - BORDER
            )
        );
        assert_eq!(
            strip_dimensions(3, images_n, [1, h, w], &style).unwrap(),
            (strip.width, strip.height)
        );
        // The header over column j is its two lines, centred.
        for (j, lines) in headers.iter().enumerate() {
            let x0 = left + j * (tile + BORDER);
            let mut want = Canvas::filled(tile, HEADER_BAND, 1, BORDER_GRAY);
            for (k, line) in lines.iter().enumerate() {
                let x = (tile - text_cells(line) * GLYPH) / 2;
                want.draw_text(line, x, 2 + k * (GLYPH + 2), 1, TEXT_GRAY);
            }
            for y in 0..HEADER_BAND {
                for x in 0..tile {
                    assert_eq!(
                        strip.pixel(x0 + x, y),
                        want.pixel(x, y),
                        "header {j} ({x}, {y})"
                    );
                }
            }
        }
        // Each row has its label (xₜ, x̂₀ alternating) beside it, and its tiles.
        for row in 0..rows {
            let y0 = top + row * (tile + BORDER);
            let mut want = Canvas::filled(LABEL_BAND, tile, 1, BORDER_GRAY);
            want.draw_text(STRIP_LABELS[row % 2], 2, (tile - GLYPH) / 2, 1, TEXT_GRAY);
            assert!(count(&want, (0, LABEL_BAND), (0, tile), TEXT_GRAY) > 10);
            for y in 0..tile {
                for x in 0..LABEL_BAND {
                    assert_eq!(
                        strip.pixel(x, y0 + y),
                        want.pixel(x, y),
                        "label {row} ({x}, {y})"
                    );
                }
            }
            for j in 0..3 {
                let x0 = left + j * (tile + BORDER);
                let value = if row % 2 == 0 {
                    0.25 + 0.01 * j as f32
                } else {
                    0.5
                };
                assert_eq!(strip.pixel(x0 + 5, y0 + 7)[0], quantize(value));
            }
        }
        assert_ne!(STRIP_LABELS[0], STRIP_LABELS[1]);

        // Without captions: tiles and borders only, the old layout.
        let bare_style = GridStyle {
            scale: Some(1),
            captions: false,
            ..style
        };
        let bare =
            trajectory_strip(&snapshots, images_n, [1, h, w], &headers, &bare_style).unwrap();
        assert_eq!(
            (bare.width, bare.height),
            (3 * w + 2 * BORDER, rows * h + (rows - 1) * BORDER)
        );
        assert_eq!(
            count(&bare, (0, bare.width), (0, bare.height), TEXT_GRAY),
            0
        );
    }

    #[test]
    fn strip_headers_give_the_step_and_its_noise_level() {
        let headers = |kind| {
            let plan = StepPlan::from_settings(
                &SamplerSettings::defaults(kind),
                4,
                &PlanOptions::default(),
            )
            .unwrap();
            strip_headers(&plan, &[0, 3])
        };
        let ddim = headers(SchedulerKind::Ddim);
        assert_eq!(ddim[0], ["step 1/4", "t=750"]);
        assert_eq!(ddim[1], ["step 4/4", "t=0"]);
        let euler = headers(SchedulerKind::Euler);
        assert_eq!(euler[0][0], "step 1/4");
        assert!(euler[0][1].starts_with("σ=157"), "{:?}", euler[0]);
        let flow = headers(SchedulerKind::FlowMatchEuler);
        assert_eq!(flow[0][1], "σ=1.00");
        let sde = headers(SchedulerKind::ScoreSdeVp);
        assert_eq!(sde[0][1], "t=1.00");
        assert_eq!(significant(0.02917), "0.029");
        assert_eq!(significant(14.61), "14.6");
    }
}
