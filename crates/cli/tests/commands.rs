//! The slash commands end to end, through the real binary (`tradebox chat`,
//! `tradebox func`, `tradebox audit`) on real SQLite files and the real
//! sandbox: every behaviour of the original bot's handlers (texts and
//! fields), permissions and rate limits from the configuration, the audit
//! trail, the Block Kit Slack would receive (snapshots), and the `func`
//! subcommands.
//!
//! Every test works in its own fresh home, so function stores, rate-limit
//! counters and audit trails never leak between tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use serde_json::{json, Value};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Harness

/// Output forms of `tradebox chat --format`.
#[derive(Debug, Clone, Copy)]
enum Format {
    Text,
    Blocks,
    Json,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Blocks => "blocks",
            Format::Json => "json",
        }
    }
}

use Format::{Blocks, Json, Text};

/// A fresh home with the fixture imported.
fn fresh_home() -> TempDir {
    common::fixture_home()
}

/// How many trades `load_trades(days=7)` sees, counted back from the newest.
fn week_count() -> u64 {
    common::expected()["trades"]["last_7_days"]["count"]
        .as_u64()
        .unwrap()
}

/// pandas' text of `load_trades(days=7).groupby('exchange')['amount'].sum()`
/// for the fixture, built from the generator's sums.
fn week_volume_by_exchange() -> String {
    let by_exchange = common::expected()["trades"]["last_7_days"]["by_exchange"]
        .as_object()
        .unwrap();
    let rows: Vec<(&str, f64)> = by_exchange
        .iter()
        .map(|(name, s)| (name.as_str(), s["amount"].as_f64().unwrap()))
        .collect();
    float_series_text("exchange", &rows, "amount")
}

/// The text pandas (default display options) gives a float64 Series with a
/// named string index, in its fixed notation: six decimals with the zeros
/// every value ends in trimmed, values right-aligned after a sign column,
/// the index left-aligned three spaces before them.
fn float_series_text(index_name: &str, rows: &[(&str, f64)], name: &str) -> String {
    assert!(
        rows.iter().all(|(_, v)| v.abs() < 1e6 && v.abs() >= 1e-6),
        "pandas would switch to scientific notation: {rows:?}"
    );
    let mut values: Vec<String> = rows.iter().map(|(_, v)| format!(" {v:.6}")).collect();
    while values
        .iter()
        .all(|v| v.ends_with('0') && !v.ends_with(".0"))
    {
        values.iter_mut().for_each(|v| {
            v.pop();
        });
    }
    let value_width = values.iter().map(String::len).max().unwrap();
    let index_width = rows.iter().map(|(i, _)| i.chars().count()).max().unwrap() + 3;
    let mut text = format!("{index_name}\n");
    for ((index, _), value) in rows.iter().zip(&values) {
        text.push_str(&format!("{index:<index_width$}{value:>value_width$}\n"));
    }
    text + &format!("Name: {name}, dtype: float64")
}

#[test]
fn float_series_text_is_pandas_layout() {
    // As pandas (3.x, default options) prints these two Series.
    assert_eq!(
        float_series_text("exchange", &[("mexc", 797_711.34), ("sui_dex", 2820.419582)], "amount"),
        "exchange\nmexc       797711.340000\nsui_dex      2820.419582\nName: amount, dtype: float64"
    );
    assert_eq!(
        float_series_text("side", &[("buy", 1.5), ("sell", 20.25)], "fee"),
        "side\nbuy      1.50\nsell    20.25\nName: fee, dtype: float64"
    );
}

/// Runs the binary on `home` with the shared runtime, the fixture's clock
/// and `env` on top of a clean environment (no inherited `TRADEBOX_*`).
fn tb(home: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    common::python(); // provision the shared runtime first
    let mut cmd = std::process::Command::new(common::bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRADEBOX_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TRADEBOX_HOME", home)
        .env("TRADEBOX_RUNTIME", common::runtime_dir())
        .env("TRADEBOX_DATA_AS_OF", "latest")
        .env("TRADEBOX_CONSOLE_USER", "console")
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tradebox chat --user USER --format FORMAT TEXT`.
fn chat(home: &Path, user: &str, text: &str, format: Format) -> (i32, String, String) {
    chat_env(home, &[], user, text, format)
}

fn chat_env(
    home: &Path,
    env: &[(&str, &str)],
    user: &str,
    text: &str,
    format: Format,
) -> (i32, String, String) {
    tb(
        home,
        env,
        &["chat", "--user", user, "--format", format.as_str(), text],
    )
}

/// A chat command that must answer with exit code `code`; its stdout.
fn chat_ok(home: &Path, user: &str, text: &str, format: Format, code: i32) -> String {
    let (got, out, err) = chat(home, user, text, format);
    assert_eq!(got, code, "{text}\nstdout: {out}\nstderr: {err}");
    out
}

/// The Block Kit message of a chat command (`--format blocks`).
fn blocks(home: &Path, user: &str, text: &str, code: i32) -> Value {
    serde_json::from_str(&chat_ok(home, user, text, Blocks, code)).unwrap()
}

/// Saves a function through `/savefunc` (must succeed).
fn savefunc(home: &Path, user: &str, name: &str, description: &str, code: &str) {
    chat_ok(
        home,
        user,
        &format!("/savefunc {name} | {description} | {code}"),
        Text,
        0,
    );
}

/// A `tradebox` command (not chat) that must exit with `code`; its stdout.
fn tb_ok(home: &Path, args: &[&str], code: i32) -> String {
    let (got, out, err) = tb(home, &[], args);
    assert_eq!(got, code, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

fn json_of(home: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&tb_ok(home, args, 0)).unwrap()
}

/// The audit trail as `(action, outcome, user)`, newest first.
fn audit_rows(home: &Path, extra: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["audit", "--json"];
    args.extend_from_slice(extra);
    json_of(home, &args)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["user_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn rows(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, o, u)| (a.to_string(), o.to_string(), u.to_string()))
        .collect()
}

// ---- redaction of volatile values --------------------------------------

/// Replaces `<prefix><digits><suffix>` with `<prefix>[<label>]<suffix>`.
fn redact_number(s: &str, prefix: &str, suffix: &str, label: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        out.push_str(&rest[..at + prefix.len()]);
        if digits > 0 && after[digits..].starts_with(suffix) {
            out.push_str(&format!("[{label}]"));
            rest = &after[digits..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Replaces ISO 8601 times (`2025-11-29T10:00:00.123456Z`) with `[timestamp]`.
fn redact_timestamps(s: &str) -> String {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut copied = 0;
    while i + SHAPE.len() <= b.len() {
        let matches = SHAPE.iter().zip(&b[i..]).all(|(&want, &got)| match want {
            b'd' => got.is_ascii_digit(),
            other => got == other,
        });
        if !matches {
            i += 1;
            continue;
        }
        let mut end = i + SHAPE.len();
        if b.get(end) == Some(&b'.') {
            end += 1;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
        }
        if b.get(end) == Some(&b'Z') {
            end += 1;
        }
        out.push_str(&s[copied..i]);
        out.push_str("[timestamp]");
        copied = end;
        i = end;
    }
    out.push_str(&s[copied..]);
    out
}

/// Execution times, retry times and timestamps made stable.
/// The footer item that says what an answer is based on, for a fresh home:
/// the fixture's newest trade and the first snapshot version.
const DATA: &str = "data to 2025-10-16 21:48 UTC (snapshot v1)";

fn redact_str(s: &str) -> String {
    let s = redact_number(s, "Executed in ", "ms", "ms");
    let s = redact_number(&s, "Try again in ", "s", "n");
    redact_timestamps(&s)
}

fn redact(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_str(s)),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), redact(v))).collect()),
        other => other.clone(),
    }
}

/// The milliseconds of the first "Executed in Nms" in `s`.
fn executed_ms(s: &str) -> u64 {
    let at = s.find("Executed in ").expect("an execution time") + "Executed in ".len();
    let digits: String = s[at..].chars().take_while(char::is_ascii_digit).collect();
    assert!(s[at + digits.len()..].starts_with("ms"), "{s}");
    digits.parse().unwrap()
}

/// The mrkdwn texts of the section blocks of a Block Kit message.
fn section_texts(msg: &Value) -> Vec<String> {
    msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "section")
        .map(|b| b["text"]["text"].as_str().unwrap().to_string())
        .collect()
}

/// The texts of the context elements of a Block Kit message.
fn context_texts(msg: &Value) -> Vec<String> {
    msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "context")
        .map(|b| b["elements"][0]["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn redaction_helpers() {
    assert_eq!(
        redact_str("Executed in 12ms by <@U1> • Executed in xms"),
        "Executed in [ms]ms by <@U1> • Executed in xms"
    );
    assert_eq!(
        redact_str("Try again in 59s. at 2026-11-25T17:58:07.806883 and 2026-11-25T17:58:15Z."),
        "Try again in [n]s. at [timestamp] and [timestamp]."
    );
    assert_eq!(executed_ms("x Executed in 7ms by"), 7);
}

const VOL_CODE: &str = "df = load_trades(days=7); result = df.groupby('exchange')['amount'].sum()";

// ---------------------------------------------------------------------------
// /analyze

#[test]
fn analyze_success_has_header_result_and_who_ran_it() {
    let home = fresh_home();
    let (code, out, err) = chat(home.path(), "U1", "/analyze result = 1 + 1", Text);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        redact_str(&out),
        format!("== Analysis Result ==\n2\nExecuted in [ms]ms by <@U1> • {DATA}\n")
    );
    // The placeholder was shown before the result.
    assert!(
        err.contains(":hourglass_flowing_sand: Analyzing..."),
        "{err}"
    );
    assert!(executed_ms(&out) < 30_000);

    // The result as the reply model: a result block and its structured value.
    let v: Value = serde_json::from_str(&chat_ok(
        home.path(),
        "U1",
        "/analyze\n```\nprint('hello desk')\nresult = 6 * 7\n```",
        Json,
        0,
    ))
    .unwrap();
    assert_eq!(v["visibility"], "in_channel");
    assert_eq!(v["fallback"], "Analysis complete: 42");
    assert_eq!(v["error"], false);
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(
        blocks[0],
        json!({"type": "header", "text": "Analysis Result"})
    );
    assert_eq!(blocks[1]["type"], "result");
    assert_eq!(blocks[1]["text"], "42");
    assert_eq!(blocks[1]["value"]["value"], 42);
    assert_eq!(
        blocks[2],
        json!({"type": "code", "label": "Output", "text": "hello desk"})
    );
    assert_eq!(blocks[3]["type"], "context");
    assert_eq!(
        redact_str(blocks[3]["items"][0].as_str().unwrap()),
        "Executed in [ms]ms by <@U1>"
    );
    assert_eq!(blocks.len(), 4);
}

#[test]
fn analyze_with_output_and_smart_quotes_from_slack() {
    let home = fresh_home();
    // Slack's decorations: a fence, smart quotes, escaped `&`.
    let out = chat_ok(
        home.path(),
        "U1",
        "/analyze ```df = load_trades(days=7)\nprint(len(df), “trades”)\nresult = ‘a’ + ‘b’ if 1 &amp; 1 else None```",
        Text,
        0,
    );
    assert_eq!(
        redact_str(&out),
        format!(
            "== Analysis Result ==\nab\nOutput:\n{} trades\nExecuted in [ms]ms by <@U1> • {DATA}\n",
            week_count()
        )
    );
}

#[test]
fn analyze_error_shows_the_traceback_with_its_line() {
    let home = fresh_home();
    let (code, out, _) = chat(
        home.path(),
        "U1",
        "/analyze x = 1\ny = x / 0\nresult = y",
        Text,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(":x: *Error*\n"), "{out}");
    assert!(out.contains("Traceback (most recent call last):"), "{out}");
    assert!(out.contains("line 2"), "{out}");
    assert!(out.contains("y = x / 0"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("ZeroDivisionError: division by zero"),
        "{out}"
    );
    // The original's "Executed in" context is only on success.
    assert!(!out.contains("Executed in"), "{out}");
}

#[test]
fn analyze_without_code_shows_usage_with_the_example() {
    let home = TempDir::new().unwrap();
    for text in ["/analyze", "/analyze   ", "/analyze \n\t"] {
        let out = chat_ok(home.path(), "U1", text, Text, 0);
        assert_eq!(
            out,
            "*Usage:* `/analyze <python_code>`\n\n*Example:*\n```\n/analyze\n\
             df = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum()\n```\n",
            "{text:?}"
        );
    }
    // Usage is not an execution: nothing audited.
    assert!(audit_rows(home.path(), &[]).is_empty());
}

#[test]
fn analyze_refuses_code_over_20_kb() {
    let home = TempDir::new().unwrap();
    let big = format!("{}result = 1", "x = 1\n".repeat(3334));
    assert_eq!(big.len(), 20_014);
    let (code, out, _) = chat(home.path(), "U1", &format!("/analyze {big}"), Text);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        ":x: The code is 20014 bytes long; the limit is 20000 bytes. Shorten it.\n"
    );
}

// ---------------------------------------------------------------------------
// /savefunc

#[test]
fn savefunc_success_shows_name_description_creator_code_and_hint() {
    let home = TempDir::new().unwrap();
    let out = chat_ok(
        home.path(),
        "U1",
        &format!("/savefunc volume_by_exchange | Calculate volume by exchange | {VOL_CODE}"),
        Text,
        0,
    );
    assert_eq!(
        out,
        format!(
            ":white_check_mark: *Saved Function*\n*Name:* `volume_by_exchange`\n\
             *Description:* Calculate volume by exchange\n*Creator:* <@U1>\n\
             Code:\n{VOL_CODE}\nUse `/runfunc volume_by_exchange` to execute • Version 1\n"
        )
    );
    // The description may be empty; the code may be fenced.
    chat_ok(
        home.path(),
        "U1",
        "/savefunc plain |  | ```result = 1```",
        Text,
        0,
    );
    let list = json_of(home.path(), &["func", "list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plain", "volume_by_exchange"]);
    let plain = json_of(home.path(), &["func", "show", "plain", "--json"]);
    assert_eq!(plain["description"], "");
    assert_eq!(plain["code"], "result = 1");
    assert_eq!(plain["created_by"], "U1");
}

#[test]
fn savefunc_refuses_bad_input_with_the_right_form() {
    let home = TempDir::new().unwrap();
    let h = home.path();

    // Empty: the usage with its example.
    assert_eq!(
        chat_ok(h, "U1", "/savefunc", Text, 0),
        "*Usage:* `/savefunc name | description | code`\n\n*Example:*\n```\n\
         /savefunc volume_by_exchange | Calculate volume by exchange | \
         df = load_trades(); result = df.groupby('exchange')['amount'].sum()\n```\n"
    );

    // Fewer than two `|`.
    for text in ["/savefunc vol Volume", "/savefunc vol | result = 1"] {
        let out = chat_ok(h, "U1", text, Text, 1);
        assert!(
            out.starts_with(":x: Invalid format. Use: `/savefunc name | description | code`"),
            "{text}: {out}"
        );
        assert!(out.contains("*Example:*"), "{out}");
    }

    // Bad names.
    let out = chat_ok(h, "U1", "/savefunc my func | d | result = 1", Text, 1);
    assert_eq!(
        out,
        ":x: The function name `my func` contains a space. Names use only letters, digits \
         and underscores, 1 to 64 characters, e.g. `my_func`.\n"
    );
    let out = chat_ok(h, "U1", "/savefunc my-func | d | result = 1", Text, 1);
    assert_eq!(
        out,
        ":x: The function name `my-func` contains a dash (`-`). Names use only letters, \
         digits and underscores, 1 to 64 characters, e.g. `my_func`.\n"
    );
    let long = "a".repeat(65);
    let out = chat_ok(
        h,
        "U1",
        &format!("/savefunc {long} | d | result = 1"),
        Text,
        1,
    );
    assert!(out.starts_with(":x: The function name `aaaa"), "{out}");
    assert!(
        out.ends_with(
            "is 65 characters long; names use letters, digits and underscores, 1 to 64 characters.\n"
        ),
        "{out}"
    );
    let out = chat_ok(h, "U1", "/savefunc café | d | result = 1", Text, 1);
    assert!(out.contains("contains `é`"), "{out}");
    // 64 characters is fine.
    let ok = "b".repeat(64);
    chat_ok(
        h,
        "U1",
        &format!("/savefunc {ok} | d | result = 1"),
        Text,
        0,
    );

    // Code over 20 kB.
    let big = format!("{}result = 1", "x = 1\n".repeat(3334));
    let out = chat_ok(h, "U1", &format!("/savefunc big | d | {big}"), Text, 1);
    assert_eq!(
        out,
        ":x: The code is 20014 bytes long; the limit is 20000 bytes. Shorten it.\n"
    );

    // An empty code part.
    let out = chat_ok(h, "U1", "/savefunc nocode | d |   ", Text, 1);
    assert!(out.contains("The code part is empty"), "{out}");

    // Code failing validation: the line and column.
    let out = chat_ok(
        h,
        "U1",
        "/savefunc sneaky | d | x = 1\nimport os\nresult = os.getcwd()",
        Text,
        1,
    );
    assert!(
        out.starts_with(
            ":x: Code validation failed: line 2, column 1: import of 'os' is not allowed"
        ),
        "{out}"
    );
    let out = chat_ok(h, "U1", "/savefunc broken | d | result = (1 +", Text, 1);
    assert!(
        out.starts_with(":x: Code validation failed: line 1"),
        "{out}"
    );

    // Only the first two `|` split; Slack's escapes are undone in the code.
    chat_ok(
        h,
        "U1",
        "/savefunc pipe | Bits | result = 1 | 2 if 1 &lt; 2 else 0",
        Text,
        0,
    );
    assert_eq!(
        json_of(h, &["func", "show", "pipe", "--json"])["code"],
        "result = 1 | 2 if 1 < 2 else 0"
    );
    let out = chat_ok(h, "U1", "/delfunc pipe", Text, 0);
    assert!(out.contains("Deleted function `pipe`"), "{out}");

    // Only the valid one was saved.
    let list = json_of(h, &["func", "list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [ok.as_str()]);
}

#[test]
fn saving_over_another_users_function_needs_an_admin() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    savefunc(h, "U1", "vol", "Volume", "result = 1");
    let out = chat_ok(h, "U2", "/savefunc vol | Mine now | result = 2", Text, 1);
    assert_eq!(
        out,
        ":x: `vol` belongs to <@U1>; only they or an admin can change it\n"
    );
    let f = json_of(h, &["func", "show", "vol", "--json"]);
    assert_eq!(
        (f["code"].as_str(), f["version"].as_u64()),
        (Some("result = 1"), Some(1))
    );

    // An admin (from the environment) may.
    let (code, out, err) = chat_env(
        h,
        &[("TRADEBOX_PERMISSIONS_ADMINS", "U9")],
        "U9",
        "/savefunc vol | Fixed by an admin | result = 3",
        Text,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Version 2"), "{out}");
    let f = json_of(h, &["func", "show", "vol", "--json"]);
    assert_eq!(f["code"], "result = 3");
    assert_eq!(f["description"], "Fixed by an admin");
    assert_eq!(f["created_by"], "U1");
    assert_eq!(f["updated_by"], "U9");
    // The creator may still change their function.
    savefunc(h, "U1", "vol", "Volume again", "result = 4");
    let versions = json_of(h, &["func", "history", "vol", "--json"]);
    let by: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["saved_by"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["U1", "U9", "U1"]);
}

/// BUG: when an admin saves over another user's function, the
/// "Saved Function" reply names the admin as `*Creator:*`, while the store
/// (and `/listfuncs`, "Created by <@U1>") keeps the real creator.
#[test]
fn admin_save_reply_names_the_functions_real_creator() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    savefunc(h, "U1", "vol", "Volume", "result = 1");
    let (code, out, _) = chat_env(
        h,
        &[("TRADEBOX_PERMISSIONS_ADMINS", "U9")],
        "U9",
        "/savefunc vol | Fixed by an admin | result = 3",
        Text,
    );
    assert_eq!(code, 0, "{out}");
    let listed = chat_ok(h, "U1", "/listfuncs", Text, 0);
    assert!(listed.contains("Created by <@U1> • Used 0x"), "{listed}");
    assert!(
        out.contains("*Creator:* <@U1>"),
        "the reply contradicts the store and /listfuncs:\n{out}"
    );
}

#[test]
fn unicode_and_emoji_in_descriptions_round_trip() {
    let home = fresh_home();
    let h = home.path();
    let description = "Объём по биржам 📈 — café ✓ & <b>";
    let out = chat_ok(
        h,
        "U1",
        &format!("/savefunc uni | {description} | result = '✓ 📈 ' + params.get('who', 'Zoë')"),
        Text,
        0,
    );
    assert!(
        out.contains(&format!("*Description:* {description}\n")),
        "{out}"
    );
    assert_eq!(
        json_of(h, &["func", "show", "uni", "--json"])["description"],
        description
    );
    let listed = chat_ok(h, "U1", "/listfuncs", Text, 0);
    assert!(
        listed.contains(&format!("*`uni`*\n{description}  [Run: run_func_uni]")),
        "{listed}"
    );
    // Searching with non-ASCII text finds it.
    let found = chat_ok(h, "U1", "/listfuncs биржам 📈", Text, 0);
    assert!(
        found.starts_with("== Functions matching 'биржам 📈' =="),
        "{found}"
    );
    assert!(found.contains("*`uni`*"), "{found}");
    // Slack gets `& < >` escaped, everything else as is.
    let msg = blocks(h, "U1", "/listfuncs café", 0);
    assert_eq!(
        section_texts(&msg)[0],
        "*`uni`*\nОбъём по биржам 📈 — café ✓ &amp; &lt;b&gt;"
    );
    // Through the sandbox and back, with a unicode argument.
    let out = chat_ok(h, "U2", "/runfunc uni who=\"Jürgen 🙂\"", Text, 0);
    assert!(
        out.starts_with(&format!(
            "== uni ==\n{description}\nResult:\n✓ 📈 Jürgen 🙂\n"
        )),
        "{out}"
    );
}

// ---------------------------------------------------------------------------
// /runfunc

#[test]
fn runfunc_shows_the_function_and_counts_its_uses() {
    let home = fresh_home();
    let h = home.path();
    savefunc(h, "U1", "vol", "Volume by exchange", VOL_CODE);
    let (code, out, err) = chat(h, "U2", "/runfunc vol", Text);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains(":hourglass_flowing_sand: Executing `vol`..."),
        "{err}"
    );
    let want_result = week_volume_by_exchange();
    assert_eq!(
        redact_str(&out),
        format!(
            "== vol ==\nVolume by exchange\nResult:\n{want_result}\n\
             Executed in [ms]ms by <@U2> • {DATA} • Created by <@U1> • Used 1x\n"
        )
    );
    let out = chat_ok(h, "U3", "/runfunc vol", Text, 0);
    assert!(
        redact_str(&out).ends_with(&format!(
            "Executed in [ms]ms by <@U3> • {DATA} • Created by <@U1> • Used 2x\n"
        )),
        "{out}"
    );
    let f = json_of(h, &["func", "show", "vol", "--json"]);
    assert_eq!(f["use_count"], 2);
    assert!(f["last_used"].is_string());
    // /listfuncs counts them too.
    let listed = chat_ok(h, "U1", "/listfuncs", Text, 0);
    assert!(listed.contains("Created by <@U1> • Used 2x"), "{listed}");
    assert!(
        listed.contains("Total: 1 functions • 2 total executions"),
        "{listed}"
    );
}

#[test]
fn runfunc_arguments_reach_the_code_as_params() {
    let home = fresh_home();
    let h = home.path();
    savefunc(h, "U1", "echo", "Echo the arguments", "result = params");
    let v: Value = serde_json::from_str(&chat_ok(
        h,
        "U1",
        "/runfunc echo days=14 exchange=mexc note=\"two words\" ratio=1.5 dry=true",
        Json,
        0,
    ))
    .unwrap();
    let result = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "result")
        .unwrap()
        .clone();
    assert_eq!(result["label"], "Result");
    assert_eq!(
        result["value"]["value"],
        json!({"days": 14, "exchange": "mexc", "note": "two words", "ratio": 1.5, "dry": true})
    );
    assert_eq!(
        result["text"],
        "{'days': 14, 'dry': True, 'exchange': 'mexc', 'note': 'two words', 'ratio': 1.5}"
    );
}

#[test]
fn runfunc_bad_arguments_show_the_right_form() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    savefunc(h, "U1", "echo", "Echo", "result = params");
    let cases = [
        (
            "/runfunc echo days",
            ":x: \"days\" is not key=value; write arguments like days=7 exchange=mexc name=\"two words\"\n",
        ),
        (
            "/runfunc echo days=",
            ":x: \"days=\" has no value; give one, as in days=7, or write days=\"\" for an empty string\n",
        ),
        (
            "/runfunc echo =3",
            ":x: \"=3\" has no name before the =; write arguments like days=7 exchange=mexc name=\"two words\"\n",
        ),
        (
            "/runfunc days=3",
            ":x: Give the function name first, then its arguments: `/runfunc <name> key=value ...`, \
             e.g. `/runfunc volume_by_exchange days=7 exchange=mexc`.\n",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(chat_ok(h, "U1", text, Text, 1), want, "{text}");
    }
    // Refused before running: the function was never used.
    assert_eq!(
        json_of(h, &["func", "show", "echo", "--json"])["use_count"],
        0
    );
}

#[test]
fn runfunc_unknown_name_suggests_close_names() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    savefunc(h, "U1", "volume_by_exchange", "Volume", "result = 1");
    savefunc(h, "U1", "fees_by_day", "Fees", "result = 2");
    let out = chat_ok(h, "U1", "/runfunc volume_by_exchnage", Text, 1);
    assert_eq!(
        out,
        ":x: Function `volume_by_exchnage` not found. Did you mean `volume_by_exchange`? \
         Use `/runfunc` to see available functions.\n"
    );
    let out = chat_ok(h, "U1", "/runfunc nothing_like_it", Text, 1);
    assert_eq!(
        out,
        ":x: Function `nothing_like_it` not found. Use `/runfunc` to see available functions.\n"
    );
}

// ---------------------------------------------------------------------------
// bare /runfunc and /listfuncs

#[test]
fn empty_store_says_so() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    assert_eq!(
        chat_ok(h, "U1", "/runfunc", Text, 0),
        "No saved functions. Use `/savefunc` to create one.\n"
    );
    assert_eq!(
        chat_ok(h, "U1", "/listfuncs", Text, 0),
        "No saved functions.\n"
    );
    assert_eq!(
        chat_ok(h, "U1", "/listfuncs vol", Text, 0),
        "No functions found.\n"
    );
}

/// An export file with `n` functions `fNN`, function `i` used `i` times.
fn export_with_uses(n: usize) -> Value {
    let functions: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "name": format!("f{i:02}"),
                "description": format!("Function number {i}"),
                "code": format!("result = {i}"),
                "created_by": "U1",
                "use_count": i,
            })
        })
        .collect();
    json!({"format": "tradebox-functions", "format_version": 1, "functions": functions})
}

#[test]
fn bare_runfunc_lists_the_ten_most_used() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    let file = h.join("f25.json");
    std::fs::write(&file, export_with_uses(25).to_string()).unwrap();
    assert_eq!(
        tb_ok(h, &["func", "import", file.to_str().unwrap()], 0),
        "imported: 25 created, 0 updated, 0 unchanged\n"
    );
    let mut want = String::from("*Available Functions*\n");
    for i in (15..25).rev() {
        want.push_str(&format!("• `f{i:02}` - Function number {i} (used {i}x)\n"));
    }
    want.push_str("Use `/runfunc <name>` to execute\n");
    assert_eq!(chat_ok(h, "U1", "/runfunc", Text, 0), want);

    // /listfuncs orders the same way: most used first.
    let msg = blocks(h, "U1", "/listfuncs", 0);
    let first: Vec<String> = section_texts(&msg).into_iter().take(3).collect();
    assert_eq!(
        first,
        [
            "*`f24`*\nFunction number 24",
            "*`f23`*\nFunction number 23",
            "*`f22`*\nFunction number 22"
        ]
    );
    assert_eq!(
        context_texts(&msg).last().unwrap(),
        "Total: 25 functions • 300 total executions • Page 1 of 2"
    );
    insta::assert_json_snapshot!(
        "runfunc_bare_top_ten",
        redact(&blocks(h, "U1", "/runfunc", 0))
    );
}

#[test]
fn listfuncs_has_run_buttons_totals_and_pages_of_twenty() {
    let home = fresh_home();
    let h = home.path();
    for i in 0..25 {
        savefunc(
            h,
            &format!("U{}", i % 3 + 1),
            &format!("fn_{i:02}"),
            &format!("Function {i}"),
            &format!("result = {i}"),
        );
    }

    let page1 = blocks(h, "U1", "/listfuncs", 0);
    let list = page1["blocks"].as_array().unwrap();
    assert_eq!(page1["ephemeral"], false);
    assert_eq!(page1["text"], "All Saved Functions");
    assert_eq!(
        list[0],
        json!({"type": "header", "text": {"type": "plain_text", "text": "All Saved Functions"}})
    );
    let sections: Vec<&Value> = list.iter().filter(|b| b["type"] == "section").collect();
    assert_eq!(sections.len(), 20);
    for (i, s) in sections.iter().enumerate() {
        let name = format!("fn_{i:02}");
        assert_eq!(s["text"]["text"], format!("*`{name}`*\nFunction {i}"));
        assert_eq!(
            s["accessory"],
            json!({
                "type": "button",
                "text": {"type": "plain_text", "text": "Run"},
                "action_id": format!("run_func_{name}"),
                "value": name,
            })
        );
    }
    let contexts = context_texts(&page1);
    assert_eq!(contexts.len(), 21);
    assert_eq!(contexts[0], "Created by <@U1> • Used 0x");
    assert_eq!(contexts[1], "Created by <@U2> • Used 0x");
    assert_eq!(
        contexts[20],
        "Total: 25 functions • 0 total executions • Page 1 of 2"
    );
    assert_eq!(list[list.len() - 2], json!({"type": "divider"}));

    let page2 = blocks(h, "U1", "/listfuncs page=2", 0);
    let names: Vec<String> = section_texts(&page2);
    assert_eq!(
        names,
        (20..25)
            .map(|i| format!("*`fn_{i:02}`*\nFunction {i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        context_texts(&page2).last().unwrap(),
        "Total: 25 functions • 0 total executions • Page 2 of 2"
    );
    assert_eq!(
        chat_ok(h, "U1", "/listfuncs page=3", Text, 0),
        "There is no page 3.\n"
    );
    let out = chat_ok(h, "U1", "/listfuncs page=0", Text, 1);
    assert!(out.starts_with(":x: `page=0` is not a page"), "{out}");

    // A run moves a function to the top, with its count.
    chat_ok(h, "U2", "/runfunc fn_24", Text, 0);
    let top = chat_ok(h, "U1", "/runfunc", Text, 0);
    assert!(
        top.starts_with("*Available Functions*\n• `fn_24` - Function 24 (used 1x)\n• `fn_00` - Function 0 (used 0x)\n"),
        "{top}"
    );
    assert_eq!(top.matches("\n• ").count(), 10, "{top}");
    let page1 = chat_ok(h, "U1", "/listfuncs", Text, 0);
    assert!(
        page1.starts_with("== All Saved Functions ==\n*`fn_24`*\nFunction 24  [Run: run_func_fn_24]\nCreated by <@U1> • Used 1x\n"),
        "{page1}"
    );
    assert!(
        page1.ends_with("----\nTotal: 25 functions • 1 total executions • Page 1 of 2\n"),
        "{page1}"
    );
}

#[test]
fn listfuncs_search_is_case_insensitive_plain_text() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    savefunc(
        h,
        "U1",
        "volume_by_exchange",
        "Calculate volume by exchange",
        "result = 1",
    );
    savefunc(
        h,
        "U1",
        "fees",
        "Total FEES paid per Exchange",
        "result = 2",
    );
    savefunc(h, "U2", "a_b", "underscore", "result = 3");
    savefunc(h, "U2", "axb", "no underscore", "result = 4");
    savefunc(h, "U2", "pct", "100% sure", "result = 5");

    let names = |query: &str| -> Vec<String> {
        let out = chat_ok(h, "U1", &format!("/listfuncs {query}"), Json, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b.get("button"))
            .map(|b| b["value"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("VOLUME"), ["volume_by_exchange"]);
    assert_eq!(names("Exchange"), ["fees", "volume_by_exchange"]);
    assert_eq!(names("fees"), ["fees"]);
    assert_eq!(names("PAID"), ["fees"]);
    // LIKE wildcards are plain characters.
    assert_eq!(names("a_b"), ["a_b"]);
    assert_eq!(names("%"), ["pct"]);

    let out = chat_ok(h, "U1", "/listfuncs VOLUME", Text, 0);
    assert_eq!(
        out,
        "== Functions matching 'VOLUME' ==\n*`volume_by_exchange`*\nCalculate volume by exchange  \
         [Run: run_func_volume_by_exchange]\nCreated by <@U1> • Used 0x\n----\n\
         Total: 5 functions • 0 total executions\n"
    );

    // SQL-looking text is just text.
    let out = chat_ok(
        h,
        "U1",
        "/listfuncs '; DROP TABLE saved_functions;--",
        Text,
        0,
    );
    assert_eq!(out, "No functions found.\n");
    let out = chat_ok(h, "U1", "/listfuncs \" OR 1=1 --", Text, 0);
    assert_eq!(out, "No functions found.\n");
    let all = chat_ok(h, "U1", "/listfuncs", Text, 0);
    assert!(
        all.ends_with("Total: 5 functions • 0 total executions\n"),
        "{all}"
    );
    assert_eq!(
        json_of(h, &["func", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

// ---------------------------------------------------------------------------
// /delfunc

#[test]
fn delfunc_only_by_the_creator_or_an_admin_and_kept_in_history() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    assert_eq!(
        chat_ok(h, "U1", "/delfunc", Text, 0),
        "Usage: `/delfunc <function_name>`\n\n*Example:*\n```\n/delfunc volume_by_exchange\n```\n"
    );
    assert_eq!(
        chat_ok(h, "U1", "/delfunc nope", Text, 1),
        ":x: Function `nope` not found\n"
    );
    savefunc(h, "U1", "vol", "Volume", "result = 1");
    assert_eq!(
        chat_ok(h, "U2", "/delfunc vol", Text, 1),
        ":x: Only the creator (<@U1>) can delete this function\n"
    );
    assert!(chat_ok(h, "U1", "/listfuncs", Text, 0).contains("*`vol`*"));
    assert_eq!(
        chat_ok(h, "U1", "/delfunc vol", Text, 0),
        ":white_check_mark: Deleted function `vol`\n"
    );
    assert_eq!(
        chat_ok(h, "U1", "/listfuncs", Text, 0),
        "No saved functions.\n"
    );
    assert_eq!(
        chat_ok(h, "U1", "/delfunc vol", Text, 1),
        ":x: Function `vol` not found\n"
    );
    // Still in its history.
    let history = json_of(h, &["func", "history", "vol", "--json"]);
    let actions: Vec<(&str, u64, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["action"].as_str().unwrap(),
                v["version"].as_u64().unwrap(),
                v["saved_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions, [("save", 1, "U1"), ("delete", 2, "U1")]);
    assert_eq!(history[0]["code"], "result = 1");
    let (code, _, err) = tb(h, &[], &["func", "show", "vol"]);
    assert_eq!(code, 2);
    assert!(err.contains("function `vol` not found"), "{err}");

    // An admin may delete someone else's function.
    savefunc(h, "U2", "other", "Theirs", "result = 2");
    let (code, out, _) = chat_env(
        h,
        &[("TRADEBOX_PERMISSIONS_ADMINS", "U9")],
        "U9",
        "/delfunc other",
        Text,
    );
    assert_eq!(
        (code, out.as_str()),
        (0, ":white_check_mark: Deleted function `other`\n")
    );
}

// ---------------------------------------------------------------------------
// Permissions, rate limits and configuration

#[test]
fn permissions_from_config_refuse_with_a_reason() {
    let home = fresh_home();
    let h = home.path();
    savefunc(h, "U1", "one", "One", "result = 1");
    let env = [("TRADEBOX_PERMISSIONS_EXECUTE_USERS", "U1")];
    let (code, out, _) = chat_env(h, &env, "U2", "/analyze result = 1", Text);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(
            ":x: you are not on the list of users allowed to run code here; ask an admin"
        ),
        "{out}"
    );
    let (code, out, _) = chat_env(h, &env, "U2", "/savefunc two | Two | result = 2", Text);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("which saving a function needs"), "{out}");
    // U1 is on the list.
    let (code, out, _) = chat_env(h, &env, "U1", "/runfunc one", Text);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Used 1x"), "{out}");
    // Listing needs no right to run code.
    let (code, out, _) = chat_env(h, &env, "U2", "/listfuncs", Text);
    assert_eq!(code, 0, "{out}");

    let trail = audit_rows(h, &[]);
    assert_eq!(
        trail[..3],
        rows(&[
            ("runfunc", "ok", "U1"),
            ("savefunc", "refused_permission", "U2"),
            ("analyze", "refused_permission", "U2"),
        ])[..]
    );
}

#[test]
fn rate_limit_from_config_counts_per_user() {
    let home = fresh_home();
    let h = home.path();
    let env = [("TRADEBOX_RATE_LIMIT_EXECUTIONS", "3")];
    for i in 1..=3 {
        let (code, out, _) = chat_env(h, &env, "U1", &format!("/analyze result = {i}"), Text);
        assert_eq!(code, 0, "{i}: {out}");
    }
    let (code, out, _) = chat_env(h, &env, "U1", "/analyze result = 4", Text);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        redact_str(&out),
        ":x: Rate limit exceeded. Max 3 executions per 60s. Try again in [n]s.\n"
    );
    let wait: u64 = out
        .split("Try again in ")
        .nth(1)
        .unwrap()
        .trim_end_matches("s.\n")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{out}");
    // Another user is not affected.
    let (code, out, _) = chat_env(h, &env, "U2", "/analyze result = 5", Text);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn unknown_config_key_is_an_error_naming_key_and_line() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    std::fs::write(
        h.join("tradebox.toml"),
        "[rate_limit]\nexecutions = 5\n\n[limits]\ntimout_seconds = 10\n",
    )
    .unwrap();
    for args in [
        &["chat", "--user", "U1", "/listfuncs"][..],
        &["chat", "--user", "U1", "/analyze result = 1"][..],
        &["func", "list"][..],
        &["audit"][..],
    ] {
        let (code, out, err) = tb(h, &[], args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(
                "tradebox.toml, line 5, column 1: unknown key 'timout_seconds' in [limits]"
            ),
            "{err}"
        );
        assert!(err.contains("did you mean 'timeout_seconds'?"), "{err}");
        assert!(out.is_empty(), "{out}");
    }
    // A bad environment value names the variable.
    std::fs::remove_file(h.join("tradebox.toml")).unwrap();
    let (code, _, err) = tb(
        h,
        &[("TRADEBOX_RATE_LIMIT_EXECUTIONS", "ten")],
        &["chat", "/listfuncs"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TRADEBOX_RATE_LIMIT_EXECUTIONS"), "{err}");
}

// ---------------------------------------------------------------------------
// Audit

#[test]
fn audit_records_a_scripted_session_exactly() {
    let home = fresh_home();
    let h = home.path();
    let limit = [("TRADEBOX_RATE_LIMIT_EXECUTIONS", "3")];
    let only_u1 = [
        ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "3"),
        ("TRADEBOX_PERMISSIONS_EXECUTE_USERS", "U1"),
    ];
    let step = |env: &[(&str, &str)], user: &str, text: &str, want: i32| {
        let (code, out, err) = chat_env(h, env, user, text, Text);
        assert_eq!(code, want, "{user} {text}: {out}{err}");
    };
    step(&limit, "U1", "/analyze result = 1", 0);
    step(&limit, "U1", "/savefunc f | d | result = 2", 0);
    step(&limit, "U1", "/runfunc f", 0);
    step(&limit, "U1", "/analyze x = 1\nresult = x / 0", 1);
    step(&limit, "U1", "/analyze result = 1", 1); // the 4th execution
    step(&only_u1, "U2", "/analyze result = 1", 1);
    step(&limit, "U2", "/delfunc f", 1);
    step(&limit, "U1", "/analyze import os", 1);
    step(&limit, "U2", "/runfunc g_missing", 1);
    step(&limit, "U1", "/analyze", 0); // usage: not audited
    step(&limit, "U1", "/listfuncs", 0); // reading: not audited
    step(&limit, "U1", "/delfunc f", 0);

    let all = json_of(h, &["audit", "--json"]);
    let all = all.as_array().unwrap();
    let got: Vec<(String, String, String)> = all
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["user_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        rows(&[
            ("delfunc", "ok", "U1"),
            ("runfunc", "not_found", "U2"),
            ("analyze", "refused_validation", "U1"),
            ("delfunc", "refused_permission", "U2"),
            ("analyze", "refused_permission", "U2"),
            ("analyze", "refused_rate_limit", "U1"),
            ("analyze", "error", "U1"),
            ("runfunc", "ok", "U1"),
            ("savefunc", "ok", "U1"),
            ("analyze", "ok", "U1"),
        ])
    );
    // Every row: from the CLI, no channel, ids strictly decreasing, times not increasing.
    for pair in all.windows(2) {
        assert!(pair[0]["id"].as_i64() > pair[1]["id"].as_i64());
        assert!(pair[0]["at"].as_str() >= pair[1]["at"].as_str());
    }
    for r in all {
        assert_eq!(r["source"], "cli", "{r}");
        assert!(r["channel"].is_null(), "{r}");
    }
    // Details of some rows.
    let (delete, missing, validation, del_refused, perm, rate, error, run, save, ok) = (
        &all[0], &all[1], &all[2], &all[3], &all[4], &all[5], &all[6], &all[7], &all[8], &all[9],
    );
    assert_eq!(ok["code"], "result = 1");
    assert!(ok["duration_ms"].is_u64(), "{ok}");
    assert!(ok["error_type"].is_null() && ok["detail"].is_null(), "{ok}");
    assert_eq!(
        (
            &save["function_name"],
            &save["function_version"],
            &save["code"]
        ),
        (&json!("f"), &json!(1), &json!("result = 2"))
    );
    assert_eq!(
        (
            &run["function_name"],
            &run["function_version"],
            &run["code"]
        ),
        (&json!("f"), &json!(1), &json!("result = 2"))
    );
    assert!(run["duration_ms"].is_u64(), "{run}");
    assert_eq!(error["error_type"], "ZeroDivisionError");
    assert_eq!(error["code"], "x = 1\nresult = x / 0");
    assert!(rate["detail"]
        .as_str()
        .unwrap()
        .starts_with("Rate limit exceeded. Max 3 executions per 60s. Try again in"));
    assert!(rate["duration_ms"].is_null(), "{rate}");
    assert!(perm["detail"]
        .as_str()
        .unwrap()
        .contains("not on the list of users allowed to run code"));
    assert_eq!(
        del_refused["detail"],
        "Only the creator (<@U1>) can delete this function"
    );
    assert_eq!(validation["error_type"], "ValidationError");
    assert_eq!(validation["code"], "import os");
    assert!(validation["detail"]
        .as_str()
        .unwrap()
        .contains("line 1, column 1: import of 'os' is not allowed"));
    assert_eq!(missing["function_name"], "g_missing");
    // A delete names the version it deleted (f had only version 1).
    assert_eq!(
        (&delete["function_name"], &delete["function_version"]),
        (&json!("f"), &json!(1))
    );

    // Filters.
    assert_eq!(
        audit_rows(h, &["--user", "U2"]),
        rows(&[
            ("runfunc", "not_found", "U2"),
            ("delfunc", "refused_permission", "U2"),
            ("analyze", "refused_permission", "U2"),
        ])
    );
    assert_eq!(
        audit_rows(h, &["--outcome", "refused_permission"]),
        rows(&[
            ("delfunc", "refused_permission", "U2"),
            ("analyze", "refused_permission", "U2"),
        ])
    );
    assert_eq!(
        audit_rows(h, &["--outcome", "ok", "--user", "U1"]),
        rows(&[
            ("delfunc", "ok", "U1"),
            ("runfunc", "ok", "U1"),
            ("savefunc", "ok", "U1"),
            ("analyze", "ok", "U1"),
        ])
    );
    assert_eq!(audit_rows(h, &["--action", "analyze"]).len(), 5);
    assert_eq!(audit_rows(h, &["--limit", "2"]), got[..2].to_vec());
    // --since: at or after the rate-limit refusal.
    let since = rate["at"].as_str().unwrap();
    assert_eq!(audit_rows(h, &["--since", since]), got[..6].to_vec());
    assert!(audit_rows(h, &["--since", "2999-01-01"]).is_empty());
    assert_eq!(audit_rows(h, &["--since", "2000-01-01"]), got);
    let (code, _, err) = tb(h, &[], &["audit", "--since", "last tuesday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--since"), "{err}");
    // The table form.
    let table = tb_ok(h, &["audit", "--user", "U2", "--outcome", "not_found"], 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("at "), "{table}");
    assert!(
        lines[1].contains("U2") && lines[1].contains("not_found"),
        "{table}"
    );
}

// ---------------------------------------------------------------------------
// Block Kit snapshots

#[test]
fn block_kit_messages_snapshots() {
    let home = fresh_home();
    let h = home.path();
    let snap = |text: &str, code: i32| redact(&blocks(h, "U1", text, code));

    let analyze = snap(
        "/analyze df = load_trades(days=7)\nprint(len(df), 'trades')\nresult = df.groupby('exchange')['amount'].agg(['sum', 'count'])",
        0,
    );
    assert_eq!(
        context_texts(&analyze),
        [format!("Executed in [ms]ms by <@U1> • {DATA}")]
    );
    assert_eq!(
        section_texts(&analyze)[1],
        format!("*Output:*\n```\n{} trades\n```", week_count())
    );
    insta::assert_json_snapshot!("analyze_success", analyze);

    let error = snap("/analyze x = 1\ny = x / 0", 1);
    assert_eq!(section_texts(&error)[0], ":x: *Error*");
    insta::assert_json_snapshot!("analyze_error", error);

    insta::assert_json_snapshot!("analyze_usage", snap("/analyze", 0));
    insta::assert_json_snapshot!("savefunc_usage", snap("/savefunc", 0));
    insta::assert_json_snapshot!("savefunc_invalid_format", snap("/savefunc vol Volume", 1));
    insta::assert_json_snapshot!(
        "savefunc_validation_failed",
        snap("/savefunc bad | d | import subprocess", 1)
    );

    let saved = snap(
        &format!("/savefunc vol | Volume by exchange, last 7 days | {VOL_CODE}"),
        0,
    );
    insta::assert_json_snapshot!("savefunc_success", saved);
    savefunc(h, "U2", "fees", "Fees & rebates <net>", "result = 0.5");

    let run = redact(&blocks(h, "U2", "/runfunc vol", 0));
    assert_eq!(
        context_texts(&run),
        [format!(
            "Executed in [ms]ms by <@U2> • {DATA} • Created by <@U1> • Used 1x"
        )]
    );
    insta::assert_json_snapshot!("runfunc_success", run);
    insta::assert_json_snapshot!("runfunc_not_found", snap("/runfunc vols", 1));

    let list = snap("/listfuncs", 0);
    let accessories: Vec<&Value> = list["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b.get("accessory"))
        .collect();
    assert_eq!(accessories[0]["action_id"], "run_func_vol");
    assert_eq!(accessories[0]["value"], "vol");
    assert_eq!(accessories[1]["action_id"], "run_func_fees");
    insta::assert_json_snapshot!("listfuncs", list);
    insta::assert_json_snapshot!("listfuncs_query", snap("/listfuncs FEES", 0));

    insta::assert_json_snapshot!(
        "delfunc_not_creator",
        redact(&blocks(h, "U2", "/delfunc vol", 1))
    );
    insta::assert_json_snapshot!("delfunc_success", snap("/delfunc vol", 0));
    insta::assert_json_snapshot!("delfunc_usage", snap("/delfunc", 0));
}

/// BUG: the help text says "Code may be wrapped in ``` fences" in mrkdwn
/// prose. That lone ``` opens a code block in Slack, and the Block Kit
/// renderer "balances" it by appending a closing fence, so everything after
/// it ("fences. The helpers `load_trades(...)` ...") shows as a code block
/// ending with a stray fence.
#[test]
fn help_in_slack_does_not_turn_prose_into_a_code_block() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    let model: Value = serde_json::from_str(&chat_ok(h, "U1", "/tradebox help", Json, 0)).unwrap();
    let model_text = model["blocks"][0]["text"].as_str().unwrap();
    assert!(model_text.contains("load_trades(days=30"), "{model_text}");
    let msg = blocks(h, "U1", "/tradebox help", 0);
    let texts = section_texts(&msg);
    assert_eq!(texts.len(), 1, "{msg}");
    assert!(
        !texts[0].ends_with("\n```"),
        "a closing fence was added to the help:\n{}",
        texts[0]
    );
    assert_eq!(
        model_text.matches("```").count() % 2,
        0,
        "the help prose opens a code block:\n{model_text}"
    );
}

#[test]
fn analyze_timeout_is_reported_and_audited() {
    let home = TempDir::new().unwrap();
    let h = home.path();
    let (code, out, _) = chat_env(
        h,
        &[("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "1")],
        "U1",
        "/analyze while True:\n    pass",
        Text,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(":x: *Error*\n"), "{out}");
    assert!(out.contains("ran longer than its limit of 1 s"), "{out}");
    assert_eq!(audit_rows(h, &[]), rows(&[("analyze", "timeout", "U1")]));
}

// ---------------------------------------------------------------------------
// tradebox func

#[test]
fn func_subcommands_save_run_list_show_history_rename_export_import() {
    let home = fresh_home();
    let h = home.path();
    let u1 = ["--user", "U1"];

    // Save from -c and from a file.
    let out = tb_ok(
        h,
        &[
            "func",
            "save",
            "echo",
            "-d",
            "Echo the arguments",
            "-c",
            "result = params",
            u1[0],
            u1[1],
        ],
        0,
    );
    assert!(
        out.starts_with(":white_check_mark: *Saved Function*\n*Name:* `echo`"),
        "{out}"
    );
    let file = h.join("count7.py");
    std::fs::write(&file, "df = load_trades(days=7)\nresult = len(df)\n").unwrap();
    let out = tb_ok(
        h,
        &[
            "func",
            "save",
            "count7",
            "-d",
            "Trades in the last 7 days",
            file.to_str().unwrap(),
            u1[0],
            u1[1],
        ],
        0,
    );
    assert!(out.contains("*Name:* `count7`"), "{out}");
    // Bad input to save is a usage error (exit 2).
    let (code, _, err) = tb(h, &[], &["func", "save", "bad-name", "-c", "result = 1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("contains a dash"), "{err}");
    let (code, _, err) = tb(h, &[], &["func", "save", "nocode"]);
    assert_eq!(code, 2, "{err}");
    // Validation still applies (exit 1, refused by the pipeline).
    let (code, out, _) = tb(h, &[], &["func", "save", "bad", "-c", "import os"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Code validation failed"), "{out}");

    // Run with arguments.
    let run: Value = serde_json::from_str(&tb_ok(
        h,
        &[
            "func",
            "run",
            "echo",
            "days=14",
            "exchange=mexc",
            "--format",
            "json",
            "--user",
            "U2",
        ],
        0,
    ))
    .unwrap();
    let result = run["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "result")
        .unwrap();
    assert_eq!(
        result["value"]["value"],
        json!({"days": 14, "exchange": "mexc"})
    );
    assert!(
        redact_str(
            run["blocks"].as_array().unwrap().last().unwrap()["items"]
                .to_string()
                .as_str()
        )
        .contains("Executed in [ms]ms by <@U2>"),
        "{run}"
    );
    let (code, _, err) = tb(h, &[], &["func", "run", "echo", "days"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not key=value"), "{err}");

    // List as JSON: most used first.
    let list = json_of(h, &["func", "list", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (
            &list[0]["name"],
            &list[0]["use_count"],
            &list[0]["created_by"]
        ),
        (&json!("echo"), &json!(1), &json!("U1"))
    );
    assert_eq!(list[1]["name"], "count7");
    assert_eq!(
        list[1]["code"],
        "df = load_trades(days=7)\nresult = len(df)\n"
    );
    let found = json_of(h, &["func", "list", "TRADES", "--json"]);
    assert_eq!(found.as_array().unwrap().len(), 1);

    // Show.
    let shown = tb_ok(h, &["func", "show", "count7"], 0);
    assert!(shown.starts_with("name         count7\ndescription  Trades in the last 7 days\nversion      1 (saved by U1 at "), "{shown}");
    assert!(shown.contains("\ncreated      by U1 at "), "{shown}");
    assert!(
        shown.contains("\nused         0x (last never)\n"),
        "{shown}"
    );
    assert!(
        shown.ends_with("\n\ndf = load_trades(days=7)\nresult = len(df)\n\n"),
        "{shown}"
    );
    let (code, _, err) = tb(h, &[], &["func", "show", "ech"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("function `ech` not found; did you mean echo?"),
        "{err}"
    );

    // Second save, rename, delete: every step a version.
    tb_ok(
        h,
        &[
            "func",
            "save",
            "echo",
            "-d",
            "Echo, sorted",
            "-c",
            "result = dict(sorted(params.items()))",
            u1[0],
            u1[1],
        ],
        0,
    );
    let (code, _, err) = tb(h, &[], &["func", "rename", "echo", "echo2", "--user", "U2"]);
    assert_eq!(code, 1, "only the creator renames: {err}");
    assert_eq!(
        tb_ok(h, &["func", "rename", "echo", "echo2", u1[0], u1[1]], 0),
        "renamed `echo` to `echo2` (version 3)\n"
    );
    let (code, _, err) = tb(
        h,
        &[],
        &["func", "rename", "count7", "bad name", u1[0], u1[1]],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        tb_ok(h, &["func", "delete", "echo2", u1[0], u1[1]], 0),
        ":white_check_mark: Deleted function `echo2`\n"
    );
    let history = json_of(h, &["func", "history", "echo2", "--json"]);
    let versions: Vec<(u64, &str, &str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["action"].as_str().unwrap(),
                v["name"].as_str().unwrap(),
                v["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            (1, "save", "echo", "result = params"),
            (2, "save", "echo", "result = dict(sorted(params.items()))"),
            (
                3,
                "rename",
                "echo2",
                "result = dict(sorted(params.items()))"
            ),
            (
                4,
                "delete",
                "echo2",
                "result = dict(sorted(params.items()))"
            ),
        ]
    );
    // The old name finds the same history; the text form has one line per version.
    assert_eq!(json_of(h, &["func", "history", "echo", "--json"]), history);
    let text = tb_ok(h, &["func", "history", "echo2"], 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("v1    save     "), "{text}");
    assert!(
        lines[3].starts_with("v4    delete   ") && lines[3].ends_with("by U1           echo2"),
        "{text}"
    );

    // Export, then import into a fresh home.
    tb_ok(
        h,
        &[
            "func",
            "save",
            "theirs",
            "-d",
            "Ünïcødé 📈",
            "-c",
            "result = 3",
            "--user",
            "U2",
        ],
        0,
    );
    let export = h.join("functions.json");
    let (code, _, err) = tb(h, &[], &["func", "export", "-o", export.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported to"), "{err}");
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(exported["format"], "tradebox-functions");
    let names: Vec<&str> = exported["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["count7", "theirs"],
        "deleted functions are not exported"
    );

    let other = TempDir::new().unwrap();
    let o = other.path();
    assert_eq!(
        tb_ok(o, &["func", "import", export.to_str().unwrap()], 0),
        "imported: 2 created, 0 updated, 0 unchanged\n"
    );
    let before = json_of(h, &["func", "list", "--json"]);
    let after = json_of(o, &["func", "list", "--json"]);
    let key = |v: &Value| -> Vec<(Value, Value, Value, Value, Value)> {
        let mut k: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].clone(),
                    f["description"].clone(),
                    f["code"].clone(),
                    f["created_by"].clone(),
                    f["use_count"].clone(),
                )
            })
            .collect();
        k.sort_by_key(|t| t.0.to_string());
        k
    };
    assert_eq!(key(&after), key(&before));
    // Importing again changes nothing.
    assert_eq!(
        tb_ok(o, &["func", "import", export.to_str().unwrap()], 0),
        "imported: 0 created, 0 updated, 2 unchanged\n"
    );
    assert_eq!(key(&json_of(o, &["func", "list", "--json"])), key(&before));
    let history = json_of(o, &["func", "history", "count7", "--json"]);
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["action"], "import");
    // The imports are audited.
    assert_eq!(
        audit_rows(o, &[]),
        rows(&[("import", "ok", "console"), ("import", "ok", "console")])
    );
    // Not JSON: a usage error.
    let junk = o.join("junk.json");
    std::fs::write(&junk, "not json").unwrap();
    let (code, _, err) = tb(o, &[], &["func", "import", junk.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not JSON"), "{err}");
}

#[test]
fn import_needs_an_admin_and_audit_filters_are_checked() {
    let home = fresh_home();
    savefunc(home.path(), "U1", "vol", "Volume", "result = 1");
    let export = home.path().join("export.json");
    tb_ok(
        home.path(),
        &["func", "export", "-o", export.to_str().unwrap()],
        0,
    );
    let not_admin = [("TRADEBOX_CONSOLE_USER_IS_ADMIN", "false")];
    let (code, _, err) = tb(
        home.path(),
        &not_admin,
        &["func", "import", "--user", "U5", export.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs an admin"), "{err}");
    let (code, _, err) = tb(home.path(), &[], &["audit", "--outcome", "bogus"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("refused_rate_limit"),
        "the valid values are listed: {err}"
    );
    let (code, _, _) = tb(home.path(), &[], &["audit", "--action", "nope"]);
    assert_eq!(code, 2);
}
