//! `tradebox doctor`: the Python runtime, host facts and every sandbox
//! layer, checked from inside a real sandboxed job.

use clap::Args;
use serde_json::json;
use tradebox_data::Home;
use tradebox_sandbox::{doctor, runtime, Job};

use crate::sandbox_setup;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  tradebox doctor
  tradebox doctor --json | jq '.layers[] | select(.active | not)'

Exit codes: 0 every layer active, 2 the sandbox cannot run here (with what to change).")]
pub struct DoctorArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &DoctorArgs, home: &Home, quiet: bool) -> anyhow::Result<u8> {
    let host = doctor::host_checks();
    let rt = sandbox_setup::runtime(home, quiet)?;
    let lock = runtime::lock_pins();
    let packages: Vec<_> = ["pandas", "numpy", "pyarrow", "matplotlib"]
        .iter()
        .map(|name| {
            let installed = rt.packages.get(*name).cloned();
            json!({"name": name, "version": installed, "pinned": lock.get(*name), "matches": installed.as_ref() == lock.get(*name)})
        })
        .collect();
    let (layers, pool, sandbox_error) = match sandbox_setup::start_pool_on(
        home,
        rt.clone(),
        sandbox_setup::PoolShape::single(),
        quiet,
    ) {
        Ok(pool) => {
            let probe = pool.run(Job {
                code: doctor::PROBE.to_string(),
                ..Job::default()
            })?;
            let value = probe
                .value
                .as_ref()
                .and_then(|v| v.get("value"))
                .cloned()
                .unwrap_or_default();
            let layers = if probe.success {
                doctor::interpret(&value)
            } else {
                Vec::new()
            };
            let error = (!probe.success).then(|| format!("{:?}", probe.error));
            (layers, Some(pool.status()), error)
        }
        Err(e) => (Vec::new(), None, Some(format!("{e:#}"))),
    };
    let all_active = !layers.is_empty() && layers.iter().all(|l| l.active);
    if args.json {
        let out = json!({
            "python": {"version": rt.version, "venv": rt.venv, "base_prefix": rt.base_prefix},
            "packages": packages,
            "host": host,
            "memory_limits": doctor::cgroup_mode(),
            "layers": layers,
            "pool": pool,
            "sandbox_error": sandbox_error,
            "ok": all_active,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("python     {} ({})", rt.version, rt.venv.display());
        let pkgs: Vec<String> = packages
            .iter()
            .map(|p| {
                format!(
                    "{} {}{}",
                    p["name"].as_str().unwrap_or(""),
                    p["version"].as_str().unwrap_or("missing"),
                    if p["matches"] == true {
                        ""
                    } else {
                        " (differs from the lock)"
                    }
                )
            })
            .collect();
        println!("packages   {}", pkgs.join(", "));
        println!("\nhost");
        for c in &host {
            println!(
                "  {:<28} {} {}",
                c.name,
                if c.ok { "ok  " } else { "FAIL" },
                c.detail
            );
            if let Some(a) = &c.advice {
                println!("  {:<28}      -> {a}", "");
            }
        }
        println!("\nsandbox layers (checked from inside a sandboxed job)");
        for l in &layers {
            println!(
                "  {:<28} {} {}",
                l.name,
                if l.active { "active  " } else { "INACTIVE" },
                l.detail
            );
        }
        if let Some(e) = &sandbox_error {
            println!("  the sandbox could not run: {e}");
        }
        if let Some(pool) = &pool {
            for (i, s) in pool.iter().enumerate() {
                println!(
                    "\npool       zygote {i}: pid {}, RSS {} MiB",
                    s.pid.map_or("-".into(), |p| p.to_string()),
                    s.rss_kb.map_or("-".into(), |k| (k / 1024).to_string())
                );
            }
        }
        println!(
            "\n{}",
            if all_active {
                "every layer is active"
            } else {
                "the sandbox is NOT fully active: tradebox refuses to run code here"
            }
        );
    }
    Ok(if all_active { 0 } else { 2 })
}
