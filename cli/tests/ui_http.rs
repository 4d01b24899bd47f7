#![allow(clippy::unwrap_used)]
//! `braid ui` over HTTP: every page and API document for real runs, and each security
//! rule (loopback by default, token off loopback, CSRF on actions, escaping, malformed
//! and traversal paths as 4xx pages, never 5xx).

mod ui_support;

use std::process::Command;

use ui_support::*;

fn fixture(n: u64) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), n);
    let base = serve(&store, None);
    (dir, store, base)
}

#[test]
fn every_page_and_api_document_loads_for_a_real_run() {
    let (_dir, store, base) = fixture(30);
    let a = agent();
    let runs = braid_json(&store, &["runs", "fanout"]);
    let run = runs[0]["id"].as_str().unwrap().to_owned();

    let (s, body) = get(&a, &format!("{base}/"));
    assert_eq!(s, 200);
    assert!(body.contains(&run) && body.contains("data_sync_hourly_site1"), "runs list names the runs");
    let (s, body) = get(&a, &format!("{base}/?flow=data_sync&name=data_sync_hourly_site2"));
    assert_eq!(s, 200);
    assert_eq!(body.matches("data_sync_hourly_site2").count(), 3 + 1, "3 runs (and the filter field)");
    assert!(!body.contains("data_sync_hourly_site1"));

    let (s, body) = get(&a, &format!("{base}/runs/fanout/{run}"));
    assert_eq!(s, 200);
    assert!(body.contains("<svg class=\"dag\"") && body.contains("<svg class=\"timeline\""), "DAG and timeline");
    assert!(body.contains("30/30 ok") && body.contains("foreach items"));
    let (s, body) = get(&a, &format!("{base}/runs/fanout/latest/work"));
    assert_eq!(s, 200);
    assert!(body.contains("id=\"grid\"") && body.contains("30 branch(es)"));
    let (s, _) = get(&a, &format!("{base}/runs/fanout/latest/work?index=7"));
    assert_eq!(s, 303, "jump by index redirects to the task");
    let (s, body) = get(&a, &format!("{base}/runs/fanout/latest/join"));
    assert_eq!(s, 200, "{body}");

    let (s, grid) = get(&a, &format!("{base}/api/v1/runs/fanout/latest/steps/work/grid"));
    assert_eq!(s, 200);
    let grid: serde_json::Value = serde_json::from_str(&grid).unwrap();
    assert_eq!(grid["count"], 30);
    assert_eq!(grid["cells"].as_str().unwrap().len(), 30);
    assert_eq!(grid["ranges"].as_array().unwrap().len(), 1, "one run of consecutive ids and indexes");
    let first = grid["ranges"][0][0].as_u64().unwrap();

    let (s, body) = get(&a, &format!("{base}/runs/fanout/latest/work/{}", first + 7));
    assert_eq!(s, 200);
    assert!(body.contains("start[7 of 30]") && body.contains("squaring 7"), "task page: foreach and log");
    assert!(body.contains(">out<") && body.contains(">49<"), "artifact preview");

    let (s, t) = get(&a, &format!("{base}/api/v1/runs/fanout/latest/steps/work/index/7"));
    assert_eq!(s, 200);
    let t: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(t["task"]["index"], 7);
    assert_eq!(t["attempts"].as_array().unwrap().len(), 1);
    let task = t["task"]["id"].as_u64().unwrap();
    let mut r = a.get(&format!("{base}/api/v1/runs/fanout/latest/tasks/{task}/artifacts/out/value")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    assert!(r.body_mut().read_to_vec().unwrap().starts_with(b"BRAF"), "the stored envelope");
    let (s, a_doc) = get(&a, &format!("{base}/api/v1/runs/fanout/latest/tasks/{task}/artifacts/out"));
    assert_eq!(s, 200);
    assert!(a_doc.contains("\"preview\":49"));
    let (s, logs) = get(&a, &format!("{base}/api/v1/runs/fanout/latest/tasks/{task}/logs?after=0"));
    assert_eq!(s, 200);
    assert!(logs.contains("squaring 7"));

    for path in [
        "/api/v1/flows",
        "/api/v1/runs?limit=2",
        "/api/v1/runs/fanout/latest",
        "/api/v1/runs/fanout/latest/steps/work/tasks?limit=5",
        "/api/v1/plans",
        "/api/v1/plans/data_sync_hourly",
        "/api/v1/plans/data_sync_hourly/matrix",
        "/api/v1/openapi.json",
        "/metrics",
        "/plans",
        "/plans/data_sync_hourly",
        "/assets/app.js",
        "/assets/style.css",
    ] {
        let (s, body) = get(&a, &format!("{base}{path}"));
        assert_eq!(s, 200, "{path}: {body}");
    }
    let (_, m) = get(&a, &format!("{base}/api/v1/plans/data_sync_hourly/matrix"));
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["rows"].as_array().unwrap().len(), 3, "a row per site");
    assert_eq!(m["ticks"].as_array().unwrap().len(), 3, "a column per tick");
    assert_eq!(m["rows"][0]["cells"][0]["status"], "succeeded");
    let (_, metrics) = get(&a, &format!("{base}/metrics"));
    assert!(
        metrics.contains("braid_ui_requests_total{method=\"GET\",route=\"/runs/{flow}/{run}\",status=\"200\"}"),
        "{metrics}"
    );
}

#[test]
fn runs_are_paged_newest_first_across_flows() {
    let (_dir, _store, base) = fixture(3);
    let a = agent();
    let mut seen = Vec::new();
    let mut url = format!("{base}/api/v1/runs?limit=4");
    loop {
        let (s, body) = get(&a, &url);
        assert_eq!(s, 200);
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for r in page["items"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => url = format!("{base}/api/v1/runs?limit=4&after={n}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 11, "1 fanout + 9 data_sync + 1 evil");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    let (_, body) = get(&a, &format!("{base}/api/v1/runs?status=failed"));
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, body) = get(&a, &format!("{base}/api/v1/runs?plan=data_sync_hourly&since=2000-01-01&limit=500"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"].as_array().unwrap().len(), 9);
    let (_, body) = get(&a, &format!("{base}/api/v1/runs?until=2000-01-01"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"].as_array().unwrap().len(), 0);
}

#[test]
fn it_binds_loopback_by_default_and_refuses_a_public_address_without_a_token() {
    let help = Command::new(env!("CARGO_BIN_EXE_braid")).args(["ui", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("[default: 127.0.0.1:8080]"));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    braid_store::Store::open_fs(&store).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(&store)
        .args(["ui", "--addr", "0.0.0.0:0"])
        .env_remove("BRAID_UI_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address") && err.contains("--token"), "{err}");
}

#[test]
fn with_a_token_every_request_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), 2);
    let token = "s3cret-token-0123456789";
    let base = serve(&store, Some(token));
    let a = agent();
    for path in ["/", "/api/v1/runs", "/metrics", "/assets/app.js", "/api/v1/openapi.json", "/events/runs", "/nope"] {
        let (s, _) = get(&a, &format!("{base}{path}"));
        assert_eq!(s, 401, "{path} without the token");
    }
    let (s, body) = get(&a, &format!("{base}/api/v1/runs"));
    assert_eq!(s, 401);
    assert!(body.contains("\"error\":\"unauthorized\""), "the API answers JSON: {body}");
    let (s, _) = get(&a, &format!("{base}/api/v1/runs?token=wrong-token-000000000"));
    assert_eq!(s, 401);
    let r =
        a.get(&format!("{base}/api/v1/runs")).header("Authorization", "Bearer wrong-token-00000000").call().unwrap();
    assert_eq!(r.status(), 401);
    let r = a.get(&format!("{base}/api/v1/runs")).header("Authorization", &format!("Bearer {token}")).call().unwrap();
    assert_eq!(r.status(), 200);
    let r = a.get(&format!("{base}/plans?token={token}&label=team%3Dsync")).call().unwrap();
    assert_eq!(r.status(), 303, "?token= sets the cookie and redirects");
    assert_eq!(r.headers()["location"], "/plans?label=team%3Dsync", "the token leaves the URL");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap();
    let r = a.get(&format!("{base}/plans")).header("Cookie", pair).call().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn actions_need_a_post_with_the_csrf_token_from_this_site() {
    let (_dir, store, base) = fixture(2);
    let a = agent();
    let (_, page) = get(&a, &format!("{base}/plans/data_sync_hourly"));
    let csrf = csrf_of(&page);
    let url = format!("{base}/plans/data_sync_hourly/deactivate");
    let active = || braid_json(&store, &["plan", "list"])[0]["active"].as_bool().unwrap();
    assert!(active());

    let (s, _) = get(&a, &url);
    assert_eq!(s, 405, "a GET changes nothing");
    let post = |body: String, headers: &[(&str, &str)]| {
        let mut req = a.post(&url).header("Content-Type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.send(body).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    };
    let (s, body) = post(String::new(), &[]);
    assert_eq!(s, 403, "no token");
    assert!(body.contains("CSRF token is missing or wrong"), "{body}");
    let (s, _) = post("csrf=0000".into(), &[]);
    assert_eq!(s, 403, "a wrong token");
    let (s, body) = post(format!("csrf={csrf}"), &[("Origin", "http://evil.example")]);
    assert_eq!(s, 403, "another site's form, even with the token");
    assert!(body.contains("refused a POST from origin"), "{body}");
    let (s, _) = post(format!("csrf={csrf}"), &[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(s, 403);
    assert!(active(), "nothing changed");

    let host = base.trim_start_matches("http://").to_owned();
    let (s, _) = post(format!("csrf={csrf}"), &[("Origin", &base), ("Sec-Fetch-Site", "same-origin"), ("Host", &host)]);
    assert_eq!(s, 303);
    assert!(!active(), "deactivated, as `braid plan list` shows");

    let bulk = format!("{base}/plans/actions");
    let r = a
        .post(&bulk)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("csrf={csrf}&action=activate&label=team%3Dsync"))
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(active(), "activated by label");

    let r = a
        .post(&format!("{base}/plans/data_sync_hourly/launch"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("csrf={csrf}&param=site_id%3Dsite2"))
        .unwrap();
    assert_eq!(r.status(), 303);
    let launches = braid_json(&store, &["plan", "show", "data_sync_hourly"]);
    assert!(launches.to_string().contains("\"kind\":\"manual\""), "a manual launch request is recorded");
}

#[test]
fn every_value_is_escaped() {
    let (_dir, _store, base) = fixture(2);
    let a = agent();
    let (_, page) = get(&a, &format!("{base}/api/v1/runs?flow=evil"));
    let run: serde_json::Value = serde_json::from_str(&page).unwrap();
    let run = run["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, task) = get(&a, &format!("{base}/api/v1/runs/evil/{run}/steps/start/tasks"));
    let task: serde_json::Value = serde_json::from_str(&task).unwrap();
    let task = task["items"][0]["id"].as_u64().unwrap();
    for path in [
        "/".to_owned(),
        "/?flow=evil".to_owned(),
        format!("/runs/evil/{run}"),
        format!("/runs/evil/{run}/start"),
        format!("/runs/evil/{run}/start/{task}"),
        "/plans".to_owned(),
        "/plans/data_sync_hourly".to_owned(),
        format!("/runs/evil/{}", urlencode(XSS)),
    ] {
        let (_, body) = get(&a, &format!("{base}{path}"));
        assert!(!body.contains(XSS) && !body.contains(XSS_IMG), "{path} holds raw markup: {body}");
        assert!(!body.contains("<script>alert"), "{path}");
    }
    let (_, body) = get(&a, &format!("{base}/runs/evil/{run}/start/{task}"));
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "shown as text");
    let r = a.get(&format!("{base}/")).call().unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn malformed_and_traversal_paths_get_4xx_pages_that_say_what_was_wrong() {
    let (_dir, _store, base) = fixture(2);
    let a = agent();
    let long = "a".repeat(300);
    let cases: Vec<(String, u16, &str)> = vec![
        ("/runs/..%2F..%2Fetc%2Fpasswd/latest".into(), 400, "not allowed"),
        ("/runs/../latest".into(), 400, "flow name"),
        ("/runs/fanout/..".into(), 400, "run id"),
        ("/runs/fanout/latest/..%2F..".into(), 400, "step name"),
        ("/runs/fanout/latest/work/-1".into(), 400, "task id"),
        ("/runs/fanout/latest/work/abc".into(), 400, "task id"),
        ("/runs/fanout/latest/work/999999".into(), 404, "not found"),
        ("/runs/fanout/latest/work?index=x".into(), 400, "not a number"),
        ("/runs/fanout/latest/work?index=99999".into(), 404, "no task with foreach index"),
        (format!("/runs/{long}/latest"), 400, "bytes long"),
        ("/runs/%FF%FE/latest".into(), 400, "malformed path"),
        ("/runs/nope/latest".into(), 404, "not found"),
        ("/assets/../../etc/passwd".into(), 404, "no page"),
        ("/assets/%2e%2e/%2e%2e/etc/passwd".into(), 404, "no page"),
        ("/api/v1/runs?after=garbage".into(), 400, "run id"),
        ("/api/v1/runs?since=yesterday".into(), 400, "is not a time"),
        ("/api/v1/runs?status=weird".into(), 400, "run status"),
        ("/api/v1/runs?limit=-3".into(), 400, "malformed query"),
        ("/api/v1/runs/fanout/latest/steps/work/tasks?after=zzz".into(), 400, "cursor"),
        ("/api/v1/runs/fanout/latest/tasks/1/artifacts/..%2Fx".into(), 400, "not allowed"),
        ("/api/v1/runs/fanout/latest/steps/work/index/1e9".into(), 400, "not a number"),
        ("/api/v1/plans/nope".into(), 404, "not found"),
        ("/plans/..%2F..".into(), 400, "not allowed"),
    ];
    for (path, status, says) in cases {
        let (s, body) = get(&a, &format!("{base}{path}"));
        assert_eq!(s, status, "{path}: {body}");
        assert!(body.to_lowercase().contains(&says.to_lowercase()), "{path} says {says:?}: {body}");
        if path.starts_with("/api/") {
            assert!(body.starts_with('{'), "{path}: JSON error");
        } else {
            assert!(body.contains("<!DOCTYPE html>"), "{path}: an HTML page");
        }
    }
}

#[test]
fn a_plan_whose_sets_come_from_a_command_shows_them_and_its_failed_ticks_escaped() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    let script = dir.path().join("list-sites");
    let write = |body: &str| {
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let plans = dir.path().join("plans.toml");
    std::fs::write(
        &plans,
        "[[plan]]\nname = \"dyn\"\nflow = \"data_sync\"\nevery = \"1h\"\nmatrix_command = [\"./list-sites\"]\n",
    )
    .unwrap();
    assert_eq!(
        flowbin("sites", &store, &["plans", "apply", plans.to_str().unwrap()], vec![data_sync()]),
        std::process::ExitCode::SUCCESS
    );
    write(r#"echo '[{"site_id": "a"}, {"site_id": "b"}]'"#);
    let bf = ["backfill", "dyn", "--from", "2026-03-02T09:00Z", "--to", "2026-03-02T10:00Z"];
    assert_eq!(flowbin("sites", &store, &bf, vec![data_sync()]), std::process::ExitCode::SUCCESS);
    write(&format!("echo '{XSS}' >&2; exit 4"));
    let bf = ["backfill", "dyn", "--from", "2026-03-02T10:00Z", "--to", "2026-03-02T11:00Z"];
    assert_eq!(flowbin("sites", &store, &bf, vec![data_sync()]), std::process::ExitCode::from(1));

    let base = serve(&store, None);
    let a = agent();
    let (s, doc) = get(&a, &format!("{base}/api/v1/plans/dyn"));
    assert_eq!(s, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["sets_from"]["kind"], "command");
    assert_eq!(doc["parameter_set_details"].as_array().unwrap().len(), 2, "the sets it launched");
    assert_eq!(doc["failed_ticks"].as_array().unwrap().len(), 1);
    assert!(doc["failed_ticks"][0]["error"].as_str().unwrap().contains("exited with status 4"));
    let (_, m) = get(&a, &format!("{base}/api/v1/plans/dyn/matrix"));
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["rows"].as_array().unwrap().len(), 2, "a row per set launched");

    let (s, page) = get(&a, &format!("{base}/plans/dyn"));
    assert_eq!(s, 200);
    assert!(page.contains("id=\"failed-ticks\"") && page.contains("Failed ticks (1)"), "{page}");
    assert!(page.contains("printed by `./list-sites` at each tick"), "{page}");
    assert!(!page.contains(XSS), "the command's stderr is escaped");
    let (_, list) = get(&a, &format!("{base}/plans"));
    assert!(list.contains("per tick (command)"));
}
