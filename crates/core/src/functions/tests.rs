//! Tests of the function store: the contract every backend keeps, run on
//! SQLite and on PostgreSQL (a throwaway cluster, a fresh database per
//! case), then what is particular to SQLite (locks, the original bot's
//! tables, sharing the file with the trade store).

use super::sqlite::like_pattern;
use super::*;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tradebox_db::schema::objects_exist;
use tradebox_db::testing::PgCluster;

fn setup() -> (TempDir, PathBuf, FunctionStore) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tradebox.db");
    let store = FunctionStore::open(&path).unwrap();
    (dir, path, store)
}

/// One test's store: [`TestStore::open`] gives another connection to it
/// each call, [`TestStore::another`] a different, empty store.
trait TestStore: Sync {
    fn open(&self) -> FunctionStore;
    fn another(&self) -> FunctionStore;
}

struct Sqlite {
    dir: TempDir,
    others: std::sync::atomic::AtomicU32,
}

impl TestStore for Sqlite {
    fn open(&self) -> FunctionStore {
        FunctionStore::open(self.dir.path().join("tradebox.db")).unwrap()
    }

    fn another(&self) -> FunctionStore {
        let n = self
            .others
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        FunctionStore::open(self.dir.path().join(format!("other-{n}.db"))).unwrap()
    }
}

struct Postgres<'a> {
    cluster: &'a PgCluster,
    url: String,
}

impl TestStore for Postgres<'_> {
    fn open(&self) -> FunctionStore {
        FunctionStore::open_postgres(&self.url).unwrap()
    }

    fn another(&self) -> FunctionStore {
        FunctionStore::open_postgres(&self.cluster.database().unwrap()).unwrap()
    }
}

/// One case of the contract, by name.
type Case = (&'static str, fn(&dyn TestStore));

/// The contract: every case runs on every backend.
const CONTRACT: &[Case] = &[
    ("create_and_get", create_and_get),
    ("invalid_input_is_refused", invalid_input_is_refused),
    ("list_order_and_paging", list_order_and_paging),
    ("record_use_counts_and_stamps", record_use_counts_and_stamps),
    (
        "search_is_case_insensitive_and_literal",
        search_is_case_insensitive_and_literal,
    ),
    (
        "sql_looking_text_is_stored_and_searched_literally",
        sql_looking_text_is_stored_and_searched_literally,
    ),
    ("unicode_round_trips", unicode_round_trips),
    (
        "saves_make_versions_and_history",
        saves_make_versions_and_history,
    ),
    (
        "saving_over_another_users_function_needs_admin",
        saving_over_another_users_function_needs_admin,
    ),
    (
        "delete_by_creator_admin_and_other",
        delete_by_creator_admin_and_other,
    ),
    (
        "deleted_functions_are_hidden_but_kept_in_history",
        deleted_functions_are_hidden_but_kept_in_history,
    ),
    (
        "saving_a_deleted_name_revives_it_for_the_new_saver",
        saving_a_deleted_name_revives_it_for_the_new_saver,
    ),
    ("rename_rules", rename_rules),
    (
        "rename_onto_a_deleted_name_moves_the_deleted_one_aside",
        rename_onto_a_deleted_name_moves_the_deleted_one_aside,
    ),
    ("stats_totals_and_top", stats_totals_and_top),
    ("suggest_close_names", suggest_close_names),
    (
        "export_import_round_trip_and_idempotency",
        export_import_round_trip_and_idempotency,
    ),
    ("import_validates_the_shape", import_validates_the_shape),
    ("parallel_record_use_is_exact", parallel_record_use_is_exact),
    (
        "one_store_shared_between_threads",
        one_store_shared_between_threads,
    ),
    (
        "parallel_saves_of_one_new_name_create_it_once",
        parallel_saves_of_one_new_name_create_it_once,
    ),
];

#[test]
fn the_contract_on_sqlite() {
    for (name, case) in CONTRACT {
        eprintln!("case {name}");
        case(&Sqlite {
            dir: TempDir::new().unwrap(),
            others: Default::default(),
        });
    }
}

#[test]
fn the_contract_on_postgres() {
    let cluster = PgCluster::start().unwrap();
    for (name, case) in CONTRACT {
        eprintln!("case {name}");
        case(&Postgres {
            cluster: &cluster,
            url: cluster.database().unwrap(),
        });
    }
}

fn names(fs: &[Function]) -> Vec<&str> {
    fs.iter().map(|f| f.name.as_str()).collect()
}

fn create_and_get(store: &dyn TestStore) {
    let s = store.open();
    let out = s
        .save("pnl", "daily pnl", "result = 1", "U1", false)
        .unwrap();
    assert!(out.created);
    let f = out.function;
    assert_eq!(f.name, "pnl");
    assert_eq!(f.description, "daily pnl");
    assert_eq!(f.code, "result = 1");
    assert_eq!(f.created_by, "U1");
    assert_eq!(f.version, 1);
    assert_eq!(f.use_count, 0);
    assert_eq!(f.last_used, None);
    assert_eq!(f.updated_by.as_deref(), Some("U1"));
    assert!(timestamp::parse(&f.created_at).is_ok());
    assert_eq!(s.get("pnl").unwrap(), Some(f));
    assert_eq!(s.get("PNL").unwrap(), None, "names are case-sensitive");
    assert_eq!(s.get("missing").unwrap(), None);
    assert_eq!(s.count().unwrap(), 1);
}

fn invalid_input_is_refused(store: &dyn TestStore) {
    let s = store.open();
    let long = "a".repeat(65);
    for (name, code, user) in [
        ("", "x", "U1"),
        ("  ", "x", "U1"),
        (long.as_str(), "x", "U1"),
        ("ok", "  \n", "U1"),
        ("ok", "x", ""),
    ] {
        let err = s.save(name, "", code, user, false).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert!(err.is_user_error());
    }
    // 64 characters (not bytes) is fine.
    let max = "é".repeat(64);
    s.save(&max, "", "x", "U1", false).unwrap();
    assert_eq!(s.count().unwrap(), 1);
}

fn list_order_and_paging(store: &dyn TestStore) {
    let s = store.open();
    for name in ["delta", "alpha", "charlie", "bravo"] {
        s.save(name, "", "x", "U1", false).unwrap();
    }
    for _ in 0..3 {
        s.record_use("charlie").unwrap();
    }
    s.record_use("delta").unwrap();
    s.record_use("bravo").unwrap();
    let all = s.list(10, 0).unwrap();
    assert_eq!(names(&all), ["charlie", "bravo", "delta", "alpha"]);
    assert_eq!(names(&s.list(2, 1).unwrap()), ["bravo", "delta"]);
    assert!(s.list(10, 4).unwrap().is_empty());
    assert_eq!(s.count().unwrap(), 4);
}

fn record_use_counts_and_stamps(store: &dyn TestStore) {
    let s = store.open();
    s.save("f", "", "x", "U1", false).unwrap();
    let f = s.record_use("f").unwrap();
    assert_eq!(f.use_count, 1);
    assert!(f.last_used.is_some());
    assert_eq!(s.record_use("f").unwrap().use_count, 2);
    assert!(matches!(
        s.record_use("nope").unwrap_err(),
        StoreError::NotFound { name } if name == "nope"
    ));
}

fn search_is_case_insensitive_and_literal(store: &dyn TestStore) {
    let s = store.open();
    s.save("Daily_PnL", "profit and loss per day", "x", "U1", false)
        .unwrap();
    s.save("volume", "Traded VOLUME by exchange", "x", "U1", false)
        .unwrap();
    s.save("pct", "fee as 100% of nothing", "x", "U1", false)
        .unwrap();
    s.save("abc", "plain", "x", "U1", false).unwrap();
    s.save("a_c", "underscore name", "x", "U1", false).unwrap();
    s.save("back", r"path C:\data\x", "x", "U1", false).unwrap();

    let found = |q: &str| names(&s.search(q, 50, 0).unwrap()).join(",");
    assert_eq!(found("pnl"), "Daily_PnL");
    assert_eq!(found("DAILY"), "Daily_PnL");
    assert_eq!(found("volume"), "volume");
    // `%` and `_` match only themselves.
    assert_eq!(found("%"), "pct");
    assert_eq!(found("100%"), "pct");
    assert_eq!(found("a_c"), "a_c");
    assert_eq!(found("_"), "a_c,Daily_PnL");
    assert_eq!(found(r"\data"), "back");
    assert_eq!(found(r"\"), "back");
    assert_eq!(found("zzz"), "");
    assert_eq!(s.search_count("_").unwrap(), 2);
    assert_eq!(s.search_count("").unwrap(), 6);
    assert_eq!(names(&s.search("", 2, 1).unwrap()).len(), 2);
}

fn sql_looking_text_is_stored_and_searched_literally(store: &dyn TestStore) {
    let s = store.open();
    let name = "x'); DROP TABLE saved_functions;--";
    let desc = "' OR 1=1 --";
    s.save(
        name,
        desc,
        "result = \"'; DELETE FROM audit_log; --\"",
        "U1",
        false,
    )
    .unwrap();
    s.save("other", "harmless", "x", "U1", false).unwrap();
    let f = s.get(name).unwrap().unwrap();
    assert_eq!(f.description, desc);
    assert_eq!(names(&s.search("' OR 1=1", 10, 0).unwrap()), [name]);
    assert_eq!(names(&s.search("DROP TABLE", 10, 0).unwrap()), [name]);
    assert!(s.search("'; --", 10, 0).unwrap().is_empty());
    assert_eq!(s.search_count("' OR '1'='1").unwrap(), 0);
    assert_eq!(s.count().unwrap(), 2);
}

fn unicode_round_trips(store: &dyn TestStore) {
    let s = store.open();
    let desc = "Gewinn 📈 für MM1 — 日次損益 🚀";
    let code = "result = '✓ ünïcödé'  # 🐍";
    s.save("emoji", desc, code, "U1", false).unwrap();
    let f = s.get("emoji").unwrap().unwrap();
    assert_eq!(f.description, desc);
    assert_eq!(f.code, code);
    assert_eq!(names(&s.search("📈", 10, 0).unwrap()), ["emoji"]);
    assert_eq!(names(&s.search("日次", 10, 0).unwrap()), ["emoji"]);
    // ASCII letters fold; the non-ASCII ones match in their own case.
    assert_eq!(names(&s.search("GEWINN", 10, 0).unwrap()), ["emoji"]);
    assert_eq!(names(&s.search("für", 10, 0).unwrap()), ["emoji"]);
    let history = s.history("emoji").unwrap();
    assert_eq!(history[0].description, desc);
}

fn saves_make_versions_and_history(store: &dyn TestStore) {
    let s = store.open();
    s.save("f", "one", "a = 1", "U1", false).unwrap();
    s.record_use("f").unwrap();
    let out = s.save("f", "two", "a = 2", "U1", false).unwrap();
    assert!(!out.created);
    assert_eq!(out.function.version, 2);
    assert_eq!(out.function.code, "a = 2");
    assert_eq!(out.function.use_count, 1, "use count kept");
    // Saving the same code again is still a new version.
    assert_eq!(
        s.save("f", "two", "a = 2", "U1", false)
            .unwrap()
            .function
            .version,
        3
    );
    let h = s.history("f").unwrap();
    assert_eq!(
        h.iter()
            .map(|v| (v.version, v.code.as_str(), v.action))
            .collect::<Vec<_>>(),
        [
            (1, "a = 1", VersionAction::Save),
            (2, "a = 2", VersionAction::Save),
            (3, "a = 2", VersionAction::Save)
        ]
    );
    assert!(h
        .iter()
        .all(|v| v.saved_by == "U1" && v.function_id == h[0].function_id));
    assert!(matches!(
        s.history("nope").unwrap_err(),
        StoreError::NotFound { .. }
    ));
}

fn saving_over_another_users_function_needs_admin(store: &dyn TestStore) {
    let s = store.open();
    s.save("f", "", "a = 1", "U1", false).unwrap();
    let err = s.save("f", "", "a = 2", "U2", false).unwrap_err();
    match &err {
        StoreError::NotOwner { name, owner } => {
            assert_eq!((name.as_str(), owner.as_str()), ("f", "U1"));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("U1"));
    assert_eq!(s.get("f").unwrap().unwrap().code, "a = 1");
    assert_eq!(s.history("f").unwrap().len(), 1);

    let f = s.save("f", "", "a = 3", "ADMIN", true).unwrap().function;
    assert_eq!(f.code, "a = 3");
    assert_eq!(f.created_by, "U1", "the creator stays the creator");
    assert_eq!(f.updated_by.as_deref(), Some("ADMIN"));
    assert_eq!(s.history("f").unwrap()[1].saved_by, "ADMIN");
}

fn delete_by_creator_admin_and_other(store: &dyn TestStore) {
    let s = store.open();
    s.save("mine", "", "x", "U1", false).unwrap();
    s.save("theirs", "", "x", "U1", false).unwrap();

    let err = s.delete("mine", "U2", false).unwrap_err();
    assert!(matches!(err, StoreError::NotOwner { ref owner, .. } if owner == "U1"));
    assert!(s.get("mine").unwrap().is_some());

    let f = s.delete("mine", "U1", false).unwrap();
    assert_eq!((f.name.as_str(), f.version), ("mine", 2));
    s.delete("theirs", "ADMIN", true).unwrap();
    assert_eq!(s.count().unwrap(), 0);

    for name in ["mine", "missing"] {
        let err = s.delete(name, "U1", false).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { name: ref n } if n == name));
    }
}

fn deleted_functions_are_hidden_but_kept_in_history(store: &dyn TestStore) {
    let s = store.open();
    s.save("gone", "to delete", "x", "U1", false).unwrap();
    s.save("kept", "", "x", "U1", false).unwrap();
    s.record_use("gone").unwrap();
    s.delete("gone", "U1", false).unwrap();

    assert_eq!(s.get("gone").unwrap(), None);
    assert_eq!(names(&s.list(10, 0).unwrap()), ["kept"]);
    assert!(s.search("delete", 10, 0).unwrap().is_empty());
    assert_eq!(s.search_count("gone").unwrap(), 0);
    assert!(s.suggest("gone", 5).unwrap().is_empty());
    let stats = s.stats().unwrap();
    assert_eq!((stats.total_functions, stats.total_uses), (1, 0));
    assert!(matches!(
        s.record_use("gone").unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert!(matches!(
        s.rename("gone", "back", "U1", false).unwrap_err(),
        StoreError::NotFound { .. }
    ));

    let h = s.history("gone").unwrap();
    assert_eq!(
        h.iter().map(|v| v.action).collect::<Vec<_>>(),
        [VersionAction::Save, VersionAction::Delete]
    );
    assert_eq!(h[1].code, "x");
    assert_eq!(h[1].saved_by, "U1");
}

fn saving_a_deleted_name_revives_it_for_the_new_saver(store: &dyn TestStore) {
    let s = store.open();
    s.save("f", "old", "a = 1", "U1", false).unwrap();
    s.record_use("f").unwrap();
    s.delete("f", "U1", false).unwrap();

    // Anyone may take the name of a deleted function.
    let out = s.save("f", "new", "a = 2", "U2", false).unwrap();
    assert!(out.created);
    let f = out.function;
    assert_eq!(f.created_by, "U2");
    assert_eq!(f.use_count, 0);
    assert_eq!(f.last_used, None);
    assert_eq!(f.version, 3);
    assert_eq!(s.get("f").unwrap(), Some(f.clone()));
    // Now U2 owns it.
    assert!(matches!(
        s.save("f", "", "a = 3", "U1", false).unwrap_err(),
        StoreError::NotOwner { .. }
    ));
    let h = s.history("f").unwrap();
    assert_eq!(
        h.iter()
            .map(|v| (v.version, v.action, v.saved_by.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, VersionAction::Save, "U1"),
            (2, VersionAction::Delete, "U1"),
            (3, VersionAction::Save, "U2")
        ]
    );
    assert!(h.iter().all(|v| v.function_id == f.id));
}

fn rename_rules(store: &dyn TestStore) {
    let s = store.open();
    s.save("old", "d", "x", "U1", false).unwrap();
    s.save("taken", "", "x", "U2", false).unwrap();

    assert!(matches!(
        s.rename("old", "new", "U2", false).unwrap_err(),
        StoreError::NotOwner { .. }
    ));
    assert!(matches!(
        s.rename("old", "taken", "U1", false).unwrap_err(),
        StoreError::NameTaken { ref name } if name == "taken"
    ));
    assert!(matches!(
        s.rename("nope", "new", "U1", false).unwrap_err(),
        StoreError::NotFound { ref name } if name == "nope"
    ));
    assert!(matches!(
        s.rename("old", "", "U1", false).unwrap_err(),
        StoreError::Invalid(_)
    ));
    assert!(matches!(
        s.rename("old", "old", "U1", false).unwrap_err(),
        StoreError::Invalid(_)
    ));

    let f = s.rename("old", "new", "U1", false).unwrap();
    assert_eq!(
        (f.name.as_str(), f.version, f.created_by.as_str()),
        ("new", 2, "U1")
    );
    assert_eq!(s.get("old").unwrap(), None);
    assert_eq!(s.get("new").unwrap(), Some(f.clone()));
    let h = s.history("new").unwrap();
    assert_eq!(
        h.iter()
            .map(|v| (v.name.as_str(), v.action))
            .collect::<Vec<_>>(),
        [("old", VersionAction::Save), ("new", VersionAction::Rename)]
    );
    // The former name still finds the history.
    assert_eq!(s.history("old").unwrap(), h);

    // An admin may rename anyone's function; case-only renames work.
    s.rename("taken", "Taken", "ADMIN", true).unwrap();
    assert!(s.get("Taken").unwrap().is_some());
}

fn rename_onto_a_deleted_name_moves_the_deleted_one_aside(store: &dyn TestStore) {
    let s = store.open();
    let gone = s
        .save("report", "old", "a = 1", "U1", false)
        .unwrap()
        .function;
    s.delete("report", "U1", false).unwrap();
    s.save("draft", "new", "a = 2", "U2", false).unwrap();

    let f = s.rename("draft", "report", "U2", false).unwrap();
    assert_eq!(f.code, "a = 2");
    assert_eq!(s.get("report").unwrap(), Some(f));
    let moved = format!("report~{}", gone.id);
    let h = s.history(&moved).unwrap();
    assert_eq!(
        h.iter().map(|v| v.action).collect::<Vec<_>>(),
        [
            VersionAction::Save,
            VersionAction::Delete,
            VersionAction::Rename
        ]
    );
    assert_eq!(s.get(&moved).unwrap(), None, "still deleted");
    assert_eq!(s.count().unwrap(), 1);
}

fn stats_totals_and_top(store: &dyn TestStore) {
    let s = store.open();
    assert_eq!(
        s.stats().unwrap(),
        Stats {
            total_functions: 0,
            total_uses: 0,
            top: vec![]
        }
    );
    for (name, uses) in [
        ("a", 1),
        ("b", 5),
        ("c", 3),
        ("d", 3),
        ("e", 2),
        ("f", 4),
        ("g", 0),
    ] {
        s.save(name, "", "x", "U1", false).unwrap();
        for _ in 0..uses {
            s.record_use(name).unwrap();
        }
    }
    let stats = s.stats().unwrap();
    assert_eq!(stats.total_functions, 7);
    assert_eq!(stats.total_uses, 18);
    let top: Vec<(&str, u64)> = stats.top.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert_eq!(top, [("b", 5), ("f", 4), ("c", 3), ("d", 3), ("e", 2)]);
}

fn suggest_close_names(store: &dyn TestStore) {
    let s = store.open();
    for name in [
        "daily_pnl",
        "weekly_pnl",
        "volume",
        "fees",
        "volume_by_exchange",
        "x",
    ] {
        s.save(name, "", "x", "U1", false).unwrap();
    }
    assert_eq!(
        s.suggest("Volume", 3).unwrap(),
        ["volume", "volume_by_exchange"]
    );
    assert_eq!(s.suggest("daly_pnl", 3).unwrap(), ["daily_pnl"]);
    assert_eq!(s.suggest("pnl", 5).unwrap(), ["daily_pnl", "weekly_pnl"]);
    assert_eq!(s.suggest("fee", 5).unwrap(), ["fees"]);
    assert_eq!(s.suggest("volmue", 1).unwrap(), ["volume"]);
    assert!(s.suggest("completely_different", 5).unwrap().is_empty());
    assert!(s.suggest("", 5).unwrap().is_empty());
    assert!(s.suggest("fees", 0).unwrap().is_empty());
}

#[test]
fn like_pattern_escapes() {
    assert_eq!(like_pattern("a%b_c\\d"), r"%a\%b\_c\\d%");
    assert_eq!(like_pattern(""), "%%");
}

fn export_import_round_trip_and_idempotency(store: &dyn TestStore) {
    let a = store.open();
    a.save("pnl", "daily 📈", "result = 1", "U1", false)
        .unwrap();
    a.save("pnl", "daily 📈", "result = 2", "U1", false)
        .unwrap();
    a.save("fees", "", "result = 3", "U2", false).unwrap();
    a.save("gone", "", "x", "U2", false).unwrap();
    a.delete("gone", "U2", false).unwrap();
    for _ in 0..4 {
        a.record_use("pnl").unwrap();
    }
    let doc = a.export().unwrap();
    assert_eq!(doc["format"], EXPORT_FORMAT);
    let list = doc["functions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "deleted functions are not exported");
    assert_eq!(list[1]["name"], "pnl");
    assert_eq!(list[1]["versions"].as_array().unwrap().len(), 2);
    assert_eq!(list[1]["versions"][0]["code"], "result = 1");

    // Into an empty store: authorship and counts come along.
    let b = store.another();
    let report = b.import(&doc, "ADMIN").unwrap();
    assert_eq!(report.created, ["fees", "pnl"]);
    assert!(report.updated.is_empty() && report.unchanged.is_empty());
    let pnl = b.get("pnl").unwrap().unwrap();
    let orig = a.get("pnl").unwrap().unwrap();
    assert_eq!(
        (
            &pnl.description,
            &pnl.code,
            &pnl.created_by,
            &pnl.created_at,
            pnl.use_count,
            &pnl.last_used
        ),
        (
            &orig.description,
            &orig.code,
            &orig.created_by,
            &orig.created_at,
            orig.use_count,
            &orig.last_used
        )
    );
    assert_eq!(pnl.version, 1);
    assert_eq!(pnl.updated_by.as_deref(), Some("ADMIN"));
    let h = b.history("pnl").unwrap();
    assert_eq!(
        (h.len(), h[0].action, h[0].saved_by.as_str()),
        (1, VersionAction::Import, "ADMIN")
    );

    // Again: nothing changes.
    let report = b.import(&doc, "ADMIN").unwrap();
    assert_eq!(report.unchanged, ["fees", "pnl"]);
    assert!(report.created.is_empty() && report.updated.is_empty());
    assert_eq!(b.history("pnl").unwrap().len(), 1);

    // Back into the original: unchanged too.
    let report = a.import(&doc, "ADMIN").unwrap();
    assert_eq!(report.unchanged, ["fees", "pnl"]);
    assert_eq!(a.history("pnl").unwrap().len(), 2);

    // A changed code is a new `import` version; creator kept.
    let mut changed = doc.clone();
    changed["functions"][1]["code"] = "result = 42".into();
    let report = b.import(&changed, "ADMIN").unwrap();
    assert_eq!(report.updated, ["pnl"]);
    assert_eq!(report.unchanged, ["fees"]);
    let pnl = b.get("pnl").unwrap().unwrap();
    assert_eq!(
        (pnl.code.as_str(), pnl.version, pnl.created_by.as_str()),
        ("result = 42", 2, "U1")
    );
    assert_eq!(b.history("pnl").unwrap()[1].action, VersionAction::Import);

    // Importing a deleted name revives it.
    b.delete("fees", "ADMIN", true).unwrap();
    let report = b.import(&doc, "ADMIN").unwrap();
    assert_eq!(report.created, ["fees"]);
    assert_eq!(b.get("fees").unwrap().unwrap().created_by, "U2");

    // A minimal document works; the importer becomes the creator.
    let minimal = serde_json::json!({"functions": [{"name": "m", "code": "x"}]});
    assert_eq!(b.import(&minimal, "U9").unwrap().created, ["m"]);
    let m = b.get("m").unwrap().unwrap();
    assert_eq!((m.created_by.as_str(), m.description.as_str()), ("U9", ""));
}

fn import_validates_the_shape(store: &dyn TestStore) {
    let s = store.open();
    let cases = [
        (serde_json::json!([]), "\"functions\" array"),
        (serde_json::json!({}), "no \"functions\""),
        (serde_json::json!({"functions": {}}), "must be an array"),
        (
            serde_json::json!({"format": "other", "functions": []}),
            "\"format\"",
        ),
        (
            serde_json::json!({"format_version": 2, "functions": []}),
            "not supported",
        ),
        (
            serde_json::json!({"functions": [1]}),
            "functions[0] must be an object",
        ),
        (
            serde_json::json!({"functions": [{"code": "x"}]}),
            "\"name\" must be a string",
        ),
        (
            serde_json::json!({"functions": [{"name": "", "code": "x"}]}),
            "name is empty",
        ),
        (
            serde_json::json!({"functions": [{"name": "a".repeat(65), "code": "x"}]}),
            "at most 64",
        ),
        (
            serde_json::json!({"functions": [{"name": "a"}]}),
            "\"code\" must be a non-empty string",
        ),
        (
            serde_json::json!({"functions": [{"name": "a", "code": 3}]}),
            "\"code\"",
        ),
        (
            serde_json::json!({"functions": [{"name": "a", "code": "x", "description": 5}]}),
            "\"description\" must be a string",
        ),
        (
            serde_json::json!({"functions": [{"name": "a", "code": "x", "use_count": -1}]}),
            "\"use_count\"",
        ),
        (
            serde_json::json!({"functions": [{"name": "a", "code": "x", "created_at": "yesterday"}]}),
            "\"created_at\"",
        ),
        (
            serde_json::json!({"functions": [{"name": "a", "code": "x", "created_by": ""}]}),
            "\"created_by\" is empty",
        ),
        (
            serde_json::json!({"functions": [{"name": "a", "code": "x"}, {"name": "a", "code": "y"}]}),
            "more than once",
        ),
    ];
    for (doc, want) in cases {
        let err = s.import(&doc, "ADMIN").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Invalid(_)), "{text}");
        assert!(
            text.starts_with("import: ") && text.contains(want),
            "{text} / {want}"
        );
    }
    // All or nothing: a bad entry after a good one keeps nothing.
    let doc = serde_json::json!({"functions": [{"name": "good", "code": "x"}, {"name": "bad"}]});
    assert!(s.import(&doc, "ADMIN").is_err());
    assert_eq!(s.count().unwrap(), 0);
}

fn parallel_record_use_is_exact(store: &dyn TestStore) {
    let s = store.open();
    s.save("hot", "", "x", "U1", false).unwrap();
    let barrier = Barrier::new(10);
    let mut seen: Vec<u64> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let other = store.open();
                    barrier.wait();
                    let mut seen = Vec::new();
                    for _ in 0..10 {
                        seen.push(other.record_use("hot").unwrap().use_count);
                    }
                    seen
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=100).collect::<Vec<_>>(),
        "every count returned once"
    );
    assert_eq!(s.get("hot").unwrap().unwrap().use_count, 100);
}

fn one_store_shared_between_threads(store: &dyn TestStore) {
    let s = store.open();
    let s = Arc::new(s);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                s.save(&format!("f{i}"), "", "x", "U1", false).unwrap();
                for _ in 0..5 {
                    s.record_use(&format!("f{i}")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = s.stats().unwrap();
    assert_eq!((stats.total_functions, stats.total_uses), (8, 40));
}

fn parallel_saves_of_one_new_name_create_it_once(store: &dyn TestStore) {
    let barrier = Barrier::new(8);
    let outcomes: Vec<SaveOutcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let other = store.open();
                    barrier.wait();
                    other
                        .save("race", "", &format!("v = {i}"), "U1", false)
                        .unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|o| o.created).count(), 1);
    let mut versions: Vec<u32> = outcomes.iter().map(|o| o.function.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
}

#[test]
fn locked_file_gives_locked_not_a_panic() {
    let (_dir, path, s) = setup();
    s.save("f", "", "x", "U1", false).unwrap();

    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    // A store opened while the lock is held still opens and reads.
    let other = FunctionStore::open(&path).unwrap();
    assert!(other.get("f").unwrap().is_some());
    let started = Instant::now();
    let err = other.save("g", "", "y", "U1", false).unwrap_err();
    assert!(err.is_locked(), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "waited for the busy timeout"
    );
    assert!(err.to_string().contains("locked"));
    assert!(s.record_use("f").unwrap_err().is_locked());

    blocker.execute_batch("ROLLBACK").unwrap();
    other.save("g", "", "y", "U1", false).unwrap();
    assert_eq!(s.count().unwrap(), 2);
    assert_eq!(
        s.get("f").unwrap().unwrap().use_count,
        0,
        "the failed use left nothing"
    );
    let check: String = blocker
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn migrates_a_table_of_the_original_bot() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("trade_cache.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE saved_functions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT UNIQUE NOT NULL,
                description TEXT,
                code TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at TEXT NOT NULL,
                last_used TEXT,
                use_count INTEGER DEFAULT 0
            );
            INSERT INTO saved_functions (name, description, code, created_by, created_at, last_used, use_count)
            VALUES ('legacy', NULL, 'result = 1', 'U0', '2025-10-08T14:26:45.123456', NULL, NULL),
                   ('used', 'd', 'result = 2', 'U0', '2025-10-09T10:00:00', '2025-10-10T10:00:00', 7);",
        )
        .unwrap();
    }
    let s = FunctionStore::open(&path).unwrap();
    let legacy = s.get("legacy").unwrap().unwrap();
    assert_eq!(
        (
            legacy.description.as_str(),
            legacy.use_count,
            legacy.version,
            legacy.updated_by
        ),
        ("", 0, 1, None)
    );
    let h = s.history("used").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (
            h[0].version,
            h[0].action,
            h[0].saved_by.as_str(),
            h[0].saved_at.as_str()
        ),
        (1, VersionAction::Save, "U0", "2025-10-09T10:00:00")
    );
    assert_eq!(s.record_use("legacy").unwrap().use_count, 1);
    assert_eq!(
        s.save("used", "d", "result = 3", "U0", false)
            .unwrap()
            .function
            .version,
        2
    );
    assert_eq!(names(&s.list(10, 0).unwrap()), ["used", "legacy"]);
    drop(s);
    // Opening again finds nothing to do.
    let s = FunctionStore::open(&path).unwrap();
    assert_eq!(s.history("used").unwrap().len(), 2);
}

/// The original bot's store files: the repository's fixture (with its
/// expected trade count), and the real data too when `TRADEBOX_FIXTURES`
/// points at a cex-reporter folder.
fn original_stores() -> Vec<(PathBuf, Option<i64>)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cex-reporter");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("expected.json")).unwrap())
            .unwrap();
    let mut stores = vec![(repo, expected["trades"]["count"].as_i64())];
    if let Some(real) = std::env::var_os("TRADEBOX_FIXTURES") {
        stores.push((PathBuf::from(real), None));
    }
    stores
}

#[test]
fn opens_a_copy_of_the_original_trade_cache() {
    use crate::audit::AuditLog;
    for (folder, expected) in original_stores() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("trade_cache.db");
        std::fs::copy(folder.join("trade_cache.db"), &path).unwrap();
        let original: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM trades", [], |r| r.get(0))
            .unwrap();
        assert!(original > 0);
        if let Some(expected) = expected {
            assert_eq!(original, expected, "{}", folder.display());
        }
        let s = FunctionStore::open(&path).unwrap();
        let audit = AuditLog::open(&path).unwrap();
        s.save("pnl", "", "result = 1", "U1", false).unwrap();
        assert_eq!(s.count().unwrap(), 1);
        assert_eq!(audit.count().unwrap(), 0);
        let trades = tradebox_data::Store::open(&path).unwrap();
        assert_eq!(trades.trade_count().unwrap(), original as u64);
    }
}

#[test]
fn coexists_with_the_trade_store_and_the_audit_log() {
    use crate::audit::{Action, AuditEntry, AuditLog, Outcome, Source};
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("home").join("tradebox.db");
    let trades = tradebox_data::Store::open(&path).unwrap();
    let functions = FunctionStore::open(&path).unwrap();
    let audit = AuditLog::open(&path).unwrap();

    let f = functions.save("f", "", "x", "U1", false).unwrap().function;
    let mut entry = AuditEntry::new("U1", Source::Cli, Action::Savefunc, Outcome::Ok);
    entry.function_name = Some(f.name.clone());
    entry.function_version = Some(f.version);
    audit.record(&entry).unwrap();
    assert_eq!(trades.trade_count().unwrap(), 0);
    drop(trades);

    // Reopened in the other order, everything is still there.
    let audit = AuditLog::open(&path).unwrap();
    let functions2 = FunctionStore::open(&path).unwrap();
    let mut trades = tradebox_data::Store::open(&path).unwrap();
    trades.write(|w| w.clear()).unwrap();
    assert_eq!(functions2.count().unwrap(), 1);
    assert_eq!(audit.count().unwrap(), 1);
    let conn = Connection::open(&path).unwrap();
    for table in [
        "trades",
        "balance_snapshots",
        "saved_functions",
        "function_versions",
        "audit_log",
    ] {
        assert!(objects_exist(&conn, &[table]).unwrap(), "{table}");
    }
}

/// Everything of a store but its ids: each function (and when deleted) with
/// its versions.
fn snapshot_of(s: &FunctionStore) -> Vec<(Function, Option<String>, Vec<VersionRecord>)> {
    s.read(|rows| {
        let mut out = Vec::new();
        for (mut f, deleted) in rows.everything()? {
            let mut versions = rows.versions(f.id)?;
            f.id = 0;
            for v in &mut versions {
                v.function_id = 0;
            }
            out.push((f, deleted, versions));
        }
        Ok(out)
    })
    .unwrap()
}

#[test]
fn copy_into_moves_every_function_and_its_history_between_backends() {
    let dir = TempDir::new().unwrap();
    let cluster = PgCluster::start().unwrap();
    let sqlite = FunctionStore::open(dir.path().join("a.db")).unwrap();
    sqlite
        .save("pnl", "daily 📈", "result = 1", "U1", false)
        .unwrap();
    sqlite
        .save("pnl", "daily 📈", "result = 2", "U1", false)
        .unwrap();
    sqlite.save("fees", "", "result = 3", "U2", false).unwrap();
    sqlite.rename("fees", "fees_paid", "U2", false).unwrap();
    sqlite.save("gone", "", "x", "U2", false).unwrap();
    sqlite.delete("gone", "U2", false).unwrap();
    for _ in 0..3 {
        sqlite.record_use("pnl").unwrap();
    }
    let want = snapshot_of(&sqlite);
    assert_eq!(want.len(), 3);
    assert!(want.iter().any(|(f, d, _)| f.name == "gone" && d.is_some()));

    // SQLite to PostgreSQL, and back into another SQLite file.
    let pg = FunctionStore::open_postgres(&cluster.database().unwrap()).unwrap();
    assert_eq!(sqlite.copy_into(&pg).unwrap(), (3, 6));
    assert_eq!(snapshot_of(&pg), want);
    let back = FunctionStore::open(dir.path().join("b.db")).unwrap();
    assert_eq!(pg.copy_into(&back).unwrap(), (3, 6));
    assert_eq!(snapshot_of(&back), want);
    // The copies work as stores: the deleted name can be saved again.
    assert!(back.save("gone", "", "y", "U3", false).unwrap().created);
    assert_eq!(back.get("pnl").unwrap().unwrap().use_count, 3);

    // Never into a store that holds functions: nothing written.
    let err = sqlite.copy_into(&pg).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(snapshot_of(&pg), want);
}
