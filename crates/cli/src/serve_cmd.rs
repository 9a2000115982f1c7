//! `tradebox serve`: the long-running front ends in one process. It prepares
//! everything a fresh machine lacks (Python runtime, demo data, snapshot),
//! warms the sandbox pool, then serves the web console and HTTP API, and
//! Slack when it is configured. The ready line with the console's URL is
//! printed only once all of that works. SIGTERM or Ctrl-C stops taking new
//! work, lets running jobs finish and answer, then exits.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tradebox_data::Home;

use crate::app;
use crate::data_cmd;
use crate::sandbox_setup::SetupError;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  tradebox serve                                # http://127.0.0.1:8765, demo data if the store is empty
  tradebox serve --listen 127.0.0.1:9000 --workers 4
  TRADEBOX_TOKEN=$(openssl rand -hex 24) tradebox serve   # a fixed token (16+ characters), for automation
  SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-... tradebox serve   # and Slack (Socket Mode)

The console's URL carries an access token (kept in $TRADEBOX_HOME/console-token,
or TRADEBOX_TOKEN); the HTTP API takes it as `Authorization: Bearer TOKEN`.")]
pub struct ServeArgs {
    /// Address to listen on [default: console.listen, 127.0.0.1:8765]; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Sandboxed Python workers [default: pool.workers, one per core plus one].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Do not generate demo data when the store is empty.
    #[arg(long)]
    no_demo: bool,
    /// Another Host header value to accept (a name this machine is reached by,
    /// with its port); only needed when listening beyond loopback.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    allow_hosts: Vec<String>,
}

/// The token in the console URL and the API's bearer token: `TRADEBOX_TOKEN`,
/// else one made for this home on first start and kept (mode 0600).
fn token(home: &Home) -> anyhow::Result<String> {
    if let Some(t) = std::env::var("TRADEBOX_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        if t.len() < 16 || t.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(SetupError(
                "TRADEBOX_TOKEN must be at least 16 printable characters without spaces".into(),
            )
            .into());
        }
        return Ok(t);
    }
    let path = home.root().join("console-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a console token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Host header values the console accepts (DNS rebinding protection).
fn allowed_hosts(addr: SocketAddr, extra: &[String]) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![format!("localhost:{port}")];
    match addr.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => hosts.push(format!("{ip}:{port}")),
        IpAddr::V6(ip) if !ip.is_unspecified() => hosts.push(format!("[{ip}]:{port}")),
        _ => {
            hosts.push(format!("127.0.0.1:{port}"));
            hosts.push(format!("[::1]:{port}"));
        }
    }
    hosts.extend(extra.iter().cloned());
    hosts
}

/// The address to show in the URL (a wildcard listen address is reached
/// through loopback).
fn shown_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], addr.port()))
        }
        _ => addr,
    }
}

pub fn run(args: &ServeArgs, home: &Home, quiet: bool) -> anyhow::Result<u8> {
    let started = Instant::now();
    if !crate::malloc::bound() {
        tracing::warn!("the C library refused the allocator settings; memory may grow over time");
    }
    let config = app::config(home)?;
    let listen = match args.listen {
        Some(addr) => addr,
        None => config
            .console
            .listen_addr()
            .map_err(|e| SetupError(e.to_string()))?,
    };
    // Slack half-configured is a configuration error: say so before any
    // slow preparation.
    let slack = tradebox_slack::SlackSettings::from_env(&config.slack)
        .map_err(|e| SetupError(e.to_string()))?;
    // Bind first: a busy port is reported at once, not after the pool warmed.
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        SetupError(format!(
            "cannot listen on {listen}: {e}{}",
            if e.kind() == std::io::ErrorKind::AddrInUse {
                " (is another tradebox serve running? pick another port with --listen 127.0.0.1:PORT)"
            } else {
                ""
            }
        ))
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(
            "listening on {local}, beyond loopback: anyone who can reach it and has the token can run code"
        );
    }

    // With `[store] url` on PostgreSQL the trades live there too, and this
    // home's store is a mirror of them.
    let home = &app::shared_home(home, &config)?;
    if !config.data.sources.is_empty() {
        data_cmd::no_sources_with_shared(home)?;
    }
    let token = token(home)?;
    // Uploads a killed server was importing are gone with it.
    home.sweep_uploads();
    // Followed sources are the data: synced once before the pool starts,
    // then in the background. Demo data is only for a home without them.
    let follower = if config.data.sources.is_empty() {
        data_cmd::ensure_data(home, !args.no_demo, quiet)?;
        None
    } else {
        Some(first_sync(home, &config.data.sources, quiet)?)
    };
    let workers = args.workers.map_or(0, usize::from);
    let pipeline = Arc::new(app::pipeline(home, &config, Some(workers), quiet)?);
    if nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "tradebox serve runs as root: the sandbox runs jobs as host uid {} instead, but the \
             store, tokens and runtime are root's; run tradebox as an unprivileged user",
            tradebox_sandbox::launcher::host_ids().0
        );
    }

    // Dropping `_stop_sources` (when serve returns) ends the follower.
    let (_stop_sources, stop_rx) = std::sync::mpsc::channel::<()>();
    if let Some(follower) = follower {
        std::thread::Builder::new()
            .name("tradebox-sources".into())
            .spawn(move || follow(follower, &stop_rx))
            .context("starting the source follower")?;
    } else if let Some(shared) = app::shared_store(home)? {
        let (home, replica) = (home.clone(), app::replica_name(&config));
        std::thread::Builder::new()
            .name("tradebox-shared".into())
            .spawn(move || follow_shared(&shared, &home, &replica, &stop_rx))
            .context("starting the shared store follower")?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tradebox-serve")
        .build()?;
    rt.block_on(serve(
        Arc::clone(&pipeline),
        home.clone(),
        Served {
            listener,
            local,
            token,
            allowed_hosts: allowed_hosts(local, &args.allow_hosts),
            user: config.console.user.clone(),
            drain_limit: config.limits.timeout() + Duration::from_secs(5),
            slack,
            started,
        },
    ))
}

/// Serves what any replica imports into the shared store: its mirror is
/// synced when the store notifies a change (and every few seconds), and a
/// new version published, which the pool takes by itself. A failure is
/// logged once, and its end.
fn follow_shared(
    shared: &tradebox_data::shared::Shared,
    home: &Home,
    replica: &str,
    stop: &std::sync::mpsc::Receiver<()>,
) {
    let mut failing = false;
    shared.follow(home, replica, stop, |synced| match synced {
        Ok(s) => {
            if std::mem::take(&mut failing) {
                tracing::info!("the shared trade store is reachable again");
            }
            if let Some(p) = s.published {
                tracing::info!(
                    generation = s.generation,
                    pulled = s.pulled,
                    version = p.manifest.version,
                    trades = p.manifest.trades,
                    ms = p.took.as_millis() as u64,
                    "shared trades mirrored; snapshot published"
                );
            }
        }
        Err(e) => {
            if !std::mem::replace(&mut failing, true) {
                tracing::warn!(error = %e, "cannot mirror the shared trade store; trying again");
            }
        }
    });
}

/// The first sync of every source, before the pool starts on its snapshot.
fn first_sync(
    home: &Home,
    sources: &[tradebox_data::sources::SourceConfig],
    quiet: bool,
) -> anyhow::Result<tradebox_data::sources::Follower> {
    let mut follower = tradebox_data::sources::Follower::new(home.clone(), sources);
    let pass = follower
        .pass(true)
        .context("syncing the configured sources")?;
    for o in &pass.outcomes {
        match &o.result {
            Ok(r) if !quiet => eprintln!("source {}: {} new of {} read", o.id, r.added, r.read),
            Ok(_) => {}
            Err(e) => eprintln!("source {}: {e} (retrying in the background)", o.id),
        }
    }
    if let (Some(p), false) = (&pass.published, quiet) {
        eprintln!(
            "snapshot v{} published: {} trades",
            p.manifest.version, p.manifest.trades
        );
    }
    Ok(follower)
}

/// Follows the sources until `stop` is dropped; the pool takes each version
/// published by itself.
fn follow(mut follower: tradebox_data::sources::Follower, stop: &std::sync::mpsc::Receiver<()>) {
    follower.run(stop, |pass| match pass {
        Ok(pass) => {
            for o in &pass.outcomes {
                match &o.result {
                    Ok(r) if r.added > 0 || !r.rejected.is_empty() => tracing::info!(
                        source = %o.id, added = r.added, read = r.read,
                        refused = r.rejected.len(), "source synced"
                    ),
                    Ok(r) => {
                        if let Some(p) = &r.problem {
                            tracing::warn!(source = %o.id, "source partly synced: {p}");
                        }
                    }
                    Err(e) => tracing::warn!(source = %o.id, "source sync failed: {e}"),
                }
            }
            // Publications and compactions log themselves (tradebox_data::snapshot).
            if let Some(Err(e)) = &pass.compacted {
                tracing::warn!("compacting the snapshot failed (retried later): {e}");
            }
        }
        Err(e) => tracing::warn!("source sync failed: {e}"),
    });
}

struct Served {
    listener: std::net::TcpListener,
    local: SocketAddr,
    token: String,
    allowed_hosts: Vec<String>,
    user: String,
    drain_limit: Duration,
    slack: Option<tradebox_slack::SlackSettings>,
    started: Instant,
}

async fn serve(
    pipeline: Arc<tradebox_core::pipeline::Pipeline>,
    home: Home,
    s: Served,
) -> anyhow::Result<u8> {
    let listener = tokio::net::TcpListener::from_std(s.listener)?;
    let mut router = tradebox_web::router(
        Arc::clone(&pipeline),
        home,
        tradebox_web::ConsoleOptions {
            token: s.token.clone(),
            allowed_hosts: s.allowed_hosts,
            user: s.user,
            max_body_bytes: tradebox_web::DEFAULT_MAX_BODY,
        },
    );

    // ---- Slack (Socket Mode, or HTTP routes on this listener) ----
    let slack = match s.slack {
        Some(settings) => {
            let app = tradebox_slack::SlackApp::start(Arc::clone(&pipeline), settings)
                .await
                .map_err(|e| SetupError(format!("Slack: {e}")))?;
            if let Some(routes) = app.router() {
                router = router.merge(routes);
            }
            Some(app)
        }
        None => None,
    };
    // ---- end of Slack ----

    let shown = shown_addr(s.local);
    if let Some(app) = &slack {
        eprintln!("{}", app.describe());
    }
    eprintln!(
        "tradebox is ready in {:.1}s; press Ctrl-C to stop",
        s.started.elapsed().as_secs_f64()
    );
    println!("Console ready: http://{shown}/?token={}", s.token);
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Replies leave at once: no Nagle delay on small responses.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown({
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    });
    let server = tokio::spawn(async move { server.await });
    // Audit rows kept while the store was unavailable are written as soon
    // as it answers, even if no command comes to write them first.
    let spool = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move {
            let mut tick = tokio::time::interval(SPOOL_FLUSH);
            // A flush that waited out a locked store is not followed by the
            // ticks it missed at once: a pause, then the next try.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if pipeline.audit().spooled() > 0 {
                    let p = Arc::clone(&pipeline);
                    let _ = tokio::task::spawn_blocking(move || p.audit().flush_spool()).await;
                }
            }
        }
    });
    let signal = stop_signal().await;
    eprintln!("{signal}: finishing running jobs, then stopping");
    let _ = stop_tx.send(true);
    let drain = async {
        if let Some(app) = slack {
            app.shutdown().await;
        }
        let _ = server.await;
        while pipeline.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(s.drain_limit, drain).await.is_err() {
        eprintln!(
            "stopping with {} job(s) still running after {:?}",
            pipeline.in_flight(),
            s.drain_limit
        );
    }
    spool.abort();
    let left = pipeline.audit().spooled();
    if left > 0 {
        let p = Arc::clone(&pipeline);
        let flushed = tokio::task::spawn_blocking(move || p.audit().flush_spool()).await;
        if !matches!(flushed, Ok(Ok(n)) if n == left) {
            eprintln!("{left} audit row(s) could not be written: the store is unavailable");
        }
    }
    Ok(0)
}

/// How often rows the audit trail kept while its store was unavailable are
/// tried again.
const SPOOL_FLUSH: Duration = Duration::from_secs(1);

/// Waits for SIGTERM or SIGINT and names it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still dies by the default action.
        std::future::pending::<()>().await;
        return "stopped";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_for_loopback_and_wildcard() {
        let h = allowed_hosts("127.0.0.1:8765".parse().unwrap(), &[]);
        assert_eq!(h, ["localhost:8765", "127.0.0.1:8765"]);
        let h = allowed_hosts("0.0.0.0:80".parse().unwrap(), &["box.lan:80".into()]);
        assert_eq!(
            h,
            ["localhost:80", "127.0.0.1:80", "[::1]:80", "box.lan:80"]
        );
        let h = allowed_hosts("[::1]:9".parse().unwrap(), &[]);
        assert_eq!(h, ["localhost:9", "[::1]:9"]);
        assert_eq!(
            shown_addr("0.0.0.0:5".parse().unwrap()),
            "127.0.0.1:5".parse().unwrap()
        );
    }

    #[test]
    fn a_token_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::TempDir::new().unwrap();
        let home = Home::new(dir.path().to_path_buf());
        let a = token(&home).unwrap();
        let b = token(&home).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
        let mode = std::fs::metadata(dir.path().join("console-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
