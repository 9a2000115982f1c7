//! The `key=value` arguments of `/runfunc name key=value ...`, parsed into the
//! JSON object that reaches the saved code as `params`.
//!
//! Grammar (tokens are separated by whitespace):
//!
//! - `key=value`; the key is an identifier: ASCII letters, digits and
//!   underscores, not starting with a digit; each key at most once.
//! - A value starting with `'` or `"` is quoted: it runs to the matching
//!   quote, may contain spaces and `=`, and understands the escapes `\"`,
//!   `\'` and `\\` (any other backslash is kept as typed). A quoted value is
//!   always a string, and the closing quote must end the token.
//! - An unquoted value runs to the next whitespace and is typed: an integer
//!   (`i64`, or `u64` beyond it) or a finite float becomes a number,
//!   `true`/`false` a boolean and `null`/`none` null (all case-insensitive);
//!   anything else is a string (`exchange=mexc`, `since=2025-11-01`, `nan`).
//!   An empty value (`key=`) is an error: write `key=""` for an empty string.
//!
//! Errors name the offending token and show the right form.

use serde_json::{Map, Number, Value};

/// How arguments are written, appended to every error.
const HINT: &str = "write arguments like days=7 exchange=mexc name=\"two words\"";

/// Longest excerpt of a token quoted in an error message.
const MAX_SHOWN: usize = 80;

/// Why the arguments of `/runfunc` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A token without `=`.
    #[error("\"{}\" is not key=value; {HINT}", shown(.token))]
    NotKeyValue { token: String },
    /// A token starting with `=`.
    #[error("\"{}\" has no name before the =; {HINT}", shown(.token))]
    MissingKey { token: String },
    /// A key that is not an identifier.
    #[error(
        "\"{}\" is not a valid argument name in \"{}\": use letters, digits and underscores, \
         not starting with a digit; {HINT}",
        shown(.key),
        shown(.token)
    )]
    InvalidKey { key: String, token: String },
    /// `key=` with nothing after the `=`.
    #[error(
        "\"{}=\" has no value; give one, as in days=7, or write {}=\"\" for an empty string",
        shown(.key),
        shown(.key)
    )]
    MissingValue { key: String },
    /// The same key twice.
    #[error("Argument \"{}\" is given twice; give each argument once", shown(.key))]
    DuplicateKey { key: String },
    /// A quoted value without its closing quote.
    #[error(
        "The value of \"{}\" opens a quote ({quote}) that is never closed; \
         close it, as in name=\"two words\"",
        shown(.key)
    )]
    UnterminatedQuote { key: String, quote: char },
    /// Text right after a closing quote, as in `name="a"b`.
    #[error(
        "\"{}\" has text after its closing quote; put the whole value inside the quotes, \
         as in name=\"two words\"",
        shown(.token)
    )]
    TextAfterQuote { key: String, token: String },
}

/// Parse `key=value ...` into a JSON object.
pub fn parse_params(text: &str) -> Result<Map<String, Value>, ParamError> {
    let mut params = Map::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(params);
        }
        let token = raw_token(rest);
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace());
        let Some(key_end) = key_end.filter(|&i| rest[i..].starts_with('=')) else {
            return Err(ParamError::NotKeyValue {
                token: token.to_string(),
            });
        };
        let key = &rest[..key_end];
        if key.is_empty() {
            return Err(ParamError::MissingKey {
                token: token.to_string(),
            });
        }
        if !is_identifier(key) {
            return Err(ParamError::InvalidKey {
                key: key.to_string(),
                token: token.to_string(),
            });
        }
        let after_eq = &rest[key_end + 1..];
        let (value, consumed) = match after_eq.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let (text, consumed) =
                    read_quoted(after_eq, quote).ok_or_else(|| ParamError::UnterminatedQuote {
                        key: key.to_string(),
                        quote,
                    })?;
                if after_eq[consumed..]
                    .chars()
                    .next()
                    .is_some_and(|c| !c.is_whitespace())
                {
                    return Err(ParamError::TextAfterQuote {
                        key: key.to_string(),
                        token: token.to_string(),
                    });
                }
                (Value::String(text), consumed)
            }
            _ => {
                let end = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
                let bare = &after_eq[..end];
                if bare.is_empty() {
                    return Err(ParamError::MissingValue {
                        key: key.to_string(),
                    });
                }
                (typed(bare), end)
            }
        };
        if params.contains_key(key) {
            return Err(ParamError::DuplicateKey {
                key: key.to_string(),
            });
        }
        params.insert(key.to_string(), value);
        rest = &after_eq[consumed..];
    }
}

/// Whether `key` is an identifier: ASCII letters, digits and underscores,
/// not starting with a digit.
pub fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The type of an unquoted value.
fn typed(bare: &str) -> Value {
    match bare.to_ascii_lowercase().as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" | "none" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = bare.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = bare.parse::<u64>() {
        return Value::from(u);
    }
    // Rust also reads "inf" and "NaN"; JSON has no such numbers, and
    // overflowing floats ("1e999") are kept as typed too.
    if let Some(n) = bare.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(bare.to_string())
}

/// Read a quoted value starting at `text[0] == quote`: the unescaped content
/// and the bytes consumed (both quotes included), or `None` when the quote
/// is not closed.
fn read_quoted(text: &str, quote: char) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((_, c)) = chars.next() {
        if c == quote {
            // `chars` has consumed the closing quote; its end is the next index.
            let end = chars.next().map_or(text.len(), |(i, _)| i);
            return Some((out, end));
        }
        if c == '\\' {
            match chars.next() {
                Some((_, escaped @ ('"' | '\'' | '\\'))) => out.push(escaped),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return None,
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// The token starting at `text` (no leading whitespace) as the user typed
/// it, for error messages: up to the next whitespace outside quotes, where a
/// quote opens only at the start or right after the first `=`.
fn raw_token(text: &str) -> &str {
    let mut seen_eq = false;
    let mut prev_opens = true;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            return &text[..i];
        }
        if prev_opens && (c == '"' || c == '\'') {
            let mut escaped = false;
            for (_, q) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if q == '\\' {
                    escaped = true;
                } else if q == c {
                    break;
                }
            }
            prev_opens = false;
            continue;
        }
        prev_opens = c == '=' && !seen_eq;
        seen_eq |= c == '=';
    }
    text
}

/// A token or key as quoted in a message: one line, at most `MAX_SHOWN`
/// characters.
fn shown(text: &str) -> String {
    crate::text::excerpt(text, MAX_SHOWN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ok(text: &str) -> Value {
        Value::Object(parse_params(text).unwrap())
    }

    #[test]
    fn empty_text_is_no_params() {
        assert!(parse_params("").unwrap().is_empty());
        assert!(parse_params("  \n\t ").unwrap().is_empty());
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            ok("days=7 exchange=mexc ratio=0.25 neg=-3 big=1e3 flag=TRUE off=false n=null m=None"),
            json!({
                "days": 7, "exchange": "mexc", "ratio": 0.25, "neg": -3, "big": 1000.0,
                "flag": true, "off": false, "n": null, "m": null
            })
        );
    }

    #[test]
    fn integers_beyond_i64() {
        assert_eq!(ok("x=18446744073709551615"), json!({"x": u64::MAX}));
        assert_eq!(ok("x=99999999999999999999"), json!({"x": 1e20}));
    }

    #[test]
    fn non_finite_and_odd_values_stay_strings() {
        assert_eq!(
            ok("a=nan b=inf c=1e999 d=2025-11-01 e=0x10 f=1_000 g=it's"),
            json!({"a": "nan", "b": "inf", "c": "1e999", "d": "2025-11-01",
                   "e": "0x10", "f": "1_000", "g": "it's"})
        );
    }

    #[test]
    fn quoted_values_are_strings() {
        assert_eq!(
            ok(r#"name="two words" q='a=b c' n="7" t='true' e="""#),
            json!({"name": "two words", "q": "a=b c", "n": "7", "t": "true", "e": ""})
        );
    }

    #[test]
    fn escapes_inside_quotes() {
        assert_eq!(
            ok(r#"a="say \"hi\"" b='it\'s' c="back\\slash" d="keep\n" e='mixed "q"'"#),
            json!({"a": "say \"hi\"", "b": "it's", "c": "back\\slash", "d": "keep\\n",
                   "e": "mixed \"q\""})
        );
    }

    #[test]
    fn unquoted_value_may_contain_equals_and_quotes() {
        assert_eq!(
            ok("expr=a=b x=O'Neil"),
            json!({"expr": "a=b", "x": "O'Neil"})
        );
    }

    #[test]
    fn unicode_values() {
        assert_eq!(
            ok("label=📈 name=\"Börse 成交\""),
            json!({"label": "📈", "name": "Börse 成交"})
        );
    }

    #[test]
    fn not_key_value_names_the_token() {
        let err = parse_params("days7").unwrap_err();
        assert_eq!(
            err,
            ParamError::NotKeyValue {
                token: "days7".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "\"days7\" is not key=value; write arguments like days=7 exchange=mexc name=\"two words\""
        );
        assert_eq!(
            parse_params("days=7 mexc").unwrap_err(),
            ParamError::NotKeyValue {
                token: "mexc".into()
            }
        );
        assert_eq!(
            parse_params("\"two words\" x=1").unwrap_err(),
            ParamError::NotKeyValue {
                token: "\"two words\"".into()
            }
        );
        assert_eq!(
            parse_params("days =7").unwrap_err(),
            ParamError::NotKeyValue {
                token: "days".into()
            }
        );
    }

    #[test]
    fn missing_key_or_value() {
        assert_eq!(
            parse_params("=7").unwrap_err(),
            ParamError::MissingKey { token: "=7".into() }
        );
        let err = parse_params("days= exchange=mexc").unwrap_err();
        assert_eq!(err, ParamError::MissingValue { key: "days".into() });
        assert!(err.to_string().contains("days=\"\""), "{err}");
        assert_eq!(
            parse_params("days=").unwrap_err(),
            ParamError::MissingValue { key: "days".into() }
        );
    }

    #[test]
    fn invalid_keys() {
        for (text, key) in [
            ("1day=2", "1day"),
            ("my-key=2", "my-key"),
            ("a.b=1", "a.b"),
            ("é=1", "é"),
            ("x';DROP=1", "x';DROP"),
        ] {
            let err = parse_params(text).unwrap_err();
            assert_eq!(
                err,
                ParamError::InvalidKey {
                    key: key.into(),
                    token: text.into()
                }
            );
            assert!(
                err.to_string().contains("letters, digits and underscores"),
                "{err}"
            );
        }
        assert_eq!(ok("_x=1 x_1=2 X=3"), json!({"_x": 1, "x_1": 2, "X": 3}));
    }

    #[test]
    fn duplicate_keys() {
        let err = parse_params("days=7 days=8").unwrap_err();
        assert_eq!(err, ParamError::DuplicateKey { key: "days".into() });
        assert!(err.to_string().contains("twice"));
        assert!(parse_params("days=7 Days=8").is_ok());
    }

    #[test]
    fn unterminated_quotes() {
        for (text, quote) in [
            ("name=\"two words", '"'),
            ("name='two", '\''),
            ("name=\"ends in backslash\\", '"'),
            ("name=\"escaped close\\\"", '"'),
        ] {
            let err = parse_params(text).unwrap_err();
            assert_eq!(
                err,
                ParamError::UnterminatedQuote {
                    key: "name".into(),
                    quote
                }
            );
            assert!(err.to_string().contains("never closed"), "{err}");
        }
    }

    #[test]
    fn text_after_closing_quote() {
        let err = parse_params("name=\"a\"b c=1").unwrap_err();
        assert_eq!(
            err,
            ParamError::TextAfterQuote {
                key: "name".into(),
                token: "name=\"a\"b".into()
            }
        );
    }

    #[test]
    fn long_tokens_are_cut_in_messages() {
        let token = "x".repeat(500);
        let msg = parse_params(&token).unwrap_err().to_string();
        assert!(msg.len() < 250, "{msg}");
        assert!(msg.contains('…'));
    }

    /// Render a value as `/runfunc` text.
    fn render(value: &Value, single: bool) -> String {
        match value {
            Value::String(s) => {
                let q = if single { '\'' } else { '"' };
                let mut out = String::from(q);
                for c in s.chars() {
                    if c == q || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push(q);
                out
            }
            other => other.to_string(),
        }
    }

    fn value_strategy() -> impl Strategy<Value = (Value, bool)> {
        let value = prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            any::<String>().prop_map(Value::String),
            r#"[ a-z="'\\]{0,12}"#.prop_map(Value::String),
        ];
        (value, any::<bool>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse_params(&s);
        }

        #[test]
        fn never_panics_on_quote_soup(s in r#"([a-z_0-9= \t\n"'\\]|é|😀)*"#) {
            let _ = parse_params(&s);
        }

        #[test]
        fn round_trip(
            entries in proptest::collection::btree_map(
                "[a-zA-Z_][a-zA-Z0-9_]{0,15}", value_strategy(), 0..8)
        ) {
            let text: Vec<String> = entries
                .iter()
                .map(|(k, (v, single))| format!("{k}={}", render(v, *single)))
                .collect();
            let parsed = parse_params(&text.join(" ")).unwrap();
            let expected: Map<String, Value> =
                entries.into_iter().map(|(k, (v, _))| (k, v)).collect();
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn bare_words_round_trip(
            entries in proptest::collection::btree_map(
                "[a-z_][a-z0-9_]{0,8}", "[a-z][a-z_0-9.-]{0,10}", 0..8)
        ) {
            let text: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let parsed = parse_params(&text.join("  ")).unwrap();
            for (k, v) in &entries {
                let expected = match v.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" | "none" => Value::Null,
                    other => other.parse::<f64>().ok().and_then(Number::from_f64)
                        .map_or_else(|| Value::String(other.to_string()), Value::Number),
                };
                prop_assert_eq!(&parsed[k], &expected);
            }
        }
    }
}
