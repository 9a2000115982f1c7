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
//!    data snapshot at `/data`, `/dev/{null,zero,random,urandom}`, a fresh
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
//! layer: the sandbox fails closed.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};

use crate::protocol;
use crate::seccomp;

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
    /// The snapshot version folder, mounted at `/data`.
    pub snapshot: Option<PathBuf>,
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

fn launch(spec: &LaunchSpec) -> Result<i32, LayerError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(io_fail("launcher"))?
        .count();
    if threads != 1 {
        return Err(LayerError {
            layer: "launcher",
            message: format!("expected a single thread, found {threads}"),
        });
    }
    // SAFETY: close_range on descriptors this process does not use; Rust
    // holds no other descriptor at this point.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } != 0 {
        return Err(io_fail("launcher")(std::io::Error::last_os_error()));
    }
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(fail("launcher"))?;

    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| LayerError {
        layer: "namespaces",
        message: format!("unshare: {} (user namespaces unavailable?)", e.desc()),
    })?;
    std::fs::write("/proc/self/setgroups", "deny").map_err(io_fail("namespaces"))?;
    std::fs::write("/proc/self/uid_map", format!("{SANDBOX_ID} {uid} 1"))
        .map_err(io_fail("namespaces"))?;
    std::fs::write("/proc/self/gid_map", format!("{SANDBOX_ID} {gid} 1"))
        .map_err(io_fail("namespaces"))?;

    // SAFETY: single-threaded (checked above), so the child may run anything.
    match unsafe { fork() }.map_err(fail("namespaces"))? {
        ForkResult::Parent { child } => {
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
        ForkResult::Child => {
            // Die with the launcher even before Python sets this again.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            let e = confine_and_exec(spec);
            report(&e);
            std::process::exit(3);
        }
    }
}

/// Runs as pid 1 of the new namespaces; only returns on failure.
fn confine_and_exec(spec: &LaunchSpec) -> LayerError {
    match build_root(spec).and_then(|()| lock_down(spec)) {
        Ok(()) => exec_python(spec),
        Err(e) => e,
    }
}

const RO_BIND: MsFlags = MsFlags::MS_BIND.union(MsFlags::MS_REC);

fn mkdirs(path: &Path) -> Result<(), LayerError> {
    std::fs::create_dir_all(path).map_err(|e| LayerError {
        layer: "root",
        message: format!("mkdir {}: {e}", path.display()),
    })
}

/// Bind-mounts `src` at `dst` inside `root`, read-only unless `writable`.
fn bind(root: &Path, src: &Path, dst: &Path, writable: bool) -> Result<(), LayerError> {
    let target = root.join(dst.strip_prefix("/").unwrap_or(dst));
    let meta = std::fs::metadata(src).map_err(|e| LayerError {
        layer: "root",
        message: format!("{}: {e}", src.display()),
    })?;
    if meta.is_dir() {
        mkdirs(&target)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdirs(parent)?;
        }
        std::fs::write(&target, b"").map_err(io_fail("root"))?;
    }
    let at = |e: nix::Error| LayerError {
        layer: "root",
        message: format!("bind {} -> {}: {}", src.display(), dst.display(), e.desc()),
    };
    mount(Some(src), &target, None::<&str>, RO_BIND, None::<&str>).map_err(at)?;
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

fn build_root(spec: &LaunchSpec) -> Result<(), LayerError> {
    let root = spec.root.as_path();
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
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=16m,mode=755"),
    )
    .map_err(fail("root"))?;

    // The system's libraries and, on merged-/usr systems, its links into /usr.
    bind(root, Path::new("/usr"), Path::new("/usr"), false)?;
    for top in ["/lib", "/lib64", "/lib32", "/bin", "/sbin"] {
        let top = Path::new(top);
        match std::fs::read_link(top) {
            Ok(link) => {
                let at = root.join(top.strip_prefix("/").unwrap_or(top));
                std::os::unix::fs::symlink(link, at).map_err(io_fail("root"))?;
            }
            Err(_) if top.is_dir() => bind(root, top, top, false)?,
            Err(_) => {}
        }
    }
    // Scratch first, so that nothing below is hidden by it.
    mkdirs(&root.join("tmp"))?;
    mount(
        Some("tmpfs"),
        &root.join("tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={}m,mode=1777", spec.scratch_mib).as_str()),
    )
    .map_err(fail("scratch"))?;
    // The base interpreter at the path the venv links to; the venv and our package.
    if !spec.base_prefix.starts_with("/usr") {
        bind(root, &spec.base_prefix, &spec.base_prefix, false)?;
    }
    bind(root, &spec.venv, Path::new(VENV), false)?;
    bind(root, &spec.lib, Path::new("/opt/tradebox"), false)?;
    if let Some(snapshot) = &spec.snapshot {
        bind(root, snapshot, Path::new("/data"), false)?;
    }
    // /etc: an identity, the loader cache, UTC, and the child's filters.
    let etc = root.join("etc");
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
    for shared in ["/etc/ld.so.cache", "/etc/fonts"] {
        let shared = Path::new(shared);
        if shared.exists() {
            bind(root, shared, shared, false)?;
        }
    }
    std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", etc.join("localtime"))
        .map_err(io_fail("root"))?;
    for dev in ["null", "zero", "full", "random", "urandom"] {
        let path = PathBuf::from("/dev").join(dev);
        bind(root, &path, &path, true)?;
    }
    mkdirs(&root.join("proc"))?;
    mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(fail("proc"))?;
    // Swap roots; the old one is detached and gone from this namespace.
    nix::unistd::chdir(root).map_err(fail("root"))?;
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
