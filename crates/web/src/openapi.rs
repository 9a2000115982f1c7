//! The OpenAPI 3 document of the HTTP API, served at
//! `/api/v1/openapi.json`, written by hand next to the handlers and kept
//! true two ways:
//!
//! - **Routes.** The API's routes are registered through one place,
//!   `api_routes` in `lib.rs`, which records every `(path, method)` it
//!   registers ([`crate::api_operations`]); a test here compares that
//!   record with the document's paths and methods in both directions.
//! - **Constraints.** Each request field and parameter states what the
//!   handlers (`api.rs`, `json.rs`, `data.rs`) accept: required fields,
//!   `additionalProperties: false` where the body refuses unknown fields,
//!   lengths, patterns, ranges, enums, nullability, and `allowEmptyValue`
//!   where an empty query value counts as absent. The patterns spell out the
//!   characters Rust's `char::is_whitespace` and `char::is_control` match,
//!   so that validators in other languages read them the same way. A
//!   schema-driven fuzzer (`python/tests/test_api_schema.py`, schemathesis)
//!   runs against a real `tradebox serve` from this document and fails on a
//!   server error, an undocumented status, content type or body, or a
//!   request the document allows but the server refuses.
//!
//! Some refusals depend on more than a schema can say, and are documented
//! as statuses instead: an upload whose content is not a trade file (400),
//! the rate limit and a user's running jobs (429), a busy sandbox (503).

use serde_json::{json, Value};

/// The characters `str::trim` removes (Unicode `White_Space`, as Rust's
/// `char::is_whitespace`), as a regular expression class body.
const WHITESPACE: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// A string holding something other than whitespace (what `trim()` leaves
/// non-empty).
fn not_blank() -> String {
    format!("[^{WHITESPACE}]")
}

/// A user or channel name as `api.rs`'s `check_name` accepts it: 1 to 64
/// characters, none of them whitespace, a control character (`Cc`:
/// U+0000..U+001F, U+007F..U+009F), `<`, `>` or `|`.
fn name_pattern() -> String {
    format!(r"^[^\u0000-\u001f\u007f-\u009f{WHITESPACE}<>|]{{1,64}}$")
}

/// An upload name `data.rs` can keep: its last component (after the last
/// `/` or `\`) has something other than `.` within its first 120
/// characters.
const UPLOAD_NAME_PATTERN: &str = r"(^|[/\\])\.{0,119}[^./\\][^/\\]*$";

fn error_responses(codes: &[&str]) -> Value {
    let describe = |code: &str| match code {
        "400" => "Malformed request: bad JSON (the message names the field) or a bad parameter",
        "401" => "Missing or invalid token",
        "403" => "Wrong Host header, CSRF check failed, or permission refused",
        "404" => "Not found",
        "409" => "The store is locked by another import",
        "413" => "Request body above the limit",
        "415" => "Body sent with a content type other than JSON",
        "429" => "Rate limit or per-user job limit reached; see Retry-After",
        "500" => "Internal error (the store or the server failed); the message says what",
        "503" => {
            "Busy: the sandbox is busy or unavailable, or the store is locked; see Retry-After"
        }
        _ => "Error",
    };
    let mut out = serde_json::Map::new();
    for code in codes {
        let mut response = json!({
            "description": describe(code),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        });
        if matches!(*code, "429" | "503") {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 0}
            }});
        }
        out.insert((*code).to_string(), response);
    }
    Value::Object(out)
}

/// Replaces the descriptions of some responses of `responses`.
fn with_descriptions(mut responses: Value, descriptions: &[(&str, &str)]) -> Value {
    for (code, text) in descriptions {
        if let Some(response) = responses.get_mut(*code) {
            response["description"] = json!(text);
        }
    }
    responses
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"200": {"description": description, "content": {"application/json": {"schema": schema}}}})
}

/// An optional query parameter; sent empty, it counts as absent.
fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name, "in": "query", "required": false, "allowEmptyValue": true,
        "description": format!("{description}. Sent empty, as if absent."),
        "schema": schema
    })
}

/// A whole number within `min..=max`, as `json.rs`'s `number_param` reads
/// it (digits only).
fn whole(min: u64, max: u64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

/// The document.
pub fn document() -> Value {
    let common = ["401", "403"];
    let with = |extra: &[&str]| {
        let mut codes: Vec<&str> = common.to_vec();
        codes.extend_from_slice(extra);
        error_responses(&codes)
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tradebox HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run pandas snippets on the desk's trade data in a kernel sandbox, and the slash commands of the Slack bot, over JSON. Every call needs the console token: `Authorization: Bearer <token>` (the token is in the address `tradebox serve` prints, after `?token=`). The Host header must be the address the server listens on. JSON bodies are sent as `application/json` (or another `+json` type, or without a Content-Type) and refuse unknown fields. Query values are taken as sent (percent-decoded, not trimmed); an optional parameter sent empty counts as absent. Errors are `{\"error\": \"...\"}` (with `field` for a bad body field or parameter). Files and artifacts are carried inline as base64 `data`."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/run": {"post": {
                "summary": "Run code in the sandbox",
                "description": "Runs the code as `/analyze` does (permissions, validator, rate limit, audit with source `api`, as the console user) and answers the fields of `tradebox run --json`, with each artifact's bytes as base64 `data` instead of a `path`. Code that fails (an exception, a timeout, a validation error, code longer than `limits.max_code_bytes`) is still a 200 with `success: false`.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunRequest"}}}},
                "responses": merge(ok("The result", json!({"$ref": "#/components/schemas/RunResult"})), with(&["400", "413", "415", "429", "503"]))
            }},
            "/api/v1/commands": {"post": {
                "summary": "Run a slash command",
                "description": "A command line as `user` typed it in `channel` (`/analyze ...`, `/savefunc ...`, `/runfunc ...`, `/listfuncs ...`, `/delfunc ...`, `/tradebox help`). Answers the final reply; refusals (unknown commands, permissions, the rate limit, a busy sandbox) are replies too, with `error: true`. Audited with source `api`.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandRequest"}}}},
                "responses": merge(ok("The reply", json!({"$ref": "#/components/schemas/Reply"})), with(&["400", "413", "415"]))
            }},
            "/api/v1/functions": {"get": {
                "summary": "List or search saved functions",
                "parameters": [
                    query("q", "Search in names and descriptions", json!({"type": "string"})),
                    query("limit", "At most this many (default 100)", whole(1, 500)),
                    query("offset", "Skip this many (default 0)", whole(0, 1_000_000))
                ],
                "responses": merge(ok("Functions, most used first", json!({"$ref": "#/components/schemas/FunctionList"})), with(&["400", "500", "503"]))
            }},
            "/api/v1/functions/{name}": {"get": {
                "summary": "One function and its version history",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}],
                "responses": merge(ok("The function (null when deleted) and every version", json!({"$ref": "#/components/schemas/FunctionDetail"})), with(&["404", "500", "503"]))
            }},
            "/api/v1/audit": {"get": {
                "summary": "The audit trail, newest first",
                "parameters": [
                    query("user", "Only this user", json!({"type": "string"})),
                    query("outcome", "Only this outcome", json!({"$ref": "#/components/schemas/Outcome"})),
                    query("action", "Only this action", json!({"$ref": "#/components/schemas/Action"})),
                    query("limit", "At most this many (default 200)", whole(1, 5000))
                ],
                "responses": merge(ok("Entries", json!({"$ref": "#/components/schemas/AuditList"})), with(&["400", "500", "503"]))
            }},
            "/api/v1/data": {"get": {
                "summary": "What the trade store holds",
                "description": "As `tradebox data info --json`: trades per exchange and account, date ranges, balance snapshots and the current snapshot version.",
                "responses": merge(ok("The store summary", json!({"$ref": "#/components/schemas/DataInfo"})), with(&["409", "500"]))
            }},
            "/api/v1/data/import": {"post": {
                "summary": "Import a file into the store",
                "description": "The body is the file itself: an original `trade_cache.db` (SQLite), a CSV export with a header row, or a `snapshot_YYYY-MM-DD.json` balance snapshot. Imported in one transaction; when anything was new a snapshot version is published and the sandbox workers move to it. Audited (action `import`). A file that is none of these, or has a bad row, is refused with 400 naming the file and the line.",
                "parameters": [
                    {"name": "name", "in": "query", "required": true, "description": "The file's name (its extension helps recognise it). Only its last component is kept (after the last `/` or `\\`), cut to 120 characters, leading dots removed and characters other than letters, digits, `.`, `-` and `_` replaced by `_`; something must be left.", "schema": {"type": "string", "minLength": 1, "pattern": UPLOAD_NAME_PATTERN}},
                    query("exchange", "Exchange for CSV rows without an exchange column", json!({"type": "string"})),
                    query("account", "Account for CSV rows without an account column", json!({"type": "string"}))
                ],
                "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}}},
                "responses": merge(
                    ok("What was imported", json!({"$ref": "#/components/schemas/ImportResult"})),
                    with_descriptions(with(&["400", "409", "413", "500"]), &[("400", "A bad `name`, an empty body, or a file that is not a trade file or has a bad row (the message names the file and the line)")])
                )
            }},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": merge(ok("OpenAPI 3 document", json!({"type": "object"})), with(&[]))
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "The console token"}},
            "schemas": schemas()
        }
    })
}

fn schemas() -> Value {
    let nullable_string = json!({"type": "string", "nullable": true});
    let name = |description: &str| json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": name_pattern(), "description": description});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"},
            "field": {"type": "string", "description": "The body field or query parameter at fault"}
        }},
        "RunRequest": {"type": "object", "required": ["code"], "additionalProperties": false, "properties": {
            "code": {"type": "string", "pattern": not_blank(), "description": "Python; set `result` to answer. Not only whitespace.", "example": "result = len(load_trades(days=None))"},
            "timeout": {"type": "number", "nullable": true, "minimum": 0, "exclusiveMinimum": true, "maximum": 3600, "description": "Seconds; may only shorten the configured limit (null: the configured limit)"}
        }},
        "RunResult": {"type": "object", "required": ["success", "output", "execution_time_ms", "artifacts"], "properties": {
            "success": {"type": "boolean"},
            "result": nullable_string,
            "output": {"type": "string", "description": "Captured stdout and stderr"},
            "error": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/ExecError"}]},
            "execution_time_ms": {"type": "integer"},
            "artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/Artifact"}},
            "data_as_of": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/DataAsOf"}], "description": "What the answer is based on (null when no data is loaded or the code never ran)"}
        }},
        "DataAsOf": {"type": "object", "required": ["snapshot", "newest_trade", "as_of"], "properties": {
            "snapshot": {"type": "integer", "minimum": 1, "description": "The snapshot version the code read"},
            "newest_trade": {"type": "string", "nullable": true, "description": "The newest trade in that snapshot, RFC 3339 UTC (null: no trades)"},
            "as_of": {"type": "string", "nullable": true, "description": "The as_of the job asked for, when not the newest data"}
        }},
        "ExecError": {"type": "object", "required": ["type", "message"], "properties": {
            "type": {"type": "string", "description": "Python exception name, or Timeout, MemoryLimit, Crashed, SandboxError, ResultTooLarge, ResultError, InvalidResult, ValidationError"},
            "message": {"type": "string"},
            "line": {"type": "integer"},
            "column": {"type": "integer"},
            "traceback": {"type": "string"},
            "origin": {"type": "string", "enum": ["job", "tradebox"], "description": "Who determined the error: the job (its own answer, whatever type it names) or tradebox (timeouts, crashes, the validator)"}
        }},
        "Artifact": {"type": "object", "required": ["kind", "name", "mime", "size", "data"], "properties": {
            "kind": {"type": "string", "enum": ["png", "csv"]},
            "name": {"type": "string"},
            "mime": {"type": "string"},
            "size": {"type": "integer"},
            "truncated": {"type": "boolean"},
            "data": {"type": "string", "format": "byte", "description": "The bytes, base64"}
        }},
        "CommandRequest": {"type": "object", "required": ["user", "text"], "additionalProperties": false, "properties": {
            "user": name("Who typed it (a Slack user id or a name): 1 to 64 characters without whitespace, control characters, `<`, `>` or `|`"),
            "channel": merge(name("Where it was typed (null or absent: nowhere in particular); the same characters as `user`"), json!({"nullable": true})),
            "text": {"type": "string", "pattern": not_blank(), "description": "The command line; not only whitespace", "example": "/analyze result = load_trades(days=7)['amount'].sum()"}
        }},
        "Reply": {"type": "object", "required": ["visibility", "fallback", "blocks", "files", "error"], "properties": {
            "visibility": {"type": "string", "enum": ["in_channel", "ephemeral"]},
            "fallback": {"type": "string"},
            "blocks": {"type": "array", "items": {"$ref": "#/components/schemas/Block"}},
            "files": {"type": "array", "items": {"$ref": "#/components/schemas/File"}},
            "error": {"type": "boolean"}
        }},
        "Block": {"type": "object", "required": ["type"], "description": "Texts use Slack mrkdwn (`*bold*`, `` `code` ``, `<@U123>`).", "properties": {
            "type": {"type": "string", "enum": ["header", "text", "code", "result", "image", "context", "buttons", "divider"]},
            "text": {"type": "string"},
            "label": {"type": "string"},
            "value": {"description": "result: the structured value (table, series, scalar)"},
            "button": {"$ref": "#/components/schemas/Button"},
            "file": {"type": "string", "description": "image: the name of a file of the reply"},
            "alt": {"type": "string"},
            "items": {"type": "array", "items": {"type": "string"}},
            "buttons": {"type": "array", "items": {"$ref": "#/components/schemas/Button"}}
        }},
        "Button": {"type": "object", "required": ["text", "action_id", "value"], "properties": {
            "text": {"type": "string"}, "action_id": {"type": "string"}, "value": {"type": "string"}
        }},
        "File": {"type": "object", "required": ["name", "mime", "title", "size", "data"], "properties": {
            "name": {"type": "string"}, "mime": {"type": "string"}, "title": {"type": "string"},
            "size": {"type": "integer"},
            "data": {"type": "string", "format": "byte", "description": "The bytes, base64"}
        }},
        "Function": {"type": "object", "required": ["id", "name", "description", "code", "created_by", "created_at", "last_used", "use_count", "version", "updated_by", "updated_at"], "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "description": {"type": "string"},
            "code": {"type": "string"}, "created_by": {"type": "string"}, "created_at": {"type": "string"},
            "last_used": nullable_string, "use_count": {"type": "integer"}, "version": {"type": "integer"},
            "updated_by": nullable_string, "updated_at": nullable_string
        }},
        "FunctionList": {"type": "object", "required": ["functions", "total", "limit", "offset", "stats"], "properties": {
            "functions": {"type": "array", "items": {"$ref": "#/components/schemas/Function"}},
            "total": {"type": "integer", "description": "How many match"},
            "limit": {"type": "integer"}, "offset": {"type": "integer"},
            "stats": {"type": "object", "required": ["total_functions", "total_uses"], "properties": {"total_functions": {"type": "integer"}, "total_uses": {"type": "integer"}}}
        }},
        "FunctionDetail": {"type": "object", "required": ["function", "deleted", "history"], "properties": {
            "function": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Function"}]},
            "deleted": {"type": "boolean"},
            "history": {"type": "array", "items": {"type": "object", "required": ["function_id", "version", "name", "description", "code", "saved_by", "saved_at", "action"], "properties": {
                "function_id": {"type": "integer"}, "version": {"type": "integer"}, "name": {"type": "string"},
                "description": {"type": "string"}, "code": {"type": "string"}, "saved_by": {"type": "string"},
                "saved_at": {"type": "string"}, "action": {"type": "string", "enum": ["save", "rename", "delete", "import"]}
            }}}
        }},
        "Outcome": {"type": "string", "enum": tradebox_core::audit::Outcome::NAMES},
        "Action": {"type": "string", "enum": tradebox_core::audit::Action::NAMES},
        "AuditEntry": {"type": "object", "required": ["id", "at", "user_id", "channel", "source", "action", "function_name", "function_version", "code", "outcome", "error_type", "detail", "duration_ms", "replica"], "properties": {
            "id": {"type": "integer"}, "at": {"type": "string", "description": "UTC, YYYY-MM-DDTHH:MM:SS[.ffffff]"},
            "user_id": {"type": "string"}, "channel": nullable_string,
            "source": {"type": "string", "enum": tradebox_core::audit::Source::NAMES},
            "action": {"$ref": "#/components/schemas/Action"},
            "function_name": nullable_string, "function_version": {"type": "integer", "nullable": true},
            "code": nullable_string, "outcome": {"$ref": "#/components/schemas/Outcome"},
            "error_type": nullable_string, "detail": nullable_string,
            "duration_ms": {"type": "integer", "nullable": true},
            "replica": {"type": "string", "nullable": true, "description": "The process that wrote the row (`[store] replica`, by default host:pid)"}
        }},
        "AuditList": {"type": "object", "required": ["entries", "count", "limit", "outcomes", "actions"], "properties": {
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
            "count": {"type": "integer"}, "limit": {"type": "integer"},
            "outcomes": {"type": "array", "items": {"$ref": "#/components/schemas/Outcome"}},
            "actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}}
        }},
        "DataInfo": {"type": "object", "required": ["store", "trades", "first_trade", "last_trade", "by_exchange", "accounts", "snapshots", "first_snapshot", "last_snapshot", "snapshot", "sources"], "properties": {
            "store": {"type": "string"}, "trades": {"type": "integer"},
            "first_trade": nullable_string, "last_trade": nullable_string,
            "by_exchange": {"type": "object", "additionalProperties": {"type": "integer"}},
            "accounts": {"type": "array", "items": {"type": "object", "required": ["exchange", "account_name", "trades", "first_trade", "last_trade"], "properties": {
                "exchange": {"type": "string"}, "account_name": {"type": "string"}, "trades": {"type": "integer"},
                "first_trade": {"type": "string"}, "last_trade": {"type": "string"}
            }}},
            "snapshots": {"type": "integer"}, "first_snapshot": nullable_string, "last_snapshot": nullable_string,
            "snapshot": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Snapshot"}]},
            "sources": {"type": "array", "description": "Followed sources ([[data.sources]]) with their last sync, lag and errors.", "items": {"$ref": "#/components/schemas/SourceState"}}
        }},
        "SourceState": {"type": "object", "required": ["id", "kind", "path", "synced_at", "lag_seconds", "added_total", "newest_trade", "error", "failures", "rejected", "rejected_total"], "properties": {
            "id": {"type": "string"}, "kind": {"type": "string"}, "path": {"type": "string"},
            "identity": nullable_string, "high_water": {"type": "integer"}, "reconciled_at": nullable_string,
            "attempted_at": nullable_string, "synced_at": nullable_string, "changed_at": nullable_string,
            "lag_seconds": {"type": "number", "nullable": true}, "added_total": {"type": "integer"},
            "newest_trade": nullable_string, "error": nullable_string, "failures": {"type": "integer"},
            "rejected": nullable_string, "rejected_total": {"type": "integer"}
        }},
        "Snapshot": {"type": "object", "required": ["version", "path", "trades", "snapshots", "created_at"], "properties": {
            "version": {"type": "integer"}, "path": {"type": "string"}, "trades": {"type": "integer"},
            "snapshots": {"type": "integer"}, "created_at": {"type": "string"}
        }},
        "ImportResult": {"type": "object", "required": ["name", "kind", "description", "unit", "read", "added", "published", "snapshot", "message"], "properties": {
            "name": {"type": "string"}, "kind": {"type": "string", "enum": ["sqlite", "csv", "snapshot_file", "snapshot_dir"]},
            "description": {"type": "string"}, "unit": {"type": "string", "enum": ["trades", "snapshots"]},
            "read": {"type": "integer"}, "added": {"type": "integer"},
            "published": {"type": "boolean", "description": "Whether a new snapshot version was published"},
            "snapshot": {"$ref": "#/components/schemas/Snapshot"},
            "message": {"type": "string"}
        }}
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    #[test]
    fn the_router_and_the_document_have_the_same_operations() {
        let registered = crate::api_operations();
        let routed: BTreeSet<(String, String)> = registered
            .iter()
            .map(|(p, m)| ((*p).to_string(), (*m).to_string()))
            .collect();
        assert_eq!(
            routed.len(),
            registered.len(),
            "registered twice: {registered:?}"
        );
        let doc = document();
        let mut described = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for key in item.as_object().into_iter().flatten().map(|(k, _)| k) {
                assert!(
                    METHODS.contains(&key.as_str()),
                    "{path}: `{key}` is not a method"
                );
                described.insert((path.clone(), key.clone()));
            }
        }
        let undescribed: Vec<_> = routed.difference(&described).collect();
        let unrouted: Vec<_> = described.difference(&routed).collect();
        assert!(
            undescribed.is_empty(),
            "served but not in the document: {undescribed:?}"
        );
        assert!(
            unrouted.is_empty(),
            "in the document but not served: {unrouted:?}"
        );
        assert!(routed.len() >= 8, "{routed:?}");
    }

    #[test]
    fn every_operation_answers_and_refs_resolve() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        for (path, method) in crate::api_operations() {
            let op = &doc["paths"][path][method];
            assert!(op["responses"]["200"].is_object(), "{method} {path}");
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
            assert!(op["responses"]["403"].is_object(), "{method} {path}");
            // A body or a query parameter can be refused: 400 says so.
            let takes_input = op.get("requestBody").is_some()
                || op["parameters"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["in"] == "query"));
            assert_eq!(
                op["responses"]["400"].is_object(),
                takes_input,
                "{method} {path}"
            );
        }
        // Every $ref points at a schema that exists.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or("");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling $ref {name}"
            );
        }
    }

    /// Every character up to U+3100 (the whitespace and control characters
    /// all sit below it), and some beyond.
    fn characters() -> impl Iterator<Item = char> {
        (0..0x3100u32)
            .chain([0xfeff, 0x1f600, 0x10ffff])
            .filter_map(char::from_u32)
    }

    #[test]
    fn the_not_blank_pattern_is_what_trim_leaves() {
        let re = regex::Regex::new(&not_blank()).unwrap();
        for c in characters() {
            let s = format!(" {c}\t");
            assert_eq!(re.is_match(&s), !s.trim().is_empty(), "U+{:04X}", c as u32);
        }
        assert!(!re.is_match(""));
    }

    #[test]
    fn the_name_pattern_is_check_name() {
        let re = regex::Regex::new(&name_pattern()).unwrap();
        let accepted = |s: &str| crate::api::check_name("user", s).is_ok();
        for c in characters() {
            for s in [c.to_string(), format!("U{c}1")] {
                assert_eq!(re.is_match(&s), accepted(&s), "U+{:04X}", c as u32);
            }
        }
        for s in ["", "a b", "U1\n", &"é".repeat(64), &"é".repeat(65), "<@U1>"] {
            assert_eq!(re.is_match(s), accepted(s), "{s:?}");
        }
    }

    #[test]
    fn the_upload_name_pattern() {
        let re = regex::Regex::new(UPLOAD_NAME_PATTERN).unwrap();
        let ok = [
            "trades.csv",
            "a",
            "../../etc/passwd",
            "C:\\x\\my file;.json",
            ".hidden",
            "dir/..x",
            " ",
            &format!("{}x", ".".repeat(119)),
            &format!("d/{}x", ".".repeat(119)),
        ];
        let refused = [
            "",
            ".",
            "..",
            "dir/",
            "a\\",
            "x/..",
            &format!("{}x", ".".repeat(120)),
            &format!("d/{}x", ".".repeat(120)),
        ];
        for s in ok {
            assert!(re.is_match(s), "{s:?} should match");
        }
        for s in refused {
            assert!(!re.is_match(s), "{s:?} should not match");
        }
    }
}
