//! The idle CPU group that demoted jobs are moved into.
//!
//! A job running past a second is demoted by its zygote (nice 19, its main
//! thread `SCHED_IDLE`). But each job's child leads a session of its own,
//! and wherever the kernel groups tasks by session (autogroup: on when the
//! supervisor is in no CPU cgroup of its own), that session is a scheduling
//! group of its own, in which nice and policy weigh only against the job's
//! own threads: a demoted spinner still took a whole group's share beside
//! the supervisor and every other job. (Keeping jobs in the zygote's session
//! instead was measured and made the soak far worse.) So the pool also moves
//! each demoted child into a CPU cgroup marked idle (`cpu.idle` = 1), which
//! weighs against every other group as `SCHED_IDLE` weighs against tasks.
//!
//! That is not enough either. On the 6.x kernels measured here a demoted
//! spinner in an idle group still takes most of a core beside work that
//! forks and waits (as the pool does for every job): a loop of short forked
//! jobs ran 37% slower beside it, while plain CPU loops were not slowed at
//! all. So the group also gets a CPU quota while other jobs run: whenever
//! the pool has a job running that is not demoted, the demoted ones
//! together get at most [`THROTTLED_QUOTA`] of CPU time per
//! [`QUOTA_PERIOD`] (a tenth of one core; the loop above then ran 4% slower),
//! and no quota otherwise, so a long job alone still has the whole machine.
//! The pool wakes the watcher as a job starts, so the quota is on before
//! that job has run for more than a moment.
//!
//! This needs a writable cgroup-v1 `cpu` hierarchy (the supervisor's own
//! cgroup in it, usually as root). On a cgroup-v2-only host the group is not
//! made yet (cgroup v2 forbids a process beside a child group with the `cpu`
//! controller, so the supervisor would first have to move itself into a
//! leaf); there, and wherever the hierarchy cannot be written, demotion
//! alone applies and `tradebox doctor` says so. Nothing here is a
//! confinement layer: the job's limits and the wall-clock deadline stay
//! what stop it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

/// How often the pool looks for children its zygotes have demoted.
pub const WATCH_TICK: Duration = Duration::from_millis(100);

/// The CPU time all demoted jobs together get per [`QUOTA_PERIOD`] while
/// a job that is not demoted runs.
pub const THROTTLED_QUOTA: Duration = Duration::from_millis(10);

/// The period of the group's CPU quota.
pub const QUOTA_PERIOD: Duration = Duration::from_millis(100);

/// What the pool and the watcher know of each other: how many demoted jobs
/// are in the group, and whether its quota is on.
#[derive(Debug, Default)]
pub struct Demotion {
    /// Demoted jobs moved into the group and still running.
    pub demoted: AtomicUsize,
    /// Whether the group's CPU quota is on.
    pub throttled: AtomicBool,
}

impl Demotion {
    /// Whether a job starting now should wake the watcher: there are
    /// demoted jobs and their quota is off.
    pub fn wants_wake(&self) -> bool {
        self.demoted.load(Ordering::Relaxed) > 0 && !self.throttled.load(Ordering::Relaxed)
    }
}

/// `SCHED_IDLE`, as /proc/PID/stat reports a thread's policy.
const SCHED_IDLE: u32 = 5;

/// Tells apart the groups of several pools in one process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A cgroup-v1 `cpu` group marked idle, removed when dropped.
#[derive(Debug)]
pub struct IdleGroup {
    dir: PathBuf,
}

impl IdleGroup {
    /// Creates `tradebox-<pid>-<n>-idle` below the caller's own `cpu` cgroup,
    /// after removing empty ones left by earlier processes. Err says why
    /// not (no cgroup-v1 `cpu` hierarchy, or it cannot be written).
    pub fn create() -> Result<IdleGroup, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let cgroups = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let own = own_cpu_dir(&mountinfo, &cgroups)
            .ok_or("no cgroup-v1 cpu hierarchy (cgroup v2 is not used for this yet)")?;
        sweep(&own);
        let dir = own.join(format!(
            "tradebox-{}-{}-idle",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let group = IdleGroup { dir };
        std::fs::write(group.dir.join("cpu.idle"), "1")
            .map_err(|e| format!("{}: {e}", group.dir.join("cpu.idle").display()))?;
        let period = group.dir.join("cpu.cfs_period_us");
        std::fs::write(&period, QUOTA_PERIOD.as_micros().to_string())
            .map_err(|e| format!("{}: {e}", period.display()))?;
        Ok(group)
    }

    /// Puts the group's CPU quota on ([`THROTTLED_QUOTA`] per
    /// [`QUOTA_PERIOD`]) or off.
    pub fn throttle(&self, on: bool) -> std::io::Result<()> {
        let quota = if on {
            THROTTLED_QUOTA.as_micros().to_string()
        } else {
            "-1".to_string()
        };
        std::fs::write(self.dir.join("cpu.cfs_quota_us"), quota)
    }

    /// The group's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves process `pid` (all its threads, and those it starts later).
    pub fn adopt(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }
}

impl Drop for IdleGroup {
    fn drop(&mut self) {
        // Empty once its jobs are gone; a later pool sweeps it otherwise.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Removes the empty idle groups of processes that are gone.
fn sweep(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tradebox-"))
            .and_then(|n| n.strip_suffix("-idle"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path()); // fails while not empty
        }
    }
}

/// The caller's own folder in the cgroup-v1 hierarchy that has the `cpu`
/// controller, from /proc/self/mountinfo and /proc/self/cgroup.
fn own_cpu_dir(mountinfo: &str, cgroups: &str) -> Option<PathBuf> {
    let own = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })?;
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional...] - type source super
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let mut r = right.split(' ');
        let (fstype, _source, options) = (r.next()?, r.next()?, r.next()?);
        if fstype != "cgroup" || !options.split(',').any(|o| o == "cpu") {
            return None;
        }
        let (root, mount_point) = (*fields.get(3)?, *fields.get(4)?);
        let within = if root == "/" {
            own
        } else {
            own.strip_prefix(root)?
        };
        Some(Path::new(mount_point).join(within.trim_start_matches('/')))
    })
}

/// Moves every child the zygotes have demoted into `group`, every
/// [`WATCH_TICK`], and keeps the group's quota on while a job that is not
/// demoted runs (`busy()` counts the workers with a job; a message on
/// `wake`, sent as a job starts, has it checked at once), until `stop` is
/// closed (at once, not at the next tick). `launchers` gives the pids of
/// the zygotes' launchers: launcher, zygote and job form a chain.
pub fn watch(
    group: &IdleGroup,
    launchers: impl Fn() -> Vec<u32>,
    busy: impl Fn() -> usize,
    demotion: &Demotion,
    wake: &Receiver<()>,
    stop: &Receiver<()>,
) {
    let mut adopted: HashSet<(u32, u64)> = HashSet::new();
    let mut warned = false;
    let mut next_look = Instant::now() + WATCH_TICK;
    loop {
        // Wake-ups never put the next look off: they may come more often
        // than the tick (a quota that cannot be set is asked for at every
        // job).
        let wait = next_look.saturating_duration_since(Instant::now());
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(wake) -> message => {
                if message.is_err() {
                    return; // the pool is gone
                }
            }
            default(wait) => {}
        }
        if Instant::now() >= next_look {
            adopt_demoted(group, &launchers, &mut adopted);
            demotion.demoted.store(adopted.len(), Ordering::Relaxed);
            next_look = Instant::now() + WATCH_TICK;
        }
        let on = !adopted.is_empty() && busy() > adopted.len();
        if on != demotion.throttled.load(Ordering::Relaxed) {
            match group.throttle(on) {
                Ok(()) => demotion.throttled.store(on, Ordering::Relaxed),
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("the idle CPU group's quota cannot be set: {e}");
                }
                Err(_) => {}
            }
        }
    }
}

/// One look for demoted children: each found is moved into `group` once,
/// and `adopted` keeps those still running.
fn adopt_demoted(
    group: &IdleGroup,
    launchers: &impl Fn() -> Vec<u32>,
    adopted: &mut HashSet<(u32, u64)>,
) {
    let mut seen = HashSet::new();
    for launcher in launchers() {
        for zygote in children(launcher) {
            for child in children(zygote) {
                let Some((policy, start)) = policy_and_start(child) else {
                    continue;
                };
                seen.insert((child, start));
                if policy != SCHED_IDLE || adopted.contains(&(child, start)) {
                    continue;
                }
                match group.adopt(child) {
                    // The same process still (not a pid used again)?
                    Ok(()) if policy_and_start(child).map(|p| p.1) == Some(start) => {
                        adopted.insert((child, start));
                    }
                    Ok(()) => {}
                    Err(e) => tracing::warn!(pid = child, "moving a demoted job: {e}"),
                }
            }
        }
    }
    adopted.retain(|p| seen.contains(p));
}

/// The children of process `pid` (its main thread's, which is where a
/// single-threaded launcher or zygote forks).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The scheduling policy of process `pid`'s main thread and its start time.
fn policy_and_start(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Counted from the state (field 3 of proc(5)): starttime is 22, policy 41.
    Some((fields.get(38)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cpu_hierarchy_and_the_callers_place_in_it() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let cgroups = "2:cpuacct:/\n1:cpu:/desk/app\n0::/";
        assert_eq!(
            own_cpu_dir(mountinfo, cgroups),
            Some(PathBuf::from("/sys/fs/cgroup/cpu/desk/app"))
        );
        // cpu and cpuacct mounted together; the mount's root is a subtree.
        let mountinfo =
            "31 30 0:27 /desk /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
        let cgroups = "1:cpu,cpuacct:/desk/app";
        assert_eq!(
            own_cpu_dir(mountinfo, cgroups),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/app"))
        );
        // cgroup v2 only, or a cpuacct-only hierarchy: none.
        assert_eq!(
            own_cpu_dir(
                "40 30 0:35 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw",
                "0::/x"
            ),
            None
        );
        assert_eq!(
            own_cpu_dir(
                "32 30 0:28 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct",
                "2:cpuacct:/"
            ),
            None
        );
    }

    #[test]
    fn reads_policy_and_start_time_of_a_process() {
        let (policy, start) = policy_and_start(std::process::id()).unwrap();
        assert_eq!(policy, 0, "the test runs at SCHED_OTHER");
        assert!(start > 0);
        assert_eq!(policy_and_start(u32::MAX), None);
    }
}
