//! `braid tag add|remove RUN TAG...`: the one write the `braid` command makes.

use braid_client::{Client, Pathspec, PathspecDepth, Tag};

use super::error::{Error, Result};
use super::json;
use super::output::Out;

pub fn tag(client: &Client, out: &Out, run: &Pathspec, add: &[Tag], remove: &[Tag]) -> Result<()> {
    if run.depth() != PathspecDepth::Run {
        return Err(Error::Usage(format!("tags belong to runs: give flow/run (the run may be `latest`), not {run}")));
    }
    let run = client.resolve(run)?.into_run(&run.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(Error::Runtime)?;
    let records = &client.store().records;
    rt.block_on(records.update_tags(run.flow_name(), run.id(), add, remove))
        .map_err(|e| Error::Store { context: format!("cannot update the tags of {}", run.pathspec()), source: e })?;
    let run = run.refresh()?;
    if out.json {
        return out.json(&json::run(&run));
    }
    let tags = run.tags().iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
    out.line(&format!("{}: tags {}", run.pathspec(), if tags.is_empty() { "(none)".to_owned() } else { tags }))
}
