//! The OpenAPI 3.0 document of `/api/v1`, kept by hand next to the handlers in
//! [`super::api`] (a generator crate cost minutes of build on this class of machine; see
//! ARCHITECTURE.md). CI fuzzes the API from this document with schemathesis, which
//! fails on any response that does not match it; the tests here check that every API
//! route is documented and every documented path is routed.

use axum::Json;
use serde_json::{Value, json};

fn nullable(mut schema: Value) -> Value {
    if let Value::Object(m) = &mut schema {
        m.insert("nullable".into(), json!(true));
    }
    schema
}

fn s() -> Value {
    json!({"type": "string"})
}

fn int() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn num() -> Value {
    json!({"type": "number"})
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn arr(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// `Plan.sets_from` (its own function: one `json!` of the whole schema would pass the
/// macro recursion limit).
fn sets_from_schema() -> Value {
    json!({
        "nullable": true, "type": "object",
        "description": "Where the parameter sets come from: kind `static`, `command` (with `command`, `dir`, `timeout`) or `function`; `parameter_sets` is null unless static",
    })
}

/// `Task.caught` (its own function, as `sets_from_schema`).
fn caught_schema() -> Value {
    json!({
        "nullable": true, "type": "object",
        "description": "The failure `.catch(artifact)` caught: the task succeeded (`error` is null)",
        "properties": {"artifact": {"type": "string"}, "attempt": {"type": "integer"}, "kind": {"type": "string"}, "message": {"type": "string"}},
    })
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn any_obj() -> Value {
    json!({"type": "object", "additionalProperties": true})
}

fn path_param(name: &str, description: &str) -> Value {
    let schema = match name {
        "flow" | "plan" | "name" => ident(),
        "step" => json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}),
        "run" => json!({"type": "string", "pattern": "^(latest|[0-9A-HJKMNP-TV-Z]{26})$"}),
        "task" | "index" => json!({"type": "string", "pattern": "^[0-9]{1,19}$"}),
        _ => s(),
    };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

/// A flow, plan or artifact name: an identifier of at most 64 bytes.
fn ident() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"})
}

/// A tag or label part.
fn tag_text() -> Value {
    // No `minLength`: an empty `tag=` means no tag filter, as for the other filters.
    json!({"type": "string", "maxLength": 256, "description": "printable text in any language, at most 256 bytes; empty: any"})
}

/// A time filter: RFC 3339 with an offset, or a date.
fn time() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?$"})
}

fn statuses(all: &[&str]) -> Value {
    json!({"type": "string", "enum": all})
}

/// An optional query parameter. An empty value means "not given" (what an HTML form's
/// blank field sends), so patterns and enums also admit the empty string.
fn query_param(name: &str, description: &str, mut schema: Value) -> Value {
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        let inner = p.trim_start_matches('^').trim_end_matches('$');
        schema["pattern"] = json!(format!("^(?:{inner})?$"));
    }
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.push(json!(""));
    }
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        "400": {"$ref": "#/components/responses/BadRequest"},
        "404": {"$ref": "#/components/responses/NotFound"},
    })
}

fn get(summary: &str, params: Vec<Value>, responses: Value) -> Value {
    json!({"get": {"summary": summary, "parameters": params, "responses": responses}})
}

fn run_params() -> Vec<Value> {
    vec![path_param("flow", "The flow's name"), path_param("run", "A run id, or `latest`")]
}

fn task_params() -> Vec<Value> {
    let mut p = run_params();
    p.push(path_param("task", "A task id (a number)"));
    p
}

fn step_params() -> Vec<Value> {
    let mut p = run_params();
    p.push(path_param("step", "The step's name"));
    p
}

fn schemas() -> Value {
    let ts_null = nullable(s());
    json!({
        "Error": obj(&["error", "message"], json!({"error": s(), "message": s()})),
        "Flow": obj(&["name", "updated_at", "steps", "params", "latest_run"], json!({
            "name": s(), "updated_at": ts_null, "steps": arr(s()), "params": arr(any_obj()),
            "latest_run": nullable(obj(&["id", "status", "created_at"], json!({"id": s(), "status": s(), "created_at": s()}))),
        })),
        "Run": obj(&["flow", "id", "pathspec", "status", "name", "tags", "params", "created_at", "started_at", "ended_at", "duration_s", "origin_run", "error", "meta"], json!({
            "flow": s(), "id": s(), "pathspec": s(), "status": s(), "name": nullable(s()), "tags": arr(s()),
            "params": any_obj(), "created_at": s(), "started_at": nullable(s()), "ended_at": nullable(s()),
            "duration_s": nullable(num()), "origin_run": nullable(s()), "error": nullable(s()), "meta": any_obj(),
        })),
        "RunPage": obj(&["items", "next"], json!({"items": arr(r("Run")), "next": nullable(s())})),
        "Step": obj(&["name", "pathspec", "counts", "total", "first_started", "last_ended", "duration_s"], json!({
            "name": s(), "pathspec": s(), "counts": {"type": "object", "additionalProperties": int()}, "total": int(),
            "first_started": nullable(s()), "last_ended": nullable(s()), "duration_s": nullable(num()),
        })),
        "RunDetail": obj(&["run", "steps", "not_started", "spec"], json!({
            "run": r("Run"), "steps": arr(r("Step")), "not_started": arr(s()), "spec": nullable(any_obj()),
        })),
        "TaskError": nullable(obj(&["kind", "message"], json!({"kind": s(), "message": s()}))),
        "Event": obj(&["at", "attempt", "kind", "percent", "message"], json!({
            "at": s(), "attempt": int(), "kind": s(), "percent": nullable(num()), "message": s(),
        })),
        "ForeachFrame": obj(&["step", "task", "over", "index", "len"], json!({
            "step": s(), "task": int(), "over": s(), "index": int(), "len": int(),
        })),
        "Task": obj(&["id", "pathspec", "step", "index", "foreach_stack", "iteration", "status", "attempt", "created_at", "started_at", "ended_at", "duration_s", "progress", "eta_s", "warnings", "error", "parent", "inputs", "origin"], json!({
            "id": int(), "pathspec": s(), "step": s(), "index": nullable(int()), "foreach_stack": arr(r("ForeachFrame")),
            "iteration": int(), "status": s(), "attempt": int(), "created_at": s(), "started_at": nullable(s()),
            "ended_at": nullable(s()), "duration_s": nullable(num()),
            "progress": nullable(obj(&["percent", "message", "at", "units", "details"], json!({
                "percent": num(), "message": s(), "at": nullable(s()),
                "units": nullable(obj(&["done", "total", "unit", "rate_per_s"], json!({
                    "done": int(), "total": int(), "unit": s(), "rate_per_s": nullable(num()),
                }))),
                "details": nullable(any_obj()),
            }))),
            "eta_s": nullable(num()), "warnings": arr(r("Event")), "error": r("TaskError"), "caught": caught_schema(), "parent": nullable(int()),
            "inputs": arr(int()), "origin": nullable(obj(&["run", "task"], json!({"run": s(), "task": int()}))),
            "retries": int(), "worker": nullable(s()), "lost_dispatches": int(),
        })),
        "TaskPage": obj(&["step", "items", "next"], json!({"step": r("Step"), "items": arr(r("Task")), "next": nullable(s())})),
        "Attempt": obj(&["attempt", "status", "started_at", "ended_at", "duration_s", "error"], json!({
            "attempt": int(), "status": s(), "started_at": s(), "ended_at": nullable(s()), "duration_s": nullable(num()), "error": r("TaskError"),
        })),
        "Artifact": obj(&["name", "type_name", "size", "key", "set_by", "inherited", "elements", "preview", "preview_truncated"], json!({
            "name": s(), "type_name": s(), "size": int(), "key": s(), "set_by": int(), "inherited": {"type": "boolean"},
            "elements": nullable(int()), "preview": {"description": "The value as JSON (bounded; a cut preview is a string ending in a marker)", "nullable": true},
            "preview_truncated": {"type": "boolean"},
        })),
        "LogLine": obj(&["seq", "attempt", "at", "level", "line"], json!({"seq": int(), "attempt": int(), "at": s(), "level": s(), "line": s()})),
        "LogPage": obj(&["items", "last_seq"], json!({"items": arr(r("LogLine")), "last_seq": int()})),
        "TaskDetail": obj(&["task", "attempts", "artifacts", "events", "log_tail"], json!({
            "task": r("Task"), "attempts": arr(r("Attempt")), "artifacts": arr(r("Artifact")), "events": arr(r("Event")), "log_tail": arr(r("LogLine")),
        })),
        "Grid": obj(&["step", "count", "legend", "cells", "depth", "ranges", "done"], json!({
            "step": s(), "count": int(), "legend": arr(s()),
            "cells": {"type": "string", "description": "One character per task, in foreach index order: the position of its status in `legend`, as a base-36 digit"},
            "depth": int(),
            "ranges": arr(json!({"type": "array", "items": int(), "minItems": 3, "maxItems": 3, "description": "[first task id, first index, length]"})),
            "done": {"type": "boolean"},
        })),
        "Plan": obj(&["name", "flow", "version", "active", "labels"], json!({
            "name": s(), "flow": s(), "version": int(), "active": {"type": "boolean"},
            "labels": {"type": "object", "additionalProperties": s()},
            "description": nullable(s()), "schedule": nullable(any_obj()), "parameter_sets": nullable(int()),
            "concurrency": nullable(s()), "catch_up": {"nullable": true}, "catch_up_limit": {"nullable": true},
            "grace": {"nullable": true}, "fixed": {"nullable": true}, "defaults": {"nullable": true}, "matrix": {"nullable": true},
            "next_tick": nullable(s()), "next_tick_local": nullable(s()), "created_at": s(), "updated_at": s(),
            "active_since": nullable(s()), "cursor": nullable(s()),
            "sets_from": sets_from_schema(),
        })),
        "PlanDetail": {"allOf": [r("Plan"), obj(&["versions", "next_ticks", "timezone", "parameter_set_details"], json!({
            "versions": arr(obj(&["version", "hash", "created_at"], json!({"version": int(), "hash": s(), "created_at": s()}))),
            "next_ticks": arr(obj(&["tick", "local"], json!({"tick": s(), "local": s()}))),
            "timezone": s(),
            "parameter_set_details": arr(obj(&["key", "values", "run_name"], json!({"key": s(), "values": any_obj(), "run_name": s(), "paused": {"type": "boolean"}}))),
            "failed_ticks": arr(obj(&["tick", "tick_local", "kind", "error", "failures"], json!({
                "tick": s(), "tick_local": s(), "version": int(), "kind": s(), "holder": s(), "error": s(),
                "failures": int(), "first_at": s(), "last_at": s(),
            }))),
        }))]},
        "MatrixCell": nullable(obj(&["state", "status", "kind", "run", "flow", "note"], json!({
            "state": s(), "status": nullable(s()), "kind": s(), "run": nullable(s()), "flow": s(), "note": nullable(s()),
        }))),
        "Matrix": obj(&["plan", "flow", "timezone", "ticks", "rows"], json!({
            "plan": s(), "flow": s(), "timezone": s(),
            "ticks": arr(obj(&["tick", "local"], json!({"tick": s(), "local": s()}))),
            "rows": arr(obj(&["key", "run_name", "values", "cells"], json!({"key": s(), "run_name": s(), "values": any_obj(), "cells": arr(r("MatrixCell"))}))),
        })),
    })
}

/// The document.
pub fn spec() -> Value {
    // Out-of-range limits are cut to the range, not refused.
    let limit = |_max: u64| json!({"type": "integer", "minimum": 0});
    let run_statuses: Vec<&str> = braid_client::RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    let task_statuses: Vec<&str> = braid_client::TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
    let mut tasks_params = step_params();
    tasks_params.push(query_param("status", "Only tasks in this status", statuses(&task_statuses)));
    tasks_params.push(query_param("after", "The `next` of the previous page", s()));
    tasks_params.push(query_param("limit", "Tasks per page (100 unless given; 1 to 1000)", limit(1000)));
    let mut index_params = step_params();
    index_params.push(path_param("index", "A foreach index (0, 1, 2, …)"));
    let mut log_params = task_params();
    log_params.push(query_param("after", "Only lines with `seq` above this", json!({"type": "integer", "minimum": 0})));
    log_params.push(query_param("limit", "At most this many lines (1000 unless given; 1 to 10,000)", limit(10_000)));
    let mut artifact_params = task_params();
    artifact_params.push(path_param("name", "The artifact's name"));
    let mut matrix_params = vec![path_param("plan", "The plan's name")];
    matrix_params.push(query_param("ticks", "How many of the latest ticks (24 unless given; 1 to 500)", limit(500)));
    let run_filters = vec![
        query_param("flow", "Only runs of this flow", ident()),
        query_param("status", "Only runs in this status", statuses(&run_statuses)),
        query_param("tag", "Only runs with this tag", tag_text()),
        query_param("plan", "Only runs this launch plan started", s()),
        query_param("name", "Only runs with this name; a trailing `*` matches a prefix", s()),
        query_param("since", "Only runs created at or after this time (RFC 3339, or a date, UTC)", time()),
        query_param("until", "Only runs created before this time", time()),
        query_param(
            "after",
            "The `next` of the previous page (a run id)",
            json!({"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}),
        ),
        query_param("limit", "Runs per page (50 unless given; 1 to 500)", limit(500)),
    ];
    let value_responses = json!({
        "200": {"description": "The stored envelope bytes (codec, type name, payload), as `braid artifact --raw` prints them",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "400": {"$ref": "#/components/responses/BadRequest"},
        "404": {"$ref": "#/components/responses/NotFound"},
    });
    let error_response = |d: &str| json!({"description": d, "content": {"application/json": {"schema": r("Error")}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "braid",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read-only access to a braid store: flows, runs, steps, tasks, artifacts, logs and launch plans. Times are RFC 3339 strings in UTC, durations seconds. Off loopback every request needs `Authorization: Bearer TOKEN`.",
        },
        "paths": {
            "/api/v1/flows": get("Every flow with its latest run", vec![], ok("Flows by name", arr(r("Flow")))),
            "/api/v1/runs": get("Runs across flows, newest first, filtered and paged", run_filters, ok("A page of runs", r("RunPage"))),
            "/api/v1/runs/{flow}/{run}": get("A run with its steps and the flow's spec", run_params(), ok("The run", r("RunDetail"))),
            "/api/v1/runs/{flow}/{run}/steps/{step}/tasks": get("A step's tasks in task id order, paged", tasks_params, ok("A page of tasks", r("TaskPage"))),
            "/api/v1/runs/{flow}/{run}/steps/{step}/grid": get("Every task of a step as one character of status (the foreach grid)", step_params(), ok("The grid", r("Grid"))),
            "/api/v1/runs/{flow}/{run}/steps/{step}/index/{index}": get("The task of a step with this foreach index", index_params, ok("The task", r("TaskDetail"))),
            "/api/v1/runs/{flow}/{run}/tasks/{task}": get("A task with attempts, artifacts, events and the tail of its log", task_params(), ok("The task", r("TaskDetail"))),
            "/api/v1/runs/{flow}/{run}/tasks/{task}/logs": get("A task's log lines after a sequence number", log_params, ok("Log lines", r("LogPage"))),
            "/api/v1/runs/{flow}/{run}/tasks/{task}/artifacts/{name}": get("An artifact's record and JSON preview", artifact_params.clone(), ok("The artifact", r("Artifact"))),
            "/api/v1/runs/{flow}/{run}/tasks/{task}/artifacts/{name}/value": get("An artifact's stored value, as a download", artifact_params, value_responses),
            "/api/v1/plans": get("Launch plans, by name", vec![
                query_param("flow", "Only plans of this flow", ident()),
                query_param("label", "Only plans with this label (key=value)", json!({"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}=[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"})),
            ], ok("Plans", arr(r("Plan")))),
            "/api/v1/plans/{plan}": get("A launch plan: versions, next ticks, parameter sets", vec![path_param("plan", "The plan's name")], ok("The plan", r("PlanDetail"))),
            "/api/v1/plans/{plan}/matrix": get("A plan's matrix: a row per parameter set, a column per tick", matrix_params, ok("The matrix", r("Matrix"))),
        },
        "components": {
            "schemas": schemas(),
            "responses": {
                "BadRequest": error_response("A malformed name, id, cursor or filter; the message says what was wrong"),
                "NotFound": error_response("Nothing by that name; the message says what exists"),
            },
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `/api/v1` route the router serves, as written in `server.rs`.
    fn routed() -> Vec<String> {
        let src = include_str!("server.rs");
        src.lines()
            .filter_map(|l| l.trim().strip_prefix(".route(\"/api/v1/"))
            .filter_map(|l| l.split('"').next())
            .map(|p| format!("/api/v1/{p}"))
            .filter(|p| p != "/api/v1/openapi.json")
            .collect()
    }

    #[test]
    fn every_api_route_is_documented_and_every_documented_path_is_routed() {
        let doc = spec();
        let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
        let mut routes = routed();
        routes.sort();
        let mut documented = paths.clone();
        documented.sort();
        assert!(!routes.is_empty());
        assert_eq!(routes, documented);
    }

    #[test]
    fn every_reference_resolves_and_every_path_parameter_is_declared() {
        let doc = spec();
        let text = doc.to_string();
        for part in text.split("\"#/components/").skip(1) {
            let reference = part.split('"').next().unwrap();
            let mut parts = reference.split('/');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(doc["components"][kind][name].is_object(), "{reference} is defined");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            let declared: Vec<&str> = item["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> =
                path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            assert_eq!(declared, in_path, "{path}");
        }
    }
}
