//! `braid tag add|remove RUN TAG...`: a run's tags, written through a [`TagWriter`].

use braid_client::{Client, Pathspec, PathspecDepth, Tag, TagWriter};

use super::error::{Error, Result};
use super::json;
use super::output::Out;

/// Adds `tags` to the run `run` names (`add`), or removes them, and prints its tags after.
pub fn tag(client: &Client, writer: TagWriter, out: &Out, run: &Pathspec, tags: &[Tag], add: bool) -> Result<()> {
    if run.depth() != PathspecDepth::Run {
        return Err(Error::Usage(format!("tags belong to runs: give flow/run (the run may be `latest`), not {run}")));
    }
    let run = client.resolve(run)?.into_run(&run.to_string())?;
    let run = if add { writer.add(&run, tags)? } else { writer.remove(&run, tags)? };
    if out.json {
        return out.json(&json::run(&run));
    }
    let tags = super::output::tags_text(run.tags());
    out.line(&format!("{}: tags {}", run.pathspec(), if tags.is_empty() { "(none)".to_owned() } else { tags }))
}
