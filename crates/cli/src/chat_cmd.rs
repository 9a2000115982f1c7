//! `tradebox chat`: one command through the same pipeline as Slack and the
//! console, printed as text, as the Block Kit JSON Slack would receive, or
//! as the reply model.

use clap::{Args, ValueEnum};
use tradebox_core::audit::Source;
use tradebox_core::pipeline::{Input, Request};
use tradebox_core::reply::Reply;
use tradebox_data::Home;

use crate::app;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Readable text.
    Text,
    /// The Block Kit message Slack would receive (chat.postMessage fields).
    Blocks,
    /// The transport-neutral reply model.
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  tradebox chat '/analyze result = load_trades(days=7).groupby(\"exchange\")[\"amount\"].sum()'
  tradebox chat --user U123 '/savefunc weekly | Volume this week | result = load_trades(days=7)[\"amount\"].sum()'
  tradebox chat --user U456 '/runfunc weekly'
  tradebox chat --format blocks '/listfuncs'

Exit codes: 0 answered, 1 the command failed or was refused, 2 usage or configuration error.")]
pub struct ChatArgs {
    /// The command line, as typed in Slack (`/analyze ...`, `/runfunc name k=v`).
    #[arg(value_name = "TEXT")]
    text: String,
    /// Who is asking (a Slack user id or a name) [default: console.user of the config]
    #[arg(long)]
    user: Option<String>,
    /// The channel it is asked in (for channel allow-lists).
    #[arg(long)]
    channel: Option<String>,
    /// Output form.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: &ChatArgs, home: &Home, quiet: bool) -> anyhow::Result<u8> {
    let config = app::config(home)?;
    // Only commands that run code need the sandbox.
    let needs_pool = tradebox_core::command::Grammar::new(config.limits.max_code_bytes)
        .parse_line(&args.text)
        .map(|c| c.executes_code())
        .unwrap_or(false);
    let pipeline = app::pipeline(home, &config, needs_pool.then_some(1), quiet)?;
    let request = Request {
        user: args
            .user
            .clone()
            .unwrap_or_else(|| config.console.user.clone()),
        channel: args.channel.clone(),
        source: Source::Cli,
        input: Input::Line(args.text.clone()),
    };
    let show_placeholder = matches!(args.format, Format::Text) && !quiet;
    let reply = app::runtime()?.block_on(pipeline.handle(&request, |p: Reply| {
        if show_placeholder {
            eprintln!("{}", p.to_text());
        }
    }));
    print(&reply, args.format)?;
    Ok(if reply.error { 1 } else { 0 })
}

/// Prints a reply in the chosen form.
pub fn print(reply: &Reply, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Text => println!("{}", reply.to_text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(reply)?),
        Format::Blocks => {
            let rendered = tradebox_slack::render(reply);
            let uploads: Vec<_> = rendered
                .uploads
                .iter()
                .map(|u| serde_json::json!({"filename": u.filename, "title": u.title, "mime": u.mime, "bytes": u.bytes.len()}))
                .collect();
            let out = serde_json::json!({
                "text": rendered.text,
                "blocks": rendered.blocks,
                "ephemeral": rendered.ephemeral,
                "uploads": uploads,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
