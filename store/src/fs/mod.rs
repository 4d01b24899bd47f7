//! The fs backend, braid's embedded default. On-disk layout of a store root
//! (`./.braid` unless `--store` or `BRAID_STORE` say otherwise):
//!
//! ```text
//! FORMAT            "braid-store <version>\n"; a newer version is refused
//! records.sqlite    records and small blobs (SQLite, WAL mode) + -wal/-shm files
//! blobs/ab/<hex>    blobs over 32 KiB, named by the blake3 of their content
//! tmp/              temp files of blob writes in progress; never read
//! ```
//!
//! Every write is atomic: records commit in SQLite transactions, blob files are written
//! to `tmp/`, fsynced, then renamed into place. Every blob read is verified against its
//! key. Several processes may use one store at once: SQLite serialises writers, blob
//! files are immutable once named.

mod blobs;
mod check;
mod db;
mod plans;
mod records;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub(crate) use blobs::BlobFiles;
pub use blobs::FsBlobs;
pub use plans::FsPlans;
pub use records::FsRecords;

use crate::blob::BlobKey;
use crate::error::{Error, Result};

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_FILE: &str = "FORMAT";
const DB_FILE: &str = "records.sqlite";
/// Temp files older than this are leftovers of a crashed writer and are removed at open.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Whether `root` holds an fs store (its format marker is there). For a reader that
/// must not create one: opening (e.g. [`crate::Store::open_fs`]) turns a missing or empty
/// directory into a new store, this only looks.
pub fn is_store(root: &Path) -> bool {
    root.join(FORMAT_FILE).is_file()
}

/// Opens the fs store at `root`, creating it if `root` does not exist or is an empty
/// directory (see [`prepare_root`]).
pub(crate) fn open(root: &Path) -> Result<(FsBlobs, FsRecords)> {
    prepare_root(root)?;
    check_format(root)?;
    for dir in ["blobs", "tmp"] {
        let p = root.join(dir);
        std::fs::create_dir_all(&p).map_err(|e| denied_or_io(root, "create directory", &p, e))?;
    }
    let leftovers = clean_temp(root, STALE_TEMP);
    if !leftovers.is_empty() {
        tracing::warn!(store = %root.display(), count = leftovers.len(), "removed temp files left by a crashed writer");
    }
    let db = Arc::new(db::Db::open(&root.join(DB_FILE))?);
    Ok((FsBlobs { root: root.to_owned(), db: db.clone() }, FsRecords { db }))
}

/// Makes sure `root` can hold a store: an existing store, an empty directory, or a new
/// directory in an existing parent. Anything else is refused with what to do instead:
/// braid never turns a directory full of other files into a store, nor a typo'd path
/// into a tree of directories.
fn prepare_root(root: &Path) -> Result<()> {
    let refuse = |problem: String| Error::Location { location: root.display().to_string(), problems: vec![problem] };
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {
            if root.join(FORMAT_FILE).is_file() {
                return Ok(());
            }
            let entries = std::fs::read_dir(root).map_err(|e| denied_or_io(root, "list", root, e))?;
            // A concurrent opener's format file in flight does not make the directory "used".
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !(n.starts_with(&format!("{FORMAT_FILE}.")) && n.ends_with(".tmp")))
                .collect();
            if names.is_empty() {
                return Ok(());
            }
            names.sort();
            let shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            let more = if names.len() > 3 { format!(" and {} more", names.len() - 3) } else { String::new() };
            Err(refuse(format!(
                "is a directory that is not a braid store (it has no {FORMAT_FILE} file) and is not empty (it holds {shown}{more}); give a new or empty directory for a new store, or the directory of an existing one"
            )))
        }
        Ok(_) => Err(refuse(
            "is a file, not a directory; a store is a directory: give a directory path (e.g. ./.braid) or `memory:`"
                .to_owned(),
        )),
        // A path through a file is "not a directory": its parent is checked below.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            let parent = match root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(refuse(format!(
                        "is inside {}, which is a file, not a directory; give a path in a directory",
                        parent.display()
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    return Err(refuse(format!(
                        "is inside {}, which is not a directory (a file is on its path); give a path in a directory",
                        parent.display()
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(refuse(format!(
                        "does not exist, and neither does its parent directory {p}; create the parent first (mkdir -p {p}) or give another path",
                        p = parent.display()
                    )));
                }
                Err(e) => return Err(denied_or_io(root, "inspect", parent, e)),
            }
            match std::fs::create_dir(root) {
                Ok(()) => Ok(()),
                // Another process created it first: it is new, so empty or a store.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(denied_or_io(root, "create store directory", root, e)),
            }
        }
        Err(e) => Err(denied_or_io(root, "inspect", root, e)),
    }
}

/// A permission error as a location problem that says what to check; other I/O errors
/// as they are.
fn denied_or_io(root: &Path, action: &'static str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        Error::Location {
            location: root.display().to_string(),
            problems: vec![format!(
                "cannot be used: permission denied to {action} {}; the user running braid needs read and write access there (check the owner and mode with `ls -ld {}`), or give another path",
                path.display(),
                path.display()
            )],
        }
    } else {
        Error::io(action, path, e)
    }
}

fn check_format(root: &Path) -> Result<()> {
    let path = root.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let version =
                text.trim().strip_prefix("braid-store ").and_then(|v| v.parse::<u32>().ok()).ok_or_else(|| {
                    Error::Corrupt {
                        what: "format file".into(),
                        path: path.display().to_string(),
                        reason: format!("expected \"braid-store <version>\", found {:?}", truncate(&text, 40)),
                    }
                })?;
            if version > FORMAT_VERSION {
                return Err(Error::UnsupportedFormat {
                    path: root.display().to_string(),
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Written atomically, so a concurrent opener sees none or all of it.
            let tmp = root.join(format!("{FORMAT_FILE}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, format!("braid-store {FORMAT_VERSION}\n"))
                .map_err(|e| denied_or_io(root, "write format file", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| denied_or_io(root, "write format file", &path, e))
        }
        Err(e) => Err(denied_or_io(root, "read format file", &path, e)),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Removes temp files older than `age`; returns their paths.
fn clean_temp(root: &Path, age: Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("tmp")) else {
        return removed;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() >= age)
            .unwrap_or(false);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// A problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file concerned (the record database, a blob file).
    pub path: String,
    /// What is wrong, naming the record or blob.
    pub what: String,
}

/// What [`check`] found in a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Damage: each names the file, and for the record database the record.
    pub problems: Vec<Problem>,
    /// Harmless findings (temp files of interrupted or running writes).
    pub notes: Vec<Problem>,
    /// Rows whose checksum matched.
    pub rows_checked: u64,
    /// Rows written before row checksums existed (or by an older braid): decoded and
    /// structurally checked, but a changed byte in them cannot be told.
    pub rows_unchecked: u64,
    /// Blobs whose content was hashed against their key (files and inline rows).
    pub blobs_checked: u64,
}

/// Checks a whole fs store and reports every problem with the file it is in; it changes
/// no record or blob (opening adds the checksum columns to a database made before them,
/// as every open does). Checked: the database's structure (`PRAGMA integrity_check`: pages, b-trees,
/// every index entry against its row), every row's checksum (see `check.rs`), every run,
/// task, attempt and artifact row through the typed decoders, inline values against
/// their keys, every blob (file or inline) against its key, artifact rows pointing at
/// missing blobs; leftover temp files are notes. A database that cannot be opened at all
/// is one problem naming it; the blob files are checked anyway.
pub async fn check(root: &Path) -> Result<Report> {
    let mut report = Report::default();
    let db_path = root.join(DB_FILE);
    let db_name = db_path.display().to_string();
    if !root.join(FORMAT_FILE).exists() && !db_path.exists() {
        return Err(Error::NotFound { what: format!("braid store at {}", root.display()) });
    }
    let opened = open(root);
    let (blobs, records) = match opened {
        Ok(o) => (Some(o.0), Some(o.1)),
        Err(e) => {
            report.problems.push(Problem { path: db_name.clone(), what: format!("cannot be opened: {e}") });
            (None, None)
        }
    };
    if let Some(records) = &records {
        check_db(records, &db_name, &mut report)?;
    }
    check_blob_files(root, &mut report)?;
    if let (Some(blobs), Some(records)) = (&blobs, &records) {
        let keys: std::result::Result<Vec<Vec<u8>>, _> = records.db.read(|c| {
            c.prepare(
                "SELECT DISTINCT blob_key FROM artifacts WHERE inline_value IS NULL \
                       UNION SELECT elements_key FROM artifacts WHERE elements_key IS NOT NULL",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| db::db_err(records.db.path(), "list artifact blobs", e))
        });
        match keys {
            Ok(keys) => {
                for key in keys {
                    let Ok(key) = <[u8; 32]>::try_from(key) else {
                        continue;
                    };
                    let key = BlobKey(key);
                    if crate::blob::BlobStore::size(blobs, &key).await?.is_none() {
                        report.problems.push(Problem {
                            path: blobs.blob_path(&key).display().to_string(),
                            what: format!("blob {key} is referenced by an artifact but missing"),
                        });
                    }
                }
            }
            Err(e) => report.problems.push(Problem { path: db_name.clone(), what: e.to_string() }),
        }
    }
    for entry in std::fs::read_dir(root.join("tmp")).into_iter().flatten().flatten() {
        report.notes.push(Problem {
            path: entry.path().display().to_string(),
            what: "temp file of an interrupted or running write (harmless; removed when an hour old)".into(),
        });
    }
    Ok(report)
}

/// The record database's part of [`check`]. A read that fails (a page too damaged to
/// walk) is reported as a problem of the database, and the other checks go on.
fn check_db(records: &FsRecords, db_name: &str, report: &mut Report) -> Result<()> {
    let path = records.db.path();
    let problem = |what: String| Problem { path: db_name.to_owned(), what };
    let integrity: Result<Vec<String>> = records.db.read(|c| {
        c.prepare("PRAGMA integrity_check")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| db::db_err(path, "check integrity", e))
    });
    match integrity {
        Ok(lines) => report.problems.extend(lines.into_iter().filter(|l| l != "ok").map(problem)),
        Err(e) => report.problems.push(problem(e.to_string())),
    }
    for s in check::SUMMED {
        match records.db.read(|c| {
            check::check_table(c, s).map_err(|e| db::db_err(path, format!("check the rows of {}", s.table), e))
        }) {
            Ok(t) => {
                report.rows_checked += t.rows - t.unchecked - t.mismatched.len() as u64;
                report.rows_unchecked += t.unchecked;
                for name in t.mismatched {
                    report.problems.push(problem(format!("{name}: its checksum does not match (the row was altered)")));
                }
            }
            Err(e) => report.problems.push(problem(e.to_string())),
        }
    }
    match records.decode_all() {
        Ok(bad) => {
            for u in bad {
                report.problems.push(problem(format!("{}: {}", u.what, u.reason)));
            }
        }
        Err(e) => report.problems.push(problem(e.to_string())),
    }
    let inline: Result<Vec<(Vec<u8>, Vec<u8>)>> = records.db.read(|c| {
        c.prepare("SELECT blob_key, data FROM blobs")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| db::db_err(path, "read inline blobs", e))
    });
    match inline {
        Ok(inline) => {
            for (key, data) in inline {
                let Ok(key) = <[u8; 32]>::try_from(key) else {
                    report.problems.push(problem("inline blob with a malformed key".into()));
                    continue;
                };
                report.blobs_checked += 1;
                if let Err(e) = crate::blob::verify(&BlobKey(key), &data, db_name) {
                    report.problems.push(problem(e.to_string()));
                }
            }
        }
        Err(e) => report.problems.push(problem(e.to_string())),
    }
    Ok(())
}

fn check_blob_files(root: &Path, report: &mut Report) -> Result<()> {
    let blob_root = root.join("blobs");
    let shards = match std::fs::read_dir(&blob_root) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", &blob_root, e)),
    };
    for shard in shards.flatten() {
        for entry in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(key) = BlobKey::parse(&name) else {
                report.problems.push(Problem { path: path.display().to_string(), what: "not a blob file name".into() });
                continue;
            };
            match std::fs::read(&path) {
                Ok(bytes) => {
                    report.blobs_checked += 1;
                    if let Err(e) = crate::blob::verify(&key, &bytes, &path.display().to_string()) {
                        report.problems.push(Problem { path: path.display().to_string(), what: e.to_string() });
                    }
                }
                Err(e) => report.problems.push(Problem { path: path.display().to_string(), what: e.to_string() }),
            }
        }
    }
    Ok(())
}

/// [`check`]'s problems and notes in one list (temp files included).
pub async fn verify(root: &Path) -> Result<Vec<Problem>> {
    let report = check(root).await?;
    Ok(report.problems.into_iter().chain(report.notes).collect())
}

#[cfg(test)]
mod location_tests {
    use super::*;

    #[test]
    fn a_permission_error_becomes_a_location_problem_saying_what_to_check() {
        let root = Path::new("/srv/braid");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = denied_or_io(root, "create store directory", root, denied);
        let Error::Location { location, problems } = &e else { panic!("{e}") };
        assert_eq!(location, "/srv/braid");
        assert!(problems[0].contains("permission denied to create store directory /srv/braid"), "{e}");
        assert!(problems[0].contains("ls -ld /srv/braid"), "{e}");
        let other = denied_or_io(root, "list", root, std::io::Error::other("disk on fire"));
        assert!(matches!(other, Error::Io { action: "list", .. }), "{other}");
    }
}
