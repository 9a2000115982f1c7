//! The reply model: what a command answers, independent of where it is
//! shown. Slack renders it as Block Kit, the web console as HTML, the CLI as
//! text or JSON. Texts use Slack's mrkdwn conventions (`*bold*`, `` `code` ``);
//! renderers translate them.

use serde::Serialize;

/// Who sees a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Everyone in the channel (results).
    InChannel,
    /// Only the user who typed the command (usage errors, refusals).
    Ephemeral,
}

/// A button (the Run button of `/listfuncs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Button {
    pub text: String,
    pub action_id: String,
    pub value: String,
}

/// One piece of a reply, in display order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// A title line (plain text).
    Header { text: String },
    /// A paragraph of mrkdwn text, optionally with a button beside it.
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        button: Option<Button>,
    },
    /// Preformatted text: code, output, an error, a table rendered as text.
    Code {
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        text: String,
    },
    /// A result: its text form and, for tables/series/scalars, the
    /// structured form (see `tradebox_sandbox::ExecResult::value`).
    Result {
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
    },
    /// An image from [`Reply::files`], by file name.
    Image { file: String, alt: String },
    /// A row of small print (timings, authors, totals).
    Context { items: Vec<String> },
    /// A row of buttons.
    Buttons { buttons: Vec<Button> },
    /// A horizontal rule.
    Divider,
}

/// A file that comes with a reply: a chart (PNG) or a full table (CSV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    pub name: String,
    pub mime: String,
    pub title: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub size: usize,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    pub visibility: Visibility,
    /// Plain text for notifications and clients without blocks.
    pub fallback: String,
    pub blocks: Vec<Block>,
    pub files: Vec<File>,
    /// Whether the reply reports a failure or refusal (for styling).
    pub error: bool,
}

impl Reply {
    /// A reply for everyone in the channel.
    pub fn in_channel(fallback: impl Into<String>, blocks: Vec<Block>) -> Reply {
        Reply {
            visibility: Visibility::InChannel,
            fallback: fallback.into(),
            blocks,
            files: Vec::new(),
            error: false,
        }
    }

    /// A reply only the user sees (usage, refusals).
    pub fn ephemeral(fallback: impl Into<String>, blocks: Vec<Block>) -> Reply {
        Reply {
            visibility: Visibility::Ephemeral,
            ..Reply::in_channel(fallback, blocks)
        }
    }

    /// A short message in one text block.
    pub fn text(visibility: Visibility, text: impl Into<String>) -> Reply {
        let text = text.into();
        Reply {
            visibility,
            ..Reply::in_channel(text.clone(), vec![Block::Text { text, button: None }])
        }
    }

    /// An error or refusal only the user sees: `:x: message`.
    pub fn refusal(message: impl Into<String>) -> Reply {
        let message = message.into();
        Reply {
            error: true,
            ..Reply::text(Visibility::Ephemeral, format!(":x: {message}"))
        }
    }

    /// The placeholder shown while a job runs, replaced by the result.
    pub fn placeholder(what: &str) -> Reply {
        Reply::text(
            Visibility::InChannel,
            format!(":hourglass_flowing_sand: {what}..."),
        )
    }

    /// A plain-text rendering (for `tradebox chat --format text`).
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        for block in &self.blocks {
            match block {
                Block::Header { text } => out.push(format!("== {text} ==")),
                Block::Text { text, button } => {
                    out.push(match button {
                        Some(b) => format!("{text}  [{}: {}]", b.text, b.action_id),
                        None => text.clone(),
                    });
                }
                Block::Code { label, text } | Block::Result { label, text, .. } => {
                    if let Some(label) = label {
                        out.push(format!("{label}:"));
                    }
                    out.push(text.clone());
                }
                Block::Image { file, alt } => out.push(format!("[image {file}: {alt}]")),
                Block::Context { items } => out.push(items.join(" • ")),
                Block::Buttons { buttons } => out.push(
                    buttons
                        .iter()
                        .map(|b| format!("[{}: {}]", b.text, b.action_id))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                Block::Divider => out.push("----".into()),
            }
        }
        for f in &self.files {
            out.push(format!("[file {} ({}, {} bytes)]", f.name, f.mime, f.size));
        }
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rendering_and_json_shape() {
        let mut r = Reply::in_channel(
            "Analysis complete: 2",
            vec![
                Block::Header {
                    text: "Analysis Result".into(),
                },
                Block::Result {
                    label: None,
                    text: "2".into(),
                    value: Some(serde_json::json!({"type": "scalar", "value": 2})),
                },
                Block::Context {
                    items: vec!["Executed in 3ms by <@U1>".into()],
                },
            ],
        );
        r.files.push(File {
            name: "figure-1.png".into(),
            mime: "image/png".into(),
            title: "Figure 1".into(),
            bytes: vec![1, 2, 3],
            size: 3,
        });
        assert_eq!(
            r.to_text(),
            "== Analysis Result ==\n2\nExecuted in 3ms by <@U1>\n[file figure-1.png (image/png, 3 bytes)]"
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["blocks"][1]["type"], "result");
        assert_eq!(v["visibility"], "in_channel");
        assert!(v["files"][0].get("bytes").is_none());
        let refusal = Reply::refusal("Rate limit exceeded");
        assert_eq!(refusal.visibility, Visibility::Ephemeral);
        assert!(refusal.error);
        assert_eq!(refusal.to_text(), ":x: Rate limit exceeded");
    }
}
