//! What `tradebox doctor` reports: host facts that decide whether the
//! sandbox can run (with advice when it cannot), and a probe that runs
//! inside a real sandboxed job and reports, from there, which layers hold.

use serde::Serialize;

/// A fact about the host, with advice when it blocks the sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct HostCheck {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The Landlock ABI version the kernel offers (0: none).
pub fn landlock_abi() -> i64 {
    crate::sys::landlock_abi()
}

/// Host facts; `ok: false` entries come with what to change.
pub fn host_checks() -> Vec<HostCheck> {
    let mut checks = Vec::new();
    let is_root = nix::unistd::geteuid().is_root();
    let userns_blocked = read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0");
    let max_userns = read("/proc/sys/user/max_user_namespaces");
    let apparmor =
        read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1");
    let (ok, detail, advice) = if max_userns.as_deref() == Some("0") {
        (
            false,
            "user.max_user_namespaces is 0".to_string(),
            Some(
                "allow user namespaces: sudo sysctl -w user.max_user_namespaces=15000".to_string(),
            ),
        )
    } else if userns_blocked && !is_root {
        (false, "kernel.unprivileged_userns_clone is 0".to_string(),
         Some("allow unprivileged user namespaces: sudo sysctl -w kernel.unprivileged_userns_clone=1".to_string()))
    } else if apparmor && !is_root {
        (false, "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10 and later)".to_string(),
         Some("either install an AppArmor profile for tradebox that allows userns (see SECURITY.md), or: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0".to_string()))
    } else {
        (true, "allowed".to_string(), None)
    };
    checks.push(HostCheck {
        name: "user namespaces",
        ok,
        detail,
        advice,
    });

    let status = read("/proc/self/status").unwrap_or_default();
    let parent_seccomp = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
        .unwrap_or("0")
        .to_string();
    checks.push(HostCheck {
        name: "seccomp on tradebox itself",
        ok: true,
        detail: if parent_seccomp == "0" {
            "none".to_string()
        } else {
            "filtered (a container runtime's profile); if the sandbox fails at `namespaces`, it may block unshare".to_string()
        },
        advice: (parent_seccomp != "0").then(|| {
            "Docker's default seccomp profile blocks unshare(2): run the container with --security-opt seccomp=unconfined (or a profile that allows unshare and clone with namespace flags) and --security-opt apparmor=unconfined".to_string()
        }),
    });

    let abi = landlock_abi();
    checks.push(HostCheck {
        name: "landlock",
        ok: abi >= 1,
        detail: if abi >= 1 {
            format!("ABI {abi}{}", if abi < 4 { " (no TCP rules; the empty network namespace still isolates)" } else { "" })
        } else {
            "not available".to_string()
        },
        advice: (abi < 1).then(|| {
            "use a Linux kernel 5.13 or newer with Landlock enabled (CONFIG_SECURITY_LANDLOCK=y and `landlock` in the lsm= boot parameter)".to_string()
        }),
    });

    checks.push(HostCheck {
        name: "memory limits",
        ok: true,
        detail: cgroup_mode(),
        advice: None,
    });

    let (host_uid, _) = crate::launcher::host_ids();
    checks.push(HostCheck {
        name: "sandbox user",
        ok: true,
        detail: if is_root {
            format!("tradebox runs as host root: the sandbox runs as host uid {host_uid} (nobody) instead, with no supplementary groups")
        } else {
            format!("host uid {host_uid} (the user running tradebox)")
        },
        advice: is_root.then(|| {
            "run tradebox as an unprivileged user: root is not needed, and a dedicated account keeps \
             the store, tokens and runtime out of reach of every other account"
                .to_string()
        }),
    });
    checks.push(HostCheck {
        name: "process limit",
        ok: true,
        detail: pids_mode(),
        advice: None,
    });
    let idle = crate::idle_group::IdleGroup::create(); // removed again at once
    checks.push(HostCheck {
        name: "demoted jobs",
        ok: true,
        detail: match &idle {
            Ok(group) => format!(
                "a job running past 1 s is demoted (nice 19, SCHED_IDLE) and moved into an idle CPU group \
                 under {}, held to {} ms of CPU per {} ms while other jobs run",
                group.dir().parent().unwrap_or(group.dir()).display(),
                crate::idle_group::THROTTLED_QUOTA.as_millis(),
                crate::idle_group::QUOTA_PERIOD.as_millis()
            ),
            Err(why) => format!(
                "a job running past 1 s is demoted (nice 19, SCHED_IDLE) within its own scheduling \
                 group only ({why}); with a writable cgroup-v1 cpu hierarchy it would also yield \
                 the CPU to other jobs"
            ),
        },
        advice: None, // not a reason the sandbox cannot start
    });
    checks
}

/// How the number of processes and threads of a sandbox is bounded here.
pub fn pids_mode() -> String {
    format!(
        "RLIMIT_NPROC {} per sandbox (zygote, job and its threads; counted per user namespace), \
         which holds for a root caller too because the sandbox never runs as host uid 0; \
         cgroup pids limits are not used",
        crate::launcher::MAX_TASKS
    )
}

/// How memory can be limited here.
pub fn cgroup_mode() -> String {
    let unified_root = read("/sys/fs/cgroup/cgroup.controllers");
    let hybrid = read("/sys/fs/cgroup/unified/cgroup.controllers");
    match (unified_root, hybrid) {
        (Some(c), _) if c.split_whitespace().any(|x| x == "memory") => {
            "cgroup v2 with a memory controller is present; tradebox limits memory with rlimits (address space above the zygote's size)".to_string()
        }
        (_, Some(_)) => "hybrid cgroups: the memory controller is on v1 only, so memory limits come from rlimits (address space above the zygote's size)".to_string(),
        _ => "no cgroup v2 memory controller: memory limits come from rlimits (address space above the zygote's size)".to_string(),
    }
}

/// Python code that reports, from inside a sandboxed job, what confines it.
pub const PROBE: &str = r#"
import json, os, resource, socket
def status():
    d = {}
    with open('/proc/self/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            d[k] = v.strip()
    return d
def attempt(f):
    try:
        f()
        return 'allowed'
    except OSError as e:
        return 'denied: ' + (e.strerror or type(e).__name__)
def fork():
    if os.fork() == 0:
        os._exit(0)
def mount_root():
    with open('/proc/self/mountinfo') as f:
        for line in f:
            parts = line.split()
            if parts[4] == '/':
                return parts[5]
    return ''
s = status()
with open('/proc/self/net/dev') as f:
    interfaces = [l.split(':')[0].strip() for l in f.readlines()[2:]]
def threads():
    import threading
    stop, n = threading.Event(), 0
    try:
        while n < 1000:
            threading.Thread(target=stop.wait).start()
            n += 1
    except RuntimeError:
        pass
    stop.set()
    return n
result = {
    'uid': os.getuid(), 'pid': os.getpid(), 'ppid': os.getppid(),
    'uid_map': open('/proc/self/uid_map').read().split(),
    'hostname': socket.gethostname(), 'interfaces': interfaces,
    'seccomp': s.get('Seccomp'), 'seccomp_filters': s.get('Seccomp_filters'),
    'no_new_privs': s.get('NoNewPrivs'), 'cap_eff': s.get('CapEff'), 'cap_bnd': s.get('CapBnd'),
    'root_mount': mount_root(),
    'list_root': attempt(lambda: os.listdir('/')),
    'write_outside_scratch': attempt(lambda: open('/opt/probe', 'w')),
    'write_scratch': attempt(lambda: open('/tmp/probe', 'w').close()),
    'tcp_socket': attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
    'fork': attempt(fork),
    'exec': attempt(lambda: os.execv('/usr/bin/true', ['true'])),
    'rlimit_as': resource.getrlimit(resource.RLIMIT_AS)[0],
    'rlimit_cpu': resource.getrlimit(resource.RLIMIT_CPU)[0],
    'rlimit_nofile': resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    'rlimit_nproc': resource.getrlimit(resource.RLIMIT_NPROC)[0],
    'threads_started': threads(),
    'proc_entries': sorted(os.listdir('/proc')),
    'proc_zygote': attempt(lambda: open('/proc/1/stat').read()),
    'proc_host': attempt(lambda: open('/proc/loadavg').read()),
}
"#;

/// One sandbox layer as seen from inside.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: &'static str,
    pub active: bool,
    pub detail: String,
}

/// Reads the probe's answer into layers.
pub fn interpret(p: &serde_json::Value) -> Vec<Layer> {
    let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
    let denied = |k: &str| s(k).starts_with("denied");
    let strings = |k: &str| -> Vec<String> {
        p[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid_map = strings("uid_map");
    let interfaces = strings("interfaces");
    let layer = |name, active, detail: String| Layer {
        name,
        active,
        detail,
    };
    vec![
        layer(
            "user namespace",
            uid_map.len() == 3 && uid_map[2] == "1" && p["uid"] == 1000,
            format!(
                "uid {} inside, mapped from host uid {}",
                p["uid"],
                uid_map.get(1).map_or("?", |s| s.as_str())
            ),
        ),
        layer(
            "pid namespace",
            p["ppid"] == 1,
            format!("job pid {}, zygote pid {}", p["pid"], p["ppid"]),
        ),
        layer(
            "network namespace",
            interfaces.iter().all(|i| i == "lo"),
            format!("interfaces: {}", interfaces.join(", ")),
        ),
        layer(
            "uts namespace",
            s("hostname") == "tradebox-sandbox",
            format!("hostname {}", s("hostname")),
        ),
        layer(
            "read-only minimal root",
            s("root_mount").split(',').any(|o| o == "ro") && denied("write_outside_scratch"),
            format!(
                "/ mounted {}; writing outside /tmp: {}",
                s("root_mount"),
                s("write_outside_scratch")
            ),
        ),
        layer(
            "landlock",
            denied("list_root") && s("write_scratch") == "allowed",
            format!(
                "listing / (not in the rules): {}; writing /tmp: {}",
                s("list_root"),
                s("write_scratch")
            ),
        ),
        layer(
            "seccomp",
            s("seccomp") == "2" && denied("fork") && denied("exec") && denied("tcp_socket"),
            format!(
                "mode {}, {} filters; fork {}; exec {}; TCP socket {}",
                s("seccomp"),
                s("seccomp_filters"),
                s("fork"),
                s("exec"),
                s("tcp_socket")
            ),
        ),
        layer(
            "no_new_privs",
            s("no_new_privs") == "1",
            format!("NoNewPrivs {}", s("no_new_privs")),
        ),
        layer(
            "capabilities",
            s("cap_eff").trim_start_matches('0').is_empty()
                && s("cap_bnd").trim_start_matches('0').is_empty(),
            format!("effective {}, bounding {}", s("cap_eff"), s("cap_bnd")),
        ),
        layer(
            "private /proc",
            s("proc_zygote").starts_with("denied")
                && s("proc_host").starts_with("denied")
                && strings("proc_entries").iter().all(|e| {
                    !e.bytes().all(|b| b.is_ascii_digit())
                        || p["pid"] == e.parse::<u64>().unwrap_or(0)
                }),
            format!(
                "processes shown: {}; the zygote's /proc/1: {}; host files (/proc/loadavg): {}",
                strings("proc_entries")
                    .iter()
                    .filter(|e| e.bytes().all(|b| b.is_ascii_digit()))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                s("proc_zygote"),
                s("proc_host")
            ),
        ),
        layer(
            "process limit",
            p["rlimit_nproc"].as_u64() == Some(crate::launcher::MAX_TASKS)
                && p["threads_started"]
                    .as_u64()
                    .is_some_and(|n| n + 2 <= crate::launcher::MAX_TASKS),
            format!(
                "RLIMIT_NPROC {}; a job could start {} threads",
                p["rlimit_nproc"], p["threads_started"]
            ),
        ),
        layer(
            "resource limits",
            p["rlimit_as"].as_i64().is_some_and(|v| v > 0)
                && p["rlimit_cpu"].as_i64().is_some_and(|v| v > 0),
            format!(
                "address space {} MiB, CPU {} s, {} files",
                p["rlimit_as"].as_i64().map_or(-1, |v| v >> 20),
                p["rlimit_cpu"],
                p["rlimit_nofile"]
            ),
        ),
    ]
}
