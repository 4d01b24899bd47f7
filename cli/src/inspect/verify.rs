//! `braid verify`: the integrity check of an fs store (see `braid_store::fs::check` for
//! what is checked). One line per damaged file or record, then a summary; exit 1 if
//! anything is damaged.

use std::path::Path;

use braid_store::MEMORY_LOCATION;
use serde_json::json;

use super::error::{Error, Result};
use super::output::Out;

pub fn verify(location: &str, out: &Out) -> Result<()> {
    if location == MEMORY_LOCATION {
        if out.json {
            return out.json(&json!({
                "store": location, "ok": true, "problems": [], "notes": [],
                "note": "a memory: store lives only in the process that opened it: nothing to verify",
            }));
        }
        return out.line("memory: store: nothing to verify (it lives only in the process that opened it)");
    }
    let root = Path::new(location);
    let no_store =
        |reason: String| Error::Client(braid_client::Error::NoStore { location: location.to_owned(), reason });
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return Err(no_store(
            "braid verify checks an embedded store's files and rows; a PostgreSQL store is kept sound by the \
             server (use its page checksums and the amcheck extension), and every blob read is verified \
             against its hash whatever the backend"
                .to_owned(),
        ));
    }
    if !root.is_dir() {
        return Err(no_store(format!("{} is not a directory", root.display())));
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(Error::Runtime)?;
    let report = rt.block_on(braid_store::fs::check(root)).map_err(|e| match e {
        // Neither the store's format marker nor its record database is there.
        braid_store::Error::NotFound { .. } => no_store(format!(
            "{} holds neither a store's format marker nor its record database, so it is not a braid store",
            root.display()
        )),
        e => Error::Store { context: format!("cannot verify the store at {location}"), source: e },
    })?;
    let files: std::collections::BTreeSet<&str> = report.problems.iter().map(|p| p.path.as_str()).collect();
    let summary = if report.problems.is_empty() {
        format!(
            "store {location}: ok: {} rows and {} blobs checked{}",
            report.rows_checked,
            report.blobs_checked,
            unchecked(report.rows_unchecked)
        )
    } else {
        format!(
            "store {location}: {} problem{} in {} file{} ({} rows and {} blobs checked{})",
            report.problems.len(),
            plural(report.problems.len()),
            files.len(),
            plural(files.len()),
            report.rows_checked,
            report.blobs_checked,
            unchecked(report.rows_unchecked)
        )
    };
    if out.json {
        out.json(&json!({
            "store": location,
            "ok": report.problems.is_empty(),
            "problems": report.problems,
            "notes": report.notes,
            "rows_checked": report.rows_checked,
            "rows_unchecked": report.rows_unchecked,
            "blobs_checked": report.blobs_checked,
            "summary": summary,
        }))?;
    } else {
        for p in &report.problems {
            out.line(&format!("{}: {}", p.path, p.what))?;
        }
        for n in &report.notes {
            out.note(&format!("note: {}: {}", n.path, n.what));
        }
        out.line(&summary)?;
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Damaged { location: location.to_owned(), problems: report.problems.len() })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn unchecked(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {n} rows written before row checksums could only be decoded, not checked byte for byte")
    }
}
