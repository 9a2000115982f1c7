//! TLS to PostgreSQL against a throwaway cluster that takes TLS connections
//! only (its own CA, a certificate for `localhost` and `127.0.0.1`): each
//! `sslmode` does what libpq's does, a certificate from another CA or for
//! another name is refused where the mode checks it, and the connection is
//! encrypted whenever it is made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tradebox_db::testing::PgCluster;
use tradebox_db::{DbError, PgDb};

/// Whether the session of `db` is encrypted, as the server sees it.
fn encrypted(db: &PgDb) -> bool {
    db.read(|c| {
        c.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .map(|r| r.get::<_, bool>(0))
    })
    .unwrap()
}

fn open(url: &str) -> Result<PgDb, String> {
    PgDb::open(url).map_err(|e: DbError| e.to_string())
}

#[test]
fn each_sslmode_does_what_libpq_does() {
    let cluster = PgCluster::start_tls().unwrap();
    let other = PgCluster::start_tls().unwrap();
    let port = cluster.port();
    let ca = cluster.ca_file();
    let url = |query: &str| format!("postgres://tradebox@127.0.0.1:{port}/postgres{query}");

    // Without TLS the server refuses (its rules take TLS only).
    let err = open(&url("?sslmode=disable")).unwrap_err();
    assert!(err.contains("no encryption"), "{err}");

    // prefer (the default) and require: encrypted, the certificate unchecked.
    for query in ["", "?sslmode=prefer", "?sslmode=require"] {
        let db = open(&url(query)).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(encrypted(&db), "{query}");
        assert_eq!(
            db.sslmode(),
            query
                .rsplit('=')
                .next()
                .filter(|m| !m.is_empty())
                .unwrap_or("prefer")
        );
    }

    // verify-ca and verify-full with the cluster's CA: encrypted, checked.
    let ca_q =
        |mode: &str, ca: &std::path::Path| format!("?sslmode={mode}&sslrootcert={}", ca.display());
    for mode in ["verify-ca", "verify-full", "require"] {
        let db = open(&url(&ca_q(mode, &ca))).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(encrypted(&db), "{mode}");
    }
    // By name too: the certificate names localhost.
    let by_name = format!(
        "postgres://tradebox@localhost:{port}/postgres{}",
        ca_q("verify-full", &ca)
    );
    assert!(encrypted(&open(&by_name).unwrap()));

    // Another CA's roots: refused by every mode that checks the chain
    // (require with a root file checks it, as libpq's does).
    for mode in ["verify-ca", "verify-full", "require"] {
        let err = open(&url(&ca_q(mode, &other.ca_file()))).unwrap_err();
        assert!(err.contains("store unavailable"), "{mode}: {err}");
        assert!(
            err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
            "{mode}: {err}"
        );
    }

    // A name the certificate does not hold (reached by its address):
    // verify-full refuses, verify-ca only checks the chain.
    let named = |mode: &str| {
        format!(
            "host=db.internal hostaddr=127.0.0.1 port={port} user=tradebox dbname=postgres \
             sslmode={mode} sslrootcert={}",
            ca.display()
        )
    };
    let err = open(&named("verify-full")).unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(encrypted(&open(&named("verify-ca")).unwrap()));
}

#[test]
fn a_plain_server_is_refused_where_tls_is_required() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.url("postgres");
    // prefer falls back to a plain connection, as libpq's does.
    assert!(!encrypted(&open(&url).unwrap()));
    for mode in ["require", "verify-full"] {
        let err = open(&format!("{url}?sslmode={mode}")).unwrap_err();
        assert!(err.contains("store unavailable"), "{mode}: {err}");
    }
}
