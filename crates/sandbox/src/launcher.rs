//! The zygote launcher: runs in the hidden `tradebox __zygote SPEC` process,
//! a freshly executed, single-threaded copy of the tradebox binary, and turns
//! it into a confined Python zygote. In order:
//!
//! 1. check it is single-threaded; close every inherited descriptor but
//!    stdin/stdout/stderr (the protocol pipes and the log);
//! 2. die with its parent (`PR_SET_PDEATHSIG`);
//! 3. unshare user, mount, pid, network, ipc, uts and cgroup namespaces and
//!    map the caller's uid/gid to 1000 inside;
//! 4. fork: the child is pid 1 of the new pid namespace; the parent only
//!    waits for it and passes its exit status on;
//! 5. the child builds a minimal root on a tmpfs (the Python runtime, the
//!    data snapshot root at `/data`, `/dev/{null,zero,random,urandom}`, a fresh
//!    `/proc`, a size-capped scratch tmpfs at `/tmp`, the compiled child
//!    seccomp programs under `/etc/tradebox`), `pivot_root`s into it and
//!    makes it read-only;
//! 6. drops the capability bounding set, sets `no_new_privs`, applies
//!    Landlock (read the runtime, snapshot and `/etc`; write only `/tmp`;
//!    no TCP; no abstract unix sockets or signals outside the sandbox) and
//!    the zygote seccomp filter;
//! 7. executes Python with an empty environment (but for thread-pool pins)
//!    as uid 1000, which clears every remaining capability.
//!
//! Any step that fails ends the launcher with an `error` frame naming the
//! layer: the sandbox fails closed. Its raw system calls are in [`crate::sys`].

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;

use crate::protocol;
use crate::seccomp;
use crate::sys::{self, Forked};

/// The uid and gid the sandbox runs as, inside its user namespace.
pub const SANDBOX_ID: u32 = 1000;

/// Where the venv is mounted inside the sandbox.
const VENV: &str = "/opt/venv";

/// Everything the launcher needs, passed as JSON on its command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// The virtual environment, mounted at `/opt/venv` (a venv finds its
    /// packages relative to `bin/python`, so it can move).
    pub venv: PathBuf,
    /// The base interpreter's prefix (the venv's Python links into it).
    pub base_prefix: PathBuf,
    /// The folder holding the `tradebox` Python package, mounted at `/opt/tradebox`.
    pub lib: PathBuf,
    /// The snapshot root (its version folders), mounted at `/data`: the
    /// zygote can move to a version published after it started.
    pub snapshot: Option<PathBuf>,
    /// The version folder the zygote loads first (a name under `snapshot`).
    pub version: Option<String>,
    /// An empty host folder to mount the new root on.
    pub root: PathBuf,
    /// Size of the scratch tmpfs at `/tmp`, in MiB.
    pub scratch_mib: u64,
}

/// A launcher failure: which layer, and why.
#[derive(Debug)]
struct LayerError {
    layer: &'static str,
    message: String,
}

fn fail(layer: &'static str) -> impl Fn(nix::Error) -> LayerError {
    move |e| LayerError {
        layer,
        message: e.desc().to_string(),
    }
}

fn io_fail(layer: &'static str) -> impl Fn(std::io::Error) -> LayerError {
    move |e| LayerError {
        layer,
        message: e.to_string(),
    }
}

/// Entry point of `tradebox __zygote SPEC`; never returns on success (the
/// process becomes Python or waits for it), returns the exit code otherwise.
pub fn main(spec_json: &str) -> i32 {
    let spec: LaunchSpec = match serde_json::from_str(spec_json) {
        Ok(spec) => spec,
        Err(e) => {
            report(&LayerError {
                layer: "launcher",
                message: format!("bad launch spec: {e}"),
            });
            return 2;
        }
    };
    match launch(&spec) {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            3
        }
    }
}

/// Tells the supervisor why the sandbox could not be built (one frame on stdout).
fn report(e: &LayerError) {
    let frame = serde_json::json!({"type": "error", "layer": e.layer, "message": e.message});
    let mut out = std::io::stdout().lock();
    let _ = protocol::write_frame(&mut out, &frame);
    let _ = out.flush();
}

/// The host uid and gid the sandbox runs as when tradebox itself runs as
/// host root (`nobody` and `nogroup`): a job must never be host root, and
/// the kernel exempts uid 0 from the process limit (`RLIMIT_NPROC`).
pub const ROOT_FALLBACK_ID: u32 = 65534;

/// The host uid and gid mapped to the sandbox's uid 1000: the caller's own,
/// or [`ROOT_FALLBACK_ID`] when the caller is root.
pub fn host_ids() -> (u32, u32) {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    if uid.is_root() {
        (ROOT_FALLBACK_ID, ROOT_FALLBACK_ID)
    } else {
        (uid.as_raw(), gid.as_raw())
    }
}

/// Tasks (processes and threads) allowed in one sandbox: the zygote, the
/// job's child and 16 threads of the job. `RLIMIT_NPROC` counts per user
/// namespace (Linux 5.14 and later), so each zygote has its own budget.
pub const MAX_TASKS: u64 = 18;

fn launch(spec: &LaunchSpec) -> Result<i32, LayerError> {
    let threads = sys::thread_count().map_err(io_fail("launcher"))?;
    if threads != 1 {
        return Err(LayerError {
            layer: "launcher",
            message: format!("expected a single thread, found {threads}"),
        });
    }
    // Rust holds no descriptor but stdin, stdout and stderr at this point.
    sys::close_descriptors_from(3).map_err(io_fail("launcher"))?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(fail("launcher"))?;

    let as_root = nix::unistd::getuid().is_root();
    let (host_uid, host_gid) = host_ids();
    // The child waits on this pipe until its uid and gid maps are written.
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("launcher"))?;
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    // The child starts in the new namespaces (pid 1 of the new pid
    // namespace); its maps can only be written from outside it, here.
    let forked = sys::clone_into_namespaces(flags).map_err(|e| LayerError {
        layer: "namespaces",
        message: format!("clone: {e} (user namespaces unavailable?)"),
    })?;
    let child = match forked {
        Forked::Parent(child) => child,
        Forked::Child => {
            drop(go_w);
            // Die with the launcher even before Python sets this again.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            let mut go = [0u8; 1];
            if !matches!(nix::unistd::read(&go_r, &mut go), Ok(1)) {
                std::process::exit(3); // the launcher failed and said why
            }
            drop(go_r);
            let e = confine_and_exec(spec, as_root);
            report(&e);
            std::process::exit(3);
        }
    };
    drop(go_r);
    let proc = PathBuf::from(format!("/proc/{child}"));
    let maps = (|| {
        if !as_root {
            // Unprivileged mappings require setgroups to be denied first.
            std::fs::write(proc.join("setgroups"), "deny")?;
        }
        std::fs::write(proc.join("uid_map"), format!("{SANDBOX_ID} {host_uid} 1"))?;
        std::fs::write(proc.join("gid_map"), format!("{SANDBOX_ID} {host_gid} 1"))
    })();
    if let Err(e) = maps {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(io_fail("namespaces")(e));
    }
    nix::unistd::write(&go_w, b"1").map_err(fail("namespaces"))?;
    drop(go_w);
    // The zygote owns the protocol pipes; keep only stderr.
    let _ = nix::unistd::close(0);
    let _ = nix::unistd::close(1);
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(fail("launcher")(e)),
        }
    }
}

/// Runs as pid 1 of the new namespaces; only returns on failure.
fn confine_and_exec(spec: &LaunchSpec, as_root: bool) -> LayerError {
    match enter_root(spec, as_root)
        .and_then(|sources| build_root(spec, &sources))
        .and_then(|()| lock_down(spec))
    {
        Ok(()) => exec_python(spec),
        Err(e) => e,
    }
}

const RO_BIND: MsFlags = MsFlags::MS_BIND.union(MsFlags::MS_REC);

/// A host path the sandbox's root shows, held open (`O_PATH`) from before
/// the launcher becomes the sandbox's unprivileged uid: binds go through
/// `/proc/self/fd/N`, so they need no search permission on the host path
/// (a root caller's runtime may live under `/root`).
struct Source {
    fd: std::os::fd::OwnedFd,
    /// Where it appears inside the sandbox.
    dst: PathBuf,
    is_dir: bool,
}

impl Source {
    fn open(src: &Path, dst: &Path) -> Result<Source, LayerError> {
        use nix::fcntl::OFlag;
        let at = |e: nix::Error| LayerError {
            layer: "root",
            message: format!("{}: {}", src.display(), e.desc()),
        };
        let fd = nix::fcntl::open(
            src,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(at)?;
        let stat = nix::sys::stat::fstat(&fd).map_err(at)?;
        Ok(Source {
            fd,
            dst: dst.to_path_buf(),
            is_dir: stat.st_mode & libc::S_IFMT == libc::S_IFDIR,
        })
    }

    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

/// Everything the root shows from the host, and the links it recreates.
struct Sources {
    binds: Vec<Source>,
    /// Writable binds (the `/dev` nodes).
    devices: Vec<Source>,
    /// Top-level links of a merged-/usr system (`/lib -> usr/lib`).
    links: Vec<(PathBuf, PathBuf)>,
}

/// Mounts the new root's tmpfs on `spec.root`, enters it, opens every host
/// path it will show, then becomes the sandbox's uid 1000 (for a root
/// caller, host uid [`ROOT_FALLBACK_ID`] without supplementary groups).
fn enter_root(spec: &LaunchSpec, as_root: bool) -> Result<Sources, LayerError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("root"))?;
    mount(
        Some("tmpfs"),
        &spec.root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size=16m,mode=755,uid={SANDBOX_ID},gid={SANDBOX_ID}").as_str()),
    )
    .map_err(fail("root"))?;
    nix::unistd::chdir(&spec.root).map_err(fail("root"))?;

    let mut sources = Sources {
        binds: vec![Source::open(Path::new("/usr"), Path::new("/usr"))?],
        devices: Vec::new(),
        links: Vec::new(),
    };
    for top in ["/lib", "/lib64", "/lib32", "/bin", "/sbin"] {
        let top = Path::new(top);
        match std::fs::read_link(top) {
            Ok(link) => sources.links.push((top.to_path_buf(), link)),
            Err(_) if top.is_dir() => sources.binds.push(Source::open(top, top)?),
            Err(_) => {}
        }
    }
    // The base interpreter at the path the venv links to; the venv and our package.
    if !spec.base_prefix.starts_with("/usr") {
        sources
            .binds
            .push(Source::open(&spec.base_prefix, &spec.base_prefix)?);
    }
    sources
        .binds
        .push(Source::open(&spec.venv, Path::new(VENV))?);
    sources
        .binds
        .push(Source::open(&spec.lib, Path::new("/opt/tradebox"))?);
    if let Some(snapshot) = &spec.snapshot {
        sources
            .binds
            .push(Source::open(snapshot, Path::new("/data"))?);
    }
    for shared in ["/etc/ld.so.cache", "/etc/fonts"] {
        let shared = Path::new(shared);
        if shared.exists() {
            sources.binds.push(Source::open(shared, shared)?);
        }
    }
    for dev in ["null", "zero", "full", "random", "urandom"] {
        let path = PathBuf::from("/dev").join(dev);
        sources.devices.push(Source::open(&path, &path)?);
    }

    let id = nix::unistd::Uid::from_raw(SANDBOX_ID);
    let gid = nix::unistd::Gid::from_raw(SANDBOX_ID);
    if as_root {
        nix::unistd::setgroups(&[]).map_err(fail("namespaces"))?;
    }
    nix::unistd::setresgid(gid, gid, gid).map_err(fail("namespaces"))?;
    nix::unistd::setresuid(id, id, id).map_err(fail("namespaces"))?;
    Ok(sources)
}

fn mkdirs(path: &Path) -> Result<(), LayerError> {
    std::fs::create_dir_all(path).map_err(|e| LayerError {
        layer: "root",
        message: format!("mkdir {}: {e}", path.display()),
    })
}

/// The path of `dst` (absolute inside the sandbox) under the new root,
/// which is the current directory until `pivot_root`.
fn in_root(dst: &Path) -> PathBuf {
    Path::new(".").join(dst.strip_prefix("/").unwrap_or(dst))
}

/// Bind-mounts `src` at its place in the new root, read-only unless `writable`.
fn bind(src: &Source, writable: bool) -> Result<(), LayerError> {
    let target = in_root(&src.dst);
    if src.is_dir {
        mkdirs(&target)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdirs(parent)?;
        }
        std::fs::write(&target, b"").map_err(io_fail("root"))?;
    }
    let at = |e: nix::Error| LayerError {
        layer: "root",
        message: format!("bind {}: {}", src.dst.display(), e.desc()),
    };
    mount(
        Some(src.proc_path().as_str()),
        &target,
        None::<&str>,
        RO_BIND,
        None::<&str>,
    )
    .map_err(at)?;
    if !writable {
        // A remount inside a user namespace must keep the flags the kernel
        // locked on the source mount (nosuid, nodev, noexec).
        let locked = nix::sys::statvfs::statvfs(&target).map_err(at)?.flags();
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        use nix::sys::statvfs::FsFlags;
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if locked.contains(fs) {
                flags |= ms;
            }
        }
        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>).map_err(at)?;
    }
    Ok(())
}

/// Inodes of the scratch tmpfs per MiB of its size: bounds the kernel
/// memory a job can pin with empty files (about 1 KiB each).
pub const SCRATCH_INODES_PER_MIB: u64 = 64;

fn build_root(spec: &LaunchSpec, sources: &Sources) -> Result<(), LayerError> {
    // Scratch first, so that nothing below is hidden by it.
    let tmp = in_root(Path::new("/tmp"));
    mkdirs(&tmp)?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(
            format!(
                "size={}m,nr_inodes={},mode=1777",
                spec.scratch_mib,
                (spec.scratch_mib * SCRATCH_INODES_PER_MIB).max(256)
            )
            .as_str(),
        ),
    )
    .map_err(fail("scratch"))?;
    // The system's libraries and, on merged-/usr systems, its links into /usr.
    for (top, link) in &sources.links {
        std::os::unix::fs::symlink(link, in_root(top)).map_err(io_fail("root"))?;
    }
    for src in &sources.binds {
        bind(src, false)?;
    }
    // /etc: an identity, UTC, and the child's filters.
    let etc = in_root(Path::new("/etc"));
    mkdirs(&etc.join("tradebox"))?;
    let files: [(&str, Vec<u8>); 4] = [
        (
            "passwd",
            format!("sandbox:x:{SANDBOX_ID}:{SANDBOX_ID}:sandbox:/tmp:/nonexistent\n").into_bytes(),
        ),
        ("group", format!("sandbox:x:{SANDBOX_ID}:\n").into_bytes()),
        (
            "tradebox/child.bpf",
            seccomp::to_bytes(&seccomp::child_filter().map_err(policy)?),
        ),
        (
            "tradebox/enosys.bpf",
            seccomp::to_bytes(&seccomp::enosys_filter().map_err(policy)?),
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(etc.join(name), bytes).map_err(io_fail("root"))?;
    }
    std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", etc.join("localtime"))
        .map_err(io_fail("root"))?;
    for dev in &sources.devices {
        bind(dev, true)?;
    }
    // A fresh /proc for the new pid namespace that shows a job nothing of
    // the zygote or of other jobs: `hidepid=invisible` hides the processes
    // a job may not ptrace (the zygote is not dumpable), `subset=pid`
    // hides the host-wide files (load, memory, interrupts, sysctls).
    let proc = in_root(Path::new("/proc"));
    mkdirs(&proc)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("hidepid=invisible,subset=pid"),
    )
    .map_err(fail("proc"))?;
    // Swap roots; the old one is detached and gone from this namespace.
    nix::unistd::pivot_root(".", ".").map_err(fail("root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("root"))?;
    nix::unistd::chdir("/").map_err(fail("root"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(fail("root"))?;
    nix::unistd::sethostname("tradebox-sandbox").map_err(fail("namespaces"))?;
    Ok(())
}

fn policy(e: seccomp::PolicyError) -> LayerError {
    LayerError {
        layer: "seccomp",
        message: e.to_string(),
    }
}

fn lock_down(spec: &LaunchSpec) -> Result<(), LayerError> {
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(fail("limits"))?;
    setrlimit(Resource::RLIMIT_NPROC, MAX_TASKS, MAX_TASKS).map_err(fail("limits"))?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| LayerError {
        layer: "capabilities",
        message: e.to_string(),
    })?;
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap).map_err(|e| LayerError {
            layer: "capabilities",
            message: e.to_string(),
        })?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(fail("no_new_privs"))?;
    let mut readable: Vec<PathBuf> = ["/usr", "/opt", "/etc", "/data", "/proc", "/dev"]
        .iter()
        .map(PathBuf::from)
        .collect();
    readable.push(spec.base_prefix.clone());
    readable.retain(|p| p.exists());
    landlock(&readable)?;
    for program in [seccomp::zygote_filter(), seccomp::enosys_filter()] {
        seccompiler::apply_filter(&program.map_err(policy)?).map_err(|e| LayerError {
            layer: "seccomp",
            message: e.to_string(),
        })?;
    }
    Ok(())
}

fn landlock(readable: &[PathBuf]) -> Result<(), LayerError> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    let err = |e: landlock::RulesetError| LayerError {
        layer: "landlock",
        message: e.to_string(),
    };
    let abi = ABI::V6;
    let status = Ruleset::default()
        // Filesystem rules are required; network and scopes where the kernel has them.
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .map_err(err)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(readable, AccessFs::from_read(abi)))
        .map_err(err)?
        .add_rules(path_beneath_rules(["/tmp"], AccessFs::from_all(abi)))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            ["/dev/null", "/dev/zero", "/dev/full"],
            AccessFs::from_file(abi),
        ))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(LayerError {
            layer: "landlock",
            message: "the kernel does not enforce Landlock".into(),
        });
    }
    Ok(())
}

/// Whether `name` is a version folder's name (`v` and digits), the only
/// names passed on to the zygote.
pub fn is_version_name(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The interpreter's command line: isolated mode, our package on the path.
const BOOT: &str = "import sys; sys.path.insert(0, '/opt/tradebox'); \
                    from tradebox.zygote import main; main()";

fn exec_python(spec: &LaunchSpec) -> LayerError {
    let cstr = |s: &[u8]| CString::new(s).unwrap_or_default();
    let python = cstr(format!("{VENV}/bin/python").as_bytes());
    let args = [
        python.clone(),
        cstr(b"-I"),
        cstr(b"-B"),
        cstr(b"-c"),
        cstr(BOOT.as_bytes()),
    ];
    let env: Vec<CString> = [
        "PATH=/usr/bin:/bin",
        "HOME=/tmp",
        "TMPDIR=/tmp",
        "LANG=C.UTF-8",
        "TZ=UTC",
        "MPLBACKEND=Agg",
        "MPLCONFIGDIR=/tmp/.matplotlib",
        "OPENBLAS_NUM_THREADS=1",
        "OMP_NUM_THREADS=1",
        "MKL_NUM_THREADS=1",
        "NUMEXPR_NUM_THREADS=1",
        "VECLIB_MAXIMUM_THREADS=1",
        "ARROW_IO_THREADS=1",
        "ARROW_DEFAULT_MEMORY_POOL=system",
        "JE_ARROW_MALLOC_CONF=background_thread:false",
        "PYTHONDONTWRITEBYTECODE=1",
    ]
    .iter()
    .map(|s| cstr(s.as_bytes()))
    .chain(
        spec.version
            .iter()
            .filter(|v| is_version_name(v))
            .map(|v| cstr(format!("TRADEBOX_DATA_VERSION={v}").as_bytes())),
    )
    .collect();
    match nix::unistd::execve(&python, &args, &env) {
        Err(e) => LayerError {
            layer: "exec",
            message: format!(
                "{VENV}/bin/python (from {}): {}",
                spec.venv.display(),
                e.desc()
            ),
        },
        Ok(never) => match never {},
    }
}
