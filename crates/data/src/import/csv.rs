//! Import from a CSV export with a header row.
//!
//! Header names are matched case-insensitively, with spaces and dashes read
//! as underscores, against [`COLUMN_ALIASES`]. Comma, semicolon and tab
//! separators are recognised from the header line. Every row is validated
//! before anything is written; the first bad row is reported by line and
//! column.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::Path;

use crate::progress::{Progress, ProgressRead};

use crate::error::{Error, Result};
use crate::model::{check_text, parse_number, Side, Trade};
use crate::store::Writer;
use crate::timestamp;

/// Store column, then the header names accepted for it (the first is canonical).
pub const COLUMN_ALIASES: &[(&str, &[&str])] = &[
    (
        "timestamp",
        &[
            "timestamp",
            "time",
            "datetime",
            "date",
            "ts",
            "executed_at",
            "created_at",
            "trade_time",
        ],
    ),
    ("exchange", &["exchange", "venue"]),
    ("account_name", &["account_name", "account"]),
    ("symbol", &["symbol", "asset", "base", "instrument"]),
    ("side", &["side", "direction", "type"]),
    (
        "amount",
        &["amount", "qty", "quantity", "size", "volume", "base_amount"],
    ),
    ("price", &["price", "rate"]),
    ("fee", &["fee", "fee_amount", "commission"]),
    (
        "fee_currency",
        &["fee_currency", "fee_asset", "commission_asset"],
    ),
    (
        "trade_id",
        &["trade_id", "id", "tradeid", "txid", "order_id"],
    ),
];

/// Required unless a default is given in [`CsvOptions`].
const REQUIRED: [&str; 6] = ["timestamp", "exchange", "symbol", "side", "amount", "price"];

/// Values for columns a CSV file does not have.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// Used when the file has no exchange column.
    pub exchange: Option<String>,
    /// Used when the file has no account column (else "default").
    pub account: Option<String>,
}

/// Where each store column sits in the file, and what the file calls it.
struct Layout {
    index: [Option<usize>; 10],
    names: Vec<String>,
}

impl Layout {
    fn from_header(path: &Path, header: &csv::StringRecord, opts: &CsvOptions) -> Result<Layout> {
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
            .collect();
        let mut index = [None; 10];
        for (col, (_, aliases)) in COLUMN_ALIASES.iter().enumerate() {
            index[col] = names.iter().position(|n| {
                let n = n.to_ascii_lowercase().replace([' ', '-'], "_");
                aliases.contains(&n.as_str())
            });
        }
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| {
                let i = COLUMN_ALIASES
                    .iter()
                    .position(|(name, _)| name == c)
                    .unwrap_or(0);
                index[i].is_none() && !(*c == "exchange" && opts.exchange.is_some())
            })
            .collect();
        if !missing.is_empty() {
            return Err(Error::CsvHeader {
                path: path.into(),
                missing: missing.join(", "),
                found: names.join(", "),
            });
        }
        Ok(Layout { index, names })
    }

    fn field<'r>(&self, record: &'r csv::StringRecord, col: usize) -> Option<(&'r str, &str)> {
        let i = self.index[col]?;
        Some((record.get(i).unwrap_or(""), self.names[i].as_str()))
    }
}

/// Imports one CSV file; returns (read, added).
pub(super) fn import(
    w: &mut Writer<'_>,
    path: &Path,
    opts: &CsvOptions,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.stage(&format!("importing {}", path.display()), Some(size));
    let input = ProgressRead {
        inner: file,
        progress,
    };
    let trades = parse(input, path, opts)?;
    let added = w.insert_trades(trades.iter().map(|t| (t, None)))?;
    Ok((trades.len() as u64, added))
}

/// Parses and validates a whole CSV stream into trades.
pub fn parse(mut input: impl Read, path: &Path, opts: &CsvOptions) -> Result<Vec<Trade>> {
    let mut data = Vec::new();
    input
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, e))?;
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
    let first_line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let count = |c: u8| first_line.iter().filter(|&&b| b == c).count();
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&d| count(d))
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .trim(csv::Trim::All)
        .from_reader(body);
    let record_error = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        let reason = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => {
                format!("has {len} fields, the header has {expected_len}")
            }
            csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8 text".to_string(),
            _ => e.to_string(),
        };
        Error::CsvRecord {
            path: path.into(),
            line,
            reason,
        }
    };
    let header = reader.headers().map_err(record_error)?.clone();
    let layout = Layout::from_header(path, &header, opts)?;
    let mut trades = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(record_error)? {
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line());
        trades.push(
            row(&layout, &record, opts).map_err(|(column, reason)| Error::CsvRow {
                path: path.into(),
                line,
                column,
                reason,
            })?,
        );
    }
    Ok(trades)
}

/// Pairs a failure reason with the file's name of the column.
fn fail(name: &str) -> impl Fn(String) -> (String, String) + '_ {
    move |reason| (name.to_string(), reason)
}

/// One validated row; on failure, the file's column name and the reason.
fn row(l: &Layout, r: &csv::StringRecord, opts: &CsvOptions) -> Result<Trade, (String, String)> {
    let get = |col: usize| l.field(r, col);
    let required = |col: usize| -> Result<String, (String, String)> {
        let (v, name) = get(col).unwrap_or(("", COLUMN_ALIASES[col].0));
        check_text(v, COLUMN_ALIASES[col].0).map_err(fail(name))
    };
    let optional = |col: usize| {
        get(col)
            .map(|(v, _)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };

    let (ts_text, ts_name) = get(0).unwrap_or_default();
    let timestamp = timestamp::parse(ts_text).map_err(fail(ts_name))?;
    let exchange = match (get(1), &opts.exchange) {
        (None, Some(default)) => default.clone(),
        _ => required(1)?,
    };
    let account_name = optional(2)
        .or_else(|| opts.account.clone())
        .unwrap_or_else(|| "default".to_string());
    let symbol = required(3)?;
    let (side_text, side_name) = get(4).unwrap_or_default();
    let side = Side::parse(side_text).map_err(fail(side_name))?;
    let number = |col: usize| -> Result<f64, (String, String)> {
        let (v, name) = get(col).unwrap_or_default();
        parse_number(v, COLUMN_ALIASES[col].0).map_err(fail(name))
    };
    let amount = number(5)?;
    let price = number(6)?;
    let fee = match get(7) {
        Some((v, _)) if !v.trim().is_empty() => number(7)?,
        _ => 0.0,
    };
    let fee_currency = optional(8);
    let mut trade = Trade {
        trade_id: optional(9),
        exchange,
        account_name,
        timestamp,
        symbol,
        side,
        amount,
        price,
        fee,
        fee_currency,
    };
    if trade.trade_id.is_none() {
        trade.trade_id = Some(derived_id(&trade));
    }
    Ok(trade)
}

/// A stable id for rows without one, so that re-importing the same file
/// hits the UNIQUE key instead of adding duplicates (SQLite treats NULLs in
/// a UNIQUE key as distinct).
fn derived_id(t: &Trade) -> String {
    let mut h = DefaultHasher::new();
    (
        &t.exchange,
        &t.account_name,
        t.timestamp,
        &t.symbol,
        t.side.as_str(),
    )
        .hash(&mut h);
    (
        t.amount.to_bits(),
        t.price.to_bits(),
        t.fee.to_bits(),
        &t.fee_currency,
    )
        .hash(&mut h);
    format!("csv-{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_str(s: &str) -> Result<Vec<Trade>> {
        parse(s.as_bytes(), Path::new("t.csv"), &CsvOptions::default())
    }

    #[test]
    fn aliases_and_epoch_ms() {
        let t = parse_str("Time;Exchange;Account;Symbol;Side;Qty;Price;Commission\n1760294885705;mexc;MM1;ALKIMI;BUY;100;0.05;0.01\n").unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(
            timestamp::format(t[0].timestamp),
            "2025-10-12T18:48:05.705000"
        );
        assert_eq!((t[0].side, t[0].amount, t[0].fee), (Side::Buy, 100.0, 0.01));
        assert!(t[0].trade_id.as_deref().unwrap_or("").starts_with("csv-"));
    }

    #[test]
    fn bad_row_names_line_and_column() {
        let err = parse_str("timestamp,exchange,symbol,side,qty,price\n2025-10-01,mexc,A,buy,1,2\n2025-10-02,mexc,A,buy,abc,2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv, line 3, column 'qty': \"abc\" is not a number"
        );
    }

    #[test]
    fn missing_column_is_named() {
        let err = parse_str("timestamp,exchange,symbol,amount,price\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("lacks the required column(s) side"),
            "{err}"
        );
    }

    #[test]
    fn ragged_row_is_reported() {
        let err =
            parse_str("timestamp,exchange,symbol,side,amount,price\n2025-10-01,mexc,A,buy,1\n")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv, line 2: has 5 fields, the header has 6"
        );
    }

    proptest! {
        #[test]
        fn never_panics(body in "[a-z0-9,;\t\n\" .:-]{0,200}") {
            let _ = parse_str(&format!("timestamp,exchange,symbol,side,amount,price\n{body}"));
            let _ = parse_str(&body);
        }

        #[test]
        fn valid_rows_round_trip(amount in 0.0f64..1e9, price in 0.0f64..1e6, us in 0i64..4_000_000_000_000_000) {
            let ts = timestamp::format(us);
            let t = parse_str(&format!("timestamp,exchange,symbol,side,amount,price\n{ts},mexc,ALKIMI,sell,{amount},{price}\n")).unwrap();
            prop_assert_eq!(t[0].timestamp, us);
            prop_assert_eq!(t[0].amount, amount);
            prop_assert_eq!(t[0].price, price);
        }
    }
}
