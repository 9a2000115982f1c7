//! The behaviours of the system tradebox replaces, through the real pool
//! and sandbox: result convention, pandas, output, errors with line numbers,
//! the fixture's data.

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
    assert_eq!(r.result.as_deref(), Some("3970"), "{r:?}");
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
    assert_eq!(run(&pool, count).result.as_deref(), Some("3970"));
    common::tradebox(home.path(), &["data", "import", csv.to_str().unwrap()]);
    assert_eq!(run(&pool, count).result.as_deref(), Some("3971"));
    assert_eq!(pool.status()[0].restarts, 1);
}
