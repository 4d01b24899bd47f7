#![allow(clippy::unwrap_used)]
//! Store locations: what `Store::open` refuses, and that each refusal says what is
//! wrong and what to do, with every problem of a location at once.

use braid_store::{Error, Store, StoreLocation};

fn problems(location: &str) -> Vec<String> {
    match Store::open(location) {
        Err(Error::Location { problems, .. }) => problems,
        Err(e) => panic!("{location:?}: expected a location error, got {e}"),
        Ok(_) => panic!("{location:?}: opened"),
    }
}

#[test]
fn an_empty_location_says_what_to_give() {
    for location in ["", "   "] {
        let p = problems(location);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("is empty") && p[0].contains("./.braid") && p[0].contains("memory:"), "{p:?}");
    }
}

#[test]
fn url_schemes_braid_has_no_store_for_name_what_a_store_can_be() {
    for location in ["sqlite://x", "mysql://braid@localhost/braid"] {
        let e = Store::open(location).unwrap_err().to_string();
        assert!(e.contains("which braid cannot open: a store is a directory path, `memory:` or postgres://"), "{e}");
    }
    let s3 = problems("s3://bucket/braid");
    assert!(s3[0].contains("holds blobs, not records") && s3[0].contains("--blobs s3://"), "{s3:?}");
    assert!(problems("file:///tmp/s")[0].contains("without `file://`"));
    assert!(problems("memory://")[0].contains("write `memory:`"));
    // A Windows drive letter is not a scheme.
    assert_eq!(StoreLocation::parse("C://braid").unwrap(), StoreLocation::Dir("C://braid".into()));
    assert_eq!(StoreLocation::parse("memory:").unwrap(), StoreLocation::Memory);
    assert_eq!(
        StoreLocation::parse("postgres://braid@db:5432/runs").unwrap(),
        StoreLocation::Postgres("postgres://braid@db:5432/runs".into())
    );
}

#[test]
fn a_postgres_store_is_opened_with_connect_and_a_password_is_never_shown() {
    let e = Store::open("postgres://braid:hunter2@localhost/braid").unwrap_err().to_string();
    assert!(e.contains("Store::connect") && !e.contains("hunter2") && e.contains("braid:***@"), "{e}");
}

#[tokio::test]
async fn a_postgres_store_without_blobs_says_to_add_them() {
    let e = Store::connect("postgres://braid@localhost/braid", None).await.unwrap_err().to_string();
    assert!(e.contains("keeps records only") && e.contains("--blobs s3://") && e.contains("BRAID_BLOBS"), "{e}");
    let e = Store::connect("memory:", Some("s3://bucket/x")).await.unwrap_err().to_string();
    assert!(e.contains("only a postgres:// store takes"), "{e}");
    let e = Store::connect("postgres://braid@localhost/braid", Some("ftp://x")).await.unwrap_err().to_string();
    assert!(e.contains("not a blob location") && e.contains("file:///"), "{e}");
    let e = Store::connect("postgres://braid@localhost/braid", Some("file://relative/dir")).await.unwrap_err();
    assert!(e.to_string().contains("three slashes"), "{e}");
}

#[test]
fn every_problem_of_a_location_is_reported_at_once() {
    let e = Store::open(" s3://bucket ").unwrap_err();
    let text = e.to_string();
    let Error::Location { problems, .. } = &e else { panic!("{text}") };
    assert_eq!(problems.len(), 2, "{text}");
    assert!(text.starts_with("store location \" s3://bucket \" has 2 problems:\n  - "), "{text}");
    assert!(text.contains("whitespace around it") && text.contains("s3:// location"), "{text}");
}

#[test]
fn a_regular_file_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    let p = problems(file.to_str().unwrap());
    assert!(p[0].starts_with("is a file, not a directory"), "{p:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello");
}

#[test]
fn a_directory_of_other_files_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.txt", "b.txt", "c.txt", "d.txt"] {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }
    let e = Store::open(dir.path().to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("is a directory that is not a braid store (it has no FORMAT file) and is not empty"), "{e}");
    assert!(
        e.contains("(it holds a.txt, b.txt, c.txt and 1 more)") && e.contains("give a new or empty directory"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 4, "nothing was written into it");
}

#[test]
fn an_empty_directory_or_a_new_one_becomes_a_store_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path().to_str().unwrap()).unwrap());
    assert!(dir.path().join("FORMAT").is_file());
    drop(Store::open(dir.path().to_str().unwrap()).unwrap());
    let new = dir.path().join("new");
    drop(Store::open(new.to_str().unwrap()).unwrap());
    drop(Store::open(new.to_str().unwrap()).unwrap());
}

#[test]
fn a_missing_parent_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("typo").join("store");
    let p = problems(deep.to_str().unwrap());
    let parent = dir.path().join("typo");
    assert!(p[0].contains(&format!("neither does its parent directory {}", parent.display())), "{p:?}");
    assert!(p[0].contains(&format!("mkdir -p {}", parent.display())), "{p:?}");
    assert!(!parent.exists());
    let file = dir.path().join("f");
    std::fs::write(&file, "").unwrap();
    let p = problems(file.join("store").to_str().unwrap());
    assert!(p[0].contains("which is a file, not a directory"), "{p:?}");
}

#[cfg(unix)]
#[test]
fn permission_denied_says_what_to_check() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Root (as in CI) may write anywhere: then there is no denial to report.
    let root_user = std::fs::write(locked.join("probe"), "").is_ok();
    if !root_user {
        let p = problems(locked.join("store").to_str().unwrap());
        assert!(p[0].contains("permission denied to create store directory"), "{p:?}");
        assert!(p[0].contains("ls -ld"), "{p:?}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
}
