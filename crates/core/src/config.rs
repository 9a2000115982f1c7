//! The configuration: `$TRADEBOX_HOME/tradebox.toml` (or a file named
//! explicitly), then `TRADEBOX_<SECTION>_<KEY>` environment variables, over
//! built-in defaults for every key. `docs/configuration.md` describes every
//! key; [`Config::to_toml_string`] prints the effective values
//! (`tradebox config show`).
//!
//! # Strictness
//!
//! Every table refuses unknown keys (`deny_unknown_fields`), so a typo is an
//! error rather than a silently ignored setting. A [`ConfigError`] names the
//! file, the line and column, the table and the key, e.g.
//! `tradebox.toml, line 7, column 1: unknown key 'timout_seconds' in [limits]
//! (did you mean 'timeout_seconds'? expected one of ...)`; an environment
//! variable with a bad value is named in the same way. Values are checked
//! for range and shape ([`Config::validate`]) when the file and each
//! variable are read.
//!
//! # Environment
//!
//! `TRADEBOX_<SECTION>_<KEY>` in upper case overrides a key, e.g.
//! `TRADEBOX_LIMITS_TIMEOUT_SECONDS=10`, `TRADEBOX_RATE_LIMIT_EXECUTIONS=5`.
//! Lists are comma-separated (`TRADEBOX_PERMISSIONS_ADMINS=U1,U2`; empty =
//! an empty list), booleans are `true`/`false` (also `1`/`0`, `yes`/`no`,
//! `on`/`off`), and an empty `TRADEBOX_DATA_AS_OF` unsets `as_of`. Names are
//! matched exactly against the known keys; other `TRADEBOX_*` variables
//! (`TRADEBOX_HOME`, `TRADEBOX_PYTHON`, ...) are not configuration keys and
//! are left alone, and a variable that looks like a key of a known table
//! but is none is ignored with a warning (variables ending in `_TOKEN` or
//! `_SECRET` silently). [`Config::apply_env`] takes the variables as a
//! parameter; [`Config::load`] passes the process environment.
//!
//! Slack tokens are never read from the file: they come only from the
//! environment, where the Slack front end reads them.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The file name of the configuration inside `$TRADEBOX_HOME`.
pub const FILE_NAME: &str = "tradebox.toml";

/// The prefix of environment overrides: `TRADEBOX_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "TRADEBOX_";

/// The default module allow-list of the validator (`[validator]` in
/// docs/configuration.md).
pub use tradebox_validate::DEFAULT_ALLOWED_MODULES;

/// The user name of the console when `$USER` is unset or unusable.
pub const FALLBACK_CONSOLE_USER: &str = "console";

// ---------------------------------------------------------------------------
// The configuration.

/// The whole configuration; every key has a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataSection,
    pub limits: LimitsSection,
    pub pool: PoolSection,
    pub rate_limit: RateLimitSection,
    pub permissions: PermissionsSection,
    pub validator: ValidatorSection,
    pub audit: AuditSection,
    pub console: ConsoleSection,
    pub slack: SlackSection,
}

/// `[data]`: which data the snippets see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// What `days=N` counts back from: unset = the clock, `latest` = the
    /// newest trade, or a date / ISO 8601 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

/// `[limits]`: what one execution may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub timeout_seconds: u64,
    pub memory_mb: u64,
    pub output_bytes: u64,
    pub scratch_mb: u64,
    pub max_code_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            timeout_seconds: 30,
            memory_mb: 1024,
            output_bytes: 1 << 20,
            scratch_mb: 64,
            max_code_bytes: tradebox_validate::DEFAULT_MAX_CODE_BYTES,
        }
    }
}

impl LimitsSection {
    /// The wall-time limit of one execution.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// The output limit as a size.
    pub fn output_limit(&self) -> usize {
        usize::try_from(self.output_bytes).unwrap_or(usize::MAX)
    }
}

/// `[pool]`: the warm worker pool and its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// Number of workers; 0 = one per core.
    pub workers: usize,
    /// Jobs that may wait for a worker, over all users.
    pub queue: usize,
    /// Jobs of one user running at the same time.
    pub per_user_running: usize,
    /// Jobs of one user waiting at the same time.
    pub per_user_waiting: usize,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            workers: 0,
            queue: 64,
            per_user_running: 2,
            per_user_waiting: 8,
        }
    }
}

impl PoolSection {
    /// `workers`, with 0 resolved to the number of cores.
    pub fn effective_workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            self.workers
        }
    }
}

/// `[rate_limit]`: executions per user within a sliding window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    pub executions: u32,
    pub window_seconds: u64,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        RateLimitSection {
            executions: 10,
            window_seconds: 60,
        }
    }
}

impl RateLimitSection {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }
}

/// `[permissions]`: admins and allow-lists (empty = no restriction); see
/// [`crate::permissions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermissionsSection {
    pub admins: Vec<String>,
    pub execute_users: Vec<String>,
    pub execute_channels: Vec<String>,
    pub save_users: Vec<String>,
    pub save_channels: Vec<String>,
}

/// `[validator]`: the courtesy checks before code is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidatorSection {
    pub enabled: bool,
    pub allowed_modules: Vec<String>,
}

impl Default for ValidatorSection {
    fn default() -> Self {
        ValidatorSection {
            enabled: true,
            allowed_modules: DEFAULT_ALLOWED_MODULES
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
        }
    }
}

/// `[audit]`: how long the audit trail is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Days kept; 0 = forever.
    pub retention_days: u32,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            retention_days: 365,
        }
    }
}

impl AuditSection {
    /// How long entries are kept; `None` = forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400))
    }
}

/// `[console]`: the local web console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Who commands typed in the console run as.
    pub user: String,
    /// Whether that user is an admin.
    pub user_is_admin: bool,
    /// `IP:port` the console listens on.
    pub listen: String,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            user: default_console_user(),
            user_is_admin: true,
            listen: "127.0.0.1:8765".to_owned(),
        }
    }
}

impl ConsoleSection {
    /// `listen` as an address (checked when the configuration was read).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "console.listen".to_owned(),
            message: format!(
                "console.listen {}",
                LISTEN_SHAPE.replace("{}", &self.listen)
            ),
        })
    }
}

/// `[slack]`: the Slack front end (tokens come only from the environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSection {
    /// Base URL of the Web API; method names are appended. A missing final
    /// `/` is added.
    pub api_url: String,
}

impl Default for SlackSection {
    fn default() -> Self {
        SlackSection {
            api_url: "https://slack.com/api/".to_owned(),
        }
    }
}

/// `$USER` when it is a usable name, else [`FALLBACK_CONSOLE_USER`].
fn default_console_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| check_name(u).is_ok())
        .unwrap_or_else(|| FALLBACK_CONSOLE_USER.to_owned())
}

// ---------------------------------------------------------------------------
// The key table: one line per key, and the typed access generated from it.

/// How one key's value is read from the environment and printed as TOML.
trait Setting: Sized {
    /// What a value must look like, for messages.
    const EXPECTED: &'static str;
    fn from_env(raw: &str) -> Result<Self, String>;
    /// The value as TOML; `None` when unset.
    fn to_toml(&self) -> Option<String>;
}

macro_rules! int_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            const EXPECTED: &'static str = "a whole number (0 or more)";
            fn from_env(raw: &str) -> Result<Self, String> {
                raw.trim()
                    .parse()
                    .map_err(|_| format!("must be {}, not {raw:?}", Self::EXPECTED))
            }
            fn to_toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
int_setting!(u32, u64, usize);

impl Setting for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_env(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("must be {}, not {raw:?}", Self::EXPECTED)),
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Setting for String {
    const EXPECTED: &'static str = "a string in quotes";
    fn from_env(raw: &str) -> Result<Self, String> {
        Ok(raw.trim().to_owned())
    }
    fn to_toml(&self) -> Option<String> {
        Some(toml::Value::String(self.clone()).to_string())
    }
}

impl Setting for Option<String> {
    const EXPECTED: &'static str = "a string in quotes";
    fn from_env(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        Ok((!raw.is_empty()).then(|| raw.to_owned()))
    }
    fn to_toml(&self) -> Option<String> {
        self.as_ref().and_then(Setting::to_toml)
    }
}

impl Setting for Vec<String> {
    const EXPECTED: &'static str = "a list of strings such as [\"a\", \"b\"]";
    fn from_env(raw: &str) -> Result<Self, String> {
        Ok(raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
    fn to_toml(&self) -> Option<String> {
        let items = self.iter().cloned().map(toml::Value::String).collect();
        Some(toml::Value::Array(items).to_string())
    }
}

fn expected_of<T: Setting>(_: &T) -> &'static str {
    T::EXPECTED
}

macro_rules! keys {
    ($($section:ident { $($key:ident),+ $(,)? })+) => {
        /// Every key as `(table, key)`, in the order of the file and of
        /// `docs/configuration.md`.
        pub const KEYS: &[(&str, &str)] = &[$($((stringify!($section), stringify!($key)),)+)+];

        impl Config {
            /// Sets a key from an environment value; `None` for an unknown key.
            fn set_from_env(
                &mut self,
                section: &str,
                key: &str,
                raw: &str,
            ) -> Option<Result<(), String>> {
                $($(
                    if section == stringify!($section) && key == stringify!($key) {
                        return Some(Setting::from_env(raw).map(|v| self.$section.$key = v));
                    }
                )+)+
                None
            }

            /// A key's value as TOML; `None` when unset or unknown.
            fn render(&self, section: &str, key: &str) -> Option<String> {
                $($(
                    if section == stringify!($section) && key == stringify!($key) {
                        return self.$section.$key.to_toml();
                    }
                )+)+
                None
            }

            /// What a key's value must look like; `None` for an unknown key.
            fn expected(&self, section: &str, key: &str) -> Option<&'static str> {
                $($(
                    if section == stringify!($section) && key == stringify!($key) {
                        return Some(expected_of(&self.$section.$key));
                    }
                )+)+
                None
            }
        }
    };
}

keys! {
    data { as_of }
    limits { timeout_seconds, memory_mb, output_bytes, scratch_mb, max_code_bytes }
    pool { workers, queue, per_user_running, per_user_waiting }
    rate_limit { executions, window_seconds }
    permissions { admins, execute_users, execute_channels, save_users, save_channels }
    validator { enabled, allowed_modules }
    audit { retention_days }
    console { user, user_is_admin, listen }
    slack { api_url }
}

/// The tables, in file order.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (section, _) in KEYS {
        if !out.contains(section) {
            out.push(section);
        }
    }
    out
}

/// The environment variable that overrides `section.key`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

fn keys_of(section: &str) -> impl Iterator<Item = &'static str> + '_ {
    KEYS.iter()
        .filter(move |(s, _)| *s == section)
        .map(|(_, k)| *k)
}

fn is_key(section: &str, key: &str) -> bool {
    KEYS.iter().any(|(s, k)| *s == section && *k == key)
}

// ---------------------------------------------------------------------------
// Errors.

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
// Loading.

impl Config {
    /// The configuration of the home directory `home`: `home/tradebox.toml`
    /// when it exists (defaults otherwise), then the process environment.
    pub fn load(home: &Path) -> Result<Config, ConfigError> {
        let path = home.join(FILE_NAME);
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml_str(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no configuration file; using defaults");
                Config::default()
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        config.apply_env(process_env()?)?;
        Ok(config)
    }

    /// The configuration in the file `path`, which must exist, then the
    /// process environment.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml_str(&text, &path.display().to_string())?;
        config.apply_env(process_env()?)?;
        Ok(config)
    }

    /// Parses and validates a TOML document; `origin` names it in errors
    /// (usually the file's path). Missing keys take their defaults.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = match toml::from_str(text) {
            Ok(config) => config,
            Err(e) => return Err(describe_toml_error(text, origin, &e)),
        };
        config.normalize();
        if let Err((section, key, phrase)) = config.check_all() {
            let span = DeTable::parse(text)
                .ok()
                .and_then(|doc| key_span(doc.get_ref(), section, key));
            return Err(ConfigError::File {
                origin: origin.to_owned(),
                position: span.map(|s| position_of(text, s.start)),
                key: Some(format!("{section}.{key}")),
                message: format!("'{key}' in [{section}] {phrase}"),
            });
        }
        Ok(config)
    }

    /// Applies `TRADEBOX_<SECTION>_<KEY>` overrides from `vars` (name,
    /// value); see the module documentation. Each value is checked as it
    /// is applied, and an error names the variable.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
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
            tracing::debug!(var = name, "configuration key set from the environment");
        }
        Ok(())
    }

    /// Checks every value (ranges, shapes); the loaders call it, this is for
    /// a configuration built or changed in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_all()
            .map_err(|(section, key, phrase)| ConfigError::Invalid {
                key: format!("{section}.{key}"),
                message: format!("{section}.{key} {phrase}"),
            })
    }

    /// Every key with its effective value, as a TOML document that
    /// [`Config::from_toml_str`] reads back to the same configuration. An
    /// unset `as_of` is shown as a comment.
    pub fn to_toml_string(&self) -> String {
        let mut out = String::from(
            "# tradebox configuration: defaults, then tradebox.toml, then\n\
             # TRADEBOX_<SECTION>_<KEY> environment variables (see docs/configuration.md).\n",
        );
        for section in sections() {
            out.push_str(&format!("\n[{section}]\n"));
            for key in keys_of(section) {
                match self.render(section, key) {
                    Some(value) => out.push_str(&format!("{key} = {value}\n")),
                    None => out.push_str(&format!("# {key} is not set (the default)\n")),
                }
            }
        }
        out
    }

    /// Environment variable names of every key, in [`KEYS`] order.
    pub fn env_var_names() -> Vec<String> {
        KEYS.iter().map(|(s, k)| env_var_name(s, k)).collect()
    }

    /// Fixes harmless variations: a final `/` on the Slack API URL.
    fn normalize(&mut self) {
        if !self.slack.api_url.ends_with('/') {
            self.slack.api_url.push('/');
        }
    }

    fn check_all(&self) -> Result<(), (&'static str, &'static str, String)> {
        for &(section, key) in KEYS {
            self.check_key(section, key)
                .map_err(|phrase| (section, key, phrase))?;
        }
        Ok(())
    }

    /// Checks one key's value; the error is a phrase such as "must be from
    /// 1 to 3600 seconds, not 0", to be prefixed with the key.
    fn check_key(&self, section: &str, key: &str) -> Result<(), String> {
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

const LISTEN_SHAPE: &str = "must be an IP address and port such as \"127.0.0.1:8765\", not \"{}\"";

/// The process environment's `TRADEBOX_*` variables; a configuration
/// variable that is not UTF-8 is an error.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
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
fn check_name(s: &str) -> Result<(), String> {
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

// ---------------------------------------------------------------------------
// Locating errors in the file.

/// 1-based line and column (in characters) of a byte offset.
fn position_of(text: &str, offset: usize) -> Position {
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
fn key_span(doc: &DeTable<'_>, section: &str, key: &str) -> Option<Range<usize>> {
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

fn describe_toml_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
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
    use std::collections::BTreeSet;
    use tempfile::TempDir;

    const DOC: &str = include_str!("../../../docs/configuration.md");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "tradebox.toml")
    }

    /// The error's text, its position and key; panics unless a file error.
    fn file_error(text: &str) -> (String, Option<Position>, Option<String>) {
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        match err {
            ConfigError::File { position, key, .. } => (shown, position, key),
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    fn env(config: &mut Config, vars: &[(&str, &str)]) -> Result<(), ConfigError> {
        config.apply_env(vars.iter().copied())
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.data.as_of, None);
        assert_eq!(c.limits.timeout_seconds, 30);
        assert_eq!(c.limits.memory_mb, 1024);
        assert_eq!(c.limits.output_bytes, 1_048_576);
        assert_eq!(c.limits.scratch_mb, 64);
        assert_eq!(c.limits.max_code_bytes, 20_000);
        assert_eq!(c.pool.workers, 0);
        assert!(c.pool.effective_workers() >= 1);
        assert_eq!(c.pool.queue, 64);
        assert_eq!(c.pool.per_user_running, 2);
        assert_eq!(c.pool.per_user_waiting, 8);
        assert_eq!(c.rate_limit.executions, 10);
        assert_eq!(c.rate_limit.window_seconds, 60);
        assert_eq!(c.rate_limit.window(), Duration::from_secs(60));
        assert_eq!(c.permissions, PermissionsSection::default());
        assert!(c.permissions.admins.is_empty() && c.permissions.execute_users.is_empty());
        assert!(c.validator.enabled);
        assert_eq!(c.validator.allowed_modules, DEFAULT_ALLOWED_MODULES);
        assert_eq!(c.audit.retention_days, 365);
        assert_eq!(c.audit.retention(), Some(Duration::from_secs(365 * 86_400)));
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty() && !u.contains(char::is_whitespace))
            .unwrap_or_else(|| "console".to_owned());
        assert_eq!(c.console.user, user);
        assert!(c.console.user_is_admin);
        assert_eq!(c.console.listen, "127.0.0.1:8765");
        assert_eq!(c.console.listen_addr().unwrap().port(), 8765);
        assert_eq!(c.slack.api_url, "https://slack.com/api/");
        c.validate().unwrap();
        assert_eq!(parse("").unwrap(), c, "an empty file is the defaults");
        assert_eq!(parse("# only a comment\n").unwrap(), c);
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
[data]
as_of = "latest"

[limits]
timeout_seconds = 10
memory_mb = 512
output_bytes = 65536
scratch_mb = 16
max_code_bytes = 5000

[pool]
workers = 4
queue = 16
per_user_running = 1
per_user_waiting = 0

[rate_limit]
executions = 5
window_seconds = 30

[permissions]
admins = ["U1", "U2"]
execute_users = ["U1", "U3"]
execute_channels = ["C1"]
save_users = ["U3"]
save_channels = ["C2"]

[validator]
enabled = false
allowed_modules = ["pandas", "scipy"]

[audit]
retention_days = 0

[console]
user = "alice"
user_is_admin = false
listen = "0.0.0.0:9000"

[slack]
api_url = "http://127.0.0.1:4000/api"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.data.as_of.as_deref(), Some("latest"));
        assert_eq!(c.limits.timeout(), Duration::from_secs(10));
        assert_eq!(c.limits.memory_mb, 512);
        assert_eq!(c.limits.output_limit(), 65_536);
        assert_eq!(c.limits.scratch_mb, 16);
        assert_eq!(c.limits.max_code_bytes, 5000);
        assert_eq!(c.pool.workers, 4);
        assert_eq!(c.pool.effective_workers(), 4);
        assert_eq!(c.pool.queue, 16);
        assert_eq!(c.pool.per_user_running, 1);
        assert_eq!(c.pool.per_user_waiting, 0);
        assert_eq!(c.rate_limit.executions, 5);
        assert_eq!(c.rate_limit.window_seconds, 30);
        assert_eq!(c.permissions.admins, ["U1", "U2"]);
        assert_eq!(c.permissions.execute_users, ["U1", "U3"]);
        assert_eq!(c.permissions.execute_channels, ["C1"]);
        assert_eq!(c.permissions.save_users, ["U3"]);
        assert_eq!(c.permissions.save_channels, ["C2"]);
        assert!(!c.validator.enabled);
        assert_eq!(c.validator.allowed_modules, ["pandas", "scipy"]);
        assert_eq!(c.audit.retention_days, 0);
        assert_eq!(c.audit.retention(), None);
        assert_eq!(c.console.user, "alice");
        assert!(!c.console.user_is_admin);
        assert_eq!(c.console.listen, "0.0.0.0:9000");
        assert_eq!(
            c.slack.api_url, "http://127.0.0.1:4000/api/",
            "a final slash is added"
        );

        // Missing keys and tables keep their defaults; dotted keys work too.
        let c = parse("limits.timeout_seconds = 5\n[pool]\nqueue = 3\n").unwrap();
        assert_eq!(c.limits.timeout_seconds, 5);
        assert_eq!(c.limits.memory_mb, 1024);
        assert_eq!(c.pool.queue, 3);
        assert_eq!(c.pool.per_user_running, 2);
        assert_eq!(c.rate_limit, RateLimitSection::default());
        // Dates are accepted for as_of.
        let c = parse("[data]\nas_of = \"2025-11-29\"\n").unwrap();
        assert_eq!(c.data.as_of.as_deref(), Some("2025-11-29"));
    }

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
                "unknown table [limit] (did you mean 'limits'? expected one of [data], [limits]"
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

    #[test]
    fn to_toml_string_round_trips() {
        let c = Config::default();
        let shown = c.to_toml_string();
        assert!(
            shown.contains("[limits]\ntimeout_seconds = 30\n"),
            "{shown}"
        );
        assert!(
            shown.contains("[data]\n# as_of is not set (the default)\n"),
            "{shown}"
        );
        assert!(shown.contains("admins = []"), "{shown}");
        for (section, key) in KEYS {
            assert!(shown.contains(&format!("[{section}]")));
            assert!(
                shown.contains(&format!("{key} ")),
                "{key} missing:\n{shown}"
            );
        }
        assert_eq!(parse(&shown).unwrap(), c);

        let mut c = Config::default();
        c.data.as_of = Some("2025-11-29".into());
        c.limits.memory_mb = 2048;
        c.permissions.admins = vec!["U1".into(), "alice".into()];
        c.permissions.save_channels = vec!["C\"1\\".into()];
        c.validator.enabled = false;
        c.validator.allowed_modules = vec![];
        c.console.user = "o'brien".into();
        c.slack.api_url = "http://localhost:1/api/".into();
        let shown = c.to_toml_string();
        assert!(shown.contains("as_of = \"2025-11-29\""), "{shown}");
        assert_eq!(parse(&shown).unwrap(), c, "{shown}");
    }

    #[test]
    fn keys_cover_every_field() {
        let mut c = Config::default();
        c.data.as_of = Some("latest".into());
        let table = toml::Table::try_from(&c).unwrap();
        let mut fields = BTreeSet::new();
        for (section, value) in &table {
            for key in value.as_table().unwrap().keys() {
                fields.insert((section.clone(), key.clone()));
            }
        }
        let keys: BTreeSet<(String, String)> = KEYS
            .iter()
            .map(|(s, k)| ((*s).to_owned(), (*k).to_owned()))
            .collect();
        assert_eq!(fields, keys);
        let names: BTreeSet<String> = Config::env_var_names().into_iter().collect();
        assert_eq!(names.len(), KEYS.len(), "environment names are unique");
        assert!(names.contains("TRADEBOX_RATE_LIMIT_WINDOW_SECONDS"));
        // Every key can be set from the environment.
        for (section, key) in KEYS {
            let mut c = Config::default();
            assert!(
                c.set_from_env(section, key, "1").is_some(),
                "{section}.{key}"
            );
            assert!(c.expected(section, key).is_some());
        }
    }

    #[test]
    fn every_key_is_documented() {
        for section in sections() {
            assert!(
                DOC.contains(&format!("## [{section}]")),
                "docs lack [{section}]"
            );
        }
        for (section, key) in KEYS {
            assert!(
                DOC.contains(&format!("| `{key}` |")),
                "docs lack {section}.{key}"
            );
            let var = env_var_name(section, key);
            assert!(DOC.contains(&format!("`{var}`")), "docs lack {var}");
        }
        // The sample file in the docs is a valid configuration.
        let sample = DOC
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let c = parse(sample).unwrap();
        assert_eq!(c.limits, LimitsSection::default());
        assert_eq!(c.validator, ValidatorSection::default());
        assert_eq!(c.pool, PoolSection::default());
        assert_eq!(c.slack, SlackSection::default());
    }

    #[test]
    fn load_from_home_and_file() {
        let dir = TempDir::new().unwrap();
        // No file: the defaults (and whatever the test environment sets).
        let c = Config::load(dir.path()).unwrap();
        assert_eq!(c.permissions.admins.len(), 0);

        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "[permissions]\nadmins = [\"U9\"]\n").unwrap();
        let c = Config::load(dir.path()).unwrap();
        assert_eq!(c.permissions.admins, ["U9"]);
        assert_eq!(Config::load_file(&path).unwrap(), c);

        std::fs::write(&path, "[permissions]\nadmin = [\"U9\"]\n").unwrap();
        let err = Config::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}, line 2, column 1: unknown key 'admin'",
                path.display()
            )),
            "{err}"
        );

        let missing = dir.path().join("other.toml");
        let err = Config::load_file(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("other.toml"), "{err}");

        // A folder where the file should be: an error, not the defaults.
        let home = TempDir::new().unwrap();
        std::fs::create_dir(home.path().join(FILE_NAME)).unwrap();
        assert!(matches!(
            Config::load(home.path()),
            Err(ConfigError::Read { .. })
        ));
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
