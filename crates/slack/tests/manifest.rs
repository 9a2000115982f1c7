//! `slack/manifest.yml` stays in step with the code: every command the
//! grammar knows, exactly the scopes tradebox checks for, interactivity
//! (Run buttons) and Socket Mode on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tradebox_core::command::CommandKind;

fn manifest() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../slack/manifest.yml"
    ))
    .unwrap()
}

/// The values of `key: value` lines inside the block that starts at the
/// line `header` (ends at the next line indented no deeper than it).
fn list_after(text: &str, header: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    let first = lines.next().expect("the header is there");
    let indent = first.len() - first.trim_start().len();
    lines
        .take_while(|l| {
            l.trim().is_empty()
                || l.trim_start().starts_with('#')
                || l.len() - l.trim_start().len() > indent
        })
        .filter_map(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .collect()
}

#[test]
fn commands_scopes_and_settings_match_the_code() {
    let text = manifest();
    let mut commands: Vec<String> = list_after(&text, "slash_commands:")
        .iter()
        .filter_map(|l| l.strip_prefix("command: ").map(str::to_string))
        .collect();
    let mut known: Vec<String> = CommandKind::ALL.iter().map(|k| k.slash()).collect();
    commands.sort();
    known.sort();
    assert_eq!(commands, known);
    let mut scopes = list_after(&text, "bot:");
    let mut required: Vec<String> = tradebox_slack::REQUIRED_SCOPES
        .iter()
        .map(|s| s.to_string())
        .collect();
    scopes.sort();
    required.sort();
    assert_eq!(scopes, required);
    assert!(text.contains("interactivity:\n    is_enabled: true"));
    assert!(text.contains("socket_mode_enabled: true"));
}
