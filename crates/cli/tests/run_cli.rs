//! `tradebox run` and `tradebox doctor` as a user calls them: output forms,
//! exit codes, the validator, artifacts, and the refusal on a host where the
//! sandbox cannot run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use serde_json::Value;

/// Runs the binary against the fixture home and the shared runtime.
fn tradebox(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    common::python(); // provision the shared runtime first
    let mut child = std::process::Command::new(common::bin())
        .env("TRADEBOX_HOME", common::home())
        .env("TRADEBOX_RUNTIME", common::runtime_dir())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn json_output_has_exactly_the_contract_fields() {
    let (code, out, err) = tradebox(
        &[
            "run",
            "--json",
            "--as-of",
            "latest",
            "-c",
            "df = load_trades(days=7)\nprint(len(df))\nresult = df.groupby('exchange')['amount'].sum()",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    common::assert_run_fields(&v);
    assert_eq!(v["success"], true);
    let week = &common::expected()["trades"]["last_7_days"];
    for exchange in common::strings(&week["exchanges"]) {
        assert!(v["result"].as_str().unwrap().contains(&exchange), "{v}");
    }
    assert!(v["error"].is_null());
    // Seven days back from the fixture's newest trade, counted independently
    // (SQLite here, the generator's count in expected.json).
    let conn = rusqlite::Connection::open(common::fixtures().join("trade_cache.db")).unwrap();
    let want: i64 = conn
        .query_row(
            "SELECT count(*) FROM trades WHERE julianday(timestamp) >= (SELECT julianday(max(timestamp)) - 7 FROM trades)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v["output"].as_str().unwrap().trim(), want.to_string());
    assert_eq!(week["count"], want);
}

#[test]
fn every_answer_says_which_snapshot_and_newest_trade_it_is_based_on() {
    let (_, manifest) = tradebox_data::snapshot::current(&common::home().join("snapshot"))
        .unwrap()
        .unwrap();
    // The newest trade, independently: SQLite over the fixture.
    let conn = rusqlite::Connection::open(common::fixtures().join("trade_cache.db")).unwrap();
    let newest: String = conn
        .query_row("SELECT max(timestamp) FROM trades", [], |r| r.get(0))
        .unwrap();
    let (code, out, err) = tradebox(&["run", "--json", "-c", "result = 1"], None);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let data = &v["data_as_of"];
    assert_eq!(data["snapshot"], manifest.version, "{v}");
    let got = data["newest_trade"].as_str().unwrap();
    assert!(
        got.starts_with(&newest[..19].replace(' ', "T")) && got.ends_with('Z'),
        "{got} vs the fixture's {newest}"
    );
    assert!(data["as_of"].is_null(), "{v}");

    // A pinned as_of is named; the text form says it all on stderr.
    let (code, out, err) = tradebox(&["run", "--as-of", "2026-01-01", "-c", "result = 1"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1");
    let line = format!("(snapshot v{}), as of 2026-01-01", manifest.version);
    assert!(err.contains("data to ") && err.contains(&line), "{err}");

    // A failed job still names its data; a forged answer cannot change it.
    let forged = r#"
import json, os, struct, sys
f = sys._getframe()
while f.f_code.co_name != "_child_main":
    f = f.f_back
body = json.dumps({"success": True, "result": "forged", "output": "", "artifacts": [],
                   "data_as_of": {"snapshot": 999, "newest_trade": None, "as_of": None}}).encode()
os.write(f.f_locals["res_w"], struct.pack(">I", len(body)) + body)
"#;
    let (_, out, err) = tradebox(&["run", "--json", "--no-validate", "-c", forged], None);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(v["result"], "forged", "{v}");
    assert_eq!(v["data_as_of"]["snapshot"], manifest.version, "{v}");
    let (code, out, _) = tradebox(&["run", "--json", "-c", "result = 1 / 0"], None);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data_as_of"]["snapshot"], manifest.version, "{v}");
}

#[test]
fn exit_codes_and_sources_of_code() {
    let (code, out, _) = tradebox(&["run", "-"], Some("result = 6 * 7\n"));
    assert_eq!((code, out.trim()), (0, "42"));

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "x = [1, 2]\nx[5]\n").unwrap();
    let (code, _, err) = tradebox(&["run", file.path().to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 2") && err.contains("IndexError"),
        "{err}"
    );

    let (code, _, err) = tradebox(&["run"], None);
    assert_eq!(code, 2);
    assert!(err.contains("no code given"), "{err}");
    let (code, _, err) = tradebox(&["run", "--as-of", "someday", "-c", "1"], None);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = tradebox(&["run", "/nonexistent/file.py"], None);
    assert_eq!(code, 2);
    let (code, _, _) = tradebox(&["run", "--memory", "1", "-c", "1"], None);
    assert_eq!(code, 2);
}

#[test]
fn validator_reports_line_and_column_and_can_be_skipped() {
    let (code, out, _) = tradebox(&["run", "--json", "-c", "x = 1\nif x\n    pass"], None);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["type"], "ValidationError");
    assert_eq!(
        (v["error"]["line"].as_u64(), v["error"]["column"].as_u64()),
        (Some(2), Some(5))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2, column 5:"),
        "{v}"
    );

    let (code, out, _) = tradebox(&["run", "--json", "-c", "import os\nresult = 1"], None);
    assert_eq!(code, 1);
    assert!(out.contains("import of 'os' is not allowed"), "{out}");
    // Without the validator the import works, and the sandbox still holds.
    let (code, out, _) = tradebox(
        &[
            "run",
            "--json",
            "--no-validate",
            "-c",
            "import os\nresult = os.getuid()",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["result"],
        "1000"
    );
}

#[test]
fn figures_and_big_tables_become_files() {
    let dir = tempfile::TempDir::new().unwrap();
    let (code, out, err) = tradebox(
        &[
            "run",
            "--json",
            "--artifacts",
            dir.path().to_str().unwrap(),
            "-c",
            "df = load_trades(days=None)\ndf.groupby('exchange')['amount'].sum().plot(kind='bar')\nresult = df",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let artifacts = v["artifacts"].as_array().unwrap();
    let kinds: Vec<&str> = artifacts
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"png") && kinds.contains(&"csv"), "{v}");
    for a in artifacts {
        let path = Path::new(a["path"].as_str().unwrap());
        assert!(path.starts_with(dir.path()));
        let bytes = std::fs::read(path).unwrap();
        match a["kind"].as_str().unwrap() {
            "png" => assert!(bytes.starts_with(b"\x89PNG")),
            _ => assert_eq!(
                String::from_utf8_lossy(&bytes).lines().count() as u64,
                common::trade_count() + 1
            ),
        }
    }
    assert!(
        v["result"]
            .as_str()
            .unwrap()
            .contains(&format!("[{} rows x 10 columns]", common::trade_count())),
        "{v}"
    );
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn artifacts_never_overwrite_or_follow_a_symlink() {
    let dir = tempfile::TempDir::new().unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), "outside the folder").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("figure-1.png")).unwrap();
    std::fs::write(dir.path().join("figure-1-2.png"), "mine").unwrap();
    let (code, out, err) = tradebox(
        &[
            "run",
            "--json",
            "--artifacts",
            dir.path().to_str().unwrap(),
            "-c",
            "plt.figure()\nplt.plot([1, 2])\nplt.figure()\nplt.plot([2, 1])",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let paths: Vec<&str> = v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    assert_eq!(paths, [at("figure-1-3.png"), at("figure-2.png")], "{v}");
    assert_eq!(
        names_in(dir.path()),
        [
            "figure-1-2.png",
            "figure-1-3.png",
            "figure-1.png",
            "figure-2.png"
        ]
    );
    let link = std::fs::read_link(dir.path().join("figure-1.png")).unwrap();
    assert_eq!(link, outside.path());
    assert_eq!(
        std::fs::read_to_string(outside.path()).unwrap(),
        "outside the folder"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("figure-1-2.png")).unwrap(),
        "mine"
    );
    for name in ["figure-1-3.png", "figure-2.png"] {
        assert!(std::fs::read(dir.path().join(name))
            .unwrap()
            .starts_with(b"\x89PNG"));
    }

    // A job that forges its answer does not choose the names either.
    let forged = r#"
import base64, json, os, struct, sys
f = sys._getframe()
while f.f_code.co_name != "_child_main":
    f = f.f_back
csv = base64.b64encode(b"a,b\n1,2\n").decode()
payload = json.dumps({"success": True, "artifacts": [
    {"kind": "csv", "name": "conftest.py", "data_b64": csv},
    {"kind": "csv", "name": "../Makefile", "data_b64": csv}]}).encode()
os.write(f.f_locals["res_w"], struct.pack(">I", len(payload)) + payload)
os._exit(0)
"#;
    let dir = tempfile::TempDir::new().unwrap();
    let args = [
        "run",
        "--no-validate",
        "--artifacts",
        dir.path().to_str().unwrap(),
        "-c",
        forged,
    ];
    let (code, _, err) = tradebox(&args, None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        names_in(dir.path()),
        ["table-1.csv", "table-2.csv"],
        "{err}"
    );
    assert!(!dir.path().parent().unwrap().join("Makefile").exists());
}

#[test]
fn doctor_reports_every_layer_active() {
    let (code, out, err) = tradebox(&["doctor", "--json"], None);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    let layers = v["layers"].as_array().unwrap();
    assert!(layers.len() >= 10);
    for l in layers {
        assert_eq!(l["active"], true, "{l}");
    }
    assert!(v["memory_limits"].as_str().unwrap().contains("rlimits"));
    // The zygote says how many of its objects it made immortal: some on
    // Python 3.12 and 3.13, none on others, where the text says what a
    // newer Python would save.
    let version = v["python"]["version"].as_str().unwrap();
    let immortal = v["pool"][0]["immortal"].as_u64().unwrap();
    let newer = version.starts_with("3.12.") || version.starts_with("3.13.");
    assert_eq!(immortal > 0, newer, "Python {version}: {immortal} immortal");
    let (code, out, _) = tradebox(&["doctor"], None);
    assert_eq!(code, 0);
    assert!(out.contains("every layer is active"), "{out}");
    assert_eq!(out.contains("a third less memory"), !newer, "{out}");
}

/// A host without user namespaces: simulated with a nested user namespace
/// whose `max_user_namespaces` is 0. `run` must refuse (exit 2) with advice.
#[test]
fn unsupported_host_is_refused_with_advice() {
    common::python();
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && TRADEBOX_HOME='{}' TRADEBOX_RUNTIME='{}' '{}' run -c 'result = 1'",
        common::home().display(),
        common::runtime_dir().display(),
        common::bin()
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the sandbox cannot be set up"), "{err}");
    assert!(err.contains("does not run code unconfined"), "{err}");
    assert!(err.contains("sysctl -w user.max_user_namespaces"), "{err}");
    assert!(out.stdout.is_empty());
}
