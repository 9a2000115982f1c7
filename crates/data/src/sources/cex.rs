//! Following an original `trade_cache.db` that the collector keeps writing.
//!
//! The table has no change log, so the high-water mark is the largest
//! `rowid` imported: its `id INTEGER PRIMARY KEY AUTOINCREMENT` never hands
//! out a rowid twice, so every new row is above the mark, whatever its
//! trade time (late trades included). Every row is read again (and the
//! UNIQUE key keeps them from being added twice) when the mark cannot be
//! trusted: the first sync, a file replaced (another device:inode) or
//! truncated (its largest rowid below the mark), and every
//! `reconcile_minutes`, which also catches a writer that reuses rowids.
//!
//! The source is opened read-only and never as immutable; each batch is
//! one short read statement (a writer in WAL mode is never blocked; in
//! rollback-journal mode it waits at most that long), and a writer's lock
//! is waited for at most [`BUSY`] before the sync gives up until the next
//! poll. A batch and the new mark are written in one store transaction.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::state;
use super::{SourceConfig, SyncReport};
use crate::error::{Error, Result};
use crate::import::sqlite::{open_live_source, TradeReader};
use crate::model::Trade;
use crate::store::Store;
use crate::timestamp;

/// How long a read waits for the writer's lock.
pub(crate) const BUSY: Duration = Duration::from_millis(250);
/// Rows per read statement and store transaction.
const BATCH: u64 = 20_000;

pub(super) fn sync(store: &mut Store, config: &SourceConfig) -> Result<SyncReport> {
    let path = config.path.as_path();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Invalid {
            path: path.into(),
            reason: "not a file (a cex-reporter source is its trade_cache.db)".into(),
        });
    }
    let identity = format!("{}:{}", meta.dev(), meta.ino());
    let src = open_live_source(path, BUSY)?;
    let reader = TradeReader::new(&src, path)?;
    let top = reader.max_rowid()?;

    let mut st = state::load(store, &config.id)?;
    let now = timestamp::now();
    let reconcile_due = st.reconciled_at.as_deref().is_none_or(|at| {
        timestamp::parse(at).map_or(true, |at| {
            now.saturating_sub(at) >= (config.reconcile_minutes as i64) * 60_000_000
        })
    });
    let full =
        st.identity.as_deref() != Some(identity.as_str()) || top < st.high_water || reconcile_due;
    let mut after = if full { 0 } else { st.high_water };
    st.kind = config.kind.as_str().into();
    st.path = path.display().to_string();
    st.identity = Some(identity);

    let mut report = SyncReport {
        full,
        ..SyncReport::default()
    };
    loop {
        // Read first (a short read statement on the source), then write.
        let mut rows: Vec<(i64, Trade, Option<String>)> = Vec::new();
        let mut bad: Vec<String> = Vec::new();
        let mut last = after;
        let mut seen = 0u64;
        let read = reader.each_after(after, Some(BATCH), |rowid, trade, cached_at| {
            seen += 1;
            last = rowid;
            rows.push((rowid, trade, cached_at));
            Ok(())
        });
        match read {
            Ok(()) => {}
            // A bad row is skipped and reported; the rows before it are kept.
            Err(e @ Error::SqliteRow { row_id, .. }) => {
                bad.push(e.to_string());
                last = row_id;
                seen += 1;
            }
            Err(e) => return Err(e),
        }
        if seen == 0 {
            break;
        }
        let done = seen < BATCH && bad.is_empty();
        let (added, newest) = store.write(|w| {
            let mut added = 0u64;
            let mut newest = None::<i64>;
            for (_, trade, cached_at) in &rows {
                if w.insert_trade(trade, cached_at.as_deref())? {
                    added += 1;
                    newest = Some(newest.map_or(trade.timestamp, |n| n.max(trade.timestamp)));
                }
            }
            let mut next = st.clone();
            next.high_water = next.high_water.max(last);
            if full {
                next.high_water = last;
            }
            next.added_total += added;
            if let Some(n) = newest {
                let text = timestamp::format(n);
                if next
                    .newest_trade
                    .as_deref()
                    .is_none_or(|old| old < text.as_str())
                {
                    next.newest_trade = Some(text);
                }
            }
            if let Some(reason) = bad.last() {
                next.rejected = Some(reason.clone());
                next.rejected_total += bad.len() as u64;
            }
            w.save_source_state(&next)?;
            Ok((added, next))
        })?;
        st = newest;
        report.read += rows.len() as u64;
        report.added += added;
        report.rejected.extend(bad);
        after = last;
        if done {
            break;
        }
    }
    if full {
        st.high_water = st.high_water.max(after);
        st.reconciled_at = Some(timestamp::format(now));
        store.write(|w| w.save_source_state(&st))?;
    }
    Ok(report)
}
