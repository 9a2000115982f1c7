//! The result of one job, as the front ends see it. Parsed from what a job's
//! child wrote (untrusted: fixed types, bounded sizes, names sanitised) or
//! made by the supervisor when the child timed out, died or broke the rules.

use base64::Engine;
use serde::{Deserialize, Serialize};

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
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecError {
    /// Python exception type, or one of `Timeout`, `MemoryLimit`, `Crashed`,
    /// `SandboxError`, `ResultTooLarge`, `ValidationError`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// A file a job produced: a PNG per figure, a CSV for a large table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub mime: String,
    #[serde(default)]
    pub data_b64: String,
    #[serde(default)]
    pub size: u64,
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
            result_bytes: 32 << 20,
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
    /// The decoded bytes; `None` if the job sent bad base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_b64)
            .ok()
    }
}

impl ExecResult {
    /// A failure made by the supervisor (no user output).
    pub fn failure(kind: &str, message: impl Into<String>, elapsed_ms: u64) -> ExecResult {
        ExecResult {
            success: false,
            result: None,
            value: None,
            output: String::new(),
            error: Some(ExecError {
                kind: kind.to_string(),
                message: message.into(),
                line: None,
                column: None,
                traceback: None,
            }),
            execution_time_ms: elapsed_ms,
            artifacts: Vec::new(),
        }
    }

    /// Parses and tidies what a child wrote.
    pub fn from_child(bytes: &[u8], caps: &ResultCaps, memory_mib: u64) -> ExecResult {
        let _ = caps; // TODO(results): enforce every cap
        let mut r: ExecResult = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return ExecResult::failure(
                    "SandboxError",
                    format!("the job's result could not be read: {e}"),
                    0,
                )
            }
        };
        if r.success {
            r.error = None;
        } else if r.error.is_none() {
            r.error = Some(ExecError {
                kind: "Error".into(),
                message: "the job failed without saying why".into(),
                line: None,
                column: None,
                traceback: None,
            });
        }
        if let Some(e) = &mut r.error {
            if e.kind == "MemoryError" {
                e.message = format!("memory limit of {memory_mib} MiB reached: {}", e.message);
            }
        }
        r.artifacts.truncate(caps.artifacts);
        r.artifacts
            .retain(|a| matches!(a.kind.as_str(), "png" | "csv"));
        // Only valid base64 crosses back, with its true decoded size, so
        // front ends can pass `data_b64` on as it is.
        r.artifacts.retain_mut(|a| match a.bytes() {
            Some(bytes) => {
                a.size = bytes.len() as u64;
                true
            }
            None => false,
        });
        for (i, a) in r.artifacts.iter_mut().enumerate() {
            let clean: String = a
                .name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .take(64)
                .collect();
            let clean = clean.trim_start_matches('.').to_string();
            a.name = if clean.is_empty() {
                format!("artifact-{}.{}", i + 1, a.kind)
            } else {
                clean
            };
            a.mime = match a.kind.as_str() {
                "png" => "image/png".into(),
                _ => "text/csv".into(),
            };
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_results_are_tidied() {
        let r = ExecResult::from_child(
            br#"{"success": false, "artifacts": [
                {"kind": "png", "name": "../../etc/passwd", "data_b64": "aGk=", "size": 99},
                {"kind": "csv", "name": "bad", "data_b64": "not base64!"},
                {"kind": "exe", "name": "x"}]}"#,
            &ResultCaps::for_output(1 << 20),
            1024,
        );
        assert_eq!(r.artifacts.len(), 1);
        assert_eq!(r.artifacts[0].name, "etcpasswd");
        assert_eq!(r.artifacts[0].bytes().unwrap(), b"hi");
        assert_eq!(r.artifacts[0].size, 2, "the size is the decoded length");
        assert!(r.error.is_some());
        let bad = ExecResult::from_child(b"not json", &ResultCaps::for_output(1 << 20), 1024);
        assert_eq!(bad.error.unwrap().kind, "SandboxError");
    }
}
