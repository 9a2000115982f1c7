//! What a home holds, as one JSON object: the store's trades (per exchange
//! and account, date range), its balance snapshots and the current snapshot
//! version, and the state of every followed source (last sync, lag,
//! errors). `tradebox data info --json` prints it and the console's data
//! page shows it, so both say the same.

use serde_json::{json, Map, Value};

use crate::snapshot::{self, Manifest};
use crate::sources::load_states;
use crate::{Home, Result, Store};

/// The summary of `home`; an absent store counts as empty (nothing is
/// created).
pub fn info(home: &Home) -> Result<Value> {
    let store_path = home.store_path();
    let (mut summary, states) = match Store::open_read_only(&store_path)? {
        Some(store) => (Some(store.summary()?), load_states(&store)?),
        None => (None, Vec::new()),
    };
    // With a shared store, the trades are those it holds (the home's file
    // is a mirror, which may be behind).
    let shared = home
        .shared_store()
        .map(crate::shared::Shared::open)
        .transpose()?;
    if let Some(shared) = &shared {
        summary = Some(shared.summary()?);
    }
    let store_shown = match &shared {
        Some(shared) => json!(shared.target()),
        None => json!(store_path),
    };
    let current = snapshot::current(&home.snapshot_root())?;
    let now = crate::timestamp::now();
    let sources: Vec<Value> = states
        .iter()
        .map(|s| {
            let mut v = json!(s);
            v["lag_seconds"] = json!(s.lag_seconds(now));
            v
        })
        .collect();
    let mut by_exchange = Map::new();
    for a in summary.iter().flat_map(|s| &s.accounts) {
        let n = by_exchange
            .get(&a.exchange)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        by_exchange.insert(a.exchange.clone(), (n + a.trades).into());
    }
    Ok(json!({
        "store": store_shown,
        "trades": summary.as_ref().map_or(0, |s| s.trades),
        "first_trade": summary.as_ref().and_then(|s| s.first_trade.clone()),
        "last_trade": summary.as_ref().and_then(|s| s.last_trade.clone()),
        "by_exchange": by_exchange,
        "accounts": summary.as_ref().map(|s| s.accounts.clone()).unwrap_or_default(),
        "snapshots": summary.as_ref().map_or(0, |s| s.snapshots),
        "first_snapshot": summary.as_ref().and_then(|s| s.first_snapshot.clone()),
        "last_snapshot": summary.as_ref().and_then(|s| s.last_snapshot.clone()),
        "snapshot": current.as_ref().map(|(dir, m)| snapshot_json(dir, m)),
        "sources": sources,
    }))
}

/// One snapshot version as `info` shows it.
pub fn snapshot_json(dir: &std::path::Path, m: &Manifest) -> Value {
    json!({
        "version": m.version,
        "path": dir,
        "trades": m.trades,
        "snapshots": m.snapshots,
        "created_at": m.created_at,
    })
}
