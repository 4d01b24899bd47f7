//! `braid copy --from LOC [--from-blobs B] --to LOC [--blobs B]`: copies everything a
//! store holds into another (e.g. `./.braid` into PostgreSQL + S3): flows, plans (every
//! version, labels, activation, cursor), launches, and every run with its tasks,
//! attempts, artifact rows, blobs and logs.
//!
//! Idempotent and resumable. Per run, the order keeps a partial copy consistent: the
//! blobs first, then the task records that reference them (with attempts and artifact
//! rows), then the logs, and the run's own record last. A run whose record is at the
//! destination as at the source (revision aside: each store numbers its own writes) was
//! copied whole and is skipped; one interrupted half way is copied again, and records
//! already equal are not written again. A second copy changes nothing.

use std::collections::BTreeMap;

use braid_client::{RunQuery, TaskRecord};
use braid_core::Timestamp;
use braid_store::{
    ArtifactRecord, BlobKey, LaunchQuery, PlanDraft, PlanQuery, PlanSelector, Precondition, RunRecord, Store,
    TaskQuery, TaskWrite,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::output::Out;
use super::{Error, Result};

/// What one copy did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Copied {
    pub flows: u64,
    pub plan_versions: u64,
    pub launches: u64,
    pub runs: u64,
    pub runs_unchanged: u64,
    pub tasks: u64,
    pub blobs: u64,
    pub log_lines: u64,
}

fn store_err(context: impl Into<String>) -> impl FnOnce(braid_store::Error) -> Error {
    let context = context.into();
    move |source| Error::Store { context, source }
}

/// Opens both stores and copies; prints what was copied.
pub fn copy(out: &Out, from: &str, from_blobs: Option<&str>, to: &str, to_blobs: Option<&str>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)?;
    let copied = rt.block_on(async {
        if !from.contains("://") && from != braid_store::MEMORY_LOCATION {
            let root = std::path::Path::new(from);
            if !braid_store::fs::is_store(root) {
                return Err(Error::Usage(format!(
                    "--from {from}: no braid store there; give the directory of an existing store"
                )));
            }
        }
        let source = Store::connect(from, from_blobs)
            .await
            .map_err(store_err(format!("cannot open the source store {from}")))?;
        let dest =
            Store::connect(to, to_blobs).await.map_err(store_err(format!("cannot open the destination store {to}")))?;
        let bar = if out.json || !out.stderr_tty { ProgressBar::hidden() } else { ProgressBar::new(0) };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} runs ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let r = copy_all(&source, &dest, &bar).await;
        bar.finish_and_clear();
        r
    })?;
    if out.json {
        out.json(&json!({ "from": dest_shown(from), "to": dest_shown(to), "copied": copied }))
    } else {
        out.line(&format!(
            "copied {} run(s) ({} already there), {} task record(s), {} blob(s), {} log line(s), {} flow(s), {} plan version(s), {} launch(es) from {} to {}",
            copied.runs,
            copied.runs_unchanged,
            copied.tasks,
            copied.blobs,
            copied.log_lines,
            copied.flows,
            copied.plan_versions,
            copied.launches,
            dest_shown(from),
            dest_shown(to)
        ))
    }
}

fn dest_shown(to: &str) -> String {
    match to.split_once("://").and_then(|(s, rest)| Some((s, rest.split_once('@')?))) {
        Some((s, (auth, host))) if auth.contains(':') => {
            format!("{s}://{}:***@{host}", auth.split(':').next().unwrap_or(""))
        }
        _ => to.to_owned(),
    }
}

async fn copy_all(source: &Store, dest: &Store, bar: &ProgressBar) -> Result<Copied> {
    let mut copied = Copied::default();
    let flows = source.records.list_flows().await.map_err(store_err("list the source's flows"))?;
    let dest_flows: BTreeMap<String, _> = dest
        .records
        .list_flows()
        .await
        .map_err(store_err("list the destination's flows"))?
        .into_iter()
        .map(|f| (f.name.to_string(), f))
        .collect();
    for f in &flows {
        if dest_flows.get(f.name.as_str()) != Some(f) {
            dest.records.put_flow(f.clone()).await.map_err(store_err(format!("copy flow {}", f.name)))?;
            copied.flows += 1;
        }
    }
    copy_plans(source, dest, &mut copied).await?;

    // Runs of every registered flow (every run's binary registers its flow's spec when
    // it starts; runs of a flow never registered are not found, and not copied).
    let mut names: Vec<_> = flows.iter().map(|f| f.name.clone()).collect();
    names.sort();
    names.dedup();
    let mut runs = Vec::new();
    for flow in &names {
        let mut q = RunQuery { limit: 500, ..Default::default() };
        loop {
            let page = source.records.list_runs(flow, &q).await.map_err(store_err(format!("list runs of {flow}")))?;
            runs.extend(page.items);
            match page.next {
                Some(n) => q.after = Some(n),
                None => break,
            }
        }
    }
    bar.set_length(runs.len() as u64);
    // Oldest first, so an interrupted copy has the older history complete.
    runs.reverse();
    for run in &runs {
        bar.set_message(format!("{}/{}", run.flow, run.id));
        copy_run(source, dest, run, &mut copied).await?;
        bar.inc(1);
    }
    copy_launches(source, dest, &mut copied).await?;
    Ok(copied)
}

async fn copy_plans(source: &Store, dest: &Store, copied: &mut Copied) -> Result<()> {
    let plans = source.plans.list_plans(&PlanQuery::default()).await.map_err(store_err("list the source's plans"))?;
    for plan in plans {
        let versions =
            source.plans.list_plan_versions(&plan.name).await.map_err(store_err(format!("list plan {}", plan.name)))?;
        let have = dest
            .plans
            .list_plan_versions(&plan.name)
            .await
            .map_err(store_err(format!("list plan {} at the destination", plan.name)))?;
        for v in versions.iter().skip(have.len()) {
            let draft = PlanDraft {
                name: v.name.clone(),
                flow: plan.flow.clone(),
                labels: v.labels.clone(),
                spec: v.spec.clone(),
                hash: v.hash.clone(),
                active: plan.active,
            };
            dest.plans
                .register_plans(vec![draft], v.created_at)
                .await
                .map_err(store_err(format!("copy plan {} version {}", v.name, v.version)))?;
            copied.plan_versions += 1;
        }
        let there = dest.plans.get_plan(&plan.name).await.map_err(store_err(format!("read plan {}", plan.name)))?;
        if there.as_ref().is_some_and(|t| t.active != plan.active) {
            let since = plan.active_since.unwrap_or_else(Timestamp::now);
            dest.plans
                .set_plans_active(&PlanSelector::Names(vec![plan.name.clone()]), plan.active, since)
                .await
                .map_err(store_err(format!("copy the activation of plan {}", plan.name)))?;
        }
        if let Some(cursor) = plan.cursor {
            dest.plans
                .advance_cursors(vec![(plan.name.clone(), cursor)])
                .await
                .map_err(store_err(format!("copy the cursor of plan {}", plan.name)))?;
        }
    }
    Ok(())
}

async fn copy_launches(source: &Store, dest: &Store, copied: &mut Copied) -> Result<()> {
    let mut q = LaunchQuery { limit: 1000, ..Default::default() };
    loop {
        let page = source.plans.list_launches(&q).await.map_err(store_err("list the source's launches"))?;
        let Some(last) = page.last() else { break };
        q.before_tick = Some(last.tick);
        let full = page.len() == q.limit;
        for l in page {
            match dest.plans.get_launch(&l.key).await.map_err(store_err(format!("read launch {}", l.key)))? {
                None => {
                    let won = dest
                        .plans
                        .claim_launches(vec![l.clone()])
                        .await
                        .map_err(store_err(format!("copy launch {}", l.key)))?;
                    copied.launches += u64::from(won.first().copied().unwrap_or(false));
                }
                Some(there) if there != l => {
                    dest.plans
                        .update_launch(&l, there.state, there.holder.as_deref())
                        .await
                        .map_err(store_err(format!("copy launch {}", l.key)))?;
                    copied.launches += 1;
                }
                Some(_) => {}
            }
        }
        if !full {
            break;
        }
    }
    Ok(())
}

fn same_run(a: &RunRecord, b: &RunRecord) -> bool {
    RunRecord { revision: 0, ..a.clone() } == RunRecord { revision: 0, ..b.clone() }
}

fn same_task(a: &TaskRecord, b: &TaskRecord) -> bool {
    TaskRecord { revision: 0, ..a.clone() } == TaskRecord { revision: 0, ..b.clone() }
}

async fn copy_blob(source: &Store, dest: &Store, key: &BlobKey, copied: &mut Copied) -> Result<()> {
    if dest.blobs.exists(key).await.map_err(store_err(format!("look up blob {key} at the destination")))? {
        return Ok(());
    }
    // Streamed: a large value never sits in memory whole (each read verified as it goes).
    let mut reader = source.blobs.get_stream(key).await.map_err(store_err(format!("read blob {key}")))?;
    let (got, _) = dest.blobs.put_stream(&mut reader).await.map_err(store_err(format!("copy blob {key}")))?;
    if got != *key {
        return Err(Error::Failed(format!("blob {key} read back as {got} from the source: it is damaged there")));
    }
    copied.blobs += 1;
    Ok(())
}

async fn copy_run(source: &Store, dest: &Store, run: &RunRecord, copied: &mut Copied) -> Result<()> {
    let what = format!("{}/{}", run.flow, run.id);
    let there = dest.records.get_run(&run.flow, run.id).await.map_err(store_err(format!("read run {what}")))?;
    if there.as_ref().is_some_and(|t| same_run(t, run)) {
        copied.runs_unchanged += 1;
        return Ok(());
    }
    let mut q = TaskQuery { limit: 1000, ..Default::default() };
    loop {
        let page = source
            .records
            .list_tasks(&run.flow, run.id, &q)
            .await
            .map_err(store_err(format!("list tasks of {what}")))?;
        let dest_page = dest
            .records
            .list_tasks(&run.flow, run.id, &TaskQuery { limit: 1001, after: q.after.clone(), ..Default::default() })
            .await
            .map_err(store_err(format!("list tasks of {what} at the destination")))?;
        let have: BTreeMap<_, _> = dest_page.items.into_iter().map(|t| (t.key.task, t)).collect();
        let mut writes = Vec::new();
        for task in &page.items {
            let id = task.key.task;
            let artifacts: Vec<ArtifactRecord> = source
                .records
                .task_artifacts(&run.flow, run.id, id)
                .await
                .map_err(store_err(format!("read artifacts of {what}/{id}")))?;
            let attempts = source
                .records
                .list_attempts(&run.flow, run.id, id)
                .await
                .map_err(store_err(format!("read attempts of {what}/{id}")))?;
            if let Some(t) = have.get(&id)
                && same_task(t, task)
            {
                let dest_arts = dest
                    .records
                    .task_artifacts(&run.flow, run.id, id)
                    .await
                    .map_err(store_err(format!("read artifacts of {what}/{id} at the destination")))?;
                let dest_atts = dest
                    .records
                    .list_attempts(&run.flow, run.id, id)
                    .await
                    .map_err(store_err(format!("read attempts of {what}/{id} at the destination")))?;
                if dest_arts == artifacts && dest_atts == attempts {
                    continue;
                }
            }
            // Blobs before the rows that name them.
            for a in &artifacts {
                if a.inline.is_none() {
                    copy_blob(source, dest, &a.key, copied).await?;
                }
                if let Some(e) = &a.elements {
                    copy_blob(source, dest, &e.key, copied).await?;
                }
            }
            for attempt in &attempts {
                writes.push(TaskWrite { attempt: Some(attempt.clone()), ..TaskWrite::new(task.clone()) });
            }
            writes.push(TaskWrite {
                artifacts: Some(artifacts),
                precondition: Precondition::None,
                ..TaskWrite::new(task.clone())
            });
            copied.tasks += 1;
        }
        if !writes.is_empty() {
            let outcomes =
                dest.records.write_tasks(writes).await.map_err(store_err(format!("write tasks of {what}")))?;
            if let Some(o) = outcomes.iter().find(|o| !o.is_applied()) {
                return Err(Error::Failed(format!("a task write of {what} was refused at the destination: {o:?}")));
            }
        }
        // Logs: what the destination lacks of each task's lines.
        for task in &page.items {
            let id = task.key.task;
            let have_lines = dest
                .records
                .read_logs(&run.flow, run.id, id, 0, 0)
                .await
                .map_err(store_err(format!("read logs of {what}/{id} at the destination")))?
                .len() as u64;
            let lines = source
                .records
                .read_logs(&run.flow, run.id, id, have_lines, 0)
                .await
                .map_err(store_err(format!("read logs of {what}/{id}")))?;
            if !lines.is_empty() {
                copied.log_lines += lines.len() as u64;
                dest.records.append_logs(lines).await.map_err(store_err(format!("copy logs of {what}/{id}")))?;
            }
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    // The run's record last: its presence says the rest is there.
    match there {
        None => dest.records.create_run(run).await.map_err(store_err(format!("copy run {what}")))?,
        Some(t) => {
            dest.records
                .update_run(&RunRecord { revision: t.revision, ..run.clone() })
                .await
                .map_err(store_err(format!("copy run {what}")))?;
        }
    }
    copied.runs += 1;
    Ok(())
}
