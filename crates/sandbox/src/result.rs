//! The result of one job, as the front ends see it. Parsed from what a job's
//! child wrote, or made by the supervisor when the child timed out, died or
//! broke the rules.
//!
//! The child's answer frame is untrusted: the job controls the child and may
//! write any bytes as its answer. [`ExecResult::from_child`] enforces every
//! [`ResultCaps`] cap itself, with memory bounded by a small multiple of the
//! frame's size: texts are cut while they are read, the structured value is
//! built under a node and depth budget, artifacts are counted as they come
//! and checked one at a time through one reused buffer, and everything else
//! is skipped without being kept. Artifact names and mime types are chosen
//! here, never taken from the job.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;

use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Room the runner's own notes may take past a text cap (its truncation
/// note, lines about figures or tables left out) before the supervisor cuts
/// the text itself.
pub const NOTE_SLACK: usize = 512;
/// Longest error type name kept, in characters.
pub const ERROR_TYPE_CHARS: usize = 100;
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// Memory the structured value may take beyond the size of the frame it
/// comes in (a JSON `1,` is 2 bytes in the frame and some 64 in memory).
/// Far above what the runner's own limits produce; the frame-size part
/// covers the value's strings.
const VALUE_MEMORY_FLOOR: usize = 16 << 20;
/// Estimated memory of one value node (a `serde_json::Value`, with room
/// for a growing array), of one object beyond that (a B-tree leaf), and of
/// one object entry beyond its key's text.
const NODE_MEMORY: usize = 64;
const OBJECT_MEMORY: usize = 640;
const ENTRY_MEMORY: usize = 128;

/// What running a snippet produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub success: bool,
    /// Text form of the result (an aligned table for DataFrames).
    #[serde(default)]
    pub result: Option<String>,
    /// Structured form (DataFrame/Series/scalar/JSON), for renderers.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Captured stdout and stderr (capped; a note says when truncated).
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub error: Option<ExecError>,
    #[serde(default)]
    pub execution_time_ms: u64,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The data the answer is based on; set by the pool from the snapshot
    /// its worker serves (never from the job's answer). `None` without data.
    #[serde(default)]
    pub data_as_of: Option<DataAsOf>,
}

/// What an answer is based on: the snapshot version the job read and the
/// newest trade in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataAsOf {
    /// The snapshot version (`snapshot/vNNNNNN`).
    pub snapshot: u64,
    /// The newest trade in that snapshot, RFC 3339 UTC; `None` when it has
    /// no trades.
    pub newest_trade: Option<String>,
    /// The job's `as_of`, when it asked for a view other than the newest
    /// data (`latest`).
    pub as_of: Option<String>,
}

impl DataAsOf {
    /// From a version's manifest, for a job that asked for `as_of`.
    pub fn new(manifest: &tradebox_data::snapshot::Manifest, as_of: Option<&str>) -> DataAsOf {
        let as_of = as_of
            .map(str::trim)
            .filter(|a| !a.eq_ignore_ascii_case("latest"));
        DataAsOf {
            snapshot: manifest.version,
            newest_trade: manifest
                .last_trade_us
                .map(tradebox_data::timestamp::format_rfc3339),
            as_of: as_of.map(str::to_owned),
        }
    }

    /// One line for a reply's footer: "data to 2026-11-01 00:00 UTC
    /// (snapshot v3)", with the job's `as_of` when it chose one.
    pub fn footer(&self) -> String {
        let newest = match &self.newest_trade {
            Some(t) => {
                let t = t.trim_end_matches('Z');
                let minute = t.get(..16).unwrap_or(t).replacen('T', " ", 1);
                format!("data to {minute} UTC")
            }
            None => "no trades".to_string(),
        };
        match &self.as_of {
            Some(as_of) => format!("{newest} (snapshot v{}), as of {as_of}", self.snapshot),
            None => format!("{newest} (snapshot v{})", self.snapshot),
        }
    }
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecError {
    /// Python exception type, or one of `Timeout`, `MemoryLimit`, `Crashed`,
    /// `SandboxError`, `ResultTooLarge`, `ResultError`, `InvalidResult`,
    /// `ValidationError`.
    /// When [`ExecError::origin`] is `job`, the job may have chosen it.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// Who determined this error.
    #[serde(default)]
    pub origin: Origin,
}

/// Who determined an error: the job (whatever its answer claims, including
/// `Timeout` or `SandboxError`) or tradebox itself (the supervisor, the
/// validator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Job,
    Tradebox,
}

/// A file a job produced: a PNG per figure, a CSV for a large table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// `png` or `csv`, checked against the content.
    pub kind: String,
    /// Chosen by tradebox: `figure-N.png`, `table-N.csv`.
    pub name: String,
    #[serde(default)]
    pub mime: String,
    /// The content, valid base64.
    #[serde(default)]
    pub data_b64: String,
    /// Decoded length in bytes.
    #[serde(default)]
    pub size: u64,
    /// A table cut at a row boundary to fit its cap.
    #[serde(default)]
    pub truncated: bool,
}

/// The caps the supervisor enforces on what a job's child sends back. The
/// same numbers travel to the child in the job (`caps`), so the runner keeps
/// a legitimate result within them; a frame that breaks one anyway was forged
/// by the job and is reported as the job's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultCaps {
    /// The whole answer frame, in bytes.
    pub result_bytes: usize,
    /// Captured output (and the result's text), in bytes, before the
    /// truncation note.
    pub output_bytes: usize,
    /// Nodes (values, keys not counted) of the structured `value`.
    pub value_nodes: usize,
    /// Nesting depth of the structured `value`.
    pub value_depth: usize,
    /// Error message and traceback, in bytes each.
    pub error_bytes: usize,
    /// Number of artifacts.
    pub artifacts: usize,
    /// One PNG, decoded.
    pub png_bytes: usize,
    /// One CSV, decoded.
    pub csv_bytes: usize,
}

impl ResultCaps {
    /// The caps for a job whose output is limited to `output_bytes`.
    pub fn for_output(output_bytes: usize) -> ResultCaps {
        ResultCaps {
            // Room for the output and the result text at their limit, and
            // for the artifacts and the structured value.
            result_bytes: (32 << 20) + 2 * output_bytes,
            output_bytes,
            value_nodes: 200_000,
            value_depth: 40,
            error_bytes: 64 << 10,
            artifacts: 11,
            png_bytes: 4 << 20,
            csv_bytes: 8 << 20,
        }
    }
}

impl Artifact {
    /// The decoded bytes; `None` if `data_b64` is not valid base64 (never
    /// the case for an artifact from [`ExecResult::from_child`]).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_b64)
            .ok()
    }
}

impl ExecError {
    fn job(kind: &str, message: String) -> ExecError {
        ExecError {
            kind: kind.to_string(),
            message,
            line: None,
            column: None,
            traceback: None,
            origin: Origin::Job,
        }
    }
}

impl ExecResult {
    /// A failure made by the supervisor (no user output).
    pub fn failure(kind: &str, message: impl Into<String>, elapsed_ms: u64) -> ExecResult {
        let error = ExecError {
            origin: Origin::Tradebox,
            ..ExecError::job(kind, message.into())
        };
        ExecResult::failed(error, String::new(), elapsed_ms)
    }

    /// A failure with `error` and nothing else but the output.
    fn failed(error: ExecError, output: String, elapsed_ms: u64) -> ExecResult {
        ExecResult {
            success: false,
            result: None,
            value: None,
            output,
            error: Some(error),
            execution_time_ms: elapsed_ms,
            artifacts: Vec::new(),
            data_as_of: None,
        }
    }

    /// Parses what a child wrote, enforcing `caps`. A frame over
    /// `caps.result_bytes` is `ResultTooLarge`, one that is not a readable
    /// answer or that breaks a rule is `InvalidResult` (with the output
    /// kept when it could be read); all such errors, and whatever error the
    /// answer itself reports, are the job's ([`Origin::Job`]).
    pub fn from_child(bytes: &[u8], caps: &ResultCaps, memory_mib: u64) -> ExecResult {
        if bytes.len() > caps.result_bytes {
            let message = format!(
                "the job's answer is {}, over the {} limit",
                size(bytes.len()),
                size(caps.result_bytes)
            );
            return ExecResult::failed(ExecError::job("ResultTooLarge", message), String::new(), 0);
        }
        let ctx = Ctx::new(caps, bytes.len());
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let frame = (&mut de)
            .deserialize_map(FrameVisitor { ctx: &ctx })
            .and_then(|frame| de.end().map(|()| frame));
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let message = format!("the job's answer could not be read: {e}");
                return ExecResult::failed(
                    ExecError::job("InvalidResult", message),
                    String::new(),
                    0,
                );
            }
        };
        let output = frame.output.unwrap_or_default();
        if let Some(rule) = ctx.broken.into_inner() {
            let message = format!("the job's answer broke the sandbox's result rules: {rule}");
            return ExecResult::failed(
                ExecError::job("InvalidResult", message),
                output,
                frame.execution_time_ms,
            );
        }
        let success = frame.success == Some(true);
        let error = if success {
            None
        } else {
            let mut e = frame.error.unwrap_or_else(|| {
                ExecError::job("Error", "the job failed without saying why".into())
            });
            if e.kind == "MemoryError" {
                e.message = format!("memory limit of {memory_mib} MiB reached: {}", e.message);
            }
            Some(e)
        };
        ExecResult {
            success,
            result: frame.result,
            value: frame.value.filter(|v| !v.is_null()),
            output,
            error,
            execution_time_ms: frame.execution_time_ms,
            artifacts: frame.artifacts,
            data_as_of: None, // the pool's to say, never the job's
        }
    }
}

/// A byte count as the runner writes it (`_size` in runner.py): `812 bytes`,
/// `1.2 MiB`.
pub fn size(n: usize) -> String {
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut x = n as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        x /= 1024.0;
        if x < 1024.0 || unit == "TiB" {
            return format!("{x:.1} {unit}");
        }
    }
    format!("{x:.1} TiB")
}

/// `text` whole if it is at most `limit` bytes plus [`NOTE_SLACK`]; else its
/// first `limit` bytes (cut at a character boundary) and the runner's note
/// saying how much was left out (`_Capped.getvalue` in runner.py).
pub fn cap_text(text: &str, limit: usize, what: &str) -> String {
    if text.len() <= limit.saturating_add(NOTE_SLACK) {
        return text.to_string();
    }
    let cut = text.floor_char_boundary(limit);
    with_note(&text[..cut], text.len() - cut, limit, what)
}

/// What a job printed before it was stopped or crashed, from the mirror the
/// zygote kept of it (untrusted bytes, `printed` of them in all): at most
/// `limit` bytes, with the runner's note when more was printed.
pub fn printed_output(kept: &[u8], printed: u64, limit: usize) -> String {
    let kept = &kept[..kept.len().min(limit)];
    let text = String::from_utf8_lossy(kept);
    let text = &text[..text.floor_char_boundary(limit)];
    let more = usize::try_from(printed)
        .unwrap_or(usize::MAX)
        .saturating_sub(kept.len());
    if more == 0 {
        text.to_string()
    } else {
        with_note(text, more, limit, "output")
    }
}

fn with_note(kept: &str, more: usize, limit: usize, what: &str) -> String {
    let newline = if kept.is_empty() || kept.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!(
        "{kept}{newline}... {what} truncated: {} more not shown (limit {})",
        size(more),
        size(limit)
    )
}

// ---------------------------------------------------------------- parsing

/// The answer's fields as read (already capped).
#[derive(Default)]
struct Frame {
    success: Option<bool>,
    result: Option<String>,
    value: Option<Value>,
    output: Option<String>,
    error: Option<ExecError>,
    execution_time_ms: u64,
    artifacts: Vec<Artifact>,
}

/// State shared by the visitors of one frame.
struct Ctx<'c> {
    caps: &'c ResultCaps,
    /// Nodes of the structured value so far.
    nodes: Cell<usize>,
    /// Estimated memory of the structured value so far, and its cap.
    memory: Cell<usize>,
    memory_cap: usize,
    /// The first rule the frame broke; once set, nothing more is kept but
    /// the output.
    broken: RefCell<Option<String>>,
    /// Decoded artifact content, one artifact at a time.
    scratch: RefCell<Vec<u8>>,
}

impl<'c> Ctx<'c> {
    fn new(caps: &'c ResultCaps, frame_len: usize) -> Ctx<'c> {
        Ctx {
            caps,
            nodes: Cell::new(0),
            memory: Cell::new(0),
            memory_cap: VALUE_MEMORY_FLOOR.saturating_add(frame_len),
            broken: RefCell::new(None),
            scratch: RefCell::new(Vec::new()),
        }
    }

    fn is_broken(&self) -> bool {
        self.broken.borrow().is_some()
    }

    fn fail(&self, rule: String) {
        let mut broken = self.broken.borrow_mut();
        if broken.is_none() {
            *broken = Some(rule);
        }
    }

    /// Counts one node of the value taking `memory` bytes beyond the node
    /// itself; false (rule broken) past a cap.
    fn node(&self, memory: usize) -> bool {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > self.caps.value_nodes {
            self.fail(format!(
                "the structured value has more than {} nodes",
                self.caps.value_nodes
            ));
        }
        self.charge(NODE_MEMORY.saturating_add(memory))
    }

    /// Counts `bytes` of the value's memory; false (rule broken) past the cap.
    fn charge(&self, bytes: usize) -> bool {
        let total = self.memory.get().saturating_add(bytes);
        self.memory.set(total);
        if total > self.memory_cap {
            self.fail(format!(
                "the structured value would take more than {} of memory",
                size(self.memory_cap)
            ));
        }
        !self.is_broken()
    }
}

/// A string borrowed from the frame when it holds no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a str>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Rejects a field seen twice (serde's derive does the same).
fn once<E: de::Error>(seen: &mut u32, bit: u32, name: &'static str) -> Result<(), E> {
    if *seen & bit != 0 {
        return Err(E::duplicate_field(name));
    }
    *seen |= bit;
    Ok(())
}

struct FrameVisitor<'x, 'c> {
    ctx: &'x Ctx<'c>,
}

impl<'de> Visitor<'de> for FrameVisitor<'_, '_> {
    type Value = Frame;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the answer object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
        let (ctx, caps) = (self.ctx, self.ctx.caps);
        let mut frame = Frame::default();
        let mut seen = 0;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "success" => {
                    once(&mut seen, 1, "success")?;
                    frame.success = map.next_value()?;
                }
                "result" => {
                    once(&mut seen, 2, "result")?;
                    frame.result = map.next_value_seed(TextSeed {
                        limit: caps.output_bytes,
                        what: "output",
                    })?;
                }
                "value" => {
                    once(&mut seen, 4, "value")?;
                    frame.value = Some(map.next_value_seed(ValueSeed { ctx, depth: 0 })?);
                }
                "output" => {
                    once(&mut seen, 8, "output")?;
                    frame.output = map.next_value_seed(TextSeed {
                        limit: caps.output_bytes,
                        what: "output",
                    })?;
                }
                "error" => {
                    once(&mut seen, 16, "error")?;
                    frame.error = map.next_value_seed(ErrorSeed { caps })?;
                }
                "execution_time_ms" => {
                    once(&mut seen, 32, "execution_time_ms")?;
                    frame.execution_time_ms = map.next_value::<Option<u64>>()?.unwrap_or(0);
                }
                "artifacts" => {
                    once(&mut seen, 64, "artifacts")?;
                    frame.artifacts = map.next_value_seed(ArtifactsSeed { ctx })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(frame)
    }
}

/// A text (or null), cut to `limit` bytes as it is read.
struct TextSeed {
    limit: usize,
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok(Some(cap_text(v, self.limit, self.what)))
    }
}

/// The structured value, built under the node and depth caps. Once a rule
/// is broken the rest is skipped unkept and the value reads as null.
struct ValueSeed<'x, 'c> {
    ctx: &'x Ctx<'c>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.ctx.is_broken() {
            IgnoredAny::deserialize(d)?;
            return Ok(Value::Null);
        }
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_> {
    fn scalar(&self, v: Value) -> Value {
        if self.ctx.node(0) {
            v
        } else {
            Value::Null
        }
    }

    /// Counts a container (taking `memory` beyond a node) one level down;
    /// false when a cap is broken.
    fn open(&self, memory: usize) -> bool {
        if !self.ctx.node(memory) {
            return false;
        }
        if self.depth >= self.ctx.caps.value_depth {
            self.ctx.fail(format!(
                "the structured value is nested deeper than {} levels",
                self.ctx.caps.value_depth
            ));
            return false;
        }
        true
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(self.scalar(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(self.scalar(Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(self.scalar(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(self.scalar(Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        if self.ctx.node(v.len()) {
            Ok(Value::String(v.to_string()))
        } else {
            Ok(Value::Null)
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(self.scalar(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if !self.open(0) {
            drain_seq(&mut seq)?;
            return Ok(Value::Null);
        }
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed {
            ctx: self.ctx,
            depth: self.depth + 1,
        })? {
            if self.ctx.is_broken() {
                drop(items);
                drain_seq(&mut seq)?;
                return Ok(Value::Null);
            }
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if !self.open(OBJECT_MEMORY) {
            drain_map(&mut map)?;
            return Ok(Value::Null);
        }
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.ctx.charge(ENTRY_MEMORY.saturating_add(key.len()));
            let v = map.next_value_seed(ValueSeed {
                ctx: self.ctx,
                depth: self.depth + 1,
            })?;
            if self.ctx.is_broken() {
                drop(object);
                drain_map(&mut map)?;
                return Ok(Value::Null);
            }
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

/// The error object: type (at most [`ERROR_TYPE_CHARS`]), message and
/// traceback (cut to `error_bytes`), line and column.
struct ErrorSeed<'c> {
    caps: &'c ResultCaps,
}

impl<'de> DeserializeSeed<'de> for ErrorSeed<'_> {
    type Value = Option<ExecError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<ExecError>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ErrorSeed<'_> {
    type Value = Option<ExecError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an error object or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<ExecError>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<ExecError>, A::Error> {
        let text = |what| TextSeed {
            limit: self.caps.error_bytes,
            what,
        };
        let mut e = ExecError::job("Error", String::new());
        let mut seen = 0;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "type" => {
                    once(&mut seen, 1, "type")?;
                    let kind = map.next_value::<Option<Str<'de>>>()?;
                    if let Some(kind) = kind.filter(|k| !k.0.is_empty()) {
                        e.kind = kind.0.chars().take(ERROR_TYPE_CHARS).collect();
                    }
                }
                "message" => {
                    once(&mut seen, 2, "message")?;
                    e.message = map.next_value_seed(text("message"))?.unwrap_or_default();
                }
                "traceback" => {
                    once(&mut seen, 4, "traceback")?;
                    e.traceback = map.next_value_seed(text("traceback"))?;
                }
                "line" => {
                    once(&mut seen, 8, "line")?;
                    e.line = map.next_value_seed(Position)?;
                }
                "column" => {
                    once(&mut seen, 16, "column")?;
                    e.column = map.next_value_seed(Position)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(e))
    }
}

/// A line or column: kept when it is a number that fits, else dropped.
struct Position;

impl<'de> DeserializeSeed<'de> for Position {
    type Value = Option<u32>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Position {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a line or column number, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u32>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u32>, E> {
        Ok(u32::try_from(v).ok())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<u32>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<u32>, E> {
        Ok(None)
    }
}

/// The artifacts, counted as they come: one past the cap breaks the rule
/// without being read.
struct ArtifactsSeed<'x, 'c> {
    ctx: &'x Ctx<'c>,
}

impl<'de> DeserializeSeed<'de> for ArtifactsSeed<'_, '_> {
    type Value = Vec<Artifact>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Artifact>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ArtifactsSeed<'_, '_> {
    type Value = Vec<Artifact>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of artifacts or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<Artifact>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Artifact>, A::Error> {
        let ctx = self.ctx;
        let mut kept = Vec::new();
        let (mut pngs, mut csvs) = (0, 0);
        loop {
            if ctx.is_broken() {
                drain_seq(&mut seq)?;
                return Ok(Vec::new());
            }
            if kept.len() == ctx.caps.artifacts {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    ctx.fail(format!("it has more than {} artifacts", ctx.caps.artifacts));
                    continue;
                }
                break;
            }
            let index = kept.len() + 1;
            let Some(raw) = seq.next_element::<RawArtifact<'de>>()? else {
                break;
            };
            let Some((kind, data_b64, size)) = check_artifact(ctx, index, &raw) else {
                continue;
            };
            let (name, mime) = if kind == "png" {
                pngs += 1;
                (format!("figure-{pngs}.png"), "image/png")
            } else {
                csvs += 1;
                (format!("table-{csvs}.csv"), "text/csv")
            };
            kept.push(Artifact {
                kind: kind.to_string(),
                name,
                mime: mime.to_string(),
                data_b64,
                size: size as u64,
                truncated: raw.truncated.unwrap_or(false),
            });
        }
        Ok(kept)
    }
}

/// One artifact as the job wrote it; its `name` and `mime` are ignored.
#[derive(Deserialize)]
struct RawArtifact<'a> {
    #[serde(default, borrow)]
    kind: Option<Str<'a>>,
    #[serde(default, borrow)]
    data_b64: Option<Str<'a>>,
    #[serde(default)]
    truncated: Option<bool>,
}

/// Checks one artifact (the `index`-th, from 1) against the rules: kind,
/// base64, size and content. Returns its kind, base64 and decoded size, or
/// `None` after recording the broken rule.
fn check_artifact(
    ctx: &Ctx,
    index: usize,
    raw: &RawArtifact,
) -> Option<(&'static str, String, usize)> {
    let caps = ctx.caps;
    let (kind, what, cap) = match raw.kind.as_ref().map(|k| k.0.as_ref()) {
        Some("png") => ("png", "a PNG image", caps.png_bytes),
        Some("csv") => ("csv", "a CSV table", caps.csv_bytes),
        _ => {
            ctx.fail(format!(
                "artifact {index} is neither a PNG image nor a CSV table"
            ));
            return None;
        }
    };
    let b64 = raw.data_b64.as_ref().map_or("", |d| d.0.as_ref());
    let pad = b64.bytes().rev().take(2).filter(|&b| b == b'=').count();
    if (b64.len() / 4 * 3).saturating_sub(pad) > cap {
        ctx.fail(format!(
            "artifact {index} ({what}) is over the {} limit",
            size(cap)
        ));
        return None;
    }
    let mut scratch = ctx.scratch.borrow_mut();
    scratch.clear();
    if base64::engine::general_purpose::STANDARD
        .decode_vec(b64, &mut scratch)
        .is_err()
    {
        ctx.fail(format!("artifact {index} is not valid base64"));
        return None;
    }
    let broken = if scratch.len() > cap {
        Some(format!(
            "artifact {index} ({what}) is over the {} limit",
            size(cap)
        ))
    } else if kind == "png" && !scratch.starts_with(PNG_SIGNATURE) {
        Some(format!("artifact {index} is not a PNG image"))
    } else if kind == "csv" {
        match std::str::from_utf8(&scratch) {
            Err(_) => Some(format!("artifact {index} (a CSV table) is not UTF-8 text")),
            Ok(text)
                if text
                    .chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n')) =>
            {
                Some(format!(
                    "artifact {index} (a CSV table) holds control characters"
                ))
            }
            Ok(_) => None,
        }
    } else {
        None
    };
    if let Some(rule) = broken {
        ctx.fail(rule);
        return None;
    }
    Some((kind, b64.to_string(), scratch.len()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, Instant};

    use super::*;
    use serde_json::json;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    fn caps() -> ResultCaps {
        ResultCaps::for_output(1 << 20)
    }

    fn parse(frame: &serde_json::Value) -> ExecResult {
        ExecResult::from_child(&serde_json::to_vec(frame).unwrap(), &caps(), 1024)
    }

    fn png(extra: &[u8]) -> String {
        B64.encode([PNG_SIGNATURE, extra].concat())
    }

    fn artifact(kind: &str, data_b64: &str) -> serde_json::Value {
        json!({"kind": kind, "name": "conftest.py", "mime": "text/x-python", "data_b64": data_b64, "size": 7})
    }

    /// The error of a result the rules turned down, after checking it is one.
    fn rejected(r: &ExecResult) -> &str {
        assert!(!r.success, "{r:?}");
        let e = r.error.as_ref().expect("an error");
        assert_eq!(e.kind, "InvalidResult", "{r:?}");
        assert_eq!(e.origin, Origin::Job);
        assert!(r.artifacts.is_empty() && r.result.is_none() && r.value.is_none());
        &e.message
    }

    fn broken_rule(r: &ExecResult) -> &str {
        rejected(r)
            .strip_prefix("the job's answer broke the sandbox's result rules: ")
            .unwrap_or_else(|| panic!("not a broken rule: {r:?}"))
    }

    /// `[1,1,1,...]` of about `bytes` bytes.
    fn ones(bytes: usize) -> String {
        let mut s = String::with_capacity(bytes + 2);
        s.push('[');
        while s.len() < bytes {
            s.push_str("1,");
        }
        s.push_str("1]");
        s
    }

    fn manifest(version: u64, last: Option<i64>) -> tradebox_data::snapshot::Manifest {
        serde_json::from_value(json!({
            "format": 1, "version": version, "created_at": "2026-11-01T00:00:00Z",
            "trades": 1, "first_trade_us": last, "last_trade_us": last, "snapshots": 0,
        }))
        .unwrap()
    }

    #[test]
    fn data_time_names_the_snapshot_its_newest_trade_and_a_chosen_as_of() {
        // 2026-11-01T09:30:15.5Z
        let m = manifest(7, Some(1_793_525_415_500_000));
        let latest = DataAsOf::new(&m, Some(" Latest "));
        assert_eq!(latest, DataAsOf::new(&m, None));
        assert_eq!(
            latest.newest_trade.as_deref(),
            Some("2026-11-01T09:30:15.500000Z")
        );
        assert_eq!(latest.as_of, None);
        assert_eq!(
            latest.footer(),
            "data to 2026-11-01 09:30 UTC (snapshot v7)"
        );
        let pinned = DataAsOf::new(&m, Some("2026-10-01"));
        assert_eq!(pinned.as_of.as_deref(), Some("2026-10-01"));
        assert_eq!(
            pinned.footer(),
            "data to 2026-11-01 09:30 UTC (snapshot v7), as of 2026-10-01"
        );
        assert_eq!(
            DataAsOf::new(&manifest(1, None), None).footer(),
            "no trades (snapshot v1)"
        );
    }

    #[test]
    fn a_jobs_answer_cannot_say_what_data_it_is_based_on() {
        let r = parse(&json!({
            "success": true, "result": "1", "output": "", "execution_time_ms": 1,
            "artifacts": [], "data_as_of": {"snapshot": 999, "newest_trade": null, "as_of": null},
        }));
        assert!(r.success, "{r:?}");
        assert_eq!(
            r.data_as_of, None,
            "the pool sets it, from its own snapshot"
        );
    }

    #[test]
    fn legal_answers_round_trip() {
        let value = json!({"type": "json", "value": {"a": [1, -2, 2.5, null, true, "é"], "": {}}});
        let r = parse(&json!({
            "success": true, "result": "{'a': 1}", "value": value, "output": "hi\n",
            "error": null, "execution_time_ms": 12, "unknown": {"ignored": [1, 2]},
            "artifacts": [artifact("png", &png(b"one")), artifact("csv", &B64.encode("a,b\r\n1,\t2\n")),
                          artifact("png", &png(b"two"))]
        }));
        assert!(r.success && r.error.is_none(), "{r:?}");
        assert_eq!(r.result.as_deref(), Some("{'a': 1}"));
        assert_eq!(r.value, Some(value));
        assert_eq!((r.output.as_str(), r.execution_time_ms), ("hi\n", 12));
        let names: Vec<_> = r
            .artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.mime.as_str(), a.size))
            .collect();
        assert_eq!(
            names,
            [
                ("figure-1.png", "image/png", 11),
                ("table-1.csv", "text/csv", 10),
                ("figure-2.png", "image/png", 11)
            ]
        );
        assert_eq!(r.artifacts[1].bytes().unwrap(), b"a,b\r\n1,\t2\n");
        assert_eq!(
            r.artifacts[0].data_b64,
            png(b"one"),
            "the base64 is passed on as it came"
        );
        // A failure keeps the job's own error.
        let r = parse(&json!({"success": false, "output": "before\n", "error": {
            "type": "ZeroDivisionError", "message": "division by zero", "line": 3, "column": null,
            "traceback": "Traceback ...", "code": 1}}));
        let e = r.error.unwrap();
        assert_eq!(
            (e.kind.as_str(), e.message.as_str(), e.line, e.column),
            ("ZeroDivisionError", "division by zero", Some(3), None)
        );
        assert_eq!(
            (e.traceback.as_deref(), e.origin),
            (Some("Traceback ..."), Origin::Job)
        );
        assert_eq!(r.output, "before\n");
    }

    #[test]
    fn names_and_mime_are_chosen_by_tradebox() {
        let mut a = artifact("csv", &B64.encode("x\n"));
        a["name"] = json!("../../Makefile");
        let r = parse(&json!({"success": true, "artifacts": [a, artifact("csv", "")]}));
        let names: Vec<_> = r.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["table-1.csv", "table-2.csv"]);
        assert!(r.artifacts.iter().all(|a| a.mime == "text/csv"));
        assert_eq!(r.artifacts[1].size, 0);
    }

    #[test]
    fn a_frame_over_the_cap_is_too_large() {
        let mut c = caps();
        c.result_bytes = 100;
        let frame = format!(r#"{{"success": true, "output": "{}"}}"#, "x".repeat(100));
        let r = ExecResult::from_child(frame.as_bytes(), &c, 1024);
        let e = r.error.unwrap();
        assert_eq!((e.kind.as_str(), e.origin), ("ResultTooLarge", Origin::Job));
        assert_eq!(
            e.message,
            format!(
                "the job's answer is {} bytes, over the 100 bytes limit",
                frame.len()
            )
        );
        assert!(!r.success && r.output.is_empty());
    }

    #[test]
    fn an_unreadable_frame_is_an_invalid_result() {
        for frame in [
            &b"not json"[..],
            b"[1, 2]",
            b"{\"success\": true} trailing",
            b"{\"success\": \"yes\"}",
            br#"{"success": true, "success": false}"#,
            br#"{"success": true, "result": "a\ud800b"}"#,
            br#"{"success": true, "value": 1e400}"#,
            br#"{"artifacts": [1]}"#,
            b"\xff\xfe",
        ] {
            let r = ExecResult::from_child(frame, &caps(), 1024);
            let message = rejected(&r);
            assert!(
                message.starts_with("the job's answer could not be read: "),
                "{message}"
            );
        }
    }

    #[test]
    fn forty_four_mib_of_small_numbers_are_refused_quickly() {
        let frame = format!(
            r#"{{"success": true, "value": {}, "output": "kept"}}"#,
            ones(44 << 20)
        );
        // Under the default caps the frame is too large to read at all ...
        let r = ExecResult::from_child(frame.as_bytes(), &caps(), 1024);
        assert_eq!(r.error.unwrap().kind, "ResultTooLarge");
        // ... and with room for it, the node cap stops the value.
        let mut c = caps();
        c.result_bytes = 64 << 20;
        let started = Instant::now();
        let r = ExecResult::from_child(frame.as_bytes(), &c, 1024);
        let took = started.elapsed();
        assert_eq!(
            broken_rule(&r),
            "the structured value has more than 200000 nodes"
        );
        assert_eq!(r.output, "kept", "the output survives a broken rule");
        assert!(took < Duration::from_secs(20), "{took:?}");
        // Exactly at the cap is fine.
        let mut c = caps();
        c.value_nodes = 6;
        let ok =
            ExecResult::from_child(br#"{"success": true, "value": [1, [2], {"a": 3}]}"#, &c, 0);
        assert!(ok.success, "{ok:?}");
        let r = ExecResult::from_child(
            br#"{"success": true, "value": [1, [2], {"a": 3}, 4]}"#,
            &c,
            0,
        );
        assert_eq!(
            broken_rule(&r),
            "the structured value has more than 6 nodes"
        );
    }

    #[test]
    fn the_values_memory_is_capped() {
        // 30,000 empty objects: 180 KB of frame, some 20 MB as values.
        let frame = format!(r#"{{"value": [{}{{}}]}}"#, "{}, ".repeat(30_000));
        let r = ExecResult::from_child(frame.as_bytes(), &caps(), 0);
        assert_eq!(
            broken_rule(&r),
            "the structured value would take more than 16.1 MiB of memory"
        );
        // Long strings are paid for by the frame's own size.
        let long = json!({"success": true, "value": vec!["v".repeat(1 << 20); 20]});
        assert!(parse(&long).success);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let frame = |depth| format!(r#"{{"success": true, "value": {}}}"#, nested(depth));
        let r = ExecResult::from_child(frame(40).as_bytes(), &caps(), 0);
        assert!(r.success, "{r:?}");
        let r = ExecResult::from_child(frame(41).as_bytes(), &caps(), 0);
        assert_eq!(
            broken_rule(&r),
            "the structured value is nested deeper than 40 levels"
        );
        let objects = format!(
            r#"{{"value": {}1{}}}"#,
            r#"{"a":"#.repeat(41),
            "}".repeat(41)
        );
        let r = ExecResult::from_child(objects.as_bytes(), &caps(), 0);
        assert_eq!(
            broken_rule(&r),
            "the structured value is nested deeper than 40 levels"
        );
        // Far deeper: skipped without recursion.
        let r = ExecResult::from_child(frame(1_000_000).as_bytes(), &caps(), 0);
        assert_eq!(
            broken_rule(&r),
            "the structured value is nested deeper than 40 levels"
        );
        // Nesting where no nesting belongs: the frame cannot be read.
        let deep_error = format!(r#"{{"error": {}}}"#, nested(200));
        let r = ExecResult::from_child(deep_error.as_bytes(), &caps(), 0);
        assert!(rejected(&r).contains("could not be read"), "{r:?}");
    }

    #[test]
    fn too_many_artifacts_are_refused_without_reading_them() {
        let many = format!(
            r#"{{"success": true, "output": "o", "artifacts": [{}{{}}]}}"#,
            "{}, ".repeat(1_000_000)
        );
        let started = Instant::now();
        let r = ExecResult::from_child(many.as_bytes(), &caps(), 0);
        assert_eq!(
            broken_rule(&r),
            "artifact 1 is neither a PNG image nor a CSV table"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let pngs =
            |n: usize| json!({"success": true, "artifacts": vec![artifact("png", &png(b"")); n]});
        assert_eq!(parse(&pngs(11)).artifacts.len(), 11);
        assert_eq!(
            broken_rule(&parse(&pngs(12))),
            "it has more than 11 artifacts"
        );
        let mut more = pngs(11);
        more["artifacts"]
            .as_array_mut()
            .unwrap()
            .extend(vec![json!({}); 100_000]);
        assert_eq!(broken_rule(&parse(&more)), "it has more than 11 artifacts");
    }

    #[test]
    fn artifacts_must_be_what_they_claim() {
        let one = |a: serde_json::Value| {
            parse(&json!({"success": true, "result": "r", "output": "o", "artifacts": [a]}))
        };
        let script = B64.encode("#!/bin/sh\nrm -rf ~\n");
        let r = one(artifact("png", &script));
        assert_eq!(broken_rule(&r), "artifact 1 is not a PNG image");
        assert_eq!(r.output, "o");
        assert_eq!(
            broken_rule(&one(artifact("exe", &script))),
            "artifact 1 is neither a PNG image nor a CSV table"
        );
        assert_eq!(
            broken_rule(&one(json!({"data_b64": script}))),
            "artifact 1 is neither a PNG image nor a CSV table"
        );
        assert_eq!(
            broken_rule(&one(artifact("png", "not base64!"))),
            "artifact 1 is not valid base64"
        );
        assert_eq!(
            broken_rule(&one(artifact("png", "iVBORw0KGgo"))),
            "artifact 1 is not valid base64"
        );
        assert_eq!(
            broken_rule(&one(artifact("csv", &B64.encode("a\0b\n")))),
            "artifact 1 (a CSV table) holds control characters"
        );
        assert_eq!(
            broken_rule(&one(artifact("csv", &B64.encode("\x1b]0;x\x07\n")))),
            "artifact 1 (a CSV table) holds control characters"
        );
        assert_eq!(
            broken_rule(&one(artifact("csv", &B64.encode("a\u{85}b")))),
            "artifact 1 (a CSV table) holds control characters"
        );
        assert_eq!(
            broken_rule(&one(artifact("csv", &B64.encode(b"\xff\xfe")))),
            "artifact 1 (a CSV table) is not UTF-8 text"
        );
        let mut c = caps();
        c.png_bytes = 16;
        c.csv_bytes = 4;
        let frame = |a: serde_json::Value| {
            serde_json::to_vec(&json!({"success": true, "artifacts": [a]})).unwrap()
        };
        let r = ExecResult::from_child(&frame(artifact("png", &png(&[0; 9]))), &c, 0);
        assert_eq!(
            broken_rule(&r),
            "artifact 1 (a PNG image) is over the 16 bytes limit"
        );
        assert!(ExecResult::from_child(&frame(artifact("png", &png(&[0; 8]))), &c, 0).success);
        assert!(
            ExecResult::from_child(&frame(artifact("csv", &B64.encode("abcd"))), &c, 0).success
        );
        let r = ExecResult::from_child(&frame(artifact("csv", &B64.encode("abcde"))), &c, 0);
        assert_eq!(
            broken_rule(&r),
            "artifact 1 (a CSV table) is over the 4 bytes limit"
        );
    }

    #[test]
    fn a_broken_rule_fails_even_a_claimed_success() {
        let r = parse(
            &json!({"success": true, "result": "r", "value": {"type": "scalar", "value": 1},
            "output": "kept", "execution_time_ms": 5,
            "artifacts": [artifact("png", &png(b"")), artifact("png", "AAAA")]}),
        );
        assert_eq!(broken_rule(&r), "artifact 2 is not a PNG image");
        assert_eq!((r.output.as_str(), r.execution_time_ms), ("kept", 5));
    }

    #[test]
    fn big_output_is_cut_with_the_runners_note() {
        let r = parse(
            &json!({"success": true, "output": "x".repeat(3 << 20), "result": "é".repeat(1 << 20)}),
        );
        assert_eq!(
            r.output,
            format!(
                "{}\n... output truncated: 2.0 MiB more not shown (limit 1.0 MiB)",
                "x".repeat(1 << 20)
            )
        );
        let result = r.result.unwrap();
        let (kept, note) = result.rsplit_once('\n').unwrap();
        assert_eq!(kept, "é".repeat(1 << 19));
        assert_eq!(
            note,
            "... output truncated: 1.0 MiB more not shown (limit 1.0 MiB)"
        );
        // The runner's own note fits in the slack and is kept as it is.
        let own = format!(
            "{}\n... output truncated: 4.8 MiB more not shown (limit 1.0 MiB)\n2 figures not shown",
            "y".repeat(1 << 20)
        );
        assert_eq!(parse(&json!({"success": true, "output": own})).output, own);
        let at_slack = "z".repeat((1 << 20) + NOTE_SLACK);
        assert_eq!(parse(&json!({"output": at_slack})).output, at_slack);
        assert!(parse(&json!({"output": at_slack.clone() + "z"}))
            .output
            .ends_with("(limit 1.0 MiB)"));
    }

    #[test]
    fn error_texts_are_capped() {
        let r = parse(
            &json!({"success": false, "error": {"type": "E".repeat(500), "message": "m".repeat(1 << 20),
            "traceback": "é".repeat(1 << 20), "line": -1, "column": 1e9}}),
        );
        let e = r.error.unwrap();
        assert_eq!(e.kind, "E".repeat(100));
        assert_eq!(
            e.message,
            format!(
                "{}\n... message truncated: 960.0 KiB more not shown (limit 64.0 KiB)",
                "m".repeat(64 << 10)
            )
        );
        let tb = e.traceback.unwrap();
        assert!(
            tb.starts_with(&"é".repeat(32 << 10))
                && tb.ends_with("... traceback truncated: 1.9 MiB more not shown (limit 64.0 KiB)"),
            "{}",
            &tb[tb.len() - 100..]
        );
        assert_eq!((e.line, e.column), (None, None));
        let e = parse(&json!({"success": false})).error.unwrap();
        assert_eq!(
            (e.kind.as_str(), e.message.as_str()),
            ("Error", "the job failed without saying why")
        );
        let e = parse(&json!({"error": {"type": "MemoryError", "message": ""}}))
            .error
            .unwrap();
        assert_eq!(e.message, "memory limit of 1024 MiB reached: ");
        assert!(parse(&json!({"success": true, "error": {"type": "X"}}))
            .error
            .is_none());
    }

    #[test]
    fn errors_say_who_determined_them() {
        for kind in ["SandboxError", "Timeout", "ResultTooLarge"] {
            let e = parse(&json!({"success": false, "error": {"type": kind, "message": "forged"}}))
                .error
                .unwrap();
            assert_eq!((e.kind.as_str(), e.origin), (kind, Origin::Job));
        }
        let e = ExecResult::failure("Timeout", "timed out", 7)
            .error
            .unwrap();
        assert_eq!(e.origin, Origin::Tradebox);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["origin"], "tradebox");
        let back: ExecError = serde_json::from_value(json!({"type": "X", "message": ""})).unwrap();
        assert_eq!(back.origin, Origin::Job, "job is the default");
    }

    #[test]
    fn sizes_read_as_the_runner_writes_them() {
        // Expected texts from runner.py's _size.
        for (n, text) in [
            (0, "0 bytes"),
            (1023, "1023 bytes"),
            (1024, "1.0 KiB"),
            (1280, "1.2 KiB"),
            (2304, "2.2 KiB"),
            (1177, "1.1 KiB"),
            (1152, "1.1 KiB"),
            (1 << 20, "1.0 MiB"),
            (1_310_720, "1.2 MiB"),
            (3_145_727, "3.0 MiB"),
            (3_456_789, "3.3 MiB"),
            (2_147_483_771, "2.0 GiB"),
            (5 << 40, "5.0 TiB"),
            (2000 << 40, "2000.0 TiB"),
        ] {
            assert_eq!(size(n), text, "{n}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(json!(null)),
                any::<bool>().prop_map(|b| json!(b)),
                any::<i64>().prop_map(|n| json!(n)),
                any::<u64>().prop_map(|n| json!(n)),
                (-1e300f64..1e300).prop_map(|x| json!(x)),
                any::<String>().prop_map(|s| json!(s)),
            ];
            leaf.prop_recursive(6, 200, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(any::<String>(), inner, 0..8)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn legal_values_and_texts_round_trip(value in json_value(), output in any::<String>(), ms in any::<u64>()) {
                let r = parse(&json!({"success": true, "value": {"type": "json", "value": value}, "output": output,
                    "result": output, "execution_time_ms": ms}));
                prop_assert!(r.success);
                prop_assert_eq!(r.value, Some(json!({"type": "json", "value": value})));
                prop_assert_eq!(&r.output, &output);
                prop_assert_eq!(r.result.as_ref(), Some(&output));
                prop_assert_eq!(r.execution_time_ms, ms);
            }

            #[test]
            fn texts_are_cut_at_a_character_boundary_within_the_cap(text in ".{0,300}", limit in 0usize..200) {
                let cut = cap_text(&text, limit, "output");
                if text.len() <= limit + NOTE_SLACK {
                    prop_assert_eq!(cut, text);
                } else {
                    let kept = cut.split("... output truncated: ").next().unwrap_or("");
                    prop_assert!(kept.trim_end_matches('\n').len() <= limit);
                    prop_assert!(text.starts_with(kept.trim_end_matches('\n')));
                }
            }

            #[test]
            fn any_bytes_give_a_result_within_the_caps(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
                let mut c = caps();
                c.output_bytes = 16;
                let r = ExecResult::from_child(&bytes, &c, 0);
                prop_assert!(r.output.len() <= 16 + NOTE_SLACK);
                prop_assert!(r.artifacts.len() <= c.artifacts);
                prop_assert_eq!(r.success, r.error.is_none());
            }
        }
    }
}
