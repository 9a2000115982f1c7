//! `tradebox run`: run one snippet in the sandbox and print its result.
//!
//! Everything the job produced is untrusted: artifacts are written only
//! under tradebox's names, never over an existing file or through a
//! symlink, and the job's texts are shown with control characters escaped
//! when they go to a terminal.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tradebox_data::Home;
use tradebox_sandbox::{ExecError, ExecResult, Job, Origin};

use crate::sandbox_setup::{self, SetupError};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  tradebox run -c \"df = load_trades(days=7); result = df.groupby('exchange')['amount'].sum()\"
  tradebox run --as-of latest analysis.py
  echo 'result = 1 + 1' | tradebox run --json -
  tradebox run --artifacts out/ -c \"load_trades(days=None).set_index('timestamp')['price'].plot()\"

Exit codes: 0 success, 1 the code failed or was stopped, 2 usage or configuration error.")]
pub struct RunArgs {
    /// The code to run.
    #[arg(
        short = 'c',
        long = "code",
        value_name = "CODE",
        conflicts_with = "file"
    )]
    code: Option<String>,
    /// A file holding the code, or - for standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print one JSON object: success, result, output, error, execution_time_ms, artifacts,
    /// data_as_of (the snapshot version and its newest trade).
    #[arg(long)]
    json: bool,
    /// Wall-time limit in seconds [default: limits.timeout_seconds of the config, 30]
    #[arg(long, value_name = "S")]
    timeout: Option<f64>,
    /// Memory limit in MiB [default: limits.memory_mb of the config, 1024]
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(64..=65536))]
    memory: Option<u64>,
    /// Skip the courtesy validator (syntax and import allow-list); the sandbox still applies.
    #[arg(long)]
    no_validate: bool,
    /// Count `days` back from this date (YYYY-MM-DD) or from the newest trade (`latest`) instead of now.
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
    /// Where to write figures (PNG) and full tables (CSV) [default: $TRADEBOX_HOME/artifacts/<time>]
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
}

/// Runs the command; returns the process exit code.
pub fn run(args: &RunArgs, home: &Home, quiet: bool) -> anyhow::Result<u8> {
    let code = read_code(args)?;
    let config = crate::app::config(home)?;
    let timeout = args.timeout.unwrap_or(config.limits.timeout_seconds as f64);
    if !(timeout > 0.0 && timeout <= 3600.0) {
        return Err(SetupError(format!(
            "--timeout {timeout} must be between 0 and 3600 seconds"
        ))
        .into());
    }
    if let Some(as_of) = &args.as_of {
        check_as_of(as_of)?;
    }
    let rules = (config.validator.enabled && !args.no_validate).then(|| tradebox_validate::Rules {
        allowed_modules: config.validator.allowed_modules.iter().cloned().collect(),
        max_code_bytes: config.limits.max_code_bytes,
    });
    let as_of = args.as_of.clone().or(config.data.as_of.clone());
    let result = if let Some(invalid) = rules.and_then(|r| validate(&code, &r)) {
        invalid
    } else {
        let shape = sandbox_setup::PoolShape {
            scratch_mib: config.limits.scratch_mb,
            ..sandbox_setup::PoolShape::single()
        };
        let pool = sandbox_setup::start_pool(home, shape, quiet)?;
        let job = Job {
            code,
            timeout: Duration::from_secs_f64(timeout),
            memory_mib: args.memory.unwrap_or(config.limits.memory_mb),
            output_limit: config.limits.output_limit(),
            as_of,
            ..Job::default()
        };
        pool.run(job)?
    };
    let saved = save_artifacts(&result, args.artifacts.as_deref(), home)?;
    if args.json {
        let out = json!({
            "success": result.success,
            "result": result.result,
            "output": result.output,
            "error": result.error,
            "execution_time_ms": result.execution_time_ms,
            "artifacts": saved,
            "data_as_of": result.data_as_of,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(&result, &saved);
    }
    Ok(if result.success { 0 } else { 1 })
}

fn read_code(args: &RunArgs) -> anyhow::Result<String> {
    let code = match (&args.code, &args.file) {
        (Some(code), _) => code.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut code = String::new();
            std::io::stdin()
                .read_to_string(&mut code)
                .context("reading the code from standard input")?;
            code
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| SetupError(format!("{}: {e}", path.display())))?,
        (None, None) => {
            return Err(SetupError(
                "no code given: pass -c CODE, a FILE, or - to read standard input".into(),
            )
            .into())
        }
    };
    Ok(code)
}

fn check_as_of(as_of: &str) -> anyhow::Result<()> {
    let ok = as_of == "latest" || tradebox_data::timestamp::parse(as_of).is_ok();
    if ok {
        Ok(())
    } else {
        Err(SetupError(format!(
            "--as-of {as_of:?}: expected `latest`, a date (YYYY-MM-DD) or an ISO 8601 time"
        ))
        .into())
    }
}

/// The validator's verdict as a failed result, or `None` when the code passes.
fn validate(code: &str, rules: &tradebox_validate::Rules) -> Option<ExecResult> {
    let err = tradebox_validate::validate(code, rules).err()?;
    let first = err.findings.first();
    Some(ExecResult {
        error: Some(ExecError {
            kind: "ValidationError".into(),
            message: err.to_string(),
            line: first.and_then(|f| u32::try_from(f.line).ok()),
            column: first.and_then(|f| u32::try_from(f.column).ok()),
            traceback: None,
            origin: Origin::Tradebox,
        }),
        ..ExecResult::failure("ValidationError", "", 0)
    })
}

fn save_artifacts(
    result: &ExecResult,
    dir: Option<&Path>,
    home: &Home,
) -> anyhow::Result<Vec<serde_json::Value>> {
    if result.artifacts.is_empty() {
        return Ok(Vec::new());
    }
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let stamp = tradebox_data::timestamp::format(tradebox_data::timestamp::now())
                .replace([':', '.'], "-");
            home.root().join("artifacts").join(stamp)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut saved = Vec::new();
    for (i, a) in result.artifacts.iter().enumerate() {
        let Some(bytes) = a.bytes() else { continue };
        let Some((stem, ext)) = artifact_name(i, &a.kind, &a.name) else {
            continue;
        };
        let (path, mut file) = create_new(&dir, &stem, ext)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        saved.push(json!({
            "kind": ext,
            "path": path,
            "name": path.file_name().map(|n| n.to_string_lossy()),
            "mime": a.mime,
            "size": bytes.len(),
            "truncated": a.truncated,
        }));
    }
    Ok(saved)
}

/// The stem and extension an artifact is saved under: tradebox's name
/// (`figure-1`, `table-1`) when it is one, else `artifact-N`; the extension
/// is the checked kind's. `None` for a kind tradebox does not save.
fn artifact_name(index: usize, kind: &str, name: &str) -> Option<(String, &'static str)> {
    let ext = match kind {
        "png" => "png",
        "csv" => "csv",
        _ => return None,
    };
    let stem = name
        .strip_suffix(ext)
        .and_then(|s| s.strip_suffix('.'))
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    Some((
        stem.map_or_else(|| format!("artifact-{}", index + 1), str::to_string),
        ext,
    ))
}

/// Creates `dir/stem.ext`, or `stem-2.ext`, `stem-3.ext`, ... when taken:
/// never over an existing file and never through a symlink (`O_EXCL`).
fn create_new(dir: &Path, stem: &str, ext: &str) -> anyhow::Result<(PathBuf, File)> {
    for n in 1..=1000 {
        let name = if n == 1 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{n}.{ext}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    anyhow::bail!(
        "{}: {stem}.{ext} and 999 numbered variants exist already",
        dir.display()
    )
}

/// `text` for a terminal: control characters (C0 but newline and tab, DEL,
/// C1) and the bidirectional overrides and isolates become visible escapes
/// (`\x1b`, `\u{202e}`), so a job cannot move the cursor, retitle the
/// window, hide text or reorder what the user reads.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

fn print_text(result: &ExecResult, saved: &[serde_json::Value]) {
    let (tty_out, tty_err) = (
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    );
    let out = |s: &str| -> String {
        if tty_out {
            terminal_safe(s).into_owned()
        } else {
            s.to_string()
        }
    };
    let err = |s: &str| -> String {
        if tty_err {
            terminal_safe(s).into_owned()
        } else {
            s.to_string()
        }
    };
    if !result.output.is_empty() {
        print!("{}", out(&result.output));
        if !result.output.ends_with('\n') {
            println!();
        }
    }
    if let Some(text) = &result.result {
        println!("{}", out(text));
    }
    if let Some(e) = &result.error {
        match &e.traceback {
            Some(tb) if !tb.is_empty() => eprintln!("{}", err(tb.trim_end())),
            _ => eprintln!("{}: {}", err(&e.kind), err(&e.message)),
        }
    }
    for a in saved {
        eprintln!(
            "{} saved to {}",
            a["kind"].as_str().unwrap_or("file"),
            err(a["path"].as_str().unwrap_or("?"))
        );
    }
    let data = result
        .data_as_of
        .as_ref()
        .map(|d| format!("; {}", d.footer()))
        .unwrap_or_default();
    eprintln!(
        "({} in {} ms{data})",
        if result.success { "ran" } else { "failed" },
        result.execution_time_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_has_no_live_control_characters() {
        assert!(matches!(
            terminal_safe("plain\ttext\né ✓"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            terminal_safe("\x1b]0;owned\x07\x1b[2J\r\x00\x7f"),
            "\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x00\\x7f"
        );
        assert_eq!(terminal_safe("a\u{9b}31mb\u{85}"), "a\\u{9b}31mb\\u{85}");
        assert_eq!(
            terminal_safe("x\u{202e}gnp.exe\u{2066}\u{2069}\u{202a}"),
            "x\\u{202e}gnp.exe\\u{2066}\\u{2069}\\u{202a}"
        );
        // Neighbours of the escaped ranges are left alone.
        assert_eq!(
            terminal_safe("\u{a0}\u{2029}\u{202f}\u{2065}\u{206a}"),
            "\u{a0}\u{2029}\u{202f}\u{2065}\u{206a}"
        );
    }

    #[test]
    fn artifacts_are_saved_under_tradeboxs_names_only() {
        assert_eq!(
            artifact_name(0, "png", "figure-1.png"),
            Some(("figure-1".into(), "png"))
        );
        assert_eq!(
            artifact_name(2, "csv", "table-2.csv"),
            Some(("table-2".into(), "csv"))
        );
        for name in [
            "conftest.py",
            "../x.png",
            "Makefile",
            ".png",
            "a b.png",
            "x.csv",
        ] {
            assert_eq!(
                artifact_name(4, "png", name),
                Some(("artifact-5".into(), "png")),
                "{name}"
            );
        }
        assert_eq!(artifact_name(0, "sh", "x.sh"), None);
    }

    #[test]
    fn saving_never_overwrites_or_follows_a_symlink() {
        let dir = tempfile::TempDir::new().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "outside").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("figure-1.png")).unwrap();
        std::fs::write(dir.path().join("figure-1-2.png"), "mine").unwrap();
        let (path, _) = create_new(dir.path(), "figure-1", "png").unwrap();
        assert_eq!(path, dir.path().join("figure-1-3.png"));
        assert_eq!(std::fs::read_to_string(outside.path()).unwrap(), "outside");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("figure-1-2.png")).unwrap(),
            "mine"
        );
    }
}
