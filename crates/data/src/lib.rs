//! The trade data layer of tradebox: the SQLite trade store, importers
//! (original `trade_cache.db`, CSV, balance snapshot JSON), a demo data
//! generator, and the export of read-only, versioned Arrow snapshots that
//! the sandboxed Python workers memory-map; [`import_and_publish`] is the
//! import every front end runs. Long operations report to a
//! [`progress::Progress`] and draw nothing themselves.

pub mod demo;
pub mod error;
pub mod home;
pub mod import;
pub mod info;
pub mod model;
pub mod progress;
pub mod publish;
pub mod shared;
pub mod snapshot;
pub mod sources;
pub mod store;
pub mod timestamp;

pub use error::{Error, Result};
pub use home::Home;
pub use publish::{import_and_publish, Imported};
pub use store::Store;
