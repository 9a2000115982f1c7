//! The environment overrides: `TRADEBOX_<SECTION>_<KEY>` in upper case
//! sets a key over the file and the defaults, e.g.
//! `TRADEBOX_LIMITS_TIMEOUT_SECONDS=10`. Lists are comma-separated
//! (`TRADEBOX_PERMISSIONS_ADMINS=U1,U2`; empty = an empty list), booleans
//! are `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), and an empty
//! `TRADEBOX_DATA_AS_OF` unsets `as_of`. Names are matched exactly against
//! the known keys; other `TRADEBOX_*` variables (`TRADEBOX_HOME`,
//! `TRADEBOX_PYTHON`, ...) are not configuration keys and are left alone,
//! and a variable that looks like a key of a known table but is none is
//! ignored with a warning (variables ending in `_TOKEN` or `_SECRET`
//! silently, so that a secret's name is not logged as a typo).
//! [`Config::apply_env`] takes the variables as a parameter; the loaders
//! pass the process environment.

use super::schema::keys_of;
use super::{sections, Config, ConfigError, KEYS};

/// The prefix of environment overrides: `TRADEBOX_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "TRADEBOX_";

/// The environment variable that overrides `section.key`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

impl Config {
    /// Applies `TRADEBOX_<SECTION>_<KEY>` overrides from `vars` (name,
    /// value); see the module documentation. Each value is checked as it
    /// is applied, and an error names the variable.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.apply_env_traced(vars, |_, _, _| {})
    }

    /// [`Config::apply_env`], calling `applied(section, key, variable)` for
    /// every key set (later variables for the same key call it again).
    pub(super) fn apply_env_traced<I, K, V>(
        &mut self,
        vars: I,
        mut applied: impl FnMut(&'static str, &'static str, &str),
    ) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (name, value) in vars {
            let name = name.as_ref();
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            let Some(&(section, key)) = KEYS.iter().find(|(s, k)| env_var_name(s, k) == name)
            else {
                warn_unknown_env(name);
                continue;
            };
            let bad = |phrase: String| ConfigError::Env {
                var: name.to_owned(),
                message: format!("{section}.{key} {phrase}"),
            };
            match self.set_from_env(section, key, value.as_ref()) {
                Some(Ok(())) => {}
                Some(Err(phrase)) => return Err(bad(phrase)),
                None => continue,
            }
            self.normalize();
            self.check_key(section, key).map_err(bad)?;
            applied(section, key, name);
            tracing::debug!(var = name, "configuration key set from the environment");
        }
        Ok(())
    }

    /// Environment variable names of every key, in [`KEYS`] order.
    pub fn env_var_names() -> Vec<String> {
        KEYS.iter().map(|(s, k)| env_var_name(s, k)).collect()
    }
}

/// The process environment's `TRADEBOX_*` variables; a configuration
/// variable that is not UTF-8 is an error.
pub(super) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let names = Config::env_var_names();
    let mut out = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        match value.into_string() {
            Ok(value) => out.push((name, value)),
            Err(_) if names.contains(&name) => {
                return Err(ConfigError::Env {
                    var: name,
                    message: "the value is not valid UTF-8".to_owned(),
                })
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

fn warn_unknown_env(name: &str) {
    if name.ends_with("_TOKEN") || name.ends_with("_SECRET") {
        return;
    }
    let section = sections().into_iter().find(|s| {
        name.strip_prefix(ENV_PREFIX)
            .and_then(|rest| rest.strip_prefix(s.to_ascii_uppercase().as_str()))
            .is_some_and(|rest| rest.starts_with('_'))
    });
    if let Some(section) = section {
        let known: Vec<String> = keys_of(section).map(|k| env_var_name(section, k)).collect();
        tracing::warn!(
            var = name,
            "environment variable ignored: not a configuration key \
             (the keys of [{section}] are {})",
            known.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{env, parse};

    #[test]
    fn environment_overrides() {
        let mut c = Config::default();
        env(
            &mut c,
            &[
                ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "10"),
                ("TRADEBOX_RATE_LIMIT_EXECUTIONS", " 3 "),
                ("TRADEBOX_RATE_LIMIT_WINDOW_SECONDS", "15"),
                ("TRADEBOX_VALIDATOR_ENABLED", "no"),
                ("TRADEBOX_CONSOLE_USER_IS_ADMIN", "FALSE"),
                ("TRADEBOX_CONSOLE_USER", "bob"),
                ("TRADEBOX_PERMISSIONS_ADMINS", "U1,U2"),
                ("TRADEBOX_PERMISSIONS_EXECUTE_CHANNELS", " C1 , ,C2 "),
                ("TRADEBOX_VALIDATOR_ALLOWED_MODULES", "pandas"),
                ("TRADEBOX_DATA_AS_OF", "latest"),
                ("TRADEBOX_SLACK_API_URL", "http://127.0.0.1:9/api"),
                // Not configuration keys: left alone.
                ("TRADEBOX_HOME", "/nonexistent"),
                ("TRADEBOX_PYTHON", "/usr/bin/python3"),
                ("TRADEBOX_LIMITS_TIMOUT_SECONDS", "1"),
                ("TRADEBOX_SLACK_BOT_TOKEN", "xoxb-secret"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.timeout_seconds, 10);
        assert_eq!(c.rate_limit.executions, 3);
        assert_eq!(c.rate_limit.window_seconds, 15);
        assert!(!c.validator.enabled);
        assert!(!c.console.user_is_admin);
        assert_eq!(c.console.user, "bob");
        assert_eq!(c.permissions.admins, ["U1", "U2"]);
        assert_eq!(c.permissions.execute_channels, ["C1", "C2"]);
        assert_eq!(c.validator.allowed_modules, ["pandas"]);
        assert_eq!(c.data.as_of.as_deref(), Some("latest"));
        assert_eq!(c.slack.api_url, "http://127.0.0.1:9/api/");
        let mut expected = Config::default();
        expected.limits.timeout_seconds = 10;
        expected.rate_limit.executions = 3;
        expected.rate_limit.window_seconds = 15;
        expected.validator.enabled = false;
        expected.validator.allowed_modules = vec!["pandas".into()];
        expected.console.user_is_admin = false;
        expected.console.user = "bob".into();
        expected.permissions.admins = vec!["U1".into(), "U2".into()];
        expected.permissions.execute_channels = vec!["C1".into(), "C2".into()];
        expected.data.as_of = Some("latest".into());
        expected.slack.api_url = "http://127.0.0.1:9/api/".into();
        assert_eq!(c, expected, "nothing else changed");

        // Empty values: an empty list, an unset as_of; later values win.
        env(
            &mut c,
            &[
                ("TRADEBOX_PERMISSIONS_ADMINS", ""),
                ("TRADEBOX_DATA_AS_OF", ""),
                ("TRADEBOX_VALIDATOR_ENABLED", "1"),
                ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "20"),
                ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "25"),
            ],
        )
        .unwrap();
        assert!(c.permissions.admins.is_empty());
        assert_eq!(c.data.as_of, None);
        assert!(c.validator.enabled);
        assert_eq!(c.limits.timeout_seconds, 25);

        // The environment overrides the file.
        let mut c = parse("[limits]\ntimeout_seconds = 5\nmemory_mb = 256\n").unwrap();
        env(&mut c, &[("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "7")]).unwrap();
        assert_eq!((c.limits.timeout_seconds, c.limits.memory_mb), (7, 256));

        // Owned strings work as well as borrowed ones.
        let owned = vec![("TRADEBOX_POOL_QUEUE".to_owned(), "9".to_owned())];
        c.apply_env(owned).unwrap();
        assert_eq!(c.pool.queue, 9);
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let cases = [
            ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "ten", "environment variable TRADEBOX_LIMITS_TIMEOUT_SECONDS: limits.timeout_seconds must be a whole number (0 or more), not \"ten\""),
            ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "-1", "must be a whole number"),
            ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "0", "environment variable TRADEBOX_LIMITS_TIMEOUT_SECONDS: limits.timeout_seconds must be from 1 to 3600 seconds, not 0"),
            ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "0", "rate_limit.executions must be from 1"),
            ("TRADEBOX_VALIDATOR_ENABLED", "maybe", "environment variable TRADEBOX_VALIDATOR_ENABLED: validator.enabled must be true or false, not \"maybe\""),
            ("TRADEBOX_PERMISSIONS_ADMINS", "U1,<@U2>", "permissions.admins lists \"<@U2>\", a mention"),
            ("TRADEBOX_CONSOLE_LISTEN", "8765", "console.listen must be an IP address and port"),
            ("TRADEBOX_DATA_AS_OF", "soon", "data.as_of must be \"latest\""),
            ("TRADEBOX_CONSOLE_USER", "", "console.user must not be empty"),
        ];
        for (var, value, expected) in cases {
            let mut c = Config::default();
            let err = env(&mut c, &[(var, value)]).unwrap_err();
            match &err {
                ConfigError::Env { var: v, .. } => assert_eq!(v, var),
                other => panic!("{other:?}"),
            }
            let shown = err.to_string();
            assert!(
                shown.contains(expected),
                "{var}={value}: {shown}\nexpected: {expected}"
            );
        }
    }
}
