//! Row checksums of the record database, and the columns added to it since format 1.
//!
//! Why row checksums: `PRAGMA integrity_check` proves the b-trees are sound (pages,
//! cell pointers, every index entry matching its row), but a byte flipped inside a
//! row's payload — a preview text, a JSON parameter, a timestamp — leaves a perfectly
//! well-formed database that silently says something else. The alternatives were worse:
//! SQLite's `cksumvfs` checks pages but needs a C VFS shim compiled into the bundled
//! library and reserve bytes set by a full `VACUUM` of every existing store; decoding
//! every row through the typed decoders catches only flips that make a value unparsable.
//! So every row of the tables that hold what runs produced (`flows`, `runs`, `tasks`,
//! `attempts`, `artifacts`, `logs`) carries `row_sum`: 63 bits of the blake3 hash of its
//! columns, computed by the SQL function `braid_row_sum` in the `INSERT` itself (the
//! statement's text names the function, no Rust code around the statement changes).
//! Cost: one hash of a few hundred bytes per row written (< 1 µs; see the store bench).
//! Blobs need no sum (their key is their hash), nor do inline values (hashed to their
//! artifact's key, which is summed). Rows written before this column existed, or by an
//! older braid, have `row_sum IS NULL`: `braid verify` counts them as unchecked, never
//! as damaged. The plan and scheduler tables (small, updated in place) are covered by
//! `integrity_check` and their decoders only.
//!
//! `blobs.put_at` is when an inline blob was last stored (a second `put` of the same
//! content refreshes it): gc never removes a blob younger than its grace period, so a
//! blob a running task just stored, whose artifact row is not written yet, survives.

use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

/// The SQL function computing a row's checksum over its arguments.
pub(crate) const ROW_SUM_FN: &str = "braid_row_sum";

/// A table whose rows carry `row_sum`: the columns summed, in the order every `INSERT`
/// into it passes them to `braid_row_sum`, and an expression naming a row.
pub(crate) struct Summed {
    pub(crate) table: &'static str,
    pub(crate) columns: &'static str,
    pub(crate) name: &'static str,
}

/// Keep in step with the `INSERT` statements in `records.rs`: the same columns in the
/// same order (the `verify` tests write every kind of row and expect no mismatch).
pub(crate) const SUMMED: &[Summed] = &[
    Summed { table: "flows", columns: "name, spec, updated_at", name: "'flow ' || name" },
    Summed {
        table: "runs",
        columns: "run_id, flow, status, created_at, started_at, ended_at, origin_run, name, error, params, tags, \
                  meta, revision",
        name: "'run ' || flow || '/' || run_id",
    },
    Summed {
        table: "tasks",
        columns: "run_id, task_id, flow, step, status, attempt, foreach_index, iteration, parent, created_at, \
                  started_at, ended_at, lease_deadline, progress_pct, progress_msg, progress_at, extra, revision",
        name: "'task ' || flow || '/' || run_id || '/' || step || '/' || task_id",
    },
    Summed {
        table: "attempts",
        columns: "run_id, task_id, attempt, status, started_at, ended_at, error",
        name: "'attempt ' || attempt || ' of task ' || run_id || '/' || task_id",
    },
    Summed {
        table: "artifacts",
        columns: "run_id, task_id, name, blob_key, type_name, size, preview, preview_cut, elements_key, elements_len",
        name: "'artifact ' || name || ' of task ' || run_id || '/' || task_id",
    },
    Summed {
        table: "logs",
        columns: "run_id, task_id, seq, attempt, at, level, line",
        name: "'log line ' || seq || ' of task ' || run_id || '/' || task_id",
    },
];

/// Registers `braid_row_sum` on a connection (writer and readers alike).
pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        ROW_SUM_FN,
        -1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| Ok(row_sum(ctx)),
    )
}

fn row_sum(ctx: &Context<'_>) -> i64 {
    let r: rusqlite::Result<i64> = hash_row(|buf| {
        for i in 0..ctx.len() {
            feed(buf, ctx.get_raw(i));
        }
        Ok(())
    });
    // Laying out SQLite's own values cannot fail.
    r.unwrap_or_default()
}

/// The checksum `braid_row_sum` gives for these bound values, computed in Rust: the
/// hot writes (tasks, attempts, artifacts) compute it before their batch reaches the
/// one writer thread, so the hashing runs beside SQLite instead of inside its thread
/// (the writer is what bounds a wide foreach; see `records.rs`).
pub(crate) fn sum_params(params: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<i64> {
    use rusqlite::types::ToSqlOutput;
    hash_row(|buf| {
        for p in params {
            let out = p.to_sql()?;
            let v = match &out {
                ToSqlOutput::Borrowed(v) => *v,
                ToSqlOutput::Owned(v) => ValueRef::from(v),
                _ => {
                    return Err(rusqlite::Error::ToSqlConversionFailure(
                        "a row checksum covers plain values only (no zero-blobs or arrays)".into(),
                    ));
                }
            };
            feed(buf, v);
        }
        Ok(())
    })
}

/// Hashes the row `lay_out` writes into a (reused) buffer.
fn hash_row(lay_out: impl FnOnce(&mut Vec<u8>) -> rusqlite::Result<()>) -> rusqlite::Result<i64> {
    // The row is laid out in one buffer and hashed in one call: blake3's `update` has a
    // fixed cost per call that, fed field by field (a dozen tiny slices per row), was 8%
    // of all the instructions of a 10,000-branch foreach (callgrind). The hash is the
    // same either way (blake3 is incremental), so stored sums stay valid.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        lay_out(&mut buf)?;
        let bytes = blake3::hash(&buf);
        if buf.capacity() > 1 << 20 {
            // A huge row (a long preview or log line) does not pin its buffer.
            *buf = Vec::new();
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes.as_bytes()[..8]);
        // 63 bits: a non-negative integer, stored in at most 8 bytes.
        Ok((u64::from_le_bytes(first) >> 1) as i64)
    })
}

/// Lays out one value with its type and length, so `("ab", "c")` and `("a", "bc")`
/// differ. A real with an integral value is laid out as that integer: column affinity
/// may store the bound `3.0` as `3` (INTEGER) or `3` as `3.0` (REAL), and the sum must
/// survive that.
fn feed(h: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => h.push(0),
        ValueRef::Integer(i) => {
            h.push(1);
            h.extend_from_slice(&i.to_le_bytes());
        }
        ValueRef::Real(f) => {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                h.push(1);
                h.extend_from_slice(&(f as i64).to_le_bytes());
            } else {
                h.push(2);
                h.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
        ValueRef::Text(t) => {
            h.push(3);
            h.extend_from_slice(&(t.len() as u64).to_le_bytes());
            h.extend_from_slice(t);
        }
        ValueRef::Blob(b) => {
            h.push(4);
            h.extend_from_slice(&(b.len() as u64).to_le_bytes());
            h.extend_from_slice(b);
        }
    }
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?;
    stmt.exists([column])
}

/// Adds the columns this build writes to a database made without them, in one
/// transaction (two processes opening at once: the second finds them there). Existing
/// rows get `row_sum` NULL (unchecked) and `put_at` 0 (as old as can be).
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut missing = Vec::new();
    for s in SUMMED {
        if !has_column(conn, s.table, "row_sum")? {
            missing.push(format!("ALTER TABLE {} ADD COLUMN row_sum INTEGER;", s.table));
        }
    }
    if !has_column(conn, "blobs", "put_at")? {
        missing.push("ALTER TABLE blobs ADD COLUMN put_at INTEGER NOT NULL DEFAULT 0;".into());
    }
    if missing.is_empty() {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        for s in SUMMED {
            if !has_column(conn, s.table, "row_sum")? {
                conn.execute_batch(&format!("ALTER TABLE {} ADD COLUMN row_sum INTEGER;", s.table))?;
            }
        }
        if !has_column(conn, "blobs", "put_at")? {
            conn.execute_batch("ALTER TABLE blobs ADD COLUMN put_at INTEGER NOT NULL DEFAULT 0;")?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Rows of one table whose checksum does not match, and how many have none.
pub(crate) struct TableCheck {
    pub(crate) rows: u64,
    pub(crate) unchecked: u64,
    pub(crate) mismatched: Vec<String>,
}

/// Recomputes every row's checksum of `s.table`.
pub(crate) fn check_table(conn: &Connection, s: &Summed) -> rusqlite::Result<TableCheck> {
    let sql = format!(
        "SELECT {name}, row_sum IS NULL, row_sum IS {ROW_SUM_FN}({cols}) FROM {table}",
        name = s.name,
        cols = s.columns,
        table = s.table
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = TableCheck { rows: 0, unchecked: 0, mismatched: Vec::new() };
    while let Some(r) = rows.next()? {
        out.rows += 1;
        let unchecked: bool = r.get(1)?;
        let matches: bool = r.get(2)?;
        if unchecked {
            out.unchecked += 1;
        } else if !matches {
            // The name is built from the row's own columns, which may be the damaged part.
            let name: Option<String> = r.get::<_, Option<String>>(0).unwrap_or(None);
            out.mismatched.push(name.unwrap_or_else(|| format!("a row of {}", s.table)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sum_of(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(&format!("SELECT {ROW_SUM_FN}({sql})"), [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn row_sum_is_the_sum_stores_written_by_earlier_builds_hold() {
        // Earlier builds fed each field to an incremental hasher; a stored sum must
        // still verify, so the one-buffer layout must hash to the same value.
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let mut h = blake3::Hasher::new();
        h.update(&[3]);
        h.update(&2u64.to_le_bytes());
        h.update(b"ab");
        h.update(&[1]);
        h.update(&7i64.to_le_bytes());
        h.update(&[0]);
        h.update(&[4]);
        h.update(&1u64.to_le_bytes());
        h.update(&[0xff]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&h.finalize().as_bytes()[..8]);
        let old = (u64::from_le_bytes(first) >> 1) as i64;
        assert_eq!(sum_of(&conn, "'ab', 7, NULL, x'ff'"), old);
    }

    #[test]
    fn row_sum_separates_values_types_and_boundaries() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let a = sum_of(&conn, "'ab', 'c'");
        assert_ne!(a, sum_of(&conn, "'a', 'bc'"));
        assert_ne!(a, sum_of(&conn, "'ab', 'd'"));
        assert_ne!(sum_of(&conn, "1"), sum_of(&conn, "'1'"));
        assert_ne!(sum_of(&conn, "NULL"), sum_of(&conn, "''"));
        assert_eq!(sum_of(&conn, "3"), sum_of(&conn, "3.0"), "affinity may turn one into the other");
        assert_ne!(sum_of(&conn, "3.5"), sum_of(&conn, "3"));
        assert!(a >= 0);
    }

    #[test]
    fn migration_adds_columns_once_and_keeps_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE flows (name TEXT PRIMARY KEY, spec TEXT NOT NULL, updated_at INTEGER NOT NULL);
             CREATE TABLE runs (run_id TEXT); CREATE TABLE tasks (run_id TEXT); CREATE TABLE attempts (run_id TEXT);
             CREATE TABLE artifacts (run_id TEXT); CREATE TABLE logs (run_id TEXT);
             CREATE TABLE blobs (blob_key BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
             INSERT INTO flows VALUES ('f', '{}', 1); INSERT INTO blobs VALUES (x'00', x'01');",
        )
        .unwrap();
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        register(&conn).unwrap();
        let flows = SUMMED.iter().find(|s| s.table == "flows").unwrap();
        let c = check_table(&conn, flows).unwrap();
        assert_eq!((c.rows, c.unchecked, c.mismatched.len()), (1, 1, 0), "an old row is unchecked, not damaged");
        let put_at: i64 = conn.query_row("SELECT put_at FROM blobs", [], |r| r.get(0)).unwrap();
        assert_eq!(put_at, 0);
    }
}
