//! The pool of warm zygotes and the queue in front of it (the supervisor
//! side of the sandbox).
//!
//! Each slot is a thread that owns one zygote process: it takes a job from
//! the shared bounded queue (the idle slot that has waited longest takes
//! the next one, see [`crate::turns`]), sends it, waits for the answer with
//! a deadline (the job's timeout plus a grace period), and replaces the
//! zygote when it dies, misbehaves or misses the deadline. When a new data
//! snapshot version is published, the zygotes move to it in place, one at
//! a time and between jobs: each maps the new version (its new segments
//! read in) and forks a child on it, which warms up on it, before it takes
//! another job, while the others keep serving the version they have.
//! Callers submit jobs and get a receiver for the result; a full queue is
//! reported at once, never dropped silently.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::idle_group::{Demotion, IdleGroup};
use crate::launcher::LaunchSpec;
use crate::protocol::MAX_FRAME;
use crate::turns::{Turn, Turns};

use crate::result::{DataAsOf, ExecResult, ResultCaps};

/// Largest job payload (code, parameters) the zygote accepts.
const MAX_JOB: usize = 4 << 20;

/// Largest control frame (header, ready, idle) kept from a zygote.
const HEADER_MAX: usize = 64 << 10;

/// How long a zygote has to say it took a job. One that does not (stopped,
/// hung, or too slow to read its pipe) is replaced, and the job runs on a
/// fresh one instead of waiting out its whole time limit.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle slot looks for a new snapshot version.
const FOLLOW_TICK: Duration = Duration::from_millis(25);

/// How long a zygote may take to load a new snapshot version.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a job got no answer from a zygote (which is then replaced).
#[derive(Debug)]
enum RunError {
    /// The job never reached the zygote: it can run elsewhere.
    NotDelivered(String),
    /// The zygote broke during the job.
    Broken(String),
}

/// The Python side of the runtime, as the launcher needs it.
#[derive(Debug, Clone)]
pub struct PythonPaths {
    pub python: PathBuf,
    pub venv: PathBuf,
    pub base_prefix: PathBuf,
    /// Folder holding the `tradebox` package.
    pub lib: PathBuf,
}

/// How to run the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The tradebox binary (its hidden `__zygote` subcommand is the launcher).
    pub launcher: PathBuf,
    pub python: PythonPaths,
    /// Folder for the zygotes' root mount points.
    pub run_dir: PathBuf,
    /// The data snapshot version folder, if any. Its parent (the snapshot
    /// root) is what the zygotes see, so they can move to later versions.
    pub snapshot: Option<PathBuf>,
    /// A snapshot root whose `current` link the pool follows: when it points
    /// at a new version, the zygotes move to it one at a time.
    pub follow: Option<PathBuf>,
    /// Number of zygotes.
    pub size: usize,
    /// Jobs that may wait for a zygote.
    pub queue: usize,
    pub scratch_mib: u64,
    /// How long a zygote may take to start.
    pub start_timeout: Duration,
}

/// One snippet to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub code: String,
    pub timeout: Duration,
    pub memory_mib: u64,
    pub output_limit: usize,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub as_of: Option<String>,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            code: String::new(),
            timeout: Duration::from_secs(30),
            memory_mib: 1024,
            output_limit: 1 << 20,
            params: serde_json::Map::new(),
            as_of: None,
        }
    }
}

/// Errors of the pool itself (not of a job).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the sandbox could not be set up ({layer}): {message}")]
    Layer { layer: String, message: String },
    #[error("the job queue is full ({0} waiting); try again shortly")]
    QueueFull(usize),
    #[error("the sandbox pool has stopped")]
    Stopped,
    #[error("starting a zygote: {0}")]
    Start(String),
}

/// State of one slot, for `doctor` and the benchmark.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotStatus {
    /// Whether a zygote is there to take a job (false between the death
    /// or retirement of one and the start of its replacement).
    pub up: bool,
    /// Whether a job is running on it now.
    pub busy: bool,
    pub pid: Option<u32>,
    pub rss_kb: Option<u64>,
    /// How many of its zygote's objects were made immortal at its start
    /// (0 on a Python without immortal objects: 3.11, 3.14 and later).
    pub immortal: Option<u64>,
    pub jobs: u64,
    pub restarts: u64,
    /// The snapshot version its zygote serves.
    pub version: Option<u64>,
    /// How many times its zygote moved to a new version in place.
    pub loads: u64,
    pub last_error: Option<String>,
}

struct Work {
    job: Job,
    reply: oneshot::Sender<ExecResult>,
}

struct Shared {
    config: Mutex<PoolConfig>,
    /// Held by the slot whose zygote is moving to a new snapshot version:
    /// never more than one at a time.
    rolling: Mutex<()>,
    /// Versions a zygote could not load: never wanted again, and the pool
    /// stays on the version it had.
    refused: Mutex<Vec<PathBuf>>,
    /// The last version a zygote started on or moved to: where a zygote
    /// that cannot start on the wanted version falls back to.
    good: Mutex<Option<PathBuf>>,
    slots: Vec<Mutex<SlotStatus>>,
    /// The demoted jobs in the idle CPU group, and whether their quota is on.
    demotion: Demotion,
    /// Wakes the idle group's watcher (a job started while demoted jobs
    /// run without their quota).
    wake: Sender<()>,
    /// Which idle slot takes the next job.
    turns: Turns,
}

impl Shared {
    /// Changes slot `i`'s state.
    fn update(&self, i: usize, f: impl FnOnce(&mut SlotStatus)) {
        if let Ok(mut s) = self.slots[i].lock() {
            f(&mut s);
        }
    }

    /// Never asks for version `bad` again: the pool wants `instead` if it
    /// wanted `bad`.
    fn refuse(&self, bad: &Path, instead: Option<PathBuf>) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.push(bad.to_path_buf());
        }
        if let Ok(mut config) = self.config.lock() {
            if config.snapshot.as_deref() == Some(bad) {
                config.snapshot = instead;
            }
        }
    }
}

/// Shows a zygote just started in its slot's state.
fn show(s: &mut SlotStatus, z: &Zygote) {
    s.up = true;
    s.pid = Some(z.pid);
    s.rss_kb = z.rss_kb;
    s.immortal = z.immortal;
    s.version = z.manifest.as_ref().map(|m| m.version);
}

/// A running pool.
pub struct Pool {
    tx: Option<Sender<Work>>,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    queue: usize,
    idle: Result<IdleWatch, String>,
}

/// The thread that moves demoted jobs into the idle CPU group (see
/// [`crate::idle_group`]), which it removes when it ends.
struct IdleWatch {
    dir: PathBuf,
    /// Dropped to stop the thread.
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IdleWatch {
    fn start(shared: &Arc<Shared>, wake: Receiver<()>) -> Result<IdleWatch, String> {
        let group = IdleGroup::create()?;
        let dir = group.dir().to_path_buf();
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let shared = Arc::clone(shared);
        let thread = std::thread::Builder::new()
            .name("idle-group".into())
            .spawn(move || {
                let slots = || shared.slots.iter().filter_map(|s| s.lock().ok());
                crate::idle_group::watch(
                    &group,
                    || slots().filter_map(|s| s.pid).collect(),
                    || slots().filter(|s| s.busy).count(),
                    &shared.demotion,
                    &wake,
                    &stopped,
                )
            })
            .map_err(|e| e.to_string())?;
        Ok(IdleWatch {
            dir,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The default number of zygotes: one per core, plus one (see
/// `pool.workers`).
pub fn default_size() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from) + 1
}

impl Pool {
    /// Starts the pool and waits until every zygote is ready; fails (closed)
    /// if the sandbox cannot be built.
    pub fn start(config: PoolConfig) -> Result<Pool, PoolError> {
        std::fs::create_dir_all(&config.run_dir)
            .map_err(|e| PoolError::Start(format!("{}: {e}", config.run_dir.display())))?;
        let size = config.size.max(1);
        let queue = config.queue.max(1);
        let (wake, woken) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            demotion: Demotion::default(),
            wake,
            config: Mutex::new(config),
            rolling: Mutex::new(()),
            refused: Mutex::new(Vec::new()),
            good: Mutex::new(None),
            slots: (0..size)
                .map(|_| Mutex::new(SlotStatus::default()))
                .collect(),
            turns: Turns::new(size),
        });
        let (tx, rx) = crossbeam_channel::bounded::<Work>(queue);
        // Each slot thread starts its own zygote: the launcher dies with the
        // thread that spawned it (PR_SET_PDEATHSIG is per thread), so that
        // thread must live as long as the zygote.
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), PoolError>>(size);
        let mut threads = Vec::with_capacity(size);
        for i in 0..size {
            let shared = Arc::clone(&shared);
            let rx = rx.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("zygote-{i}"))
                .spawn(move || {
                    match spawn_zygote(&shared) {
                        Ok(zygote) => {
                            // The slot's state is visible before `start`
                            // returns.
                            shared.update(i, |s| show(s, &zygote));
                            let _ = ready.send(Ok(()));
                            drop(ready);
                            slot_loop(i, zygote, &rx, &shared);
                        }
                        Err(e) => {
                            let _ = shared.turns.leave(i);
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .map_err(|e| PoolError::Start(e.to_string()))?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut pool = Pool {
            tx: Some(tx),
            shared,
            threads,
            queue,
            idle: Err("not started".into()),
        };
        for _ in 0..size {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e), // dropping the pool stops the others
                Err(_) => return Err(PoolError::Start("a zygote thread ended".into())),
            }
        }
        pool.queue = queue;
        pool.idle = IdleWatch::start(&pool.shared, woken);
        if let Err(e) = &pool.idle {
            tracing::info!("demoted jobs stay in their own CPU group: {e}");
        }
        Ok(pool)
    }

    /// Queues a job; the receiver yields its result.
    pub fn submit(&self, job: Job) -> Result<oneshot::Receiver<ExecResult>, PoolError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(PoolError::Stopped)?;
        match tx.try_send(Work { job, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(PoolError::QueueFull(self.queue)),
            Err(TrySendError::Disconnected(_)) => Err(PoolError::Stopped),
        }
    }

    /// Runs a job and waits for its result (for synchronous callers; async
    /// code awaits the receiver from [`Pool::submit`] instead, as blocking
    /// here inside an async runtime panics).
    pub fn run(&self, job: Job) -> Result<ExecResult, PoolError> {
        self.submit(job)?
            .blocking_recv()
            .map_err(|_| PoolError::Stopped)
    }

    /// Points the pool at a snapshot version folder; the zygotes move to
    /// it one at a time, between jobs, so no request is dropped.
    pub fn set_snapshot(&self, dir: Option<PathBuf>) {
        if let Ok(mut config) = self.shared.config.lock() {
            config.snapshot = dir;
        }
    }

    /// The idle CPU group demoted jobs are moved into, or why there is
    /// none (see [`crate::idle_group`]).
    pub fn idle_group(&self) -> Result<&Path, &str> {
        self.idle
            .as_ref()
            .map(|w| w.dir.as_path())
            .map_err(String::as_str)
    }

    /// Jobs waiting in the queue for a zygote (not those running).
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// Per-zygote state.
    pub fn status(&self) -> Vec<SlotStatus> {
        self.shared
            .slots
            .iter()
            .map(|s| s.lock().map(|s| s.clone()).unwrap_or_default())
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None; // closes the queue: slots finish their job and stop
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Its jobs are gone now: the group can be removed.
        self.idle = Err("stopped".into());
    }
}

/// How long a zygote may take to reset after a job (kill, reap, wipe the
/// scratch, fork the next child) before it is replaced.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a slot checks that the Python runtime its zygote started from
/// is still the one on disk.
const RUNTIME_CHECK: Duration = Duration::from_secs(1);

/// The identity of a Python runtime on disk: device and inode of its
/// folders (links followed). A runtime removed, or provisioned anew, under
/// a running zygote has another (or none).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuntimeId(Vec<(u64, u64)>);

impl RuntimeId {
    fn of(python: &PythonPaths) -> Option<RuntimeId> {
        use std::os::unix::fs::MetadataExt;
        [&python.venv, &python.lib, &python.base_prefix]
            .iter()
            .map(|p| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino())))
            .collect::<Option<Vec<_>>>()
            .map(RuntimeId)
    }
}

/// Why a zygote can no longer serve, if the runtime on disk (`now`) is not
/// the one it started from.
fn runtime_moved(z: &Zygote, now: Option<&RuntimeId>, python: &PythonPaths) -> Option<String> {
    match now {
        Some(now) if *now == z.runtime => None,
        None => Some(missing_runtime(python)),
        Some(_) => Some(format!(
            "the Python runtime at {} was provisioned again",
            python.venv.display()
        )),
    }
}

fn missing_runtime(python: &PythonPaths) -> String {
    format!(
        "the Python runtime is missing ({}, {}, {}): provision it again (`tradebox doctor` \
         checks it)",
        python.venv.display(),
        python.lib.display(),
        python.base_prefix.display()
    )
}

fn slot_loop(i: usize, first: Zygote, rx: &Receiver<Work>, shared: &Shared) {
    let mut zygote = Some(first);
    // Starts a zygote in place of the one that is gone; None if that fails.
    let replace = || -> Option<Zygote> {
        match spawn_zygote(shared) {
            Ok(z) => {
                shared.update(i, |s| {
                    show(s, &z);
                    s.restarts += 1;
                });
                Some(z)
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(slot = i, "starting a zygote: {msg}");
                shared.update(i, |s| s.last_error = Some(msg));
                None
            }
        }
    };
    let mut runtime_checked = Instant::now();
    let mut awaiting_runtime = false;
    let _in_line = shared.turns.enter(i);
    loop {
        let work = match shared.turns.wait(i, rx, FOLLOW_TICK) {
            Turn::Job(work) => Some(work),
            Turn::Tick => None,
            Turn::Closed => break,
        };
        // A zygote whose runtime was removed or provisioned anew under it
        // is retired (new imports would fail in its jobs) and replaced as
        // soon as a runtime is there; until then jobs are told why.
        if runtime_checked.elapsed() >= RUNTIME_CHECK {
            runtime_checked = Instant::now();
            if let Ok(python) = shared.config.lock().map(|c| c.python.clone()) {
                let now = RuntimeId::of(&python);
                let moved = zygote
                    .as_ref()
                    .and_then(|z| runtime_moved(z, now.as_ref(), &python));
                if let Some(why) = moved {
                    tracing::warn!(slot = i, "replacing the zygote: {why}");
                    shared.update(i, |s| s.last_error = Some(why));
                    zygote = None;
                    awaiting_runtime = true;
                }
                if zygote.is_none() && awaiting_runtime && now.is_some() {
                    zygote = shared.turns.aside(i, replace);
                    awaiting_runtime = zygote.is_none();
                }
            }
        }
        follow_snapshot(shared);
        if let Some(z) = zygote.as_mut() {
            if let Err(reason) = roll(i, z, shared) {
                tracing::warn!(slot = i, "replacing the zygote: {reason}");
                shared.update(i, |s| s.last_error = Some(reason.clone()));
                zygote = None;
            }
        }
        let up = zygote.is_some();
        shared.update(i, |s| s.up = up);
        let Some(work) = work else { continue };
        // A zygote that died while idle is replaced before it can fail a job.
        if zygote
            .as_mut()
            .is_some_and(|z| !matches!(z.child.try_wait(), Ok(None)))
        {
            zygote = None;
        }
        let started = Instant::now();
        let mut delivered_to_dead = false;
        shared.update(i, |s| s.busy = true);
        if shared.demotion.wants_wake() {
            let _ = shared.wake.try_send(()); // a wake-up already pending does as well
        }
        let result = loop {
            if zygote.is_none() {
                zygote = replace();
            }
            let Some(z) = zygote.as_mut() else {
                let msg = shared.slots[i]
                    .lock()
                    .ok()
                    .and_then(|s| s.last_error.clone())
                    .unwrap_or_else(|| "the sandbox could not be started".into());
                std::thread::sleep(Duration::from_millis(500));
                break ExecResult::failure("SandboxError", msg, 0);
            };
            match z.run(&work.job) {
                Ok(mut r) => {
                    r.data_as_of = z
                        .manifest
                        .as_ref()
                        .map(|m| DataAsOf::new(m, work.job.as_of.as_deref()));
                    break r;
                }
                // The job never reached a worker that could run it: it runs
                // on a fresh one, and nothing is blamed on it.
                Err(RunError::NotDelivered(e)) if !delivered_to_dead => {
                    tracing::warn!(slot = i, "the zygote was gone before the job: {e}");
                    delivered_to_dead = true;
                    zygote = None;
                }
                Err(RunError::NotDelivered(e) | RunError::Broken(e)) => {
                    let msg = format!("the sandbox worker failed during the job: {e}");
                    shared.update(i, |s| s.last_error = Some(msg.clone()));
                    zygote = None; // killed on drop, replaced below
                    break ExecResult::failure(
                        "Crashed",
                        msg,
                        started.elapsed().as_millis() as u64,
                    );
                }
            }
        };
        shared.update(i, |s| {
            s.jobs += 1;
            s.busy = false;
        });
        let _ = work.reply.send(result);
        // The next job only starts on a zygote that has reset after this
        // one: one that cannot (a scratch it could not empty, no answer) is
        // replaced now, before the next job.
        if let Some(z) = zygote.as_mut() {
            if let Err(reason) = z.await_idle(Instant::now() + IDLE_TIMEOUT) {
                tracing::warn!(slot = i, "replacing the zygote: {reason}");
                shared.update(i, |s| s.last_error = Some(reason.clone()));
                zygote = None;
            }
        }
        if zygote.is_none() {
            zygote = replace();
        }
        let up = zygote.is_some();
        shared.update(i, |s| s.up = up);
        shared.turns.rejoin(i);
    }
}

/// Starts a zygote on the version the pool wants. One that cannot read
/// that version (the zygote's "snapshot" error) makes the pool refuse it
/// and start on the last version a zygote served instead (none at first:
/// then jobs are told no data is loaded), so a damaged version never stops
/// the service.
fn spawn_zygote(shared: &Shared) -> Result<Zygote, PoolError> {
    let mut config = shared
        .config
        .lock()
        .map_err(|_| PoolError::Start("the pool's settings are poisoned".into()))?
        .clone();
    let spawned = match Zygote::spawn(&config) {
        Err(PoolError::Layer { layer, message }) if layer == "snapshot" => {
            let bad = config.snapshot.clone();
            tracing::warn!("the snapshot version cannot be loaded, falling back: {message}");
            let fallback = shared
                .good
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .filter(|g| Some(g) != bad.as_ref());
            if let Some(bad) = &bad {
                shared.refuse(bad, fallback.clone());
            }
            config.snapshot = fallback;
            Zygote::spawn(&config)
        }
        other => other,
    }?;
    if let (Some(dir), Ok(mut good)) = (&spawned.serving, shared.good.lock()) {
        *good = Some(dir.clone());
    }
    Ok(spawned)
}

/// Points the pool at the version `current` points at, if it changed.
fn follow_snapshot(shared: &Shared) {
    let Ok(mut config) = shared.config.lock() else {
        return;
    };
    let Some(root) = &config.follow else { return };
    let Ok(dir) = std::fs::canonicalize(root.join("current")) else {
        return;
    };
    let refused = shared.refused.lock().is_ok_and(|r| r.contains(&dir));
    if config.snapshot.as_ref() != Some(&dir) && !refused {
        tracing::info!(snapshot = %dir.display(), "new data snapshot");
        config.snapshot = Some(dir);
    }
}

/// Moves a zygote to the version the pool wants, if it serves another and
/// no other slot is moving: the other zygotes keep serving meanwhile, and
/// this one takes its next job on the new version, loaded (an
/// idle slot moves within a tick of the publication, so a job rarely waits
/// for it). A version a zygote refused is not tried again; `Err` means
/// the zygote must be replaced.
fn roll(i: usize, z: &mut Zygote, shared: &Shared) -> Result<(), String> {
    let wanted = match shared.config.lock() {
        Ok(config) => config.snapshot.clone(),
        Err(_) => return Ok(()),
    };
    let Some(dir) = wanted else { return Ok(()) };
    if z.serving.as_ref() == Some(&dir) {
        return Ok(());
    }
    let Ok(_turn) = shared.rolling.try_lock() else {
        return Ok(()); // another slot is moving: this one serves on
    };
    // Another slot may have refused it while this one waited.
    if shared.refused.lock().is_ok_and(|r| r.contains(&dir)) {
        return Ok(());
    }
    let started = Instant::now();
    match shared.turns.aside(i, || z.load(&dir))? {
        Loaded::Moved => {
            if let Ok(mut good) = shared.good.lock() {
                *good = Some(dir.clone());
            }
            tracing::info!(
                slot = i,
                snapshot = %dir.display(),
                ms = started.elapsed().as_millis() as u64,
                "zygote moved to the new snapshot"
            );
            let (rss, version) = (z.rss_kb, z.manifest.as_ref().map(|m| m.version));
            shared.update(i, |s| {
                s.rss_kb = rss;
                s.version = version;
                s.loads += 1;
            });
        }
        Loaded::Refused(why) => {
            tracing::warn!(snapshot = %dir.display(), "the snapshot version cannot be loaded: {why}");
            // The pool stays on the version this zygote still serves.
            shared.refuse(&dir, z.serving.clone());
            let msg = format!("snapshot {} refused: {why}", dir.display());
            shared.update(i, |s| s.last_error = Some(msg));
        }
    }
    Ok(())
}

/// What [`Zygote::load`] did.
enum Loaded {
    Moved,
    /// The version cannot be read (why): the zygote kept the one it had.
    Refused(String),
}

/// One zygote process and its pipes.
struct Zygote {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pid: u32,
    rss_kb: Option<u64>,
    /// Objects made immortal at its start, from its "ready" message.
    immortal: Option<u64>,
    root: PathBuf,
    /// The snapshot root it sees at `/data`.
    mounted: Option<PathBuf>,
    /// The version folder it serves, kept on disk while it does.
    serving: Option<PathBuf>,
    pin: Option<std::fs::File>,
    /// That version's manifest (read before the zygote loads it).
    manifest: Option<tradebox_data::snapshot::Manifest>,
    /// The runtime it was started from.
    runtime: RuntimeId,
}

static NEXT_ROOT: AtomicU64 = AtomicU64::new(0);

/// A version folder kept on disk, with its manifest.
fn pinned(dir: &Path) -> Result<(std::fs::File, tradebox_data::snapshot::Manifest), String> {
    let pin = tradebox_data::snapshot::pin(dir).map_err(|e| e.to_string())?;
    let manifest = tradebox_data::snapshot::manifest(dir).map_err(|e| e.to_string())?;
    Ok((pin, manifest))
}

/// The folder name of a version under `root`, if that is where it is.
fn version_in(root: Option<&PathBuf>, dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    (dir.parent() == root.map(PathBuf::as_path) && crate::launcher::is_version_name(name))
        .then(|| name.to_string())
}

impl Zygote {
    fn spawn(config: &PoolConfig) -> Result<Zygote, PoolError> {
        let root = config.run_dir.join(format!(
            "root-{}-{}",
            std::process::id(),
            NEXT_ROOT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&root)
            .map_err(|e| PoolError::Start(format!("{}: {e}", root.display())))?;
        // The root the pool follows (created if no version exists yet), or
        // the folder of the version given.
        let mounted = match (&config.snapshot, &config.follow) {
            (Some(dir), _) => dir.parent().map(PathBuf::from),
            (None, Some(follow)) => std::fs::create_dir_all(follow)
                .ok()
                .map(|()| follow.clone()),
            (None, None) => None,
        };
        let (pin, manifest, version) = match config.snapshot.as_deref() {
            Some(dir) => {
                let version = version_in(mounted.as_ref(), dir).ok_or_else(|| {
                    PoolError::Start(format!("{} is not a snapshot version", dir.display()))
                })?;
                let (pin, manifest) =
                    pinned(dir).map_err(|e| PoolError::Start(format!("the snapshot: {e}")))?;
                (Some(pin), Some(manifest), Some(version))
            }
            None => (None, None, None),
        };
        let runtime = RuntimeId::of(&config.python)
            .ok_or_else(|| PoolError::Start(missing_runtime(&config.python)))?;
        let spec = LaunchSpec {
            venv: config.python.venv.clone(),
            base_prefix: config.python.base_prefix.clone(),
            lib: config.python.lib.clone(),
            snapshot: mounted.clone(),
            version,
            root: root.clone(),
            scratch_mib: config.scratch_mib,
        };
        let spec = serde_json::to_string(&spec).map_err(|e| PoolError::Start(e.to_string()))?;
        let mut child = Command::new(&config.launcher)
            .arg("__zygote")
            .arg(spec)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PoolError::Start(format!("{}: {e}", config.launcher.display())))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(PoolError::Start("no pipes to the zygote".into()));
        };
        std::thread::spawn(move || log_stderr(pid, stderr));
        let mut zygote = Zygote {
            child,
            stdin,
            stdout,
            pid,
            rss_kb: None,
            immortal: None,
            root,
            serving: config.snapshot.clone(),
            mounted,
            pin,
            manifest,
            runtime,
        };
        let deadline = Instant::now() + config.start_timeout;
        let frame = match zygote.read_frame(deadline, HEADER_MAX) {
            Ok((frame, _)) => frame,
            Err(e) => return Err(PoolError::Start(format!("the zygote did not start: {e}"))),
        };
        let msg: serde_json::Value = serde_json::from_slice(&frame)
            .map_err(|e| PoolError::Start(format!("bad first frame: {e}")))?;
        match msg["type"].as_str() {
            Some("ready") => {
                zygote.rss_kb = msg["rss_kb"].as_u64();
                zygote.immortal = msg["immortal"].as_u64();
                tracing::debug!(
                    pid,
                    rss_kb = zygote.rss_kb,
                    immortal = zygote.immortal,
                    "zygote ready"
                );
                Ok(zygote)
            }
            Some("error") => Err(PoolError::Layer {
                layer: msg["layer"].as_str().unwrap_or("unknown").to_string(),
                message: msg["message"].as_str().unwrap_or("").to_string(),
            }),
            _ => Err(PoolError::Start(format!("unexpected first frame {msg}"))),
        }
    }

    /// Sends a job and returns its result; `Err` means the zygote is unusable.
    fn run(&mut self, job: &Job) -> Result<ExecResult, RunError> {
        let timeout_ms = job.timeout.as_millis() as u64;
        let caps = ResultCaps::for_output(job.output_limit);
        let cpu_seconds = job.timeout.as_secs() + 1;
        // The job travels as two frames: a control frame the zygote reads,
        // and the payload it relays to the child without parsing.
        let payload = serde_json::to_vec(&json!({
            "code": job.code,
            "timeout_ms": timeout_ms,
            "cpu_seconds": cpu_seconds,
            "memory_mb": job.memory_mib,
            "output_limit": job.output_limit,
            "params": job.params,
            "as_of": job.as_of,
            "caps": caps,
        }))
        .map_err(|e| RunError::NotDelivered(e.to_string()))?;
        if payload.len() > MAX_JOB {
            return Ok(ExecResult::failure(
                "CodeTooLarge",
                format!(
                    "the code and parameters take {} KiB, over the {} KiB limit",
                    payload.len() >> 10,
                    MAX_JOB >> 10
                ),
                0,
            ));
        }
        let control = json!({
            "type": "job",
            "timeout_ms": timeout_ms,
            "result_bytes": caps.result_bytes,
            "output_bytes": job.output_limit,
        });
        // Both frames in one write: the zygote wakes once for the job.
        let control =
            serde_json::to_vec(&control).map_err(|e| RunError::NotDelivered(e.to_string()))?;
        let mut message = Vec::with_capacity(8 + control.len() + payload.len());
        crate::protocol::append_frame(&mut message, &control)
            .and_then(|()| crate::protocol::append_frame(&mut message, &payload))
            .and_then(|()| self.stdin.write_all(&message))
            .and_then(|()| self.stdin.flush())
            .map_err(|e| RunError::NotDelivered(e.to_string()))?;
        // The zygote says it took the job before the child sees it: until
        // then, nothing of the job has run and it can go elsewhere.
        let (accepted, _) = self
            .read_frame(Instant::now() + ACCEPT_TIMEOUT, HEADER_MAX)
            .map_err(|e| RunError::NotDelivered(format!("the job was not taken: {e}")))?;
        let accepted: serde_json::Value = serde_json::from_slice(&accepted)
            .map_err(|e| RunError::NotDelivered(format!("bad frame: {e}")))?;
        if accepted["type"] != "accepted" {
            return Err(RunError::NotDelivered(format!(
                "unexpected frame {accepted}"
            )));
        }
        // The zygote stops a job at its timeout; the grace covers its reply.
        // Nothing a job does extends this deadline.
        let deadline = Instant::now() + job.timeout + Duration::from_secs(2);
        let broken = RunError::Broken;
        let (header, _) = self.read_frame(deadline, HEADER_MAX).map_err(broken)?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| RunError::Broken(format!("bad header: {e}")))?;
        let elapsed = header["elapsed_ms"].as_u64().unwrap_or(0);
        let status = header["status"].as_str().unwrap_or("");
        if status == "ok" {
            let (body, _) = self
                .read_frame(deadline + Duration::from_secs(5), caps.result_bytes)
                .map_err(broken)?;
            return Ok(ExecResult::from_child(&body, &caps, job.memory_mib));
        }
        // Whatever the job printed before it ended comes with the error.
        let (printed, kept) = self
            .read_frame(deadline + Duration::from_secs(5), job.output_limit)
            .map_err(broken)?;
        let total = header["output_total"]
            .as_u64()
            .unwrap_or(0)
            .max(kept as u64);
        let signal = header["signal"].as_i64();
        let cpu_limited = signal == Some(nix::libc::SIGXCPU as i64)
            || (signal == Some(nix::libc::SIGKILL as i64)
                && header["cpu_ms"].as_u64().unwrap_or(0) >= cpu_seconds * 1000);
        let mut result = match status {
            "timeout" => ExecResult::failure(
                "Timeout",
                format!(
                    "timed out: the code ran longer than its limit of {} s and was stopped",
                    job.timeout.as_secs_f64()
                ),
                elapsed,
            ),
            "died" if cpu_limited => ExecResult::failure(
                "Timeout",
                format!(
                    "timed out: the code used {cpu_seconds} s of CPU time (its threads \
                     together), the limit for a {} s job, and was stopped",
                    job.timeout.as_secs_f64()
                ),
                elapsed,
            ),
            "too_large" => ExecResult::failure(
                "ResultTooLarge",
                format!(
                    "the job's result is over the {} MiB limit",
                    caps.result_bytes >> 20
                ),
                elapsed,
            ),
            "died" => {
                let how = match (signal, header["exit_code"].as_i64()) {
                    (Some(sig), _) => signal_name(sig),
                    (_, Some(code)) => format!("exit code {code}"),
                    _ => "an unknown cause".into(),
                };
                ExecResult::failure(
                    "Crashed",
                    format!("the code's process ended ({how}) before returning a result"),
                    elapsed,
                )
            }
            "confine" => ExecResult::failure(
                "SandboxError",
                format!(
                    "the sandbox could not be set up (job confinement): {}",
                    header["message"].as_str().unwrap_or("no reason given")
                ),
                elapsed,
            ),
            other => return Err(RunError::Broken(format!("unexpected status {other:?}"))),
        };
        result.output = crate::result::printed_output(&printed, total, job.output_limit);
        Ok(result)
    }

    /// Loads another snapshot version in place (see [`roll`]): the zygote
    /// drops its waiting child, maps the version, forks a child on it and
    /// says so. A version it cannot read is refused and the zygote keeps
    /// the one it has; `Err` means it must be replaced.
    fn load(&mut self, dir: &Path) -> Result<Loaded, String> {
        let Some(name) = version_in(self.mounted.as_ref(), dir) else {
            return Err(format!(
                "{} is outside the zygote's snapshot root",
                dir.display()
            ));
        };
        let (pin, manifest) = match pinned(dir) {
            Ok(p) => p,
            Err(e) => return Ok(Loaded::Refused(e)),
        };
        crate::protocol::write_frame(&mut self.stdin, &json!({"type": "load", "version": name}))
            .map_err(|e| format!("sending the new version: {e}"))?;
        let (frame, _) = self.read_frame(Instant::now() + LOAD_TIMEOUT, HEADER_MAX)?;
        let msg: serde_json::Value =
            serde_json::from_slice(&frame).map_err(|e| format!("bad frame: {e}"))?;
        let reason = || {
            msg["reason"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string()
        };
        match msg["type"].as_str() {
            Some("loaded") => {
                self.rss_kb = msg["rss_kb"].as_u64().or(self.rss_kb);
                self.serving = Some(dir.to_path_buf());
                self.pin = Some(pin);
                self.manifest = Some(manifest);
                Ok(Loaded::Moved)
            }
            Some("load_failed") => Ok(Loaded::Refused(reason())),
            Some("unhealthy") => Err(format!("the zygote could not reset: {}", reason())),
            _ => Err(format!("unexpected frame {msg}")),
        }
    }

    /// Waits for the zygote's word that it has reset after a job.
    fn await_idle(&mut self, deadline: Instant) -> Result<(), String> {
        let (frame, _) = self.read_frame(deadline, HEADER_MAX)?;
        let msg: serde_json::Value =
            serde_json::from_slice(&frame).map_err(|e| format!("bad frame: {e}"))?;
        match msg["type"].as_str() {
            Some("idle") => Ok(()),
            Some("unhealthy") => Err(format!(
                "the zygote could not reset after a job: {}",
                msg["reason"].as_str().unwrap_or("no reason given")
            )),
            _ => Err(format!("unexpected frame {msg}")),
        }
    }

    /// Reads one frame, giving up at `deadline`; keeps at most `max` bytes
    /// of its body (the rest is read and dropped) and returns them with
    /// their count. A frame over [`MAX_FRAME`] means a broken zygote.
    fn read_frame(&mut self, deadline: Instant, max: usize) -> Result<(Vec<u8>, usize), String> {
        let mut header = [0u8; 4];
        self.read_exact_by(&mut header, deadline)?;
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes is over the limit"));
        }
        let keep = len.min(max);
        let mut body = vec![0u8; keep];
        self.read_exact_by(&mut body, deadline)?;
        let mut rest = len - keep;
        let mut sink = [0u8; 8192];
        while rest > 0 {
            let n = rest.min(sink.len());
            self.read_exact_by(&mut sink[..n], deadline)?;
            rest -= n;
        }
        Ok((body, keep))
    }

    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer before the deadline".into());
            }
            let ms = u16::try_from(left.as_millis().min(60_000)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.to_string()),
            }
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => return Err("the zygote closed its pipe".into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Killing the launcher kills the zygote (PDEATHSIG) and with it
        // every process of its pid namespace.
        let _ = self.stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.root);
    }
}

fn log_stderr(pid: u32, mut stderr: std::process::ChildStderr) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::debug!(pid, "zygote: {line}");
        }
    }
}

fn signal_name(sig: i64) -> String {
    let name = i32::try_from(sig)
        .ok()
        .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        .map_or_else(|| format!("signal {sig}"), |s| s.as_str().to_string());
    match name.as_str() {
        "SIGKILL" => "killed by SIGKILL".into(),
        "SIGXCPU" => "CPU time limit reached (SIGXCPU)".into(),
        "SIGSEGV" => "crashed with SIGSEGV (possibly the memory limit)".into(),
        "SIGABRT" => "aborted with SIGABRT (possibly the memory limit)".into(),
        other => format!("signal {other}"),
    }
}
