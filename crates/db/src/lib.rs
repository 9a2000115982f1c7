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
//! This crate knows nothing of trades, functions or audit rows: the stores
//! keep their own SQL. A second database (PostgreSQL) gets its own
//! connection module here beside [`sqlite`], with the same error type.

pub mod error;
pub mod schema;
pub mod sqlite;

pub use error::DbError;
pub use sqlite::{connect, Access, Conn, Db, BUSY_TIMEOUT};
