//! CLIP's byte-level BPE tokenizer, encoding a prompt exactly as diffusers'
//! `StableDiffusionPipeline` does with a stock install: transformers 5's `CLIPTokenizer` (backed by
//! the `tokenizers` library; `models/clip/tokenization_clip.py`) called with
//! `padding="max_length", max_length=model_max_length, truncation=True`.
//!
//! The pipeline, in `tokenizers`' order:
//! 1. added tokens (`<|startoftext|>`, `<|endoftext|>`, SD 2.x's pad `!`, …) whose `normalized`
//!    flag is false are cut out of the raw text;
//! 2. each remaining piece is normalized — NFC, every run of Unicode whitespace becomes one space,
//!    per-character lowercasing (no final-sigma rule) — and the `normalized` added tokens are cut
//!    out of it;
//! 3. the pre-tokenizer regex
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    splits the rest into words, whitespace dropped (the byte-level pre-tokenizer's GPT-2 regex
//!    then splits only the two special-token literals, into `<|`, letters, `|>`);
//! 4. each word's UTF-8 bytes map through CLIP's `bytes_to_unicode` table, the last symbol gets
//!    the `</w>` end-of-word suffix, and BPE merges the lowest-ranked adjacent pair until none
//!    is in the merges;
//! 5. `<|startoftext|>` ids `<|endoftext|>`, truncated to `model_max_length` (77) and padded with
//!    the folder's pad token (SD 1.x: `<|endoftext|>`, SD 2.x: `!`, id 0).
//!
//! transformers 4's Python `CLIPTokenizer` differed: with `ftfy` installed it ran `ftfy.fix_text`
//! (which also unescapes HTML entities such as `&amp;`), without it BERT's `BasicTokenizer`
//! (control characters removed, spaces around CJK ideographs). transformers 5 does neither and
//! neither do we; see README "Text prompts (CLIP tokenizer)".

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// The suffix CLIP's BPE appends to the last symbol of every word.
pub const END_OF_WORD_SUFFIX: &str = "</w>";

/// transformers' `CLIPTokenizer` defaults, used when the folder's configs do not name a token.
const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";
const DEFAULT_UNK: &str = "<|endoftext|>";
const DEFAULT_PAD: &str = "<|endoftext|>";

/// The contractions of the pre-tokenizer regex, in its alternation order (first match wins).
const CONTRACTIONS: [&str; 7] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

/// CLIP's (and GPT-2's) `bytes_to_unicode`: every byte maps to a printable character, so a BPE
/// vocabulary of strings covers arbitrary UTF-8. Printable Latin-1 bytes (`!`..`~`, `¡`..`¬`,
/// `®`..`ÿ`) map to themselves; the other 68 bytes, in order, to U+0100, U+0101, ….
pub fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut next_unprintable = 256u32;
    for (byte, slot) in (0u32..).zip(table.iter_mut()) {
        let code = if printable(byte) {
            byte
        } else {
            next_unprintable += 1;
            next_unprintable - 1
        };
        // Both ranges are valid scalar values (below U+0200), so the fallback is never taken.
        *slot = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    table
}

/// A token cut out of the text before BPE (transformers' `AddedToken`): the special tokens, and
/// any token a folder adds. `normalized` says whether it is matched in the normalized text
/// (case-insensitively, in effect) or in the raw prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    pub content: String,
    pub id: u32,
    pub normalized: bool,
}

/// The token strings a folder names (transformers' special-token attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
}

impl Default for SpecialTokens {
    /// transformers' `CLIPTokenizer` defaults (SD 1.x's choice: pad with `<|endoftext|>`).
    fn default() -> Self {
        SpecialTokens {
            bos: DEFAULT_BOS.into(),
            eos: DEFAULT_EOS.into(),
            unk: DEFAULT_UNK.into(),
            pad: DEFAULT_PAD.into(),
        }
    }
}

/// One encoded prompt, as diffusers passes it to the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `[model_max_length]`: `<|startoftext|>`, the prompt's tokens (truncated), `<|endoftext|>`,
    /// then the pad id.
    pub input_ids: Vec<u32>,
    /// `[model_max_length]`: 1 for `input_ids[..length]`, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Tokens before padding, the two special tokens included (2 for an empty prompt).
    pub length: usize,
}

/// A BPE merge rule as the tokenizer applies it: the rank orders merges (lower first).
#[derive(Debug, Clone, Copy)]
struct Merge {
    rank: u32,
    id: u32,
}

/// Where a merge came from, so a vocab/merges mismatch names the file and line.
#[derive(Debug, Clone)]
pub struct MergeRule {
    pub left: String,
    pub right: String,
    /// The file and position to blame (`merges.txt`, `line 12`).
    pub path: PathBuf,
    pub key: String,
}

/// Everything a tokenizer is built from, already read from disk (or made by hand in tests).
#[derive(Debug, Clone)]
pub struct TokenizerSpec {
    /// Token → id. Must hold every byte symbol, every merge's parts and every merge's result.
    pub vocab: HashMap<String, u32>,
    /// The file the vocabulary came from (for errors).
    pub vocab_path: PathBuf,
    /// The merges, highest priority first.
    pub merges: Vec<MergeRule>,
    /// Tokens the folder declares as added (tokenizer.json's `added_tokens`, tokenizer_config's
    /// `added_tokens_decoder`): their flags win over the special-token attributes.
    pub added_tokens: Vec<AddedToken>,
    /// The special-token attributes in transformers' order (bos, eos, unk, pad, then
    /// `additional_special_tokens`): content, `normalized`, and the file and key that named it.
    pub special_attributes: Vec<SpecialAttribute>,
    pub special_tokens: SpecialTokens,
    pub model_max_length: usize,
}

/// One special-token attribute of a folder's config (`"pad_token": "!"`).
#[derive(Debug, Clone)]
pub struct SpecialAttribute {
    pub content: String,
    pub normalized: bool,
    pub path: PathBuf,
    pub key: String,
}

/// CLIP's tokenizer: vocabulary, merges and the folder's special tokens.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// (left id, right id) → rank and merged id.
    merges: HashMap<(u32, u32), Merge>,
    byte_encoder: [char; 256],
    /// Cut from the raw text, longest first.
    raw_added: Vec<AddedToken>,
    /// Cut from the normalized text (content normalized), longest first.
    normalized_added: Vec<AddedToken>,
    unk_id: u32,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    vocab_size: usize,
    model_max_length: usize,
}

/// A piece of text after cutting out added tokens.
enum Segment<'a> {
    Text(&'a str),
    Added(u32),
}

impl ClipTokenizer {
    /// Reads a tokenizer folder (`tokenizer/` of a Stable Diffusion pipeline): `tokenizer.json`
    /// (what transformers 5 writes) or `vocab.json` + `merges.txt` (older folders), plus
    /// `tokenizer_config.json` and, when present, `special_tokens_map.json` (whose entries win,
    /// as in transformers).
    pub fn from_folder(dir: &Path) -> Result<ClipTokenizer> {
        ClipTokenizer::new(folder::read_spec(dir)?)
    }

    /// Builds the tokenizer, checking that every merge's parts and result are in the vocabulary
    /// and that every special token resolves to an id.
    pub fn new(spec: TokenizerSpec) -> Result<ClipTokenizer> {
        let vocab = spec.vocab;
        let mut merges = HashMap::with_capacity(spec.merges.len());
        for (rank, rule) in (0u32..).zip(&spec.merges) {
            let lookup = |token: &str, role: &str| {
                vocab.get(token).copied().ok_or_else(|| Error::Config {
                    path: rule.path.clone(),
                    key: rule.key.clone(),
                    message: format!(
                        "merge \"{} {}\": its {role} {token:?} is not in the vocabulary ({}); \
                         expected vocabulary and merges from the same tokenizer",
                        rule.left,
                        rule.right,
                        spec.vocab_path.display()
                    ),
                })
            };
            let left = lookup(&rule.left, "left part")?;
            let right = lookup(&rule.right, "right part")?;
            let merged = format!("{}{}", rule.left, rule.right);
            let id = lookup(&merged, "result")?;
            // A repeated merge keeps its last rank, as both transformers implementations do.
            merges.insert((left, right), Merge { rank, id });
        }

        // Resolve the added tokens: the folder's declared ones keep their flags; a special-token
        // attribute naming a new content adds it, the later attribute winning.
        let mut added: Vec<AddedToken> = spec.added_tokens.clone();
        let declared: Vec<String> = added.iter().map(|t| t.content.clone()).collect();
        for attribute in &spec.special_attributes {
            if declared.contains(&attribute.content) {
                continue;
            }
            let id = match vocab.get(&attribute.content) {
                Some(&id) => id,
                None => {
                    return Err(Error::Config {
                        path: attribute.path.clone(),
                        key: attribute.key.clone(),
                        message: format!(
                            "{:?} is neither in the vocabulary ({}) nor an added token; expected \
                             a vocabulary token (SD 1.x pads with \"<|endoftext|>\", SD 2.x with \
                             \"!\")",
                            attribute.content,
                            spec.vocab_path.display()
                        ),
                    })
                }
            };
            let token = AddedToken {
                content: attribute.content.clone(),
                id,
                normalized: attribute.normalized,
            };
            match added.iter_mut().find(|t| t.content == token.content) {
                Some(existing) => *existing = token,
                None => added.push(token),
            }
        }
        let id_of = |content: &str, what: &str| -> Result<u32> {
            added
                .iter()
                .find(|t| t.content == content)
                .map(|t| t.id)
                .or_else(|| vocab.get(content).copied())
                .ok_or_else(|| Error::Config {
                    path: spec.vocab_path.clone(),
                    key: what.to_string(),
                    message: format!(
                        "{content:?} is neither in the vocabulary nor an added token; expected a \
                         vocabulary token"
                    ),
                })
        };
        let bos_id = id_of(&spec.special_tokens.bos, "bos_token")?;
        let eos_id = id_of(&spec.special_tokens.eos, "eos_token")?;
        let unk_id = id_of(&spec.special_tokens.unk, "unk_token")?;
        let pad_id = id_of(&spec.special_tokens.pad, "pad_token")?;

        if spec.model_max_length < 2 {
            return Err(Error::Config {
                path: spec.vocab_path.clone(),
                key: "model_max_length".into(),
                message: format!(
                    "{} leaves no room for <|startoftext|> and <|endoftext|>; expected CLIP's 77",
                    spec.model_max_length
                ),
            });
        }

        let vocab_size = vocab
            .values()
            .chain(added.iter().map(|t| &t.id))
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut raw_added: Vec<AddedToken> =
            added.iter().filter(|t| !t.normalized).cloned().collect();
        let mut normalized_added: Vec<AddedToken> = added
            .iter()
            .filter(|t| t.normalized)
            .map(|t| AddedToken {
                content: normalize(&t.content),
                ..t.clone()
            })
            .collect();
        // Longest first: at one position the longest added token wins (leftmost-longest).
        raw_added.sort_by_key(|t| std::cmp::Reverse(t.content.len()));
        normalized_added.sort_by_key(|t| std::cmp::Reverse(t.content.len()));
        raw_added.retain(|t| !t.content.is_empty());
        normalized_added.retain(|t| !t.content.is_empty());

        Ok(ClipTokenizer {
            vocab,
            merges,
            byte_encoder: bytes_to_unicode(),
            raw_added,
            normalized_added,
            unk_id,
            bos_id,
            eos_id,
            pad_id,
            vocab_size,
            model_max_length: spec.model_max_length,
        })
    }

    /// Largest id + 1: the row count the text encoder's token embedding must have.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The length every encoding is truncated and padded to (77 for CLIP).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of a vocabulary token, if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// The prompt's token ids: no special tokens around them, no truncation.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        self.tokenize_into(text, usize::MAX, &mut ids);
        ids
    }

    /// What diffusers feeds the text encoder: `<|startoftext|>`, the first
    /// `model_max_length - 2` tokens, `<|endoftext|>`, then padding to `model_max_length`.
    pub fn encode(&self, prompt: &str) -> Encoding {
        let budget = self.model_max_length - 2;
        let mut ids = Vec::with_capacity(self.model_max_length);
        ids.push(self.bos_id);
        self.tokenize_into(prompt, budget, &mut ids);
        ids.truncate(budget + 1);
        ids.push(self.eos_id);
        let length = ids.len();
        ids.resize(self.model_max_length, self.pad_id);
        let mut attention_mask = vec![1; length];
        attention_mask.resize(self.model_max_length, 0);
        Encoding {
            input_ids: ids,
            attention_mask,
            length,
        }
    }

    /// Appends the tokens of `text` to `out`, stopping once `limit` tokens were added (words are
    /// independent, so the first `limit` tokens do not depend on the rest of the text).
    fn tokenize_into(&self, text: &str, limit: usize, out: &mut Vec<u32>) {
        let start = out.len();
        for segment in split_added(text, &self.raw_added) {
            if out.len() - start >= limit {
                return;
            }
            let piece = match segment {
                Segment::Added(id) => {
                    out.push(id);
                    continue;
                }
                Segment::Text(piece) => piece,
            };
            let normalized = normalize(piece);
            for inner in split_added(&normalized, &self.normalized_added) {
                if out.len() - start >= limit {
                    return;
                }
                match inner {
                    Segment::Added(id) => out.push(id),
                    Segment::Text(words) => {
                        for word in pre_tokenize(words) {
                            if out.len() - start >= limit {
                                return;
                            }
                            self.bpe(word, out);
                        }
                    }
                }
            }
        }
    }

    /// Byte-level BPE of one pre-tokenized word, appending its ids.
    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<char> = word
            .bytes()
            .map(|b| self.byte_encoder[usize::from(b)])
            .collect();
        let last = chars.len().saturating_sub(1);
        let symbols: Vec<u32> = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let mut symbol = c.to_string();
                if i == last {
                    symbol.push_str(END_OF_WORD_SUFFIX);
                }
                self.vocab.get(&symbol).copied().unwrap_or(self.unk_id)
            })
            .collect();
        out.extend(merge_symbols(&symbols, &self.merges));
    }
}

/// Repeatedly merges the adjacent pair with the lowest rank (the leftmost one among equals) until
/// no pair is a merge, as `tokenizers`' `Word::merge_all` does: candidate merges in a min-heap
/// keyed by (rank, position), symbols in a linked list, stale candidates skipped — O(n log n), so
/// a long run of letters cannot stall the CPU. Returns the final symbols.
fn merge_symbols(symbols: &[u32], merges: &HashMap<(u32, u32), Merge>) -> Vec<u32> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const NONE: usize = usize::MAX;
    let n = symbols.len();
    let mut id = symbols.to_vec();
    let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
    let mut alive = vec![true; n];
    // Reverse((rank, left position, merged id)): the smallest rank, then the leftmost, pops first.
    let mut heap = BinaryHeap::new();
    for i in 1..n {
        if let Some(m) = merges.get(&(id[i - 1], id[i])) {
            heap.push(Reverse((m.rank, i - 1, m.id)));
        }
    }
    while let Some(Reverse((_, left, merged))) = heap.pop() {
        let right = next[left];
        if !alive[left] || right == NONE {
            continue;
        }
        // Skip a candidate made stale by an earlier merge that changed either side.
        if merges.get(&(id[left], id[right])).map(|m| m.id) != Some(merged) {
            continue;
        }
        id[left] = merged;
        alive[right] = false;
        next[left] = next[right];
        if next[left] != NONE {
            prev[next[left]] = left;
        }
        if prev[left] != NONE {
            if let Some(m) = merges.get(&(id[prev[left]], id[left])) {
                heap.push(Reverse((m.rank, prev[left], m.id)));
            }
        }
        if next[left] != NONE {
            if let Some(m) = merges.get(&(id[left], id[next[left]])) {
                heap.push(Reverse((m.rank, left, m.id)));
            }
        }
    }
    (0..n).filter(|&i| alive[i]).map(|i| id[i]).collect()
}

/// The normalizer: NFC, whitespace runs → one space, per-character lowercasing (`tokenizers`'
/// `Lowercase` maps each char on its own, so a final `Σ` becomes `σ`, not `ς`).
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.nfc() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// `\p{L}` (General_Category Letter). `char::is_alphabetic` is the Alphabetic property, which
/// adds letter numbers (Nl), combining marks (Mn/Mc) and a few letter-like symbols (So) to the
/// letters; those are taken back out here.
pub fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric() && !is_combining_mark(c) && !is_alphabetic_symbol(c)
}

/// The Other_Alphabetic characters whose category is So: circled, parenthesized, squared and
/// negative squared Latin letters.
fn is_alphabetic_symbol(c: char) -> bool {
    matches!(c,
        '\u{24B6}'..='\u{24E9}'
        | '\u{1F130}'..='\u{1F149}'
        | '\u{1F150}'..='\u{1F169}'
        | '\u{1F170}'..='\u{1F189}')
}

/// CLIP's pre-tokenizer regex over normalized text: contractions, letter runs, single digits,
/// runs of other non-space characters; whitespace separates and is dropped. (The regex's two
/// special-token alternatives are omitted: the byte-level pre-tokenizer splits their matches
/// into exactly what the other alternatives give.)
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = if let Some(contraction) = CONTRACTIONS.iter().find(|p| rest.starts_with(**p)) {
            contraction.len()
        } else if is_letter(c) {
            run_length(rest, is_letter)
        } else if c.is_numeric() {
            c.len_utf8()
        } else if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        } else {
            run_length(rest, |c| {
                !c.is_whitespace() && !is_letter(c) && !c.is_numeric()
            })
        };
        words.push(&rest[..len]);
        rest = &rest[len..];
    }
    words
}

/// Byte length of the leading run of characters satisfying `keep`.
fn run_length(text: &str, keep: impl Fn(char) -> bool) -> usize {
    text.char_indices()
        .find(|&(_, c)| !keep(c))
        .map_or(text.len(), |(i, _)| i)
}

/// Cuts added tokens out of `text`: at each position the longest added token starting there,
/// scanning left to right (aho-corasick's leftmost-longest, as `tokenizers` matches them).
fn split_added<'a>(text: &'a str, tokens: &[AddedToken]) -> Vec<Segment<'a>> {
    let mut segments = Vec::new();
    let mut text_start = 0;
    let mut pos = 0;
    while pos < text.len() {
        // `tokens` is sorted longest first, so the first hit is the longest.
        if let Some(token) = tokens.iter().find(|t| text[pos..].starts_with(&t.content)) {
            if text_start < pos {
                segments.push(Segment::Text(&text[text_start..pos]));
            }
            segments.push(Segment::Added(token.id));
            pos += token.content.len();
            text_start = pos;
        } else {
            pos += text[pos..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if text_start < text.len() {
        segments.push(Segment::Text(&text[text_start..]));
    }
    segments
}

/// Reading a tokenizer folder into a [`TokenizerSpec`].
mod folder {
    use super::*;

    const CONFIG_FILE: &str = "tokenizer_config.json";
    const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";
    const TOKENIZER_FILE: &str = "tokenizer.json";
    const VOCAB_FILE: &str = "vocab.json";
    const MERGES_FILE: &str = "merges.txt";

    /// transformers' special-token attributes, in the order it registers them.
    const SPECIAL_KEYS: [&str; 4] = ["bos_token", "eos_token", "unk_token", "pad_token"];

    pub(super) fn read_spec(dir: &Path) -> Result<TokenizerSpec> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what: "tokenizer folder (tokenizer.json, or vocab.json and merges.txt, with \
                       tokenizer_config.json)"
                    .into(),
            });
        }
        let config_path = dir.join(CONFIG_FILE);
        let config = match read_json_object(&config_path, false)? {
            Some(config) => config,
            None => {
                return Err(Error::MissingFile {
                    path: config_path,
                    what: "tokenizer config (model_max_length and the special tokens; \
                           transformers writes it with the tokenizer)"
                        .into(),
                })
            }
        };
        let map_path = dir.join(SPECIAL_TOKENS_MAP_FILE);
        let special_map = read_json_object(&map_path, false)?;

        let tokenizer_json = dir.join(TOKENIZER_FILE);
        let (vocab, vocab_path, merges, added_tokens, model_unk) = if tokenizer_json.is_file() {
            read_tokenizer_json(&tokenizer_json)?
        } else {
            let vocab_path = dir.join(VOCAB_FILE);
            let merges_path = dir.join(MERGES_FILE);
            for (path, what) in [
                (&vocab_path, "BPE vocabulary"),
                (&merges_path, "BPE merges"),
            ] {
                if !path.is_file() {
                    return Err(Error::MissingFile {
                        path: path.clone(),
                        what: format!(
                            "{what} (a tokenizer folder holds tokenizer.json, or vocab.json and \
                             merges.txt)"
                        ),
                    });
                }
            }
            let vocab = read_vocab(
                &vocab_path,
                &read_json(&vocab_path, true)?.unwrap_or_default(),
            )?;
            let merges = read_merges_txt(&merges_path)?;
            let added = read_added_tokens_decoder(&config_path, &config)?;
            (vocab, vocab_path, merges, added, None)
        };

        // special_tokens_map.json entries win over tokenizer_config.json's, key by key.
        let mut special_attributes = Vec::new();
        let mut special_tokens = SpecialTokens::default();
        for key in SPECIAL_KEYS {
            let from_map = special_map
                .as_ref()
                .and_then(|m| m.get(key))
                .filter(|v| !v.is_null())
                .map(|v| (v, &map_path));
            let from_config = config
                .get(key)
                .filter(|v| !v.is_null())
                .map(|v| (v, &config_path));
            let attribute = match from_map.or(from_config) {
                Some((value, path)) => special_attribute(value, path, key)?,
                None => {
                    let default = match key {
                        "bos_token" => DEFAULT_BOS,
                        "eos_token" => DEFAULT_EOS,
                        "unk_token" => DEFAULT_UNK,
                        _ => DEFAULT_PAD,
                    };
                    SpecialAttribute {
                        content: default.into(),
                        normalized: false,
                        path: config_path.clone(),
                        key: key.into(),
                    }
                }
            };
            let slot = match key {
                "bos_token" => &mut special_tokens.bos,
                "eos_token" => &mut special_tokens.eos,
                "unk_token" => &mut special_tokens.unk,
                _ => &mut special_tokens.pad,
            };
            *slot = attribute.content.clone();
            special_attributes.push(attribute);
        }
        if let Some(unk) = model_unk {
            special_tokens.unk = unk;
        }
        let key = "additional_special_tokens";
        let additional = special_map
            .as_ref()
            .and_then(|m| m.get(key))
            .map(|v| (v, &map_path))
            .or_else(|| config.get(key).map(|v| (v, &config_path)));
        if let Some((value, path)) = additional.filter(|(v, _)| !v.is_null()) {
            let Some(list) = value.as_array() else {
                return Err(config_error(path, key, "expected a list of tokens"));
            };
            for (i, entry) in list.iter().enumerate() {
                special_attributes.push(special_attribute(entry, path, &format!("{key}[{i}]"))?);
            }
        }

        let model_max_length = read_model_max_length(&config_path, &config)?;
        Ok(TokenizerSpec {
            vocab,
            vocab_path,
            merges,
            added_tokens,
            special_attributes,
            special_tokens,
            model_max_length,
        })
    }

    fn config_error(path: &Path, key: &str, message: impl Into<String>) -> Error {
        Error::Config {
            path: path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Reads a JSON file; `None` when it does not exist and is optional.
    fn read_json(path: &Path, required: bool) -> Result<Option<Value>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            config_error(
                path,
                "(file)",
                format!("not valid JSON: {e}; expected the file as transformers writes it"),
            )
        })
    }

    fn read_json_object(path: &Path, required: bool) -> Result<Option<Map<String, Value>>> {
        match read_json(path, required)? {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(config_error(
                path,
                "(file)",
                format!("expected a JSON object, found {}", json_kind(&other)),
            )),
        }
    }

    fn json_kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        }
    }

    fn read_id(path: &Path, key: &str, value: &Value) -> Result<u32> {
        value
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                config_error(
                    path,
                    key,
                    format!("expected a token id (an integer ≥ 0), found {value}"),
                )
            })
    }

    /// A `{"token": id, …}` vocabulary (vocab.json, or tokenizer.json's `model.vocab`).
    fn read_vocab(path: &Path, value: &Value) -> Result<HashMap<String, u32>> {
        let Value::Object(map) = value else {
            return Err(config_error(
                path,
                "(vocabulary)",
                format!(
                    "expected an object mapping tokens to ids, found {}",
                    json_kind(value)
                ),
            ));
        };
        let mut vocab = HashMap::with_capacity(map.len());
        for (token, id) in map {
            vocab.insert(token.clone(), read_id(path, token, id)?);
        }
        Ok(vocab)
    }

    /// merges.txt: an optional `#version` line, then one `left right` pair per line.
    fn read_merges_txt(path: &Path) -> Result<Vec<MergeRule>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut merges = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if (index == 0 && line.starts_with("#version")) || line.is_empty() {
                continue;
            }
            let key = format!("line {}", index + 1);
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(left), Some(right), None) if !left.is_empty() && !right.is_empty() => merges
                    .push(MergeRule {
                        left: left.into(),
                        right: right.into(),
                        path: path.to_path_buf(),
                        key,
                    }),
                _ => {
                    return Err(config_error(
                        path,
                        &key,
                        format!("{line:?}: expected two tokens separated by one space"),
                    ))
                }
            }
        }
        Ok(merges)
    }

    type ModelParts = (
        HashMap<String, u32>,
        PathBuf,
        Vec<MergeRule>,
        Vec<AddedToken>,
        Option<String>,
    );

    /// tokenizer.json: a BPE model with CLIP's `</w>` suffix, and its `added_tokens`.
    fn read_tokenizer_json(path: &Path) -> Result<ModelParts> {
        let Some(root) = read_json_object(path, true)? else {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                what: "tokenizer.json".into(),
            });
        };
        let model = match root.get("model") {
            Some(Value::Object(model)) => model,
            _ => return Err(config_error(path, "model", "expected the BPE model object")),
        };
        let model_type = model.get("type").and_then(Value::as_str);
        if model_type != Some("BPE") {
            return Err(config_error(
                path,
                "model.type",
                format!("{model_type:?}: expected \"BPE\" (CLIP's byte-level BPE)"),
            ));
        }
        let suffix = model.get("end_of_word_suffix").and_then(Value::as_str);
        if suffix != Some(END_OF_WORD_SUFFIX) {
            return Err(config_error(
                path,
                "model.end_of_word_suffix",
                format!("{suffix:?}: expected \"</w>\" (CLIP's end-of-word suffix)"),
            ));
        }
        match model.get("continuing_subword_prefix") {
            None | Some(Value::Null) => {}
            Some(Value::String(prefix)) if prefix.is_empty() => {}
            Some(other) => {
                return Err(config_error(
                    path,
                    "model.continuing_subword_prefix",
                    format!("{other}: expected \"\" or null (CLIP uses none)"),
                ))
            }
        }
        for flag in ["byte_fallback", "ignore_merges"] {
            if model.get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(config_error(
                    path,
                    &format!("model.{flag}"),
                    "true: expected false (CLIP's BPE uses neither)",
                ));
            }
        }
        if !matches!(model.get("dropout"), None | Some(Value::Null)) {
            return Err(config_error(
                path,
                "model.dropout",
                "expected null: BPE dropout is a training-time option",
            ));
        }
        let vocab = read_vocab(path, model.get("vocab").unwrap_or(&Value::Null))?;
        let Some(Value::Array(merge_values)) = model.get("merges") else {
            return Err(config_error(
                path,
                "model.merges",
                "expected a list of merges",
            ));
        };
        let mut merges = Vec::with_capacity(merge_values.len());
        for (i, value) in merge_values.iter().enumerate() {
            let key = format!("model.merges[{i}]");
            // Older files write "left right", newer ones ["left", "right"].
            let pair = match value {
                Value::String(s) => {
                    let mut parts = s.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(l), Some(r), None) => Some((l.to_string(), r.to_string())),
                        _ => None,
                    }
                }
                Value::Array(parts) => match parts.as_slice() {
                    [Value::String(l), Value::String(r)] => Some((l.clone(), r.clone())),
                    _ => None,
                },
                _ => None,
            };
            let Some((left, right)) = pair else {
                return Err(config_error(
                    path,
                    &key,
                    format!("{value}: expected \"left right\" or [\"left\", \"right\"]"),
                ));
            };
            merges.push(MergeRule {
                left,
                right,
                path: path.to_path_buf(),
                key,
            });
        }
        let model_unk = model
            .get("unk_token")
            .and_then(Value::as_str)
            .map(str::to_string);

        let mut added = Vec::new();
        if let Some(values) = root.get("added_tokens").filter(|v| !v.is_null()) {
            let Some(list) = values.as_array() else {
                return Err(config_error(path, "added_tokens", "expected a list"));
            };
            for (i, entry) in list.iter().enumerate() {
                let key = format!("added_tokens[{i}]");
                let id = read_id(
                    path,
                    &format!("{key}.id"),
                    entry.get("id").unwrap_or(&Value::Null),
                )?;
                added.push(added_token(path, &key, entry, id)?);
            }
        }
        Ok((vocab, path.to_path_buf(), merges, added, model_unk))
    }

    /// tokenizer_config.json's `added_tokens_decoder` (`{"49407": {"content": …}, …}`), written
    /// by transformers ≥ 4.34.
    fn read_added_tokens_decoder(
        path: &Path,
        config: &Map<String, Value>,
    ) -> Result<Vec<AddedToken>> {
        let Some(decoder) = config.get("added_tokens_decoder").filter(|v| !v.is_null()) else {
            return Ok(Vec::new());
        };
        let Some(decoder) = decoder.as_object() else {
            return Err(config_error(
                path,
                "added_tokens_decoder",
                "expected an object mapping ids to tokens",
            ));
        };
        let mut added = Vec::new();
        for (id_text, entry) in decoder {
            let key = format!("added_tokens_decoder.{id_text}");
            let id = id_text
                .parse::<u32>()
                .map_err(|_| config_error(path, &key, "expected an integer id as the key"))?;
            added.push(added_token(path, &key, entry, id)?);
        }
        added.sort_by_key(|t| t.id);
        Ok(added)
    }

    /// One added-token object (`{"content": "!", "normalized": false, "single_word": false, …}`).
    fn added_token(path: &Path, key: &str, entry: &Value, id: u32) -> Result<AddedToken> {
        let Some(content) = entry.get("content").and_then(Value::as_str) else {
            return Err(config_error(
                path,
                &format!("{key}.content"),
                "expected the token's text",
            ));
        };
        if entry.get("single_word").and_then(Value::as_bool) == Some(true) {
            return Err(config_error(
                path,
                &format!("{key}.single_word"),
                format!(
                    "true for {content:?}: single-word added tokens are not supported (no CLIP \
                     tokenizer uses them); expected false"
                ),
            ));
        }
        let special = entry
            .get("special")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // lstrip / rstrip only decide whether spaces next to the token are kept, and CLIP drops
        // spaces anyway, so they cannot change the ids.
        let normalized = entry
            .get("normalized")
            .and_then(Value::as_bool)
            .unwrap_or(!special);
        Ok(AddedToken {
            content: content.into(),
            id,
            normalized,
        })
    }

    /// A special-token attribute: a plain string (matched in the raw text) or an `AddedToken`
    /// object with `content` and `normalized`.
    fn special_attribute(value: &Value, path: &Path, key: &str) -> Result<SpecialAttribute> {
        let (content, normalized) = match value {
            Value::String(content) => (content.clone(), false),
            Value::Object(object) => match object.get("content").and_then(Value::as_str) {
                Some(content) => (
                    content.to_string(),
                    object
                        .get("normalized")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ),
                None => {
                    return Err(config_error(
                        path,
                        &format!("{key}.content"),
                        "expected the token's text",
                    ))
                }
            },
            other => {
                return Err(config_error(
                    path,
                    key,
                    format!(
                        "expected a token string or an AddedToken object, found {}",
                        json_kind(other)
                    ),
                ))
            }
        };
        if let Some(object) = value.as_object() {
            if object.get("single_word").and_then(Value::as_bool) == Some(true) {
                return Err(config_error(
                    path,
                    &format!("{key}.single_word"),
                    "true: single-word special tokens are not supported; expected false",
                ));
            }
        }
        Ok(SpecialAttribute {
            content,
            normalized,
            path: path.to_path_buf(),
            key: key.into(),
        })
    }

    fn read_model_max_length(path: &Path, config: &Map<String, Value>) -> Result<usize> {
        let key = "model_max_length";
        match config.get(key) {
            None | Some(Value::Null) => Err(config_error(
                path,
                key,
                "absent: diffusers truncates and pads every prompt to it; expected CLIP's 77",
            )),
            Some(value) => value
                .as_u64()
                .filter(|&n| (2..=1_000_000).contains(&n))
                .map(|n| n as usize)
                .ok_or_else(|| {
                    config_error(
                        path,
                        key,
                        format!(
                            "{value} is not a usable sequence length (transformers writes \
                             1e30 when none was set); expected CLIP's 77"
                        ),
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOS: &str = "<|startoftext|>";
    const EOS: &str = "<|endoftext|>";

    /// A hand-made tokenizer: `tokens` get ids 0.., then `<|startoftext|>`, `<|endoftext|>`.
    fn tiny(
        tokens: &[&str],
        merges: &[(&str, &str)],
        pad: &str,
        max_length: usize,
    ) -> Result<ClipTokenizer> {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        for (id, token) in (0u32..).zip(tokens.iter().chain(&[BOS, EOS])) {
            vocab.insert((*token).to_string(), id);
        }
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, (l, r))| MergeRule {
                left: (*l).into(),
                right: (*r).into(),
                path: "merges.txt".into(),
                key: format!("line {}", i + 2),
            })
            .collect();
        let attribute = |content: &str, key: &str| SpecialAttribute {
            content: content.into(),
            normalized: false,
            path: "tokenizer_config.json".into(),
            key: key.into(),
        };
        ClipTokenizer::new(TokenizerSpec {
            vocab,
            vocab_path: "vocab.json".into(),
            merges,
            added_tokens: Vec::new(),
            special_attributes: vec![
                attribute(BOS, "bos_token"),
                attribute(EOS, "eos_token"),
                attribute(EOS, "unk_token"),
                attribute(pad, "pad_token"),
            ],
            special_tokens: SpecialTokens {
                pad: pad.into(),
                ..SpecialTokens::default()
            },
            model_max_length: max_length,
        })
    }

    fn names(tokenizer: &ClipTokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                tokenizer
                    .vocab
                    .iter()
                    .find(|(_, &v)| v == id)
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| format!("#{id}"))
            })
            .collect()
    }

    #[test]
    fn bytes_to_unicode_is_clips_table() {
        let table = bytes_to_unicode();
        let mut distinct: Vec<char> = table.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 256, "the mapping must be a bijection");
        // Printable bytes map to themselves.
        assert_eq!(table[usize::from(b'!')], '!');
        assert_eq!(table[usize::from(b'a')], 'a');
        assert_eq!(table[0xA1], '¡');
        assert_eq!(table[0xFF], 'ÿ');
        // The 68 others, in byte order, to U+0100...: 0..=32, 127..=160, 173.
        assert_eq!(table[0], '\u{100}');
        assert_eq!(table[usize::from(b'\n')], '\u{10A}');
        assert_eq!(table[usize::from(b' ')], 'Ġ');
        assert_eq!(table[127], '\u{121}');
        assert_eq!(table[160], '\u{142}');
        assert_eq!(table[0xAD], '\u{143}');
        assert!(table.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    #[test]
    fn bpe_applies_merges_by_rank_not_position() {
        let tokens = [
            "a", "b", "c", "a</w>", "b</w>", "c</w>", "ab", "bc</w>", "abc</w>",
        ];
        // (b, c</w>) outranks (a, b): "abc" -> a + bc</w> -> abc</w>.
        let t = tiny(
            &tokens,
            &[("b", "c</w>"), ("a", "b"), ("a", "bc</w>")],
            EOS,
            77,
        )
        .unwrap();
        assert_eq!(names(&t, &t.tokenize("abc")), ["abc</w>"]);
        // With (a, b) first, "ab" forms and no (ab, c</w>) merge exists.
        let t = tiny(
            &tokens,
            &[("a", "b"), ("b", "c</w>"), ("a", "bc</w>")],
            EOS,
            77,
        )
        .unwrap();
        assert_eq!(names(&t, &t.tokenize("abc")), ["ab", "c</w>"]);
        // End-of-word suffix only on each word's last symbol.
        assert_eq!(names(&t, &t.tokenize("ab c")), ["a", "b</w>", "c</w>"]);
        assert_eq!(names(&t, &t.tokenize("b a")), ["b</w>", "a</w>"]);
    }

    #[test]
    fn bpe_merges_the_leftmost_of_equal_pairs() {
        let t = tiny(&["a", "a</w>", "aa"], &[("a", "a")], EOS, 77).unwrap();
        // a a a a</w>: (a, a) at 0 and 1; the leftmost merges first, then (aa, a) is no merge.
        assert_eq!(names(&t, &t.tokenize("aaaa")), ["aa", "a", "a</w>"]);
        assert_eq!(names(&t, &t.tokenize("aaaaa")), ["aa", "aa", "a</w>"]);
    }

    #[test]
    fn unknown_symbols_become_unk() {
        let t = tiny(&["a", "a</w>"], &[], EOS, 77).unwrap();
        let eos = t.eos_id();
        assert_eq!(t.tokenize("a"), [1]);
        assert_eq!(
            t.tokenize("aé"),
            [0, eos, eos],
            "é is two bytes, neither in the vocab"
        );
    }

    #[test]
    fn encode_adds_specials_truncates_and_pads() {
        let t = tiny(&["a", "a</w>", "!", "!</w>"], &[], "!", 6).unwrap();
        let (bos, eos, pad) = (t.bos_id(), t.eos_id(), t.pad_id());
        assert_eq!(pad, 2);
        let e = t.encode("");
        assert_eq!(e.input_ids, [bos, eos, pad, pad, pad, pad]);
        assert_eq!(e.attention_mask, [1, 1, 0, 0, 0, 0]);
        assert_eq!(e.length, 2);
        let e = t.encode("a a a a a a a");
        assert_eq!(e.input_ids, [bos, 1, 1, 1, 1, eos], "first 4 tokens kept");
        assert_eq!(e.attention_mask, [1; 6]);
        // "!" is the pad token here, so it is an added token: each one is cut out on its own.
        assert_eq!(t.tokenize("a!!"), [1, 2, 2]);
        let t = tiny(
            &["a", "a</w>", "!", "!</w>", "!!</w>"],
            &[("!", "!</w>")],
            EOS,
            6,
        )
        .unwrap();
        assert_eq!(names(&t, &t.tokenize("a!!")), ["a</w>", "!!</w>"]);
    }

    #[test]
    fn special_token_text_is_cut_out_raw() {
        let t = tiny(
            &["a", "a</w>", "<", "|</w>", "<|</w>"],
            &[("<", "|</w>")],
            EOS,
            77,
        )
        .unwrap();
        let eos = t.eos_id();
        assert_eq!(t.tokenize("a<|endoftext|>a"), [1, eos, 1]);
    }

    #[test]
    fn merge_missing_from_vocab_is_named() {
        let err = tiny(&["a", "b"], &[("a", "b")], EOS, 77).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{message}");
        assert!(message.contains("merges.txt: line 2"), "{message}");
        assert!(
            message.contains("result \"ab\" is not in the vocabulary"),
            "{message}"
        );
        let err = tiny(&["a", "ab"], &[("a", "b")], EOS, 77).unwrap_err();
        assert!(err.to_string().contains("right part \"b\""), "{err}");
    }

    #[test]
    fn unknown_pad_token_is_named() {
        let err = tiny(&["a"], &[], "[PAD]", 77).unwrap_err().to_string();
        assert!(
            err.starts_with("tokenizer_config.json: pad_token: \"[PAD]\" is neither"),
            "{err}"
        );
    }

    #[test]
    fn normalize_is_nfc_whitespace_lowercase() {
        assert_eq!(normalize("E\u{301}TÉ"), "été");
        assert_eq!(normalize("  A\t\n\u{3000}B  "), " a b ");
        // Per-character lowercasing: no final sigma (std's str::to_lowercase would give ς).
        assert_eq!(normalize("ΟΔΟΣ"), "οδοσ");
        assert_eq!(normalize("İ"), "i\u{307}");
    }

    #[test]
    fn letters_are_general_category_l() {
        for c in ['a', 'Z', 'é', 'ß', '中', 'ª', 'ʰ', 'ǅ'] {
            assert!(is_letter(c), "{c:?} is a letter");
        }
        // Alphabetic but not L: a combining mark, a letter number, circled letters.
        for c in [
            '\u{301}',
            '\u{5BF}',
            'Ⅻ',
            'Ⓐ',
            'ⓩ',
            '\u{1F130}',
            '1',
            '_',
            ' ',
        ] {
            assert!(!is_letter(c), "{c:?} is not a letter");
        }
    }

    #[test]
    fn pre_tokenizer_follows_clips_regex() {
        assert_eq!(
            pre_tokenize("it's a test!!! 123 héllo"),
            ["it", "'s", "a", "test", "!!!", "1", "2", "3", "héllo"]
        );
        // Contractions win over punctuation runs only where they start the match.
        assert_eq!(
            pre_tokenize("we'll ''s 'sam"),
            ["we", "'ll", "''", "s", "'s", "am"]
        );
        assert_eq!(pre_tokenize("<|endoftext|>"), ["<|", "endoftext", "|>"]);
        assert_eq!(pre_tokenize("e\u{301}x"), ["e", "\u{301}", "x"]);
        assert_eq!(pre_tokenize("a\u{2003}\u{a0}b"), ["a", "b"]);
        assert!(pre_tokenize(" \t ").is_empty());
    }
}
