//! Host processes seen through /proc, for the tests and the benches (which
//! include this file by path): the zygote is the launcher's child.

/// The processes whose parent is `pid`, from the parent pids in /proc/*/stat.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return kids;
    };
    for entry in dir.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let ppid = stat_fields(p)
            .and_then(|rest| rest.split_whitespace().nth(1).map(str::to_string))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            kids.push(p);
        }
    }
    kids
}

/// Whether process `pid` runs: neither gone nor a zombie awaiting its reap.
#[allow(dead_code)] // the benches include this file and need only children_of
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|rest| rest.split_whitespace().next() != Some("Z"))
}

/// The fields of /proc/PID/stat after `pid (comm)`: state, ppid, ... (comm
/// may hold spaces, so the split is after the last ')').
fn stat_fields(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')').map(|(_, rest)| rest.to_string())
}
