//! Run ids stay unique when several processes make them in the same milliseconds.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;

use braid_core::RunId;

const CHILD_ENV: &str = "BRAID_CORE_TEST_EMIT_IDS";

/// In a child process, prints ids; in a normal test run, does nothing.
#[test]
fn emit_ids() {
    let Ok(out) = std::env::var(CHILD_ENV) else {
        return;
    };
    let ids: Vec<String> = (0..20_000).map(|_| RunId::generate().to_string()).collect();
    std::fs::write(out, ids.join(" ")).unwrap();
}

#[test]
fn run_ids_are_unique_across_processes() {
    let dir = std::env::temp_dir().join(format!("braid-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let out = dir.join(format!("{i}.txt"));
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "emit_ids", "--test-threads", "1"])
                .env(CHILD_ENV, &out)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let mut all = HashSet::new();
    let mut millis = HashSet::new();
    let mut shared_ms = 0;
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&out).unwrap();
        let mine: Vec<RunId> = text.split(' ').map(|s| RunId::parse(s).unwrap()).collect();
        assert_eq!(mine.len(), 20_000);
        let my_ms: HashSet<u64> = mine.iter().map(RunId::timestamp_ms).collect();
        shared_ms += my_ms.intersection(&millis).count();
        millis.extend(my_ms);
        for id in mine {
            assert!(all.insert(id), "duplicate run id {id}");
        }
    }
    assert_eq!(all.len(), 80_000);
    let _ = std::fs::remove_dir_all(&dir);
    // Not asserted (timing-dependent), but the point of the test: processes did overlap.
    eprintln!("milliseconds shared between processes: {shared_ms}");
}
