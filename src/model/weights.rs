//! Weight sources and the prefixed view every block loads through (candle-nn's `VarBuilder`).
//!
//! - [`Weights`]: a fully validated safetensors checkpoint — memory-mapped from a file (the
//!   format diffusers writes as `diffusion_pytorch_model.safetensors` via `save_pretrained`) or
//!   held in memory ([`Weights::from_tensors`]) — that hands out f32 tensors by key and tracks
//!   which ones were used.
//! - [`WeightSource`]: a checkpoint, or deterministic random initialisation from a seed (the
//!   bench's presets), behind one getter.
//! - [`VarBuilder`]: a prefixed view of a source (`vb.pp("norm1").get("weight", ..)` reads
//!   `down_blocks.0.resnets.1.norm1.weight`), which checks shapes and uploads to the GPU. The
//!   weight key is the field path of the module tree.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Tensor};

/// Largest header we accept (the safetensors crate's own limit), so a corrupt length cannot make
/// us parse hundreds of megabytes as JSON.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// How many similar keys a missing-tensor hint lists.
const HINT_KEYS: usize = 3;

/// How many unused keys `finish` lists before eliding the rest.
const UNUSED_KEYS_SHOWN: usize = 10;

/// One tensor's header entry, validated against the data section.
#[derive(Debug, Clone)]
struct TensorInfo {
    dtype: String,
    shape: Vec<usize>,
    /// Byte range inside the data section.
    begin: usize,
    end: usize,
}

/// A safetensors file opened for loading. Every fetched key is recorded so [`Weights::finish`]
/// can report tensors the model never used (a sign that config.json does not match the weights).
#[derive(Debug)]
pub struct Weights {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section within the file (`8 + header length`).
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    /// The header's `__metadata__` string pairs (empty without one).
    metadata: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Weights {
    /// Memory-maps and validates a safetensors file: header length, header JSON, every tensor's
    /// dtype/shape/offsets against the data section, and that no two tensors overlap.
    pub fn open(path: &Path) -> Result<Weights> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingFile {
                    path: path.to_path_buf(),
                    what: "diffusion_pytorch_model.safetensors (the weights)".to_owned(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            // Mapping a directory fails with "No such device", which blames the wrong thing.
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "is a directory, expected a safetensors weights file",
                ),
            ));
        }
        let file_len = meta.len();
        let bad = |message: String| Error::SafeTensors {
            path: path.to_path_buf(),
            message,
        };
        if file_len < 8 {
            return Err(bad(format!(
                "the file is {file_len} bytes, shorter than the 8 byte header length prefix \
                 (empty or truncated file?)"
            )));
        }
        // SAFETY: the map is only ever read, and every byte we use is copied out (into the
        // `Vec<f32>` each `get` returns) while loading. The file is opened read-only; as with any
        // mmap, another process truncating it meanwhile is outside what we can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bytes: &[u8] = &mmap;
        let header = parse(bytes).map_err(bad)?;
        Ok(Weights {
            path: path.to_path_buf(),
            mmap,
            data_start: header.data_start,
            tensors: header.tensors,
            metadata: header.metadata,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// Weights held in memory rather than a file (the bench's random-weight presets): `bytes` is
    /// a whole safetensors file, validated exactly as [`Weights::open`] validates one, and
    /// `label` stands for the file name in error messages. The bytes are copied into an
    /// anonymous map so the rest of the type is unchanged.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: &[u8]) -> Result<Weights> {
        let path = label.into();
        let mut anon =
            memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(|e| Error::io(&path, e))?;
        anon[..bytes.len()].copy_from_slice(bytes);
        let mmap = anon.make_read_only().map_err(|e| Error::io(&path, e))?;
        let header = parse(&mmap[..bytes.len()]).map_err(|message| Error::SafeTensors {
            path: path.clone(),
            message,
        })?;
        Ok(Weights {
            path,
            mmap,
            data_start: header.data_start,
            tensors: header.tensors,
            metadata: header.metadata,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// F32 tensors held in memory, `(key, shape, values)`, as a checkpoint labelled `label` in
    /// messages: written as a safetensors image and validated like a file.
    pub fn from_tensors(
        label: impl Into<PathBuf>,
        tensors: &[(String, Vec<usize>, Vec<f32>)],
    ) -> Result<Weights> {
        let label = label.into();
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (key, shape, values) in tensors {
            let numel: usize = shape.iter().product();
            if numel != values.len() {
                return Err(Error::invalid(
                    format!("tensor {key:?}"),
                    format!("{} values for shape {shape:?}", values.len()),
                ));
            }
            header.insert(
                key.clone(),
                serde_json::json!({
                    "dtype": "F32",
                    "shape": shape,
                    "data_offsets": [offset, offset + 4 * numel],
                }),
            );
            offset += 4 * numel;
        }
        let mut header_text = serde_json::Value::Object(header).to_string();
        // The data section starts 8-byte aligned, as safetensors writers do.
        while !(8 + header_text.len()).is_multiple_of(8) {
            header_text.push(' ');
        }
        let mut bytes = Vec::with_capacity(8 + header_text.len() + offset);
        bytes.extend_from_slice(&(header_text.len() as u64).to_le_bytes());
        bytes.extend_from_slice(header_text.as_bytes());
        for (_, _, values) in tensors {
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        Weights::from_bytes(label, &bytes)
    }

    /// The file these weights were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header's `__metadata__` string pairs (empty without one).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Whether the file holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// All tensor keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// The safetensors dtype name (`"F32"`, `"F16"`, ...) of `key`, if present.
    pub fn dtype_of(&self, key: &str) -> Option<&str> {
        self.tensors.get(key).map(|t| t.dtype.as_str())
    }

    /// The shape of `key`, if present.
    pub fn shape_of(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    /// Number of tensors in the file.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total bytes of tensor data (as stored, before conversion to f32).
    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.end - t.begin) as u64)
            .sum()
    }

    /// Bytes every tensor takes as f32 (what the GPU holds once they are loaded).
    pub fn f32_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| t.shape.iter().map(|&d| d as u64).product::<u64>() * 4)
            .sum()
    }

    /// Reads `key` as f32 (converting F16/BF16), checking it has `expected_shape`, and marks it
    /// used.
    pub fn get(&self, key: &str, expected_shape: &[usize]) -> Result<Vec<f32>> {
        let Some(info) = self.tensors.get(key) else {
            return Err(Error::MissingTensor {
                path: self.path.clone(),
                key: key.to_owned(),
                hint: self.similar_keys_hint(key),
            });
        };
        if info.shape != expected_shape {
            return Err(Error::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_owned(),
                expected: expected_shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        let unsupported = || Error::UnsupportedDtype {
            path: self.path.clone(),
            key: key.to_owned(),
            dtype: info.dtype.clone(),
        };
        let raw = self
            .mmap
            .get(self.data_start + info.begin..self.data_start + info.end)
            .ok_or_else(|| Error::SafeTensors {
                path: self.path.clone(),
                message: format!("tensor {key:?} lies outside the mapped file"),
            })?;
        let values: Vec<f32> = match info.dtype.as_str() {
            "F32" => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            "BF16" => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => return Err(unsupported()),
        };
        // A NaN or infinite weight would turn every image black; name it at load instead.
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::SafeTensors {
                path: self.path.clone(),
                message: format!(
                    "tensor {key:?} holds a non-finite value ({}) at element {at} of {}; the \
                     checkpoint is corrupt or was saved after training diverged",
                    values[at],
                    values.len()
                ),
            });
        }
        self.used.borrow_mut().insert(key.to_owned());
        Ok(values)
    }

    /// Reads the integer tensor `key` (I64 or I32, as index buffers such as CLIP's
    /// `position_ids` are stored), checking it has `expected_shape`, and marks it used.
    pub fn get_i64(&self, key: &str, expected_shape: &[usize]) -> Result<Vec<i64>> {
        let Some(info) = self.tensors.get(key) else {
            return Err(Error::MissingTensor {
                path: self.path.clone(),
                key: key.to_owned(),
                hint: self.similar_keys_hint(key),
            });
        };
        if info.shape != expected_shape {
            return Err(Error::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_owned(),
                expected: expected_shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        let raw = self
            .mmap
            .get(self.data_start + info.begin..self.data_start + info.end)
            .ok_or_else(|| Error::SafeTensors {
                path: self.path.clone(),
                message: format!("tensor {key:?} lies outside the mapped file"),
            })?;
        let values: Vec<i64> = match info.dtype.as_str() {
            "I64" => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            "I32" => raw
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            other => {
                return Err(Error::Config {
                    path: self.path.clone(),
                    key: key.to_owned(),
                    message: format!("has dtype {other}; an index tensor must be I64 or I32"),
                })
            }
        };
        self.used.borrow_mut().insert(key.to_owned());
        Ok(values)
    }

    /// Like [`Weights::get`] for the first of `keys` the file holds (for names that changed
    /// between diffusers versions, e.g. `to_q` / `query`, `to_out.0` / `proj_attn`).
    pub fn get_any(&self, keys: &[&str], expected_shape: &[usize]) -> Result<Vec<f32>> {
        if let Some(key) = keys.iter().find(|k| self.contains(k)) {
            return self.get(key, expected_shape);
        }
        let Some((first, rest)) = keys.split_first() else {
            return Err(Error::invalid("Weights::get_any", "called with no keys"));
        };
        let mut hint = String::new();
        if !rest.is_empty() {
            let tried: Vec<String> = rest.iter().map(|k| format!("{k:?}")).collect();
            hint.push_str(&format!(" (also tried: {})", tried.join(", ")));
        }
        hint.push_str(&self.similar_keys_hint(first));
        Err(Error::MissingTensor {
            path: self.path.clone(),
            key: (*first).to_owned(),
            hint,
        })
    }

    /// Fails with [`Error::UnusedTensors`] if some tensor was never fetched.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<&str> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .map(String::as_str)
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let mut shown: Vec<String> = unused
            .iter()
            .take(UNUSED_KEYS_SHOWN)
            .map(|k| format!("{k:?}"))
            .collect();
        if unused.len() > UNUSED_KEYS_SHOWN {
            shown.push("…".to_owned());
        }
        Err(Error::UnusedTensors {
            path: self.path.clone(),
            count: unused.len(),
            keys: shown.join(", "),
        })
    }

    /// ", similar keys in the file: ..." listing the keys closest to `key`.
    fn similar_keys_hint(&self, key: &str) -> String {
        if self.tensors.is_empty() {
            return "; the file holds no tensors".to_owned();
        }
        let mut scored: Vec<(usize, usize, &str)> = self
            .tensors
            .keys()
            .map(|k| (common_prefix_len(key, k), edit_distance(key, k), k.as_str()))
            .collect();
        // Longest shared prefix first, then fewest edits.
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
        let names: Vec<String> = scored
            .iter()
            .take(HINT_KEYS)
            .map(|(_, _, k)| format!("{k:?}"))
            .collect();
        format!(", similar keys in the file: {}", names.join(", "))
    }
}

/// Parses and validates a whole safetensors file as strictly as the reference implementation:
/// header length, UTF-8 JSON object, no duplicate key, `__metadata__` of strings, every tensor's
/// dtype/shape/offsets against the data section, no overlap, no unreferenced byte between
/// tensors and none after the last. Messages name the tensor at fault and the numbers involved.
fn parse(bytes: &[u8]) -> std::result::Result<Header, String> {
    let file_len = bytes.len();
    let Some(prefix) = bytes.get(..8) else {
        return Err(format!(
            "the file is {file_len} bytes, shorter than the 8 byte header length prefix"
        ));
    };
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(prefix);
    let header_len = u64::from_le_bytes(len_bytes);
    let available = (file_len - 8) as u64;
    if header_len > available {
        return Err(format!(
            "the header length prefix says {header_len} bytes but only {available} bytes follow it \
             in the {file_len} byte file (truncated file, or not a safetensors file?)"
        ));
    }
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "the header is {header_len} bytes, more than the {MAX_HEADER_BYTES} byte limit"
        ));
    }
    if header_len == 0 {
        return Err("the header length prefix is 0; a header JSON object is required".to_owned());
    }
    // header_len <= available < usize::MAX, so these conversions and sums cannot overflow.
    let data_start = 8 + header_len as usize;
    let header_bytes = &bytes[8..data_start];
    let header_text = std::str::from_utf8(header_bytes)
        .map_err(|e| format!("the {header_len} byte header is not UTF-8 text: {e}"))?;
    let header: serde_json::Value = serde_json::from_str(header_text)
        .map_err(|e| format!("the {header_len} byte header is not valid JSON: {e}"))?;
    let serde_json::Value::Object(entries) = header else {
        return Err("the header is JSON but not an object of tensor entries".to_owned());
    };
    // serde_json keeps the last of duplicate keys; the reference implementation refuses them.
    let keys: HeaderKeys = serde_json::from_str(header_text)
        .map_err(|e| format!("the {header_len} byte header is not valid JSON: {e}"))?;
    let mut seen = BTreeSet::new();
    if let Some(dup) = keys.0.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(format!(
            "the header names {dup:?} more than once; each tensor (and __metadata__) must appear once"
        ));
    }
    let data_len = file_len - data_start;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (key, entry) in &entries {
        if key == "__metadata__" {
            metadata = parse_metadata(entry)?;
            continue;
        }
        let info = parse_entry(key, entry, data_len)?;
        tensors.insert(key.clone(), info);
    }
    // Overlap check: sort nonempty ranges by start; each must begin at or after the previous end.
    let mut ranges: Vec<(&str, &TensorInfo)> = tensors
        .iter()
        .filter(|(_, t)| t.end > t.begin)
        .map(|(k, t)| (k.as_str(), t))
        .collect();
    ranges.sort_by_key(|(_, t)| (t.begin, t.end));
    for pair in ranges.windows(2) {
        let (ka, a) = pair[0];
        let (kb, b) = pair[1];
        if b.begin < a.end {
            return Err(format!(
                "tensors {ka:?} data_offsets [{}, {}] and {kb:?} data_offsets [{}, {}] overlap",
                a.begin, a.end, b.begin, b.end
            ));
        }
    }
    // As the reference implementation: the tensors tile the data section exactly, from 0 to
    // its end, with no byte that no tensor references.
    let mut end = 0;
    let mut previous: Option<&str> = None;
    for (key, t) in &ranges {
        if t.begin != end {
            let after = previous.map_or_else(
                || "the start of the data section".to_owned(),
                |p| format!("tensor {p:?}"),
            );
            return Err(format!(
                "bytes [{end}, {}] of the data section belong to no tensor (between {after} and \
                 tensor {key:?}, data_offsets [{}, {}]); tensors must be stored back to back",
                t.begin, t.begin, t.end
            ));
        }
        end = t.end;
        previous = Some(key);
    }
    if end != data_len {
        return Err(format!(
            "{} trailing byte(s) after the last tensor's data: the tensors end at byte {end} of the \
             {data_len} byte data section",
            data_len - end
        ));
    }
    Ok(Header {
        tensors,
        data_start,
        metadata,
    })
}

/// A validated safetensors header: its tensors, where the data section starts, and the
/// `__metadata__` string pairs.
struct Header {
    tensors: BTreeMap<String, TensorInfo>,
    data_start: usize,
    metadata: BTreeMap<String, String>,
}

/// The top-level keys of a header, in order and with repeats (a JSON map would drop them).
struct HeaderKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for HeaderKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = HeaderKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<HeaderKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(HeaderKeys(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

/// The header's `__metadata__`: an object of strings, as the reference implementation requires.
fn parse_metadata(
    entry: &serde_json::Value,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let not_strings = || format!("__metadata__ is {entry}, not an object of string values");
    entry
        .as_object()
        .ok_or_else(not_strings)?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(not_strings)?.to_owned())))
        .collect()
}

/// Validates one header entry `{"dtype": .., "shape": [..], "data_offsets": [begin, end]}`.
fn parse_entry(
    key: &str,
    entry: &serde_json::Value,
    data_len: usize,
) -> std::result::Result<TensorInfo, String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| format!("tensor {key:?}: header entry is {entry}, not an object"))?;
    let dtype = obj
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| format!("tensor {key:?}: header entry has no string \"dtype\""))?
        .to_owned();
    let shape_value = obj
        .get("shape")
        .ok_or_else(|| format!("tensor {key:?}: header entry has no \"shape\""))?;
    let shape: Vec<usize> = shape_value
        .as_array()
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        })
        .ok_or_else(|| {
            format!(
                "tensor {key:?}: \"shape\" is {shape_value}, not an array of non-negative integers"
            )
        })?;
    let offsets_value = obj
        .get("data_offsets")
        .ok_or_else(|| format!("tensor {key:?}: header entry has no \"data_offsets\""))?;
    let offsets: Vec<u64> = offsets_value
        .as_array()
        .and_then(|o| o.iter().map(|v| v.as_u64()).collect::<Option<Vec<u64>>>())
        .filter(|o| o.len() == 2)
        .ok_or_else(|| {
            format!(
                "tensor {key:?}: \"data_offsets\" is {offsets_value}, not a [begin, end] pair of \
                 non-negative integers"
            )
        })?;
    let (begin, end) = (offsets[0], offsets[1]);
    if begin > end {
        return Err(format!(
            "tensor {key:?} data_offsets [{begin}, {end}] are reversed (begin > end)"
        ));
    }
    if end > data_len as u64 {
        return Err(format!(
            "tensor {key:?} data_offsets [{begin}, {end}] end past the {data_len} byte data section \
             (file truncated?)"
        ));
    }
    // end <= data_len, so both fit in usize.
    let (begin, end) = (begin as usize, end as usize);
    let span = end - begin;
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            format!("tensor {key:?}: shape {shape:?} has more elements than fit in memory")
        })?;
    if let Some(bits) = dtype_bits(&dtype) {
        let total_bits = numel
            .checked_mul(bits)
            .ok_or_else(|| format!("tensor {key:?}: shape {shape:?} of {dtype} is too large"))?;
        if !total_bits.is_multiple_of(8) || total_bits / 8 != span {
            let size = if bits.is_multiple_of(8) {
                format!(
                    "{numel} element(s) x {} byte(s) = {} bytes",
                    bits / 8,
                    total_bits / 8
                )
            } else {
                format!("{numel} element(s) x {bits} bits = {total_bits} bits")
            };
            return Err(format!(
                "tensor {key:?} has dtype {dtype} and shape {shape:?}: {size}, but data_offsets \
                 [{begin}, {end}] span {span} bytes"
            ));
        }
    }
    Ok(TensorInfo {
        dtype,
        shape,
        begin,
        end,
    })
}

/// Bits per element of a safetensors dtype; `None` for a name we do not know (such tensors are
/// bounds- and overlap-checked, and fail with `UnsupportedDtype` if fetched).
fn dtype_bits(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Length in bytes of the longest common prefix of `a` and `b` (on char boundaries).
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .take_while(|((_, ca), cb)| ca == cb)
        .map(|((_, c), _)| c.len_utf8())
        .sum()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// How a randomly initialised tensor is filled (PyTorch's defaults for the layer that owns it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform in ±bound: conv and linear weights and biases use 1/√fan_in.
    Uniform(f32),
    /// Norm weights.
    Ones,
    /// Norm biases.
    Zeros,
}

/// Where a model's tensors come from.
#[derive(Debug)]
pub enum WeightSource {
    /// A checkpoint: a memory-mapped safetensors file or tensors in memory.
    Checkpoint(Weights),
    /// Deterministic random initialisation: each tensor's values depend only on (seed, key), so
    /// the same architecture gets the same weights in any load order. `label` names the
    /// source in messages.
    Random { seed: u64, label: PathBuf },
}

impl WeightSource {
    /// Opens a safetensors file (memory-mapped).
    pub fn file(path: &Path) -> Result<Self> {
        Ok(WeightSource::Checkpoint(Weights::open(&with_variant(
            path,
        ))?))
    }

    /// Random weights from `seed`.
    pub fn random(seed: u64, label: impl Into<PathBuf>) -> Self {
        WeightSource::Random {
            seed,
            label: label.into(),
        }
    }

    /// The checkpoint, when the source is one (not random initialisation).
    pub fn checkpoint(&self) -> Option<&Weights> {
        match self {
            WeightSource::Checkpoint(w) => Some(w),
            WeightSource::Random { .. } => None,
        }
    }

    /// What messages call this source.
    pub fn label(&self) -> &Path {
        match self {
            WeightSource::Checkpoint(w) => w.path(),
            WeightSource::Random { label, .. } => label,
        }
    }

    /// Tensor `key` as f32 `shape` (`init` fills it for a random source).
    pub fn get(&self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        Ok(self.get_any(&[key.to_owned()], shape, init)?.1)
    }

    /// The first of `keys` (alternative names of one tensor) as f32 `shape`, and the key used.
    fn get_any(&self, keys: &[String], shape: &[usize], init: Init) -> Result<(String, Vec<f32>)> {
        let Some(first) = keys.first() else {
            return Err(Error::invalid(
                "WeightSource::get_any",
                "called with no keys",
            ));
        };
        match self {
            WeightSource::Checkpoint(w) => {
                let key = keys.iter().find(|k| w.contains(k)).unwrap_or(first).clone();
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                Ok((key, w.get_any(&refs, shape)?))
            }
            WeightSource::Random { seed, .. } => {
                let numel: usize = shape.iter().product();
                let mut rng = SplitMix64::new(seed ^ key_hash(first));
                let values = (0..numel)
                    .map(|_| match init {
                        Init::Uniform(bound) => bound * rng.symmetric(),
                        Init::Ones => 1.0,
                        Init::Zeros => 0.0,
                    })
                    .collect();
                Ok((first.clone(), values))
            }
        }
    }

    /// Fails if a checkpoint holds tensors the model never asked for.
    pub fn finish(&self) -> Result<()> {
        match self {
            WeightSource::Checkpoint(w) => w.finish(),
            WeightSource::Random { .. } => Ok(()),
        }
    }
}

/// SplitMix64: a tiny seeded generator, enough for reproducible weights and inputs.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * unit - 1.0
    }
}

/// FNV-1a of a key, so each random tensor depends only on (seed, key), not on the load order.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A prefixed view of a [`WeightSource`] that uploads what it reads: blocks load their fields
/// through `vb.pp("field")`, so a weight key is the field path in the module tree.
#[derive(Clone)]
pub struct VarBuilder<'a> {
    ctx: &'a GpuContext,
    source: &'a WeightSource,
    prefix: String,
    /// Parameters uploaded through this builder and every view derived from it.
    parameters: Rc<Cell<usize>>,
}

impl<'a> VarBuilder<'a> {
    /// The root view (empty prefix).
    pub fn root(ctx: &'a GpuContext, source: &'a WeightSource) -> Self {
        VarBuilder {
            ctx,
            source,
            prefix: String::new(),
            parameters: Rc::new(Cell::new(0)),
        }
    }

    /// The view of the sub-module `name` (a field name or a list index).
    pub fn pp(&self, name: impl std::fmt::Display) -> VarBuilder<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        VarBuilder {
            prefix,
            ..self.clone()
        }
    }

    /// The device weights are uploaded to.
    pub fn context(&self) -> &'a GpuContext {
        self.ctx
    }

    /// The full key of `name` under this view.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Parameters uploaded so far through any view of this root.
    pub fn parameters(&self) -> usize {
        self.parameters.get()
    }

    /// Reads `name` with `shape` (an error names the key, the expected and the found shape) and
    /// uploads it.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.get_any(&[name], shape, init)
    }

    /// The first of several names the source holds (legacy attention names: `to_q` / `query`).
    pub fn get_any(&self, names: &[&str], shape: &[usize], init: Init) -> Result<Tensor> {
        let keys: Vec<String> = names.iter().map(|n| self.key(n)).collect();
        let (key, data) = self.source.get_any(&keys, shape, init)?;
        self.parameters.set(self.parameters.get() + data.len());
        Tensor::from_slice(self.ctx, shape, &data, &key)
    }
}

/// `path`, or its diffusers `fp16` variant (`name.fp16.safetensors`, what
/// `save_pretrained(variant="fp16")` writes) when only that exists.
pub fn with_variant(path: &Path) -> PathBuf {
    if path.exists() {
        return path.to_path_buf();
    }
    let variant = match (path.file_stem(), path.extension()) {
        (Some(stem), Some(ext)) => path.with_file_name(format!(
            "{}.fp16.{}",
            stem.to_string_lossy(),
            ext.to_string_lossy()
        )),
        _ => return path.to_path_buf(),
    };
    if variant.exists() {
        variant
    } else {
        path.to_path_buf()
    }
}
