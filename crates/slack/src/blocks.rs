//! Block Kit rendering of the transport-neutral reply model
//! ([`tradebox_core::reply::Reply`]).
//!
//! [`render`] turns a reply into what `chat.postMessage` / `chat.update`
//! take (`text` and `blocks`) plus the files to upload beside the message.
//! It never fails: whatever the reply holds, the result respects Slack's
//! limits, so Slack never answers `invalid_blocks` or `msg_blocks_too_long`:
//!
//! - at most [`MAX_BLOCKS`] blocks and about [`MAX_TOTAL_CHARS`] characters
//!   in all the blocks' strings together (Slack rejects a message whose
//!   blocks total about 13,000); when a reply is larger, blocks are dropped
//!   from the end (the leading header and the final context line, with a
//!   divider just before it, are kept) and a section "… N more items not
//!   shown" takes their place; a dropped code or result block goes along as
//!   a `.txt` upload, so no output is lost;
//! - [`MAX_TEXT`] characters per section or context text: long paragraphs
//!   are split over several sections at line boundaries; long code and
//!   results are cut at a line boundary with a note "… N more lines (full
//!   output attached)" and the full text is uploaded as a `.txt` file (a
//!   result that already comes with a CSV file refers to that file instead);
//! - [`MAX_HEADER`] characters per header, [`MAX_BUTTON_TEXT`] per button
//!   text, [`MAX_ACTION_ID`] per action id, [`MAX_BUTTON_VALUE`] per button
//!   value, [`MAX_ACTIONS`] buttons per `actions` block; action ids are
//!   unique within the message (a repeated id gets a `#2`, `#3` … suffix).
//!
//! Escaping: every mrkdwn text has `&`, `<` and `>` escaped as `&amp;`,
//! `&lt;` and `&gt;`, except the markup the core writes on purpose in
//! texts and context lines: user mentions `<@U123>`, channel references
//! `<#C123>` and specials such as `<!here>`. Inside code and results
//! *everything* is escaped, mentions included: that text is program output,
//! and a snippet printing `<!channel>` must not notify the channel. A ```
//! inside code is broken with a zero-width space so it cannot close the
//! fence. `plain_text` fields (headers, button texts) are not escaped.
//!
//! Slack shows no uploaded image inside blocks (that needs a public URL): an
//! [`Block::Image`] becomes a context line "📈 name attached" and the file
//! travels in [`Rendered::uploads`] with every other file of the reply.
//! Empty headers, texts and context lines are left out (Slack rejects empty
//! texts); a button beside an empty text goes into an `actions` block.

use std::collections::HashSet;

use serde_json::{json, Value};
use tradebox_core::reply::{Block, Button, File, Reply, Visibility};

/// Most blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Most characters in all strings of a message's blocks together (Slack
/// rejects about 13,000 with `msg_blocks_too_long`; this leaves a margin).
pub const MAX_TOTAL_CHARS: usize = 12_000;
/// Most characters in one section or context text.
pub const MAX_TEXT: usize = 3_000;
/// Most characters in a header.
pub const MAX_HEADER: usize = 150;
/// Most characters in a button's text.
pub const MAX_BUTTON_TEXT: usize = 75;
/// Most characters in an action id.
pub const MAX_ACTION_ID: usize = 255;
/// Most characters in a button's value.
pub const MAX_BUTTON_VALUE: usize = 2_000;
/// Most elements in one `actions` block.
pub const MAX_ACTIONS: usize = 25;
/// Most characters of the fallback `text` (a notification needs little).
pub const MAX_FALLBACK: usize = 3_000;

/// Longest mention or special kept as it is (they are short ids).
const MAX_MARKUP: usize = 100;
/// Longest label shown before a code block.
const MAX_LABEL: usize = 100;
/// Room kept in each part of a split text to close and reopen a fence.
const FENCE_RESERVE: usize = 8;
/// A zero-width space: breaks ``` inside code without showing.
const ZWSP: char = '\u{200B}';
const ELLIPSIS: char = '…';

/// A reply rendered for Slack.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The `text` of `chat.postMessage`: the reply's fallback, escaped as
    /// mrkdwn and at most [`MAX_FALLBACK`] characters.
    pub text: String,
    /// The `blocks` of `chat.postMessage`: a JSON array of Block Kit blocks.
    pub blocks: Value,
    /// Files to upload beside the message, in order: the reply's files,
    /// then the full texts of truncated or dropped code and results.
    pub uploads: Vec<Upload>,
    /// Whether only the requesting user should see the reply; the transport
    /// decides how to post it (`chat.postEphemeral` or `response_url`).
    pub ephemeral: bool,
}

/// A file to upload with `files.getUploadURLExternal` +
/// `files.completeUploadExternal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub filename: String,
    pub title: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// Render a reply as Block Kit, within Slack's limits (see the module
/// documentation).
pub fn render(reply: &Reply) -> Rendered {
    let mut renderer = Renderer {
        files: &reply.files,
        action_ids: HashSet::new(),
    };
    let mut units = Vec::new();
    let mut texts = Vec::new();
    let mut group = 0;
    let mut previous_is_content = false;
    for (source, block) in reply.blocks.iter().enumerate() {
        let out = renderer.block(block);
        if let Some(upload) = out.upload {
            texts.push((source, upload));
        }
        if out.blocks.is_empty() {
            continue;
        }
        let kind = Kind::of(block);
        // A context line right after content describes it (the "Created
        // by" line under a function): they are kept or dropped together.
        if !(kind == Kind::Context && previous_is_content) {
            group += 1;
        }
        previous_is_content = kind == Kind::Content;
        for value in out.blocks {
            units.push(Unit {
                chars: string_chars(&value),
                block: value,
                group,
                source,
                kind,
                split: out.split,
            });
        }
    }

    let (units, note) = fit(units);
    let kept: HashSet<usize> = units.iter().map(|u| u.source).collect();
    let mut blocks: Vec<Value> = units.into_iter().map(|u| u.block).collect();
    if let Some((at, text)) = note {
        blocks.insert(at.min(blocks.len()), section(text));
    }

    let mut uploads: Vec<Upload> = reply
        .files
        .iter()
        .map(|f| Upload {
            filename: f.name.clone(),
            title: if f.title.is_empty() {
                f.name.clone()
            } else {
                f.title.clone()
            },
            mime: f.mime.clone(),
            bytes: f.bytes.clone(),
        })
        .collect();
    for (source, text) in texts {
        if text.always || !kept.contains(&source) {
            let filename = unique_filename(&uploads, &text.stem);
            uploads.push(Upload {
                filename,
                title: text.title,
                mime: "text/plain".into(),
                bytes: text.text.into_bytes(),
            });
        }
    }

    let fallback = if reply.fallback.trim().is_empty() {
        reply.to_text()
    } else {
        reply.fallback.clone()
    };
    Rendered {
        text: truncate_escaped(&escape_text(&fallback), MAX_FALLBACK),
        blocks: Value::Array(blocks),
        uploads,
        ephemeral: reply.visibility == Visibility::Ephemeral,
    }
}

/// Escape text for a mrkdwn field: `&`, `<` and `>` become `&amp;`, `&lt;`
/// and `&gt;`, except in user mentions `<@U123>`, channel references
/// `<#C123>` and specials such as `<!here>`, which are kept as they are.
pub fn escape_mrkdwn(text: &str) -> String {
    escape_text(text).text
}

/// What a reply block is, for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Header,
    Context,
    Divider,
    Content,
}

impl Kind {
    fn of(block: &Block) -> Kind {
        match block {
            Block::Header { .. } => Kind::Header,
            Block::Context { .. } => Kind::Context,
            Block::Divider => Kind::Divider,
            _ => Kind::Content,
        }
    }
}

/// One Slack block, with where it came from.
struct Unit {
    block: Value,
    chars: usize,
    /// Blocks kept or dropped together (a function and its context line).
    group: usize,
    /// The index of the reply block it renders.
    source: usize,
    kind: Kind,
    /// Part of a text split over several sections (may be kept in part).
    split: bool,
}

/// The full text of a code or result block, uploaded when it was cut
/// (`always`) or when the block itself was dropped.
struct TextUpload {
    stem: String,
    title: String,
    text: String,
    always: bool,
}

/// What one reply block renders to.
#[derive(Default)]
struct BlockOut {
    blocks: Vec<Value>,
    split: bool,
    upload: Option<TextUpload>,
}

struct Renderer<'a> {
    files: &'a [File],
    action_ids: HashSet<String>,
}

impl Renderer<'_> {
    fn block(&mut self, block: &Block) -> BlockOut {
        match block {
            Block::Header { text } => {
                let text = truncate_plain(text.trim(), MAX_HEADER);
                let blocks = if text.is_empty() {
                    Vec::new()
                } else {
                    vec![json!({"type": "header", "text": plain(text)})]
                };
                BlockOut {
                    blocks,
                    ..BlockOut::default()
                }
            }
            Block::Text { text, button } => self.text(text, button.as_ref()),
            Block::Code { label, text } => {
                let (section, upload) = code(label.as_deref(), text, None, "output", "Output");
                BlockOut {
                    blocks: vec![section],
                    split: false,
                    upload: Some(upload),
                }
            }
            Block::Result { label, text, .. } => {
                let csv = self.files.iter().find(|f| is_csv(f));
                let (section, upload) = code(
                    label.as_deref(),
                    text,
                    csv.map(|f| f.name.as_str()),
                    "result",
                    "Result",
                );
                BlockOut {
                    blocks: vec![section],
                    split: false,
                    upload: csv.is_none().then_some(upload),
                }
            }
            Block::Image { file, .. } => {
                let line = if self.files.iter().any(|f| &f.name == file) {
                    format!("📈 {file} attached")
                } else {
                    format!(":warning: image {file} is missing")
                };
                BlockOut {
                    blocks: vec![context(truncate_escaped(&escape_text(&line), MAX_TEXT))],
                    ..BlockOut::default()
                }
            }
            Block::Context { items } => {
                let joined = items
                    .iter()
                    .map(|i| i.trim())
                    .filter(|i| !i.is_empty())
                    .collect::<Vec<_>>()
                    .join(" • ");
                let blocks = if joined.is_empty() {
                    Vec::new()
                } else {
                    vec![context(truncate_escaped(&escape_text(&joined), MAX_TEXT))]
                };
                BlockOut {
                    blocks,
                    ..BlockOut::default()
                }
            }
            Block::Buttons { buttons } => {
                let elements: Vec<Value> = buttons.iter().map(|b| self.button(b)).collect();
                BlockOut {
                    blocks: elements
                        .chunks(MAX_ACTIONS)
                        .map(|chunk| json!({"type": "actions", "elements": chunk}))
                        .collect(),
                    ..BlockOut::default()
                }
            }
            Block::Divider => BlockOut {
                blocks: vec![json!({"type": "divider"})],
                ..BlockOut::default()
            },
        }
    }

    /// A paragraph: one section, or several when longer than a section
    /// holds; the button (if any) is the first section's accessory.
    fn text(&mut self, text: &str, button: Option<&Button>) -> BlockOut {
        let parts = split_text(&escape_text(text), MAX_TEXT - FENCE_RESERVE);
        let split = parts.len() > 1;
        let mut blocks: Vec<Value> = parts.into_iter().map(section).collect();
        if let Some(button) = button {
            let button = self.button(button);
            match blocks.first_mut() {
                Some(Value::Object(first)) => {
                    first.insert("accessory".into(), button);
                }
                _ => blocks.push(json!({"type": "actions", "elements": [button]})),
            }
        }
        BlockOut {
            blocks,
            split,
            upload: None,
        }
    }

    fn button(&mut self, button: &Button) -> Value {
        let text = truncate_plain(button.text.trim(), MAX_BUTTON_TEXT);
        let text = if text.is_empty() {
            "Button".to_string()
        } else {
            text
        };
        let mut value = json!({
            "type": "button",
            "text": plain(text),
            "action_id": self.unique_action_id(&button.action_id),
        });
        let payload = cut_plain(&button.value, MAX_BUTTON_VALUE);
        if let (false, Value::Object(map)) = (payload.is_empty(), &mut value) {
            map.insert("value".into(), Value::String(payload));
        }
        value
    }

    /// The action id, cut to [`MAX_ACTION_ID`], with a `#2`, `#3` …
    /// suffix when an earlier element of the message already has it.
    fn unique_action_id(&mut self, wanted: &str) -> String {
        let base = cut_plain(
            if wanted.is_empty() { "button" } else { wanted },
            MAX_ACTION_ID,
        );
        if self.action_ids.insert(base.clone()) {
            return base;
        }
        let mut n = 2usize;
        loop {
            let suffix = format!("#{n}");
            let id = format!(
                "{}{suffix}",
                cut_plain(&base, MAX_ACTION_ID - suffix.chars().count())
            );
            if self.action_ids.insert(id.clone()) {
                return id;
            }
            n += 1;
        }
    }
}

/// Keep the units within [`MAX_BLOCKS`] and [`MAX_TOTAL_CHARS`]. Returns
/// the kept units and, when some were dropped, the note to show and its
/// index among them.
fn fit(mut units: Vec<Unit>) -> (Vec<Unit>, Option<(usize, String)>) {
    let fits = |blocks: usize, chars: usize| blocks <= MAX_BLOCKS && chars <= MAX_TOTAL_CHARS;
    let total: usize = units.iter().map(|u| u.chars).sum();
    if fits(units.len(), total) {
        return (units, None);
    }
    let head = usize::from(units.first().is_some_and(|u| u.kind == Kind::Header));
    let mut tail = units.len();
    if units.len() > head && units.last().is_some_and(|u| u.kind == Kind::Context) {
        tail -= 1;
        if tail > head && units[tail - 1].kind == Kind::Divider {
            tail -= 1;
        }
        // The final context line is kept on its own, whatever group it
        // joined.
        let group = units.len() + units.last().map_or(0, |u| u.group);
        for unit in &mut units[tail..] {
            unit.group = group;
        }
    }
    let chars =
        |range: std::ops::Range<usize>| -> usize { units[range].iter().map(|u| u.chars).sum() };
    let groups_in = |range: std::ops::Range<usize>| -> usize {
        let mut groups: Vec<usize> = units[range].iter().map(|u| u.group).collect();
        groups.dedup();
        groups.len()
    };
    // The note's length depends on how many items it counts: reserve for
    // the most it could count.
    let reserve = note_text(groups_in(head..tail)).chars().count();
    let fixed_blocks = head + (units.len() - tail) + 1;
    let fixed_chars = chars(0..head) + chars(tail..units.len()) + reserve;
    let fits_with = |end: usize| fits(fixed_blocks + (end - head), fixed_chars + chars(head..end));
    // Drop whole groups from the end of the middle...
    let mut end = tail;
    while end > head && !fits_with(end) {
        let group = units[end - 1].group;
        while end > head && units[end - 1].group == group {
            end -= 1;
        }
    }
    // ...then take back the leading parts of a split text that fit.
    if end < tail && units[end].split {
        let group = units[end].group;
        while end < tail && units[end].split && units[end].group == group && fits_with(end + 1) {
            end += 1;
        }
    }
    let dropped = groups_in(end..tail);
    let tail_units: Vec<Unit> = units.split_off(tail);
    units.truncate(end);
    units.extend(tail_units);
    // Cannot happen with the caps above (a header and a context line are
    // far below the budget), but never send what Slack rejects.
    while !units.is_empty() && {
        let total: usize = units.iter().map(|u| u.chars).sum::<usize>() + reserve;
        !fits(units.len() + 1, total)
    } {
        units.pop();
    }
    (units, Some((end, note_text(dropped))))
}

fn note_text(items: usize) -> String {
    let noun = if items == 1 { "item" } else { "items" };
    format!("{ELLIPSIS} {} more {noun} not shown", thousands(items))
}

/// A code or result section: `*label:*` then a fenced block, cut to fit
/// [`MAX_TEXT`] with a note when needed. Returns the section and the full
/// text as a possible upload (`always` when the text was cut).
fn code(
    label: Option<&str>,
    text: &str,
    csv: Option<&str>,
    default_stem: &str,
    default_title: &str,
) -> (Value, TextUpload) {
    let text = text.trim_end_matches(['\n', '\r']);
    let label = label.map(str::trim).filter(|l| !l.is_empty());
    let mut head = String::new();
    if let Some(label) = label {
        head.push('*');
        // One line, escaped like code: a label cannot open a fence.
        let label = label.replace(['\n', '\r'], " ");
        head.push_str(&truncate_escaped(&escape_code(&label), MAX_LABEL));
        head.push_str(":*\n");
    }
    head.push_str("```\n");
    let foot = "\n```";
    let frame = head.chars().count() + foot.chars().count();

    let lines: Vec<&str> = text.split('\n').collect();
    let escaped: Vec<Escaped> = lines.iter().map(|l| escape_code(l)).collect();
    let full: usize = escaped.iter().map(Escaped::chars).sum::<usize>() + lines.len() - 1;
    let attached = match csv {
        Some(name) => format!("full table attached: {}", escape_mrkdwn(name)),
        None => "full output attached".to_string(),
    };
    let mut body = String::new();
    let mut note = String::new();
    if frame + full <= MAX_TEXT {
        for (i, line) in escaped.iter().enumerate() {
            if i > 0 {
                body.push('\n');
            }
            body.push_str(&line.text);
        }
    } else {
        let most = lines.len().max(text.chars().count());
        let reserve = format!(
            "\n{ELLIPSIS} {} more characters ({attached})",
            thousands(most)
        );
        let budget = MAX_TEXT.saturating_sub(frame + reserve.chars().count());
        let mut used = 0;
        let mut shown = 0;
        for line in &escaped {
            let needed = line.chars() + usize::from(shown > 0);
            if used + needed > budget {
                break;
            }
            if shown > 0 {
                body.push('\n');
            }
            body.push_str(&line.text);
            used += needed;
            shown += 1;
        }
        if shown == 0 {
            // Not even the first line fits: show its beginning.
            let line = &escaped[0];
            let room = budget.saturating_sub(1);
            let atoms = line.atoms_within(room);
            body.push_str(&line.text[..line.byte_end(atoms)]);
            body.push(ELLIPSIS);
            let rest_lines = lines.len() - 1;
            let rest = if rest_lines > 0 {
                plural(rest_lines, "more line", "more lines")
            } else {
                let chars = lines[0].chars().count() - atoms;
                plural(chars, "more character", "more characters")
            };
            note = format!("\n{ELLIPSIS} {rest} ({attached})");
        } else {
            let rest = plural(lines.len() - shown, "more line", "more lines");
            note = format!("\n{ELLIPSIS} {rest} ({attached})");
        }
    }
    let section_text = format!("{head}{body}{foot}{note}");
    let stem = label.map_or_else(|| default_stem.to_string(), slug);
    let upload = TextUpload {
        stem,
        title: format!("{} (full text)", label.unwrap_or(default_title)),
        text: text.to_string(),
        always: !note.is_empty(),
    };
    (section(section_text), upload)
}

/// Escaped text kept as indivisible atoms (one source character, or a
/// whole mention), so it is never cut inside `&amp;` or `<@U123>`.
#[derive(Default)]
struct Escaped {
    text: String,
    /// The end of each atom: byte offset and character count in `text`.
    ends: Vec<(usize, usize)>,
}

impl Escaped {
    fn push(&mut self, atom: &str) {
        let chars = self.chars() + atom.chars().count();
        self.text.push_str(atom);
        self.ends.push((self.text.len(), chars));
    }

    fn chars(&self) -> usize {
        self.ends.last().map_or(0, |e| e.1)
    }

    /// How many atoms, from the start, take at most `max` characters.
    fn atoms_within(&self, max: usize) -> usize {
        self.ends.partition_point(|e| e.1 <= max)
    }

    /// Byte offset just after `atoms` atoms.
    fn byte_end(&self, atoms: usize) -> usize {
        match atoms {
            0 => 0,
            n => self.ends[n - 1].0,
        }
    }

    /// Character count just after `atoms` atoms.
    fn char_end(&self, atoms: usize) -> usize {
        match atoms {
            0 => 0,
            n => self.ends[n - 1].1,
        }
    }

    /// The text of atom `i`.
    fn atom(&self, i: usize) -> &str {
        &self.text[self.byte_end(i)..self.ends[i].0]
    }
}

/// Escape mrkdwn text, keeping the markup the core writes on purpose.
fn escape_text(text: &str) -> Escaped {
    let mut out = Escaped::default();
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        if c == '<' {
            if let Some(len) = kept_markup_len(&text[i..]) {
                out.push(&text[i..i + len]);
                i += len;
                continue;
            }
        }
        let mut buf = [0u8; 4];
        out.push(match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => c.encode_utf8(&mut buf),
        });
        i += c.len_utf8();
    }
    out
}

/// The length of the mention, channel reference or special at the start of
/// `text` (`<@U123>`, `<#C123>`, `<!here>`, `<!subteam^S1|@desk>`), if any.
fn kept_markup_len(text: &str) -> Option<usize> {
    let body_len = text[1..].find(|c: char| c == '>' || c == '<' || c.is_whitespace())?;
    if body_len > MAX_MARKUP || !text[1 + body_len..].starts_with('>') {
        return None;
    }
    let body = &text[1..1 + body_len];
    let is_id = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    let kept = if let Some(id) = body.strip_prefix('@') {
        is_id(id)
    } else if let Some(id) = body.strip_prefix('#') {
        is_id(id)
    } else if let Some(special) = body.strip_prefix('!') {
        special.starts_with(|c: char| c.is_ascii_alphabetic()) && !special.contains('&')
    } else {
        false
    };
    kept.then_some(body_len + 2)
}

/// Escape one line of code: everything is escaped, and a third backtick in
/// a row gets a zero-width space before it so no ``` closes the fence.
fn escape_code(line: &str) -> Escaped {
    let mut out = Escaped::default();
    let mut backticks = 0;
    let mut buf = [0u8; 8];
    for c in line.chars() {
        if c == '`' {
            if backticks == 2 {
                let mut atom = String::with_capacity(4);
                atom.push(ZWSP);
                atom.push('`');
                out.push(&atom);
                backticks = 1;
            } else {
                out.push("`");
                backticks += 1;
            }
            continue;
        }
        backticks = 0;
        out.push(match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => c.encode_utf8(&mut buf),
        });
    }
    out
}

/// Split escaped text into parts of at most `budget` characters, at a line
/// break if possible, else at a space, else anywhere between atoms. A fence
/// left open at the end of a part is closed there and reopened in the next.
fn split_text(text: &Escaped, budget: usize) -> Vec<String> {
    let mut raw_parts = Vec::new();
    let atoms = text.ends.len();
    let mut start = 0;
    while start < atoms {
        let offset = text.char_end(start);
        if text.chars() - offset <= budget {
            raw_parts.push(&text.text[text.byte_end(start)..]);
            break;
        }
        let end = text.atoms_within(offset + budget).max(start + 1);
        let at = |pattern: &dyn Fn(&str) -> bool| {
            (start + 1..end).rev().find(|&i| pattern(text.atom(i)))
        };
        let (cut, next) = match at(&|a| a == "\n").or_else(|| at(&|a| a == " ")) {
            Some(i) => (i, i + 1),
            None => (end, end),
        };
        raw_parts.push(&text.text[text.byte_end(start)..text.byte_end(cut)]);
        start = next;
    }
    let mut parts = Vec::new();
    let mut open = false;
    for raw in raw_parts {
        let mut part = String::with_capacity(raw.len() + FENCE_RESERVE);
        if open {
            part.push_str("```\n");
        }
        part.push_str(raw);
        open = part.matches("```").count() % 2 == 1;
        if open {
            part.push_str("\n```");
        }
        if !part.trim().is_empty() {
            parts.push(part);
        }
    }
    parts
}

/// Escaped text cut to `max` characters, ending with "…" when cut.
fn truncate_escaped(text: &Escaped, max: usize) -> String {
    if text.chars() <= max {
        return text.text.clone();
    }
    let atoms = text.atoms_within(max - 1);
    let mut out = text.text[..text.byte_end(atoms)].to_string();
    out.push(ELLIPSIS);
    out
}

/// Plain text cut to `max` characters, ending with "…" when cut.
fn truncate_plain(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push(ELLIPSIS);
    out
}

/// Plain text cut to `max` characters (identifiers: no ellipsis).
fn cut_plain(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn plain(text: String) -> Value {
    json!({"type": "plain_text", "text": text})
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn context(text: String) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

/// The characters of all strings in a block except its `type` fields: what
/// Slack's total-length check counts (with a margin).
fn string_chars(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => items.iter().map(string_chars).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "type")
            .map(|(_, v)| string_chars(v))
            .sum(),
        _ => 0,
    }
}

fn is_csv(file: &File) -> bool {
    file.mime.eq_ignore_ascii_case("text/csv") || file.name.to_ascii_lowercase().ends_with(".csv")
}

/// A file name stem from a label: `Output` → `output`.
fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    if out.is_empty() {
        "output".into()
    } else {
        cut_plain(out, 60)
    }
}

/// `stem.txt`, or `stem-2.txt` … when an upload already has that name.
fn unique_filename(uploads: &[Upload], stem: &str) -> String {
    let taken = |name: &str| uploads.iter().any(|u| u.filename == name);
    let first = format!("{stem}.txt");
    if !taken(&first) {
        return first;
    }
    let mut n = 2usize;
    loop {
        let name = format!("{stem}-{n}.txt");
        if !taken(&name) {
            return name;
        }
        n += 1;
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// `9950` → `9,950`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A deterministic xorshift generator: the same strings on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// A string of `len` pieces that stress the renderer: markup,
        /// entities, fences, line breaks, wide and multi-byte characters.
        fn text(&mut self, len: usize) -> String {
            const PIECES: &[&str] = &[
                "a",
                "b",
                "x",
                "1",
                " ",
                " ",
                " ",
                "\n",
                "\n\n",
                "<",
                ">",
                "&",
                "`",
                "```",
                "<@U123>",
                "<#C9>",
                "<!here>",
                "<@bad id>",
                "<http://x|y>",
                "&amp;",
                "é",
                "📈",
                "\u{200B}",
                "*",
                "_",
                "•",
                "\t",
                "\r\n",
            ];
            let mut out = String::new();
            for _ in 0..len {
                out.push_str(PIECES[self.below(PIECES.len())]);
            }
            out
        }
    }

    fn len(s: &str) -> usize {
        s.chars().count()
    }

    fn check_escaped(text: &str) {
        let mut rest = text;
        while let Some(i) = rest.find(['<', '>', '&']) {
            let from = &rest[i..];
            if let Some(after) = from.strip_prefix('&') {
                assert!(
                    ["amp;", "lt;", "gt;"].iter().any(|e| after.starts_with(e)),
                    "bare & in {text:?}"
                );
                rest = after;
            } else {
                let n = kept_markup_len(from).unwrap_or_else(|| panic!("bare < or > in {text:?}"));
                rest = &from[n..];
            }
        }
    }

    fn check_button(b: &Value, ids: &mut HashSet<String>) {
        let text = b["text"]["text"].as_str().unwrap_or_default();
        assert!((1..=MAX_BUTTON_TEXT).contains(&len(text)));
        let id = b["action_id"].as_str().unwrap_or_default();
        assert!((1..=MAX_ACTION_ID).contains(&len(id)));
        assert!(ids.insert(id.to_string()), "action_id {id:?} twice");
        if let Some(v) = b.get("value") {
            assert!((1..=MAX_BUTTON_VALUE).contains(&len(v.as_str().unwrap_or_default())));
        }
    }

    fn check(r: &Rendered) {
        let blocks = r.blocks.as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS, "{} blocks", blocks.len());
        let total: usize = blocks.iter().map(string_chars).sum();
        assert!(total <= MAX_TOTAL_CHARS, "{total} chars");
        assert!(len(&r.text) <= MAX_FALLBACK);
        check_escaped(&r.text);
        let mut ids = HashSet::new();
        for b in blocks {
            match b["type"].as_str().unwrap() {
                "header" => {
                    let t = b["text"]["text"].as_str().unwrap();
                    assert!((1..=MAX_HEADER).contains(&len(t)));
                }
                "section" => {
                    let t = b["text"]["text"].as_str().unwrap();
                    assert!((1..=MAX_TEXT).contains(&len(t)), "section of {}", len(t));
                    check_escaped(t);
                    assert!(t.matches("```").count() % 2 == 0, "open fence in {t:?}");
                    if let Some(acc) = b.get("accessory") {
                        check_button(acc, &mut ids);
                    }
                }
                "context" => {
                    let elements = b["elements"].as_array().unwrap();
                    assert!((1..=10).contains(&elements.len()));
                    for e in elements {
                        let t = e["text"].as_str().unwrap();
                        assert!((1..=MAX_TEXT).contains(&len(t)));
                        check_escaped(t);
                    }
                }
                "actions" => {
                    let elements = b["elements"].as_array().unwrap();
                    assert!((1..=MAX_ACTIONS).contains(&elements.len()));
                    for e in elements {
                        check_button(e, &mut ids);
                    }
                }
                "divider" => {}
                other => panic!("block type {other}"),
            }
        }
    }

    #[test]
    fn every_limit_holds_for_random_long_strings() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let sizes = [
            0, 1, 2, 10, 75, 76, 149, 150, 151, 255, 256, 1_000, 2_999, 3_000, 3_001, 5_000,
            13_000, 40_000,
        ];
        for &size in &sizes {
            for round in 0..3 {
                let button = |rng: &mut Rng| Button {
                    text: rng.text(size),
                    action_id: if round == 0 {
                        "same".into()
                    } else {
                        rng.text(size)
                    },
                    value: rng.text(size),
                };
                let mut blocks = vec![Block::Header {
                    text: rng.text(size),
                }];
                for _ in 0..1 + round * 10 {
                    blocks.push(Block::Text {
                        text: rng.text(size),
                        button: Some(button(&mut rng)),
                    });
                    blocks.push(Block::Context {
                        items: (0..12).map(|_| rng.text(size / 4)).collect(),
                    });
                }
                blocks.push(Block::Code {
                    label: Some(rng.text(size)),
                    text: rng.text(size),
                });
                blocks.push(Block::Result {
                    label: None,
                    text: rng.text(size),
                    value: None,
                });
                blocks.push(Block::Image {
                    file: rng.text(size),
                    alt: rng.text(size),
                });
                blocks.push(Block::Buttons {
                    buttons: (0..30).map(|_| button(&mut rng)).collect(),
                });
                blocks.push(Block::Text {
                    text: rng.text(size),
                    button: None,
                });
                blocks.push(Block::Divider);
                blocks.push(Block::Context {
                    items: vec![rng.text(size)],
                });
                let mut reply = Reply::in_channel(rng.text(size), blocks);
                if round == 2 {
                    reply.visibility = Visibility::Ephemeral;
                }
                let r = render(&reply);
                check(&r);
                assert_eq!(r.ephemeral, round == 2);
                // Every upload is text the reply held, whole.
                for u in &r.uploads {
                    assert_eq!(u.mime, "text/plain");
                    assert!(u.filename.ends_with(".txt"));
                }
            }
        }
    }

    #[test]
    fn split_text_keeps_everything_but_the_cut_separators() {
        let mut rng = Rng(42);
        for size in [10, 500, 3_000, 9_000, 30_000] {
            let raw = rng.text(size).replace('`', "'");
            let escaped = escape_text(&raw);
            let parts = split_text(&escaped, 100);
            let kept: usize = parts.iter().map(|p| len(p)).sum();
            assert!(parts.iter().all(|p| len(p) <= 100));
            assert!(kept <= escaped.chars());
            // Only a separator per cut is dropped (and blank parts).
            let joined: String = parts.concat();
            let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            assert_eq!(squeeze(&joined), squeeze(&escaped.text));
        }
    }

    #[test]
    fn code_escaping_breaks_fences() {
        assert_eq!(escape_code("a```b").text, "a``\u{200B}`b");
        assert_eq!(escape_code("``````").text, "``\u{200B}``\u{200B}``");
        assert_eq!(
            escape_code("<@U1> & <!here>").text,
            "&lt;@U1&gt; &amp; &lt;!here&gt;"
        );
    }

    #[test]
    fn kept_markup_is_exactly_mentions_channels_and_specials() {
        assert_eq!(kept_markup_len("<@U123> hi"), Some(7));
        assert_eq!(kept_markup_len("<#C1>"), Some(5));
        assert_eq!(kept_markup_len("<!here>"), Some(7));
        assert_eq!(kept_markup_len("<!subteam^S1|@desk>"), Some(19));
        for no in [
            "<@>",
            "<@U1|bob>",
            "<@U 1>",
            "<http://x>",
            "<b>",
            "<!1>",
            "<@U1",
            "<!a&b>",
        ] {
            assert_eq!(kept_markup_len(no), None, "{no}");
        }
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(9_950), "9,950");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn one_giant_line_is_cut_inside_the_line() {
        let reply = Reply::in_channel(
            "x",
            vec![Block::Code {
                label: None,
                text: "<".repeat(10_000),
            }],
        );
        let r = render(&reply);
        check(&r);
        let t = r.blocks[0]["text"]["text"].as_str().unwrap_or_default();
        assert!(t.starts_with("```\n&lt;&lt;"));
        assert!(t.contains("&lt;…\n```\n… "));
        assert!(t.ends_with("more characters (full output attached)"));
        assert_eq!(r.uploads[0].bytes.len(), 10_000);
    }
}
