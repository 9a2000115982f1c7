//! Snapshot tests of the Block Kit rendering: the replies of the original
//! bot (seed: python-executor-integration-guide.md), built by hand, and the
//! limits Slack enforces. Every rendering is also checked by an independent
//! validator of Slack's limits ([`check_limits`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use serde_json::{json, Value};
use tradebox_core::reply::{Block, Button, File, Reply};
use tradebox_slack::blocks::{render, Rendered};

/// What a snapshot shows: the message and the uploads (bytes by size).
fn view(r: &Rendered) -> Value {
    json!({
        "text": r.text,
        "ephemeral": r.ephemeral,
        "blocks": r.blocks,
        "uploads": r.uploads.iter().map(|u| json!({
            "filename": u.filename,
            "title": u.title,
            "mime": u.mime,
            "size": u.bytes.len(),
        })).collect::<Vec<_>>(),
    })
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Characters of all strings of the blocks except `type` fields.
fn total_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => chars(s),
        Value::Array(a) => a.iter().map(total_chars).sum(),
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| *k != "type")
            .map(|(_, v)| total_chars(v))
            .sum(),
        _ => 0,
    }
}

/// A mrkdwn text is escaped: no `<`/`>` outside mentions, channel refs and
/// specials; every `&` starts one of the three entities.
fn check_escaped(text: &str) {
    let mut rest = text;
    while let Some(i) = rest.find(['<', '>', '&']) {
        let from = &rest[i..];
        if let Some(after) = from.strip_prefix('&') {
            assert!(
                after.starts_with("amp;") || after.starts_with("lt;") || after.starts_with("gt;"),
                "bare & in {text:?}"
            );
            rest = after;
            continue;
        }
        assert!(from.starts_with('<'), "bare > in {text:?}");
        let end = from
            .find('>')
            .unwrap_or_else(|| panic!("bare < in {text:?}"));
        let body = &from[1..end];
        let id_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
        let ok = body.strip_prefix('@').is_some_and(id_ok)
            || body.strip_prefix('#').is_some_and(id_ok)
            || body
                .strip_prefix('!')
                .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_alphabetic()));
        assert!(ok, "unescaped <{body}> in {text:?}");
        rest = &from[end + 1..];
    }
}

fn check_button(b: &Value, ids: &mut HashSet<String>) {
    assert_eq!(b["type"], "button");
    let text = b["text"]["text"].as_str().unwrap();
    assert!((1..=75).contains(&chars(text)), "button text {text:?}");
    let id = b["action_id"].as_str().unwrap();
    assert!(
        (1..=255).contains(&chars(id)),
        "action_id of {} chars",
        chars(id)
    );
    assert!(ids.insert(id.to_string()), "action_id {id:?} twice");
    if let Some(value) = b.get("value") {
        assert!((1..=2000).contains(&chars(value.as_str().unwrap())));
    }
}

/// Slack's limits, checked independently of the renderer's own constants.
fn check_limits(r: &Rendered) {
    let blocks = r.blocks.as_array().unwrap();
    assert!(blocks.len() <= 50, "{} blocks", blocks.len());
    let total = total_chars(&r.blocks);
    assert!(total <= 12_000, "{total} chars in blocks");
    assert!(chars(&r.text) <= 3_000);
    check_escaped(&r.text);
    let mut ids = HashSet::new();
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(b["text"]["type"], "plain_text");
                let t = b["text"]["text"].as_str().unwrap();
                assert!((1..=150).contains(&chars(t)), "header {t:?}");
            }
            "section" => {
                assert_eq!(b["text"]["type"], "mrkdwn");
                let t = b["text"]["text"].as_str().unwrap();
                assert!((1..=3000).contains(&chars(t)), "section of {}", chars(t));
                check_escaped(t);
                assert_eq!(t.matches("```").count() % 2, 0, "unbalanced fence in {t:?}");
                if let Some(acc) = b.get("accessory") {
                    check_button(acc, &mut ids);
                }
            }
            "context" => {
                let elements = b["elements"].as_array().unwrap();
                assert!((1..=10).contains(&elements.len()));
                for e in elements {
                    assert_eq!(e["type"], "mrkdwn");
                    let t = e["text"].as_str().unwrap();
                    assert!((1..=3000).contains(&chars(t)));
                    check_escaped(t);
                }
            }
            "actions" => {
                let elements = b["elements"].as_array().unwrap();
                assert!((1..=25).contains(&elements.len()));
                for e in elements {
                    check_button(e, &mut ids);
                }
            }
            "divider" => assert_eq!(b.as_object().unwrap().len(), 1),
            other => panic!("unexpected block type {other}"),
        }
    }
}

fn render_checked(reply: &Reply) -> Rendered {
    let r = render(reply);
    check_limits(&r);
    r
}

fn text(t: &str) -> Block {
    Block::Text {
        text: t.into(),
        button: None,
    }
}

fn context(items: &[&str]) -> Block {
    Block::Context {
        items: items.iter().map(|s| s.to_string()).collect(),
    }
}

const SERIES: &str = "exchange
gateio     4521.50
kraken      312.00
kucoin     2870.25
mexc        123.0
sui_dex    9051.75
Name: amount, dtype: float64";

#[test]
fn analyze_success() {
    let reply = Reply::in_channel(
        format!("Analysis complete: {SERIES}"),
        vec![
            Block::Header {
                text: "Analysis Result".into(),
            },
            Block::Result {
                label: None,
                text: SERIES.into(),
                value: Some(json!({"type": "series"})),
            },
            Block::Code {
                label: Some("Output".into()),
                text: "rows: 3970\nexchanges: 5\n".into(),
            },
            context(&["Executed in 12ms by <@U123>"]),
        ],
    );
    let r = render_checked(&reply);
    assert!(!r.ephemeral);
    assert!(r.uploads.is_empty());
    assert_eq!(
        r.blocks[1]["text"]["text"],
        format!("```\n{SERIES}\n```"),
        "as the original: ```\\n{{result}}\\n```"
    );
    insta::assert_json_snapshot!("analyze_success", view(&r));
}

const TRACEBACK: &str = r#"Traceback (most recent call last):
  File "<snippet>", line 3, in <module>
    if a < b and c > 0 & mask:
TypeError: '<' not supported between instances of 'str' and 'int'"#;

#[test]
fn analyze_error_is_escaped() {
    let mut reply = Reply::in_channel(
        format!("Analysis failed: {TRACEBACK}"),
        vec![
            text(":x: *Error*"),
            Block::Code {
                label: None,
                text: TRACEBACK.into(),
            },
        ],
    );
    reply.error = true;
    let r = render_checked(&reply);
    let code = r.blocks[1]["text"]["text"].as_str().unwrap();
    assert!(code.contains("in &lt;module&gt;"));
    assert!(code.contains("if a &lt; b and c &gt; 0 &amp; mask:"));
    assert!(!code.contains("<module>"));
    assert!(r.text.starts_with("Analysis failed: Traceback"));
    assert!(r.text.contains("&lt;module&gt;"));
    insta::assert_json_snapshot!("analyze_error", view(&r));
}

#[test]
fn runfunc_success() {
    let reply = Reply::in_channel(
        format!("volume_by_exchange: {SERIES}"),
        vec![
            Block::Header {
                text: "volume_by_exchange".into(),
            },
            text("Total traded amount per exchange, last 7 days"),
            Block::Result {
                label: Some("Result".into()),
                text: SERIES.into(),
                value: None,
            },
            context(&["Executed in 5ms by <@U1>", "Created by <@U2>", "Used 3x"]),
        ],
    );
    let r = render_checked(&reply);
    assert_eq!(
        r.blocks[2]["text"]["text"],
        format!("*Result:*\n```\n{SERIES}\n```")
    );
    assert_eq!(
        r.blocks[3]["elements"][0]["text"],
        "Executed in 5ms by <@U1> • Created by <@U2> • Used 3x"
    );
    insta::assert_json_snapshot!("runfunc_success", view(&r));
}

const NAMES: [&str; 20] = [
    "volume_by_exchange",
    "volume_by_account",
    "daily_pnl",
    "avg_price_by_exchange",
    "fees_by_exchange",
    "buy_sell_ratio",
    "largest_trades",
    "hourly_volume",
    "mexc_spread",
    "kucoin_fills",
    "kraken_vwap",
    "gateio_volume",
    "sui_dex_swaps",
    "mm1_inventory",
    "mm2_inventory",
    "tm_activity",
    "balance_history",
    "usdt_balance",
    "alkimi_balance",
    "weekly_summary",
];

fn listfuncs(description: impl Fn(usize) -> String) -> Reply {
    let mut blocks = vec![Block::Header {
        text: "All Saved Functions".into(),
    }];
    for (i, name) in NAMES.iter().enumerate() {
        blocks.push(Block::Text {
            text: format!("*`{name}`*\n{}", description(i)),
            button: Some(Button {
                text: "Run".into(),
                action_id: format!("run_func_{name}"),
                value: name.to_string(),
            }),
        });
        blocks.push(context(&[
            &format!("Created by <@U0{}>", 100 + i % 3),
            &format!("Used {}x", 20 - i),
        ]));
    }
    blocks.push(Block::Divider);
    blocks.push(context(&["Total: 23 functions", "140 total executions"]));
    Reply::in_channel("All Saved Functions", blocks)
}

#[test]
fn listfuncs_twenty_functions_fit() {
    let reply = listfuncs(|i| {
        format!(
            "{} for the ALKIMI desk (mexc, gateio, kucoin, kraken, sui_dex)",
            NAMES[i].replace('_', " ")
        )
    });
    let r = render_checked(&reply);
    let blocks = r.blocks.as_array().unwrap();
    assert_eq!(blocks.len(), 43);
    assert!(total_chars(&r.blocks) <= 12_000);
    for (i, name) in NAMES.iter().enumerate() {
        let section = &blocks[1 + 2 * i];
        assert_eq!(
            section["accessory"]["action_id"],
            format!("run_func_{name}")
        );
        assert_eq!(section["accessory"]["value"], *name);
        assert_eq!(section["accessory"]["text"]["text"], "Run");
    }
    assert_eq!(blocks[41]["type"], "divider");
    assert_eq!(
        blocks[42]["elements"][0]["text"],
        "Total: 23 functions • 140 total executions"
    );
    insta::assert_json_snapshot!("listfuncs_twenty", view(&r));
}

#[test]
fn listfuncs_over_the_character_budget_drops_whole_functions() {
    // 20 functions with 700-character descriptions: about 15,000 chars.
    let reply = listfuncs(|i| {
        format!("{} ", NAMES[i])
            .repeat(40)
            .chars()
            .take(700)
            .collect()
    });
    let r = render_checked(&reply);
    let blocks = r.blocks.as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let n = blocks.len();
    assert_eq!(blocks[n - 2]["type"], "divider");
    assert_eq!(
        blocks[n - 1]["elements"][0]["text"],
        "Total: 23 functions • 140 total executions"
    );
    let note = blocks[n - 3]["text"]["text"].as_str().unwrap();
    // Every shown function keeps its context line; the note counts
    // functions, not blocks.
    let shown = (n - 4) / 2;
    assert_eq!(n - 4, shown * 2);
    assert_eq!(note, format!("… {} more items not shown", 20 - shown));
    assert!(shown >= 14, "only {shown} shown");
    insta::assert_json_snapshot!("listfuncs_over_budget_tail", {
        let tail: Vec<&Value> = blocks[n - 5..].iter().collect();
        json!({"blocks": n, "chars": total_chars(&r.blocks), "tail": tail})
    });
}

#[test]
fn huge_result_is_cut_and_attached() {
    let full: String = (0..10_000)
        .map(|i| format!("{i:>5}  mexc  MM1  ALKIMI  {:.4}\n", 0.0123 * i as f64))
        .collect();
    let reply = Reply::in_channel(
        "Analysis complete",
        vec![
            Block::Header {
                text: "Analysis Result".into(),
            },
            Block::Result {
                label: None,
                text: full.clone(),
                value: None,
            },
            context(&["Executed in 812ms by <@U123>"]),
        ],
    );
    let r = render_checked(&reply);
    let section = r.blocks[1]["text"]["text"].as_str().unwrap();
    assert!(chars(section) <= 3000);
    let shown = section.lines().count() - 3; // fence, fence, note
    assert!(shown > 50, "{shown} lines shown");
    assert!(section.ends_with(&format!(
        "\n```\n… {} more lines (full output attached)",
        group(10_000 - shown)
    )));
    assert_eq!(r.uploads.len(), 1);
    let upload = &r.uploads[0];
    assert_eq!(upload.filename, "result.txt");
    assert_eq!(upload.mime, "text/plain");
    assert_eq!(upload.bytes, full.trim_end().as_bytes());
    insta::assert_json_snapshot!("huge_result", view(&r));
}

fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn huge_result_with_a_csv_refers_to_the_csv() {
    let full: String = (0..5_000).map(|i| format!("row {i}\n")).collect();
    let mut reply = Reply::in_channel(
        "Analysis complete",
        vec![Block::Result {
            label: None,
            text: full,
            value: None,
        }],
    );
    reply.files.push(File {
        name: "table-1.csv".into(),
        mime: "text/csv".into(),
        title: "Result".into(),
        bytes: b"i\n0\n".to_vec(),
        size: 4,
    });
    let r = render_checked(&reply);
    let section = r.blocks[0]["text"]["text"].as_str().unwrap();
    assert!(section.ends_with("more lines (full table attached: table-1.csv)"));
    assert_eq!(r.uploads.len(), 1, "the CSV only");
    assert_eq!(r.uploads[0].mime, "text/csv");
}

#[test]
fn png_figure_is_uploaded() {
    let png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    let mut reply = Reply::in_channel(
        "Analysis complete: <Figure size 640x480 with 1 Axes>",
        vec![
            Block::Header {
                text: "Analysis Result".into(),
            },
            Block::Result {
                label: None,
                text: "<Axes: xlabel='exchange'>".into(),
                value: None,
            },
            Block::Image {
                file: "figure-1.png".into(),
                alt: "Volume by exchange".into(),
            },
            context(&["Executed in 240ms by <@U123>"]),
        ],
    );
    reply.files.push(File {
        name: "figure-1.png".into(),
        mime: "image/png".into(),
        title: "Volume by exchange".into(),
        size: png.len(),
        bytes: png.clone(),
    });
    let r = render_checked(&reply);
    assert_eq!(r.uploads.len(), 1);
    assert_eq!(r.uploads[0].filename, "figure-1.png");
    assert_eq!(r.uploads[0].mime, "image/png");
    assert_eq!(r.uploads[0].title, "Volume by exchange");
    assert_eq!(r.uploads[0].bytes, png);
    assert_eq!(
        r.blocks[2]["elements"][0]["text"],
        "📈 figure-1.png attached"
    );
    insta::assert_json_snapshot!("png_figure", view(&r));
}

#[test]
fn long_fields_are_cut_to_the_limits() {
    let reply = Reply::ephemeral(
        "limits",
        vec![
            Block::Header {
                text: "H".repeat(300),
            },
            Block::Text {
                text: "*`f`*\nlong button".into(),
                button: Some(Button {
                    text: "B".repeat(200),
                    action_id: format!("run_func_{}", "a".repeat(391)),
                    value: "v".repeat(2500),
                }),
            },
        ],
    );
    let r = render_checked(&reply);
    assert!(r.ephemeral);
    let header = r.blocks[0]["text"]["text"].as_str().unwrap();
    assert_eq!(chars(header), 150);
    assert!(header.ends_with("H…"));
    let button = &r.blocks[1]["accessory"];
    let text = button["text"]["text"].as_str().unwrap();
    assert_eq!(chars(text), 75);
    assert!(text.ends_with('…'));
    let id = button["action_id"].as_str().unwrap();
    assert_eq!(chars(id), 255);
    assert!(id.starts_with("run_func_aaa"));
    assert_eq!(chars(button["value"].as_str().unwrap()), 2000);
    insta::assert_json_snapshot!("long_fields", {
        json!({
            "header": header,
            "button_text": text,
            "action_id_chars": chars(id),
            "value_chars": chars(button["value"].as_str().unwrap()),
        })
    });
}

#[test]
fn repeated_action_ids_are_made_unique() {
    let run = |name: &str| Button {
        text: "Run".into(),
        action_id: format!("run_func_{name}"),
        value: name.into(),
    };
    let reply = Reply::in_channel(
        "buttons",
        vec![
            Block::Text {
                text: "*`daily_pnl`*".into(),
                button: Some(run("daily_pnl")),
            },
            Block::Buttons {
                buttons: vec![run("daily_pnl"), run("weekly_summary"), run("daily_pnl")],
            },
        ],
    );
    let r = render_checked(&reply);
    assert_eq!(r.blocks[0]["accessory"]["action_id"], "run_func_daily_pnl");
    let ids: Vec<&str> = r.blocks[1]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "run_func_daily_pnl#2",
            "run_func_weekly_summary",
            "run_func_daily_pnl#3"
        ]
    );
    // The value still names the function.
    assert_eq!(r.blocks[1]["elements"][2]["value"], "daily_pnl");
    insta::assert_json_snapshot!("unique_action_ids", view(&r));
}

#[test]
fn fences_inside_code_cannot_close_the_block() {
    let reply = Reply::in_channel(
        "code",
        vec![Block::Code {
            label: Some("Code".into()),
            text: "s = '```'\nprint(s)\nt = '````'".into(),
        }],
    );
    let r = render_checked(&reply);
    let t = r.blocks[0]["text"]["text"].as_str().unwrap();
    assert_eq!(t.matches("```").count(), 2, "only the block's own fences");
    assert_eq!(
        t,
        "*Code:*\n```\ns = '``\u{200B}`'\nprint(s)\nt = '``\u{200B}``'\n```"
    );
    insta::assert_json_snapshot!("fence_in_code", view(&r));
}

#[test]
fn mentions_are_kept_other_markup_escaped() {
    let reply = Reply::in_channel(
        "Saved by <@U123> in <#C456> <!here> for a <b> & c",
        vec![
            text("<@U123> saved `x` in <#C456>: <!here> a <b> & <http://evil|click> <@bad id>"),
            context(&["Created by <@W9ABC>", "<script>"]),
            Block::Code {
                label: None,
                text: "print('<@U123> <!channel>')".into(),
            },
        ],
    );
    let r = render_checked(&reply);
    assert_eq!(
        r.blocks[0]["text"]["text"],
        "<@U123> saved `x` in <#C456>: <!here> a &lt;b&gt; &amp; &lt;http://evil|click&gt; &lt;@bad id&gt;"
    );
    assert_eq!(
        r.blocks[1]["elements"][0]["text"],
        "Created by <@W9ABC> • &lt;script&gt;"
    );
    // Program output never pings anyone.
    assert_eq!(
        r.blocks[2]["text"]["text"],
        "```\nprint('&lt;@U123&gt; &lt;!channel&gt;')\n```"
    );
    assert_eq!(
        r.text,
        "Saved by <@U123> in <#C456> <!here> for a &lt;b&gt; &amp; c"
    );
    insta::assert_json_snapshot!("mentions_and_escaping", view(&r));
}

#[test]
fn long_text_is_split_at_lines_and_fences_reopened() {
    let lines: String = (0..400)
        .map(|i| format!("line {i:03} of the usage text\n"))
        .collect();
    let body = format!("*Usage:*\n```\n{lines}```\nThat is all.");
    let reply = Reply::ephemeral("usage", vec![text(&body)]);
    let r = render_checked(&reply);
    let blocks = r.blocks.as_array().unwrap();
    assert!(blocks.len() >= 4, "{} sections", blocks.len());
    let texts: Vec<&str> = blocks
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert!(texts[0].starts_with("*Usage:*\n```\nline 000"));
    assert!(texts[0].ends_with("\n```"));
    for t in &texts[1..texts.len() - 1] {
        assert!(t.starts_with("```\nline "));
        assert!(t.ends_with(" of the usage text\n```"));
    }
    assert!(texts
        .last()
        .unwrap()
        .ends_with("line 399 of the usage text\n```\nThat is all."));
    // Nothing lost but the line breaks at the cuts.
    let lines_seen: usize = texts
        .iter()
        .map(|t| t.matches(" of the usage text").count())
        .sum();
    assert_eq!(lines_seen, 400);
}

#[test]
fn many_code_blocks_over_budget_are_attached_when_dropped() {
    let big = |n: usize| -> String { (0..200).map(|i| format!("{n}:{i:04} value\n")).collect() };
    let mut blocks = vec![Block::Header {
        text: "Analysis Result".into(),
    }];
    for n in 0..6 {
        blocks.push(Block::Code {
            label: Some(format!("Output {n}")),
            text: big(n),
        });
    }
    blocks.push(context(&["Executed in 1ms by <@U1>"]));
    let r = render_checked(&Reply::in_channel("many", blocks));
    let shown = r.blocks.as_array().unwrap();
    assert_eq!(shown[0]["type"], "header");
    assert_eq!(shown.last().unwrap()["type"], "context");
    let note = shown[shown.len() - 2]["text"]["text"].as_str().unwrap();
    let dropped = 6 - (shown.len() - 3);
    assert_eq!(note, format!("… {dropped} more items not shown"));
    let names: Vec<&str> = r.uploads.iter().map(|u| u.filename.as_str()).collect();
    let expected: Vec<String> = (6 - dropped..6)
        .map(|n| format!("output-{n}.txt"))
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn empty_reply_parts_are_skipped() {
    let reply = Reply::in_channel(
        "",
        vec![
            Block::Header { text: "  ".into() },
            text(""),
            context(&["", " "]),
            Block::Text {
                text: String::new(),
                button: Some(Button {
                    text: String::new(),
                    action_id: String::new(),
                    value: String::new(),
                }),
            },
        ],
    );
    let r = render_checked(&reply);
    assert_eq!(
        r.blocks,
        json!([{"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Button"}, "action_id": "button"}
        ]}])
    );
    assert!(!r.text.is_empty(), "a fallback is made from the blocks");
}
