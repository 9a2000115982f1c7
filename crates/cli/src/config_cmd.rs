//! `tradebox config show [--json]`: every setting with its effective value
//! and the layer it came from (the default, `tradebox.toml`, or the
//! environment variable that set it), then the secrets tradebox reads from
//! the environment or the home, masked: Slack tokens show only their kind
//! (`xoxb-…`), the console token is never shown.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use tradebox_core::config::{Config, Layered, Source};
use tradebox_data::Home;

use crate::sandbox_setup::SetupError;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its effective value and where it came from.
    #[command(after_help = SHOW_HELP)]
    Show(ShowArgs),
}

const SHOW_HELP: &str = "Settings come from three layers, each overriding the one before:
built-in defaults, then $TRADEBOX_HOME/tradebox.toml, then environment
variables TRADEBOX_<SECTION>_<KEY> (e.g. TRADEBOX_LIMITS_TIMEOUT_SECONDS=10).
Each line says which layer set it. The text output is a valid tradebox.toml:
copy it and change what you need. Secrets (Slack tokens, the console token)
are never read from the file; they are listed at the end, masked.

A tradebox.toml that cannot be used is an error (exit code 2) naming the
file, line, column and key.

Examples:
  tradebox config show                              # what tradebox would use now
  TRADEBOX_POOL_WORKERS=4 tradebox config show      # what a variable changes
  tradebox config show --json | jq '.settings.limits.timeout_seconds'
  tradebox --home /srv/tradebox config show         # another home's tradebox.toml

See docs/configuration.md for every key.";

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print one JSON object (settings.<table>.<key>.{value, source, ...}) instead of TOML.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: &ConfigCommand, home: &Home) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Show(args) => show(args, home),
    }
}

fn show(args: &ShowArgs, home: &Home) -> anyhow::Result<()> {
    let layered = Config::load_layered(home.root()).map_err(|e| SetupError(e.to_string()))?;
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    let view = View::new(home, &layered, &env, &names);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view.json())?);
    } else {
        print!("{}", view.text());
    }
    Ok(())
}

/// The environment variable that overrides `[slack] api_url` and
/// `TRADEBOX_SLACK_API_URL` (read by the Slack front end).
const SLACK_API_URL: &str = "SLACK_API_URL";
use crate::app::DATABASE_URL;

/// The secrets the Slack front end reads, with the prefix their value starts with.
const SLACK_SECRETS: &[(&str, Option<&str>)] = &[
    ("SLACK_BOT_TOKEN", Some("xoxb-")),
    ("SLACK_APP_TOKEN", Some("xapp-")),
    ("SLACK_SIGNING_SECRET", None),
];

/// The console token's variable (`tradebox serve`).
const CONSOLE_TOKEN_VAR: &str = "TRADEBOX_TOKEN";

/// One setting as shown.
struct Shown {
    section: &'static str,
    key: &'static str,
    toml: Option<String>,
    json: Value,
    source: Source,
    env_var: String,
}

/// One secret as shown: whether it is set and where, never its value.
struct Secret {
    name: String,
    /// `None`: not set.
    state: Option<SecretState>,
}

enum SecretState {
    /// A Slack token's kind (`xoxb-…`), or `…` when hidden entirely.
    Env { masked: String },
    /// The console token from `TRADEBOX_TOKEN`.
    ConsoleEnv,
    /// The console token in its file.
    ConsoleFile(PathBuf),
}

/// Everything `config show` prints.
struct View {
    home: PathBuf,
    file: PathBuf,
    file_found: bool,
    settings: Vec<Shown>,
    secrets: Vec<Secret>,
    /// `[[data.sources]]`, from the file only.
    sources: Vec<tradebox_data::sources::SourceConfig>,
    /// Token- or secret-like variables tradebox does not read.
    unused: Vec<String>,
}

impl View {
    fn new(
        home: &Home,
        layered: &Layered,
        env: &dyn Fn(&str) -> Option<String>,
        env_names: &[String],
    ) -> View {
        let mut settings: Vec<Shown> = layered
            .entries()
            .into_iter()
            .map(|e| Shown {
                section: e.section,
                key: e.key,
                toml: e.toml,
                json: e.json,
                source: e.source.clone(),
                env_var: e.env_var,
            })
            .collect();
        // The Slack front end prefers SLACK_API_URL to [slack] api_url.
        if let Some(url) = env(SLACK_API_URL) {
            if let Some(s) = settings
                .iter_mut()
                .find(|s| (s.section, s.key) == ("slack", "api_url"))
            {
                s.toml = Some(Value::from(url.as_str()).to_string());
                s.json = Value::from(url);
                s.source = Source::Env(SLACK_API_URL.to_owned());
            }
        }
        // [store] url: DATABASE_URL when unset; the password never shown.
        if let Some(s) = settings
            .iter_mut()
            .find(|s| (s.section, s.key) == ("store", "url"))
        {
            if s.json.is_null() {
                if let Some(url) = env(DATABASE_URL) {
                    s.json = Value::from(url);
                    s.source = Source::Env(DATABASE_URL.to_owned());
                }
            }
            if let Some(url) = s.json.as_str() {
                let shown = tradebox_core::store::redact(url);
                s.toml = Some(Value::from(shown.as_str()).to_string());
                s.json = Value::from(shown);
            }
        }
        let mut secrets: Vec<Secret> = SLACK_SECRETS
            .iter()
            .map(|(name, prefix)| Secret {
                name: (*name).to_owned(),
                state: env(name).map(|v| SecretState::Env {
                    masked: mask(&v, *prefix),
                }),
            })
            .collect();
        let token_file = home.root().join("console-token");
        let console = if env(CONSOLE_TOKEN_VAR).is_some() {
            Some(SecretState::ConsoleEnv)
        } else {
            std::fs::read_to_string(&token_file)
                .ok()
                .filter(|t| t.trim().len() >= 32)
                .map(|_| SecretState::ConsoleFile(token_file))
        };
        secrets.push(Secret {
            name: "console token".to_owned(),
            state: console,
        });
        let read = |name: &str| {
            name == CONSOLE_TOKEN_VAR || SLACK_SECRETS.iter().any(|(known, _)| *known == name)
        };
        let mut unused: Vec<String> = env_names
            .iter()
            .filter(|name| name.starts_with("TRADEBOX_") || name.starts_with("SLACK_"))
            .filter(|name| name.contains("TOKEN") || name.contains("SECRET"))
            .filter(|name| !read(name) && env(name).is_some())
            .cloned()
            .collect();
        unused.sort();
        unused.dedup();
        View {
            home: home.root().to_path_buf(),
            file: layered.file.clone(),
            file_found: layered.file_found,
            settings,
            secrets,
            sources: layered.config.data.sources.clone(),
            unused,
        }
    }

    /// A `tradebox.toml` with the effective values, each line's comment
    /// saying where its value came from.
    fn text(&self) -> String {
        let mut out = String::from(
            "# tradebox configuration: defaults, then tradebox.toml, then\n\
             # TRADEBOX_<SECTION>_<KEY> environment variables (see docs/configuration.md).\n",
        );
        out.push_str(&format!("# home: {}\n", self.home.display()));
        if self.file_found {
            out.push_str(&format!("# file: {}\n", self.file.display()));
        } else {
            out.push_str(&format!(
                "# file: {} (none: defaults and environment only)\n",
                self.file.display()
            ));
        }
        let mut section = "";
        for s in &self.settings {
            if s.section != section {
                if section == "data" {
                    out.push_str(&self.sources_text());
                }
                section = s.section;
                out.push_str(&format!("\n[{section}]\n"));
            }
            let from = describe(&s.source);
            match &s.toml {
                Some(value) => {
                    let line = format!("{} = {value}", s.key);
                    out.push_str(&format!("{line:<39} # {from}\n"));
                }
                None => out.push_str(&format!("# {} is not set ({from})\n", s.key)),
            }
        }
        out.push_str("\n# Secrets: only from the environment (and the home), never shown.\n");
        for secret in &self.secrets {
            let state = match &secret.state {
                None if secret.name == "console token" => {
                    "not made yet (tradebox serve makes one)".to_owned()
                }
                None => "not set".to_owned(),
                Some(SecretState::Env { masked }) => format!("set ({masked})"),
                Some(SecretState::ConsoleEnv) => format!("set by {CONSOLE_TOKEN_VAR} (hidden)"),
                Some(SecretState::ConsoleFile(path)) => {
                    format!("in {} (hidden)", path.display())
                }
            };
            out.push_str(&format!("#   {:<22} {state}\n", secret.name));
        }
        if !self.unused.is_empty() {
            out.push_str(&format!(
                "# Set but not read by tradebox: {}\n",
                self.unused.join(", ")
            ));
        }
        out
    }

    /// The same as one JSON object.
    /// The `[[data.sources]]` tables (they come from the file alone).
    fn sources_text(&self) -> String {
        let mut out = String::new();
        for source in &self.sources {
            out.push_str("\n[[data.sources]]                       # file\n");
            out.push_str(&tradebox_core::config::source_toml(source));
        }
        out
    }

    fn json(&self) -> Value {
        let mut settings = Map::new();
        for s in &self.settings {
            let mut entry = json!({ "value": s.json, "env": s.env_var });
            match &s.source {
                Source::Default => entry["source"] = json!("default"),
                Source::File(path) => {
                    entry["source"] = json!("file");
                    entry["path"] = json!(path);
                }
                Source::Env(var) => {
                    entry["source"] = json!("env");
                    entry["var"] = json!(var);
                }
            }
            let table = settings
                .entry(s.section)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(table) = table {
                table.insert(s.key.to_owned(), entry);
            }
        }
        let mut secrets = Map::new();
        for secret in &self.secrets {
            let value = match &secret.state {
                None => json!({ "set": false }),
                Some(SecretState::Env { masked }) => json!({ "set": true, "masked": masked }),
                Some(SecretState::ConsoleEnv) => {
                    json!({ "set": true, "source": "env", "var": CONSOLE_TOKEN_VAR })
                }
                Some(SecretState::ConsoleFile(path)) => {
                    json!({ "set": true, "source": "file", "path": path })
                }
            };
            secrets.insert(secret.name.replace(' ', "_"), value);
        }
        json!({
            "home": self.home,
            "file": { "path": self.file, "found": self.file_found },
            "settings": settings,
            "sources": self.sources,
            "secrets": secrets,
            "unused_secrets": self.unused,
        })
    }
}

/// Where a value came from, in words.
fn describe(source: &Source) -> String {
    match source {
        Source::Default => "default".to_owned(),
        Source::File(path) => format!("file {}", path.display()),
        Source::Env(var) => format!("env {var}"),
    }
}

/// A secret's kind and nothing more: the expected prefix (`xoxb-…`) when
/// the value starts with it, else `…`.
fn mask(value: &str, prefix: Option<&str>) -> String {
    match prefix {
        Some(prefix) if value.starts_with(prefix) => format!("{prefix}…"),
        _ => "…".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn view(vars: &[(&str, &str)], home: &Home) -> View {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let layered = Config::load_layered(home.root()).unwrap();
        let env = move |name: &str| map.get(name).cloned().filter(|v| !v.is_empty());
        let names: Vec<String> = vars.iter().map(|(k, _)| (*k).to_owned()).collect();
        View::new(home, &layered, &env, &names)
    }

    #[test]
    fn secrets_are_masked_and_the_console_token_never_shown() {
        let dir = tempfile::TempDir::new().unwrap();
        let home = Home::new(dir.path());
        let token = "0123456789abcdef0123456789abcdef0123";
        std::fs::write(dir.path().join("console-token"), token).unwrap();
        let v = view(
            &[
                ("SLACK_BOT_TOKEN", "xoxb-1234-secret"),
                ("SLACK_APP_TOKEN", "not-an-app-token"),
                ("TRADEBOX_SLACK_BOT_TOKEN", "xoxb-9999-hidden"),
                ("SLACK_API_URL", "http://127.0.0.1:9/api/"),
            ],
            &home,
        );
        let text = v.text();
        let json = v.json().to_string();
        for shown in [&text, &json] {
            for secret in ["1234-secret", "not-an-app-token", "9999-hidden", token] {
                assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
            }
        }
        assert!(
            text.contains("SLACK_BOT_TOKEN        set (xoxb-…)"),
            "{text}"
        );
        assert!(text.contains("SLACK_APP_TOKEN        set (…)"), "{text}");
        assert!(text.contains("SLACK_SIGNING_SECRET   not set"), "{text}");
        assert!(text.contains("console token          in "), "{text}");
        assert!(text.contains("Set but not read by tradebox: TRADEBOX_SLACK_BOT_TOKEN"));
        let api_url = text.lines().find(|l| l.starts_with("api_url = ")).unwrap();
        assert!(api_url.starts_with("api_url = \"http://127.0.0.1:9/api/\" "));
        assert!(api_url.ends_with(" # env SLACK_API_URL"), "{api_url}");
        let json = v.json();
        assert_eq!(json["secrets"]["console_token"]["source"], "file");
        assert_eq!(json["secrets"]["SLACK_BOT_TOKEN"]["masked"], "xoxb-…");
        assert_eq!(json["settings"]["slack"]["api_url"]["var"], "SLACK_API_URL");

        let v = view(&[("TRADEBOX_TOKEN", "abcdefghijklmnopqrstu")], &home);
        assert!(v
            .text()
            .contains("console token          set by TRADEBOX_TOKEN (hidden)"));
        assert!(!v.text().contains("abcdefghijklmnopqrstu"));
        assert_eq!(
            v.json()["secrets"]["console_token"]["var"],
            "TRADEBOX_TOKEN"
        );
        assert_eq!(v.json()["unused_secrets"], json!([]));
    }

    #[test]
    fn the_store_url_never_shows_its_password() {
        let dir = tempfile::TempDir::new().unwrap();
        let home = Home::new(dir.path());
        // Unset in the file: DATABASE_URL, named as the source.
        let v = view(
            &[(
                "DATABASE_URL",
                "postgres://desk:hunter2@db.internal:5432/tb",
            )],
            &home,
        );
        let (text, json) = (v.text(), v.json());
        assert!(!text.contains("hunter2") && !json.to_string().contains("hunter2"));
        let line = text.lines().find(|l| l.starts_with("url = ")).unwrap();
        assert!(
            line.starts_with("url = \"postgres://desk:***@db.internal:5432/tb\""),
            "{line}"
        );
        assert!(line.ends_with(" # env DATABASE_URL"), "{line}");
        assert_eq!(json["settings"]["store"]["url"]["var"], "DATABASE_URL");
        // Set in the file: that one, masked too.
        std::fs::write(
            dir.path().join("tradebox.toml"),
            "[store]\nurl = \"postgres://desk:s3cret@db/tb\"\n",
        )
        .unwrap();
        let v = view(&[("DATABASE_URL", "postgres://x:other@h/db")], &home);
        let text = v.text();
        assert!(
            !text.contains("s3cret") && !text.contains("other@"),
            "{text}"
        );
        assert!(
            text.contains("url = \"postgres://desk:***@db/tb\""),
            "{text}"
        );
    }
}
