//! The memory `ExecResult::from_child` needs for a hostile answer frame: a
//! small multiple of the frame's size, whatever the frame holds (at least
//! the 16 MiB a structured value may take beyond its frame). Each frame
//! is measured in a fresh process (this test binary run again), so memory
//! freed earlier cannot hide what parsing takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use base64::Engine;
use tradebox_sandbox::{ExecResult, ResultCaps};

const CASE: &str = "TRADEBOX_RESULT_MEMORY_CASE";
const CASES: [&str; 9] = [
    "small numbers",
    "small objects",
    "small numbers, 1 MiB",
    "small objects, 1 MiB",
    "long strings",
    "escaped output",
    "escaped strings",
    "valid artifacts",
    "too many artifacts",
];

/// A field of /proc/self/status, in bytes.
fn status(field: &str) -> usize {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// A frame of nearly `room` bytes: `head`, then `item` repeated, then
/// `tail`, built in place (no freed copies left behind).
fn frame(room: usize, head: &str, item: &str, tail: &str) -> String {
    let mut s = String::with_capacity(room);
    s.push_str(head);
    while s.len() + item.len() + tail.len() <= room {
        s.push_str(item);
    }
    s.push_str(tail);
    s
}

fn build(case: &str, room: usize) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(case) = case.strip_suffix(", 1 MiB") {
        return build(case, 1 << 20);
    }
    match case {
        "small numbers" => frame(
            room,
            r#"{"success": true, "value": ["#,
            "1,",
            r#"1], "output": "kept"}"#,
        ),
        "small objects" => frame(
            room,
            r#"{"success": true, "value": ["#,
            r#"{"k":1},"#,
            "1]}",
        ),
        "long strings" => {
            let item = format!("\"{}\",", "v".repeat(1 << 20));
            frame(room, r#"{"success": true, "value": ["#, &item, "1]}")
        }
        "escaped output" => frame(room, r#"{"success": true, "output": ""#, "\\u0041", "\"}"),
        "escaped strings" => frame(room, r#"{"success": true, "value": [""#, "\\u0041", "\"]}"),
        "valid artifacts" => {
            let csv = b64.encode("a,b\n".repeat(6 << 18)); // 6 MiB decoded
            let item = format!(r#"{{"kind": "csv", "data_b64": "{csv}"}},"#);
            let last = r#"{"kind": "csv", "data_b64": ""}]}"#;
            frame(room, r#"{"success": true, "artifacts": ["#, &item, last)
        }
        "too many artifacts" => frame(room, r#"{"success": true, "artifacts": ["#, "{},", "{}]}"),
        other => panic!("unknown case {other}"),
    }
}

/// Runs in the child process: builds one frame, parses it, prints the peak.
#[test]
fn measure_one_case() {
    let Ok(case) = std::env::var(CASE) else {
        return; // only when run by the test below
    };
    let caps = ResultCaps::for_output(1 << 20);
    let frame = build(&case, caps.result_bytes);
    // Writing 5 resets the peak (VmHWM) to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    let before = status("VmRSS:");
    let r = ExecResult::from_child(frame.as_bytes(), &caps, 1024);
    let extra = status("VmHWM:").saturating_sub(before);
    let error = r.error.as_ref().map(|e| e.message.as_str());
    println!(
        "MEASURED {} {extra} success={} error={error:?}",
        frame.len(),
        r.success
    );
}

#[test]
fn hostile_frames_cost_a_small_multiple_of_their_size() {
    let mut over = Vec::new();
    for case in CASES {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "measure_one_case",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CASE, case)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("MEASURED ").map(|(_, m)| m))
            .unwrap_or_else(|| panic!("{case}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
        let mut parts = line.splitn(3, ' ');
        let len: usize = parts.next().unwrap().parse().unwrap();
        let extra: usize = parts.next().unwrap().parse().unwrap();
        let ratio = extra as f64 / len as f64;
        println!(
            "{case}: frame {:.1} MiB, peak extra {:.1} MiB ({ratio:.2}x); {}",
            len as f64 / (1 << 20) as f64,
            extra as f64 / (1 << 20) as f64,
            parts.next().unwrap_or("")
        );
        if extra > 3 * len.max(8 << 20) {
            over.push(format!("{case}: {ratio:.2}x"));
        }
    }
    assert!(
        over.is_empty(),
        "from_child took over 3x the frame's size (or 24 MiB): {over:?}"
    );
}
