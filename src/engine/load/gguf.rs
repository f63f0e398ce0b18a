//! Opening a GGUF file: magic, header, tensor extents, architecture, typed metadata access.
//! `gguf_header` reads and checks the header (every bound, before any allocation); this module
//! names the file in its errors and gives typed access to the metadata.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use crate::engine::load::gguf_header;
use crate::error::{Error, Result};

pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub file_size: u64,
}

impl GgufFile {
    /// Opens and checks a GGUF file of any architecture.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ModelNotFound { path: path.into() },
            _ => Error::io(path, e),
        })?;
        if meta.is_dir() {
            return Err(Error::CorruptGguf {
                path: path.into(),
                reason: "this is a folder, not a .gguf file".into(),
            });
        }
        let file_size = meta.len();
        let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut reader, &mut magic).map_err(|e| Error::io(path, e))?;
        if &magic[..got] != b"GGUF" {
            return Err(Error::NotGguf {
                path: path.into(),
                magic: magic[..got].to_vec(),
            });
        }
        let (content, _) =
            gguf_header::read(reader, file_size, false).map_err(|e| Error::CorruptGguf {
                path: path.into(),
                reason: e.to_string(),
            })?;
        let file = GgufFile {
            path: path.into(),
            content,
            file_size,
        };
        Ok(file)
    }

    /// Opens a GGUF file and insists that it holds a Gemma 3 model.
    pub fn open_gemma3(path: &Path) -> Result<Self> {
        let file = Self::open(path)?;
        let arch = file.architecture()?;
        if arch != "gemma3" {
            return Err(Error::UnsupportedArchitecture {
                path: path.into(),
                found: arch,
            });
        }
        Ok(file)
    }

    pub fn architecture(&self) -> Result<String> {
        self.get_str("general.architecture")
    }

    fn bad_key(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::BadMetadata {
            path: self.path.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.bad_key(key, "not present"))
    }

    pub fn get_str(&self, key: &str) -> Result<String> {
        self.value(key)?.to_string().cloned().map_err(|_| {
            self.bad_key(
                key,
                format!(
                    "expected a string, found {}",
                    describe(self.value(key).unwrap())
                ),
            )
        })
    }

    /// Any integer type, as u64 (GGUF writers differ in which width they use).
    pub fn get_uint(&self, key: &str) -> Result<u64> {
        let v = self.value(key)?;
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            other => {
                return Err(self.bad_key(
                    key,
                    format!("expected an unsigned integer, found {}", describe(other)),
                ))
            }
        };
        Ok(n)
    }

    pub fn get_opt_uint(&self, key: &str) -> Result<Option<u64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.get_uint(key).map(Some),
        }
    }

    pub fn get_float(&self, key: &str) -> Result<f64> {
        match self.value(key)? {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            other => Err(self.bad_key(key, format!("expected a float, found {}", describe(other)))),
        }
    }

    pub fn get_opt_float(&self, key: &str) -> Result<Option<f64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.get_float(key).map(Some),
        }
    }

    pub fn get_opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                Err(self.bad_key(key, format!("expected a bool, found {}", describe(other))))
            }
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&Vec<Value>> {
        self.value(key)?.to_vec().map_err(|_| {
            self.bad_key(
                key,
                format!(
                    "expected an array, found {}",
                    describe(self.value(key).unwrap())
                ),
            )
        })
    }
}

/// A metadata value in a few words: its type and, for scalars and strings, the value (quoted and
/// shortened); never a whole array.
pub fn describe(v: &Value) -> String {
    match v {
        Value::U8(x) => format!("u8 {x}"),
        Value::I8(x) => format!("i8 {x}"),
        Value::U16(x) => format!("u16 {x}"),
        Value::I16(x) => format!("i16 {x}"),
        Value::U32(x) => format!("u32 {x}"),
        Value::I32(x) => format!("i32 {x}"),
        Value::U64(x) => format!("u64 {x}"),
        Value::I64(x) => format!("i64 {x}"),
        Value::F32(x) => format!("f32 {x}"),
        Value::F64(x) => format!("f64 {x}"),
        Value::Bool(x) => format!("bool {x}"),
        Value::String(s) => format!("the string {}", crate::error::quote(s)),
        Value::Array(a) => format!("an array of {} values", a.len()),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
