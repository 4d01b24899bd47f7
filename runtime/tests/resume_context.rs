//! What a step knows of its run: whether it is a resume and of which run
//! (`ctx.origin_run`, `ctx.is_resumed`), tags that survive a resume, and tags a step puts
//! on its run (`ctx.add_tag`, `ctx.remove_tag`).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use braid_core::{RunStatus, Tag};
use braid_runtime::{Flow, Resume, RunOptions};
use common::*;

/// start -> check -> end. `check` records what it knows of the run, tags the run
/// `needs-review` and `刺身 means sashimi`, removes `draft`, and fails while `fail` is set.
fn flow(fail: Arc<AtomicBool>) -> Arc<Flow> {
    Arc::new(
        Flow::builder("ctxflow")
            .step("start", |_ctx| async move { Ok(()) })
            .next("check")
            .step("check", move |ctx| {
                let fail = fail.clone();
                async move {
                    ctx.set("origin", &ctx.origin_run().map(|r| r.to_string()))?;
                    ctx.set("resumed", &ctx.is_resumed())?;
                    ctx.add_tag("needs-review").await?;
                    ctx.add_tag("刺身 means sashimi").await?;
                    ctx.remove_tag("draft").await?;
                    let bad = ctx.add_tag("two\nlines").await.unwrap_err().to_string();
                    ctx.set("bad_tag_error", &bad)?;
                    if fail.load(Ordering::SeqCst) {
                        return Err("not yet".into());
                    }
                    Ok(())
                }
            })
            .next("end")
            .step("end", |_ctx| async move { Ok(()) })
            .end()
            .build()
            .unwrap(),
    )
}

fn tags(list: &[&str]) -> Vec<Tag> {
    list.iter().map(|t| Tag::new(t).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_knows_its_run_is_a_resume_and_tags_survive_the_resume() {
    let (store, _d) = fs_store();
    let fail = Arc::new(AtomicBool::new(true));
    let f = flow(fail.clone());
    let opts = RunOptions { env_params: false, tags: tags(&["important", "draft"]), ..Default::default() };
    let first = braid_runtime::run(f.clone(), store.clone(), opts).await.unwrap();
    assert_eq!(first.status, RunStatus::Failed);
    let rec = store.records.get_run(f.name(), first.run_id).await.unwrap().unwrap();
    let names: Vec<&str> = rec.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(names, ["important", "needs-review", "刺身 means sashimi"], "the step's tags are on the run at once");
    let check = only_task(&store, "ctxflow", first.run_id, "check").await;
    let error = check.error.unwrap().message;
    assert!(error.contains("not yet"), "{error}");

    // Tag the failed run by hand too, then resume it: its tags come along.
    store.records.update_tags(f.name(), first.run_id, &tags(&["owner: data team"]), &[]).await.unwrap();
    fail.store(false, Ordering::SeqCst);
    let opts = RunOptions {
        env_params: false,
        tags: tags(&["retry"]),
        resume: Some(Resume { origin: Some(first.run_id), from: None, force: false }),
        ..Default::default()
    };
    let second = braid_runtime::run(f.clone(), store.clone(), opts).await.unwrap();
    assert_ok(&second);
    let rec = store.records.get_run(f.name(), second.run_id).await.unwrap().unwrap();
    let names: Vec<&str> = rec.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(names, ["important", "needs-review", "owner: data team", "retry", "刺身 means sashimi"]);
    assert_eq!(rec.origin_run, Some(first.run_id));

    let check = only_task(&store, "ctxflow", second.run_id, "check").await;
    let origin: Option<String> = value(&store, "ctxflow", second.run_id, check.key.task, "origin").await;
    assert_eq!(origin, Some(first.run_id.to_string()));
    assert!(value::<bool>(&store, "ctxflow", second.run_id, check.key.task, "resumed").await);
    let bad: String = value(&store, "ctxflow", second.run_id, check.key.task, "bad_tag_error").await;
    assert!(bad.contains("step `check` cannot tag its run") && bad.contains("control character U+000A"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_run_is_not_a_resume() {
    let (store, _d) = fs_store();
    let f = flow(Arc::new(AtomicBool::new(false)));
    let s = braid_runtime::run(f, store.clone(), RunOptions { env_params: false, ..Default::default() }).await.unwrap();
    assert_ok(&s);
    let check = only_task(&store, "ctxflow", s.run_id, "check").await;
    assert_eq!(value::<Option<String>>(&store, "ctxflow", s.run_id, check.key.task, "origin").await, None);
    assert!(!value::<bool>(&store, "ctxflow", s.run_id, check.key.task, "resumed").await);
}
