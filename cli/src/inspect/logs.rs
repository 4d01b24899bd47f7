//! `braid logs PATHSPEC [--follow]`.

use std::time::Duration;

use braid_client::{Client, LogLine, Pathspec};
use serde_json::Value;

use super::error::Result;
use super::json;
use super::output::Out;
use super::show::{log_line, resolve_task};

/// How often `--follow` polls for new lines.
const POLL: Duration = Duration::from_millis(300);

pub fn logs(client: &Client, out: &Out, pathspec: &Pathspec, index: Option<u64>, follow: bool) -> Result<()> {
    let mut task = resolve_task(client, pathspec, index)?;
    let mut all: Vec<LogLine> = Vec::new();
    let mut last_seq = 0;
    let with_attempt = task.attempt().0 > 1;
    loop {
        // Read the status before the lines, so the lines read after a task ended are its last.
        let ended = task.status().is_terminal();
        let lines = task.logs_after(last_seq, 0)?;
        if let Some(l) = lines.last() {
            last_seq = l.seq;
        }
        if out.json {
            all.extend(lines);
        } else if !lines.is_empty() {
            let text: String = lines.iter().map(|l| format!("{}\n", log_line(l, with_attempt))).collect();
            out.print(&text)?;
        }
        if !follow || ended {
            break;
        }
        std::thread::sleep(POLL);
        task = task.refresh()?;
    }
    if out.json {
        return out.json(&Value::Array(all.iter().map(json::log).collect()));
    }
    if all.is_empty() && last_seq == 0 && !follow {
        out.note(&format!("{} has no log lines", task.pathspec()));
    }
    Ok(())
}
