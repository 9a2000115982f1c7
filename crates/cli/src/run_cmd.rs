//! `tradebox run`: run one snippet in the sandbox and print its result.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tradebox_data::Home;
use tradebox_sandbox::{ExecError, ExecResult, Job};

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
    /// Print one JSON object: success, result, output, error, execution_time_ms, artifacts.
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
    for a in &result.artifacts {
        let Some(bytes) = a.bytes() else { continue };
        let path = dir.join(&a.name);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        saved.push(json!({
            "kind": a.kind,
            "path": path,
            "name": a.name,
            "mime": a.mime,
            "size": bytes.len(),
            "truncated": a.truncated,
        }));
    }
    Ok(saved)
}

fn print_text(result: &ExecResult, saved: &[serde_json::Value]) {
    if !result.output.is_empty() {
        print!("{}", result.output);
        if !result.output.ends_with('\n') {
            println!();
        }
    }
    if let Some(text) = &result.result {
        println!("{text}");
    }
    if let Some(e) = &result.error {
        match &e.traceback {
            Some(tb) if !tb.is_empty() => eprintln!("{}", tb.trim_end()),
            _ => eprintln!("{}: {}", e.kind, e.message),
        }
    }
    for a in saved {
        eprintln!(
            "{} saved to {}",
            a["kind"].as_str().unwrap_or("file"),
            a["path"].as_str().unwrap_or("?")
        );
    }
    eprintln!(
        "({} in {} ms)",
        if result.success { "ran" } else { "failed" },
        result.execution_time_ms
    );
}
