//! Daily balance snapshots: `snapshot_YYYY-MM-DD.json` files holding
//! `{date, timestamp, balances}`, where balances is `{asset: amount}` or
//! `{exchange_or_account: {asset: amount}}`.

use std::path::Path;

use chrono::NaiveDate;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::{BalanceSnapshot, Writer};
use crate::timestamp;

/// Imports one snapshot file; returns (read, added).
pub(super) fn import_file(w: &mut Writer<'_>, path: &Path) -> Result<(u64, u64)> {
    let snap = read(path)?;
    Ok((1, u64::from(w.upsert_snapshot(&snap)?)))
}

/// Imports every `snapshot_*.json` in a directory; returns (read, added).
pub(super) fn import_dir(w: &mut Writer<'_>, dir: &Path) -> Result<(u64, u64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snapshot_") && name.ends_with(".json") {
            files.push(entry.path());
        }
    }
    if files.is_empty() {
        return Err(Error::NoSnapshots { path: dir.into() });
    }
    files.sort();
    let mut added = 0;
    for file in &files {
        let snap = read(file)?;
        added += u64::from(w.upsert_snapshot(&snap)?);
    }
    Ok((files.len() as u64, added))
}

/// Reads and validates one snapshot file.
pub fn read(path: &Path) -> Result<BalanceSnapshot> {
    let bad = |reason: String| Error::Invalid {
        path: path.into(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if text.trim().is_empty() {
        return Err(Error::EmptyFile { path: path.into() });
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "invalid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let field = |name: &str| {
        value.get(name).ok_or_else(|| {
            bad(format!(
                "missing field \"{name}\" (expected {{date, timestamp, balances}})"
            ))
        })
    };
    let date = field("date")?
        .as_str()
        .ok_or_else(|| bad("\"date\" is not a string".into()))?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| bad(format!("\"date\" {date:?} is not a YYYY-MM-DD date")))?;
    let ts = field("timestamp")?
        .as_str()
        .ok_or_else(|| bad("\"timestamp\" is not a string".into()))?;
    timestamp::parse(ts).map_err(|e| bad(format!("\"timestamp\": {e}")))?;
    let balances = field("balances")?;
    check_balances(balances).map_err(bad)?;
    Ok(BalanceSnapshot {
        date: date.to_string(),
        timestamp: ts.to_string(),
        balances: balances.clone(),
    })
}

/// Balances are `{asset: number}` or `{name: {asset: number}}`.
fn check_balances(balances: &Value) -> Result<(), String> {
    let Some(map) = balances.as_object() else {
        return Err("\"balances\" is not an object".into());
    };
    for (name, v) in map {
        match v {
            Value::Number(_) => {}
            Value::Object(inner) => {
                for (asset, amount) in inner {
                    if !amount.is_number() {
                        return Err(format!("balance {name}.{asset} is not a number"));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "balance {name:?} is neither a number nor an object of numbers"
                ))
            }
        }
    }
    Ok(())
}
