//! Helpers the configuration's tests share: parse a document as the file
//! `tradebox.toml`, take a file error apart, apply variables.

use super::{Config, ConfigError, Position};

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "tradebox.toml")
}

/// The error's text, its position and key; panics unless a file error.
pub(super) fn file_error(text: &str) -> (String, Option<Position>, Option<String>) {
    let err = parse(text).unwrap_err();
    let shown = err.to_string();
    match err {
        ConfigError::File { position, key, .. } => (shown, position, key),
        other => panic!("expected a file error, got {other:?}"),
    }
}

pub(super) fn env(config: &mut Config, vars: &[(&str, &str)]) -> Result<(), ConfigError> {
    config.apply_env(vars.iter().copied())
}
