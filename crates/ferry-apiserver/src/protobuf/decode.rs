//! The walker: reads the envelope, then each message field by field, guided by the schema
//! table, and builds the Kubernetes JSON form.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use super::schema::{KINDS, MESSAGES, META_KINDS};
use super::table::{Field, Message, Shape, Special, Ty};
use super::wire::{FIXED64, Fault, LEN, Reader, VARINT};
use super::{MAGIC, MAX_DEPTH, ProtobufError};

type Result<T> = std::result::Result<T, ProtobufError>;
type Object = Map<String, Value>;

/// One step of the path to the value being decoded (for error messages).
enum Seg {
    Field(&'static str),
    Index(usize),
}

struct Decoder {
    root: String,
    path: Vec<Seg>,
    /// The messages being decoded, innermost last (their depth is the nesting depth).
    messages: Vec<&'static str>,
}

/// Decodes a whole body (magic, envelope, object).
pub(super) fn body(body: &[u8]) -> Result<Value> {
    let mut d = Decoder {
        root: String::new(),
        path: Vec::new(),
        messages: Vec::new(),
    };
    d.envelope(body, 0)
}

/// The message for an envelope's apiVersion and kind.
pub(super) fn lookup(api_version: &str, kind: &str) -> Option<&'static Message> {
    let i = match KINDS.binary_search_by(|(a, k, _)| (*a, *k).cmp(&(api_version, kind))) {
        Ok(i) => KINDS[i].2,
        Err(_) => {
            let i = META_KINDS.binary_search_by(|(k, _)| (*k).cmp(kind)).ok()?;
            META_KINDS[i].1
        }
    };
    MESSAGES.get(usize::from(i))
}

fn wire_name(wire_type: u8) -> &'static str {
    match wire_type {
        VARINT => "varint",
        FIXED64 => "64-bit",
        LEN => "length-delimited",
        5 => "32-bit",
        _ => "invalid",
    }
}

/// The object at `key`, replacing whatever else is there.
fn object_at<'m>(out: &'m mut Object, key: &str) -> &'m mut Object {
    let slot = out.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// The array at `key`, replacing whatever else is there.
fn array_at<'m>(out: &'m mut Object, key: &str) -> &'m mut Vec<Value> {
    let slot = out.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(a) => a,
        _ => unreachable!("just made an array"),
    }
}

impl Decoder {
    fn at(&self) -> String {
        let mut s = if self.root.is_empty() {
            "envelope".to_string()
        } else {
            self.root.clone()
        };
        for seg in &self.path {
            match seg {
                Seg::Field(f) => {
                    s.push('.');
                    s.push_str(f);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        if let Some(m) = self.messages.last() {
            s.push_str(" in ");
            s.push_str(m);
        }
        s
    }

    fn fault(&self, f: Fault) -> ProtobufError {
        ProtobufError::Malformed {
            offset: f.offset,
            path: self.at(),
            reason: f.reason.to_string(),
        }
    }

    fn invalid(&self, offset: usize, reason: String) -> ProtobufError {
        ProtobufError::InvalidValue {
            offset,
            path: self.at(),
            reason,
        }
    }

    fn expect_wire(&self, r: &Reader, expected: u8, found: u8) -> Result<()> {
        if expected == found {
            return Ok(());
        }
        Err(ProtobufError::WireType {
            offset: r.offset(),
            path: self.at(),
            expected: wire_name(expected),
            found,
        })
    }

    fn key(&self, r: &mut Reader) -> Result<(u32, u8)> {
        r.key().map_err(|f| self.fault(f))
    }

    fn skip(&self, r: &mut Reader, wire_type: u8) -> Result<()> {
        r.skip(wire_type).map_err(|f| self.fault(f))
    }

    fn len<'a>(&self, wire_type: u8, r: &mut Reader<'a>) -> Result<Reader<'a>> {
        self.expect_wire(r, LEN, wire_type)?;
        r.len_delimited().map_err(|f| self.fault(f))
    }

    fn varint(&self, wire_type: u8, r: &mut Reader) -> Result<u64> {
        self.expect_wire(r, VARINT, wire_type)?;
        r.varint().map_err(|f| self.fault(f))
    }

    fn string(&self, wire_type: u8, r: &mut Reader) -> Result<String> {
        let bytes = self.len(wire_type, r)?;
        // Go does not validate UTF-8 in protobuf strings and its JSON encoder replaces bad
        // sequences; do the same.
        Ok(String::from_utf8_lossy(bytes.rest()).into_owned())
    }

    fn envelope(&mut self, body: &[u8], base: usize) -> Result<Value> {
        let rest = body
            .strip_prefix(&MAGIC[..])
            .ok_or(ProtobufError::MissingMagic)?;
        let mut r = Reader::new(rest, base + MAGIC.len());
        let (mut api_version, mut kind) = (String::new(), String::new());
        let (mut encoding, mut content_type) = (String::new(), String::new());
        let mut raw = Reader::new(&[], r.offset());
        while !r.is_empty() {
            let (tag, wt) = self.key(&mut r)?;
            match tag {
                1 => {
                    let mut type_meta = self.len(wt, &mut r)?;
                    while !type_meta.is_empty() {
                        let (tag, wt) = self.key(&mut type_meta)?;
                        match tag {
                            1 => api_version = self.string(wt, &mut type_meta)?,
                            2 => kind = self.string(wt, &mut type_meta)?,
                            _ => self.skip(&mut type_meta, wt)?,
                        }
                    }
                }
                2 => raw = self.len(wt, &mut r)?,
                3 => encoding = self.string(wt, &mut r)?,
                4 => content_type = self.string(wt, &mut r)?,
                _ => self.skip(&mut r, wt)?,
            }
        }
        if !encoding.is_empty() {
            return Err(ProtobufError::UnsupportedEncoding(encoding));
        }
        if kind.is_empty() {
            return Err(ProtobufError::MissingKind { api_version });
        }
        let mut out = Map::new();
        if !api_version.is_empty() {
            out.insert("apiVersion".into(), Value::String(api_version.clone()));
        }
        out.insert("kind".into(), Value::String(kind.clone()));
        if content_type.contains("json") {
            let offset = raw.offset();
            let mut object = match serde_json::from_slice(raw.rest()) {
                Ok(Value::Object(o)) => o,
                Ok(_) => return Err(self.invalid(offset, "the JSON body is not an object".into())),
                Err(e) => return Err(self.invalid(offset, format!("invalid JSON: {e}"))),
            };
            for (k, v) in out {
                object.entry(k).or_insert(v);
            }
            return Ok(Value::Object(object));
        }
        if !content_type.is_empty() && !content_type.contains("protobuf") {
            return Err(ProtobufError::UnsupportedEncoding(content_type));
        }
        let message = lookup(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
        if self.root.is_empty() {
            self.root = kind;
        }
        self.message(message, raw, &mut out)?;
        Ok(Value::Object(out))
    }

    /// Decodes the fields of `message` into `out` (merging, as protobuf does).
    fn message(
        &mut self,
        message: &'static Message,
        mut r: Reader,
        out: &mut Object,
    ) -> Result<()> {
        if self.messages.len() >= MAX_DEPTH {
            return Err(ProtobufError::TooDeep {
                path: self.at(),
                limit: MAX_DEPTH,
            });
        }
        self.messages.push(message.name);
        while !r.is_empty() {
            let (tag, wt) = self.key(&mut r)?;
            match message.field(tag) {
                Some(field) => {
                    self.path.push(Seg::Field(field.json));
                    self.field(field, wt, &mut r, out)?;
                    self.path.pop();
                }
                None => self.skip(&mut r, wt)?,
            }
        }
        self.messages.pop();
        Ok(())
    }

    fn field(
        &mut self,
        field: &'static Field,
        wt: u8,
        r: &mut Reader,
        out: &mut Object,
    ) -> Result<()> {
        match (field.shape, field.ty) {
            (Shape::Inline, Ty::Msg(i)) => {
                let sub = self.len(wt, r)?;
                self.path.pop();
                self.message(&MESSAGES[usize::from(i)], sub, out)?;
                self.path.push(Seg::Field(field.json));
            }
            (Shape::One | Shape::Keep, Ty::Msg(i))
                if MESSAGES[usize::from(i)].special == Special::None =>
            {
                let sub = self.len(wt, r)?;
                self.message(&MESSAGES[usize::from(i)], sub, object_at(out, field.json))?;
            }
            (Shape::One | Shape::Keep | Shape::Inline, ty) => match self.value(ty, wt, r)? {
                Some(Value::String(s)) if s.is_empty() && field.shape == Shape::One => {
                    out.remove(field.json);
                }
                Some(v) => {
                    out.insert(field.json.to_string(), v);
                }
                None => {
                    out.remove(field.json);
                }
            },
            (Shape::Rep, ty) => {
                let packed_wire = match ty {
                    Ty::Bool | Ty::I32 | Ty::I64 => Some(VARINT),
                    Ty::F64 => Some(FIXED64),
                    _ => None,
                };
                if let (Some(scalar_wt), LEN) = (packed_wire, wt) {
                    let mut packed = self.len(wt, r)?;
                    while !packed.is_empty() {
                        let v = self.value(ty, scalar_wt, &mut packed)?;
                        array_at(out, field.json).push(v.unwrap_or(Value::Null));
                    }
                } else {
                    self.path.push(Seg::Index(array_at(out, field.json).len()));
                    let v = self.value(ty, wt, r)?;
                    self.path.pop();
                    array_at(out, field.json).push(v.unwrap_or(Value::Null));
                }
            }
            (Shape::Map, ty) => {
                let mut entry = self.len(wt, r)?;
                let mut key = String::new();
                let mut value = None;
                while !entry.is_empty() {
                    let (tag, wt) = self.key(&mut entry)?;
                    match tag {
                        1 => key = self.string(wt, &mut entry)?,
                        2 => value = Some(self.value(ty, wt, &mut entry)?.unwrap_or(Value::Null)),
                        _ => self.skip(&mut entry, wt)?,
                    }
                }
                let value = match value {
                    Some(v) => v,
                    None => self.zero(ty, entry.offset())?,
                };
                object_at(out, field.json).insert(key, value);
            }
        }
        Ok(())
    }

    /// The JSON of a map value the entry leaves out (Go's zero value).
    fn zero(&mut self, ty: Ty, offset: usize) -> Result<Value> {
        Ok(match ty {
            Ty::Str | Ty::Bytes => Value::String(String::new()),
            Ty::Bool => Value::Bool(false),
            Ty::I32 | Ty::I64 | Ty::F64 => Value::from(0),
            Ty::Msg(i) => self
                .message_value(&MESSAGES[usize::from(i)], Reader::new(&[], offset))?
                .unwrap_or(Value::Null),
        })
    }

    /// One value of type `ty`; `None` for JSON null (a zero Time, an empty RawExtension).
    fn value(&mut self, ty: Ty, wt: u8, r: &mut Reader) -> Result<Option<Value>> {
        Ok(Some(match ty {
            Ty::Str => Value::String(self.string(wt, r)?),
            Ty::Bytes => Value::String(BASE64.encode(self.len(wt, r)?.rest())),
            Ty::Bool => Value::Bool(self.varint(wt, r)? != 0),
            // Negative int32s are sign-extended to 64 bits on the wire: truncate.
            Ty::I32 => Value::from(self.varint(wt, r)? as i32),
            Ty::I64 => Value::from(self.varint(wt, r)? as i64),
            Ty::F64 => {
                self.expect_wire(r, FIXED64, wt)?;
                let offset = r.offset();
                let x = f64::from_le_bytes(r.fixed64().map_err(|f| self.fault(f))?);
                self.number(x, offset)?
            }
            Ty::Msg(i) => {
                let sub = self.len(wt, r)?;
                return self.message_value(&MESSAGES[usize::from(i)], sub);
            }
        }))
    }

    fn number(&self, x: f64, offset: usize) -> Result<Value> {
        // Go's JSON writes integral doubles without a fraction.
        if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
            return Ok(Value::from(x as i64));
        }
        Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| self.invalid(offset, format!("{x} has no JSON form")))
    }

    /// A message as a JSON value, honouring its special form.
    fn message_value(&mut self, message: &'static Message, mut r: Reader) -> Result<Option<Value>> {
        let start = r.offset();
        match message.special {
            Special::None => {
                let mut out = Map::new();
                self.message(message, r, &mut out)?;
                Ok(Some(Value::Object(out)))
            }
            Special::Quantity => {
                let mut s = None;
                while !r.is_empty() {
                    match self.key(&mut r)? {
                        (1, wt) => s = Some(self.string(wt, &mut r)?),
                        (_, wt) => self.skip(&mut r, wt)?,
                    }
                }
                Ok(Some(Value::String(s.unwrap_or_else(|| "0".into()))))
            }
            Special::Time | Special::MicroTime => {
                if r.is_empty() {
                    return Ok(None);
                }
                let (mut seconds, mut nanos) = (0i64, 0i64);
                while !r.is_empty() {
                    match self.key(&mut r)? {
                        (1, wt) => seconds = self.varint(wt, &mut r)? as i64,
                        (2, wt) => nanos = i64::from(self.varint(wt, &mut r)? as i32),
                        (_, wt) => self.skip(&mut r, wt)?,
                    }
                }
                let micro = message.special == Special::MicroTime;
                let text = rfc3339(seconds, nanos, micro).ok_or_else(|| {
                    self.invalid(start, format!("time {seconds}s is out of range"))
                })?;
                Ok(Some(Value::String(text)))
            }
            Special::Duration => {
                let mut nanos = 0i64;
                while !r.is_empty() {
                    match self.key(&mut r)? {
                        (1, wt) => nanos = self.varint(wt, &mut r)? as i64,
                        (_, wt) => self.skip(&mut r, wt)?,
                    }
                }
                Ok(Some(Value::String(go_duration(nanos))))
            }
            Special::IntOrString => {
                let (mut kind, mut int, mut string) = (0u64, 0i32, String::new());
                while !r.is_empty() {
                    match self.key(&mut r)? {
                        (1, wt) => kind = self.varint(wt, &mut r)?,
                        (2, wt) => int = self.varint(wt, &mut r)? as i32,
                        (3, wt) => string = self.string(wt, &mut r)?,
                        (_, wt) => self.skip(&mut r, wt)?,
                    }
                }
                Ok(Some(if kind == 1 {
                    Value::String(string)
                } else {
                    Value::from(int)
                }))
            }
            Special::RawJson | Special::RawExtension => {
                let mut raw = Reader::new(&[], start);
                while !r.is_empty() {
                    match self.key(&mut r)? {
                        (1, wt) => raw = self.len(wt, &mut r)?,
                        (_, wt) => self.skip(&mut r, wt)?,
                    }
                }
                let bytes = raw.rest();
                if bytes.is_empty() {
                    return Ok(None);
                }
                if message.special == Special::RawExtension && bytes.starts_with(&MAGIC) {
                    // An embedded object in protobuf: decode it like a body.
                    self.messages.push(message.name);
                    let v = self.nested_envelope(bytes, raw.offset());
                    self.messages.pop();
                    return v.map(Some);
                }
                serde_json::from_slice(bytes)
                    .map(Some)
                    .map_err(|e| self.invalid(raw.offset(), format!("embedded JSON: {e}")))
            }
            Special::Items => {
                let mut items = Vec::new();
                while !r.is_empty() {
                    match self.key(&mut r)? {
                        (1, wt) => items.push(Value::String(self.string(wt, &mut r)?)),
                        (_, wt) => self.skip(&mut r, wt)?,
                    }
                }
                Ok(Some(Value::Array(items)))
            }
            Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
                // Field 1 and 2 types come from the table (the generator checks them).
                let (mut first, mut list, mut allows) = (None, Vec::new(), false);
                let mut schema = None;
                while !r.is_empty() {
                    let (tag, wt) = self.key(&mut r)?;
                    let Some(field) = message.field(tag) else {
                        self.skip(&mut r, wt)?;
                        continue;
                    };
                    match (message.special, tag) {
                        (Special::SchemaOrBool, 1) => allows = self.varint(wt, &mut r)? != 0,
                        (Special::SchemaOrBool, 2) => schema = self.value(field.ty, wt, &mut r)?,
                        (_, 1) => first = self.value(field.ty, wt, &mut r)?,
                        (_, 2) => {
                            list.push(self.value(field.ty, wt, &mut r)?.unwrap_or(Value::Null))
                        }
                        _ => self.skip(&mut r, wt)?,
                    }
                }
                Ok(match message.special {
                    Special::SchemaOrBool => Some(schema.unwrap_or(Value::Bool(allows))),
                    _ if !list.is_empty() => Some(Value::Array(list)),
                    _ => first,
                })
            }
        }
    }

    fn nested_envelope(&mut self, bytes: &[u8], base: usize) -> Result<Value> {
        if self.messages.len() >= MAX_DEPTH {
            return Err(ProtobufError::TooDeep {
                path: self.at(),
                limit: MAX_DEPTH,
            });
        }
        self.envelope(bytes, base)
    }
}

/// RFC 3339 in UTC as Kubernetes writes it: whole seconds (`Time`, which drops the nanos as
/// Go's `Time.Unmarshal` does) or microseconds (`MicroTime`). `None` outside years 0–9999.
pub(super) fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Option<String> {
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let (seconds, nanos) = if micro {
        (
            seconds.checked_add(nanos.div_euclid(1_000_000_000))?,
            nanos.rem_euclid(1_000_000_000),
        )
    } else {
        (seconds, 0)
    };
    if !(MIN..=MAX).contains(&seconds) {
        return None;
    }
    let t = k8s_openapi::jiff::Timestamp::new(seconds, i32::try_from(nanos).ok()?).ok()?;
    Some(if micro {
        crate::meta::micro_time_string(t)
    } else {
        crate::meta::time_string(t)
    })
}

/// Go's `time.Duration.String`: `1h2m3.5s`, `1m30s`, `250ms`, `1.5µs`, `0s`.
pub(super) fn go_duration(nanos: i64) -> String {
    fn frac(v: u64, digits: usize) -> String {
        if v == 0 {
            return String::new();
        }
        let s = format!(".{v:0digits$}");
        s.trim_end_matches('0').to_string()
    }
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (scale, digits, unit) = match u {
            0..1_000 => (1, 0, "ns"),
            1_000..1_000_000 => (1_000, 3, "µs"),
            _ => (1_000_000, 6, "ms"),
        };
        format!("{}{}{unit}", u / scale, frac(u % scale, digits))
    } else {
        let secs = u / 1_000_000_000;
        let f = frac(u % 1_000_000_000, 9);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            format!("{h}h{m}m{s}{f}s")
        } else if m > 0 {
            format!("{m}m{s}{f}s")
        } else {
            format!("{s}{f}s")
        }
    };
    format!("{sign}{body}")
}
