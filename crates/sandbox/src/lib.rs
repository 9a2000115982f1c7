//! The sandbox of tradebox: the Python runtime, the pool of warm zygotes,
//! and the kernel confinement (namespaces, a minimal read-only root,
//! Landlock, seccomp, resource limits) applied to every job before user
//! code runs.

pub mod doctor;
pub mod idle_group;
pub mod launcher;
pub mod pool;
pub mod protocol;
pub mod result;
pub mod runtime;
pub mod seccomp;
mod sys;
mod turns;

pub use pool::{Job, Pool, PoolConfig, PoolError, PythonPaths};
pub use result::{Artifact, DataAsOf, ExecError, ExecResult, Origin, ResultCaps};
