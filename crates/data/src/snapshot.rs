//! Export of the store to a versioned, read-only columnar snapshot.
//!
//! Layout under the snapshot root (`$TRADEBOX_HOME/snapshot`):
//!
//! ```text
//! v000001/ v000002/ ...   immutable version folders
//!   trades.arrow          Arrow IPC file, one record batch, sorted by timestamp
//!   snapshots.json        balance snapshots, oldest first
//!   manifest.json         format, version, counts, first/last trade
//! current -> v000002      relative symlink, switched by rename(2)
//! ```
//!
//! A version folder is written under a temporary name and renamed into place,
//! then `current` is replaced atomically. Readers resolve `current` once and
//! keep the folder they opened; the newest [`KEEP`] versions stay on disk, and
//! a memory-mapped file stays valid even after its folder is pruned.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{store_error, Store};
use crate::timestamp;

/// The snapshot format this code writes and the Python helpers read.
pub const FORMAT: u32 = 1;
/// How many versions are kept on disk.
pub const KEEP: usize = 3;

/// `manifest.json` of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: u64,
    pub created_at: String,
    pub trades: u64,
    pub first_trade_us: Option<i64>,
    pub last_trade_us: Option<i64>,
    pub snapshots: u64,
}

/// The Arrow schema of `trades.arrow`.
pub fn trades_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let float = |name: &str| Field::new(name, DataType::Float64, false);
    Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("exchange", false),
        text("account_name", false),
        text("symbol", false),
        text("side", false),
        float("amount"),
        float("price"),
        float("fee"),
        text("fee_currency", true),
        text("trade_id", true),
    ])
}

/// Folder of one version.
pub fn version_dir(root: &Path, version: u64) -> PathBuf {
    root.join(format!("v{version:06}"))
}

/// The version `current` points at, with its manifest; `None` before the first export.
pub fn current(root: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let link = root.join("current");
    let dir = match std::fs::canonicalize(&link) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(link, e)),
    };
    let manifest = manifest(&dir)?;
    Ok(Some((dir, manifest)))
}

/// The manifest of one version folder.
pub fn manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid {
        path: path.clone(),
        reason: format!("unreadable manifest: {e}"),
    })
}

/// Exports the store as a new version and makes it current.
pub fn export(store: &Store, root: &Path) -> Result<Manifest> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let lock_path = root.join(".lock");
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;

    let version = versions(root)?.last().map_or(1, |v| v + 1);
    let tmp = root.join(format!(".tmp-v{version:06}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;

    // One read transaction, so trades and snapshots agree with each other.
    let tx = store
        .conn()
        .unchecked_transaction()
        .map_err(|e| store_error(store.path(), e))?;
    let (batch, first, last) = read_trades(store)?;
    let snapshots = store.balance_snapshots()?;
    drop(tx);

    let manifest = Manifest {
        format: FORMAT,
        version,
        created_at: timestamp::format_rfc3339(timestamp::now()),
        trades: batch.num_rows() as u64,
        first_trade_us: first,
        last_trade_us: last,
        snapshots: snapshots.len() as u64,
    };
    write_file(&tmp.join("trades.arrow"), |w| {
        let mut writer = arrow_ipc::writer::FileWriter::try_new(w, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
        Ok(())
    })?;
    write_json(&tmp.join("snapshots.json"), &snapshots)?;
    write_json(&tmp.join("manifest.json"), &manifest)?;
    sync_dir(&tmp)?;

    let dir = version_dir(root, version);
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    let next = root.join(".current.tmp");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(format!("v{version:06}"), &next).map_err(|e| Error::io(&next, e))?;
    std::fs::rename(&next, root.join("current")).map_err(|e| Error::io(root, e))?;
    sync_dir(root)?;
    prune(root)?;
    tracing::info!(version, trades = manifest.trades, "snapshot published");
    Ok(manifest)
}

/// Version numbers present, ascending.
fn versions(root: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name();
        if let Some(v) = name
            .to_str()
            .and_then(|n| n.strip_prefix('v'))
            .and_then(|n| n.parse().ok())
        {
            out.push(v);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn prune(root: &Path) -> Result<()> {
    let all = versions(root)?;
    for v in &all[..all.len().saturating_sub(KEEP)] {
        let dir = version_dir(root, *v);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    Ok(())
}

/// Reads every trade into one record batch sorted by timestamp.
fn read_trades(store: &Store) -> Result<(RecordBatch, Option<i64>, Option<i64>)> {
    let err = |e| store_error(store.path(), e);
    let n = store.trade_count()? as usize;
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT timestamp, exchange, account_name, symbol, side, amount, price, fee,
                    fee_currency, trade_id FROM trades ORDER BY timestamp",
        )
        .map_err(err)?;
    let mut ts = Vec::with_capacity(n);
    let mut text: Vec<StringBuilder> = [8, 4, 8, 4, 4, 24]
        .iter()
        .map(|avg| StringBuilder::with_capacity(n, n * avg))
        .collect();
    let mut floats = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    let mut rows = stmt.query([]).map_err(err)?;
    let mut sorted = true;
    while let Some(row) = rows.next().map_err(err)? {
        let stamp: &str = row.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(err)?;
        let us = timestamp::parse_canonical(stamp)
            .map_or_else(|| timestamp::parse(stamp), Ok)
            .map_err(|reason| Error::Invalid {
                path: store.path().into(),
                reason: format!("stored timestamp: {reason}"),
            })?;
        sorted &= ts.last().is_none_or(|&prev| prev <= us);
        ts.push(us);
        for (i, builder) in text.iter_mut().enumerate() {
            let col = [1, 2, 3, 4, 8, 9][i];
            builder.append_option(
                row.get_ref(col)
                    .and_then(|v| Ok(v.as_str_or_null()?))
                    .map_err(err)?,
            );
        }
        for (i, values) in floats.iter_mut().enumerate() {
            values.push(row.get::<_, f64>(5 + i).map_err(err)?);
        }
    }
    let (first, last) = (ts.iter().min().copied(), ts.iter().max().copied());
    let order: Option<UInt32Array> = (!sorted).then(|| {
        let mut idx: Vec<u32> = (0..ts.len() as u32).collect();
        idx.sort_by_key(|&i| ts[i as usize]);
        UInt32Array::from(idx)
    });
    let mut text = text
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next_text = || {
        text.next()
            .ok_or_else(|| arrow_schema::ArrowError::SchemaError("column count".into()))
    };
    let [amount, price, fee] = floats.map(|v| Arc::new(Float64Array::from(v)) as ArrayRef);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        next_text()?,
        next_text()?,
        next_text()?,
        next_text()?,
        amount,
        price,
        fee,
        next_text()?,
        next_text()?,
    ];
    if let Some(order) = order {
        columns = columns
            .iter()
            .map(|c| arrow_select::take::take(c.as_ref(), &order, None))
            .collect::<Result<_, _>>()?;
    }
    let batch = RecordBatch::try_new(Arc::new(trades_schema()), columns)?;
    Ok((batch, first, last))
}

fn write_file(path: &Path, f: impl FnOnce(&mut BufWriter<&File>) -> Result<()>) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    f(&mut w)?;
    w.flush().map_err(|e| Error::io(path, e))?;
    drop(w);
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_file(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(|e| Error::io(path, e.into()))?;
        w.write_all(b"\n").map_err(|e| Error::io(path, e))
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
