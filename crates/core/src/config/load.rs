//! Loading: the three layers in order (built-in defaults, then
//! `$TRADEBOX_HOME/tradebox.toml` or a file named explicitly, then the
//! `TRADEBOX_*` environment), and, for `tradebox config show`, the layer
//! each key's effective value came from ([`Layered`], [`Source`]).

use std::path::{Path, PathBuf};

use serde_json::Value;
use toml::de::DeTable;

use super::diagnostics::{describe_toml_error, key_span, position_of};
use super::env::{env_var_name, process_env};
use super::{Config, ConfigError, FILE_NAME, KEYS};

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

/// A configuration with the layer that set each of its keys.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The effective configuration, as [`Config::load`] returns it.
    pub config: Config,
    /// The configuration file that was looked for.
    pub file: PathBuf,
    /// Whether that file exists (and was read).
    pub file_found: bool,
    /// One per [`KEYS`] entry, in that order.
    sources: Vec<Source>,
}

/// One key of a [`Layered`] configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub section: &'static str,
    pub key: &'static str,
    /// The value as TOML; `None` when unset (only `data.as_of` can be).
    pub toml: Option<String>,
    /// The value as JSON (`null` when unset).
    pub json: Value,
    pub source: &'a Source,
    /// The environment variable that overrides the key.
    pub env_var: String,
}

impl Layered {
    /// The layer that set `section.key`; `None` for an unknown key.
    pub fn source(&self, section: &str, key: &str) -> Option<&Source> {
        KEYS.iter()
            .position(|(s, k)| *s == section && *k == key)
            .and_then(|i| self.sources.get(i))
    }

    /// Every key with its value and source, in [`KEYS`] order.
    pub fn entries(&self) -> Vec<Entry<'_>> {
        let json = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        KEYS.iter()
            .zip(&self.sources)
            .map(|(&(section, key), source)| Entry {
                section,
                key,
                toml: self.config.render(section, key),
                json: json
                    .get(section)
                    .and_then(|t| t.get(key))
                    .cloned()
                    .unwrap_or(Value::Null),
                source,
                env_var: env_var_name(section, key),
            })
            .collect()
    }
}

impl Config {
    /// The configuration of the home directory `home`: `home/tradebox.toml`
    /// when it exists (defaults otherwise), then the process environment.
    pub fn load(home: &Path) -> Result<Config, ConfigError> {
        Config::load_layered(home).map(|layered| layered.config)
    }

    /// [`Config::load`], telling for every key which layer set it.
    pub fn load_layered(home: &Path) -> Result<Layered, ConfigError> {
        let path = home.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no configuration file; using defaults");
                None
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        layered(path, text.as_deref(), process_env()?)
    }

    /// The configuration in the file `path`, which must exist, then the
    /// process environment.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        layered(path.to_path_buf(), Some(&text), process_env()?).map(|layered| layered.config)
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
}

/// The layers over each other: the file `path` with the text `text` (`None`:
/// it does not exist), then the variables `vars`.
fn layered<I, K, V>(path: PathBuf, text: Option<&str>, vars: I) -> Result<Layered, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut sources = vec![Source::Default; KEYS.len()];
    let mut config = match text {
        Some(text) => {
            let config = Config::from_toml_str(text, &path.display().to_string())?;
            // The document parsed as a typed configuration, so it parses as a table.
            let table: toml::Table = toml::from_str(text).unwrap_or_default();
            for (i, (section, key)) in KEYS.iter().enumerate() {
                let in_file = table
                    .get(*section)
                    .and_then(toml::Value::as_table)
                    .is_some_and(|t| t.contains_key(*key));
                if in_file {
                    sources[i] = Source::File(path.clone());
                }
            }
            config
        }
        None => Config::default(),
    };
    config.apply_env_traced(vars, |section, key, var| {
        if let Some(i) = KEYS.iter().position(|k| *k == (section, key)) {
            sources[i] = Source::Env(var.to_owned());
        }
    })?;
    Ok(Layered {
        config,
        file: path,
        file_found: text.is_some(),
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

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
    fn sources_name_the_layer_of_every_key() {
        let path = PathBuf::from("/h/tradebox.toml");
        let text = "limits.memory_mb = 256\nlimits.timeout_seconds = 5\n[pool]\nqueue = 64\n";
        let vars = [
            ("TRADEBOX_LIMITS_TIMEOUT_SECONDS", "7"),
            ("TRADEBOX_RATE_LIMIT_EXECUTIONS", "3"),
            ("TRADEBOX_HOME", "/elsewhere"),
        ];
        let l = layered(path.clone(), Some(text), vars).unwrap();
        assert!(l.file_found);
        assert_eq!(l.file, path);
        let file = Source::File(path.clone());
        assert_eq!(
            l.source("limits", "timeout_seconds"),
            Some(&Source::Env("TRADEBOX_LIMITS_TIMEOUT_SECONDS".into()))
        );
        assert_eq!(l.source("limits", "memory_mb"), Some(&file));
        assert_eq!(
            l.source("pool", "queue"),
            Some(&file),
            "a default value in the file"
        );
        assert_eq!(
            l.source("rate_limit", "executions"),
            Some(&Source::Env("TRADEBOX_RATE_LIMIT_EXECUTIONS".into()))
        );
        assert_eq!(l.source("audit", "retention_days"), Some(&Source::Default));
        assert_eq!(l.source("audit", "nothing"), None);
        assert_eq!(
            (l.config.limits.timeout_seconds, l.config.limits.memory_mb),
            (7, 256)
        );

        let entries = l.entries();
        assert_eq!(entries.len(), KEYS.len());
        let timeout = &entries[3];
        assert_eq!(
            (timeout.section, timeout.key),
            ("limits", "timeout_seconds")
        );
        assert_eq!(timeout.toml.as_deref(), Some("7"));
        assert_eq!(timeout.json, Value::from(7));
        assert_eq!(timeout.env_var, "TRADEBOX_LIMITS_TIMEOUT_SECONDS");
        let as_of = &entries[0];
        assert_eq!((as_of.toml.as_deref(), &as_of.json), (None, &Value::Null));

        // No file: everything is a default or the environment.
        let l = layered(path, None, [("TRADEBOX_DATA_AS_OF", "latest")]).unwrap();
        assert!(!l.file_found);
        assert_eq!(l.entries()[0].json, Value::from("latest"));
        let defaults = l
            .entries()
            .iter()
            .filter(|e| *e.source == Source::Default)
            .count();
        assert_eq!(defaults, KEYS.len() - 1);
    }

    #[test]
    fn sources_report_the_errors_of_each_layer() {
        let path = PathBuf::from("/h/tradebox.toml");
        let err = layered(
            path.clone(),
            Some("[limits]\ntimout_seconds = 1\n"),
            [("A", "")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/h/tradebox.toml, line 2, column 1: unknown key"),
            "{err}"
        );
        let err = layered(path, None, [("TRADEBOX_POOL_QUEUE", "many")]).unwrap_err();
        assert!(matches!(err, ConfigError::Env { .. }), "{err:?}");
    }
}
