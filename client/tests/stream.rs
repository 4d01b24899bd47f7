#![allow(clippy::unwrap_used)]
//! The streaming forms of the client's bulk reads: the same items in the same order as
//! the `Vec` forms, fetched a page at a time and only when needed, errors yielded once.

use std::collections::BTreeMap;

use braid_client::fixtures::{self, RunWriter, TaskSpec};
use braid_client::{Client, Error, RunFilter, RunStatus, Tag, TaskId};
use braid_store::Store;
use braid_store::faults::{Faults, Op};

/// Runs `test` on a fresh memory store and on a fresh fs store.
fn on_each_store(test: impl Fn(&Store)) {
    test(&Store::memory());
    let dir = tempfile::tempdir().unwrap();
    test(&Store::open_fs(dir.path()).unwrap());
}

#[test]
fn a_steps_tasks_entries_and_values_stream_in_the_order_and_with_the_items_of_the_whole_reads() {
    on_each_store(|store| {
        // 2,500 branches: three pages of 1,000.
        let f = fixtures::fanout(store, 2_500).unwrap();
        let work = Client::from_store(store.clone()).step("fanout/latest/work").unwrap();

        let streamed: Vec<TaskId> = work.tasks_iter().map(|t| t.unwrap().id()).collect();
        assert_eq!(streamed, f.work);
        let whole: Vec<TaskId> = work.tasks().unwrap().iter().map(|t| t.id()).collect();
        assert_eq!(streamed, whole);

        let entries: Vec<_> = work.artifact_entries_iter("out").map(Result::unwrap).collect();
        assert_eq!(entries.len(), 2_500);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.index, Some(i as u64));
            assert_eq!(e.task, f.work[i]);
            assert_eq!(e.artifact.preview(), serde_json::json!(i * i));
            assert!(!e.artifact.is_inherited());
        }
        let whole = work.artifact_entries("out").unwrap();
        assert_eq!(
            entries.iter().map(|e| (e.task, e.index, e.record().clone())).collect::<Vec<_>>(),
            whole.iter().map(|e| (e.task, e.index, e.record().clone())).collect::<Vec<_>>()
        );

        let values: Vec<(u64, u64)> = work.artifact_values_iter("out").map(Result::unwrap).collect();
        assert_eq!(values, (0..2_500u64).map(|i| (i, i * i)).collect::<Vec<_>>());
        assert_eq!(values, work.artifact_values::<u64>("out").unwrap());
        let notes: Vec<(u64, String)> = work.artifact_values_iter("note").map(Result::unwrap).collect();
        assert_eq!(notes[2_001], (2_001, "item 2001".to_owned()));

        let run = work.run().unwrap();
        let all: Vec<TaskId> = run.tasks_iter().map(|t| t.unwrap().id()).collect();
        assert_eq!(all.len(), 2_500 + 3, "start, the branches, join and end");
        assert_eq!(all, run.tasks().unwrap().iter().map(|t| t.id()).collect::<Vec<_>>());
    });
}

#[test]
fn a_task_that_did_not_set_a_name_streams_the_value_it_inherits_from_its_parent() {
    on_each_store(|store| {
        let mut w = RunWriter::start(store, "inherit", None, BTreeMap::new()).unwrap();
        let n = 2_100u64;
        let start = w
            .task(
                TaskSpec::new("start")
                    .set_sequence("items", &(0..n).collect::<Vec<u64>>())
                    .unwrap()
                    .set("out", &7u64)
                    .unwrap(),
            )
            .unwrap();
        // Even branches set `out`; odd ones see `start`'s.
        let specs = (0..n)
            .map(|i| {
                let spec = TaskSpec::new("work").parent(start).foreach("start", start, "items", i, n);
                if i % 2 == 0 { spec.set("out", &(i * 10)).unwrap() } else { spec }
            })
            .collect();
        let branches = w.tasks(specs).unwrap();
        w.finish(RunStatus::Succeeded, None).unwrap();
        let work = Client::from_store(store.clone()).step("inherit/latest/work").unwrap();

        let entries: Vec<_> = work.artifact_entries_iter("out").map(Result::unwrap).collect();
        assert_eq!(entries.len(), n as usize);
        for (i, e) in entries.iter().enumerate() {
            let i = i as u64;
            assert_eq!((e.index, e.task), (Some(i), branches[i as usize]));
            let (value, set_by) = if i % 2 == 0 { (i * 10, e.task) } else { (7, start) };
            assert_eq!(e.artifact.data::<u64>().unwrap(), value, "index {i}");
            assert_eq!(e.artifact.set_by(), set_by, "index {i}");
            assert_eq!(e.artifact.is_inherited(), i % 2 == 1);
        }
        let values: Vec<(u64, u64)> = work.artifact_values_iter("out").map(Result::unwrap).collect();
        assert_eq!(values[2_001], (2_001, 7));
        assert_eq!(values[2_002], (2_002, 20_020));
        assert_eq!(work.artifact_previews("out").unwrap()[1_999], (1_999, serde_json::json!(7)));
    });
}

#[test]
fn a_stream_reads_a_page_only_when_the_previous_one_is_used_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    fixtures::fanout(&store, 10_000).unwrap();
    let faults = Faults::new();
    let client = Client::from_store(faults.wrap(store));
    let work = client.step("fanout/latest/work").unwrap();
    let reads = || faults.calls(Op::RecordRead);

    let before = reads();
    let entries = work.artifact_entries_iter("out");
    let tasks = work.tasks_iter();
    assert_eq!(reads(), before, "making a stream reads nothing");
    let first: Vec<_> = entries.take(1_000).map(Result::unwrap).collect();
    assert_eq!(first.len(), 1_000);
    assert_eq!(reads(), before + 1, "the first 1,000 entries are one page");
    let ten: Vec<_> = tasks.take(10).map(Result::unwrap).collect();
    assert_eq!(ten.len(), 10);
    assert_eq!(reads(), before + 2, "ten tasks are one page");

    let before = reads();
    assert_eq!(work.artifact_values_iter::<u64>("out").count(), 10_000);
    assert_eq!(reads(), before + 10, "a whole step of 10,000 is ten pages");
}

#[test]
fn a_stream_yields_its_error_once_and_ends() {
    on_each_store(|store| {
        fixtures::fanout(store, 30).unwrap();
        let work = Client::from_store(store.clone()).step("fanout/latest/work").unwrap();

        let mut malformed = work.artifact_entries_iter("no such/name");
        assert!(matches!(malformed.next(), Some(Err(Error::Invalid(_)))), "a malformed name is an error");
        assert!(malformed.next().is_none());

        let mut unknown = work.artifact_entries_iter("ouf");
        let e = unknown.next().unwrap().unwrap_err();
        assert!(e.to_string().contains("ouf") && e.to_string().contains("out"), "names what exists: {e}");
        assert!(unknown.next().is_none());
        assert_eq!(
            work.artifact_entries("ouf").unwrap_err().to_string(),
            e.to_string(),
            "the same error as the whole read"
        );

        let mut wrong_type = work.artifact_values_iter::<String>("out");
        let e = wrong_type.next().unwrap().unwrap_err();
        assert!(e.to_string().contains("u64"), "{e}");
        assert!(wrong_type.next().is_none(), "the first bad value ends the stream");
    });
}

#[test]
fn a_flows_runs_stream_newest_first_with_the_filter_and_limit_of_the_whole_read() {
    let store = Store::memory();
    let keep = Tag::new("keep").unwrap();
    let mut ids = Vec::new();
    for i in 0..1_203u64 {
        let mut w = RunWriter::start(&store, "many", None, BTreeMap::new()).unwrap();
        let status = if i % 3 == 0 { RunStatus::Failed } else { RunStatus::Succeeded };
        if i % 100 == 0 {
            w.update_run(|r| {
                r.tags.insert(keep.clone());
            })
            .unwrap();
        }
        w.finish(status, None).unwrap();
        ids.push(w.run_id());
    }
    ids.reverse();
    let faults = Faults::new();
    let client = Client::from_store(faults.wrap(store));
    let flow = client.flow("many").unwrap();

    let all: Vec<_> = flow.runs_iter(&RunFilter::new()).map(|r| r.unwrap().id()).collect();
    assert_eq!(all, ids, "every run, newest first, across pages of 500");
    assert_eq!(all, flow.runs().unwrap().iter().map(|r| r.id()).collect::<Vec<_>>());

    let failed = RunFilter::new().status(RunStatus::Failed);
    let streamed: Vec<_> = flow.runs_iter(&failed).map(|r| r.unwrap().id()).collect();
    assert_eq!(streamed.len(), 401);
    assert_eq!(streamed, flow.runs_matching(&failed).unwrap().iter().map(|r| r.id()).collect::<Vec<_>>());

    let tagged: Vec<_> = flow.runs_iter(&RunFilter::new().tag(keep)).map(|r| r.unwrap().id()).collect();
    assert_eq!(tagged.len(), 13);

    let before = faults.calls(Op::RecordRead);
    let three: Vec<_> = flow.runs_iter(&RunFilter::new().limit(3)).map(|r| r.unwrap().id()).collect();
    assert_eq!(three, ids[..3]);
    assert_eq!(faults.calls(Op::RecordRead), before + 1, "a limit of 3 reads one page of 3");
}
