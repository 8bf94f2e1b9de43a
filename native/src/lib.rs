//! Decode and validate telemetry messages (contract v1, `docs/telemetry.md`) straight into
//! Arrow column buffers, without a Python object per value.
//!
//! This is an accelerator for the archive worker, not a second definition of validity: it
//! accepts a message only when it is sure the reference validator (`ingestion/validation.py`)
//! accepts it, and produces exactly the values the Python path would store. Anything it is not
//! sure about (a duplicate key, a number out of 64-bit range, an unknown field, invalid
//! values...) makes `push` return `None` and leaves the buffers as they were; the caller then
//! runs the Python validators, which name the error. `tests/ingestion/test_columnar.py` checks
//! the agreement with Hypothesis.

use std::fmt;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

const SCHEMA_VERSION: u64 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Float,
    Int,
    Bool,
    Str,
    StrList,
}

impl Kind {
    fn parse(name: &str) -> PyResult<Kind> {
        Ok(match name {
            "float" => Kind::Float,
            "int" => Kind::Int,
            "bool" => Kind::Bool,
            "string" => Kind::Str,
            "string_list" => Kind::StrList,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown signal kind {other:?}"
                )))
            }
        })
    }
}

/// What a signal accepts: its kind, inclusive bounds and, for strings, the allowed values.
struct Spec {
    kind: Kind,
    flo: f64,
    fhi: f64,
    ilo: i64,
    ihi: i64,
    allowed: Option<Vec<Vec<u8>>>,
}

impl Spec {
    fn allows(&self, value: &[u8]) -> bool {
        match &self.allowed {
            None => true,
            Some(values) => values.iter().any(|v| v.as_slice() == value),
        }
    }
}

/// Variable-length UTF-8 values in Arrow's layout: `offsets[i]..offsets[i + 1]` in `data`.
#[derive(Default)]
struct Strings {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl Strings {
    fn new() -> Self {
        Strings {
            offsets: vec![0],
            data: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn push(&mut self, value: &[u8]) -> Result<(), &'static str> {
        self.data.extend_from_slice(value);
        let end = i32::try_from(self.data.len()).map_err(|_| "buffer exceeds 2 GiB")?;
        self.offsets.push(end);
        Ok(())
    }

    fn truncate(&mut self, n: usize) {
        self.offsets.truncate(n + 1);
        self.data.truncate(self.offsets[n] as usize);
    }
}

/// One signal column, sparse while filling: `rows[i]` is the row of the i-th value (rows only
/// grow, so truncation pops from the end). `take()` makes it dense.
struct Column {
    rows: Vec<u32>,
    floats: Vec<f64>,
    ints: Vec<i64>,
    bools: Vec<u8>,
    /// string: one string per value; string list: the items of every value, the i-th value
    /// ending at item `lists[i]`.
    strings: Strings,
    lists: Vec<i32>,
}

impl Column {
    fn new() -> Self {
        Column {
            rows: Vec::new(),
            floats: Vec::new(),
            ints: Vec::new(),
            bools: Vec::new(),
            strings: Strings::new(),
            lists: Vec::new(),
        }
    }

    /// Drop the values of rows `rows..`, and any string or list item of a value that failed
    /// half-way (those were pushed before their row was).
    fn truncate(&mut self, kind: Kind, rows: usize) {
        let mut keep = self.rows.len();
        while keep > 0 && self.rows[keep - 1] as usize >= rows {
            keep -= 1;
        }
        self.rows.truncate(keep);
        match kind {
            Kind::Float => self.floats.truncate(keep),
            Kind::Int => self.ints.truncate(keep),
            Kind::Bool => self.bools.truncate(keep),
            Kind::Str => self.strings.truncate(keep),
            Kind::StrList => {
                self.lists.truncate(keep);
                self.strings
                    .truncate(self.lists.last().copied().unwrap_or(0) as usize);
            }
        }
    }

    /// Validity bitmap of `n` rows and the number of nulls.
    fn validity(&self, n: usize) -> (Vec<u8>, usize) {
        let mut bits = vec![0u8; n.div_ceil(8)];
        for &row in &self.rows {
            bits[row as usize / 8] |= 1 << (row % 8);
        }
        (bits, n - self.rows.len())
    }

    fn dense<T: Copy + Default>(&self, values: &[T], n: usize) -> Vec<T> {
        let mut out = vec![T::default(); n];
        for (&row, &v) in self.rows.iter().zip(values) {
            out[row as usize] = v;
        }
        out
    }

    /// Row offsets (n + 1) of a variable-length column, from the cumulative end of each value.
    fn dense_offsets(&self, n: usize, ends: &[i32]) -> Vec<i32> {
        let mut out = Vec::with_capacity(n + 1);
        out.push(0);
        let (mut current, mut next) = (0i32, 0usize);
        for row in 0..n {
            if next < self.rows.len() && self.rows[next] as usize == row {
                current = ends[next];
                next += 1;
            }
            out.push(current);
        }
        out
    }
}

/// Per-row columns shared by every message (the archive's base fields).
struct Base {
    vin: Strings,
    message_id: Strings,
    seq: Vec<i64>,
    ts: Vec<i64>,
    received_at: Vec<i64>,
    received_valid: Vec<u8>,
    partition: Vec<i32>,
    offset: Vec<i64>,
}

impl Base {
    fn new() -> Self {
        Base {
            vin: Strings::new(),
            message_id: Strings::new(),
            seq: Vec::new(),
            ts: Vec::new(),
            received_at: Vec::new(),
            received_valid: Vec::new(),
            partition: Vec::new(),
            offset: Vec::new(),
        }
    }
}

/// Fixed decoding rules (from the catalog and the limits).
struct Rules {
    specs: Vec<Spec>,
    names: Vec<Box<str>>,
    index: FxHashMap<Box<str>, usize>,
    max_samples: usize,
    max_message_id_len: usize,
    max_age_ms: i64,
    max_future_skew_ms: i64,
}

/// Signal columns being filled; `rows` counts samples.
struct Signals {
    columns: Vec<Column>,
    seen: Vec<u64>,
    /// For each column (and, last, the start of a sample): the column whose key came next the
    /// last time, tried first when looking up the next key.
    follows: Vec<usize>,
    rows: usize,
}

struct Ctx<'a> {
    rules: &'a Rules,
    signals: &'a mut Signals,
    ts: &'a mut Vec<i64>,
    earliest: i64,
    latest: i64,
}

struct Header {
    vin: String,
    message_id: String,
    seq: i64,
}

fn fail<E: de::Error>(why: &'static str) -> E {
    E::custom(why)
}

// -- top level --------------------------------------------------------------------------------

enum TopKey {
    Vin,
    MessageId,
    Seq,
    Samples,
    V,
    SentAt,
}

struct TopKeySeed;

impl<'de> DeserializeSeed<'de> for TopKeySeed {
    type Value = TopKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TopKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TopKeySeed {
    type Value = TopKey;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message field")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<TopKey, E> {
        Ok(match key {
            "vin" => TopKey::Vin,
            "message_id" => TopKey::MessageId,
            "seq" => TopKey::Seq,
            "samples" => TopKey::Samples,
            "v" => TopKey::V,
            "sent_at" => TopKey::SentAt,
            _ => return Err(fail("unknown field")),
        })
    }
}

/// An integer that fits in i64 (floats and larger integers are refused).
struct I64Seed;

impl<'de> DeserializeSeed<'de> for I64Seed {
    type Value = i64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for I64Seed {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| fail("integer out of range"))
    }
}

/// `sent_at`: an integer or null (not stored, only checked).
struct OptI64Seed;

impl<'de> DeserializeSeed<'de> for OptI64Seed {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OptI64Seed {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or null")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

struct MessageSeed<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl<'de, 'c, 'a> DeserializeSeed<'de> for MessageSeed<'c, 'a> {
    type Value = Header;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Header, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'c, 'a> Visitor<'de> for MessageSeed<'c, 'a> {
    type Value = Header;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a telemetry message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        let mut vin: Option<String> = None;
        let mut message_id: Option<String> = None;
        let mut seq: Option<i64> = None;
        let mut version: Option<i64> = None;
        let mut sent_at = false;
        let mut samples: Option<usize> = None;
        while let Some(key) = map.next_key_seed(TopKeySeed)? {
            match key {
                TopKey::Vin if vin.is_none() => vin = Some(map.next_value()?),
                TopKey::MessageId if message_id.is_none() => message_id = Some(map.next_value()?),
                TopKey::Seq if seq.is_none() => seq = Some(map.next_value_seed(I64Seed)?),
                TopKey::V if version.is_none() => version = Some(map.next_value_seed(I64Seed)?),
                TopKey::SentAt if !sent_at => {
                    map.next_value_seed(OptI64Seed)?;
                    sent_at = true;
                }
                TopKey::Samples if samples.is_none() => {
                    samples = Some(map.next_value_seed(SamplesSeed {
                        ctx: &mut *self.ctx,
                    })?)
                }
                _ => return Err(fail("duplicate field")),
            }
        }
        let rules = self.ctx.rules;
        let (Some(vin), Some(message_id), Some(seq), Some(samples)) =
            (vin, message_id, seq, samples)
        else {
            return Err(fail("missing field"));
        };
        if version.unwrap_or(SCHEMA_VERSION as i64) != SCHEMA_VERSION as i64 {
            return Err(fail("unsupported version"));
        }
        if !valid_vin(&vin) {
            return Err(fail("invalid vin"));
        }
        let id_len = message_id.chars().count();
        if id_len == 0 || id_len > rules.max_message_id_len {
            return Err(fail("invalid message_id"));
        }
        if seq < 0 {
            return Err(fail("negative seq"));
        }
        if samples == 0 {
            return Err(fail("no samples"));
        }
        Ok(Header {
            vin,
            message_id,
            seq,
        })
    }
}

/// 17 characters of 0-9 and A-Z without I, O and Q (ISO 3779), as `core.vin.VIN_RE`.
fn valid_vin(vin: &str) -> bool {
    vin.len() == 17
        && vin.bytes().all(|c| {
            c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, b'I' | b'O' | b'Q'))
        })
}

// -- samples ----------------------------------------------------------------------------------

struct SamplesSeed<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl<'de, 'c, 'a> DeserializeSeed<'de> for SamplesSeed<'c, 'a> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, 'c, 'a> Visitor<'de> for SamplesSeed<'c, 'a> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of samples")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<usize, S::Error> {
        let mut count = 0usize;
        while seq
            .next_element_seed(SampleSeed {
                ctx: &mut *self.ctx,
            })?
            .is_some()
        {
            count += 1;
            if count > self.ctx.rules.max_samples {
                return Err(fail("too many samples"));
            }
        }
        Ok(count)
    }
}

struct SampleSeed<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl<'de, 'c, 'a> DeserializeSeed<'de> for SampleSeed<'c, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'c, 'a> Visitor<'de> for SampleSeed<'c, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sample object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        ctx.signals.rows += 1;
        let mut ts: Option<i64> = None;
        let mut signals: Option<usize> = None;
        while let Some(key) = map.next_key::<SampleKey>()? {
            match key {
                SampleKey::Ts if ts.is_none() => ts = Some(map.next_value_seed(I64Seed)?),
                SampleKey::Signals if signals.is_none() => {
                    signals = Some(map.next_value_seed(SignalsSeed { ctx: &mut *ctx })?)
                }
                _ => return Err(fail("duplicate field")),
            }
        }
        let (Some(ts), Some(signals)) = (ts, signals) else {
            return Err(fail("missing field"));
        };
        if ts < ctx.earliest || ts > ctx.latest || signals == 0 {
            return Err(fail("invalid sample"));
        }
        ctx.ts.push(ts);
        Ok(())
    }
}

enum SampleKey {
    Ts,
    Signals,
}

impl<'de> de::Deserialize<'de> for SampleKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SampleKey, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SampleKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("ts or signals")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<SampleKey, E> {
                match key {
                    "ts" => Ok(SampleKey::Ts),
                    "signals" => Ok(SampleKey::Signals),
                    _ => Err(fail("unknown field")),
                }
            }
        }
        d.deserialize_str(V)
    }
}

// -- signals ----------------------------------------------------------------------------------

struct SignalsSeed<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl<'de, 'c, 'a> DeserializeSeed<'de> for SignalsSeed<'c, 'a> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'c, 'a> Visitor<'de> for SignalsSeed<'c, 'a> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of signals")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let rules = self.ctx.rules;
        let signals = &mut *self.ctx.signals;
        let row = u32::try_from(signals.rows - 1).map_err(|_| fail("too many rows"))?;
        signals.seen.iter_mut().for_each(|w| *w = 0);
        let mut count = 0usize;
        let mut previous = rules.specs.len(); // "start of the object" in `signals.follows`
        while let Some(index) = map.next_key_seed(SignalKeySeed {
            rules,
            guess: signals.follows[previous],
        })? {
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            if signals.seen[word] & bit != 0 {
                return Err(fail("duplicate signal"));
            }
            signals.seen[word] |= bit;
            signals.follows[previous] = index;
            previous = index;
            let spec = &rules.specs[index];
            map.next_value_seed(ValueSeed {
                spec,
                column: &mut signals.columns[index],
                row,
            })?;
            count += 1;
        }
        Ok(count)
    }
}

/// Finds a signal's column. Vehicles send their signals in the same order sample after
/// sample, so the column that followed the previous key last time is tried first (one compare
/// instead of hashing a 40-byte path).
struct SignalKeySeed<'r> {
    rules: &'r Rules,
    guess: usize,
}

impl<'de, 'r> DeserializeSeed<'de> for SignalKeySeed<'r> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'r> Visitor<'de> for SignalKeySeed<'r> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a catalog signal path")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        if self
            .rules
            .names
            .get(self.guess)
            .is_some_and(|name| **name == *key)
        {
            return Ok(self.guess);
        }
        self.rules
            .index
            .get(key)
            .copied()
            .ok_or_else(|| fail("unknown signal"))
    }
}

/// One signal value, checked against its spec and written into the current row.
struct ValueSeed<'s, 'c> {
    spec: &'s Spec,
    column: &'c mut Column,
    row: u32,
}

impl<'de, 's, 'c> DeserializeSeed<'de> for ValueSeed<'s, 'c> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'s, 'c> ValueSeed<'s, 'c> {
    fn set_float<E: de::Error>(self, v: f64) -> Result<(), E> {
        if self.spec.kind != Kind::Float {
            return Err(fail("wrong type"));
        }
        if !v.is_finite() || v < self.spec.flo || v > self.spec.fhi {
            return Err(fail("out of range"));
        }
        self.column.rows.push(self.row);
        self.column.floats.push(v + 0.0); // -0.0 is stored as 0.0 (docs/archive.md)
        Ok(())
    }

    fn set_int<E: de::Error>(self, v: i64) -> Result<(), E> {
        match self.spec.kind {
            Kind::Int => {
                if v < self.spec.ilo || v > self.spec.ihi {
                    return Err(fail("out of range"));
                }
                self.column.rows.push(self.row);
                self.column.ints.push(v);
                Ok(())
            }
            // A JSON integer is a valid number; Python stores float(v), correctly rounded.
            Kind::Float => self.set_float(v as f64),
            _ => Err(fail("wrong type")),
        }
    }
}

impl<'de, 's, 'c> Visitor<'de> for ValueSeed<'s, 'c> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {:?} value", self.spec.kind)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.set_float(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.set_int(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match self.spec.kind {
            Kind::Float => self.set_float(v as f64),
            _ => self.set_int(i64::try_from(v).map_err(|_| fail("integer out of range"))?),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.spec.kind != Kind::Bool {
            return Err(fail("wrong type"));
        }
        self.column.rows.push(self.row);
        self.column.bools.push(v as u8);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.spec.kind != Kind::Str || !self.spec.allows(v.as_bytes()) {
            return Err(fail("wrong type or value"));
        }
        self.column.strings.push(v.as_bytes()).map_err(fail)?;
        self.column.rows.push(self.row);
        Ok(())
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        if self.spec.kind != Kind::StrList {
            return Err(fail("wrong type"));
        }
        let column = self.column;
        while seq
            .next_element_seed(ItemSeed {
                spec: self.spec,
                strings: &mut column.strings,
            })?
            .is_some()
        {}
        let end = i32::try_from(column.strings.len()).map_err(|_| fail("too many items"))?;
        column.lists.push(end);
        column.rows.push(self.row);
        Ok(())
    }
}

/// One string of a string-list signal.
struct ItemSeed<'s, 'c> {
    spec: &'s Spec,
    strings: &'c mut Strings,
}

impl<'de, 's, 'c> DeserializeSeed<'de> for ItemSeed<'s, 'c> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 's, 'c> Visitor<'de> for ItemSeed<'s, 'c> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if !self.spec.allows(v.as_bytes()) {
            return Err(fail("value not allowed"));
        }
        self.strings.push(v.as_bytes()).map_err(fail)
    }
}

// -- the Python class -------------------------------------------------------------------------

/// Validity as an Arrow bitmap (LSB first), or None when every value is present.
fn bitmap<'py>(py: Python<'py>, valid: &[u8]) -> (Option<Bound<'py, PyBytes>>, usize) {
    let nulls = valid.iter().filter(|&&v| v == 0).count();
    if nulls == 0 {
        return (None, 0);
    }
    (Some(PyBytes::new(py, &pack_bits(valid))), nulls)
}

fn pack_bits(values: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8; values.len().div_ceil(8)];
    for (i, &v) in values.iter().enumerate() {
        bits[i / 8] |= (v & 1) << (i % 8);
    }
    bits
}

fn le_bytes<'py, T: Copy, const N: usize>(
    py: Python<'py>,
    values: &[T],
    to: fn(T) -> [u8; N],
) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        out.extend_from_slice(&to(v));
    }
    PyBytes::new(py, &out)
}

type Buffers<'py> = (Option<Bound<'py, PyBytes>>, usize, Vec<Bound<'py, PyBytes>>);

/// Accumulates the rows of many messages; `take()` hands them over as Arrow buffers.
#[pyclass(module = "ingestion._columnar")]
pub struct ColumnarDecoder {
    rules: Rules,
    signals: Signals,
    base: Base,
    messages: usize,
    last_start: Option<usize>,
}

#[pymethods]
impl ColumnarDecoder {
    /// `specs`: per signal column, in output order, `(path, kind, float_lo, float_hi, int_lo,
    /// int_hi, allowed)` with kind one of float, int, bool, string, string_list.
    #[new]
    #[pyo3(signature = (specs, *, max_samples, max_message_id_len, max_age_ms, max_future_skew_ms))]
    #[allow(clippy::type_complexity)]
    fn new(
        specs: Vec<(
            String,
            String,
            Option<f64>,
            Option<f64>,
            Option<i64>,
            Option<i64>,
            Option<Vec<String>>,
        )>,
        max_samples: usize,
        max_message_id_len: usize,
        max_age_ms: i64,
        max_future_skew_ms: i64,
    ) -> PyResult<Self> {
        let mut index = FxHashMap::default();
        let mut parsed = Vec::with_capacity(specs.len());
        for (i, (path, kind, flo, fhi, ilo, ihi, allowed)) in specs.into_iter().enumerate() {
            if index.insert(path.clone().into_boxed_str(), i).is_some() {
                return Err(PyValueError::new_err(format!(
                    "signal {path:?} given twice"
                )));
            }
            parsed.push(Spec {
                kind: Kind::parse(&kind)?,
                flo: flo.unwrap_or(f64::NEG_INFINITY),
                fhi: fhi.unwrap_or(f64::INFINITY),
                ilo: ilo.unwrap_or(i64::MIN),
                ihi: ihi.unwrap_or(i64::MAX),
                allowed: allowed.map(|values| values.into_iter().map(String::into_bytes).collect()),
            });
        }
        let count = parsed.len();
        let columns = parsed.iter().map(|_| Column::new()).collect();
        let words = count.div_ceil(64).max(1);
        let mut names: Vec<Box<str>> = vec![Box::from(""); count];
        for (name, &i) in &index {
            names[i] = name.clone();
        }
        Ok(ColumnarDecoder {
            rules: Rules {
                specs: parsed,
                names,
                index,
                max_samples,
                max_message_id_len,
                max_age_ms,
                max_future_skew_ms,
            },
            signals: Signals {
                columns,
                seen: vec![0; words],
                follows: vec![usize::MAX; count + 1],
                rows: 0,
            },
            base: Base::new(),
            messages: 0,
            last_start: None,
        })
    }

    /// Decode and validate one message; when valid, append its samples as rows and return
    /// `(vin, message_id)`, otherwise leave the buffers unchanged and return None.
    #[pyo3(signature = (raw, now_ms, partition, offset, received_at))]
    fn push(
        &mut self,
        raw: &[u8],
        now_ms: i64,
        partition: i32,
        offset: i64,
        received_at: Option<i64>,
    ) -> Option<(String, String)> {
        let start = self.signals.rows;
        let mut ctx = Ctx {
            rules: &self.rules,
            signals: &mut self.signals,
            ts: &mut self.base.ts,
            earliest: now_ms.saturating_sub(self.rules.max_age_ms),
            latest: now_ms.saturating_add(self.rules.max_future_skew_ms),
        };
        let mut de = sonic_rs::Deserializer::from_slice(raw);
        let decoded = MessageSeed { ctx: &mut ctx }
            .deserialize(&mut de)
            .and_then(|h| de.end().map(|_| h));
        let header = match decoded {
            Ok(header) => header,
            Err(_) => {
                self.truncate(start);
                return None;
            }
        };
        let rows = self.signals.rows - start;
        let base = &mut self.base;
        for _ in 0..rows {
            if base.vin.push(header.vin.as_bytes()).is_err()
                || base.message_id.push(header.message_id.as_bytes()).is_err()
            {
                self.truncate(start);
                return None;
            }
            base.seq.push(header.seq);
            base.received_at.push(received_at.unwrap_or(0));
            base.received_valid.push(received_at.is_some() as u8);
            base.partition.push(partition);
            base.offset.push(offset);
        }
        self.messages += 1;
        self.last_start = Some(start);
        Some((header.vin, header.message_id))
    }

    /// Remove the rows of the last accepted message (a duplicate the caller decided to drop).
    fn discard_last(&mut self) -> PyResult<()> {
        let start = self
            .last_start
            .take()
            .ok_or_else(|| PyValueError::new_err("no message to discard"))?;
        self.truncate(start);
        self.messages -= 1;
        Ok(())
    }

    /// Rows (samples) buffered.
    #[getter]
    fn rows(&self) -> usize {
        self.signals.rows
    }

    /// Messages buffered.
    #[getter]
    fn messages(&self) -> usize {
        self.messages
    }

    /// Hand over and reset the buffers: `(rows, base, columns)` where base maps each base field
    /// to `(validity, null_count, buffers)` and columns lists the same per signal, in spec
    /// order. Buffers follow Arrow's layouts (validity bitmaps, little-endian values, int32
    /// offsets; a string list's last two buffers are its items' offsets and data).
    #[allow(clippy::type_complexity)]
    fn take<'py>(
        &mut self,
        py: Python<'py>,
    ) -> (usize, Vec<(&'static str, Buffers<'py>)>, Vec<Buffers<'py>>) {
        let rows = self.signals.rows;
        let base = std::mem::replace(&mut self.base, Base::new());
        let columns = std::mem::replace(
            &mut self.signals.columns,
            self.rules.specs.iter().map(|_| Column::new()).collect(),
        );
        self.signals.rows = 0;
        self.messages = 0;
        self.last_start = None;
        let i64s = |values: &[i64]| le_bytes(py, values, i64::to_le_bytes);
        let strings = |s: &Strings| {
            vec![
                le_bytes(py, &s.offsets, i32::to_le_bytes),
                PyBytes::new(py, &s.data),
            ]
        };
        let base_out = vec![
            ("vin", (None, 0, strings(&base.vin))),
            ("message_id", (None, 0, strings(&base.message_id))),
            ("seq", (None, 0, vec![i64s(&base.seq)])),
            ("ts", (None, 0, vec![i64s(&base.ts)])),
            ("received_at", {
                let (validity, nulls) = bitmap(py, &base.received_valid);
                (validity, nulls, vec![i64s(&base.received_at)])
            }),
            (
                "kafka_partition",
                (
                    None,
                    0,
                    vec![le_bytes(py, &base.partition, i32::to_le_bytes)],
                ),
            ),
            ("kafka_offset", (None, 0, vec![i64s(&base.offset)])),
        ];
        let mut out = Vec::with_capacity(columns.len());
        for (column, spec) in columns.iter().zip(&self.rules.specs) {
            let (bits, nulls) = column.validity(rows);
            let validity = (nulls > 0).then(|| PyBytes::new(py, &bits));
            let buffers = match spec.kind {
                Kind::Float => {
                    vec![le_bytes(
                        py,
                        &column.dense(&column.floats, rows),
                        f64::to_le_bytes,
                    )]
                }
                Kind::Int => vec![i64s(&column.dense(&column.ints, rows))],
                Kind::Bool => vec![PyBytes::new(
                    py,
                    &pack_bits(&column.dense(&column.bools, rows)),
                )],
                Kind::Str => {
                    let offsets = column.dense_offsets(rows, &column.strings.offsets[1..]);
                    vec![
                        le_bytes(py, &offsets, i32::to_le_bytes),
                        PyBytes::new(py, &column.strings.data),
                    ]
                }
                Kind::StrList => {
                    let offsets = column.dense_offsets(rows, &column.lists);
                    let mut b = vec![le_bytes(py, &offsets, i32::to_le_bytes)];
                    b.extend(strings(&column.strings));
                    b
                }
            };
            out.push((validity, nulls, buffers));
        }
        (rows, base_out, out)
    }
}

impl ColumnarDecoder {
    fn truncate(&mut self, rows: usize) {
        for (column, spec) in self.signals.columns.iter_mut().zip(&self.rules.specs) {
            column.truncate(spec.kind, rows);
        }
        self.signals.rows = rows;
        let base = &mut self.base;
        base.ts.truncate(rows);
        if base.vin.len() > rows {
            base.vin.truncate(rows);
            base.message_id.truncate(rows);
            base.seq.truncate(rows);
            base.received_at.truncate(rows);
            base.received_valid.truncate(rows);
            base.partition.truncate(rows);
            base.offset.truncate(rows);
        }
    }
}

#[pymodule]
fn _columnar(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ColumnarDecoder>()?;
    Ok(())
}
