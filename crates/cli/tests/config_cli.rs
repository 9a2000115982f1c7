//! End-to-end tests of `tradebox config show [--json]`: the defaults, a
//! value from `tradebox.toml`, an environment variable winning over the
//! file, the JSON shape, masked secrets, text output that is itself a valid
//! `tradebox.toml`, and a bad file (one clear line, exit code 2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// `tradebox --home HOME config show ARGS` with only the variables given
/// (no configuration from the environment of the test run).
fn show(home: &Path, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::cargo_bin("tradebox").unwrap();
    cmd.env_clear()
        .env("TRADEBOX_HOME", home)
        .env("USER", "alice")
        .args(["config", "show"])
        .args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn show_json(home: &Path, vars: &[(&str, &str)]) -> Value {
    let (code, out, err) = show(home, &["--json"], vars);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The line of `key` in the text output.
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn defaults_without_a_file() {
    let home = TempDir::new().unwrap();
    let (code, out, err) = show(home.path(), &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    let file = home.path().join("tradebox.toml");
    assert!(
        out.contains(&format!(
            "# file: {} (none: defaults and environment only)",
            file.display()
        )),
        "{out}"
    );
    assert!(line(&out, "timeout_seconds").starts_with("timeout_seconds = 30 "));
    assert!(line(&out, "timeout_seconds").ends_with(" # default"));
    assert!(line(&out, "user").starts_with("user = \"alice\" "), "$USER");
    assert!(out.contains("# as_of is not set (default)"), "{out}");
    for section in ["[data]", "[limits]", "[pool]", "[slack]"] {
        assert!(out.contains(section), "{section}");
    }
    assert!(out.contains("SLACK_BOT_TOKEN        not set"), "{out}");
    assert!(out.contains("console token          not made yet"), "{out}");
}

#[test]
fn a_file_value_and_the_environment_over_it() {
    let home = TempDir::new().unwrap();
    let file = home.path().join("tradebox.toml");
    std::fs::write(
        &file,
        "[limits]\ntimeout_seconds = 5\nmemory_mb = 256\n\n[permissions]\nadmins = [\"U1\"]\n",
    )
    .unwrap();
    let (code, out, err) = show(home.path(), &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("# file: {}\n", file.display())),
        "{out}"
    );
    let from_file = format!(" # file {}", file.display());
    assert!(line(&out, "timeout_seconds").starts_with("timeout_seconds = 5 "));
    assert!(line(&out, "timeout_seconds").ends_with(&from_file));
    assert!(line(&out, "admins").starts_with("admins = [\"U1\"] "));
    assert!(line(&out, "admins").ends_with(&from_file));
    assert!(line(&out, "queue").ends_with(" # default"));

    // The environment wins over the file, key by key.
    let vars = [("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "7")];
    let (code, out, err) = show(home.path(), &[], &vars);
    assert_eq!(code, 0, "{err}");
    let timeout = line(&out, "timeout_seconds");
    assert!(timeout.starts_with("timeout_seconds = 7 "), "{timeout}");
    assert!(
        timeout.ends_with(" # env TRADEBOX_LIMITS_TIMEOUT_SECONDS"),
        "{timeout}"
    );
    assert!(line(&out, "memory_mb").starts_with("memory_mb = 256 "));
    assert!(line(&out, "memory_mb").ends_with(&from_file));

    // The text output is a tradebox.toml that gives the same settings.
    let copy = TempDir::new().unwrap();
    std::fs::write(copy.path().join("tradebox.toml"), &out).unwrap();
    let again = show_json(copy.path(), &[]);
    let original = show_json(home.path(), &vars);
    for (section, keys) in original["settings"].as_object().unwrap() {
        for (key, entry) in keys.as_object().unwrap() {
            assert_eq!(
                again["settings"][section][key]["value"], entry["value"],
                "{section}.{key}"
            );
        }
    }
}

#[test]
fn json_shape() {
    let home = TempDir::new().unwrap();
    let file = home.path().join("tradebox.toml");
    std::fs::write(&file, "[pool]\nqueue = 16\n").unwrap();
    let v = show_json(
        home.path(),
        &[
            ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "3"),
            ("TRADEBOX_DATA_AS_OF", "latest"),
        ],
    );
    assert_eq!(v["home"], home.path().to_str().unwrap());
    assert_eq!(v["file"]["path"], file.to_str().unwrap());
    assert_eq!(v["file"]["found"], true);

    let s = &v["settings"];
    assert_eq!(
        s["limits"]["timeout_seconds"],
        serde_json::json!({
            "value": 30,
            "source": "default",
            "env": "TRADEBOX_LIMITS_TIMEOUT_SECONDS",
        })
    );
    assert_eq!(
        s["pool"]["queue"],
        serde_json::json!({
            "value": 16,
            "source": "file",
            "path": file.to_str().unwrap(),
            "env": "TRADEBOX_POOL_QUEUE",
        })
    );
    assert_eq!(
        s["rate_limit"]["executions"],
        serde_json::json!({
            "value": 3,
            "source": "env",
            "var": "TRADEBOX_RATE_LIMIT_EXECUTIONS",
            "env": "TRADEBOX_RATE_LIMIT_EXECUTIONS",
        })
    );
    assert_eq!(s["data"]["as_of"]["value"], "latest");
    assert_eq!(s["permissions"]["admins"]["value"], serde_json::json!([]));
    assert_eq!(s["validator"]["enabled"]["value"], true);
    let keys: usize = s
        .as_object()
        .unwrap()
        .values()
        .map(|t| t.as_object().unwrap().len())
        .sum();
    assert_eq!(keys, tradebox_core::config::KEYS.len());

    let secrets = &v["secrets"];
    for name in ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"] {
        assert_eq!(secrets[name], serde_json::json!({ "set": false }), "{name}");
    }
    assert_eq!(secrets["console_token"]["set"], false);
    assert_eq!(v["unused_secrets"], serde_json::json!([]));
}

#[test]
fn secrets_are_masked() {
    let home = TempDir::new().unwrap();
    let vars = [
        ("SLACK_BOT_TOKEN", "xoxb-1111-2222-secretpart"),
        ("SLACK_SIGNING_SECRET", "8f742231b10e8888abcd99yyyzzz85a5"),
        ("TRADEBOX_TOKEN", "console-token-0123456789"),
        ("TRADEBOX_SLACK_APP_TOKEN", "xapp-misplaced-value"),
    ];
    let (code, out, err) = show(home.path(), &[], &vars);
    assert_eq!(code, 0, "{err}");
    let (_, json, _) = show(home.path(), &["--json"], &vars);
    for shown in [&out, &json, &err] {
        for (_, value) in vars {
            assert!(!shown.contains(value), "{value} shown:\n{shown}");
        }
        assert!(!shown.contains("secretpart"), "{shown}");
    }
    assert!(out.contains("SLACK_BOT_TOKEN        set (xoxb-…)"), "{out}");
    assert!(out.contains("SLACK_SIGNING_SECRET   set (…)"), "{out}");
    assert!(
        out.contains("console token          set by TRADEBOX_TOKEN (hidden)"),
        "{out}"
    );
    assert!(
        out.contains("Set but not read by tradebox: TRADEBOX_SLACK_APP_TOKEN"),
        "{out}"
    );
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["secrets"]["SLACK_BOT_TOKEN"]["masked"], "xoxb-…");
    assert_eq!(v["secrets"]["console_token"]["source"], "env");
    assert_eq!(
        v["unused_secrets"],
        serde_json::json!(["TRADEBOX_SLACK_APP_TOKEN"])
    );

    // The console token kept in the home is never shown either.
    let token = "f".repeat(48);
    std::fs::write(home.path().join("console-token"), &token).unwrap();
    let (code, out, err) = show(home.path(), &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&token), "{out}");
    let kept = home.path().join("console-token");
    assert!(
        out.contains(&format!(
            "console token          in {} (hidden)",
            kept.display()
        )),
        "{out}"
    );
}

#[test]
fn slack_api_url_from_its_own_variable() {
    let home = TempDir::new().unwrap();
    let vars = [
        ("TRADEBOX_SLACK_API_URL", "http://127.0.0.1:1/api/"),
        ("SLACK_API_URL", "http://127.0.0.1:2/api/"),
    ];
    let v = show_json(home.path(), &vars);
    let api_url = &v["settings"]["slack"]["api_url"];
    assert_eq!(api_url["value"], "http://127.0.0.1:2/api/");
    assert_eq!(api_url["var"], "SLACK_API_URL");
}

#[test]
fn a_bad_file_is_one_clear_line_and_exit_2() {
    let home = TempDir::new().unwrap();
    let file = home.path().join("tradebox.toml");
    std::fs::write(&file, "[limits]\nmemory_mb = 2048\ntimout_seconds = 10\n").unwrap();
    for args in [&[][..], &["--json"][..]] {
        let (code, out, err) = show(home.path(), args, &[]);
        assert_eq!(code, 2, "{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "error: {}, line 3, column 1: unknown key 'timout_seconds' in [limits] \
                 (did you mean 'timeout_seconds'? expected one of timeout_seconds, memory_mb, \
                 output_bytes, scratch_mb, max_code_bytes)",
                file.display()
            )
        );
    }

    // A bad environment value names the variable, also exit 2.
    std::fs::remove_file(&file).unwrap();
    let (code, _, err) = show(
        home.path(),
        &[],
        &[("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "ten")],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim_end(),
        "error: environment variable TRADEBOX_LIMITS_TIMEOUT_SECONDS: limits.timeout_seconds \
         must be a whole number (0 or more), not \"ten\""
    );
}
