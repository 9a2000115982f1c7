//! The behaviours of the system tradebox replaces, through the real pool
//! and sandbox: result convention, pandas, output, errors with line numbers,
//! the fixture's data; and, when `TRADEBOX_FIXTURES` names the original
//! data, the integration guide's queries on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{error_kind, pool, run};

#[test]
fn the_seed_behaviours() {
    let pool = pool(1);
    let r = run(&pool, "result = 1 + 1");
    assert!(r.success, "{r:?}");
    assert_eq!(r.result.as_deref(), Some("2"));

    let r = run(
        &pool,
        "import pandas as pd\nresult = pd.Series([1.5, 2.5]).sum()",
    );
    assert_eq!(r.result.as_deref(), Some("4.0"), "{r:?}");

    let r = run(&pool, "print('hello')\nx = 3\nx * 2");
    assert_eq!(r.output, "hello\n");
    assert_eq!(r.result.as_deref(), Some("6"));

    let r = run(&pool, "a = 1\nb = 0\nc = a / b");
    assert!(!r.success);
    assert_eq!(error_kind(&r), "ZeroDivisionError");
    assert_eq!(r.error.as_ref().unwrap().line, Some(3));

    let r = run(&pool, "df = load_trades(days=None)\nresult = len(df)");
    let count = common::trade_count().to_string();
    assert_eq!(r.result.as_deref(), Some(count.as_str()), "{r:?}");
}

/// The real-data tier: the guide's snippets on the original data, seen
/// from its newest trade.
#[test]
fn the_seed_behaviours_on_real_data() {
    let Some(data) = common::real_fixtures() else {
        return;
    };
    let home = common::home_with(&data);
    let pool = tradebox_sandbox::Pool::start(common::config_for(home.path(), 1)).unwrap();
    let r = run(&pool, "df = load_trades(days=None)\nresult = len(df)");
    assert_eq!(r.result.as_deref(), Some("3970"), "{r:?}");
    let r = run(
        &pool,
        "df = load_trades(days=7)\nprint(len(df), 'trades')\nresult = df.groupby('exchange')['amount'].sum()",
    );
    assert!(r.success, "{r:?}");
    assert_eq!(r.output, "303 trades\n");
    assert_eq!(
        r.result.as_deref(),
        Some("exchange\nmexc       797711.340000\nsui_dex      2820.419582\nName: amount, dtype: float64")
    );
    let r = run(
        &pool,
        "df = load_trades(); result = df.groupby('exchange')['amount'].sum()",
    );
    let result = r.result.unwrap_or_default();
    for exchange in ["gateio", "kraken", "kucoin", "mexc"] {
        assert!(result.contains(exchange), "{exchange}: {result}");
    }
}

#[test]
fn a_new_snapshot_reaches_the_next_job() {
    let home = tempfile::TempDir::new().unwrap();
    let csv = home.path().join("more.csv");
    std::fs::write(
        &csv,
        "timestamp,exchange,symbol,side,amount,price\n2025-12-01T00:00:00,mexc,ALKIMI,buy,10,0.05\n",
    )
    .unwrap();
    let db = common::fixtures().join("trade_cache.db");
    common::tradebox(home.path(), &["data", "import", db.to_str().unwrap()]);
    let config = common::config_for(home.path(), 1);
    let pool = tradebox_sandbox::Pool::start(config).unwrap();
    let count = "result = len(load_trades(days=None))";
    let n = common::trade_count();
    assert_eq!(run(&pool, count).result, Some(n.to_string()));
    common::tradebox(home.path(), &["data", "import", csv.to_str().unwrap()]);
    assert_eq!(run(&pool, count).result, Some((n + 1).to_string()));
    // Moved in place: loaded, not restarted.
    let status = &pool.status()[0];
    assert_eq!((status.restarts, status.loads), (0, 1), "{status:?}");
}
