//! The C library allocator's settings for `serve`, a process that runs for
//! weeks: the binary's only `unsafe` code.
//!
//! Under the soak's mixed load (replies of a few bytes beside 1 MiB outputs,
//! from many threads) glibc's defaults let `serve`'s resident memory grow
//! for as long as it ran: one arena per thread that ever allocated, each
//! keeping what it freed, and a mapping threshold that rises with every
//! large block freed, so later large blocks stay in the arenas. Two arenas
//! and a fixed 128 KiB threshold (large blocks mapped, and unmapped when
//! freed) kept it flat in the same soak (`docs/reliability.md`).

#![allow(unsafe_code)]

/// Bounds glibc's allocator (see the module documentation); `false` if it
/// refused a setting. Does nothing elsewhere.
pub fn bound() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::libc::{mallopt, M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD};
        const THRESHOLD: i32 = 128 * 1024;
        [
            (M_ARENA_MAX, 2),
            (M_MMAP_THRESHOLD, THRESHOLD),
            (M_TRIM_THRESHOLD, THRESHOLD),
        ]
        .into_iter()
        // SAFETY: mallopt only sets allocator parameters, given as plain
        // integers; glibc takes its own lock, and returns 0 for a setting
        // it refuses.
        .all(|(param, value)| unsafe { mallopt(param, value) } == 1)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_settings_are_taken() {
        assert!(super::bound());
    }
}
