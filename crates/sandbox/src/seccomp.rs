//! The seccomp filters of the sandbox. The policy is data: seccompiler's
//! JSON files in `crates/sandbox/seccomp/`, one comment per rule saying why
//! it is there (the folder's README says how the files are used, checked
//! and changed). They are embedded in the binary and compiled when the
//! launcher starts, for x86_64 or aarch64.
//!
//! - [`Filter::Zygote`] (`zygote.json`, a deny-list) is installed by the
//!   launcher just before it executes Python: no ptrace, mount, namespaces,
//!   BPF, io_uring, keyrings, userfaultfd, perf events, kernel modules,
//!   sockets other than `AF_UNIX`. It must still allow `execve` (for that
//!   one exec) and `fork` (the zygote forks each job's child).
//! - [`Filter::Child`] (`child.json`, plus `child.x86_64.json` on x86_64; an
//!   allow-list) is stacked on top by each job's child before it touches
//!   user code (`python/tradebox/confine.py` installs the program compiled
//!   here with one `prctl`): no exec, no fork (`clone` only with
//!   `CLONE_THREAD`), sockets only `AF_UNIX`, `ioctl` only five requests,
//!   signals only to the job itself, `prctl` and `prlimit64` only on itself.
//!   Everything else fails with EPERM.
//! - [`Filter::Enosys`] (`enosys.json`) makes `clone3` fail with ENOSYS,
//!   installed last in both places: `clone3` passes its flags in memory,
//!   out of a filter's sight, and ENOSYS makes glibc fall back to `clone`,
//!   whose flags the filters check. (Of several stacked filters returning
//!   an errno, the most recently installed one's errno wins.)
//!
//! Every program is seccompiler's behind a binary search on the call's
//! number (`dispatch.rs`), which decides calls no rule names in a few
//! steps: the kernel walks the child's filter for every call number each
//! time a job installs it.

pub mod bpf;
mod dispatch;
pub mod policy;

use std::collections::{BTreeMap, BTreeSet};

pub use policy::{Action, FilterDoc, Rule};
pub use seccompiler::{sock_filter, BpfProgram, TargetArch};

/// A filter could not be built: a bug in the policy files, never user input.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("seccomp policy {file}: {source}")]
    Parse {
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("seccomp policy {file}: expected exactly one filter, named \"{name}\"")]
    Shape {
        file: &'static str,
        name: &'static str,
    },
    #[error("seccomp policy {file}: its actions differ from those of {base}")]
    Actions {
        file: &'static str,
        base: &'static str,
    },
    #[error("seccomp policy {name} for {arch:?}: {source}")]
    Compile {
        name: &'static str,
        arch: TargetArch,
        #[source]
        source: seccompiler::Error,
    },
    #[error("seccomp policy: unsupported architecture {0}")]
    Arch(String),
}

/// One of the sandbox's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filter {
    Zygote,
    Child,
    Enosys,
}

impl Filter {
    /// Every filter.
    pub const ALL: [Filter; 3] = [Filter::Zygote, Filter::Child, Filter::Enosys];

    /// Its name: the one key of its JSON files.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Zygote => "zygote",
            Filter::Child => "child",
            Filter::Enosys => "enosys",
        }
    }

    /// The filters a process runs under once this one is installed, in
    /// installation order: the zygote's own, and the child's on top.
    pub fn stack(self) -> &'static [Filter] {
        match self {
            Filter::Zygote | Filter::Enosys => &[Filter::Zygote, Filter::Enosys],
            Filter::Child => &[
                Filter::Zygote,
                Filter::Enosys,
                Filter::Child,
                Filter::Enosys,
            ],
        }
    }
}

/// One policy file, embedded.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Its name in `crates/sandbox/seccomp/`.
    pub file: &'static str,
    pub filter: Filter,
    /// The architecture it is for (`None`: every one).
    pub arch: Option<TargetArch>,
    pub text: &'static str,
}

/// Every policy file. A filter's first file sets its actions; a later file
/// for the same filter adds rules (for one architecture) and must repeat
/// the same actions.
pub const SOURCES: [Source; 4] = [
    Source {
        file: "zygote.json",
        filter: Filter::Zygote,
        arch: None,
        text: include_str!("../seccomp/zygote.json"),
    },
    Source {
        file: "child.json",
        filter: Filter::Child,
        arch: None,
        text: include_str!("../seccomp/child.json"),
    },
    Source {
        file: "child.x86_64.json",
        filter: Filter::Child,
        arch: Some(TargetArch::x86_64),
        text: include_str!("../seccomp/child.x86_64.json"),
    },
    Source {
        file: "enosys.json",
        filter: Filter::Enosys,
        arch: None,
        text: include_str!("../seccomp/enosys.json"),
    },
];

/// The architectures the policy is written for.
pub const ARCHES: [TargetArch; 2] = [TargetArch::x86_64, TargetArch::aarch64];

/// The architecture this binary runs on.
pub fn host_arch() -> Result<TargetArch, PolicyError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(PolicyError::Arch(other.to_string())),
    }
}

/// Reads one file: exactly one filter, named after the filter it is for.
pub fn parse(source: &Source) -> Result<FilterDoc, PolicyError> {
    let mut map: BTreeMap<String, FilterDoc> =
        serde_json::from_str(source.text).map_err(|source_err| PolicyError::Parse {
            file: source.file,
            source: source_err,
        })?;
    let name = source.filter.name();
    match (map.len(), map.remove(name)) {
        (1, Some(doc)) => Ok(doc),
        _ => Err(PolicyError::Shape {
            file: source.file,
            name,
        }),
    }
}

/// The filter's rules for `arch`: its files for every architecture and for
/// `arch`, in the order of [`SOURCES`].
pub fn document(filter: Filter, arch: TargetArch) -> Result<FilterDoc, PolicyError> {
    let mut doc: Option<(FilterDoc, &'static str)> = None;
    for source in SOURCES
        .iter()
        .filter(|s| s.filter == filter && s.arch.is_none_or(|a| a == arch))
    {
        let part = parse(source)?;
        doc = Some(match doc {
            None => (part, source.file),
            Some((mut base, base_file)) => {
                if (part.match_action, part.mismatch_action)
                    != (base.match_action, base.mismatch_action)
                {
                    return Err(PolicyError::Actions {
                        file: source.file,
                        base: base_file,
                    });
                }
                base.filter.extend(part.filter);
                (base, base_file)
            }
        });
    }
    // Every filter has a file for every architecture (SOURCES is constant).
    doc.map(|(d, _)| d).ok_or(PolicyError::Shape {
        file: "(none)",
        name: filter.name(),
    })
}

/// Compiles `doc` (the rules of `filter`) for `arch` with seccompiler.
pub fn compile_doc(
    filter: Filter,
    doc: &FilterDoc,
    arch: TargetArch,
) -> Result<BpfProgram, PolicyError> {
    let name = filter.name();
    let compile_err = |source| PolicyError::Compile { name, arch, source };
    let json = serde_json::to_vec(&BTreeMap::from([(name, doc)])).map_err(|source| {
        PolicyError::Parse {
            file: "(compiled)",
            source,
        }
    })?;
    let mut programs =
        seccompiler::compile_from_json(json.as_slice(), arch).map_err(compile_err)?;
    programs.remove(name).ok_or(PolicyError::Shape {
        file: "(compiled)",
        name,
    })
}

/// The program of `filter` for `arch`: seccompiler's, behind a binary
/// search on the call's number (`dispatch.rs`: the same decisions, found
/// in a few steps, which makes installing the filter cheaper).
pub fn compile(filter: Filter, arch: TargetArch) -> Result<BpfProgram, PolicyError> {
    let doc = document(filter, arch)?;
    let program = compile_doc(filter, &doc, arch)?;
    let named = doc
        .filter
        .iter()
        .map(|rule| syscall_number(&rule.syscall, arch))
        .collect::<Result<BTreeSet<u32>, _>>()?;
    let named: Vec<u32> = named.into_iter().collect();
    Ok(dispatch::prepend(
        program,
        bpf::audit_arch(arch),
        &named,
        doc.mismatch_action.ret(),
    ))
}

/// The program of `filter` for `arch` as seccompiler compiles it, without
/// the dispatch (what the tests compare [`compile`] with).
pub fn compile_plain(filter: Filter, arch: TargetArch) -> Result<BpfProgram, PolicyError> {
    compile_doc(filter, &document(filter, arch)?, arch)
}

/// The zygote's deny-list, for this host (see the module doc).
pub fn zygote_filter() -> Result<BpfProgram, PolicyError> {
    compile(Filter::Zygote, host_arch()?)
}

/// The job child's allow-list, for this host (see the module doc).
pub fn child_filter() -> Result<BpfProgram, PolicyError> {
    compile(Filter::Child, host_arch()?)
}

/// `clone3` answers ENOSYS, for this host (see the module doc).
pub fn enosys_filter() -> Result<BpfProgram, PolicyError> {
    compile(Filter::Enosys, host_arch()?)
}

/// The number of system call `name` on `arch`, as seccompiler knows it
/// (read from a one-rule program compiled for it).
pub fn syscall_number(name: &str, arch: TargetArch) -> Result<u32, PolicyError> {
    let doc = FilterDoc {
        mismatch_action: Action::Allow,
        match_action: Action::Errno(1),
        filter: vec![Rule {
            syscall: name.to_string(),
            args: None,
            comment: None,
        }],
    };
    let program = compile_doc(Filter::Enosys, &doc, arch)?;
    // The program checks the architecture, loads the number (offset 0) and
    // compares it with this call's number.
    program
        .windows(2)
        .find(|w| w[0].code == 0x20 && w[0].k == 0 && w[1].code == 0x15)
        .map(|w| w[1].k)
        .ok_or(PolicyError::Shape {
            file: "(compiled)",
            name: "syscall number",
        })
}

/// The program as the kernel's `struct sock_filter` array, native endian,
/// for the Python child to install.
pub fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for ins in program {
        out.extend_from_slice(&ins.code.to_ne_bytes());
        out.push(ins.jt);
        out.push(ins.jf);
        out.extend_from_slice(&ins.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
