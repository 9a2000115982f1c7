//! The schema of `tradebox.toml`: one struct per table, the built-in
//! default of every key, and the key table ([`KEYS`]) from which the typed
//! access by name (set from the environment, render as TOML, what a value
//! must look like) is generated. `docs/configuration.md` describes every key;
//! a test keeps it complete.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checks::{check_name, LISTEN_SHAPE};
use super::ConfigError;

/// The file name of the configuration inside `$TRADEBOX_HOME`.
pub const FILE_NAME: &str = "tradebox.toml";

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
    pub store: StoreSection,
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
    /// `[[data.sources]]`: what `serve` and `data sync` follow. Set in the
    /// file only (a list of tables has no environment form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<tradebox_data::sources::SourceConfig>,
}

/// `[store]`: where the functions, the audit trail and the rate limiter's
/// counters live (the trades stay in the home's SQLite file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite:PATH` or `postgres://user:password@host:port/database`;
    /// unset: `DATABASE_URL` when set, else `$TRADEBOX_HOME/tradebox.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// This process's name in the audit trail; unset: `host:pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
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
    /// Number of workers; 0 = one per core, plus one.
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
    /// `workers`, with 0 resolved to one per core plus one: a job that runs
    /// long (demoted by its zygote, it yields the CPU) then never takes a
    /// core's worth of workers from short ones.
    pub fn effective_workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from) + 1
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
            pub(super) fn set_from_env(
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
            pub(super) fn render(&self, section: &str, key: &str) -> Option<String> {
                $($(
                    if section == stringify!($section) && key == stringify!($key) {
                        return self.$section.$key.to_toml();
                    }
                )+)+
                None
            }

            /// What a key's value must look like; `None` for an unknown key.
            pub(super) fn expected(&self, section: &str, key: &str) -> Option<&'static str> {
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
    store { url, replica }
    limits { timeout_seconds, memory_mb, output_bytes, scratch_mb, max_code_bytes }
    pool { workers, queue, per_user_running, per_user_waiting }
    rate_limit { executions, window_seconds }
    permissions { admins, execute_users, execute_channels, save_users, save_channels }
    validator { enabled, allowed_modules }
    audit { retention_days }
    console { user, user_is_admin, listen }
    slack { api_url }
}

/// The keys of one `[[data.sources]]` table, as TOML lines.
pub fn source_toml(source: &tradebox_data::sources::SourceConfig) -> String {
    toml::to_string(source).unwrap_or_else(|e| format!("# this source cannot be shown: {e}\n"))
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

/// The keys of a table, in file order.
pub(super) fn keys_of(section: &str) -> impl Iterator<Item = &'static str> + '_ {
    KEYS.iter()
        .filter(move |(s, _)| *s == section)
        .map(|(_, k)| *k)
}

/// Whether `section.key` is a configuration key.
pub(super) fn is_key(section: &str, key: &str) -> bool {
    KEYS.iter().any(|(s, k)| *s == section && *k == key)
}

impl Config {
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
            if section == "data" {
                for source in &self.data.sources {
                    out.push_str(&format!("\n[[data.sources]]\n{}", source_toml(source)));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env_var_name;
    use crate::config::test_support::parse;
    use std::collections::BTreeSet;

    const DOC: &str = include_str!("../../../../docs/configuration.md");

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
        use tradebox_data::sources::{Kind, SourceConfig};
        let mut inbox = SourceConfig::new("drop", Kind::CsvInbox, "/srv/inbox");
        inbox.exchange = Some("kraken".into());
        c.data.sources = vec![
            SourceConfig::new("cex", Kind::CexReporter, "/srv/cex/trade_cache.db"),
            inbox,
        ];
        let shown = c.to_toml_string();
        assert!(shown.contains("as_of = \"2025-11-29\""), "{shown}");
        assert!(shown.contains("[[data.sources]]\nid = \"cex\""), "{shown}");
        assert_eq!(parse(&shown).unwrap(), c, "{shown}");
    }

    #[test]
    fn keys_cover_every_field() {
        let mut c = Config::default();
        c.data.as_of = Some("latest".into());
        c.store.url = Some("sqlite:/srv/tradebox.db".into());
        c.store.replica = Some("a".into());
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
}
