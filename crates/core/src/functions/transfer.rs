//! Moving a function library between installs: the export document and
//! the import of one, checked entry by entry before anything is written.
//!
//! The document is `{format, format_version, exported_at, functions: [{name,
//! description, code, created_by, created_at, last_used, use_count, version,
//! updated_by, updated_at, versions: [{version, name, description, code,
//! saved_by, saved_at, action}]}]}`. An import needs only `functions` with
//! `name` and `code` in each; `format` and `format_version`, when present,
//! must be these.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};
use tradebox_data::timestamp;

use super::{check_name, Function, NewFunction, VersionRecord};
use crate::store::StoreError;

/// The `format` tag of export documents.
pub const EXPORT_FORMAT: &str = "tradebox-functions";

/// The version of the export document layout.
pub const EXPORT_FORMAT_VERSION: u64 = 1;

/// What an import did, by function name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// New functions, and deleted ones brought back.
    pub created: Vec<String>,
    /// Live functions whose description or code changed: a new version each.
    pub updated: Vec<String>,
    /// Live functions identical to the import: no new version.
    pub unchanged: Vec<String>,
}

/// The export document of `functions` (live ones, by name, each with its
/// versions oldest first).
pub(crate) fn document(
    functions: Vec<(Function, Vec<VersionRecord>)>,
) -> Result<Value, StoreError> {
    let mut list = Vec::with_capacity(functions.len());
    for (f, versions) in functions {
        let mut obj = match serde_json::to_value(&f) {
            Ok(Value::Object(obj)) => obj,
            _ => return Err(StoreError::Invalid(format!("cannot export `{}`", f.name))),
        };
        obj.remove("id");
        let versions = versions
            .into_iter()
            .map(|v| {
                serde_json::json!({
                    "version": v.version,
                    "name": v.name,
                    "description": v.description,
                    "code": v.code,
                    "saved_by": v.saved_by,
                    "saved_at": v.saved_at,
                    "action": v.action.as_str(),
                })
            })
            .collect();
        obj.insert("versions".into(), Value::Array(versions));
        list.push(Value::Object(obj));
    }
    Ok(serde_json::json!({
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "exported_at": timestamp::format_rfc3339(timestamp::now()),
        "functions": list,
    }))
}

/// One function of an import document, checked.
pub(crate) struct ImportEntry {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) code: String,
    created_by: Option<String>,
    created_at: Option<String>,
    use_count: u64,
    last_used: Option<String>,
}

impl ImportEntry {
    /// The fields of the function as created by `user` at `now`; the
    /// document's authorship, creation time and use count win when present.
    pub(crate) fn fields<'a>(&'a self, user: &'a str, now: &'a str) -> NewFunction<'a> {
        NewFunction {
            name: &self.name,
            description: &self.description,
            code: &self.code,
            created_by: self.created_by.as_deref().unwrap_or(user),
            created_at: self.created_at.as_deref().unwrap_or(now),
            use_count: self.use_count,
            last_used: self.last_used.as_deref(),
        }
    }
}

fn invalid(msg: String) -> StoreError {
    StoreError::Invalid(format!("import: {msg}"))
}

/// Reads and checks an import document; see [`super::FunctionStore::import`].
pub(crate) fn parse(value: &Value) -> Result<Vec<ImportEntry>, StoreError> {
    let obj = value.as_object().ok_or_else(|| {
        invalid("expected a JSON object with a \"functions\" array, as written by export".into())
    })?;
    if let Some(format) = obj.get("format") {
        if format.as_str() != Some(EXPORT_FORMAT) {
            return Err(invalid(format!(
                "\"format\" is {format}, expected \"{EXPORT_FORMAT}\""
            )));
        }
    }
    if let Some(v) = obj.get("format_version") {
        if v.as_u64() != Some(EXPORT_FORMAT_VERSION) {
            return Err(invalid(format!(
                "\"format_version\" {v} is not supported (this version reads {EXPORT_FORMAT_VERSION})"
            )));
        }
    }
    let list = match obj.get("functions") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("\"functions\" must be an array".into())),
        None => return Err(invalid("the object has no \"functions\" array".into())),
    };
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("functions[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| invalid(format!("{at} must be an object")))?;
        let name = match item.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(invalid(format!("{at}: \"name\" must be a string"))),
        };
        let at = format!("{at} ({name:?})");
        check_name(&name).map_err(|e| invalid(format!("{at}: {e}")))?;
        if !seen.insert(name.clone()) {
            return Err(invalid(format!("{at}: the name appears more than once")));
        }
        let code = match item.get("code") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(invalid(format!(
                    "{at}: \"code\" must be a non-empty string"
                )))
            }
        };
        let created_by = optional_text(item, "created_by", &at)?;
        if created_by.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(invalid(format!("{at}: \"created_by\" is empty")));
        }
        let created_at = optional_text(item, "created_at", &at)?;
        let last_used = optional_text(item, "last_used", &at)?;
        for (key, text) in [("created_at", &created_at), ("last_used", &last_used)] {
            if let Some(text) = text {
                timestamp::parse(text).map_err(|e| invalid(format!("{at}: \"{key}\": {e}")))?;
            }
        }
        let use_count = match item.get("use_count") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid(format!(
                    "{at}: \"use_count\" must be a non-negative integer"
                ))
            })?,
        };
        entries.push(ImportEntry {
            name,
            description: optional_text(item, "description", &at)?.unwrap_or_default(),
            code,
            created_by,
            created_at,
            use_count,
            last_used,
        });
    }
    Ok(entries)
}

/// A string field that may be missing or null.
fn optional_text(
    item: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<String>, StoreError> {
    match item.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{at}: \"{key}\" must be a string"))),
    }
}
