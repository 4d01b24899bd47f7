//! `braid artifact PATHSPEC NAME [--json|--raw]`.

use std::io::Write;

use braid_client::{Client, Object, Pathspec, Step};
use comfy_table::Cell;
use serde_json::json;

use super::error::{Error, Result};
use super::output::{JsonStream, Out, cut};
use super::show::{index_needs_step, resolve_task};

/// `artifact STEP NAME --json`: `[{index, task, value}]`, each task's value written
/// as it is read.
fn step_values_json<W: Write>(step: &Step, name: &str, w: JsonStream<W>) -> Result<()> {
    w.array(step.artifact_entries_iter(name).map(|e| {
        let e = e?;
        Ok(json!({"task": e.task.0, "index": e.index, "value": e.artifact.preview()}))
    }))
}

pub fn artifact(
    client: &Client,
    out: &Out,
    pathspec: &Pathspec,
    name: &str,
    index: Option<u64>,
    raw: bool,
) -> Result<()> {
    // A step with several tasks and no --index: every task's value.
    if index.is_none()
        && let Object::Step(step) = client.resolve(pathspec)?
        && step.task_count() > 1
    {
        if raw {
            return Err(Error::Usage(format!(
                "--raw writes one task's bytes, but {} has {} tasks: add --index N or give a task pathspec",
                step.pathspec(),
                step.task_count()
            )));
        }
        if out.json {
            return step_values_json(&step, name, out.json_stream());
        }
        let entries = step.artifact_entries(name)?;
        let mut t = out.table(&["INDEX", "TASK", "VALUE"]);
        for e in &entries {
            t.add_row(vec![
                Cell::new(e.index.map_or("-".to_owned(), |i| i.to_string())),
                Cell::new(e.task),
                Cell::new(cut(e.artifact.preview_text(), 100)),
            ]);
        }
        return out.table_out(&t);
    }
    if index.is_some() && pathspec.task.is_some() {
        return Err(index_needs_step(pathspec));
    }
    let task = resolve_task(client, pathspec, index)?;
    let artifact = task.artifact(name)?;
    if raw {
        if out.tty {
            return Err(Error::Usage(format!(
                "--raw writes the binary envelope of `{name}` ({} bytes); redirect stdout to a file",
                artifact.size()
            )));
        }
        let bytes = artifact.bytes()?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&bytes)?;
        stdout.flush()?;
        return Ok(());
    }
    if artifact.preview_truncated() {
        out.note(&format!(
            "note: the preview of `{name}` ({}, {} bytes) was cut when it was written; `--raw` gives the whole stored value",
            artifact.type_name(),
            artifact.size()
        ));
    }
    let value = artifact.preview();
    if out.json {
        return out.json(&value);
    }
    // One line when it fits, else indented.
    let compact = value.to_string();
    let fits = compact.chars().count() <= usize::from(out.width.unwrap_or(100));
    let text = if fits {
        compact
    } else {
        serde_json::to_string_pretty(&value).map_err(|e| Error::Io(std::io::Error::other(e)))?
    };
    out.line(&text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use braid_client::Store;
    use braid_client::fixtures;
    use serde_json::Value;

    use super::*;

    #[test]
    fn streamed_values_of_a_step_are_byte_for_byte_the_array_built_whole() {
        let store = Store::memory();
        fixtures::fanout(&store, 2_500).unwrap();
        let step = Client::from_store(store).step("fanout/latest/work").unwrap();
        for name in ["out", "note", "label"] {
            let entries = step.artifact_entries(name).unwrap();
            let whole: Vec<Value> = entries
                .iter()
                .map(|e| json!({"task": e.task.0, "index": e.index, "value": e.artifact.preview()}))
                .collect();
            let whole = serde_json::to_string_pretty(&Value::Array(whole)).unwrap() + "\n";
            let mut buf = Vec::new();
            step_values_json(&step, name, JsonStream::new(&mut buf)).unwrap();
            assert!(String::from_utf8(buf).unwrap() == whole, "`{name}` differs from the whole array");
        }
    }

    #[test]
    fn an_unknown_name_is_an_error_before_anything_is_written() {
        let store = Store::memory();
        fixtures::fanout(&store, 3).unwrap();
        let step = Client::from_store(store).step("fanout/latest/work").unwrap();
        let mut buf = Vec::new();
        let e = step_values_json(&step, "ouf", JsonStream::new(&mut buf)).unwrap_err();
        assert!(e.to_string().contains("ouf"), "{e}");
        assert!(buf.is_empty(), "nothing written: {}", String::from_utf8_lossy(&buf));
    }
}
