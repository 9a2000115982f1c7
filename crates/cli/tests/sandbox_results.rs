//! What a job's child sends back, through the real pool: answer frames a job
//! forges on its own result pipe (the supervisor enforces every cap itself,
//! in bounded memory, and reports a broken rule as the job's error), and
//! legal results that must come back intact (huge integers, lone
//! surrogates, wide tables, many figures). After each, a plain job runs.
//!
//! The tests take turns (one lock): one of them measures the peak memory of
//! this process, which hosts the pool's supervisor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{error_kind, pool, run};
use tradebox_sandbox::{ExecResult, Origin, Pool};

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A snippet that writes the bytes of the Python expression `payload` as its
/// whole answer frame, straight to the child's result pipe, and exits.
fn forge(payload: &str) -> String {
    format!(
        r#"
import base64, json, os, struct, sys
f = sys._getframe()
while f.f_code.co_name != "_child_main":
    f = f.f_back
res_w = f.f_locals["res_w"]
payload = {payload}
view = memoryview(struct.pack(">I", len(payload)) + payload)
while view:
    view = view[os.write(res_w, view):]
os._exit(0)
"#
    )
}

/// A forged answer: `fields` (a Python dict display) as JSON.
fn forge_json(fields: &str) -> String {
    forge(&format!(
        "json.dumps({fields}, ensure_ascii=False).encode()"
    ))
}

fn assert_recovers(pool: &Pool, after: &str) {
    let started = Instant::now();
    let r = run(pool, "result = 1 + 1");
    assert!(r.success, "the job after {after} failed: {r:?}");
    assert_eq!(r.result.as_deref(), Some("2"), "after {after}: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "after {after}");
}

/// The message of a result the supervisor refused, after checking it is one.
fn refused(r: &ExecResult) -> &str {
    assert!(!r.success, "{r:?}");
    assert_eq!(error_kind(r), "InvalidResult", "{r:?}");
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.origin, Origin::Job);
    assert!(r.artifacts.is_empty() && r.result.is_none() && r.value.is_none());
    &e.message
}

/// A field of /proc/self/status, in bytes.
fn status(field: &str) -> usize {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// Runs `code` and returns its result with the growth of this process's
/// peak memory meanwhile.
fn run_measured(pool: &Pool, code: &str) -> (ExecResult, usize) {
    // Writing 5 resets the peak (VmHWM) to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    let before = status("VmRSS:");
    let r = run(pool, code);
    (r, status("VmHWM:").saturating_sub(before))
}

#[test]
fn forged_small_numbers_cost_the_supervisor_little() {
    let _turn = one_at_a_time();
    let pool = pool(1);
    for (mib, kind) in [(44, "ResultTooLarge"), (30, "InvalidResult")] {
        let frame = mib << 20;
        let code = forge(&format!(
            r#"b'{{"success": true, "output": "kept", "value": [' + b'1,' * ({frame} // 2 - 40) + b'1]}}'"#
        ));
        let started = Instant::now();
        let (r, grew) = run_measured(&pool, &code);
        println!(
            "[memory] {mib} MiB of small numbers: peak grew by {} MiB in {:?}; {:?}",
            grew >> 20,
            started.elapsed(),
            r.error
        );
        assert_eq!(error_kind(&r), kind, "{r:?}");
        let e = r.error.as_ref().unwrap();
        // Too large is measured by tradebox (the zygote may refuse the frame
        // before it reaches the supervisor); a broken rule is the job's.
        if kind == "InvalidResult" {
            assert_eq!(e.origin, Origin::Job);
            assert!(e.message.contains("more than 200000 nodes"), "{e:?}");
            assert_eq!(r.output, "kept");
        }
        assert!(
            grew < 3 * frame,
            "a {mib} MiB frame grew the supervisor's peak memory by {} MiB",
            grew >> 20
        );
        assert_recovers(&pool, &format!("{mib} MiB of small numbers"));
    }
}

#[test]
fn forged_output_is_cut_to_its_cap() {
    let _turn = one_at_a_time();
    let pool = pool(1);
    let r = run(
        &pool,
        &forge_json(r#"{"success": True, "output": "x" * (20 << 20), "result": "é" * (3 << 20)}"#),
    );
    assert!(r.success, "{r:?}");
    assert_eq!(
        r.output,
        format!(
            "{}\n... output truncated: 19.0 MiB more not shown (limit 1.0 MiB)",
            "x".repeat(1 << 20)
        )
    );
    let result = r.result.unwrap();
    assert!(result.len() < (1 << 20) + 100, "{}", result.len());
    assert!(result.ends_with("... output truncated: 5.0 MiB more not shown (limit 1.0 MiB)"));
    assert_recovers(&pool, "20 MiB of forged output");
}

#[test]
fn forged_artifacts_are_refused() {
    let _turn = one_at_a_time();
    let pool = pool(1);
    let png = r#"base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"x" * 10).decode()"#;
    let many = forge_json(&format!(
        r#"{{"success": True, "output": "o", "artifacts": [{{"kind": "png", "name": f"x{{i}}.png", "data_b64": {png}}} for i in range(30)]}}"#
    ));
    let r = run(&pool, &many);
    assert_eq!(
        refused(&r),
        "the job's answer broke the sandbox's result rules: it has more than 11 artifacts"
    );
    assert_eq!(r.output, "o");
    assert_recovers(&pool, "30 forged artifacts");

    let script = forge_json(
        r#"{"success": True, "artifacts": [{"kind": "png", "name": "conftest.py", "data_b64": base64.b64encode(b"import os\nos.system('id')\n").decode()}]}"#,
    );
    assert_eq!(
        refused(&run(&pool, &script)),
        "the job's answer broke the sandbox's result rules: artifact 1 is not a PNG image"
    );
    assert_recovers(&pool, "a script posing as a PNG");

    // A valid file keeps none of what the job said about it but its kind.
    let named = forge_json(&format!(
        r#"{{"success": True, "artifacts": [{{"kind": "png", "name": "../Makefile", "mime": "text/x-shellscript", "data_b64": {png}, "size": 1}}]}}"#
    ));
    let r = run(&pool, &named);
    assert!(r.success, "{r:?}");
    let a = &r.artifacts[0];
    assert_eq!(
        (a.name.as_str(), a.mime.as_str(), a.size),
        ("figure-1.png", "image/png", 18)
    );
    assert_recovers(&pool, "a forged file name");
}

#[test]
fn forged_errors_are_the_jobs() {
    let _turn = one_at_a_time();
    let pool = pool(1);
    for kind in ["SandboxError", "Timeout"] {
        let r = run(
            &pool,
            &forge_json(&format!(
                r#"{{"success": False, "error": {{"type": "{kind}", "message": "forged"}}}}"#
            )),
        );
        assert_eq!(error_kind(&r), kind, "{r:?}");
        assert_eq!(r.error.as_ref().unwrap().origin, Origin::Job);
        assert_recovers(&pool, "a forged error");
    }
    let r = run(&pool, &forge("b'{not json'"));
    assert!(refused(&r).starts_with("the job's answer could not be read: "));
    assert_recovers(&pool, "an unreadable answer");
    // A real timeout is tradebox's.
    let r = common::run_with(&pool, "while True:\n    pass", Duration::from_secs(1), 1024);
    assert_eq!(error_kind(&r), "Timeout", "{r:?}");
    assert_eq!(r.error.as_ref().unwrap().origin, Origin::Tradebox);
    assert_recovers(&pool, "a timeout");
}

#[test]
fn legal_results_come_back_intact() {
    let _turn = one_at_a_time();
    let pool = pool(1);

    let r = run(&pool, "result = 10 ** 400");
    assert!(r.success, "{r:?}");
    assert_eq!(r.result.unwrap(), format!("1{}", "0".repeat(400)));
    assert_eq!(r.value, Some(serde_json::json!({"type": "text"})));
    assert_recovers(&pool, "a 401-digit integer");

    let r = run(&pool, r"result = 'a\ud800b'");
    assert!(r.success, "{r:?}");
    assert_eq!(r.result.as_deref(), Some(r"a\ud800b"));
    assert_eq!(
        r.value,
        Some(serde_json::json!({"type": "scalar", "value": r"a\ud800b"}))
    );
    assert_recovers(&pool, "a lone surrogate");

    let r = run(&pool, r"result = {'\udfff': 1}");
    assert!(r.success, "{r:?}");
    assert_eq!(
        r.value,
        Some(serde_json::json!({"type": "json", "value": {r"\udfff": 1}}))
    );
    assert_recovers(&pool, "a surrogate key");

    let r = run(&pool, r"print('\ud800')");
    assert!(r.success, "{r:?}");
    assert_eq!(r.output, "\\ud800\n");
    let r = run(&pool, r"raise ValueError('\ud800')");
    assert_eq!(error_kind(&r), "ValueError", "{r:?}");
    assert_eq!(r.error.as_ref().unwrap().message, r"\ud800");
    assert_recovers(&pool, "printed surrogates");

    let r = run(
        &pool,
        "result = pd.DataFrame(np.arange(1000 * 500).reshape(1000, 500))",
    );
    assert!(r.success, "{r:?}");
    let value = r.value.as_ref().unwrap();
    assert_eq!(value["type"], "dataframe");
    assert_eq!(value["truncated"], true);
    assert_eq!(value["rows"], 1000);
    assert_eq!(value["data"].as_array().unwrap().len(), 200);
    let names: Vec<_> = r.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["table-1.csv"]);
    assert_recovers(&pool, "a 1000x500 table");

    let r = run(
        &pool,
        "for i in range(12):\n    plt.figure()\n    plt.plot([1, i])",
    );
    assert!(r.success, "{r:?}");
    let names: Vec<_> = r.artifacts.iter().map(|a| a.name.clone()).collect();
    let want: Vec<_> = (1..=11).map(|i| format!("figure-{i}.png")).collect();
    assert_eq!(names, want);
    assert_eq!(r.output, "1 more figures not shown (limit 11 files)");
    assert_recovers(&pool, "12 figures");
}
