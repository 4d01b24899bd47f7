//! `braid gc`: deletes old runs with everything recorded under them, then the blobs no
//! remaining artifact references, then gives the database's free pages back.
//!
//! Rules, in the order they are applied:
//! - Which runs: per flow, those beyond the newest `--keep-last N` (any status counts
//!   towards N) and/or created more than `--older-than` ago; with both, runs matching both.
//! - Never collected: a run tagged `keep`; a run not finished (pending or running: it
//!   may be going, or wait for `resume`); a run another remaining run was resumed from
//!   (its reused tasks point at that run's tasks, attempts and logs), for as long as that
//!   run remains — decided as a fixpoint, so a chain of resumes is collected only whole.
//! - Each run goes in one transaction, conditional on the revision it was judged at, so
//!   a run tagged, resumed or updated meanwhile is skipped, not lost.
//! - Blobs are content-addressed and shared between runs: after the runs are gone, one
//!   pass lists every key any remaining artifact row references (values and elements
//!   manifests) and deletes the other blobs, files and inline rows alike, but only those
//!   last stored longer ago than `--grace` (1 h): a running task stores its blobs before
//!   its artifact rows, and storing existing content again refreshes the time, so a blob
//!   about to be referenced is never taken. Age check and deletion are one step.
//! - Interrupted at any point, the store is consistent (a run is deleted whole or not at
//!   all; a blob only once nothing references it) and the next gc finishes the job.
//! - Last, free database pages go back to the file system in short transactions
//!   (`PRAGMA incremental_vacuum`; flows keep writing in between), and the WAL is
//!   truncated when no other process uses it. No full `VACUUM`: it would block every
//!   writer of the store for as long as it rewrites the file. A database made by an older
//!   braid (without incremental auto-vacuum) keeps its free pages for later writes.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use braid_core::{FlowName, RunId, Tag, Timestamp};
use braid_store::{BlobKey, RunDeletion, RunQuery, RunRecord, Store};
use clap::Args;
use serde_json::json;

use super::error::{Error, Result};
use super::output::{Out, size};

/// The tag that exempts a run from gc.
pub const KEEP_TAG: &str = "keep";

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).multiple(true).args(["keep_last", "older_than"])))]
pub struct GcArgs {
    /// Keep the newest N runs of each flow (any status counts); collect the older ones.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Collect runs created longer ago than DURATION, e.g. `30d`, `12h`, `90m`, `2w`, `1d 12h`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// Only runs of this flow.
    #[arg(long, value_name = "FLOW")]
    pub flow: Option<String>,
    /// Report what would be freed; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave unreferenced blobs stored less than DURATION ago (a running task's new blob
    /// is not referenced until its task ends). Under a minute is safe only when nothing
    /// writes to the store.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub grace: Duration,
}

/// `30d`, `12h`, `90m`, `1d 12h`, `2 weeks`: jiff's friendly duration format, days and
/// weeks counted as 24 h and 7 days.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let span: jiff::Span = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 30d, 12h, 90m, 2w or \"1d 12h\""))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("{s:?}: {e}; use weeks, days or smaller units (months and years have no fixed length)"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative; give an age, e.g. 30d"))
}

/// Why runs were not collected.
#[derive(Debug, Default)]
struct Spared {
    by_policy: u64,
    tagged_keep: u64,
    unfinished: u64,
    resumed_from: u64,
    changed_meanwhile: u64,
}

#[derive(Debug, Default)]
struct Freed {
    runs: Vec<String>,
    deleted: RunDeletion,
    blobs: u64,
    blob_bytes: u64,
    young_blobs: u64,
    young_bytes: u64,
    db_bytes: Option<u64>,
}

pub fn gc(store: &Store, location: &str, out: &Out, args: &GcArgs) -> Result<()> {
    let started = Instant::now();
    // The store's size on disk, for an embedded store (not `memory:` or `postgres://`).
    let on_disk = Some(Path::new(location).to_owned()).filter(|p| p.is_dir());
    let size_before = on_disk.as_deref().map(disk_usage);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    let (spared, freed) = rt.block_on(collect(store, args))?;
    let size_after = if args.dry_run { None } else { on_disk.as_deref().map(disk_usage) };
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        let d = &freed.deleted;
        let known = |n: u64| if args.dry_run { json!(null) } else { json!(n) };
        return out.json(&json!({
            "store": location,
            "dry_run": args.dry_run,
            "policy": {
                "keep_last": args.keep_last,
                "older_than_s": args.older_than.map(|d| d.as_secs()),
                "flow": args.flow,
                "grace_s": args.grace.as_secs(),
            },
            "runs": {
                "collected": freed.runs.len(),
                "kept_by_policy": spared.by_policy,
                "tagged_keep": spared.tagged_keep,
                "unfinished": spared.unfinished,
                "resumed_from": spared.resumed_from,
                "changed_meanwhile": spared.changed_meanwhile,
            },
            "collected": freed.runs,
            "tasks": d.tasks,
            "attempts": known(d.attempts),
            "artifacts": known(d.artifacts),
            "log_lines": known(d.log_lines),
            "blobs": {
                "deleted": freed.blobs,
                "bytes": freed.blob_bytes,
                "unreferenced_within_grace": freed.young_blobs,
                "unreferenced_within_grace_bytes": freed.young_bytes,
            },
            "database_bytes_given_back": freed.db_bytes,
            "size_before": size_before,
            "size_after": size_after,
            "seconds": seconds,
        }));
    }
    let (verb, blob_verb) = if args.dry_run { ("would collect", "would delete") } else { ("collected", "deleted") };
    let d = &freed.deleted;
    let detail = if args.dry_run {
        format!("{} tasks", d.tasks)
    } else {
        format!("{} tasks, {} attempts, {} artifact rows, {} log lines", d.tasks, d.attempts, d.artifacts, d.log_lines)
    };
    out.line(&format!("{verb} {} run{} ({detail})", freed.runs.len(), if freed.runs.len() == 1 { "" } else { "s" }))?;
    let mut never = Vec::new();
    for (n, why) in [
        (spared.tagged_keep, "tagged keep"),
        (spared.unfinished, "not finished"),
        (spared.resumed_from, "resumed from by a remaining run"),
        (spared.changed_meanwhile, "changed while gc ran"),
    ] {
        if n > 0 {
            never.push(format!("{n} {why}"));
        }
    }
    let never = if never.is_empty() { String::new() } else { format!("; spared: {}", never.join(", ")) };
    out.line(&format!(
        "kept {} run{} by the policy{never}",
        spared.by_policy,
        if spared.by_policy == 1 { "" } else { "s" }
    ))?;
    let young = if freed.young_blobs == 0 {
        String::new()
    } else {
        format!(
            "; left {} unreferenced blob{} ({}) stored within the last {} (--grace)",
            freed.young_blobs,
            if freed.young_blobs == 1 { "" } else { "s" },
            size(freed.young_bytes),
            human(args.grace)
        )
    };
    out.line(&format!(
        "{blob_verb} {} unreferenced blob{} ({}){young}",
        freed.blobs,
        if freed.blobs == 1 { "" } else { "s" },
        size(freed.blob_bytes),
    ))?;
    match (size_before, size_after) {
        (Some(b), Some(a)) => {
            let db = freed.db_bytes.map(|n| format!("; the database gave back {}", size(n))).unwrap_or_else(|| {
                "; the database keeps its free pages for later writes (made by an older braid)".into()
            });
            out.line(&format!("store on disk: {} -> {}{db} in {seconds:.2}s", size(b), size(a)))
        }
        (Some(b), None) => out.line(&format!("store on disk: {} (dry run: nothing deleted)", size(b))),
        _ => out.line(&format!("memory store: nothing on disk; {seconds:.2}s")),
    }
}

async fn collect(store: &Store, args: &GcArgs) -> Result<(Spared, Freed)> {
    let err = |context: String| move |e: braid_store::Error| Error::Store { context, source: e };
    let flows: Vec<FlowName> = match &args.flow {
        Some(f) => vec![FlowName::new(f).map_err(|e| Error::Usage(format!("--flow: {e}")))?],
        None => store
            .records
            .list_flows()
            .await
            .map_err(err("cannot list flows".into()))?
            .into_iter()
            .map(|f| f.name)
            .collect(),
    };
    let keep = Tag::new(KEEP_TAG).map_err(|e| Error::Failed(e.to_string()))?;
    let now = Timestamp::now().as_micros();
    let age_cutoff = args.older_than.map(|d| now.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)));
    let mut spared = Spared::default();
    let mut freed = Freed::default();
    let mut gone: HashSet<RunId> = HashSet::new();
    for flow in &flows {
        let runs = all_runs(store, flow).await?;
        let mut candidates: HashSet<RunId> = HashSet::new();
        for (i, r) in runs.iter().enumerate() {
            let by_count = args.keep_last.is_none_or(|n| i >= n);
            let by_age = age_cutoff.is_none_or(|c| r.created_at.as_micros() < c);
            if !(by_count && by_age) {
                spared.by_policy += 1;
            } else if r.tags.contains(&keep) {
                spared.tagged_keep += 1;
            } else if !r.status.is_terminal() {
                spared.unfinished += 1;
            } else {
                candidates.insert(r.id);
            }
        }
        // A run stays while a run resumed from it stays; repeat until nothing changes.
        let judged = candidates.len();
        loop {
            let pinned: HashSet<RunId> =
                runs.iter().filter(|r| !candidates.contains(&r.id)).filter_map(|r| r.origin_run).collect();
            let before = candidates.len();
            candidates.retain(|id| !pinned.contains(id));
            if candidates.len() == before {
                break;
            }
        }
        spared.resumed_from += (judged - candidates.len()) as u64;
        // Resumed runs go before their origins (newest first), so each delete's
        // in-store check (no remaining run resumed from it) holds.
        for r in runs.iter().filter(|r| candidates.contains(&r.id)) {
            let name = format!("{flow}/{}", r.id);
            if args.dry_run {
                let steps =
                    store.records.step_summaries(flow, r.id).await.map_err(err(format!("cannot read {name}")))?;
                freed.deleted.tasks += steps.iter().flat_map(|s| s.counts.values()).sum::<u64>();
            } else {
                match store.records.delete_run(flow, r.id, r.revision).await {
                    Ok(d) => {
                        freed.deleted.tasks += d.tasks;
                        freed.deleted.attempts += d.attempts;
                        freed.deleted.artifacts += d.artifacts;
                        freed.deleted.log_lines += d.log_lines;
                    }
                    Err(e) if e.is_conflict() || e.is_not_found() => {
                        tracing::info!(run = %name, error = %e, "run changed while gc ran; kept");
                        spared.changed_meanwhile += 1;
                        continue;
                    }
                    Err(e) => return Err(Error::Store { context: format!("cannot delete {name}"), source: e }),
                }
            }
            gone.insert(r.id);
            freed.runs.push(name);
        }
    }
    sweep_blobs(store, args, &gone, &mut freed).await?;
    if !args.dry_run {
        freed.db_bytes = store.records.compact().await.map_err(err("cannot compact the record database".into()))?;
    }
    Ok((spared, freed))
}

/// Every run of `flow`, newest first.
async fn all_runs(store: &Store, flow: &FlowName) -> Result<Vec<RunRecord>> {
    let mut runs = Vec::new();
    let mut q = RunQuery { limit: 1000, ..Default::default() };
    loop {
        let page = store
            .records
            .list_runs(flow, &q)
            .await
            .map_err(|e| Error::Store { context: format!("cannot list the runs of {flow}"), source: e })?;
        runs.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(n),
            None => return Ok(runs),
        }
    }
}

/// Deletes the blobs no remaining artifact row references and that were last stored
/// before the grace period. The references are listed after the runs are deleted, and
/// each blob's age is checked as it is deleted: see the module's rules.
async fn sweep_blobs(store: &Store, args: &GcArgs, gone: &HashSet<RunId>, freed: &mut Freed) -> Result<()> {
    let err = |context: &'static str| move |e: braid_store::Error| Error::Store { context: context.into(), source: e };
    let mut referenced: HashSet<BlobKey> = HashSet::new();
    let mut after = None;
    loop {
        let page = store.records.artifact_blob_refs(after, 10_000).await.map_err(err("cannot list blob references"))?;
        // In a dry run the collected runs' rows are still there: they do not count.
        referenced.extend(page.items.iter().filter(|r| !gone.contains(&r.run)).map(|r| r.key));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let grace = i64::try_from(args.grace.as_micros()).unwrap_or(i64::MAX);
    let cutoff = Timestamp::from_micros(Timestamp::now().as_micros().saturating_sub(grace));
    let mut doomed = Vec::new();
    let mut after = None;
    loop {
        let page = store.blobs.list(after, 1000).await.map_err(err("cannot list blobs"))?;
        for b in page.items.iter().filter(|b| !referenced.contains(&b.key)) {
            if b.put_at < cutoff {
                doomed.push((b.key, b.size));
            } else {
                freed.young_blobs += 1;
                freed.young_bytes += b.size;
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if args.dry_run {
        freed.blobs = doomed.len() as u64;
        freed.blob_bytes = doomed.iter().map(|(_, n)| n).sum();
        return Ok(());
    }
    for chunk in doomed.chunks(500) {
        let keys: Vec<BlobKey> = chunk.iter().map(|(k, _)| *k).collect();
        for n in
            store.blobs.delete_if_older(&keys, cutoff).await.map_err(err("cannot delete blobs"))?.into_iter().flatten()
        {
            freed.blobs += 1;
            freed.blob_bytes += n;
        }
    }
    Ok(())
}

/// Bytes of every file under `root` (the database, its WAL, blob files, temp files).
pub fn disk_usage(root: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                Ok(_) => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_read_in_the_friendly_format() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_duration("1d 12h").unwrap(), Duration::from_secs(36 * 3600));
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        for bad in ["", "3x", "thirty days", "12"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("e.g. 30d"), "{bad:?}: {e}");
        }
        assert!(parse_duration("1mo").unwrap_err().contains("fixed length"));
        assert!(parse_duration("-3d").unwrap_err().contains("negative"));
    }
}
