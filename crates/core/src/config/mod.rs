//! The configuration: built-in defaults for every key, then
//! `$TRADEBOX_HOME/tradebox.toml` (or a file named explicitly,
//! [`Config::load_file`]), then `TRADEBOX_<SECTION>_<KEY>` environment
//! variables. `docs/configuration.md` describes every key;
//! [`Config::load_layered`] tells which layer set each key and
//! `tradebox config show` prints that, with the effective values.
//!
//! By concern:
//!
//! - `schema.rs`: the tables and keys of `tradebox.toml`, their
//!   defaults, and [`KEYS`], the table every access by name is generated from;
//! - `env.rs`: the `TRADEBOX_*` overrides ([`Config::apply_env`]);
//! - `checks.rs`: ranges and shapes of values ([`Config::validate`]);
//! - `diagnostics.rs`: [`ConfigError`], whose messages say
//!   what to fix where;
//! - `load.rs`: the layers in order, and the [`Source`] of every key.
//!
//! # Strictness
//!
//! Every table refuses unknown keys (`deny_unknown_fields`), so a typo is an
//! error rather than a silently ignored setting. A [`ConfigError`] names the
//! file, the line and column, the table and the key, e.g.
//! `tradebox.toml, line 7, column 1: unknown key 'timout_seconds' in [limits]
//! (did you mean 'timeout_seconds'? expected one of ...)`; an environment
//! variable with a bad value is named in the same way. Values are checked
//! for range and shape when the file and each variable are read.
//!
//! # Secrets
//!
//! Slack tokens are never read from the file (a key such as `bot_token` is
//! refused): they come only from the environment, where the Slack front end
//! reads them. The console's token is not a setting either. Nothing in a
//! [`Config`] is secret, so it can be printed whole.

mod checks;
mod diagnostics;
mod env;
mod load;
mod schema;
#[cfg(test)]
mod test_support;

pub use diagnostics::{ConfigError, Position};
pub use env::{env_var_name, ENV_PREFIX};
pub use load::{Entry, Layered, Source};
pub use schema::{
    sections, source_toml, AuditSection, Config, ConsoleSection, DataSection, LimitsSection,
    PermissionsSection, PoolSection, RateLimitSection, SlackSection, ValidatorSection,
    DEFAULT_ALLOWED_MODULES, FALLBACK_CONSOLE_USER, FILE_NAME, KEYS,
};
