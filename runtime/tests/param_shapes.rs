//! Parameters users expect: optional ones with no default (`Option<T>` in a step) and
//! lists (`--param sites=a,b,c`, repeated `--param sites=a --param sites=b`, another
//! separator), with every problem named at once.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use braid_runtime::{Flow, Param, ParamType, RunOptions};
use common::*;

fn flow() -> Arc<Flow> {
    Arc::new(
        Flow::builder("shapes")
            .param(Param::new("since", ParamType::String).optional().help("only changes after this date"))
            .param(Param::new("sites", ParamType::String).list())
            .param(Param::new("ids", ParamType::UInt).list_separated(";").default(vec![1u64, 2]))
            .step("start", |ctx| async move {
                let since: Option<String> = ctx.param("since")?;
                let sites: Vec<String> = ctx.param("sites")?;
                let ids: Vec<u64> = ctx.param("ids")?;
                ctx.set("seen", &(since, sites, ids))?;
                Ok(())
            })
            .next("end")
            .step("end", |_ctx| async move { Ok(()) })
            .end()
            .build()
            .unwrap(),
    )
}

type Seen = (Option<String>, Vec<String>, Vec<u64>);

async fn seen(params: &[(&str, &str)]) -> Seen {
    let (store, _d) = fs_store();
    let f = flow();
    let s = run(&f, &store, params).await;
    assert_ok(&s);
    let start = only_task(&store, "shapes", s.run_id, "start").await;
    value(&store, "shapes", s.run_id, start.key.task, "seen").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_parameter_left_out_is_none_and_lists_split_or_repeat() {
    assert_eq!(seen(&[("sites", "a, b,c")]).await, (None, vec!["a".into(), "b".into(), "c".into()], vec![1, 2]));
    assert_eq!(
        seen(&[("since", "2026-03-01"), ("sites", "a"), ("sites", "b,c"), ("ids", "7;8")]).await,
        (Some("2026-03-01".into()), vec!["a".into(), "b".into(), "c".into()], vec![7, 8])
    );
    assert_eq!(seen(&[("sites", "")]).await.1, Vec::<String>::new(), "empty text: an empty list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_out_optional_parameter_is_recorded_as_null_and_bad_items_are_named() {
    let (store, _d) = fs_store();
    let f = flow();
    let s = run(&f, &store, &[("sites", "a")]).await;
    let rec = store.records.get_run(f.name(), s.run_id).await.unwrap().unwrap();
    assert_eq!(rec.params["since"], serde_json::Value::Null);
    assert_eq!(rec.params["sites"], serde_json::json!(["a"]));

    let opts = RunOptions {
        env_params: false,
        params: vec![("ids".into(), "1;x;3".into()), ("since".into(), "x".into()), ("since".into(), "y".into())],
        ..Default::default()
    };
    let e = braid_runtime::run(f.clone(), store.clone(), opts).await.unwrap_err().to_string();
    for needle in [
        "--param ids=1;x;3: parameter `ids` expects an unsigned integer (u64), got \"1;x;3\" (item 2 of 3, \"x\"",
        "parameter `since` is given twice",
        "the flow requires parameter `sites` (string",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from {e}");
    }
    let typed = RunOptions {
        env_params: false,
        param_values: [("sites".to_owned(), serde_json::json!("a"))].into(),
        ..Default::default()
    };
    let e = braid_runtime::run(f, store, typed).await.unwrap_err().to_string();
    assert!(e.contains("\"a\" is a string, the flow's parameter `sites` is a list of items, each a string"), "{e}");
}
