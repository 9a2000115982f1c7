//! The checks of a configuration's values: ranges, the shape of ids, names,
//! module names, addresses and URLs. Each check answers with a phrase such
//! as "must be from 1 to 3600 seconds, not 0" that the caller prefixes with
//! where the value came from (a file position, an environment variable, or
//! the key for a configuration built in code). The file and every variable
//! are checked as they are read; [`Config::validate`] checks a configuration
//! built or changed in code.

use std::fmt;
use std::net::SocketAddr;

use super::{Config, ConfigError, KEYS};

impl Config {
    /// Checks every value (ranges, shapes); the loaders call it, this is for
    /// a configuration built or changed in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_all()
            .map_err(|(section, key, phrase)| ConfigError::Invalid {
                key: format!("{section}.{key}"),
                message: format!("{section}.{key} {phrase}"),
            })
    }

    /// Fixes harmless variations: a final `/` on the Slack API URL.
    pub(super) fn normalize(&mut self) {
        if !self.slack.api_url.ends_with('/') {
            self.slack.api_url.push('/');
        }
    }

    /// The first key whose value is bad, with the phrase saying why.
    pub(super) fn check_all(&self) -> Result<(), (&'static str, &'static str, String)> {
        for &(section, key) in KEYS {
            self.check_key(section, key)
                .map_err(|phrase| (section, key, phrase))?;
        }
        self.check_sources()
            .map_err(|phrase| ("data", "sources", phrase))
    }

    /// Each `[[data.sources]]` table, and that their ids differ.
    fn check_sources(&self) -> Result<(), String> {
        let sources = &self.data.sources;
        for (i, source) in sources.iter().enumerate() {
            source.check().map_err(|e| format!("is wrong: {e}"))?;
            if sources[..i].iter().any(|s| s.id == source.id) {
                return Err(format!("has the id {:?} twice; ids must differ", source.id));
            }
        }
        Ok(())
    }

    /// Checks one key's value; the error is a phrase such as "must be from
    /// 1 to 3600 seconds, not 0", to be prefixed with the key.
    pub(super) fn check_key(&self, section: &str, key: &str) -> Result<(), String> {
        let l = &self.limits;
        let p = &self.pool;
        let perms = &self.permissions;
        match (section, key) {
            ("data", "as_of") => match &self.data.as_of {
                Some(v) if v != "latest" && tradebox_data::timestamp::parse(v).is_err() => {
                    Err(format!(
                        "must be \"latest\", a date (YYYY-MM-DD) or an ISO 8601 time, not {v:?}"
                    ))
                }
                _ => Ok(()),
            },
            ("store", "url") => match &self.store.url {
                Some(v) => crate::store::StoreUrl::parse(v).map(|_| ()),
                None => Ok(()),
            },
            ("store", "replica") => match &self.store.replica {
                Some(v) if v.trim().is_empty() || v.chars().count() > 100 => {
                    Err(format!("must be 1 to 100 characters, not {v:?}"))
                }
                _ => Ok(()),
            },
            ("limits", "timeout_seconds") => in_range(l.timeout_seconds, 1, 3600, " seconds"),
            ("limits", "memory_mb") => in_range(l.memory_mb, 64, 1 << 20, " MB"),
            ("limits", "output_bytes") => in_range(l.output_bytes, 1024, 64 << 20, " bytes"),
            ("limits", "scratch_mb") => in_range(l.scratch_mb, 1, 65_536, " MB"),
            ("limits", "max_code_bytes") => in_range(l.max_code_bytes, 1, 100_000, " bytes"),
            ("pool", "workers") => in_range(p.workers, 0, 1024, ""),
            ("pool", "queue") => in_range(p.queue, 1, 100_000, ""),
            ("pool", "per_user_running") => in_range(p.per_user_running, 1, 1024, ""),
            ("pool", "per_user_waiting") => in_range(p.per_user_waiting, 0, 100_000, ""),
            ("rate_limit", "executions") => in_range(self.rate_limit.executions, 1, 100_000, ""),
            ("rate_limit", "window_seconds") => {
                in_range(self.rate_limit.window_seconds, 1, 86_400, " seconds")
            }
            ("permissions", "admins") => each(&perms.admins, check_user),
            ("permissions", "execute_users") => each(&perms.execute_users, check_user),
            ("permissions", "execute_channels") => each(&perms.execute_channels, check_channel),
            ("permissions", "save_users") => each(&perms.save_users, check_user),
            ("permissions", "save_channels") => each(&perms.save_channels, check_channel),
            ("validator", "allowed_modules") => each(&self.validator.allowed_modules, check_module),
            ("audit", "retention_days") => in_range(self.audit.retention_days, 0, 36_500, " days"),
            ("console", "user") => check_name(&self.console.user),
            ("console", "listen") => match self.console.listen.parse::<SocketAddr>() {
                Ok(_) => Ok(()),
                Err(_) => Err(LISTEN_SHAPE.replace("{}", &self.console.listen)),
            },
            ("slack", "api_url") => check_url(&self.slack.api_url),
            _ => Ok(()),
        }
    }
}

pub(super) const LISTEN_SHAPE: &str =
    "must be an IP address and port such as \"127.0.0.1:8765\", not \"{}\"";

// ---------------------------------------------------------------------------
// Value checks.

fn in_range<T: PartialOrd + fmt::Display>(v: T, lo: T, hi: T, unit: &str) -> Result<(), String> {
    if v < lo || v > hi {
        Err(format!("must be from {lo} to {hi}{unit}, not {v}"))
    } else {
        Ok(())
    }
}

fn each(items: &[String], check: fn(&str) -> Result<(), String>) -> Result<(), String> {
    items.iter().try_for_each(|item| check(item))
}

/// A user or console name: not empty, no spaces or control characters.
pub(super) fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain spaces or control characters: {s:?}"
        ));
    }
    Ok(())
}

/// An entry of an allow-list: not empty, no spaces or control characters.
fn check_entry(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("has an empty entry".to_owned());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "has an entry with spaces or control characters: {s:?}"
        ));
    }
    Ok(())
}

fn check_user(s: &str) -> Result<(), String> {
    check_entry(s)?;
    if let Some(id) = s.strip_prefix("<@").and_then(|r| r.strip_suffix('>')) {
        let id = id.split('|').next().unwrap_or(id);
        return Err(format!("lists {s:?}, a mention; write the user id {id:?}"));
    }
    Ok(())
}

fn check_channel(s: &str) -> Result<(), String> {
    check_entry(s)?;
    if s.starts_with('#') || s.starts_with("<#") {
        return Err(format!(
            "lists {s:?}; write the channel id as Slack sends it (such as \"C0123ABCD\"), \
             not its name or a link"
        ));
    }
    Ok(())
}

fn check_module(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "lists {s:?}, which is not a top-level module name (such as \"pandas\")"
        ))
    }
}

fn check_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.trim_matches('/').is_empty() && !s.chars().any(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!(
            "must be an http:// or https:// URL such as \"https://slack.com/api/\", not {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::file_error;
    use crate::config::Position;

    #[test]
    fn values_are_validated_with_their_place() {
        let (shown, position, key) = file_error("[limits]\ntimeout_seconds = 0\n");
        assert_eq!(position, Some(Position { line: 2, column: 1 }));
        assert_eq!(key.as_deref(), Some("limits.timeout_seconds"));
        assert_eq!(
            shown,
            "tradebox.toml, line 2, column 1: 'timeout_seconds' in [limits] must be from 1 to \
             3600 seconds, not 0"
        );

        type Case = (&'static str, fn(&mut Config), &'static str);
        let bad: Vec<Case> = vec![
            (
                "limits.timeout_seconds",
                |c| c.limits.timeout_seconds = 3601,
                "must be from 1 to 3600 seconds, not 3601",
            ),
            (
                "limits.memory_mb",
                |c| c.limits.memory_mb = 63,
                "must be from 64 to 1048576 MB, not 63",
            ),
            (
                "limits.output_bytes",
                |c| c.limits.output_bytes = 10,
                "must be from 1024",
            ),
            (
                "limits.scratch_mb",
                |c| c.limits.scratch_mb = 0,
                "must be from 1",
            ),
            (
                "limits.max_code_bytes",
                |c| c.limits.max_code_bytes = 0,
                "must be from 1 to 100000 bytes",
            ),
            (
                "pool.workers",
                |c| c.pool.workers = 5000,
                "must be from 0 to 1024",
            ),
            ("pool.queue", |c| c.pool.queue = 0, "must be from 1"),
            (
                "pool.per_user_running",
                |c| c.pool.per_user_running = 0,
                "must be from 1",
            ),
            (
                "rate_limit.executions",
                |c| c.rate_limit.executions = 0,
                "must be from 1 to 100000, not 0",
            ),
            (
                "rate_limit.window_seconds",
                |c| c.rate_limit.window_seconds = 0,
                "must be from 1 to 86400 seconds",
            ),
            (
                "audit.retention_days",
                |c| c.audit.retention_days = 40_000,
                "must be from 0 to 36500 days",
            ),
            (
                "data.as_of",
                |c| c.data.as_of = Some("yesterday".into()),
                "must be \"latest\", a date (YYYY-MM-DD)",
            ),
            (
                "permissions.admins",
                |c| c.permissions.admins = vec!["<@U1|bob>".into()],
                "a mention; write the user id \"U1\"",
            ),
            (
                "permissions.execute_users",
                |c| c.permissions.execute_users = vec!["".into()],
                "has an empty entry",
            ),
            (
                "permissions.save_users",
                |c| c.permissions.save_users = vec!["U 1".into()],
                "spaces",
            ),
            (
                "permissions.execute_channels",
                |c| c.permissions.execute_channels = vec!["#general".into()],
                "write the channel id",
            ),
            (
                "permissions.save_channels",
                |c| c.permissions.save_channels = vec!["<#C1>".into()],
                "write the channel id",
            ),
            (
                "validator.allowed_modules",
                |c| c.validator.allowed_modules = vec!["os.path".into()],
                "not a top-level module name",
            ),
            (
                "console.user",
                |c| c.console.user = String::new(),
                "must not be empty",
            ),
            ("console.user", |c| c.console.user = "a b".into(), "spaces"),
            (
                "console.listen",
                |c| c.console.listen = "localhost:80".into(),
                "IP address and port",
            ),
            (
                "slack.api_url",
                |c| c.slack.api_url = "slack.com/api/".into(),
                "http:// or https://",
            ),
            (
                "slack.api_url",
                |c| c.slack.api_url = "https:///".into(),
                "http:// or https://",
            ),
        ];
        for (key, change, expected) in bad {
            let mut c = Config::default();
            change(&mut c);
            let err = c.validate().unwrap_err();
            let shown = err.to_string();
            match &err {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key),
                other => panic!("{other:?}"),
            }
            assert!(shown.starts_with(key), "{shown}");
            assert!(
                shown.contains(expected),
                "{key}: {shown}\nexpected: {expected}"
            );
        }
        let mut c = Config::default();
        c.console.listen = "[::1]:8765".into();
        c.data.as_of = Some("2025-11-29T12:00:00Z".into());
        c.validate().unwrap();
        assert!(c.console.listen_addr().unwrap().ip().is_loopback());
    }
}
