#![allow(clippy::unwrap_used)]
//! Every client call, on the memory store and on an fs store, against runs fabricated
//! through the store API.

use std::collections::BTreeMap;

use braid_client::fixtures::{self, FanoutRun, RunWriter, TaskSpec};
use braid_client::{Client, Error, Object, PathspecDepth, RunFilter, RunStatus, Tag, TaskId, TaskStatus};
use braid_store::faults::{Faults, Op};
use braid_store::{RunQuery, Store};
use serde_json::json;

/// Runs `test` on a fresh memory store and on a fresh fs store (opened by path, as a
/// user would).
fn on_each_store(test: impl Fn(&Store, &dyn Fn() -> Client)) {
    let memory = Store::memory();
    let mem_client = memory.clone();
    test(&memory, &|| Client::from_store(mem_client.clone()));

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    test(&store, &|| Client::open(&path).unwrap());
}

fn err_text<T: std::fmt::Debug>(r: braid_client::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn foreach_end_to_end() {
    on_each_store(|store, client| {
        let f = fixtures::fanout(store, 50).unwrap();
        let client = client();
        let run = client.flow("fanout").unwrap().latest_run().unwrap();
        assert_eq!(run.id(), f.run);
        let work = run.step("work").unwrap();
        assert_eq!(work.task_count(), 50);

        // Every branch by its index: typed, as a preview, and its input item.
        for i in 0..50u64 {
            let t = work.task_by_index(i).unwrap();
            assert_eq!(t.index(), Some(i));
            assert_eq!(t.id(), f.work[i as usize]);
            assert_eq!(t.data::<u64>("out").unwrap(), i * i);
            assert_eq!(t.preview("out").unwrap(), json!(i * i));
            assert_eq!(t.input::<u64>().unwrap(), i);
            assert_eq!(t.data::<String>("note").unwrap(), format!("item {i}"));
        }

        // All at once, in index order.
        let values: Vec<(u64, u64)> = work.artifact_values("out").unwrap();
        assert_eq!(values, (0..50).map(|i| (i, i * i)).collect::<Vec<_>>());
        let previews = work.artifact_previews("out").unwrap();
        assert_eq!(previews[7], (7, json!(49)));
        let entries = work.artifact_entries("note").unwrap();
        assert_eq!(entries.len(), 50);
        assert_eq!(entries[3].index, Some(3));
        assert_eq!(entries[3].task, f.work[3]);
        assert_eq!(entries[3].artifact.data::<String>().unwrap(), "item 3");

        // The join's own value; a branch-only name explains itself.
        let join = client.task_at("fanout/latest/join").unwrap();
        assert_eq!(join.id(), f.join);
        assert_eq!(join.data::<u64>("total").unwrap(), (0..50u64).map(|i| i * i).sum::<u64>());
        assert!(join.is_join());
        assert_eq!(join.input_ids(), &f.work[..]);
        assert_eq!(join.inputs().unwrap().len(), 50);
        assert_eq!(join.parent_id(), None);

        // Navigating the task graph: children, successors by step, child steps.
        let ids = |ts: Vec<braid_client::Task>| ts.iter().map(|t| t.id()).collect::<Vec<_>>();
        let start = client.task_at("fanout/latest/start").unwrap();
        assert_eq!(ids(start.children().unwrap()), f.work, "every branch of the foreach, in id order");
        assert_eq!(ids(start.successors("work").unwrap()), f.work);
        let branch = work.task_by_index(7).unwrap();
        assert_eq!(ids(branch.children().unwrap()), [f.join], "the join the branch fed");
        assert_eq!(ids(join.children().unwrap()), [f.end]);
        assert!(client.task_at("fanout/latest/end").unwrap().children().unwrap().is_empty());
        let names = |v: Vec<braid_core::StepName>| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(names(run.step("start").unwrap().child_steps().unwrap()), ["work"]);
        assert_eq!(names(work.child_steps().unwrap()), ["join"]);
        assert!(run.step("end").unwrap().child_steps().unwrap().is_empty());
        let e = branch.successors("end").unwrap_err();
        assert!(matches!(e, Error::NotASuccessor { .. }) && e.to_string().contains("its step goes to: join"), "{e}");

        let e = join.data::<u64>("out").unwrap_err();
        assert!(matches!(e, Error::BranchOnly { branches: 50, .. }), "{e:?}");
        let msg = e.to_string();
        for needle in ["exists only in the inputs", "inputs()", "merge_artifacts()", "artifact_values", "`out`"] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
        assert!(matches!(join.preview("note"), Err(Error::BranchOnly { .. })));
        let names: Vec<String> = join.input_only_names().unwrap().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["items", "label", "n", "note", "out"]);

        // After the join: `end` inherits `total`; a branch name still points at the join.
        let end = run.end_task().unwrap();
        assert_eq!(end.data::<u64>("total").unwrap(), 40425);
        assert!(end.data::<bool>("done").unwrap());
        let e = err_text(end.data::<u64>("out"));
        assert!(e.contains(&join.pathspec()) && e.contains("only in the inputs"), "{e}");
        assert_eq!(end.input_only_names().unwrap().len(), 5);
        assert!(work.task_by_index(0).unwrap().input_only_names().unwrap().is_empty());
    });
}

#[test]
fn pathspecs_resolve_at_every_depth() {
    on_each_store(|store, client| {
        let f = fixtures::fanout(store, 5).unwrap();
        let client = client();
        let run = f.run;
        assert!(matches!(client.get("fanout").unwrap(), Object::Flow(_)));
        let o = client.get("fanout/latest").unwrap();
        assert_eq!(o.depth(), PathspecDepth::Run);
        assert_eq!(o.pathspec(), format!("fanout/{run}"));
        let o = client.get(&format!("fanout/{run}/work")).unwrap();
        assert_eq!(o.pathspec(), format!("fanout/{run}/work"));
        let t = client.task(&format!("fanout/{run}/work/{}", f.work[2])).unwrap();
        assert_eq!(t.index(), Some(2));
        assert_eq!(t.pathspec(), format!("fanout/{run}/work/{}", f.work[2]));
        assert_eq!(client.run("fanout/latest/").unwrap().id(), run);
        assert_eq!(client.step("fanout/latest/work").unwrap().task_count(), 5);
        assert_eq!(client.task_at(&format!("fanout/latest/work/{}", f.work[0])).unwrap().index(), Some(0));
        assert_eq!(client.task_at("fanout/latest/start").unwrap().id(), f.start);

        // The wrong depth says what was needed.
        let e = err_text(client.task("fanout/latest"));
        assert!(e.contains("names a run") && e.contains("task is needed"), "{e}");
        let e = err_text(client.run("fanout"));
        assert!(e.contains("names a flow"), "{e}");
        let e = err_text(client.task_at("fanout/latest/work"));
        assert!(e.contains("5 tasks, not one") && e.contains("task_by_index"), "{e}");
    });
}

#[test]
fn flows_and_runs() {
    on_each_store(|store, client| {
        let first = fixtures::fanout(store, 3).unwrap();
        let second = fixtures::fanout(store, 4).unwrap();
        let mut failed = RunWriter::start(store, "fanout", None, BTreeMap::new()).unwrap();
        failed.task(TaskSpec::new("start").error("panic", "index out of bounds")).unwrap();
        failed
            .update_run(|r| {
                r.tags.insert(Tag::new("nightly").unwrap());
                r.name = Some("fanout_nightly".into());
                r.origin_run = Some(second.run);
                r.meta.insert("plan".into(), json!("nightly"));
            })
            .unwrap();
        failed.finish(RunStatus::Failed, Some("start/1 attempt 1: panic: index out of bounds".into())).unwrap();
        let failed_id = failed.run_id();
        RunWriter::start(
            store,
            "other",
            Some(json!({"format_version": 1, "name": "other", "steps": []})),
            BTreeMap::new(),
        )
        .unwrap();

        let client = client();
        let flows: Vec<String> = client.flows().unwrap().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(flows, ["fanout", "other"]);
        let flow = client.flow("fanout").unwrap();
        assert_eq!(flow.declared_steps().len(), 4);
        assert!(flow.spec().is_some() && flow.updated_at().is_some());
        assert_eq!(flow.pathspec(), "fanout");

        // Newest first; latest and latest successful.
        let ids: Vec<_> = flow.runs().unwrap().iter().map(|r| r.id()).collect();
        assert_eq!(ids, [failed_id, second.run, first.run]);
        assert_eq!(flow.latest_run().unwrap().id(), failed_id);
        assert_eq!(flow.latest_successful_run().unwrap().id(), second.run);
        assert_eq!(client.run("fanout/latest").unwrap().id(), failed_id);

        // Filters and paging.
        let failed_runs = flow.runs_matching(&RunFilter::new().status(RunStatus::Failed)).unwrap();
        assert_eq!(failed_runs.len(), 1);
        let tagged = flow.runs_matching(&RunFilter::new().tag(Tag::new("nightly").unwrap())).unwrap();
        assert_eq!(tagged[0].id(), failed_id);
        assert!(flow.runs_matching(&RunFilter::new().tag(Tag::new("nope").unwrap())).unwrap().is_empty());
        assert_eq!(flow.runs_matching(&RunFilter::new().limit(2)).unwrap().len(), 2);
        let page = flow.runs_page(&RunQuery { limit: 2, ..RunQuery::default() }).unwrap();
        assert_eq!(page.items.len(), 2);
        let rest = flow.runs_page(&RunQuery { limit: 2, after: page.next.clone(), ..RunQuery::default() }).unwrap();
        assert_eq!(rest.items[0].id(), first.run);
        assert!(rest.next.is_none());

        // Run fields.
        let run = flow.run(&failed_id.to_string()).unwrap();
        assert_eq!(run.status(), RunStatus::Failed);
        assert!(run.is_finished());
        assert!(run.has_tag("nightly") && run.tags().len() == 1);
        assert_eq!(run.name(), Some("fanout_nightly"));
        assert_eq!(run.meta()["plan"], json!("nightly"));
        assert_eq!(run.origin_run(), Some(second.run));
        assert_eq!(run.origin().unwrap().unwrap().id(), second.run);
        assert!(run.error().unwrap().contains("index out of bounds"));
        assert!(run.started_at().is_some() && run.ended_at().is_some());
        assert!(run.ended_at().unwrap() >= run.created_at());
        assert!(run.duration().is_some());
        let ok = flow.run_by_id(second.run).unwrap();
        assert_eq!(ok.params()["n"], json!(4));
        assert_eq!(ok.param("n"), Some(&json!(4)));
        assert_eq!(ok.flow().unwrap().name(), "fanout");
        assert_eq!(ok.refresh().unwrap().status(), RunStatus::Succeeded);

        // Steps in order of their first task, with counts.
        let steps = ok.steps().unwrap();
        let names: Vec<_> = steps.iter().map(|s| s.name().to_string()).collect();
        assert_eq!(names, ["start", "work", "join", "end"]);
        assert_eq!(steps[1].count(TaskStatus::Succeeded), 4);
        assert_eq!(steps[1].counts().values().sum::<u64>(), 4);
        assert!(steps[1].is_done());
        assert!(steps[1].origin().unwrap().is_none(), "not a resumed run: no origin step");
        // The failed run resumes `second`: its steps' origins are second's same steps.
        let resumed_start = run.step("start").unwrap().origin().unwrap().unwrap();
        assert_eq!((resumed_start.run_id(), resumed_start.name().as_str()), (second.run, "start"));
        assert!(steps[1].duration().is_some() && steps[1].first_started().is_some() && steps[1].last_ended().is_some());
        assert_eq!(ok.tasks().unwrap().len(), 1 + 4 + 1 + 1);
        assert_eq!(ok.task(second.join).unwrap().step_name(), "join");
        let failed_run = flow.run(&failed_id.to_string()).unwrap();
        assert_eq!(failed_run.step("start").unwrap().count(TaskStatus::Failed), 1);

        // A flow whose runs exist without a registered spec is still found.
        assert!(client.flow("other").unwrap().latest_run().is_ok());
    });
}

#[test]
fn task_details() {
    on_each_store(|store, client| {
        let f = fixtures::fanout(store, 3).unwrap();
        let client = client();
        let work = client.step("fanout/latest/work").unwrap();
        let t = work.task_by_index(1).unwrap();
        assert_eq!(t.status(), TaskStatus::Succeeded);
        assert_eq!(t.attempt().0, 2);
        let attempts = t.attempts().unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].status, TaskStatus::Failed);
        assert!(attempts[0].error.as_ref().unwrap().message.contains("transient"));
        assert_eq!(attempts[1].status, TaskStatus::Succeeded);
        assert_eq!(work.task_by_index(0).unwrap().attempts().unwrap().len(), 1);

        let logs = t.logs().unwrap();
        assert_eq!(logs.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["squaring 1", "1 squared is 1"]);
        assert_eq!(t.logs_after(logs[0].seq, 0).unwrap().len(), 1);
        assert_eq!(t.log_tail(1).unwrap()[0].line, "1 squared is 1");
        assert_eq!(t.progress().unwrap().percent, 100.0);
        assert_eq!(t.progress().unwrap().message, "done");
        assert!(t.progress_at().is_some());
        assert!(t.eta().is_none());
        assert!(t.error().is_none() && t.origin().is_none());
        assert!(t.duration().is_some() && t.started_at().is_some() && t.ended_at().is_some());
        assert!(t.created_at() <= t.started_at().unwrap());
        assert_eq!(t.iteration(), 0);
        assert_eq!(t.parent_id(), Some(f.start));
        assert_eq!(t.parent().unwrap().unwrap().step_name(), "start");
        assert_eq!(t.step().unwrap().name(), "work");
        assert_eq!(t.run().unwrap().id(), f.run);
        assert_eq!(t.refresh().unwrap().status(), TaskStatus::Succeeded);
        assert_eq!(t.key().task, t.id());
        assert_eq!((t.flow_name().as_str(), t.run_id()), ("fanout", f.run));
        let frame = &t.foreach_stack()[0];
        assert_eq!(
            (frame.step.as_str(), frame.task, frame.over.as_str(), frame.index, frame.len),
            ("start", f.start, "items", 1, 3)
        );

        // Own and inherited artifacts, with type, size, key, preview.
        let arts = t.artifacts().unwrap();
        let names: Vec<_> = arts.iter().map(|a| a.name().to_string()).collect();
        assert_eq!(names, ["items", "label", "n", "note", "out"]);
        let items = arts.iter().find(|a| a.name() == "items").unwrap();
        assert!(items.is_inherited());
        assert_eq!(items.set_by(), f.start);
        assert_eq!(items.elements_len(), Some(3));
        assert_eq!(items.type_name(), "alloc::vec::Vec<u64>");
        assert_eq!(items.preview(), json!([0, 1, 2]));
        assert_eq!(items.data::<Vec<u64>>().unwrap(), [0, 1, 2]);
        let out = t.artifact("out").unwrap();
        assert!(!out.is_inherited());
        assert_eq!(out.type_name(), "u64");
        let bytes = out.bytes().unwrap();
        assert_eq!(bytes.len() as u64, out.size());
        assert_eq!(braid_store::BlobKey::of(&bytes), out.key());
        assert_eq!(braid_core::codec::inspect(&bytes).unwrap().type_name, "u64");
        assert_eq!(out.preview_text(), "1");
        assert!(!out.preview_truncated());
        assert_eq!(out.task().task, t.id());
        assert!(t.has_artifact("label").unwrap() && !t.has_artifact("total").unwrap());
        assert_eq!(t.artifact_names().unwrap().len(), 5);

        // A task outside a foreach has no input item; inherited values read in bulk.
        let start = client.task_at("fanout/latest/start").unwrap();
        assert_eq!(start.index(), None);
        let e = err_text(start.input::<u64>());
        assert!(e.contains("not inside a foreach"), "{e}");
        let e = err_text(t.input_at::<u64>(3));
        assert!(e.contains("level 3 does not exist"), "{e}");
        let labels: Vec<(u64, String)> = work.artifact_values("label").unwrap();
        assert_eq!(labels, [(0, "fanout".to_owned()), (1, "fanout".to_owned()), (2, "fanout".to_owned())]);
        // A step outside a foreach reads as index 0.
        let total: Vec<(u64, u64)> = client.step("fanout/latest/join").unwrap().artifact_values("total").unwrap();
        assert_eq!(total, [(0, 5)]);
    });
}

#[test]
fn errors_name_what_was_looked_for_and_what_exists() {
    on_each_store(|store, client| {
        let f = fixtures::fanout(store, 3).unwrap();
        let client = client();
        let run = f.run;

        let e = client.flow("fanuot").unwrap_err();
        assert!(e.is_not_found());
        let e = e.to_string();
        assert!(e.contains("`fanuot` not found") && e.contains("fanout"), "{e}");

        let missing = braid_client::RunId::generate();
        let e = err_text(client.get(&format!("fanout/{missing}")));
        assert!(e.contains(&missing.to_string()) && e.contains(&run.to_string()) && e.contains("succeeded"), "{e}");

        let e = err_text(client.get("fanout/latest/wrok"));
        assert!(e.contains("`wrok` not found") && e.contains("start, work, join, end"), "{e}");

        let e = err_text(client.get("fanout/latest/work/999"));
        assert!(e.contains("task 999 not found") && e.contains("task ids are"), "{e}");
        let e = err_text(client.get(&format!("fanout/latest/join/{}", f.work[0])));
        assert!(e.contains("belongs to step `work`"), "{e}");

        let t = client.task_at("fanout/latest/join").unwrap();
        let e = t.data::<u64>("totl").unwrap_err();
        assert!(matches!(e, Error::UnknownArtifact { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("`totl` not found") && e.contains("total"), "{e}");

        let e = t.data::<i32>("total").unwrap_err();
        assert!(matches!(e, Error::Decode { .. }));
        let e = e.to_string();
        assert!(e.contains("`u64`") && e.contains("`i32`") && e.contains("total"), "{e}");
        let e = err_text(client.step("fanout/latest/work").unwrap().artifact_values::<String>("out"));
        assert!(e.contains("`u64`") && e.contains("`alloc::string::String`"), "{e}");
        let e = err_text(client.step("fanout/latest/work").unwrap().artifact_values::<u64>("nope"));
        assert!(e.contains("`nope` not found") && e.contains("out"), "{e}");

        for bad in ["", "fan out", "fanout/notarun", "fanout/latest/../x", "fanout/latest/work/x", "a/b/c/d/e"] {
            let e = client.get(bad).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("pathspec"), "{bad:?}: {e}");
        }
        let e = err_text(client.flow("a/b"));
        assert!(e.contains("flow name"), "{e}");

        let work = client.step("fanout/latest/work").unwrap();
        let e = err_text(work.task_by_index(7));
        assert!(e.contains("index 7") && e.contains("3 items"), "{e}");
        let e = err_text(work.task(f.join));
        assert!(e.contains("belongs to step `join`"), "{e}");
        let e = err_text(client.step("fanout/latest/start").unwrap().task_by_index(0));
        assert!(e.contains("not foreach branches"), "{e}");

        // A step the flow declares that the run has not reached.
        let w = RunWriter::start(store, "fanout", None, BTreeMap::new()).unwrap();
        let e = err_text(client.get("fanout/latest/join"));
        assert!(e.contains("has no tasks yet") && e.contains("declares it"), "{e}");
        let e = err_text(client.get(&format!("fanout/{}/work/1", w.run_id())));
        assert!(e.contains("no tasks yet"), "{e}");

        // A flow without runs, a store that does not exist.
        let empty = Client::from_store(Store::memory());
        let e = err_text(empty.flow("fanout"));
        assert!(e.contains("no flows yet"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let nowhere = dir.path().join("nope");
        let e = err_text(Client::open(nowhere.to_str().unwrap()));
        assert!(e.contains("no braid store") && e.contains("does not exist"), "{e}");
        let e = err_text(Client::open(dir.path().to_str().unwrap()));
        assert!(e.contains("not a braid store"), "{e}");
        assert!(!nowhere.exists(), "opening must not create a store");
    });
}

#[test]
fn no_runs_and_no_successful_run() {
    on_each_store(|store, client| {
        let mut w = RunWriter::start(
            store,
            "flaky",
            Some(json!({"format_version": 1, "name": "flaky", "steps": []})),
            BTreeMap::new(),
        )
        .unwrap();
        w.finish(RunStatus::Failed, Some("boom".into())).unwrap();
        let client = client();
        let flow = client.flow("flaky").unwrap();
        let e = err_text(flow.latest_successful_run());
        assert!(e.contains("no succeeded run") && e.contains("failed"), "{e}");
        store
            .records
            .put_flow(braid_store::FlowRecord {
                name: "idle".parse().unwrap(),
                spec: json!({}),
                updated_at: braid_client::Timestamp::now(),
            })
            .block()
            .unwrap();
        let e = err_text(client.get("idle/latest"));
        assert!(e.contains("`idle` has no runs yet"), "{e}");
    });
}

/// Blocks on a store future in a test without a runtime of the test's own.
trait Blocking: std::future::Future + Sized {
    fn block(self) -> Self::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(self)
    }
}
impl<F: std::future::Future> Blocking for F {}

#[test]
fn nested_foreach_indexes_are_ambiguous_and_inputs_read_per_level() {
    on_each_store(|store, client| {
        let mut w = RunWriter::start(store, "nested", None, BTreeMap::new()).unwrap();
        let outer = vec!["a".to_owned(), "b".to_owned()];
        let start = w.task(TaskSpec::new("start").set_sequence("sites", &outer).unwrap()).unwrap();
        let mut leaves = Vec::new();
        for (i, site) in outer.iter().enumerate() {
            let inner: Vec<u32> = vec![10 * i as u32, 10 * i as u32 + 1, 10 * i as u32 + 2];
            let mid = w
                .task(
                    TaskSpec::new("mid")
                        .parent(start)
                        .foreach("start", start, "sites", i as u64, 2)
                        .set_sequence("days", &inner)
                        .unwrap()
                        .set("site", site)
                        .unwrap(),
                )
                .unwrap();
            for j in 0..3u64 {
                let leaf = TaskSpec::new("leaf")
                    .parent(mid)
                    .foreach("start", start, "sites", i as u64, 2)
                    .foreach("mid", mid, "days", j, 3)
                    .set("value", &(inner[j as usize] * 2))
                    .unwrap();
                leaves.push(w.task(leaf).unwrap());
            }
        }
        let client = client();
        let leaf = client.step("nested/latest/leaf").unwrap();
        let both = leaf.tasks_by_index(1).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].input::<u32>().unwrap(), 1);
        assert_eq!(both[1].input::<u32>().unwrap(), 11);
        assert_eq!(both[1].input_at::<String>(0).unwrap(), "b");
        assert_eq!(both[1].data::<String>("site").unwrap(), "b");
        let e = err_text(leaf.task_by_index(1));
        assert!(
            e.contains("matches 2 tasks") && e.contains("start[1] > mid[1]") && e.contains("tasks_by_index"),
            "{e}"
        );
        let e = err_text(both[0].input::<String>());
        assert!(e.contains("`u32`") && e.contains("`alloc::string::String`") && e.contains("days[1]"), "{e}");
        let values: Vec<(u64, u32)> = leaf.artifact_values("value").unwrap();
        assert_eq!(values, [(0, 0), (0, 20), (1, 2), (1, 22), (2, 4), (2, 24)]);
        let entries = leaf.artifact_entries("value").unwrap();
        assert_eq!(entries[1].task, leaves[3]);
    });
}

#[test]
fn reads_see_a_run_while_it_is_written() {
    on_each_store(|store, client| {
        let mut params = BTreeMap::new();
        params.insert("n".to_owned(), json!(10));
        let mut w = RunWriter::start(store, "fanout", Some(fixtures::fanout_spec()), params).unwrap();
        let start = fixtures::fanout_start(&mut w, 10).unwrap().start;
        let client = client();
        let run = client.run("fanout/latest").unwrap();
        assert_eq!(run.status(), RunStatus::Running);
        assert!(run.ended_at().is_none());

        // Four branches done, two running with progress.
        let mut specs = Vec::new();
        for i in 0..4 {
            specs.push(fixtures::fanout_work(start, i, 10).unwrap());
        }
        let done = w.tasks(specs).unwrap();
        let running = w
            .tasks(
                (4..6)
                    .map(|i| {
                        TaskSpec::new("work")
                            .parent(start)
                            .foreach("start", start, "items", i, 10)
                            .status(TaskStatus::Running)
                            .progress(40.0, "crunching")
                            .log("started")
                    })
                    .collect(),
            )
            .unwrap();
        let work = run.step("work").unwrap();
        assert_eq!(work.task_count(), 6);
        assert_eq!(work.count(TaskStatus::Running), 2);
        assert!(!work.is_done());
        let values: Vec<(u64, u64)> = work.artifact_values("out").unwrap();
        assert_eq!(values, [(0, 0), (1, 1), (2, 4), (3, 9)]);
        let r = work.task_by_index(4).unwrap();
        assert_eq!(r.status(), TaskStatus::Running);
        assert_eq!(r.progress().unwrap().percent, 40.0);
        assert!(r.eta().is_some());
        assert_eq!(r.input::<u64>().unwrap(), 4);
        let e = err_text(r.data::<u64>("out"));
        assert!(e.contains("the task is running"), "{e}");
        assert_eq!(work.tasks_with_status(TaskStatus::Running).unwrap().len(), 2);
        let e = err_text(run.step("join"));
        assert!(e.contains("no tasks yet"), "{e}");

        // The running ones finish, the rest run, and the join lands.
        let mut specs: Vec<TaskSpec> = Vec::new();
        for (k, i) in (4..6).enumerate() {
            specs.push(fixtures::fanout_work(start, i, 10).unwrap().id(running[k]));
        }
        for i in 6..10 {
            specs.push(fixtures::fanout_work(start, i, 10).unwrap());
        }
        let rest = w.tasks(specs).unwrap();
        assert_eq!(r.refresh().unwrap().data::<u64>("out").unwrap(), 16);
        let work = work.refresh().unwrap();
        assert_eq!(work.task_count(), 10);
        assert!(work.is_done());
        assert_eq!(work.artifact_values::<u64>("out").unwrap().len(), 10);
        let inputs: Vec<TaskId> = done.into_iter().chain(rest).collect();
        w.task(TaskSpec::new("join").inputs(inputs).set("total", &285u64).unwrap()).unwrap();
        w.finish(RunStatus::Succeeded, None).unwrap();
        assert_eq!(client.task_at("fanout/latest/join").unwrap().data::<u64>("total").unwrap(), 285);
        let now = run.refresh().unwrap();
        assert_eq!(now.status(), RunStatus::Succeeded);
        assert_eq!(run.status(), RunStatus::Running, "a handle is a snapshot");
    });
}

#[test]
fn works_inside_an_async_runtime() {
    let store = Store::memory();
    fixtures::fanout(&store, 4).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let total = rt.block_on(async {
        let client = Client::from_store(store.clone());
        let total: u64 = client.task_at("fanout/latest/join").unwrap().data("total").unwrap();
        drop(client);
        total
    });
    assert_eq!(total, 14);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let n = rt.block_on(async { Client::from_store(store).step("fanout/latest/work").unwrap().tasks().unwrap().len() });
    assert_eq!(n, 4);
}

#[test]
fn open_by_location() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    fixtures::fanout(&store, 2).unwrap();
    // `BRAID_STORE` itself is exercised by the CLI's tests, in child processes.
    let located = Store::resolve_location(Some(dir.path().to_str().unwrap()));
    let client = Client::open(&located).unwrap();
    assert_eq!(client.location(), dir.path().to_str().unwrap());
    assert_eq!(client.flows().unwrap().len(), 1);
    assert!(Client::open("memory:").unwrap().flows().unwrap().is_empty());
}

/// Record reads (queries) of `read` on a fresh client over a fanout run of `n` items.
fn record_reads(n: u64, read: impl Fn(&Client, &FanoutRun)) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    let f = fixtures::fanout(&store, n).unwrap();
    let faults = Faults::new();
    let client = Client::from_store(faults.wrap(store));
    let before = faults.calls(Op::RecordRead);
    read(&client, &f);
    faults.calls(Op::RecordRead) - before
}

/// One artifact from each task of a step is one query per page of 1,000 tasks (plus the
/// step's lookup): never one query per task, and never the whole step in one read (it is
/// held a page at a time). (Its speed is measured by the orchestration bench: `cargo
/// xtask bench`.)
#[test]
fn reading_one_artifact_from_each_task_takes_one_query_per_thousand_tasks() {
    let values = |client: &Client, f: &FanoutRun| {
        let work = client.step(&format!("fanout/{}/work", f.run)).unwrap();
        let values: Vec<(u64, u64)> = work.artifact_values("out").unwrap();
        let n = f.work.len() as u64;
        assert_eq!(values.len() as u64, n);
        assert_eq!(values[values.len() - 1], (n - 1, (n - 1) * (n - 1)));
        assert_eq!(work.artifact_previews("out").unwrap().len() as u64, n);
        let t = work.task_by_index(7).unwrap();
        assert_eq!(t.data::<u64>("out").unwrap(), 49);
    };
    let small = record_reads(10, values);
    let large = record_reads(10_000, values);
    eprintln!("record reads: {small} for 10 tasks, {large} for 10,000");
    // The step: its flow, the latest run, the run's step summaries (3); the values and
    // the previews one query per page each (1 page of 10, 10 pages of 1,000); the task by
    // index, then its artifacts (2).
    assert_eq!(small, 3 + 2 + 2, "record reads for 10 tasks");
    assert_eq!(large, 3 + 2 * 10 + 2, "record reads for 10,000 tasks");

    // A step's values read one by one do cost a query per task: the count sees them.
    let one_by_one = |client: &Client, f: &FanoutRun| {
        let work = client.step(&format!("fanout/{}/work", f.run)).unwrap();
        for i in 0..f.work.len() as u64 {
            assert_eq!(work.task_by_index(i).unwrap().data::<u64>("out").unwrap(), i * i);
        }
    };
    assert!(record_reads(100, one_by_one) >= 200);
}

#[test]
fn large_values_come_from_blobs_and_previews_are_cut() {
    on_each_store(|store, client| {
        let mut w = RunWriter::start(store, "big", None, BTreeMap::new()).unwrap();
        let start = w.task(TaskSpec::new("start").set_sequence("parts", &vec![0u8, 1]).unwrap()).unwrap();
        for i in 0..2u64 {
            let big: Vec<u64> = (0..5_000).map(|x| x * (i + 1)).collect();
            w.task(
                TaskSpec::new("crunch")
                    .parent(start)
                    .foreach("start", start, "parts", i, 2)
                    .set("big", &big)
                    .unwrap()
                    .set("small", &i)
                    .unwrap(),
            )
            .unwrap();
        }
        let client = client();
        let step = client.step("big/latest/crunch").unwrap();
        let t = step.task_by_index(1).unwrap();
        let big = t.artifact("big").unwrap();
        assert!(big.size() > braid_store::INLINE_VALUE_MAX as u64);
        assert!(big.record().inline.is_none());
        assert!(t.artifact("small").unwrap().record().inline.is_some());
        assert_eq!(big.data::<Vec<u64>>().unwrap()[4_999], 9_998);
        assert!(big.preview_truncated());
        assert!(big.preview().as_str().unwrap().contains("preview cut"));
        let all: Vec<(u64, Vec<u64>)> = step.artifact_values("big").unwrap();
        assert_eq!((all[0].1[10], all[1].1[10]), (10, 20));
        let small: Vec<(u64, u64)> = step.artifact_values("small").unwrap();
        assert_eq!(small, [(0, 0), (1, 1)]);
        assert_eq!(t.input::<u8>().unwrap(), 1);
    });
}

#[test]
fn the_stored_spec_gives_the_graph() {
    on_each_store(|store, client| {
        fixtures::fanout(store, 2).unwrap();
        let client = client();
        let graph = client.flow("fanout").unwrap().graph().unwrap().unwrap();
        assert_eq!(graph.steps().len(), 4);
        assert!(graph.to_mermaid().contains("work"));
        let mut w = RunWriter::start(store, "broken", Some(json!({"format_version": 1, "name": "broken", "steps": [{"name": "start", "next": {"type": "next", "to": "nowhere"}}]})), BTreeMap::new()).unwrap();
        w.finish(RunStatus::Succeeded, None).unwrap();
        let e = err_text(client.flow("broken").unwrap().graph());
        assert!(e.contains("broken") && e.contains("nowhere"), "{e}");
    });
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<Client>();
    check::<braid_client::Flow>();
    check::<braid_client::Run>();
    check::<braid_client::Step>();
    check::<braid_client::Task>();
    check::<braid_client::Artifact>();
    check::<Object>();
    fn error<T: Send + Sync + std::error::Error + 'static>() {}
    error::<Error>();
}

#[test]
fn a_steps_tasks_come_in_pages_and_as_compact_states() {
    on_each_store(|store, client| {
        let f = fixtures::fanout(store, 25).unwrap();
        let work = client().flow("fanout").unwrap().latest_run().unwrap().step("work").unwrap();

        let first = work.tasks_page(None, None, 10).unwrap();
        assert_eq!(first.items.len(), 10);
        assert_eq!(first.items[0].id(), f.work[0]);
        let second = work.tasks_page(None, first.next.as_deref(), 10).unwrap();
        assert_eq!(second.items[0].id(), f.work[10]);
        let third = work.tasks_page(None, second.next.as_deref(), 10).unwrap();
        assert_eq!(third.items.len(), 5);
        assert_eq!(third.next, None);
        assert!(work.tasks_page(Some(TaskStatus::Failed), None, 10).unwrap().items.is_empty());
        let bad = work.tasks_page(None, Some("not-a-cursor"), 10).unwrap_err();
        assert!(bad.to_string().contains("cursor"), "{bad}");

        let states = work.task_states().unwrap();
        assert_eq!(states.len(), 25);
        assert_eq!(states[7].task, f.work[7]);
        assert_eq!(states[7].indexes, vec![7]);
        assert_eq!(states[7].status, TaskStatus::Succeeded);
        assert_eq!(states[1].attempt.0, 2, "the fixture's index 1 needed two attempts");
    });
}
