//! A bounded reader of GGUF headers. Every length and count is checked against the bytes left in
//! the file before anything is allocated for it, and the tensor table against GGML's own rules
//! (names under 64 bytes, at most 4 dimensions, no overflow, known types, whole blocks, aligned,
//! inside the file, not overlapping), so a damaged header costs a one-line error in
//! milliseconds, never a long read, a large allocation or a panic. It builds candle's
//! [`Content`] itself (candle's `Content::read` allocates each length as it reads it).
//!
//! With `record`, it also returns where each field lies ([`Field`]): the fuzzer mutates files
//! through this map.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;

use crate::error::{quote, quote_bytes};

/// GGML's tensor name limit, its NUL included (`GGML_MAX_NAME`).
pub const MAX_TENSOR_NAME: u64 = 64;
/// GGML's dimension limit (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Keys are short dotted names; a longer one is damage, not data.
pub const MAX_KEY: u64 = 1 << 16;
/// Arrays nest (GGUF allows arrays of arrays); deeper than this is damage.
const MAX_DEPTH: usize = 3;
const DEFAULT_ALIGNMENT: u64 = 32;

/// What a header field is, for error messages and for the fuzzer's mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Version,
    TensorCount,
    KvCount,
    KeyLength,
    ValueType,
    StringLength,
    ArrayType,
    ArrayLength,
    /// A metadata value (not in an array).
    Scalar,
    /// An array element of scalar type.
    Element,
    NameLength,
    Dims,
    Dim,
    TensorType,
    TensorOffset,
}

/// One field of a header: its kind, where it starts, how many bytes it has.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub kind: FieldKind,
    pub offset: u64,
    pub width: u8,
}

/// A header that cannot be read: where and why (the caller names the file).
#[derive(Debug)]
pub struct HeaderError {
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.reason)
    }
}

type Res<T> = std::result::Result<T, HeaderError>;

struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
    wide: bool,
    /// The first pass only checks: strings and arrays are skipped, not built, so a length that
    /// passes its bound but breaks the structure after it costs no memory.
    build: bool,
    fields: Option<Vec<Field>>,
}

impl<R: Read> Reader<R> {
    fn left(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn fail<T>(&self, at: u64, reason: impl Into<String>) -> Res<T> {
        Err(HeaderError {
            offset: at,
            reason: reason.into(),
        })
    }

    fn bytes<const N: usize>(&mut self, kind: FieldKind, what: &str) -> Res<[u8; N]> {
        let at = self.pos;
        let mut b = [0u8; N];
        if self.left() < N as u64 || self.inner.read_exact(&mut b).is_err() {
            return self.fail(at, format!("the file ends inside {what}"));
        }
        if let Some(f) = &mut self.fields {
            f.push(Field {
                kind,
                offset: at,
                width: N as u8,
            });
        }
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, kind: FieldKind, what: &str) -> Res<u32> {
        Ok(u32::from_le_bytes(self.bytes(kind, what)?))
    }

    fn u64(&mut self, kind: FieldKind, what: &str) -> Res<u64> {
        Ok(u64::from_le_bytes(self.bytes(kind, what)?))
    }

    /// A length or count: 32 bits in GGUF v1, 64 after.
    fn length(&mut self, kind: FieldKind, what: &str) -> Res<u64> {
        if self.wide {
            self.u64(kind, what)
        } else {
            Ok(self.u32(kind, what)? as u64)
        }
    }

    fn length_size(&self) -> u64 {
        if self.wide {
            8
        } else {
            4
        }
    }

    /// `len` bytes, after checking `len` against `max` and the bytes left.
    fn raw(&mut self, len: u64, max: u64, what: &str) -> Res<Vec<u8>> {
        let at = self.pos;
        if len > max {
            return self.fail(
                at,
                format!("{what} is {len} bytes long, the limit is {max}"),
            );
        }
        if len > self.left() {
            return self.fail(
                at,
                format!(
                    "{what} is {len} bytes long, only {} bytes are left in the file",
                    self.left()
                ),
            );
        }
        let mut v = vec![0u8; len as usize];
        if self.inner.read_exact(&mut v).is_err() {
            return self.fail(at, format!("the file ends inside {what}"));
        }
        self.pos += len;
        Ok(v)
    }

    /// A name (key or tensor name): UTF-8, non-empty, at most `max` bytes.
    fn name(&mut self, kind: FieldKind, max: u64, what: &str) -> Res<String> {
        let at = self.pos;
        let len = self.length(kind, &format!("the length of {what}"))?;
        if len == 0 {
            return self.fail(at, format!("{what} is empty"));
        }
        let bytes = self.raw(len, max, what)?;
        String::from_utf8(bytes).or_else(|e| {
            self.fail(
                at,
                format!("{what} {} is not UTF-8", quote_bytes(e.as_bytes())),
            )
        })
    }

    fn string(&mut self) -> Res<String> {
        let len = self.length(FieldKind::StringLength, "a string's length")?;
        if !self.build {
            let at = self.pos;
            if len > self.left() {
                return self.fail(
                    at,
                    format!(
                        "a string is {len} bytes long, only {} bytes are left in the file",
                        self.left()
                    ),
                );
            }
            let skipped = std::io::copy(&mut (&mut self.inner).take(len), &mut std::io::sink());
            if skipped.ok() != Some(len) {
                return self.fail(at, "the file ends inside a string");
            }
            self.pos += len;
            return Ok(String::new());
        }
        let mut v = self.raw(len, u64::MAX, "a string")?;
        // Strings should not be NUL-terminated, some writers do it anyway.
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
    }

    fn value_type(&mut self, kind: FieldKind, key: &str) -> Res<u32> {
        let at = self.pos;
        let t = self.u32(kind, "a value type")?;
        if t > 12 {
            return self.fail(at, format!("key {} has unknown value type {t}", quote(key)));
        }
        Ok(t)
    }

    fn value(&mut self, t: u32, key: &str, depth: usize) -> Res<Value> {
        let at = self.pos;
        let kind = if depth == 0 {
            FieldKind::Scalar
        } else {
            FieldKind::Element
        };
        Ok(match t {
            0 => Value::U8(self.bytes::<1>(kind, "a value")?[0]),
            1 => Value::I8(self.bytes::<1>(kind, "a value")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes(kind, "a value")?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes(kind, "a value")?)),
            4 => Value::U32(u32::from_le_bytes(self.bytes(kind, "a value")?)),
            5 => Value::I32(i32::from_le_bytes(self.bytes(kind, "a value")?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes(kind, "a value")?)),
            7 => match self.bytes::<1>(kind, "a value")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return self.fail(at, format!("key {} holds bool {b}", quote(key))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return self.fail(
                        at,
                        format!("key {} nests arrays more than {MAX_DEPTH} deep", quote(key)),
                    );
                }
                let et = self.value_type(FieldKind::ArrayType, key)?;
                let len_at = self.pos;
                let len = self.length(FieldKind::ArrayLength, "an array's length")?;
                let min = min_size(et, self.length_size());
                if len.saturating_mul(min) > self.left() {
                    return self.fail(
                        len_at,
                        format!(
                            "key {} declares {len} array elements, more than the {} bytes left in the file can hold",
                            quote(key),
                            self.left()
                        ),
                    );
                }
                let mut v = Vec::with_capacity(if self.build { len as usize } else { 0 });
                for _ in 0..len {
                    let e = self.value(et, key, depth + 1)?;
                    if self.build {
                        v.push(e);
                    }
                }
                Value::Array(v)
            }
            10 => Value::U64(u64::from_le_bytes(self.bytes(kind, "a value")?)),
            11 => Value::I64(i64::from_le_bytes(self.bytes(kind, "a value")?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes(kind, "a value")?)),
            _ => unreachable!("value types are checked when read"),
        })
    }
}

/// The fewest bytes one value of GGUF type `t` takes.
fn min_size(t: u32, length_size: u64) -> u64 {
    match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => length_size,
        9 => 4 + length_size,
        _ => 8,
    }
}

/// GGML's type ids, as candle knows them.
pub fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    use GgmlDType::*;
    Some(match id {
        0 => F32,
        1 => F16,
        2 => Q4_0,
        3 => Q4_1,
        6 => Q5_0,
        7 => Q5_1,
        8 => Q8_0,
        9 => Q8_1,
        10 => Q2K,
        11 => Q3K,
        12 => Q4K,
        13 => Q5K,
        14 => Q6K,
        15 => Q8K,
        30 => BF16,
        _ => return None,
    })
}

/// Reads and checks the header of a GGUF file of `size` bytes from `r`. With `record`, also
/// where each field lies. Two passes: the first checks the whole structure without building
/// strings and arrays, the second builds them.
pub fn read(mut r: impl Read + Seek, size: u64, record: bool) -> Res<(Content, Vec<Field>)> {
    let rewind = |r: &mut dyn Seek| {
        r.seek(SeekFrom::Start(0))
            .map(drop)
            .map_err(|e| HeaderError {
                offset: 0,
                reason: format!("cannot read the file ({e})"),
            })
    };
    rewind(&mut r)?;
    parse(&mut r, size, false, false)?;
    rewind(&mut r)?;
    parse(&mut r, size, true, record)
}

fn parse(r: impl Read, size: u64, build: bool, record: bool) -> Res<(Content, Vec<Field>)> {
    let mut r = Reader {
        inner: r,
        pos: 0,
        size,
        wide: true,
        build,
        fields: record.then(Vec::new),
    };
    let magic = r.bytes::<4>(FieldKind::Version, "the magic")?;
    if &magic != b"GGUF" {
        return r.fail(0, "the file does not start with \"GGUF\"");
    }
    let version = r.u32(FieldKind::Version, "the version")?;
    let magic = match version {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return r.fail(4, format!("GGUF version {v} is not one of 1, 2, 3")),
    };
    r.wide = version > 1;
    let counts_at = r.pos;
    let n_tensors = r.length(FieldKind::TensorCount, "the tensor count")?;
    let n_kv = r.length(FieldKind::KvCount, "the metadata count")?;
    let ls = r.length_size();
    // A key/value is at least a length, a type and one byte; a tensor entry at least a
    // length, a dimension count, one dimension, a type and an offset.
    let least = n_kv
        .saturating_mul(ls + 4 + 1)
        .saturating_add(n_tensors.saturating_mul(ls + 1 + 4 + ls + 4 + 8));
    if least > r.left() {
        return r.fail(
            counts_at,
            format!(
                "the header declares {n_tensors} tensors and {n_kv} metadata keys, more than the {} bytes left in the file can hold",
                r.left()
            ),
        );
    }

    let mut metadata = HashMap::new();
    for _ in 0..n_kv {
        let at = r.pos;
        let key = r.name(FieldKind::KeyLength, MAX_KEY, "a metadata key")?;
        let t = r.value_type(FieldKind::ValueType, &key)?;
        let v = r.value(t, &key, 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return r.fail(at, format!("metadata key {} appears twice", quote(&key)));
        }
    }
    let alignment = alignment(&metadata).map_err(|reason| HeaderError {
        offset: counts_at,
        reason,
    })?;

    let mut tensors = Vec::with_capacity(n_tensors.min(1 << 12) as usize);
    for _ in 0..n_tensors {
        let at = r.pos;
        let name = r.name(FieldKind::NameLength, MAX_TENSOR_NAME - 1, "a tensor name")?;
        let q = quote(&name);
        let dims_at = r.pos;
        let n_dims = r.u32(FieldKind::Dims, "a tensor's dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return r.fail(
                dims_at,
                format!("tensor {q} has {n_dims} dimensions (1 to {MAX_DIMS} are possible)"),
            );
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut elems: u64 = 1;
        for _ in 0..n_dims {
            let d_at = r.pos;
            let d = r.length(FieldKind::Dim, "a tensor dimension")?;
            elems = match elems.checked_mul(d) {
                Some(e) if d > 0 && e <= i64::MAX as u64 => e,
                _ => {
                    return r.fail(
                        d_at,
                        format!("tensor {q} has dimension {d} (it must be at least 1 and the element count must fit 63 bits)"),
                    )
                }
            };
            dims.push(d);
        }
        let type_at = r.pos;
        let type_id = r.u32(FieldKind::TensorType, "a tensor type")?;
        let Some(dtype) = ggml_dtype(type_id) else {
            return r.fail(
                type_at,
                format!("tensor {q} has unknown GGML type {type_id}"),
            );
        };
        if dims[0] % dtype.block_size() as u64 != 0 {
            return r.fail(
                dims_at,
                format!(
                    "tensor {q} has rows of {} values, not whole {dtype:?} blocks of {}",
                    dims[0],
                    dtype.block_size()
                ),
            );
        }
        let offset_at = r.pos;
        let offset = r.u64(FieldKind::TensorOffset, "a tensor offset")?;
        if offset % alignment != 0 {
            return r.fail(
                offset_at,
                format!("tensor {q} starts at data offset {offset}, not a multiple of the alignment {alignment}"),
            );
        }
        let bytes = elems / dtype.block_size() as u64 * dtype.type_size() as u64;
        tensors.push((at, name, dims, dtype, offset, bytes));
    }

    let data_start = r.pos.div_ceil(alignment).saturating_mul(alignment);
    let mut seen = HashSet::new();
    let mut spans = Vec::with_capacity(tensors.len());
    for (at, name, _, _, offset, bytes) in &tensors {
        if !seen.insert(name.as_str()) {
            return r.fail(*at, format!("tensor {} appears twice", quote(name)));
        }
        let end = data_start
            .checked_add(*offset)
            .and_then(|s| s.checked_add(*bytes));
        match end {
            Some(end) if end <= size => spans.push((*offset, offset + bytes, *at, name.as_str())),
            _ => {
                return r.fail(
                    *at,
                    format!(
                        "tensor {} needs {bytes} bytes at data offset {offset}, past the end of the file ({size} bytes; truncated download?)",
                        quote(name)
                    ),
                )
            }
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((_, end_a, _, a), (start_b, _, at_b, b)) = (w[0], w[1]);
        if start_b < end_a {
            return r.fail(
                at_b,
                format!("tensors {} and {} overlap", quote(a), quote(b)),
            );
        }
    }

    let tensor_infos = tensors
        .into_iter()
        .map(|(_, name, mut dims, dtype, offset, _)| {
            // GGUF lists dimensions innermost first; candle's shapes are outermost first.
            dims.reverse();
            let shape: Vec<usize> = dims.into_iter().map(|d| d as usize).collect();
            (
                name,
                TensorInfo {
                    ggml_dtype: dtype,
                    shape: shape.into(),
                    offset,
                },
            )
        })
        .collect();
    Ok((
        Content {
            magic,
            metadata,
            tensor_infos,
            tensor_data_offset: data_start,
        },
        r.fields.unwrap_or_default(),
    ))
}

/// `general.alignment`: a power of two no larger than 1 MiB (32 when absent).
fn alignment(md: &HashMap<String, Value>) -> std::result::Result<u64, String> {
    let a = match md.get("general.alignment") {
        None => return Ok(DEFAULT_ALIGNMENT),
        Some(Value::U8(v)) => *v as u64,
        Some(Value::U16(v)) => *v as u64,
        Some(Value::U32(v)) => *v as u64,
        Some(Value::U64(v)) => *v,
        Some(_) => return Err("general.alignment is not an unsigned integer".into()),
    };
    if !a.is_power_of_two() || a > 1 << 20 {
        return Err(format!(
            "general.alignment is {a}, not a power of two up to 1 MiB"
        ));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 file built field by field.
    #[derive(Default)]
    struct Gguf {
        kv: Vec<u8>,
        n_kv: u64,
        tensors: Vec<u8>,
        n_tensors: u64,
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s);
    }

    impl Gguf {
        fn kv_u32(mut self, key: &str, v: u32) -> Self {
            string(&mut self.kv, key.as_bytes());
            self.kv.extend(4u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }

        fn kv_raw(mut self, raw: &[u8]) -> Self {
            self.kv.extend(raw);
            self.n_kv += 1;
            self
        }

        fn tensor(mut self, name: &[u8], dims: &[u64], ty: u32, offset: u64) -> Self {
            string(&mut self.tensors, name);
            self.tensors.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.tensors.extend(d.to_le_bytes());
            }
            self.tensors.extend(ty.to_le_bytes());
            self.tensors.extend(offset.to_le_bytes());
            self.n_tensors += 1;
            self
        }

        fn bytes(&self, data: usize) -> Vec<u8> {
            let mut b = b"GGUF".to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(self.n_tensors.to_le_bytes());
            b.extend(self.n_kv.to_le_bytes());
            b.extend(&self.kv);
            b.extend(&self.tensors);
            b.resize(b.len().div_ceil(32) * 32 + data, 0);
            b
        }
    }

    fn parse(b: &[u8]) -> Res<Content> {
        read(std::io::Cursor::new(b), b.len() as u64, false).map(|(c, _)| c)
    }

    fn error(b: &[u8]) -> String {
        let e = parse(b).expect_err("a damaged header").to_string();
        assert!(e.len() < 300 && !e.contains('\n'), "{e}");
        e
    }

    /// One F32 tensor of 2 rows of 32, and room for it.
    fn valid() -> Gguf {
        Gguf::default()
            .kv_u32("general.alignment", 32)
            .tensor(b"t", &[32, 2], 0, 0)
    }

    #[test]
    fn a_valid_header_reads_with_its_fields_mapped() {
        let b = valid().bytes(256);
        let (c, fields) = read(std::io::Cursor::new(&b), b.len() as u64, true).unwrap();
        assert_eq!(c.tensor_infos["t"].shape.dims(), &[2, 32]);
        assert_eq!(c.tensor_data_offset % 32, 0);
        assert!(matches!(c.metadata["general.alignment"], Value::U32(32)));
        let kinds: Vec<FieldKind> = fields.iter().map(|f| f.kind).collect();
        assert!(kinds.contains(&FieldKind::NameLength) && kinds.contains(&FieldKind::TensorOffset));
    }

    #[test]
    fn tensor_names_stay_under_ggml_limit_and_are_quoted_escaped() {
        let name = [b'a'; 64];
        assert!(
            error(&Gguf::default().tensor(&name, &[32], 0, 0).bytes(128))
                .contains("the limit is 63")
        );
        // A name one byte too long swallows the next field's first byte; the error is short
        // and shows it escaped.
        let mut b = valid().bytes(256);
        let at = b
            .windows(9)
            .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b't'])
            .unwrap();
        b[at] = 2;
        let e = error(&b);
        assert!(e.contains("'t\\u{2}'"), "{e}");
        let bad = Gguf::default()
            .tensor(&[0xff, 0xfe], &[32], 0, 0)
            .bytes(128);
        assert!(error(&bad).contains("'\\xff\\xfe' is not UTF-8"));
    }

    #[test]
    fn dimensions_are_bounded_and_do_not_overflow() {
        let e = |dims: &[u64]| error(&Gguf::default().tensor(b"t", dims, 0, 0).bytes(1024));
        assert!(e(&[32, 1, 1, 1, 1]).contains("5 dimensions"));
        assert!(e(&[]).contains("0 dimensions"));
        assert!(e(&[32, 0]).contains("dimension 0"));
        assert!(e(&[1 << 32, 1 << 32]).contains("63 bits"));
    }

    #[test]
    fn types_blocks_offsets_and_extents_are_checked() {
        let one = |ty: u32, dims: &[u64], offset: u64, data: usize| {
            error(&Gguf::default().tensor(b"t", dims, ty, offset).bytes(data))
        };
        assert!(one(99, &[32], 0, 256).contains("unknown GGML type 99"));
        assert!(one(8, &[33], 0, 256).contains("not whole Q8_0 blocks of 32"));
        assert!(one(0, &[32], 4, 256).contains("not a multiple of the alignment 32"));
        assert!(one(0, &[32, 4], 0, 256).contains("past the end of the file"));
        assert!(one(0, &[32], u64::MAX - 31, 256).contains("past the end"));
        let two = |second: u64| {
            Gguf::default()
                .tensor(b"a", &[32, 2], 0, 0)
                .tensor(b"b", &[32], 0, second)
                .bytes(512)
        };
        assert!(error(&two(224)).contains("tensors 'a' and 'b' overlap"));
        assert!(parse(&two(256)).is_ok());
        let twice = Gguf::default()
            .tensor(b"a", &[32], 0, 0)
            .tensor(b"a", &[32], 0, 128);
        assert!(error(&twice.bytes(512)).contains("'a' appears twice"));
    }

    #[test]
    fn lengths_and_counts_are_checked_against_the_bytes_left() {
        let mut b = valid().bytes(256);
        b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(error(&b).contains("more than the"));
        let mut huge_key = (1u64 << 20).to_le_bytes().to_vec();
        huge_key.extend(b"k");
        assert!(error(&valid().kv_raw(&huge_key).bytes(256)).contains("the limit is 65536"));
        let mut long_string = Vec::new();
        string(&mut long_string, b"k");
        long_string.extend(8u32.to_le_bytes());
        long_string.extend((1u64 << 30).to_le_bytes());
        assert!(error(&valid().kv_raw(&long_string).bytes(256)).contains("bytes are left"));
        let mut long_array = Vec::new();
        string(&mut long_array, b"k");
        long_array.extend(9u32.to_le_bytes());
        long_array.extend(6u32.to_le_bytes());
        long_array.extend((1u64 << 30).to_le_bytes());
        assert!(error(&valid().kv_raw(&long_array).bytes(256))
            .contains("declares 1073741824 array elements"));
        // Cut inside the tensor's offset (the header's counts still fit in what is left).
        let b = valid().bytes(256);
        assert!(error(&b[..90]).contains("the file ends inside a tensor offset"));
    }

    #[test]
    fn metadata_keys_are_unique_and_the_alignment_sane() {
        let twice = valid().kv_u32("k", 1).kv_u32("k", 2);
        assert!(error(&twice.bytes(256)).contains("'k' appears twice"));
        let odd = Gguf::default()
            .kv_u32("general.alignment", 24)
            .tensor(b"t", &[32], 0, 0);
        assert!(error(&odd.bytes(256)).contains("not a power of two"));
        let mut bool_value = Vec::new();
        string(&mut bool_value, b"flag");
        bool_value.extend(7u32.to_le_bytes());
        bool_value.push(2);
        assert!(error(&valid().kv_raw(&bool_value).bytes(256)).contains("holds bool 2"));
    }
}
