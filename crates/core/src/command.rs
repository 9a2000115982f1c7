//! The grammar of tradebox's commands: turns a slash command and its text
//! (from Slack, the web console or `tradebox chat`) into a [`Command`], or a
//! [`UsageError`] whose message tells the user what to type instead.
//!
//! | command | grammar |
//! |---|---|
//! | `/analyze <code>` | code = [`strip_code`] of the text |
//! | `/savefunc name \| description \| code` | split on the first two `\|`; description may be empty |
//! | `/runfunc [name] [key=value …]` | no name: the top-10 list; arguments by [`parse_params`] |
//! | `/listfuncs [query] [page=N]` | a trailing `page=N` (N ≥ 1) picks the page |
//! | `/delfunc name` | |
//! | `/tradebox help [command]` (also `/help`) | help on all commands or one |
//! | Run button, `action_id` `run_func_<name>`, value `name` | [`parse_action`] |
//!
//! The text is first normalised with [`normalize`]. Function names have
//! [`validate_name`]'s shape; code is at most [`Grammar::max_code_bytes`]
//! bytes, the configured `limits.max_code_bytes`.
//!
//! Messages are Slack mrkdwn (`*bold*`, `` `code` ``, ``` blocks), as in the
//! bot this replaces, without emoji or Slack markup: a front end adds its own
//! error decoration, and a Slack renderer may escape `& < >` in them as Slack
//! asks. User input quoted in a message is cut to one short line with its
//! backticks replaced, so it cannot break out of its code span.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::params::{parse_params, ParamError};
use crate::text::{excerpt, normalize, strip_code};

/// Longest function name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Prefix of the Run button's `action_id` (`run_func_<name>`).
pub const RUN_ACTION_PREFIX: &str = "run_func_";

/// Longest excerpt of user input quoted in a message.
const MAX_SHOWN: usize = 64;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    /// `/analyze <code>`: run a snippet.
    Analyze { code: String },
    /// `/savefunc name | description | code`: save (a new version of) a function.
    SaveFunc {
        name: String,
        description: String,
        code: String,
    },
    /// `/runfunc [name] [key=value …]`; no name = the top 10 by use.
    RunFunc {
        name: Option<String>,
        params: Map<String, Value>,
    },
    /// `/listfuncs [query] [page=N]`; pages count from 1.
    ListFuncs { query: Option<String>, page: usize },
    /// `/delfunc name`.
    DelFunc { name: String },
    /// The Run button of `/listfuncs` (`action_id` `run_func_<name>`).
    RunAction { name: String },
    /// `/tradebox help [command]`; the topic is a command name without its
    /// slash (`"analyze"`), `None` for all commands.
    Help { topic: Option<String> },
}

impl Command {
    /// Which command this is (the Run button counts as `/runfunc`).
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Analyze { .. } => CommandKind::Analyze,
            Command::SaveFunc { .. } => CommandKind::SaveFunc,
            Command::RunFunc { .. } | Command::RunAction { .. } => CommandKind::RunFunc,
            Command::ListFuncs { .. } => CommandKind::ListFuncs,
            Command::DelFunc { .. } => CommandKind::DelFunc,
            Command::Help { .. } => CommandKind::Help,
        }
    }

    /// Whether the command runs code (and so counts against the rate limit).
    pub fn executes_code(&self) -> bool {
        matches!(
            self,
            Command::Analyze { .. }
                | Command::RunFunc { name: Some(_), .. }
                | Command::RunAction { .. }
        )
    }
}

/// The slash commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandKind {
    Analyze,
    SaveFunc,
    RunFunc,
    ListFuncs,
    DelFunc,
    /// `/tradebox` (`/help` is accepted as well).
    #[serde(rename = "tradebox")]
    Help,
}

impl CommandKind {
    /// Every command, in the order help lists them.
    pub const ALL: [CommandKind; 6] = [
        CommandKind::Analyze,
        CommandKind::SaveFunc,
        CommandKind::RunFunc,
        CommandKind::ListFuncs,
        CommandKind::DelFunc,
        CommandKind::Help,
    ];

    /// Recognise a command name: with or without the leading `/`, any case,
    /// surrounding whitespace ignored. `help` is an alias of `tradebox`.
    pub fn from_name(name: &str) -> Option<CommandKind> {
        let name = name.trim();
        let name = name.strip_prefix('/').unwrap_or(name);
        CommandKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
            .or_else(|| {
                name.eq_ignore_ascii_case("help")
                    .then_some(CommandKind::Help)
            })
    }

    /// The name without its slash: `analyze`, ..., `tradebox`.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Analyze => "analyze",
            CommandKind::SaveFunc => "savefunc",
            CommandKind::RunFunc => "runfunc",
            CommandKind::ListFuncs => "listfuncs",
            CommandKind::DelFunc => "delfunc",
            CommandKind::Help => "tradebox",
        }
    }

    /// The slash command: `/analyze`, ..., `/tradebox`.
    pub fn slash(self) -> String {
        format!("/{}", self.name())
    }

    /// The command's form, as shown after "Usage:".
    pub fn synopsis(self) -> &'static str {
        match self {
            CommandKind::Analyze => "/analyze <python_code>",
            CommandKind::SaveFunc => "/savefunc name | description | code",
            CommandKind::RunFunc => "/runfunc [name] [key=value ...]",
            CommandKind::ListFuncs => "/listfuncs [query] [page=N]",
            CommandKind::DelFunc => "/delfunc <function_name>",
            CommandKind::Help => "/tradebox help [command]",
        }
    }

    /// One line on what the command does.
    pub fn summary(self) -> &'static str {
        match self {
            CommandKind::Analyze => {
                "run a pandas snippet against the trade data; set `result` to what you want back"
            }
            CommandKind::SaveFunc => {
                "save code under a name for reuse (saving again makes a new version)"
            }
            CommandKind::RunFunc => {
                "run a saved function (its arguments reach the code as `params`); \
                 without a name, list the 10 most used"
            }
            CommandKind::ListFuncs => {
                "list saved functions, or those whose name or description matches the query"
            }
            CommandKind::DelFunc => "delete a function you created",
            CommandKind::Help => "show this help, or the usage of one command",
        }
    }

    /// An example of the command, as typed.
    pub fn example(self) -> &'static str {
        match self {
            CommandKind::Analyze => {
                "/analyze\ndf = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum()"
            }
            CommandKind::SaveFunc => {
                "/savefunc volume_by_exchange | Calculate volume by exchange | \
                 df = load_trades(); result = df.groupby('exchange')['amount'].sum()"
            }
            CommandKind::RunFunc => "/runfunc volume_by_exchange days=7 exchange=mexc",
            CommandKind::ListFuncs => "/listfuncs volume",
            CommandKind::DelFunc => "/delfunc volume_by_exchange",
            CommandKind::Help => "/tradebox help savefunc",
        }
    }

    /// The usage message with its example, as the original bot showed it on
    /// empty text (`/delfunc` keeps the original's plain "Usage:").
    pub fn usage(self) -> String {
        let head = match self {
            CommandKind::DelFunc => format!("Usage: `{}`", self.synopsis()),
            _ => format!("*Usage:* `{}`", self.synopsis()),
        };
        format!("{head}\n\n*Example:*\n```\n{}\n```", self.example())
    }
}

/// Why a command could not be parsed. `Display` gives the message for the
/// user (mrkdwn).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// Empty text where the command needs some: its usage and an example.
    #[error("{}", .command.usage())]
    Usage { command: CommandKind },
    /// The text does not have the command's shape; the message says which
    /// shape it needs.
    #[error("{message}")]
    InvalidFormat {
        command: CommandKind,
        message: String,
    },
    /// A function name outside letters, digits and underscores, 1–64
    /// characters; the message says what is wrong and what is allowed.
    #[error("{message}")]
    InvalidName { name: String, message: String },
    /// A fence or a code part with nothing in it.
    #[error("{}", empty_code_message(.command))]
    EmptyCode { command: CommandKind },
    /// Code over [`Grammar::max_code_bytes`].
    #[error(
        "The code is {size} bytes long; the limit is {limit} bytes. \
         Shorten it."
    )]
    CodeTooLarge {
        command: CommandKind,
        size: usize,
        limit: usize,
    },
    /// Bad `key=value` arguments to `/runfunc`.
    #[error(transparent)]
    InvalidParams(#[from] ParamError),
    /// Not one of the commands.
    #[error(
        "Unknown command `{}`. The commands are {}.",
        shown(.command),
        command_list()
    )]
    UnknownCommand { command: String },
    /// A console line without any command.
    #[error(
        "Type a command, e.g. `/analyze result = 1`. The commands are {}.",
        command_list()
    )]
    NoCommand,
    /// `/tradebox help <topic>` with an unknown topic.
    #[error(
        "There is no help on `{}`. Ask for `/tradebox help` (all commands) or \
         `/tradebox help <command>` with one of {}.",
        shown(.topic),
        topic_list()
    )]
    UnknownTopic { topic: String },
    /// An interactive action that is not the Run button.
    #[error("Unknown action `{}`.", shown(.action_id))]
    UnknownAction { action_id: String },
    /// A Run button whose `action_id` and value name different functions.
    #[error(
        "The Run button is inconsistent: action `{}` but function `{}`. Run `/listfuncs` again.",
        shown(.action_id),
        shown(.value)
    )]
    ActionMismatch { action_id: String, value: String },
}

impl UsageError {
    /// Whether this is a plain usage message (shown as help, not as an
    /// error).
    pub fn is_usage(&self) -> bool {
        matches!(self, UsageError::Usage { .. })
    }
}

/// The grammar with its one setting, the largest code `/analyze` and
/// `/savefunc` accept. Build it from the configuration
/// ([`Grammar::new`]`(config.limits.max_code_bytes)`), so the parser and
/// the validator apply the same limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grammar {
    max_code_bytes: usize,
}

impl Default for Grammar {
    /// The grammar with the default limit (`limits.max_code_bytes`'s default).
    fn default() -> Grammar {
        Grammar::new(tradebox_validate::DEFAULT_MAX_CODE_BYTES)
    }
}

impl Grammar {
    /// A grammar accepting code of at most `max_code_bytes` bytes (UTF-8).
    pub fn new(max_code_bytes: usize) -> Grammar {
        Grammar { max_code_bytes }
    }

    /// The largest code accepted, in bytes (UTF-8).
    pub fn max_code_bytes(&self) -> usize {
        self.max_code_bytes
    }

    /// Parse a slash command (`/analyze` or `analyze`, any case) and its text.
    pub fn parse(&self, command: &str, text: &str) -> Result<Command, UsageError> {
        if command.trim().is_empty() {
            return Err(UsageError::NoCommand);
        }
        let kind = CommandKind::from_name(command).ok_or_else(|| UsageError::UnknownCommand {
            command: command.trim().to_string(),
        })?;
        let normalized = normalize(text);
        let text = normalized.trim();
        match kind {
            CommandKind::Analyze => parse_analyze(text, self.max_code_bytes),
            CommandKind::SaveFunc => parse_savefunc(text, self.max_code_bytes),
            CommandKind::RunFunc => parse_runfunc(text),
            CommandKind::ListFuncs => parse_listfuncs(text),
            CommandKind::DelFunc => parse_delfunc(text),
            CommandKind::Help => parse_help(text),
        }
    }

    /// Parse a whole line as typed in the console or `tradebox chat`:
    /// `/analyze result = 1`. The first word is the command (the slash is
    /// optional), the rest, after whitespace, its text (line breaks kept).
    pub fn parse_line(&self, line: &str) -> Result<Command, UsageError> {
        let line = line.trim_start();
        let (command, text) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        self.parse(command, text)
    }
}

/// Parse a Run button click: `action_id` `run_func_<name>`, `value` the name.
/// The name is taken from the value when there is one, else from the
/// `action_id`; when both are there they must agree.
pub fn parse_action(action_id: &str, value: &str) -> Result<Command, UsageError> {
    let Some(suffix) = action_id.trim().strip_prefix(RUN_ACTION_PREFIX) else {
        return Err(UsageError::UnknownAction {
            action_id: action_id.to_string(),
        });
    };
    let value = value.trim();
    if !value.is_empty() && !suffix.is_empty() && value != suffix {
        return Err(UsageError::ActionMismatch {
            action_id: action_id.to_string(),
            value: value.to_string(),
        });
    }
    let name = if value.is_empty() { suffix } else { value };
    validate_name(name)?;
    Ok(Command::RunAction {
        name: name.to_string(),
    })
}

/// Check a function name: ASCII letters, digits and underscores, 1 to
/// [`MAX_NAME_CHARS`] characters. The error message says what is wrong and
/// what is allowed, with a corrected name when one is obvious.
pub fn validate_name(name: &str) -> Result<(), UsageError> {
    const ALLOWED: &str = "letters, digits and underscores, 1 to 64 characters";
    let fail = |message: String| {
        Err(UsageError::InvalidName {
            name: name.to_string(),
            message,
        })
    };
    if name.is_empty() {
        return fail(format!(
            "The function name is missing. Names use {ALLOWED}, e.g. `volume_by_exchange`."
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '_'))
    {
        let what = match bad {
            ' ' => "a space".to_string(),
            c if c.is_whitespace() => "a space or line break".to_string(),
            '-' => "a dash (`-`)".to_string(),
            '`' => "a backtick".to_string(),
            c if c.is_control() => format!("the control character U+{:04X}", u32::from(c)),
            c => format!("`{c}`"),
        };
        let suggestion = suggest_name(name);
        let example = match suggestion {
            Some(s) if validate_name(&s).is_ok() => format!("`{s}`"),
            _ => "`volume_by_exchange`".to_string(),
        };
        return fail(format!(
            "The function name `{}` contains {what}. Names use only {ALLOWED}, e.g. {example}.",
            shown(name)
        ));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return fail(format!(
            "The function name `{}` is {chars} characters long; names use {ALLOWED}.",
            shown(name)
        ));
    }
    Ok(())
}

/// `my func-name` -> `my_func_name`: spaces and dashes made underscores.
fn suggest_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for word in name.split(|c: char| c.is_whitespace() || c == '-') {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(word);
    }
    (!out.is_empty() && out != name).then_some(out)
}

/// Help on every command, one example each (for `/tradebox help` and the
/// console).
pub fn help_text() -> String {
    let mut out = String::from(
        "*tradebox* answers questions about the desk's trades with pandas snippets.\n",
    );
    for kind in CommandKind::ALL {
        let example = kind
            .example()
            .replace('\n', "; ")
            .replace("/analyze; ", "/analyze ");
        out.push_str(&format!(
            "\n*`{}`*\n{}.\nExample: `{}`\n",
            kind.synopsis(),
            capitalise(kind.summary()),
            example
        ));
    }
    out.push_str(
        "\nCode may be wrapped in triple-backtick fences. The helpers `load_trades(days=30, exchange=None, ...)`, \
         `load_balances()` and `load_snapshots(days=30)` are ready, as are `pd`, `np` and `plt`.",
    );
    out
}

/// Help on one command (`/tradebox help savefunc`): what it does and its
/// usage with an example.
pub fn help_topic(kind: CommandKind) -> String {
    format!(
        "*`{}`*: {}.\n\n{}",
        kind.slash(),
        kind.summary(),
        kind.usage()
    )
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `` `/analyze`, `/savefunc`, ... `` for messages.
fn command_list() -> String {
    let names: Vec<String> = CommandKind::ALL
        .into_iter()
        .map(|kind| match kind {
            CommandKind::Help => "`/tradebox help`".to_string(),
            other => format!("`{}`", other.slash()),
        })
        .collect();
    names.join(", ")
}

fn empty_code_message(command: &CommandKind) -> String {
    match command {
        CommandKind::SaveFunc => "The code part is empty: put the code after the second `|`, \
                                  as in `/savefunc name | description | code`."
            .to_string(),
        other => format!("There is no code to run. Use: `{}`", other.synopsis()),
    }
}

/// `` `analyze`, `savefunc`, ... `` for the help topics.
fn topic_list() -> String {
    let names: Vec<String> = CommandKind::ALL
        .into_iter()
        .filter(|kind| *kind != CommandKind::Help)
        .map(|kind| format!("`{}`", kind.name()))
        .collect();
    names.join(", ")
}

/// User input quoted inside a code span: one line, short, no backticks.
fn shown(text: &str) -> String {
    excerpt(text, MAX_SHOWN).replace('`', "'")
}

fn checked_code(command: CommandKind, raw: &str, limit: usize) -> Result<String, UsageError> {
    let code = strip_code(raw);
    if code.is_empty() {
        return Err(UsageError::EmptyCode { command });
    }
    if code.len() > limit {
        return Err(UsageError::CodeTooLarge {
            command,
            size: code.len(),
            limit,
        });
    }
    Ok(code)
}

fn parse_analyze(text: &str, limit: usize) -> Result<Command, UsageError> {
    if text.is_empty() {
        return Err(UsageError::Usage {
            command: CommandKind::Analyze,
        });
    }
    Ok(Command::Analyze {
        code: checked_code(CommandKind::Analyze, text, limit)?,
    })
}

fn parse_savefunc(text: &str, limit: usize) -> Result<Command, UsageError> {
    let kind = CommandKind::SaveFunc;
    if text.is_empty() {
        return Err(UsageError::Usage { command: kind });
    }
    let mut parts = text.splitn(3, '|');
    let (Some(name), Some(description), Some(code)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(UsageError::InvalidFormat {
            command: kind,
            message: format!(
                "Invalid format. Use: `/savefunc name | description | code` \
                 (both `|` are needed; the description may be empty).\n\n\
                 *Example:*\n```\n{}\n```",
                kind.example()
            ),
        });
    };
    let name = name.trim();
    validate_name(name)?;
    Ok(Command::SaveFunc {
        name: name.to_string(),
        description: description.trim().to_string(),
        code: checked_code(kind, code, limit)?,
    })
}

fn parse_runfunc(text: &str) -> Result<Command, UsageError> {
    if text.is_empty() {
        return Ok(Command::RunFunc {
            name: None,
            params: Map::new(),
        });
    }
    let (name, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    if name.contains('=') {
        return Err(UsageError::InvalidFormat {
            command: CommandKind::RunFunc,
            message: format!(
                "Give the function name first, then its arguments: `/runfunc <name> key=value ...`, \
                 e.g. `{}`.",
                CommandKind::RunFunc.example()
            ),
        });
    }
    validate_name(name)?;
    Ok(Command::RunFunc {
        name: Some(name.to_string()),
        params: parse_params(rest)?,
    })
}

fn parse_listfuncs(text: &str) -> Result<Command, UsageError> {
    let (head, last) = match text.rsplit_once(char::is_whitespace) {
        Some((head, last)) => (head, last),
        None => ("", text),
    };
    let page_value = last
        .get(..5)
        .filter(|key| key.eq_ignore_ascii_case("page="))
        .and_then(|_| last.get(5..));
    let (query, page) = match page_value {
        Some(value) => match value.parse::<usize>() {
            Ok(page) if page >= 1 => (head.trim(), page),
            _ => {
                return Err(UsageError::InvalidFormat {
                    command: CommandKind::ListFuncs,
                    message: format!(
                        "`{}` is not a page: write `page=N` with N a whole number from 1, \
                         e.g. `/listfuncs volume page=2`.",
                        shown(last)
                    ),
                })
            }
        },
        None => (text, 1),
    };
    Ok(Command::ListFuncs {
        query: (!query.is_empty()).then(|| query.to_string()),
        page,
    })
}

fn parse_delfunc(text: &str) -> Result<Command, UsageError> {
    if text.is_empty() {
        return Err(UsageError::Usage {
            command: CommandKind::DelFunc,
        });
    }
    validate_name(text)?;
    Ok(Command::DelFunc {
        name: text.to_string(),
    })
}

fn parse_help(text: &str) -> Result<Command, UsageError> {
    let mut words = text.split_whitespace().peekable();
    if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("help")) {
        words.next();
    }
    let rest: Vec<&str> = words.collect();
    match rest.as_slice() {
        [] => Ok(Command::Help { topic: None }),
        [topic] => match CommandKind::from_name(topic) {
            Some(CommandKind::Help) => Ok(Command::Help { topic: None }),
            Some(kind) => Ok(Command::Help {
                topic: Some(kind.name().to_string()),
            }),
            None => Err(UsageError::UnknownTopic {
                topic: (*topic).to_string(),
            }),
        },
        _ => Err(UsageError::UnknownTopic {
            topic: rest.join(" "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The default limit of `limits.max_code_bytes`.
    const MAX_CODE_BYTES: usize = tradebox_validate::DEFAULT_MAX_CODE_BYTES;

    fn parse(command: &str, text: &str) -> Result<Command, UsageError> {
        Grammar::default().parse(command, text)
    }

    fn parse_line(line: &str) -> Result<Command, UsageError> {
        Grammar::default().parse_line(line)
    }

    #[test]
    fn the_code_limit_is_the_grammars() {
        let code = format!("x = '{}'", "a".repeat(30_000));
        let big = Grammar::new(100_000);
        assert_eq!(big.max_code_bytes(), 100_000);
        assert_eq!(
            big.parse("/analyze", &code).unwrap(),
            Command::Analyze { code: code.clone() }
        );
        assert!(big.parse_line(&format!("/savefunc f | d | {code}")).is_ok());
        let small = Grammar::new(10);
        assert_eq!(
            small.parse("/analyze", "result = 12345").unwrap_err(),
            UsageError::CodeTooLarge {
                command: CommandKind::Analyze,
                size: 14,
                limit: 10
            }
        );
        assert!(small.parse("/analyze", "result = 1").is_ok());
        assert!(matches!(
            parse("/analyze", &code).unwrap_err(),
            UsageError::CodeTooLarge {
                limit: MAX_CODE_BYTES,
                ..
            }
        ));
    }

    fn code_of(cmd: Command) -> String {
        match cmd {
            Command::Analyze { code } => code,
            other => panic!("not analyze: {other:?}"),
        }
    }

    fn invalid_name_message(err: UsageError) -> String {
        match err {
            UsageError::InvalidName { message, .. } => message,
            other => panic!("not an invalid name: {other:?}"),
        }
    }

    // ---- command names -------------------------------------------------

    #[test]
    fn command_names_with_or_without_slash_any_case() {
        for name in ["/analyze", "analyze", "/ANALYZE", " Analyze "] {
            assert_eq!(
                parse(name, "result = 1").unwrap(),
                Command::Analyze {
                    code: "result = 1".into()
                },
                "{name}"
            );
        }
        assert_eq!(
            CommandKind::from_name("/listfuncs"),
            Some(CommandKind::ListFuncs)
        );
        assert_eq!(CommandKind::from_name("tradebox"), Some(CommandKind::Help));
        assert_eq!(CommandKind::from_name("/help"), Some(CommandKind::Help));
        assert_eq!(CommandKind::from_name("//analyze"), None);
    }

    #[test]
    fn unknown_command_is_named_and_commands_listed() {
        let err = parse("/analyse", "x").unwrap_err();
        assert_eq!(
            err,
            UsageError::UnknownCommand {
                command: "/analyse".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("`/analyse`"), "{msg}");
        for c in [
            "/analyze",
            "/savefunc",
            "/runfunc",
            "/listfuncs",
            "/delfunc",
            "/tradebox help",
        ] {
            assert!(msg.contains(c), "{msg} lacks {c}");
        }
        assert_eq!(parse("", "x").unwrap_err(), UsageError::NoCommand);
    }

    #[test]
    fn unknown_command_message_cannot_break_its_code_span() {
        let err = parse("/x`<!channel>`", "").unwrap_err();
        let msg = err.to_string();
        assert!(msg.matches('`').count().is_multiple_of(2), "{msg}");
        assert!(msg.contains("`/x'<!channel>'`"), "{msg}");
        let long = format!("/{}", "a".repeat(1000));
        assert!(parse(&long, "").unwrap_err().to_string().len() < 300);
    }

    // ---- parse_line ----------------------------------------------------

    #[test]
    fn parse_line_splits_the_first_word() {
        assert_eq!(
            parse_line("/analyze result = 1").unwrap(),
            Command::Analyze {
                code: "result = 1".into()
            }
        );
        assert_eq!(
            parse_line("  analyze\ndf = load_trades()\nresult = len(df)").unwrap(),
            Command::Analyze {
                code: "df = load_trades()\nresult = len(df)".into()
            }
        );
        assert_eq!(
            parse_line("/runfunc vol days=7").unwrap(),
            Command::RunFunc {
                name: Some("vol".into()),
                params: json!({"days": 7}).as_object().unwrap().clone()
            }
        );
        assert_eq!(
            parse_line("/listfuncs").unwrap(),
            Command::ListFuncs {
                query: None,
                page: 1
            }
        );
        assert_eq!(
            parse_line("/tradebox help").unwrap(),
            Command::Help { topic: None }
        );
        assert_eq!(parse_line("help").unwrap(), Command::Help { topic: None });
        assert_eq!(
            parse_line("/analyze\u{a0}x = 1").unwrap(),
            Command::Analyze {
                code: "x = 1".into()
            }
        );
        assert_eq!(parse_line("").unwrap_err(), UsageError::NoCommand);
        assert_eq!(parse_line("   \n").unwrap_err(), UsageError::NoCommand);
        assert!(matches!(
            parse_line("result = 1").unwrap_err(),
            UsageError::UnknownCommand { command } if command == "result"
        ));
    }

    // ---- /analyze ------------------------------------------------------

    #[test]
    fn analyze_empty_shows_the_seed_usage() {
        for text in ["", "   ", "\n\t"] {
            let err = parse("/analyze", text).unwrap_err();
            assert_eq!(
                err,
                UsageError::Usage {
                    command: CommandKind::Analyze
                }
            );
            assert!(err.is_usage());
            assert_eq!(
                err.to_string(),
                "*Usage:* `/analyze <python_code>`\n\n*Example:*\n```\n/analyze\n\
                 df = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum()\n```"
            );
        }
    }

    #[test]
    fn analyze_slack_escaped_code() {
        assert_eq!(
            code_of(parse("/analyze", "result = 1 &lt; 2 &amp;&amp; True").unwrap()),
            "result = 1 < 2 && True"
        );
    }

    #[test]
    fn analyze_fenced_code_with_language_tag() {
        assert_eq!(
            code_of(
                parse(
                    "/analyze",
                    "```python\ndf = load_trades()\nresult = len(df)\n```"
                )
                .unwrap()
            ),
            "df = load_trades()\nresult = len(df)"
        );
        assert_eq!(
            code_of(parse("/analyze", "please run ```result = 1``` thanks").unwrap()),
            "result = 1"
        );
        assert_eq!(
            code_of(parse("/analyze", "`result = 2`").unwrap()),
            "result = 2"
        );
    }

    #[test]
    fn analyze_smart_quotes_inside_code() {
        assert_eq!(
            code_of(
                parse(
                    "/analyze",
                    "result = load_trades()[‘amount’].sum() + “x”.count(‘y’)"
                )
                .unwrap()
            ),
            "result = load_trades()['amount'].sum() + \"x\".count('y')"
        );
        assert_eq!(
            code_of(parse("/analyze", "```\nresult = df[‘amount’]\n```").unwrap()),
            "result = df['amount']"
        );
    }

    #[test]
    fn analyze_links_inside_code() {
        assert_eq!(
            code_of(parse("/analyze", "url = '<http://example.com|example.com>'").unwrap()),
            "url = 'example.com'"
        );
        assert_eq!(
            code_of(parse("/analyze", "```\nu = \"<https://api.mexc.com/v3>\"\n```").unwrap()),
            "u = \"https://api.mexc.com/v3\""
        );
    }

    #[test]
    fn analyze_keeps_console_comparisons() {
        assert_eq!(
            code_of(parse_line("/analyze result = 1 <2 and 3> 2").unwrap()),
            "result = 1 <2 and 3> 2"
        );
    }

    #[test]
    fn analyze_empty_fence_is_empty_code() {
        for text in ["``````", "```\n```", "``", "```python\n```"] {
            let err = parse("/analyze", text).unwrap_err();
            assert_eq!(
                err,
                UsageError::EmptyCode {
                    command: CommandKind::Analyze
                },
                "{text}"
            );
            assert!(err.to_string().contains("/analyze <python_code>"));
        }
    }

    #[test]
    fn analyze_code_size_limit() {
        let at_limit = format!("x = '{}'", "a".repeat(MAX_CODE_BYTES - 6));
        assert_eq!(at_limit.len(), MAX_CODE_BYTES);
        assert!(parse("/analyze", &at_limit).is_ok());
        let over = format!("x = '{}'", "a".repeat(MAX_CODE_BYTES));
        let err = parse("/analyze", &over).unwrap_err();
        assert_eq!(
            err,
            UsageError::CodeTooLarge {
                command: CommandKind::Analyze,
                size: MAX_CODE_BYTES + 6,
                limit: MAX_CODE_BYTES
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("20006") && msg.contains("20000"), "{msg}");
        // bytes, not characters: 7,000 three-byte characters are 21,000 bytes
        let wide = format!("x = '{}'", "€".repeat(7_000));
        assert!(matches!(
            parse("/analyze", &wide).unwrap_err(),
            UsageError::CodeTooLarge { size, .. } if size == 21_006
        ));
    }

    #[test]
    fn analyze_fenced_text_outside_does_not_count_towards_the_limit() {
        let text = format!("{}\n```result = 1```", "chatter ".repeat(3_000));
        assert_eq!(code_of(parse("/analyze", &text).unwrap()), "result = 1");
    }

    // ---- /savefunc -----------------------------------------------------

    #[test]
    fn savefunc_three_parts() {
        assert_eq!(
            parse(
                "/savefunc",
                "volume_by_exchange | Calculate volume by exchange | df = load_trades(); result = df.groupby('exchange')['amount'].sum()"
            )
            .unwrap(),
            Command::SaveFunc {
                name: "volume_by_exchange".into(),
                description: "Calculate volume by exchange".into(),
                code: "df = load_trades(); result = df.groupby('exchange')['amount'].sum()".into(),
            }
        );
    }

    #[test]
    fn savefunc_code_may_contain_pipes() {
        assert_eq!(
            parse("/savefunc", "flags|d|result = a | b || c").unwrap(),
            Command::SaveFunc {
                name: "flags".into(),
                description: "d".into(),
                code: "result = a | b || c".into(),
            }
        );
    }

    #[test]
    fn savefunc_fenced_code_in_the_third_part() {
        assert_eq!(
            parse(
                "/savefunc",
                "vol | Volume ‘by’ exchange | ```python\ndf = load_trades()\nresult = df[‘amount’].sum()\n```"
            )
            .unwrap(),
            Command::SaveFunc {
                name: "vol".into(),
                description: "Volume 'by' exchange".into(),
                code: "df = load_trades()\nresult = df['amount'].sum()".into(),
            }
        );
    }

    #[test]
    fn savefunc_empty_description_is_allowed() {
        assert_eq!(
            parse("/savefunc", "vol || result = 1").unwrap(),
            Command::SaveFunc {
                name: "vol".into(),
                description: String::new(),
                code: "result = 1".into()
            }
        );
    }

    #[test]
    fn savefunc_unicode_and_emoji_descriptions_are_kept() {
        let Command::SaveFunc { description, .. } = parse(
            "/savefunc",
            "vol | Volumen je Börse 📈🚀 — 成交量 | result = 1",
        )
        .unwrap() else {
            panic!("not savefunc")
        };
        assert_eq!(description, "Volumen je Börse 📈🚀 — 成交量");
    }

    #[test]
    fn savefunc_empty_shows_the_seed_usage() {
        let err = parse("/savefunc", "  ").unwrap_err();
        assert_eq!(
            err,
            UsageError::Usage {
                command: CommandKind::SaveFunc
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("*Usage:* `/savefunc name | description | code`\n\n*Example:*\n```\n")
        );
        assert!(msg.contains("/savefunc volume_by_exchange | Calculate volume by exchange | "));
    }

    #[test]
    fn savefunc_without_two_pipes() {
        for text in ["vol", "vol result = 1", "vol | result = 1", "```x```"] {
            let err = parse("/savefunc", text).unwrap_err();
            assert!(
                matches!(
                    err,
                    UsageError::InvalidFormat {
                        command: CommandKind::SaveFunc,
                        ..
                    }
                ),
                "{text}: {err:?}"
            );
            assert!(err
                .to_string()
                .starts_with("Invalid format. Use: `/savefunc name | description | code`"));
        }
    }

    #[test]
    fn savefunc_empty_code() {
        for text in ["vol | d |", "vol | d |   ", "vol|d|``````"] {
            assert_eq!(
                parse("/savefunc", text).unwrap_err(),
                UsageError::EmptyCode {
                    command: CommandKind::SaveFunc
                },
                "{text}"
            );
        }
        assert!(empty_code_message(&CommandKind::SaveFunc).contains("second `|`"));
    }

    #[test]
    fn savefunc_bad_names() {
        let msg = invalid_name_message(parse("/savefunc", "my func | d | result = 1").unwrap_err());
        assert!(
            msg.contains("a space") && msg.contains("`my_func`"),
            "{msg}"
        );
        let msg = invalid_name_message(parse("/savefunc", "my-func | d | result = 1").unwrap_err());
        assert!(msg.contains("a dash") && msg.contains("`my_func`"), "{msg}");
        let msg = invalid_name_message(parse("/savefunc", " | d | result = 1").unwrap_err());
        assert!(msg.contains("missing"), "{msg}");
        let long = "a".repeat(65);
        let msg = invalid_name_message(
            parse("/savefunc", &format!("{long} | d | result = 1")).unwrap_err(),
        );
        assert!(
            msg.contains("65 characters") && msg.contains("1 to 64"),
            "{msg}"
        );
    }

    #[test]
    fn savefunc_code_size_limit() {
        let text = format!("big | d | ```\n{}\n```", "x = 1\n".repeat(4_000));
        assert!(matches!(
            parse("/savefunc", &text).unwrap_err(),
            UsageError::CodeTooLarge {
                command: CommandKind::SaveFunc,
                limit: MAX_CODE_BYTES,
                ..
            }
        ));
    }

    #[test]
    fn savefunc_link_in_description_and_code() {
        assert_eq!(
            parse("/savefunc", "docs | see <https://pandas.pydata.org|pandas docs> | u = '<http://example.com|example.com>'").unwrap(),
            Command::SaveFunc {
                name: "docs".into(),
                description: "see pandas docs".into(),
                code: "u = 'example.com'".into()
            }
        );
    }

    // ---- names -----------------------------------------------------------

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "volume_by_exchange",
            "_x",
            "7day",
            "ABC_123",
            &"z".repeat(64),
        ] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn invalid_names_say_what_is_allowed() {
        for name in [
            "",
            "my func",
            "my-func",
            "a.b",
            "naïve",
            "📈",
            "tab\there",
            "new\nline",
            "`tick`",
            "x'; DROP TABLE saved_functions;--",
            "Robert'); DROP TABLE students;--",
            "../etc/passwd",
            &"a".repeat(65),
        ] {
            let err = validate_name(name).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("letters, digits and underscores"),
                "{name:?}: {msg}"
            );
            assert!(msg.contains("1 to 64 characters"), "{name:?}: {msg}");
            assert!(!msg.contains('\n'), "{name:?}: {msg}");
            assert!(
                msg.matches('`').count().is_multiple_of(2),
                "{name:?}: {msg}"
            );
        }
    }

    #[test]
    fn sql_looking_name_is_invalid() {
        let name = "x'; DROP TABLE saved_functions;--";
        let err = validate_name(name).unwrap_err();
        assert!(matches!(&err, UsageError::InvalidName { name: n, .. } if n == name));
        assert!(err.to_string().contains("contains `'`"), "{err}");
        assert!(matches!(
            parse("/delfunc", name).unwrap_err(),
            UsageError::InvalidName { .. }
        ));
        assert!(matches!(
            parse("/runfunc", name).unwrap_err(),
            UsageError::InvalidName { .. }
        ));
        assert!(matches!(
            parse("/savefunc", &format!("{name} | d | result = 1")).unwrap_err(),
            UsageError::InvalidName { .. }
        ));
    }

    #[test]
    fn name_suggestions() {
        assert_eq!(suggest_name("my func-name"), Some("my_func_name".into()));
        assert_eq!(suggest_name(" - "), None);
        let msg = validate_name("a.b").unwrap_err().to_string();
        assert!(msg.contains("`volume_by_exchange`"), "{msg}");
    }

    // ---- /runfunc ------------------------------------------------------

    #[test]
    fn runfunc_without_name_is_the_list() {
        assert_eq!(
            parse("/runfunc", "").unwrap(),
            Command::RunFunc {
                name: None,
                params: Map::new()
            }
        );
        assert_eq!(
            parse("/runfunc", " \u{a0} ").unwrap(),
            Command::RunFunc {
                name: None,
                params: Map::new()
            }
        );
    }

    #[test]
    fn runfunc_name_and_params() {
        let Command::RunFunc { name, params } = parse(
            "/runfunc",
            "volume_by_exchange days=7 exchange=mexc label=“two words”",
        )
        .unwrap() else {
            panic!("not runfunc")
        };
        assert_eq!(name.as_deref(), Some("volume_by_exchange"));
        assert_eq!(
            Value::Object(params),
            json!({"days": 7, "exchange": "mexc", "label": "two words"})
        );
    }

    #[test]
    fn runfunc_bad_params() {
        let err = parse("/runfunc", "vol days7").unwrap_err();
        assert_eq!(
            err,
            UsageError::InvalidParams(ParamError::NotKeyValue {
                token: "days7".into()
            })
        );
        assert!(err.to_string().contains("\"days7\" is not key=value"));
        assert!(matches!(
            parse("/runfunc", "vol name=\"open").unwrap_err(),
            UsageError::InvalidParams(ParamError::UnterminatedQuote { .. })
        ));
        assert!(matches!(
            parse("/runfunc", "vol a=1 a=2").unwrap_err(),
            UsageError::InvalidParams(ParamError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn runfunc_bad_name() {
        assert!(matches!(
            parse("/runfunc", "my-func").unwrap_err(),
            UsageError::InvalidName { .. }
        ));
        let err = parse("/runfunc", "days=7").unwrap_err();
        assert!(matches!(
            err,
            UsageError::InvalidFormat {
                command: CommandKind::RunFunc,
                ..
            }
        ));
        assert!(err.to_string().contains("name first"), "{err}");
    }

    // ---- /listfuncs ----------------------------------------------------

    #[test]
    fn listfuncs_query_and_page() {
        let list = |q: Option<&str>, page| Command::ListFuncs {
            query: q.map(String::from),
            page,
        };
        assert_eq!(parse("/listfuncs", "").unwrap(), list(None, 1));
        assert_eq!(
            parse("/listfuncs", "volume").unwrap(),
            list(Some("volume"), 1)
        );
        assert_eq!(
            parse("/listfuncs", "volume by day").unwrap(),
            list(Some("volume by day"), 1)
        );
        assert_eq!(
            parse("/listfuncs", "volume page=3").unwrap(),
            list(Some("volume"), 3)
        );
        assert_eq!(parse("/listfuncs", "PAGE=2").unwrap(), list(None, 2));
        assert_eq!(
            parse("/listfuncs", "a  b \n page=2").unwrap(),
            list(Some("a  b"), 2)
        );
        assert_eq!(
            parse("/listfuncs", "page=2 volume").unwrap(),
            list(Some("page=2 volume"), 1)
        );
        assert_eq!(
            parse("/listfuncs", "pages=2").unwrap(),
            list(Some("pages=2"), 1)
        );
    }

    #[test]
    fn listfuncs_bad_page() {
        for text in ["page=0", "volume page=-1", "page=two", "page=", "page=1.5"] {
            let err = parse("/listfuncs", text).unwrap_err();
            assert!(
                matches!(
                    err,
                    UsageError::InvalidFormat {
                        command: CommandKind::ListFuncs,
                        ..
                    }
                ),
                "{text}"
            );
            assert!(err.to_string().contains("page=N"), "{err}");
        }
    }

    #[test]
    fn listfuncs_queries_are_kept_literally() {
        for query in [
            "x'; DROP TABLE saved_functions;--",
            "100% _ match",
            "\"quoted\" *stars*",
            "Börse 📈",
        ] {
            assert_eq!(
                parse("/listfuncs", query).unwrap(),
                Command::ListFuncs {
                    query: Some(query.to_string()),
                    page: 1
                },
                "{query}"
            );
        }
        assert_eq!(
            parse("/listfuncs", "a &lt; b &amp; ‘c’").unwrap(),
            Command::ListFuncs {
                query: Some("a < b & 'c'".into()),
                page: 1
            }
        );
    }

    // ---- /delfunc ------------------------------------------------------

    #[test]
    fn delfunc() {
        assert_eq!(
            parse("/delfunc", " vol ").unwrap(),
            Command::DelFunc { name: "vol".into() }
        );
        let err = parse("/delfunc", "").unwrap_err();
        assert_eq!(
            err,
            UsageError::Usage {
                command: CommandKind::DelFunc
            }
        );
        assert!(
            err.to_string()
                .starts_with("Usage: `/delfunc <function_name>`"),
            "{err}"
        );
        let msg = invalid_name_message(parse("/delfunc", "two names").unwrap_err());
        assert!(msg.contains("a space"), "{msg}");
    }

    // ---- Run button ----------------------------------------------------

    #[test]
    fn run_action() {
        assert_eq!(
            parse_action("run_func_volume", "volume").unwrap(),
            Command::RunAction {
                name: "volume".into()
            }
        );
        assert_eq!(
            parse_action("run_func_volume", "").unwrap(),
            Command::RunAction {
                name: "volume".into()
            }
        );
        assert_eq!(
            parse_action("run_func_", "volume").unwrap(),
            Command::RunAction {
                name: "volume".into()
            }
        );
        assert_eq!(
            parse_action("run_func_a", "b").unwrap_err(),
            UsageError::ActionMismatch {
                action_id: "run_func_a".into(),
                value: "b".into()
            }
        );
        assert!(matches!(
            parse_action("delete_func_a", "a").unwrap_err(),
            UsageError::UnknownAction { .. }
        ));
        assert!(matches!(
            parse_action("run_func_", "").unwrap_err(),
            UsageError::InvalidName { .. }
        ));
        assert!(matches!(
            parse_action("run_func_x'; DROP", "").unwrap_err(),
            UsageError::InvalidName { .. }
        ));
        assert!(parse_action("run_func_volume", "volume")
            .unwrap()
            .executes_code());
    }

    // ---- help ----------------------------------------------------------

    #[test]
    fn help_command() {
        for (command, text) in [
            ("/tradebox", ""),
            ("/tradebox", "help"),
            ("tradebox", "HELP"),
            ("/help", ""),
        ] {
            assert_eq!(
                parse(command, text).unwrap(),
                Command::Help { topic: None },
                "{command} {text}"
            );
        }
        for (text, topic) in [
            ("help savefunc", "savefunc"),
            ("help /RunFunc", "runfunc"),
            ("listfuncs", "listfuncs"),
        ] {
            assert_eq!(
                parse("/tradebox", text).unwrap(),
                Command::Help {
                    topic: Some(topic.into())
                },
                "{text}"
            );
        }
        assert_eq!(
            parse("/tradebox", "help tradebox").unwrap(),
            Command::Help { topic: None }
        );
        assert!(matches!(
            parse("/tradebox", "help frobnicate").unwrap_err(),
            UsageError::UnknownTopic { topic } if topic == "frobnicate"
        ));
        assert!(matches!(
            parse("/tradebox", "help me please").unwrap_err(),
            UsageError::UnknownTopic { .. }
        ));
        let msg = parse("/tradebox", "help foo").unwrap_err().to_string();
        assert!(msg.contains("`foo`") && msg.contains("`savefunc`"), "{msg}");
        assert_eq!(msg.matches("/tradebox help`").count(), 1, "{msg}");
    }

    #[test]
    fn help_text_covers_every_command_with_an_example() {
        let help = help_text();
        for kind in CommandKind::ALL {
            assert!(help.contains(kind.synopsis()), "{help}");
        }
        assert_eq!(help.matches("Example: `").count(), CommandKind::ALL.len());
        for line in help.lines().filter(|l| l.starts_with("Example: ")) {
            let example = line.trim_start_matches("Example: `").trim_end_matches('`');
            let parsed = parse_line(example);
            assert!(parsed.is_ok(), "{example}: {parsed:?}");
        }
    }

    #[test]
    fn usage_examples_parse() {
        for kind in CommandKind::ALL {
            assert!(parse_line(kind.example()).is_ok(), "{kind:?}");
            assert!(help_topic(kind).contains(kind.synopsis()));
        }
    }

    // ---- misc ----------------------------------------------------------

    #[test]
    fn kinds_and_execution() {
        assert!(parse_line("/analyze result = 1").unwrap().executes_code());
        assert!(parse_line("/runfunc vol").unwrap().executes_code());
        assert!(!parse_line("/runfunc").unwrap().executes_code());
        assert!(!parse_line("/listfuncs").unwrap().executes_code());
        assert_eq!(parse_line("/runfunc").unwrap().kind(), CommandKind::RunFunc);
        assert_eq!(
            parse_action("run_func_a", "a").unwrap().kind(),
            CommandKind::RunFunc
        );
    }

    #[test]
    fn commands_serialise_with_their_name() {
        assert_eq!(
            serde_json::to_value(parse_line("/savefunc v | d | result = 1").unwrap()).unwrap(),
            json!({"command": "savefunc", "name": "v", "description": "d", "code": "result = 1"})
        );
        assert_eq!(
            serde_json::to_value(parse_line("/listfuncs vol").unwrap()).unwrap(),
            json!({"command": "listfuncs", "query": "vol", "page": 1})
        );
        assert_eq!(
            serde_json::to_value(CommandKind::ALL).unwrap(),
            json!([
                "analyze",
                "savefunc",
                "runfunc",
                "listfuncs",
                "delfunc",
                "tradebox"
            ])
        );
    }

    fn command_word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/analyze".to_string()),
            Just("/savefunc".to_string()),
            Just("/runfunc".to_string()),
            Just("/listfuncs".to_string()),
            Just("/delfunc".to_string()),
            Just("/tradebox".to_string()),
            Just("help".to_string()),
            "/?[a-zA-Z]{0,10}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics(command in command_word(), text in any::<String>()) {
            let _ = parse(&command, &text).map_err(|e| e.to_string());
        }

        #[test]
        fn parse_never_panics_on_syntax_soup(
            command in command_word(),
            text in r#"([|`<>&@#!:='" \n\t]|lt;|amp;|page=|http|a|1|_|é|😀|‘|\u{a0})*"#
        ) {
            let _ = parse(&command, &text).map_err(|e| e.to_string());
        }

        #[test]
        fn parse_line_never_panics(line in any::<String>()) {
            let _ = parse_line(&line).map_err(|e| e.to_string());
        }

        #[test]
        fn parse_line_never_panics_on_commands(
            command in command_word(),
            text in r#"([|`<>&=" \n]|page=|x|1|😀)*"#
        ) {
            let _ = parse_line(&format!("{command} {text}")).map_err(|e| e.to_string());
        }

        #[test]
        fn parse_action_never_panics(action in any::<String>(), value in any::<String>()) {
            let _ = parse_action(&action, &value).map_err(|e| e.to_string());
        }

        #[test]
        fn valid_names_round_trip(name in "[a-zA-Z0-9_]{1,64}") {
            prop_assert!(validate_name(&name).is_ok());
            prop_assert_eq!(
                parse("/delfunc", &name).unwrap(),
                Command::DelFunc { name: name.clone() }
            );
            prop_assert_eq!(
                parse_action(&format!("run_func_{name}"), &name).unwrap(),
                Command::RunAction { name }
            );
        }
    }
}
