//! The diagnostics of a configuration that cannot be used: [`ConfigError`]
//! and the messages that say what to fix where. A TOML error of the file is
//! turned into one line naming the file, the line and column (in
//! characters), the table and the key, with what was expected and what was
//! found, and a "did you mean" for a misspelt key or table; a Slack token
//! put in the file is refused with the advice to use the environment,
//! without echoing the value.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::schema::{is_key, keys_of};
use super::{sections, Config, KEYS};

/// Where in a file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

fn position_suffix(position: &Option<Position>) -> String {
    position.map(|p| format!(", {p}")).unwrap_or_default()
}

/// A configuration that cannot be used, with what to fix where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A syntax error, an unknown key, a wrong type or a bad value in a file.
    #[error("{origin}{}: {message}", position_suffix(position))]
    File {
        origin: String,
        position: Option<Position>,
        /// `section.key` when the error is about one key.
        key: Option<String>,
        message: String,
    },

    /// A bad value in an environment variable.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },

    /// A bad value in a configuration built in code.
    #[error("{message}")]
    Invalid { key: String, message: String },
}

// ---------------------------------------------------------------------------
// Locating errors in the file.

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn position_of(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start
        && inner.end <= outer.end
        && (inner.start < outer.end || outer.is_empty())
}

/// The span of the key `section.key` in the document.
pub(super) fn key_span(doc: &DeTable<'_>, section: &str, key: &str) -> Option<Range<usize>> {
    doc.iter()
        .find(|(k, _)| k.get_ref() == section)
        .and_then(|(_, v)| v.get_ref().as_table())
        .and_then(|t| t.iter().find(|(k, _)| k.get_ref() == key))
        .map(|(k, _)| k.span())
}

/// What an error span of the deserializer points at.
enum Spot<'a> {
    /// A top-level key: a table name.
    Section(&'a str),
    /// The value of a top-level key that should be a table.
    SectionValue(&'a str, &'a Spanned<DeValue<'a>>),
    /// A key inside a table.
    Key(&'a str, &'a str),
    /// A key's value (or something inside it).
    Value(&'a str, &'a str, &'a Spanned<DeValue<'a>>),
}

fn locate<'a>(doc: &'a DeTable<'a>, span: &Range<usize>) -> Option<Spot<'a>> {
    for (k, v) in doc.iter() {
        let section: &str = k.get_ref();
        if let Some(table) = v.get_ref().as_table() {
            for (k2, v2) in table.iter() {
                if contains(&k2.span(), span) {
                    return Some(Spot::Key(section, k2.get_ref()));
                }
                if contains(&v2.span(), span) {
                    return Some(Spot::Value(section, k2.get_ref(), v2));
                }
            }
        }
        if contains(&k.span(), span) {
            return Some(Spot::Section(section));
        }
        if v.get_ref().as_table().is_none() && contains(&v.span(), span) {
            return Some(Spot::SectionValue(section, v));
        }
    }
    None
}

/// "1 (an integer)": the value's source text, cut short, and its type.
fn found(text: &str, value: &Spanned<DeValue<'_>>) -> String {
    let ty = value.get_ref().type_str();
    let article = if matches!(ty, "integer" | "array") {
        "an"
    } else {
        "a"
    };
    let source = text.get(value.span()).unwrap_or("").trim();
    let mut shown: String = source.chars().take(40).collect();
    if source.chars().count() > 40 {
        shown.push('…');
    }
    if matches!(value.get_ref(), DeValue::Table(_)) || shown.contains('\n') {
        format!("{article} {ty}")
    } else {
        format!("{shown} ({article} {ty})")
    }
}

pub(super) fn describe_toml_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span();
    let position = span.as_ref().map(|s| position_of(text, s.start));
    let fallback = || {
        let mut message = e.message().to_owned();
        // The parser does not say which key is duplicated; the span does.
        let named = span
            .as_ref()
            .and_then(|s| text.get(s.clone()))
            .map(str::trim);
        if let Some(name) = named.filter(|n| message == "duplicate key" && !n.is_empty()) {
            message = format!("duplicate key '{name}'");
        }
        ConfigError::File {
            origin: origin.to_owned(),
            position,
            key: None,
            message,
        }
    };
    let (Some(span), Ok(doc)) = (span.clone(), DeTable::parse(text)) else {
        return fallback();
    };
    let config = Config::default();
    let file = |key: Option<String>, message: String| ConfigError::File {
        origin: origin.to_owned(),
        position,
        key,
        message,
    };
    match locate(doc.get_ref(), &span) {
        Some(Spot::Section(section)) if !sections().contains(&section) => {
            let message = match KEYS.iter().find(|(_, k)| *k == section) {
                Some((home, _)) => {
                    format!("'{section}' is a key of [{home}]; put it under a [{home}] line")
                }
                None => format!(
                    "unknown table [{section}] ({}expected one of {})",
                    did_you_mean(section, sections().into_iter()),
                    sections()
                        .iter()
                        .map(|s| format!("[{s}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            file(None, message)
        }
        Some(Spot::SectionValue(section, value)) if sections().contains(&section) => file(
            None,
            format!(
                "'{section}' must be a table (a [{section}] line followed by its keys), not {}",
                found(text, value)
            ),
        ),
        Some(Spot::Key(section, key)) if sections().contains(&section) && !is_key(section, key) => {
            let mut message = format!(
                "unknown key '{key}' in [{section}] ({}expected one of {})",
                did_you_mean(key, keys_of(section)),
                keys_of(section).collect::<Vec<_>>().join(", ")
            );
            if section == "slack" && (key.contains("token") || key.contains("secret")) {
                message.push_str(
                    "; Slack tokens and secrets are never read from the file: set them in the \
                     environment (see docs/configuration.md)",
                );
            }
            file(None, message)
        }
        Some(Spot::Value(section, key, value)) => match config.expected(section, key) {
            Some(expected) => {
                let inner = value.span() != span;
                let message = if inner {
                    let element = match value.get_ref() {
                        DeValue::Array(items) => items.iter().find(|i| contains(&i.span(), &span)),
                        _ => None,
                    };
                    match element {
                        Some(element) => format!(
                            "'{key}' in [{section}] must be {expected}, but it contains {}",
                            found(text, element)
                        ),
                        None => format!(
                            "'{key}' in [{section}] must be {expected}, not {}",
                            found(text, value)
                        ),
                    }
                } else {
                    format!(
                        "'{key}' in [{section}] must be {expected}, not {}",
                        found(text, value)
                    )
                };
                file(Some(format!("{section}.{key}")), message)
            }
            None => fallback(),
        },
        _ => fallback(),
    }
}

/// "did you mean 'x'? " when one candidate is within two edits.
fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean '{c}'? "))
        .unwrap_or_default()
}

/// Edit distance in characters (Levenshtein).
fn edit_distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::file_error;

    #[test]
    fn unknown_key_names_line_column_table_and_key() {
        let text = "# tradebox\n\n[data]\n\n[limits]\nmemory_mb = 2048\ntimout_seconds = 10\n";
        let (shown, position, key) = file_error(text);
        assert_eq!(position, Some(Position { line: 7, column: 1 }));
        assert_eq!(key, None);
        assert_eq!(
            shown,
            "tradebox.toml, line 7, column 1: unknown key 'timout_seconds' in [limits] \
             (did you mean 'timeout_seconds'? expected one of timeout_seconds, memory_mb, \
             output_bytes, scratch_mb, max_code_bytes)"
        );

        // Indented, in another table, far from any known key.
        let (shown, position, _) = file_error("[pool]\n  queue = 3\n  colour = \"red\"\n");
        assert_eq!(position, Some(Position { line: 3, column: 3 }));
        assert!(shown.contains("unknown key 'colour' in [pool] (expected one of workers"));
        assert!(!shown.contains("did you mean"), "{shown}");

        // A dotted key.
        let (shown, position, _) = file_error("audit.retention = 3\n");
        assert_eq!(position, Some(Position { line: 1, column: 7 }));
        assert!(
            shown.contains("unknown key 'retention' in [audit]"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_tables_and_keys_outside_tables() {
        let (shown, position, _) = file_error("[limit]\ntimeout_seconds = 3\n");
        assert_eq!(position, Some(Position { line: 1, column: 2 }));
        assert!(
            shown.contains(
                "unknown table [limit] (did you mean 'limits'? expected one of [data], [store], [limits]"
            ),
            "{shown}"
        );
        let (shown, position, _) = file_error("\ntimeout_seconds = 3\n");
        assert_eq!(position, Some(Position { line: 2, column: 1 }));
        assert!(
            shown.ends_with("'timeout_seconds' is a key of [limits]; put it under a [limits] line"),
            "{shown}"
        );
        let (shown, _, _) = file_error("limits = 3\n");
        assert!(
            shown.contains("'limits' must be a table (a [limits] line followed by its keys), not 3 (an integer)"),
            "{shown}"
        );
    }

    #[test]
    fn slack_tokens_in_the_file_are_refused_with_advice() {
        let (shown, position, _) = file_error("[slack]\nbot_token = \"xoxb-1\"\n");
        assert_eq!(position, Some(Position { line: 2, column: 1 }));
        assert!(
            shown.contains("unknown key 'bot_token' in [slack]"),
            "{shown}"
        );
        assert!(shown.contains("never read from the file"), "{shown}");
        assert!(!shown.contains("xoxb"), "the value is not echoed: {shown}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let (shown, position, key) = file_error("[limits]\n\ntimeout_seconds = \"30\"\n");
        assert_eq!(
            position,
            Some(Position {
                line: 3,
                column: 19
            })
        );
        assert_eq!(key.as_deref(), Some("limits.timeout_seconds"));
        assert_eq!(
            shown,
            "tradebox.toml, line 3, column 19: 'timeout_seconds' in [limits] must be a whole \
             number (0 or more), not \"30\" (a string)"
        );

        let cases = [
            ("[limits]\nmemory_mb = -3\n", 2, "'memory_mb' in [limits] must be a whole number (0 or more), not -3 (an integer)"),
            ("[limits]\nmemory_mb = 1.5\n", 2, "not 1.5 (a float)"),
            ("[limits]\nmemory_mb = 99999999999999999999\n", 2, "not 99999999999999999999 (an integer)"),
            ("[validator]\nenabled = \"yes\"\n", 2, "'enabled' in [validator] must be true or false, not \"yes\" (a string)"),
            ("[permissions]\nadmins = \"U1\"\n", 2, "'admins' in [permissions] must be a list of strings such as [\"a\", \"b\"], not \"U1\" (a string)"),
            ("[permissions]\nadmins = [\"U1\",\n  2]\n", 3, "'admins' in [permissions] must be a list of strings such as [\"a\", \"b\"], but it contains 2 (an integer)"),
            ("[console]\nuser = 7\n", 2, "'user' in [console] must be a string in quotes, not 7 (an integer)"),
            ("[data]\nas_of = 2025-11-29\n", 2, "'as_of' in [data] must be a string in quotes, not 2025-11-29 (a datetime)"),
            ("[console]\nlisten = { host = \"x\" }\n", 2, "'listen' in [console] must be a string in quotes, not a table"),
        ];
        for (text, line, expected) in cases {
            let (shown, position, key) = file_error(text);
            assert_eq!(position.map(|p| p.line), Some(line), "{text}: {shown}");
            assert!(key.is_some(), "{text}: {shown}");
            assert!(shown.starts_with("tradebox.toml, line "), "{shown}");
            assert!(
                shown.contains(expected),
                "{text}:\n{shown}\nexpected: {expected}"
            );
        }
    }

    #[test]
    fn syntax_errors_keep_toml_message_and_position() {
        let (shown, position, _) = file_error("[limits]\ntimeout_seconds = \n");
        assert_eq!(position.map(|p| p.line), Some(2), "{shown}");
        assert!(
            shown.starts_with("tradebox.toml, line 2, column "),
            "{shown}"
        );
        let (shown, position, _) =
            file_error("[limits]\ntimeout_seconds = 3\ntimeout_seconds = 4\n");
        assert_eq!(position, Some(Position { line: 3, column: 1 }));
        assert!(
            shown.ends_with("duplicate key 'timeout_seconds'"),
            "{shown}"
        );
    }

    #[test]
    fn columns_count_characters() {
        let text = "# é€\n[console]\nuser = \"é\" \nlisten = 5\n";
        let (_, position, _) = file_error(text);
        assert_eq!(
            position,
            Some(Position {
                line: 4,
                column: 10
            })
        );
        assert_eq!(
            position_of("aé€b", "aé€".len()),
            Position { line: 1, column: 4 }
        );
        assert_eq!(position_of("ab", 99), Position { line: 1, column: 3 });
    }

    #[test]
    fn did_you_mean_is_close_only() {
        assert_eq!(edit_distance("timout_seconds", "timeout_seconds"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            did_you_mean("exections", keys_of("rate_limit")),
            "did you mean 'executions'? "
        );
        assert_eq!(did_you_mean("zzz", keys_of("rate_limit")), "");
    }
}
