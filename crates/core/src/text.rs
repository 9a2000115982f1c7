//! Normalising command text as Slack sends it, before the grammar
//! ([`crate::command`]) reads it.
//!
//! Slack delivers the text of a slash command escaped and decorated: `&`, `<`
//! and `>` typed by the user arrive as `&amp;`, `&lt;` and `&gt;`; links,
//! mentions and channel references arrive as `<...>` markup; phones and Macs
//! turn quotes into typographic quotes; and code is often wrapped in ```
//! fences or single backticks. [`normalize`] turns the text back into what
//! the user saw, and [`strip_code`] takes the code out of its fence; the
//! grammar applies the latter only where it expects code (for
//! `/savefunc name | description | ```code```` the fence is inside the third
//! part, so the whole text cannot simply be unfenced).
//!
//! Text typed in the web console or with `tradebox chat` goes through the
//! same functions. It is not escaped, so a literal `<` in code
//! (`result = a <b`) must survive: only `<...>` spans that have the exact
//! shape of Slack markup (a known URL scheme, `@ID`, `#ID`, `!word`) are
//! rewritten; anything else is kept as typed.
//!
//! Neither function panics, on any input (property-tested).

/// Opening and closing marker of a code fence.
const FENCE: &str = "```";

/// Language tags accepted (case-insensitively) on the opening line of a
/// fence, as in ```` ```python ````. Only these are stripped, so a first line
/// holding a bare name (```` ```x ````, i.e. code) is kept.
const LANGUAGE_TAGS: &[&str] = &[
    "python", "python3", "py", "py3", "ipython", "ipython3", "pycon",
];

/// URL schemes that Slack turns into `<scheme:...|label>` links.
const LINK_SCHEMES: &[&str] = &["http", "https", "mailto", "ftp", "tel", "slack"];

/// Turn command text as Slack sends it into the text the user saw.
///
/// - Slack markup: links `<http://x|label>` become `label`, and `<https://x>`
///   becomes `https://x` (also `mailto:`, `ftp:`, `tel:`, `slack:`); user
///   mentions `<@U123>` and `<@U123|name>` become `<@U123>` (the id is kept);
///   channel references `<#C123|general>` become `#general` (`<#C123>`
///   without a name is kept); special mentions such as `<!here>` are kept
///   verbatim. A `<` that does not start such markup is kept as typed.
/// - Entities: `&lt;`, `&gt;` and `&amp;` are unescaped in one left-to-right
///   pass (so `&amp;lt;` becomes `&lt;`, as if `&amp;` were unescaped last);
///   no other entity is touched (`&quot;` stays).
/// - Typographic quotes `‘ ’ ‚ ‛` and the prime-like `´ ′ ‵` become `'`;
///   `“ ” „ ‟` and `″` become `"`. Backticks are left alone: they mark code.
/// - Non-breaking spaces (U+00A0, U+2007, U+202F) become plain spaces.
///
/// Fences are *not* removed here (see [`strip_code`]), and the text is not
/// trimmed. For text without `&` and `<` the function is idempotent.
pub fn normalize(raw: &str) -> String {
    let mut resolved = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(lt) = rest.find('<') {
        unescape_into(&mut resolved, &rest[..lt]);
        let from_lt = &rest[lt..];
        match resolve_markup(from_lt) {
            Some((consumed, replacement)) => {
                match replacement {
                    Replacement::Verbatim(text) => resolved.push_str(text),
                    Replacement::Escaped(text) => unescape_into(&mut resolved, text),
                    Replacement::Mention(id) => {
                        resolved.push_str("<@");
                        resolved.push_str(id);
                        resolved.push('>');
                    }
                    Replacement::Channel(name) => {
                        resolved.push('#');
                        unescape_into(&mut resolved, name);
                    }
                }
                rest = &from_lt[consumed..];
            }
            None => {
                resolved.push('<');
                rest = &from_lt[1..];
            }
        }
    }
    unescape_into(&mut resolved, rest);
    resolved.chars().map(plain_char).collect()
}

/// Take the code out of `text`: the content of its ``` fence(s), else the
/// inside of one pair of surrounding single backticks, else the text itself.
///
/// - When the text holds at least two ``` markers, only the fenced content is
///   kept and the text around the fences is dropped. Markers pair up in
///   order; several fenced blocks are joined with a newline. With an odd
///   number of markers (three or more), everything between the first and the
///   last marker is one block (code that itself contains ```).
/// - A language tag on the opening line (```` ```python ````, `py`,
///   `python3`, ... see `LANGUAGE_TAGS`) is removed when a newline follows it.
/// - One pair of single backticks around the whole text (`` `code` ``, with
///   no backtick inside) is removed.
/// - The result is dedented (the indentation common to all non-blank lines
///   is removed, so an indented paste stays valid Python) and trimmed.
///
/// A lone ``` marker (an unclosed fence) is left in place: guessing would
/// hide the mistake, and Python reports it clearly.
pub fn strip_code(text: &str) -> String {
    let trimmed = text.trim();
    let markers: Vec<usize> = trimmed.match_indices(FENCE).map(|(i, _)| i).collect();
    if markers.len() >= 2 {
        let mut blocks: Vec<String> = Vec::new();
        let mut push_block = |open: usize, close: usize| {
            let inner = trimmed.get(open + FENCE.len()..close).unwrap_or_default();
            let code = dedent_trim(strip_language_tag(inner));
            if !code.is_empty() {
                blocks.push(code);
            }
        };
        if markers.len().is_multiple_of(2) {
            for pair in markers.chunks_exact(2) {
                push_block(pair[0], pair[1]);
            }
        } else if let (Some(&first), Some(&last)) = (markers.first(), markers.last()) {
            push_block(first, last);
        }
        return blocks.join("\n");
    }
    if markers.is_empty() && trimmed.len() >= 2 {
        if let Some(inner) = trimmed.strip_prefix('`').and_then(|t| t.strip_suffix('`')) {
            if !inner.contains('`') {
                return dedent_trim(inner);
            }
        }
    }
    dedent_trim(text)
}

/// A single-line excerpt of user text for an error message: control
/// characters (newlines, tabs, ...) become spaces and text longer than
/// `max_chars` characters is cut with `…`.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// What one piece of Slack markup turns into.
enum Replacement<'a> {
    /// Kept exactly as received (`<!here>`, `<#C123>`).
    Verbatim(&'a str),
    /// Text still escaped by Slack (a link label or URL).
    Escaped(&'a str),
    /// A user mention, reduced to `<@ID>`.
    Mention(&'a str),
    /// A channel reference with its name, shown as `#name`.
    Channel(&'a str),
}

/// If `text` (which starts with `<`) starts with Slack markup, return how
/// many bytes it spans and what replaces it.
///
/// The markup body ends at the first `>`; a `<` or a line break before it
/// means this `<` is not markup. Scanning stops at the next `<`, so the
/// whole of [`normalize`] stays linear.
fn resolve_markup(text: &str) -> Option<(usize, Replacement<'_>)> {
    let after = text.get(1..)?;
    let end = after.find(['>', '<', '\n', '\r'])?;
    if !after[end..].starts_with('>') || end == 0 {
        return None;
    }
    let body = &after[..end];
    let consumed = end + 2;
    let (target, label) = match body.split_once('|') {
        Some((target, label)) => (target, Some(label)),
        None => (body, None),
    };
    if target.is_empty() || target.chars().any(char::is_whitespace) {
        return None;
    }
    let is_id = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if let Some(id) = target.strip_prefix('@') {
        return is_id(id).then_some((consumed, Replacement::Mention(id)));
    }
    if let Some(id) = target.strip_prefix('#') {
        if !is_id(id) {
            return None;
        }
        return Some(match label {
            Some(name) if !name.is_empty() => (consumed, Replacement::Channel(name)),
            _ => (consumed, Replacement::Verbatim(&text[..consumed])),
        });
    }
    if let Some(special) = target.strip_prefix('!') {
        let starts_with_letter = special
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic());
        return starts_with_letter.then_some((consumed, Replacement::Verbatim(&text[..consumed])));
    }
    let (scheme, rest) = target.split_once(':')?;
    let known = LINK_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme));
    if !known || rest.is_empty() {
        return None;
    }
    Some(match label {
        Some(label) if !label.is_empty() => (consumed, Replacement::Escaped(label)),
        _ => (consumed, Replacement::Escaped(target)),
    })
}

/// Append `text` to `out`, unescaping Slack's three entities in one
/// left-to-right pass.
fn unescape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let from_amp = &rest[amp..];
        let (plain, len) = if from_amp.starts_with("&lt;") {
            ('<', 4)
        } else if from_amp.starts_with("&gt;") {
            ('>', 4)
        } else if from_amp.starts_with("&amp;") {
            ('&', 5)
        } else {
            ('&', 1)
        };
        out.push(plain);
        rest = &from_amp[len..];
    }
    out.push_str(rest);
}

/// Map typographic quotes and non-breaking spaces to their plain forms.
fn plain_char(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{00B4}' | '\u{2032}'
        | '\u{2035}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' => '"',
        '\u{00A0}' | '\u{2007}' | '\u{202F}' => ' ',
        other => other,
    }
}

/// Drop a known language tag (and its newline) from the start of a fence's
/// content.
fn strip_language_tag(inner: &str) -> &str {
    match inner.split_once('\n') {
        Some((first, rest)) => {
            let tag = first.trim();
            if LANGUAGE_TAGS.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                rest
            } else {
                inner
            }
        }
        None => inner,
    }
}

/// Remove the leading whitespace (spaces and tabs) common to all non-blank
/// lines, then trim the whole.
fn dedent_trim(text: &str) -> String {
    let indent_of =
        |line: &str| -> usize { line.len() - line.trim_start_matches([' ', '\t']).len() };
    let mut common: Option<&str> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let indent = &line[..indent_of(line)];
        common = Some(match common {
            None => indent,
            Some(prev) => {
                let shared = prev
                    .bytes()
                    .zip(indent.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                &prev[..shared]
            }
        });
    }
    let prefix = common.unwrap_or_default();
    if prefix.is_empty() {
        return text.trim().to_string();
    }
    let dedented: Vec<&str> = text
        .split('\n')
        .map(|line| line.strip_prefix(prefix).unwrap_or(line))
        .collect();
    dedented.join("\n").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unescapes_the_three_slack_entities() {
        assert_eq!(
            normalize("result = 1 &lt; 2 &amp;&amp; True"),
            "result = 1 < 2 && True"
        );
        assert_eq!(normalize("a &gt; b"), "a > b");
        assert_eq!(normalize("&amp;lt;"), "&lt;");
        assert_eq!(normalize("&amp;amp;"), "&amp;");
        assert_eq!(
            normalize("&quot;x&quot; &nbsp; &#60;"),
            "&quot;x&quot; &nbsp; &#60;"
        );
        assert_eq!(normalize("a & b &"), "a & b &");
        assert_eq!(normalize("&lt&gt"), "&lt&gt");
    }

    #[test]
    fn links_become_the_text_slack_showed() {
        assert_eq!(normalize("<http://example.com|example.com>"), "example.com");
        assert_eq!(
            normalize("see <https://x.io/a?b=1&amp;c=2>"),
            "see https://x.io/a?b=1&c=2"
        );
        assert_eq!(normalize("<mailto:a@b.io|a@b.io>"), "a@b.io");
        assert_eq!(normalize("<mailto:a@b.io>"), "mailto:a@b.io");
        assert_eq!(normalize("<https://x.io|click here>"), "click here");
        assert_eq!(normalize("<HTTPS://x.io|>"), "HTTPS://x.io");
        assert_eq!(normalize("<http://x.io|a &amp; b>"), "a & b");
    }

    #[test]
    fn links_inside_code() {
        assert_eq!(
            normalize("url = '<http://example.com|example.com>'"),
            "url = 'example.com'"
        );
    }

    #[test]
    fn mentions_keep_the_user_id() {
        assert_eq!(normalize("<@U123>"), "<@U123>");
        assert_eq!(normalize("hi <@U123|alice>!"), "hi <@U123>!");
        assert_eq!(normalize("<@W9ABC|bob> <@U1>"), "<@W9ABC> <@U1>");
    }

    #[test]
    fn channels_show_their_name() {
        assert_eq!(normalize("<#C123|general>"), "#general");
        assert_eq!(normalize("in <#C123>"), "in <#C123>");
    }

    #[test]
    fn special_mentions_are_kept() {
        assert_eq!(normalize("<!here>"), "<!here>");
        assert_eq!(normalize("<!channel> ping"), "<!channel> ping");
        assert_eq!(normalize("<!subteam^S1|@desk>"), "<!subteam^S1|@desk>");
    }

    #[test]
    fn plain_angle_brackets_from_the_console_survive() {
        for code in [
            "result = a <b",
            "x = a<b and c>d",
            "x = a < 2 and 3 > 1",
            "<>",
            "<",
            ">",
            "<<http://x.io>",
            "d[a<lo:hi>b]",
            "<@>",
            "<#>",
            "<!>",
            "<!1>",
            "<http:>",
            "<@U1 2>",
            "<http://x\n|y>",
            "<file:///etc/passwd>",
        ] {
            let expected = if code == "<<http://x.io>" {
                "<http://x.io"
            } else {
                code
            };
            assert_eq!(normalize(code), expected, "input {code:?}");
        }
    }

    #[test]
    fn smart_quotes_become_plain() {
        assert_eq!(normalize("df[‘amount’]"), "df['amount']");
        assert_eq!(normalize("df[“amount”]"), "df[\"amount\"]");
        assert_eq!(normalize("‚x‛ „y‟"), "'x' \"y\"");
        assert_eq!(normalize("it´s 5′ 6″"), "it's 5' 6\"");
    }

    #[test]
    fn backticks_are_not_quotes() {
        assert_eq!(normalize("`x = 1`"), "`x = 1`");
        assert_eq!(normalize("```\nx\n```"), "```\nx\n```");
    }

    #[test]
    fn non_breaking_spaces_become_spaces() {
        assert_eq!(normalize("a\u{a0}=\u{202f}1\u{2007}"), "a = 1 ");
    }

    #[test]
    fn unicode_and_emoji_are_kept() {
        assert_eq!(
            normalize("Volumen pro Börse 📈 — 成交量"),
            "Volumen pro Börse 📈 — 成交量"
        );
    }

    #[test]
    fn strip_code_fenced_with_language_tag() {
        assert_eq!(strip_code("```python\nresult = 1\n```"), "result = 1");
        assert_eq!(strip_code("```Python3  \nx = 1\ny = 2```"), "x = 1\ny = 2");
        assert_eq!(strip_code("```py\nx = 1```"), "x = 1");
        assert_eq!(strip_code("```result = 1```"), "result = 1");
    }

    #[test]
    fn strip_code_keeps_a_first_line_that_is_code() {
        assert_eq!(strip_code("```x\nresult = x```"), "x\nresult = x");
        assert_eq!(strip_code("```python```"), "python");
    }

    #[test]
    fn strip_code_drops_text_around_the_fence() {
        assert_eq!(
            strip_code("here you go: ```\nresult = 1\n``` thanks"),
            "result = 1"
        );
    }

    #[test]
    fn strip_code_joins_several_blocks() {
        assert_eq!(
            strip_code("```df = load_trades()``` then ```result = len(df)```"),
            "df = load_trades()\nresult = len(df)"
        );
    }

    #[test]
    fn strip_code_with_a_fence_inside_the_code() {
        assert_eq!(strip_code("```s = '```'```"), "s = '```'");
    }

    #[test]
    fn strip_code_leaves_an_unclosed_fence() {
        assert_eq!(strip_code("```python\nx = 1"), "```python\nx = 1");
    }

    #[test]
    fn strip_code_single_backticks() {
        assert_eq!(strip_code("  `result = 1`  "), "result = 1");
        assert_eq!(strip_code("`a` + `b`"), "`a` + `b`");
        assert_eq!(strip_code("``"), "");
        assert_eq!(strip_code("`"), "`");
    }

    #[test]
    fn strip_code_plain_text_is_trimmed() {
        assert_eq!(strip_code("  result = 1 \n"), "result = 1");
        assert_eq!(strip_code(""), "");
        assert_eq!(strip_code("   "), "");
    }

    #[test]
    fn strip_code_dedents_an_indented_paste() {
        assert_eq!(
            strip_code("```\n    for x in y:\n        print(x)\n\n    result = 1\n```"),
            "for x in y:\n    print(x)\n\nresult = 1"
        );
        assert_eq!(strip_code("\n  a = 1\n  b = 2"), "a = 1\nb = 2");
        assert_eq!(strip_code("\tif x:\n\t\ty = 1"), "if x:\n\ty = 1");
    }

    #[test]
    fn excerpt_is_one_line_and_short() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("é😀x", 2), "é😀…");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn normalize_and_strip_code_never_panic(s in any::<String>()) {
            let n = normalize(&s);
            let _ = strip_code(&n);
            let _ = strip_code(&s);
            let _ = excerpt(&s, 5);
        }

        #[test]
        fn normalize_never_panics_on_markup_soup(
            s in r"([<>|&@#!:`' \n]|lt;|gt;|amp;|http|mailto|U1|‘|“|\u{a0}|a|é|😀)*"
        ) {
            let n = normalize(&s);
            let _ = strip_code(&n);
        }

        #[test]
        fn normalize_is_idempotent_without_markup(s in r"[^&<]*") {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once);
        }

        #[test]
        fn normalize_is_idempotent_with_quotes(
            s in r"([a-z =\[\]()'\x22`\n]|‘|’|‚|‛|“|”|„|‟|´|′|″|\u{a0}|\u{202f})*"
        ) {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once.clone());
            let leftover = once.contains(['‘', '’', '“', '”', '\u{a0}']);
            prop_assert!(!leftover, "typographic character left in {:?}", once);
        }
    }
}
