//! The connection plumbing of tradebox's stores, written once: the trade
//! store (`tradebox-data`), and the function store, audit trail and rate
//! limiter (`tradebox-core`) all open, configure and use their SQLite file
//! through this crate, and all report its failures as one [`DbError`].
//!
//! - [`connect`]: opens a connection with the settings every store uses
//!   (WAL, `synchronous=NORMAL`, foreign keys, a 2 s busy timeout).
//! - [`Db`]: one connection behind a mutex, shareable between threads, with
//!   one read or `BEGIN IMMEDIATE` write transaction per operation and
//!   [`Db::ensure_schema`] (check with a read, migrate in a write).
//! - [`DbError`]: SQLite's failures mapped to what a user can act on
//!   (locked, read-only, anything else), each naming the file.
//! - [`schema`]: catalogue queries for schema checks and migrations.
//!
//! - [`pg`]: the same for a PostgreSQL store ([`PgDb`]: transactions
//!   on a scoped thread, writes serialised by an advisory lock, schema
//!   changes under a lock of their own).
//!
//! This crate knows nothing of trades, functions or audit rows: the stores
//! keep their own SQL.

pub mod error;
pub mod pg;
pub mod schema;
pub mod sqlite;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
mod tls;

pub use error::DbError;
pub use pg::{PgConn, PgDb};
pub use sqlite::{connect, Access, Conn, Db, BUSY_TIMEOUT};
