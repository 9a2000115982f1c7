//! A deterministic, realistic demo history: several exchanges and accounts,
//! four symbols with a geometric random-walk price each, buys and sells
//! steered by inventory (as a market maker's would be), lognormal order
//! sizes, maker/taker fees, and one balance snapshot per day.
//!
//! The same [`DemoSpec`] always yields the same trades.

use std::collections::BTreeMap;

use crate::progress::Progress;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, LogNormal, StandardNormal};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::model::{Side, Trade};
use crate::store::{BalanceSnapshot, Target, Writer};
use crate::timestamp::{self, Micros};

const DAY_US: i64 = 86_400_000_000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub rows: u64,
    pub days: u32,
    pub seed: u64,
    /// The instant the history ends at (usually now).
    pub end: Micros,
}

/// What a demo run wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoReport {
    pub trades: u64,
    pub snapshots: u64,
    pub first_trade: Option<String>,
    pub last_trade: Option<String>,
}

struct Venue {
    name: &'static str,
    weight: f64,
    quote: &'static str,
    taker_fee: f64,
    /// Price offset from the reference, in fractions.
    basis: f64,
}

const VENUES: [Venue; 5] = [
    Venue {
        name: "mexc",
        weight: 0.30,
        quote: "USDT",
        taker_fee: 0.0010,
        basis: 0.0004,
    },
    Venue {
        name: "gateio",
        weight: 0.25,
        quote: "USDT",
        taker_fee: 0.0020,
        basis: -0.0003,
    },
    Venue {
        name: "kucoin",
        weight: 0.20,
        quote: "USDT",
        taker_fee: 0.0010,
        basis: 0.0001,
    },
    Venue {
        name: "okx",
        weight: 0.15,
        quote: "USDT",
        taker_fee: 0.0008,
        basis: 0.0,
    },
    Venue {
        name: "kraken",
        weight: 0.10,
        quote: "USD",
        taker_fee: 0.0026,
        basis: -0.0006,
    },
];

const ACCOUNTS: [(&str, f64); 3] = [("MM1", 0.40), ("MM2", 0.35), ("TM1", 0.25)];

struct Market {
    symbol: &'static str,
    weight: f64,
    price: f64,
    daily_vol: f64,
    decimals: i32,
    /// Starting inventory per venue, in units.
    inventory: f64,
}

fn markets() -> [Market; 4] {
    [
        Market {
            symbol: "ALKIMI",
            weight: 0.55,
            price: 0.05,
            daily_vol: 0.05,
            decimals: 2,
            inventory: 4_000_000.0,
        },
        Market {
            symbol: "SUI",
            weight: 0.15,
            price: 3.4,
            daily_vol: 0.04,
            decimals: 2,
            inventory: 60_000.0,
        },
        Market {
            symbol: "ETH",
            weight: 0.15,
            price: 3400.0,
            daily_vol: 0.03,
            decimals: 4,
            inventory: 60.0,
        },
        Market {
            symbol: "BTC",
            weight: 0.15,
            price: 95_000.0,
            daily_vol: 0.025,
            decimals: 6,
            inventory: 2.0,
        },
    ]
}

const START_QUOTE: f64 = 400_000.0;

fn pick<T>(rng: &mut ChaCha8Rng, items: &[T], weight: impl Fn(&T) -> f64) -> usize {
    let mut x = rng.random::<f64>() * items.iter().map(&weight).sum::<f64>();
    for (i, item) in items.iter().enumerate() {
        x -= weight(item);
        if x < 0.0 {
            return i;
        }
    }
    items.len() - 1
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// Trades generated before they are written.
const BATCH: usize = 8192;

/// Generates the history, calling `on_trade` for each trade in time order;
/// returns one balance snapshot per day (the last one at `end`).
pub fn generate(
    spec: &DemoSpec,
    mut on_trade: impl FnMut(&Trade) -> Result<()>,
) -> Result<Vec<BalanceSnapshot>> {
    if spec.rows == 0 || spec.days == 0 {
        return Err(Error::InvalidArgument(
            "--rows and --days must be at least 1".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut markets = markets();
    let sizes =
        LogNormal::new(600f64.ln(), 1.1).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let start = spec.end - i64::from(spec.days) * DAY_US;
    let mean_gap = (spec.end - start) as f64 / spec.rows as f64;
    // balances[venue][asset]
    let mut balances: Vec<BTreeMap<&'static str, f64>> = VENUES
        .iter()
        .map(|v| {
            let mut b: BTreeMap<&'static str, f64> =
                markets.iter().map(|m| (m.symbol, m.inventory)).collect();
            b.insert(v.quote, START_QUOTE);
            b
        })
        .collect();
    let mut last_move = vec![start; markets.len()];
    let mut snapshots = Vec::new();
    let mut day_end = start - start.rem_euclid(DAY_US) + DAY_US;
    let mut t = start as f64;

    for seq in 0..spec.rows {
        // Spread the rows over the span; the last one lands at `end`.
        let gap: f64 = Exp1.sample(&mut rng);
        t = (t + gap * mean_gap).min(spec.end as f64);
        let now = if seq + 1 == spec.rows {
            spec.end
        } else {
            t as i64
        };
        while now >= day_end {
            snapshots.push(snapshot(day_end - 1_000_000, &balances));
            day_end += DAY_US;
        }
        let m = pick(&mut rng, &markets, |m| m.weight);
        let v = pick(&mut rng, &VENUES, |v| v.weight);
        let a = pick(&mut rng, &ACCOUNTS, |a| a.1);
        let market = &mut markets[m];
        let venue = &VENUES[v];
        let dt_days = (now - last_move[m]) as f64 / DAY_US as f64;
        last_move[m] = now;
        let z: f64 = StandardNormal.sample(&mut rng);
        let sigma = market.daily_vol;
        market.price *= (sigma * dt_days.sqrt() * z - 0.5 * sigma * sigma * dt_days).exp();
        let price = round(
            market.price * (1.0 + venue.basis + 0.0005 * (rng.random::<f64>() - 0.5)),
            8,
        );

        let bal = &mut balances[v];
        let inventory = bal.get(market.symbol).copied().unwrap_or(0.0);
        let skew = (inventory - market.inventory) / market.inventory;
        let p_buy = (0.5 - 0.3 * skew).clamp(0.15, 0.85);
        let mut side = if rng.random::<f64>() < p_buy {
            Side::Buy
        } else {
            Side::Sell
        };
        let notional = sizes.sample(&mut rng).clamp(5.0, 150_000.0);
        let mut amount = round(notional / price, market.decimals).max(10f64.powi(-market.decimals));
        let quote_left = bal.get(venue.quote).copied().unwrap_or(0.0);
        if side == Side::Sell && amount > inventory {
            side = Side::Buy;
        }
        if side == Side::Buy && amount * price * 1.01 > quote_left {
            side = Side::Sell;
            amount = amount.min(round(inventory, market.decimals));
        }
        let maker = rng.random::<f64>() < 0.35;
        let fee = if maker {
            0.0
        } else {
            round(amount * price * venue.taker_fee, 8)
        };
        let signed = if side == Side::Buy { amount } else { -amount };
        *bal.entry(market.symbol).or_default() += signed;
        *bal.entry(venue.quote).or_default() -= signed * price + fee;

        on_trade(&Trade {
            trade_id: Some(format!("{}-{:010}", venue.name, seq + 1)),
            exchange: venue.name.to_string(),
            account_name: ACCOUNTS[a].0.to_string(),
            timestamp: now,
            symbol: market.symbol.to_string(),
            side,
            amount,
            price,
            fee,
            fee_currency: Some(venue.quote.to_string()),
        })?;
    }
    snapshots.push(snapshot(spec.end, &balances));
    Ok(snapshots)
}

fn snapshot(at: Micros, balances: &[BTreeMap<&'static str, f64>]) -> BalanceSnapshot {
    let mut by_venue = Map::new();
    for (venue, assets) in VENUES.iter().zip(balances) {
        let assets: Map<String, Value> = assets
            .iter()
            .map(|(asset, amount)| (asset.to_string(), json!(round(*amount, 8))))
            .collect();
        by_venue.insert(venue.name.to_string(), Value::Object(assets));
    }
    let stamp = timestamp::format(at);
    BalanceSnapshot {
        date: stamp[..10].to_string(),
        timestamp: stamp,
        balances: Value::Object(by_venue),
    }
}

/// Generates the demo history into `store` in one transaction, first
/// removing what is there when `replace` is set; `progress` counts the
/// trades and is finished at the end.
pub fn write(
    store: &mut impl Target,
    spec: &DemoSpec,
    replace: bool,
    progress: &dyn Progress,
) -> Result<DemoReport> {
    progress.stage("generating demo trades", Some(spec.rows));
    let mut reported = 0u64;
    let written = store.write(|w| {
        if replace {
            w.clear()?;
        }
        let mut trades = 0u64;
        // Written a batch at a time (one statement each on a shared store).
        let mut batch: Vec<Trade> = Vec::with_capacity(BATCH);
        let mut flush = |batch: &mut Vec<Trade>, w: &mut Writer<'_>| {
            trades += w.insert_trades(batch.iter().map(|t| (t, None)))?;
            progress.advance(batch.len() as u64);
            reported += batch.len() as u64;
            batch.clear();
            Ok::<(), Error>(())
        };
        let snapshots = generate(spec, |t| {
            batch.push(t.clone());
            if batch.len() == BATCH {
                flush(&mut batch, w)?;
            }
            Ok(())
        })?;
        flush(&mut batch, w)?;
        for s in &snapshots {
            w.upsert_snapshot(s)?;
        }
        Ok((trades, snapshots.len() as u64))
    });
    if written.is_ok() {
        progress.advance(spec.rows.saturating_sub(reported));
    }
    progress.finish();
    let (trades, snapshots) = written?;
    let summary = store.summary()?;
    Ok(DemoReport {
        trades,
        snapshots,
        first_trade: summary.first_trade,
        last_trade: summary.last_trade,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64) -> (Vec<Trade>, Vec<BalanceSnapshot>) {
        let spec = DemoSpec {
            rows: 5_000,
            days: 30,
            seed,
            end: 1_764_000_000_000_000,
        };
        let mut trades = Vec::new();
        let snaps = generate(&spec, |t| {
            trades.push(t.clone());
            Ok(())
        })
        .unwrap();
        (trades, snaps)
    }

    #[test]
    fn deterministic_and_realistic() {
        let (a, snaps) = run(7);
        assert_eq!(a, run(7).0);
        assert_ne!(a, run(8).0);
        assert_eq!(a.len(), 5_000);
        assert!(a.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        assert_eq!(a.last().map(|t| t.timestamp), Some(1_764_000_000_000_000));
        assert!(a[0].timestamp >= 1_764_000_000_000_000 - 30 * DAY_US);
        let buys = a.iter().filter(|t| t.side == Side::Buy).count();
        assert!((1_000..4_000).contains(&buys), "buys {buys}");
        for venue in VENUES.iter().map(|v| v.name) {
            assert!(a.iter().any(|t| t.exchange == venue), "{venue}");
        }
        assert!(a
            .iter()
            .all(|t| t.amount > 0.0 && t.price > 0.0 && t.fee >= 0.0));
        assert_eq!(snaps.len(), 31);
        assert!(snaps.windows(2).all(|w| w[0].date < w[1].date));
        // No balance goes negative: sells are capped by inventory.
        for s in &snaps {
            for assets in s.balances.as_object().unwrap().values() {
                for v in assets.as_object().unwrap().values() {
                    assert!(v.as_f64().unwrap() > -1e-6, "{s:?}");
                }
            }
        }
    }
}
