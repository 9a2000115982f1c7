//! Catalogue queries for schema checks and migrations: which tables,
//! indexes and triggers exist, and which columns a table has. These read
//! `sqlite_master` and `pragma_table_info`, the SQLite-specific part of a
//! store's schema handling.

use rusqlite::{params, Connection};

/// True when every named table, index or trigger exists.
pub fn objects_exist(conn: &Connection, names: &[&str]) -> rusqlite::Result<bool> {
    for name in names {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        if n == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The column names of `table`, in order (none when it does not exist).
pub fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt
        .query_map(params![table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names)
}
