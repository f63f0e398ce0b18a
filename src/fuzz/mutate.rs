//! Structure-aware mutations of a model: a GGUF file through the map of its header fields (the
//! bounded reader's, `gguf_header::read` with `record`), a Hugging Face folder through its
//! `config.json` and its safetensors header as JSON. Each mutation is a plain edit of one file
//! (bytes at an offset, a truncation, new contents) with a description that reproduces it.

use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::Rng;
use serde_json::Value as Json;

use crate::engine::load::gguf_header::{self, Field, FieldKind};
use crate::error::{Error, Result};

/// One edit of one of the target's files.
#[derive(Debug, Clone)]
pub enum Edit {
    Bytes {
        offset: u64,
        bytes: Vec<u8>,
    },
    Truncate(u64),
    /// New contents: `head`, then the original file from `rest_from` on (nothing of it when
    /// `rest_from` is past its end).
    Splice {
        head: Vec<u8>,
        rest_from: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Mutation {
    /// Index into [`Target::files`].
    pub file: usize,
    pub edit: Edit,
    /// What was done, in words (with offsets and values: enough to redo it by hand).
    pub what: String,
}

/// Files larger than this are edited in place only (no rewrite of the whole file per case).
const REWRITE_MAX: u64 = 64 << 20;

enum Layout {
    Gguf {
        header: Vec<u8>,
        fields: Vec<Field>,
        /// Field kinds present, with the indices of their fields.
        kinds: Vec<(FieldKind, Vec<usize>)>,
        tensor_offsets: Vec<u64>,
        data_start: u64,
        size: u64,
    },
    Folder {
        config: usize,
        config_json: Json,
        weights: usize,
        header_len: u64,
        header: serde_json::Map<String, Json>,
        size: u64,
    },
}

/// A model to mutate: a GGUF file, or a folder with config.json and one *.safetensors file.
pub struct Target {
    /// The file, or the folder.
    pub root: PathBuf,
    pub is_dir: bool,
    /// File names (relative to the folder; the file's own name for a GGUF).
    pub files: Vec<PathBuf>,
    layout: Layout,
}

impl Target {
    pub fn open(root: &Path) -> Result<Self> {
        if root.is_dir() {
            return Self::folder(root);
        }
        let size = std::fs::metadata(root)
            .map_err(|e| Error::io(root, e))?
            .len();
        let file = std::fs::File::open(root).map_err(|e| Error::io(root, e))?;
        let (content, fields) = gguf_header::read(std::io::BufReader::new(file), size, true)
            .map_err(|e| {
                Error::BadInput(format!(
                    "{}: the model to fuzz must be a valid GGUF file: {e}",
                    root.display()
                ))
            })?;
        let data_start = content.tensor_data_offset;
        let mut header = vec![0u8; data_start.min(size) as usize];
        read_at(root, 0, &mut header)?;
        let mut kinds: Vec<(FieldKind, Vec<usize>)> = Vec::new();
        let mut tensor_offsets = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if f.kind == FieldKind::TensorOffset {
                tensor_offsets.push(read_le(&header, f));
            }
            match kinds.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, v)) => v.push(i),
                None => kinds.push((f.kind, vec![i])),
            }
        }
        let name = PathBuf::from(root.file_name().unwrap_or_default());
        Ok(Target {
            root: root.into(),
            is_dir: false,
            files: vec![name],
            layout: Layout::Gguf {
                header,
                fields,
                kinds,
                tensor_offsets,
                data_start,
                size,
            },
        })
    }

    fn folder(root: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| PathBuf::from(e.file_name()))
            .collect();
        files.sort();
        let find = |pred: &dyn Fn(&Path) -> bool| files.iter().position(|f| pred(f));
        let bad = |why: &str| Error::BadInput(format!("{}: {why}", root.display()));
        let config = find(&|f| f == Path::new("config.json"))
            .ok_or_else(|| bad("a folder to fuzz needs a config.json"))?;
        let weights = find(&|f| f.extension().is_some_and(|x| x == "safetensors"))
            .ok_or_else(|| bad("a folder to fuzz needs a *.safetensors file"))?;
        let text = std::fs::read(root.join(&files[config])).map_err(|e| Error::io(root, e))?;
        let config_json: Json =
            serde_json::from_slice(&text).map_err(|_| bad("config.json is not JSON"))?;
        let st_path = root.join(&files[weights]);
        let size = std::fs::metadata(&st_path)
            .map_err(|e| Error::io(&st_path, e))?
            .len();
        let mut len = [0u8; 8];
        read_at(&st_path, 0, &mut len)?;
        let header_len = u64::from_le_bytes(len);
        if header_len > 100_000_000 || 8 + header_len > size {
            return Err(bad("the safetensors file's header length is invalid"));
        }
        let mut raw = vec![0u8; header_len as usize];
        read_at(&st_path, 8, &mut raw)?;
        let header = match serde_json::from_slice(&raw) {
            Ok(Json::Object(m)) => m,
            _ => return Err(bad("the safetensors header is not a JSON object")),
        };
        Ok(Target {
            root: root.into(),
            is_dir: true,
            files,
            layout: Layout::Folder {
                config,
                config_json,
                weights,
                header_len,
                header,
                size,
            },
        })
    }

    /// A random mutation.
    pub fn mutate(&self, rng: &mut SmallRng) -> Mutation {
        match &self.layout {
            Layout::Gguf {
                header,
                fields,
                kinds,
                tensor_offsets,
                data_start,
                size,
            } => gguf(
                rng,
                header,
                fields,
                kinds,
                tensor_offsets,
                *data_start,
                *size,
            ),
            Layout::Folder {
                config,
                config_json,
                weights,
                header_len,
                header,
                size,
            } => {
                if rng.random_bool(0.35) {
                    config_mutation(rng, *config, config_json)
                } else {
                    safetensors_mutation(rng, *weights, *header_len, header, *size)
                }
            }
        }
    }
}

/// Fills `buf` from `path` at `offset`.
fn read_at(path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(buf)
        })
        .map_err(|e| Error::io(path, e))
}

fn read_le(header: &[u8], f: &Field) -> u64 {
    let mut b = [0u8; 8];
    let at = f.offset as usize;
    b[..f.width as usize].copy_from_slice(&header[at..at + f.width as usize]);
    u64::from_le_bytes(b)
}

/// A replacement for an integer field of `width` bytes at `at` now holding `v`: a neighbour, 0,
/// the maximum, a power of two, the file size or what is left of it, a bit flipped.
fn odd_integer(rng: &mut SmallRng, v: u64, width: u8, size: u64, at: u64) -> u64 {
    let max = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width as u32)) - 1
    };
    let bit = rng.random_range(0..8 * width as u32);
    let choices = [
        v.wrapping_add(1),
        v.wrapping_sub(1),
        0,
        1,
        max,
        v.wrapping_mul(2),
        v.wrapping_add(rng.random_range(2..1000)),
        rng.random::<u64>(),
        size,
        size.saturating_sub(at),
        1 << 31,
        1 << 32,
        1 << 63,
        v ^ (1 << bit),
    ];
    choices[rng.random_range(0..choices.len())] & max
}

fn gguf(
    rng: &mut SmallRng,
    header: &[u8],
    fields: &[Field],
    kinds: &[(FieldKind, Vec<usize>)],
    tensor_offsets: &[u64],
    data_start: u64,
    size: u64,
) -> Mutation {
    let roll = rng.random_range(0..100);
    if roll < 60 && !kinds.is_empty() {
        let (kind, idx) = &kinds[rng.random_range(0..kinds.len())];
        let f = fields[idx[rng.random_range(0..idx.len())]];
        let v = read_le(header, &f);
        let new = match kind {
            FieldKind::TensorType | FieldKind::ValueType | FieldKind::ArrayType
                if rng.random_bool(0.6) =>
            {
                rng.random_range(0..40)
            }
            FieldKind::Dims if rng.random_bool(0.6) => rng.random_range(0..7),
            FieldKind::TensorOffset if rng.random_bool(0.6) => {
                let other = tensor_offsets[rng.random_range(0..tensor_offsets.len())];
                [other, v + 1, v + 32, other + 32][rng.random_range(0..4)]
            }
            _ => odd_integer(rng, v, f.width, size, f.offset),
        };
        let bytes = new.to_le_bytes()[..f.width as usize].to_vec();
        return Mutation {
            file: 0,
            edit: Edit::Bytes {
                offset: f.offset,
                bytes,
            },
            what: format!(
                "{kind:?} at byte {}: {v} -> {new} ({} bytes)",
                f.offset, f.width
            ),
        };
    }
    if roll < 75 {
        let n = rng.random_range(1..=4);
        let offset = rng.random_range(0..data_start.max(1));
        let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        return Mutation {
            file: 0,
            what: format!("header bytes at {offset} set to {bytes:02x?}"),
            edit: Edit::Bytes { offset, bytes },
        };
    }
    if roll < 87 {
        let len = match rng.random_range(0..3) {
            0 => rng.random_range(0..data_start.max(1)),
            1 => fields[rng.random_range(0..fields.len())].offset + rng.random_range(0..4),
            _ => rng.random_range(data_start.min(size)..size.max(1)),
        };
        return Mutation {
            file: 0,
            edit: Edit::Truncate(len),
            what: format!("truncated to {len} bytes (of {size})"),
        };
    }
    // Tensor data: random bytes, or non-finite floats.
    let offset = rng.random_range(data_start.min(size.saturating_sub(1))..size.max(1));
    let bytes = match rng.random_range(0..3) {
        0 => f32::NAN.to_le_bytes().to_vec(),
        1 => f32::INFINITY.to_le_bytes().to_vec(),
        _ => (0..rng.random_range(1..64)).map(|_| rng.random()).collect(),
    };
    Mutation {
        file: 0,
        what: format!(
            "tensor data at byte {offset} set to {} bytes {:02x?}",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        ),
        edit: Edit::Bytes { offset, bytes },
    }
}

/// JSON pointers of every leaf (and every array) of `v`.
fn leaves(v: &Json, at: String, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                leaves(x, format!("{at}/{k}"), out);
            }
        }
        Json::Array(a) => {
            out.push(at.clone());
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

fn odd_json(rng: &mut SmallRng, old: &Json) -> Json {
    let n = old.as_i64().unwrap_or(1);
    let choices = [
        Json::from(0),
        Json::from(-1),
        Json::from(1),
        Json::from(n + 1),
        Json::from(n.saturating_mul(1000)),
        Json::from(1u64 << 31),
        Json::from(1u64 << 40),
        Json::from(u64::MAX),
        Json::from(1e308),
        Json::from(0.5),
        Json::from("x"),
        Json::Null,
        Json::from(true),
        Json::Array(vec![]),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// Sets or deletes a random leaf of `v`; returns what was done.
fn mutate_json(rng: &mut SmallRng, v: &mut Json, skip: &dyn Fn(&str) -> bool) -> String {
    let mut all = Vec::new();
    leaves(v, String::new(), &mut all);
    all.retain(|p| !skip(p));
    if all.is_empty() {
        return "nothing to change".into();
    }
    let ptr = all[rng.random_range(0..all.len())].clone();
    if rng.random_bool(0.15) {
        if let Some((parent, key)) = ptr.rsplit_once('/') {
            match v.pointer_mut(parent) {
                Some(Json::Object(m)) => {
                    m.remove(key);
                }
                Some(Json::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
            return format!("removed {ptr}");
        }
    }
    let slot = v.pointer_mut(&ptr).expect("the pointer was just listed");
    let new = odd_json(rng, slot);
    let what = format!("{ptr}: {slot} -> {new}");
    *slot = new;
    what
}

fn config_mutation(rng: &mut SmallRng, file: usize, config: &Json) -> Mutation {
    let text = serde_json::to_vec(config).unwrap_or_default();
    if rng.random_bool(0.25) && !text.is_empty() {
        let mut t = text.clone();
        let at = rng.random_range(0..t.len());
        if rng.random_bool(0.5) {
            t.truncate(at);
            return Mutation {
                file,
                what: format!("config.json cut to {at} bytes"),
                edit: Edit::Splice {
                    head: t,
                    rest_from: u64::MAX,
                },
            };
        }
        let b: u8 = rng.random();
        t[at] = b;
        return Mutation {
            file,
            what: format!("config.json byte {at} set to {b:#04x}"),
            edit: Edit::Splice {
                head: t,
                rest_from: u64::MAX,
            },
        };
    }
    let mut v = config.clone();
    let what = mutate_json(rng, &mut v, &|_| false);
    Mutation {
        file,
        what: format!("config.json {what}"),
        edit: Edit::Splice {
            head: serde_json::to_vec_pretty(&v).unwrap_or_default(),
            rest_from: u64::MAX,
        },
    }
}

fn safetensors_mutation(
    rng: &mut SmallRng,
    file: usize,
    header_len: u64,
    header: &serde_json::Map<String, Json>,
    size: u64,
) -> Mutation {
    let data_start = 8 + header_len;
    let roll = rng.random_range(0..100);
    if roll < 15 {
        let new = odd_integer(rng, header_len, 8, size, 0);
        return Mutation {
            file,
            what: format!("header length: {header_len} -> {new}"),
            edit: Edit::Bytes {
                offset: 0,
                bytes: new.to_le_bytes().to_vec(),
            },
        };
    }
    if roll < 70 {
        let mut h = Json::Object(header.clone());
        let names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
        let what = if names.is_empty() || rng.random_bool(0.6) {
            mutate_json(rng, &mut h, &|p| p.starts_with("/__metadata__"))
        } else {
            let name = names[rng.random_range(0..names.len())].clone();
            let m = h.as_object_mut().expect("an object");
            match rng.random_range(0..3) {
                0 => {
                    m.remove(&name);
                    format!("removed tensor {name}")
                }
                1 => {
                    let entry = m.remove(&name).unwrap_or(Json::Null);
                    m.insert(format!("{name}x"), entry);
                    format!("renamed tensor {name}")
                }
                _ => {
                    let dtypes = [
                        "F32", "F16", "BF16", "F64", "I8", "U8", "I64", "BOOL", "F8_E4M3", "Q4",
                    ];
                    let d = dtypes[rng.random_range(0..dtypes.len())];
                    m[&name]["dtype"] = Json::from(d);
                    format!("tensor {name} dtype -> {d}")
                }
            }
        };
        let mut bytes = serde_json::to_vec(&h).unwrap_or_default();
        while !bytes.len().is_multiple_of(8) {
            bytes.push(b' ');
        }
        let what = format!("safetensors header {what}");
        if size <= REWRITE_MAX {
            // The new header, then the data as it was.
            let mut head = (bytes.len() as u64).to_le_bytes().to_vec();
            head.extend(bytes);
            return Mutation {
                file,
                what,
                edit: Edit::Splice {
                    head,
                    rest_from: data_start,
                },
            };
        }
        if bytes.len() as u64 <= header_len {
            bytes.resize(header_len as usize, b' ');
            return Mutation {
                file,
                what,
                edit: Edit::Bytes { offset: 8, bytes },
            };
        }
    }
    if roll < 80 {
        let offset = rng.random_range(0..data_start);
        let b: u8 = rng.random();
        return Mutation {
            file,
            what: format!("safetensors byte {offset} set to {b:#04x}"),
            edit: Edit::Bytes {
                offset,
                bytes: vec![b],
            },
        };
    }
    if roll < 92 {
        let len = rng.random_range(0..size);
        return Mutation {
            file,
            what: format!("safetensors truncated to {len} bytes (of {size})"),
            edit: Edit::Truncate(len),
        };
    }
    let offset = rng.random_range(data_start.min(size - 1)..size);
    let bytes = [0xffu8, 0xff, 0x80, 0x7f].to_vec();
    Mutation {
        file,
        what: format!("safetensors data at byte {offset} set to NaN-ish bytes"),
        edit: Edit::Bytes { offset, bytes },
    }
}
