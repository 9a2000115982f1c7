//! The console's HTTP API over the wire: a real `tradebox serve` (real
//! pipeline, real sandbox pool, real SQLite) on the fixture data,
//! spoken to with plain HTTP/1.1 over TCP (so Host headers and bodies are
//! exactly what the test says). The guard's finer cases are tested in
//! process in crates/web/tests/router.rs; the browser in console_e2e.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};

use common::{http, Answer};

struct Api<'a> {
    server: &'a common::Server,
}

impl Api<'_> {
    fn auth(&self) -> String {
        format!("Bearer {}", self.server.token)
    }

    fn get(&self, path: &str) -> Answer {
        http(
            &self.server.base,
            "GET",
            path,
            &[("Authorization", &self.auth())],
            b"",
        )
    }

    fn post(&self, path: &str, body: &Value) -> Answer {
        http(
            &self.server.base,
            "POST",
            path,
            &[
                ("Authorization", &self.auth()),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }
}

fn serve(home: &std::path::Path, env: &[(&str, &str)]) -> common::Server {
    let mut all = vec![
        ("TRADEBOX_DATA_AS_OF", "latest"),
        ("TRADEBOX_CONSOLE_USER", "deskops"),
        ("RUST_LOG", "debug"),
    ];
    all.extend_from_slice(env);
    common::serve(home, &all, &["--no-demo"])
}

/// Decodes standard base64 (padded), as the API sends it.
fn b64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digits: Vec<u32> = text
        .bytes()
        .filter(|b| *b != b'=')
        .map(|b| ALPHABET.iter().position(|a| *a == b).expect("base64 digit") as u32)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | d << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

// ---------------------------------------------------------------------------

#[test]
fn the_guard_over_the_wire() {
    let home = common::fixture_home();
    let server = serve(home.path(), &[]);
    let api = Api { server: &server };
    let base = &server.base;

    // 401: no token, a wrong one.
    let a = http(base, "GET", "/api/v1/functions", &[], b"");
    assert_eq!(a.status, 401);
    assert!(a.json()["error"].as_str().unwrap().contains("Bearer"));
    let a = http(
        base,
        "POST",
        "/api/v1/run",
        &[
            ("Authorization", "Bearer not-the-token"),
            ("Content-Type", "application/json"),
        ],
        br#"{"code": "result = 1"}"#,
    );
    assert_eq!(a.status, 401);

    // 403: a Host that is not this server's (DNS rebinding), token or not.
    let port = base.rsplit(':').next().unwrap();
    for host in [format!("attacker.example:{port}"), "127.0.0.1:1".into()] {
        let a = http(
            base,
            "GET",
            "/api/v1/functions",
            &[("Host", &host), ("Authorization", &api.auth())],
            b"",
        );
        assert_eq!(a.status, 403, "{host}");
        assert!(a.json()["error"].as_str().unwrap().contains("Host"));
    }
    // localhost:PORT is this server too.
    let a = http(
        base,
        "GET",
        "/api/v1/functions",
        &[
            ("Host", &format!("localhost:{port}")),
            ("Authorization", &api.auth()),
        ],
        b"",
    );
    assert_eq!(a.status, 200);

    // 400 naming the field.
    let a = api.post("/api/v1/run", &json!({"timeout": 5}));
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        json!({"error": "missing field `code`", "field": "code"})
    );
    let a = api.post("/api/v1/commands", &json!({"user": "U1", "text": ["x"]}));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["field"], "text");

    // 413 past the default limit (8 MiB), as JSON, before the body is read.
    let length = (tradebox_web::DEFAULT_MAX_BODY + 1).to_string();
    let a = http(
        base,
        "POST",
        "/api/v1/data/import?name=big.csv",
        &[("Authorization", &api.auth()), ("Content-Length", &length)],
        b"",
    );
    assert_eq!(a.status, 413);
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("8388608 bytes"));

    // The cookie login: the token leaves the address.
    let a = http(
        base,
        "GET",
        &format!("/data?token={}", server.token),
        &[],
        b"",
    );
    assert_eq!(a.status, 303);
    assert_eq!(a.header("location"), Some("/data"));
    let cookie = a
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http(base, "GET", "/data", &[("Cookie", &cookie)], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("data-page=\"data\""));
    assert!(page.header("access-control-allow-origin").is_none());

    // The token never reaches the log, even at debug level.
    let log = server.stderr();
    assert!(log.contains("console request"), "request log is on: {log}");
    assert!(!log.contains(&server.token), "the token was logged:\n{log}");
}

#[test]
fn run_answers_like_tradebox_run_json() {
    let home = common::fixture_home();
    let server = serve(home.path(), &[]);
    let api = Api { server: &server };

    let a = api.post(
        "/api/v1/run",
        &json!({"code": "df = load_trades(days=None)\nprint(len(df))\nresult = df.groupby('exchange')['amount'].sum()"}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    common::assert_run_fields(&v);
    assert_eq!(v["success"], true);
    assert_eq!(v["output"], format!("{}\n", common::trade_count()));
    let result = v["result"].as_str().unwrap();
    for exchange in common::strings(&common::expected()["trades"]["exchanges"]) {
        assert!(result.contains(&exchange), "{exchange}: {result}");
    }
    assert_eq!(v["error"], Value::Null);

    // A chart comes back inline, as base64 PNG.
    let a = api.post(
        "/api/v1/run",
        &json!({"code": "df = load_trades(days=None)\ndf.set_index('timestamp')['price'].plot()\nresult = 'ok'"}),
    );
    let v = a.json();
    assert_eq!(v["success"], true, "{v}");
    let artifact = &v["artifacts"][0];
    assert_eq!(artifact["kind"], "png");
    assert_eq!(artifact["mime"], "image/png");
    let bytes = b64(artifact["data"].as_str().unwrap());
    assert!(bytes.starts_with(PNG));
    assert_eq!(artifact["size"].as_u64().unwrap() as usize, bytes.len());
    assert!(artifact.get("path").is_none());

    // Code that raises is a failed result, not an HTTP error.
    let v = api
        .post("/api/v1/run", &json!({"code": "result = 1 / 0"}))
        .json();
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["type"], "ZeroDivisionError");
    // The validator's refusal reads as `tradebox run --json` gives it.
    let v = api
        .post("/api/v1/run", &json!({"code": "import subprocess"}))
        .json();
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["type"], "ValidationError");
    // `timeout` shortens the limit.
    let a = api.post(
        "/api/v1/run",
        &json!({"code": "while True:\n    pass", "timeout": 1.5}),
    );
    let v = a.json();
    assert_eq!(v["error"]["type"], "Timeout", "{v}");
    assert!(v["execution_time_ms"].as_u64().unwrap() < 10_000);

    // Every run is audited as the console user, source api.
    let audit = api.get("/api/v1/audit?user=deskops&action=analyze").json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{audit}");
    assert!(entries.iter().all(|e| e["source"] == "api"));
    assert_eq!(entries[0]["outcome"], "timeout");
    assert_eq!(entries[3]["outcome"], "ok");
    assert_eq!(entries[1]["outcome"], "refused_validation");
    let errors = api.get("/api/v1/audit?outcome=error").json();
    assert_eq!(errors["count"], 1);
    assert_eq!(errors["entries"][0]["error_type"], "ZeroDivisionError");
}

#[test]
fn the_rate_limit_is_429_with_retry_after() {
    let home = common::fixture_home();
    let server = serve(home.path(), &[("TRADEBOX_RATE_LIMIT_EXECUTIONS", "2")]);
    let api = Api { server: &server };
    for _ in 0..2 {
        assert_eq!(
            api.post("/api/v1/run", &json!({"code": "result = 1"}))
                .status,
            200
        );
    }
    let a = api.post("/api/v1/run", &json!({"code": "result = 1"}));
    assert_eq!(a.status, 429, "{}", a.text());
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Rate limit exceeded"));
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let refused = api.get("/api/v1/audit?outcome=refused_rate_limit").json();
    assert_eq!(refused["count"], 1);
}

#[test]
fn commands_functions_and_audit() {
    let home = common::fixture_home();
    let server = serve(home.path(), &[]);
    let api = Api { server: &server };
    let command = |user: &str, text: &str| {
        let a = api.post(
            "/api/v1/commands",
            &json!({"user": user, "channel": "C42", "text": text}),
        );
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    };

    // /analyze with a chart: the reply model, files inline.
    let reply = command(
        "U1",
        "/analyze df = load_trades(days=None)\ndf.groupby('exchange')['amount'].sum().plot.bar()\nresult = len(df)",
    );
    assert_eq!(reply["error"], false);
    assert_eq!(
        reply["blocks"][0],
        json!({"type": "header", "text": "Analysis Result"})
    );
    assert_eq!(reply["blocks"][1]["type"], "result");
    assert_eq!(
        reply["blocks"][1]["text"],
        common::trade_count().to_string()
    );
    let image = reply["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "image")
        .unwrap();
    let file = &reply["files"][0];
    assert_eq!(image["file"], file["name"]);
    assert!(b64(file["data"].as_str().unwrap()).starts_with(PNG));
    assert!(
        reply["blocks"].as_array().unwrap().last().unwrap()["items"][0]
            .as_str()
            .unwrap()
            .ends_with("by <@U1>")
    );

    // Save, run, list, delete.
    let saved = command(
        "U1",
        "/savefunc by_account | Volume by account | result = load_trades(days=None).groupby('account_name')['amount'].sum()",
    );
    assert!(saved["blocks"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Saved Function"));
    let ran = command("U2", "/runfunc by_account");
    assert_eq!(ran["blocks"][0]["text"], "by_account");
    let by_account = ran["blocks"][2]["text"].as_str().unwrap();
    for account in common::strings(&common::expected()["trades"]["accounts"]) {
        assert!(by_account.contains(&account), "{account}: {by_account}");
    }
    let listed = command("U2", "/listfuncs account");
    let button = &listed["blocks"][1]["button"];
    assert_eq!(button["action_id"], "run_func_by_account");

    let functions = api.get("/api/v1/functions?q=account").json();
    assert_eq!(functions["total"], 1);
    assert_eq!(functions["functions"][0]["use_count"], 1);
    assert_eq!(functions["functions"][0]["created_by"], "U1");
    let detail = api.get("/api/v1/functions/by_account").json();
    assert_eq!(detail["history"][0]["action"], "save");

    let refused = command("U2", "/delfunc by_account");
    assert_eq!(refused["error"], true);
    assert_eq!(refused["visibility"], "ephemeral");
    let deleted = command("U1", "/delfunc by_account");
    assert_eq!(deleted["error"], false);
    assert_eq!(api.get("/api/v1/functions").json()["total"], 0);

    // The audit trail, filtered.
    let all = api.get("/api/v1/audit").json();
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{all}");
    assert!(entries
        .iter()
        .all(|e| e["source"] == "api" && e["channel"] == "C42"));
    let u2 = api.get("/api/v1/audit?user=U2").json();
    assert_eq!(u2["count"], 2);
    let refused = api
        .get("/api/v1/audit?user=U2&outcome=refused_permission")
        .json();
    assert_eq!(refused["count"], 1);
    assert_eq!(refused["entries"][0]["action"], "delfunc");
    assert_eq!(api.get("/api/v1/audit?limit=1").json()["count"], 1);
}

#[test]
fn the_console_streams_the_placeholder_then_the_reply() {
    let home = common::fixture_home();
    let server = serve(home.path(), &[]);
    let base = &server.base;
    let login = http(base, "GET", &format!("/?token={}", server.token), &[], b"");
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http(base, "GET", "/", &[("Cookie", &cookie)], b"").text();
    let start = page.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    let csrf = &page[start..start + 64];
    let body =
        json!({"text": "/analyze result = load_trades(days=None)['amount'].count()"}).to_string();
    let a = http(
        base,
        "POST",
        "/console/command",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", csrf),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
    let events: Vec<Value> = a
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "placeholder");
    assert_eq!(
        events[0]["reply"]["blocks"][0]["text"],
        ":hourglass_flowing_sand: Analyzing..."
    );
    assert_eq!(events[1]["event"], "reply");
    assert_eq!(
        events[1]["reply"]["blocks"][1]["text"],
        common::trade_count().to_string()
    );
    // Audited as the console user, source console.
    let audit = Api { server: &server }.get("/api/v1/audit").json();
    assert_eq!(audit["entries"][0]["user_id"], "deskops");
    assert_eq!(audit["entries"][0]["source"], "console");
    // Without the CSRF header the same request is refused.
    let a = http(
        base,
        "POST",
        "/console/command",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(a.status, 403);
}

#[test]
fn data_and_openapi() {
    let home = common::fixture_home();
    let server = serve(home.path(), &[]);
    let api = Api { server: &server };
    let info = api.get("/api/v1/data").json();
    let want = &common::expected()["trades"];
    assert_eq!(info["trades"], want["count"]);
    assert_eq!(info["snapshots"], common::expected()["snapshots"]["count"]);
    assert!(info["first_trade"]
        .as_str()
        .unwrap()
        .starts_with(want["first_date"].as_str().unwrap()));
    assert!(info["last_trade"]
        .as_str()
        .unwrap()
        .starts_with(want["last_date"].as_str().unwrap()));
    assert_eq!(
        info["by_exchange"].as_object().unwrap().len(),
        want["exchanges"].as_array().unwrap().len()
    );
    assert_eq!(info["snapshot"]["version"], 1);

    // An uploaded CSV is imported and the sandbox moves to the new snapshot.
    let csv = "timestamp,exchange,account,symbol,side,amount,price\n2025-11-30T12:00:00Z,kraken,API,ALKIMI,buy,7,0.05\n";
    let a = http(
        &server.base,
        "POST",
        "/api/v1/data/import?name=extra.csv",
        &[("Authorization", &api.auth())],
        csv.as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["snapshot"]["version"], 2);
    let v = api
        .post(
            "/api/v1/run",
            &json!({"code": "result = len(load_trades(days=None))"}),
        )
        .json();
    assert_eq!(v["result"], (common::trade_count() + 1).to_string(), "{v}");

    let doc = api.get("/api/v1/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/run",
        "/api/v1/commands",
        "/api/v1/functions",
        "/api/v1/audit",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
}

/// A sample's value in a metrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn probes_and_metrics_over_the_wire() {
    let home = common::fixture_home();
    let server = serve(home.path(), &[]);
    let api = Api { server: &server };
    let probe = |path: &str| {
        http(
            &server.base,
            "GET",
            path,
            &[("Host", "tradebox.internal:9000")],
            b"",
        )
    };
    let a = probe("/healthz");
    assert_eq!((a.status, a.text().as_str()), (200, "ok\n"));
    // Ready once serve has said so: every worker up, the store answering,
    // the published snapshot served.
    let a = probe("/readyz");
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["ready"], true);
    let workers = v["checks"]["pool"]["detail"].as_str().unwrap().to_string();
    assert!(workers.ends_with("workers up"), "{v}");
    assert!(
        v["checks"]["snapshot"]["detail"]
            .as_str()
            .unwrap()
            .ends_with(" served"),
        "{v}"
    );

    // Metrics: behind the token; one answered run and one refused by the
    // validator are counted, and the pool's gauges are read live.
    assert_eq!(http(&server.base, "GET", "/metrics", &[], b"").status, 401);
    let a = api.post("/api/v1/run", &json!({"code": "result = 1 + 1"}));
    assert_eq!(a.status, 200, "{}", a.text());
    let a = api.post("/api/v1/run", &json!({"code": "result = ("}));
    assert_eq!(a.json()["error"]["type"], "ValidationError", "{}", a.text());
    let a = api.get("/metrics");
    assert_eq!(a.status, 200);
    let text = a.text();
    let ok = "tradebox_commands_total{action=\"analyze\",source=\"api\",outcome=\"ok\"}";
    assert_eq!(sample(&text, ok), 1.0);
    assert_eq!(
        sample(&text, "tradebox_refusals_total{kind=\"validation\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "tradebox_command_duration_seconds_count{action=\"analyze\"}"
        ),
        1.0
    );
    let workers = sample(&text, "tradebox_workers");
    assert!(workers >= 1.0, "{text}");
    assert_eq!(sample(&text, "tradebox_workers_up"), workers);
    assert!(sample(&text, "tradebox_jobs") >= 1.0, "{text}");
    let published = sample(&text, "tradebox_snapshot_published_version");
    assert!(published >= 1.0, "{text}");
    assert_eq!(sample(&text, "tradebox_snapshot_served_version"), published);
    assert_eq!(sample(&text, "tradebox_snapshot_lag_seconds"), 0.0);
    assert_eq!(sample(&text, "tradebox_zygote_restarts"), 0.0);
}
