//! The OpenAPI 3 document of the HTTP API, served at
//! `/api/v1/openapi.json`. Written by hand next to the handlers; a test
//! checks that every route of the router is described and the other way
//! round.

use serde_json::{json, Value};

/// The paths the document describes, with their methods (lower case).
#[cfg(test)]
pub const OPERATIONS: &[(&str, &str)] = &[
    ("/api/v1/run", "post"),
    ("/api/v1/commands", "post"),
    ("/api/v1/functions", "get"),
    ("/api/v1/functions/{name}", "get"),
    ("/api/v1/audit", "get"),
    ("/api/v1/data", "get"),
    ("/api/v1/data/import", "post"),
    ("/api/v1/openapi.json", "get"),
];

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
        "503" => "The sandbox is busy or unavailable; see Retry-After",
        _ => "Error",
    };
    let mut out = serde_json::Map::new();
    for code in codes {
        out.insert(
            (*code).to_string(),
            json!({
                "description": describe(code),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }),
        );
    }
    Value::Object(out)
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

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
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
            "description": "Run pandas snippets on the desk's trade data in a kernel sandbox, and the slash commands of the Slack bot, over JSON. Every call needs the console token: `Authorization: Bearer <token>` (the token is in the address `tradebox serve` prints, after `?token=`). The Host header must be the address the server listens on. Errors are `{\"error\": \"...\"}` (with `field` for a bad body field). Files and artifacts are carried inline as base64 `data`."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/run": {"post": {
                "summary": "Run code in the sandbox",
                "description": "Runs the code as `/analyze` does (permissions, validator, rate limit, audit with source `api`, as the console user) and answers the fields of `tradebox run --json`, with each artifact's bytes as base64 `data` instead of a `path`. Code that fails (an exception, a timeout, a validation error) is still a 200 with `success: false`.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunRequest"}}}},
                "responses": merge(ok("The result", json!({"$ref": "#/components/schemas/RunResult"})), with(&["400", "413", "415", "429", "503"]))
            }},
            "/api/v1/commands": {"post": {
                "summary": "Run a slash command",
                "description": "A command line as `user` typed it in `channel` (`/analyze ...`, `/savefunc ...`, `/runfunc ...`, `/listfuncs ...`, `/delfunc ...`, `/tradebox help`). Answers the final reply (refusals included: `error: true`). Audited with source `api`.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandRequest"}}}},
                "responses": merge(ok("The reply", json!({"$ref": "#/components/schemas/Reply"})), with(&["400", "413", "415"]))
            }},
            "/api/v1/functions": {"get": {
                "summary": "List or search saved functions",
                "parameters": [
                    query("q", "Search in names and descriptions", json!({"type": "string"})),
                    query("limit", "At most this many (1..500, default 100)", json!({"type": "integer", "minimum": 1, "maximum": 500})),
                    query("offset", "Skip this many", json!({"type": "integer", "minimum": 0}))
                ],
                "responses": merge(ok("Functions, most used first", json!({"$ref": "#/components/schemas/FunctionList"})), with(&["400"]))
            }},
            "/api/v1/functions/{name}": {"get": {
                "summary": "One function and its version history",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": merge(ok("The function (null when deleted) and every version", json!({"$ref": "#/components/schemas/FunctionDetail"})), with(&["404"]))
            }},
            "/api/v1/audit": {"get": {
                "summary": "The audit trail, newest first",
                "parameters": [
                    query("user", "Only this user", json!({"type": "string"})),
                    query("outcome", "Only this outcome", json!({"$ref": "#/components/schemas/Outcome"})),
                    query("action", "Only this action", json!({"$ref": "#/components/schemas/Action"})),
                    query("limit", "At most this many (1..5000, default 200)", json!({"type": "integer", "minimum": 1, "maximum": 5000}))
                ],
                "responses": merge(ok("Entries", json!({"$ref": "#/components/schemas/AuditList"})), with(&["400"]))
            }},
            "/api/v1/data": {"get": {
                "summary": "What the trade store holds",
                "description": "As `tradebox data info --json`: trades per exchange and account, date ranges, balance snapshots and the current snapshot version.",
                "responses": merge(ok("The store summary", json!({"$ref": "#/components/schemas/DataInfo"})), with(&[]))
            }},
            "/api/v1/data/import": {"post": {
                "summary": "Import a file into the store",
                "description": "The body is the file itself: an original `trade_cache.db` (SQLite), a CSV export with a header row, or a `snapshot_YYYY-MM-DD.json` balance snapshot. Imported in one transaction; when anything was new a snapshot version is published and the sandbox workers move to it. Audited (action `import`).",
                "parameters": [
                    {"name": "name", "in": "query", "required": true, "description": "The file's name (its extension helps recognise it)", "schema": {"type": "string"}},
                    query("exchange", "Exchange for CSV rows without an exchange column", json!({"type": "string"})),
                    query("account", "Account for CSV rows without an account column", json!({"type": "string"}))
                ],
                "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": merge(ok("What was imported", json!({"$ref": "#/components/schemas/ImportResult"})), with(&["400", "409", "413"]))
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
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"},
            "field": {"type": "string", "description": "The body field at fault"}
        }},
        "RunRequest": {"type": "object", "required": ["code"], "additionalProperties": false, "properties": {
            "code": {"type": "string", "description": "Python; set `result` to answer"},
            "timeout": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 3600, "description": "Seconds; may only shorten the configured limit"}
        }},
        "RunResult": {"type": "object", "required": ["success", "output", "execution_time_ms", "artifacts"], "properties": {
            "success": {"type": "boolean"},
            "result": nullable_string,
            "output": {"type": "string", "description": "Captured stdout and stderr"},
            "error": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/ExecError"}]},
            "execution_time_ms": {"type": "integer"},
            "artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/Artifact"}}
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
            "user": {"type": "string", "description": "Who typed it (a Slack user id or a name)"},
            "channel": {"type": "string"},
            "text": {"type": "string", "example": "/analyze result = load_trades(days=7)['amount'].sum()"}
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
        "Function": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "description": {"type": "string"},
            "code": {"type": "string"}, "created_by": {"type": "string"}, "created_at": {"type": "string"},
            "last_used": nullable_string, "use_count": {"type": "integer"}, "version": {"type": "integer"},
            "updated_by": nullable_string, "updated_at": nullable_string
        }},
        "FunctionList": {"type": "object", "properties": {
            "functions": {"type": "array", "items": {"$ref": "#/components/schemas/Function"}},
            "total": {"type": "integer", "description": "How many match"},
            "limit": {"type": "integer"}, "offset": {"type": "integer"},
            "stats": {"type": "object", "properties": {"total_functions": {"type": "integer"}, "total_uses": {"type": "integer"}}}
        }},
        "FunctionDetail": {"type": "object", "properties": {
            "function": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Function"}]},
            "deleted": {"type": "boolean"},
            "history": {"type": "array", "items": {"type": "object", "properties": {
                "function_id": {"type": "integer"}, "version": {"type": "integer"}, "name": {"type": "string"},
                "description": {"type": "string"}, "code": {"type": "string"}, "saved_by": {"type": "string"},
                "saved_at": {"type": "string"}, "action": {"type": "string", "enum": ["save", "rename", "delete", "import"]}
            }}}
        }},
        "Outcome": {"type": "string", "enum": tradebox_core::audit::Outcome::NAMES},
        "Action": {"type": "string", "enum": tradebox_core::audit::Action::NAMES},
        "AuditEntry": {"type": "object", "properties": {
            "id": {"type": "integer"}, "at": {"type": "string", "description": "UTC, YYYY-MM-DDTHH:MM:SS[.ffffff]"},
            "user_id": {"type": "string"}, "channel": nullable_string,
            "source": {"type": "string", "enum": tradebox_core::audit::Source::NAMES},
            "action": {"$ref": "#/components/schemas/Action"},
            "function_name": nullable_string, "function_version": {"type": "integer", "nullable": true},
            "code": nullable_string, "outcome": {"$ref": "#/components/schemas/Outcome"},
            "error_type": nullable_string, "detail": nullable_string,
            "duration_ms": {"type": "integer", "nullable": true}
        }},
        "AuditList": {"type": "object", "properties": {
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
            "count": {"type": "integer"}, "limit": {"type": "integer"},
            "outcomes": {"type": "array", "items": {"type": "string"}},
            "actions": {"type": "array", "items": {"type": "string"}}
        }},
        "DataInfo": {"type": "object", "properties": {
            "store": {"type": "string"}, "trades": {"type": "integer"},
            "first_trade": nullable_string, "last_trade": nullable_string,
            "by_exchange": {"type": "object", "additionalProperties": {"type": "integer"}},
            "accounts": {"type": "array", "items": {"type": "object", "properties": {
                "exchange": {"type": "string"}, "account_name": {"type": "string"}, "trades": {"type": "integer"},
                "first_trade": {"type": "string"}, "last_trade": {"type": "string"}
            }}},
            "snapshots": {"type": "integer"}, "first_snapshot": nullable_string, "last_snapshot": nullable_string,
            "snapshot": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Snapshot"}]}
        }},
        "Snapshot": {"type": "object", "properties": {
            "version": {"type": "integer"}, "path": {"type": "string"}, "trades": {"type": "integer"},
            "snapshots": {"type": "integer"}, "created_at": {"type": "string"}
        }},
        "ImportResult": {"type": "object", "properties": {
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
    use super::*;

    #[test]
    fn every_operation_is_described_and_refs_resolve() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        assert_eq!(paths.len(), OPERATIONS.len());
        for (path, method) in OPERATIONS {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not described");
            assert!(op["responses"]["200"].is_object(), "{method} {path}");
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
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
}
