//! Filesystem notifications for followed sources (inotify): a change in a
//! source's folder makes the source due at once rather than at its next
//! poll. Polling stays the fallback: a folder that cannot be watched
//! (missing, on a filesystem without notifications, no watches left) is
//! only polled, and a watch the kernel drops (the folder removed or
//! replaced) is set again before the next wait.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::{Kind, SourceConfig};

/// One folder watched for one source.
struct Target {
    source: usize,
    dir: PathBuf,
    /// The names in it that matter (`None`: any).
    names: Option<Vec<OsString>>,
    wd: Option<WatchDescriptor>,
}

/// The watches of a set of sources.
pub(super) struct Watch {
    inotify: Inotify,
    targets: Vec<Target>,
    by_wd: HashMap<WatchDescriptor, Vec<usize>>,
}

impl Watch {
    /// Watches for `sources` (resolved paths); `None` when notifications
    /// are not available at all (then every source is polled).
    pub fn new(sources: &[SourceConfig]) -> Option<Watch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let mut targets = Vec::new();
        for (source, s) in sources.iter().enumerate() {
            match s.kind {
                Kind::CexReporter => {
                    // The database and its journal: a reader's own writes
                    // (the `-shm` read marks) must not wake the follower.
                    let (Some(dir), Some(file)) = (s.path.parent(), s.path.file_name()) else {
                        continue;
                    };
                    let names = ["", "-wal", "-journal"]
                        .iter()
                        .map(|suffix| {
                            let mut name = file.to_os_string();
                            name.push(suffix);
                            name
                        })
                        .collect();
                    targets.push(Target {
                        source,
                        dir: dir.to_path_buf(),
                        names: Some(names),
                        wd: None,
                    });
                    if let Some(snapshots) = &s.snapshots {
                        targets.push(Target {
                            source,
                            dir: snapshots.clone(),
                            names: None,
                            wd: None,
                        });
                    }
                }
                Kind::CsvInbox | Kind::Snapshots => targets.push(Target {
                    source,
                    dir: s.path.clone(),
                    names: None,
                    wd: None,
                }),
            }
        }
        let mut watch = Watch {
            inotify,
            targets,
            by_wd: HashMap::new(),
        };
        watch.arm();
        Some(watch)
    }

    /// Sets the watches that are missing (a folder that appeared since).
    fn arm(&mut self) {
        let mask = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        for (i, t) in self.targets.iter_mut().enumerate() {
            if t.wd.is_none() {
                if let Ok(wd) = self.inotify.add_watch(&t.dir, mask) {
                    t.wd = Some(wd);
                    self.by_wd.entry(wd).or_default().push(i);
                }
            }
        }
    }

    /// Waits at most `timeout` for changes; returns the sources (indexes
    /// into the list given to [`Watch::new`]) that changed, once each.
    pub fn wait(&mut self, timeout: Duration) -> Vec<usize> {
        self.arm();
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            return Vec::new();
        }
        let mut changed = Vec::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                let targets = self.by_wd.get(&e.wd).cloned().unwrap_or_default();
                let gone = e.mask.contains(AddWatchFlags::IN_IGNORED);
                for i in targets {
                    let t = &mut self.targets[i];
                    let wanted = match (&t.names, &e.name) {
                        (None, _) | (_, None) => true,
                        (Some(names), Some(name)) => names.contains(name),
                    };
                    if wanted && !changed.contains(&t.source) {
                        changed.push(t.source);
                    }
                    if gone {
                        t.wd = None;
                    }
                }
                if gone {
                    self.by_wd.remove(&e.wd);
                }
            }
        }
        changed
    }
}
