//! Trades of the store as one Arrow record batch sorted by timestamp: the
//! content of one snapshot segment.

use std::sync::Arc;

use arrow_array::builder::LargeStringBuilder;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};

use super::trades_schema;
use crate::error::{Error, Result};
use crate::store::{store_error, Store};
use crate::timestamp;

/// The trades of an id range, sorted.
pub(super) struct Rows {
    pub batch: RecordBatch,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    /// The highest store id read (0 when none).
    pub max_id: i64,
}

/// Reads the trades whose store id is in `(after, upto]` (`upto` `None`:
/// no upper bound) into one batch sorted by timestamp; equal timestamps
/// keep id order, which is the order they were stored in.
///
/// The store's ids come from `AUTOINCREMENT` and writers commit one at a
/// time, so every trade committed after a read has a higher id than every
/// trade that read saw: the highest id of a segment is where the next one
/// starts. The query walks the id range (the primary key), never the whole
/// table.
pub(super) fn read(store: &Store, after: i64, upto: Option<i64>) -> Result<Rows> {
    let err = |e| store_error(store.path(), e);
    let upto = upto.unwrap_or(i64::MAX);
    let n = usize::try_from(super::count_range(store, after, upto)?).unwrap_or(0);
    let mut stmt = store
        .conn()
        .prepare_cached(
            "SELECT id, timestamp, exchange, account_name, symbol, side, amount, price, fee,
                    fee_currency, trade_id FROM trades WHERE id > ?1 AND id <= ?2 ORDER BY id",
        )
        .map_err(err)?;
    let mut ts = Vec::with_capacity(n);
    let mut text: Vec<LargeStringBuilder> = [8, 4, 8, 4, 4, 24]
        .iter()
        .map(|avg| LargeStringBuilder::with_capacity(n, n * avg))
        .collect();
    let mut floats = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    let mut rows = stmt.query([after, upto]).map_err(err)?;
    let mut sorted = true;
    let mut max_id = 0;
    while let Some(row) = rows.next().map_err(err)? {
        max_id = row.get::<_, i64>(0).map_err(err)?;
        let stamp: &str = row.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(err)?;
        let us = timestamp::parse_canonical(stamp)
            .map_or_else(|| timestamp::parse(stamp), Ok)
            .map_err(|reason| Error::Invalid {
                path: store.path().into(),
                reason: format!("stored timestamp: {reason}"),
            })?;
        sorted &= ts.last().is_none_or(|&prev| prev <= us);
        ts.push(us);
        for (builder, col) in text.iter_mut().zip([2, 3, 4, 5, 9, 10]) {
            builder.append_option(
                row.get_ref(col)
                    .and_then(|v| Ok(v.as_str_or_null()?))
                    .map_err(err)?,
            );
        }
        for (i, values) in floats.iter_mut().enumerate() {
            values.push(row.get::<_, f64>(6 + i).map_err(err)?);
        }
    }
    let (first_us, last_us) = (ts.iter().min().copied(), ts.iter().max().copied());
    // A stable sort: equal timestamps stay in id order.
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
            .collect::<std::result::Result<_, _>>()?;
    }
    let batch = RecordBatch::try_new(Arc::new(trades_schema()), columns)?;
    Ok(Rows {
        batch,
        first_us,
        last_us,
        max_id,
    })
}
