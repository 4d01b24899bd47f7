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
fn url_schemes_without_a_backend_name_what_this_build_supports() {
    for location in ["postgres://braid@localhost/braid", "s3://bucket/braid", "sqlite://x"] {
        let e = Store::open(location).unwrap_err().to_string();
        assert!(e.contains("this build cannot open: it supports directory paths and `memory:`"), "{e}");
        assert!(e.contains("postgres:// and s3:// come with the PostgreSQL and S3 backends"), "{e}");
    }
    assert!(problems("file:///tmp/s")[0].contains("without `file://`"));
    assert!(problems("memory://")[0].contains("write `memory:`"));
    // A Windows drive letter is not a scheme.
    assert_eq!(StoreLocation::parse("C://braid").unwrap(), StoreLocation::Dir("C://braid".into()));
    assert_eq!(StoreLocation::parse("memory:").unwrap(), StoreLocation::Memory);
}

#[test]
fn every_problem_of_a_location_is_reported_at_once() {
    let e = Store::open(" s3://bucket ").unwrap_err();
    let text = e.to_string();
    let Error::Location { problems, .. } = &e else { panic!("{text}") };
    assert_eq!(problems.len(), 2, "{text}");
    assert!(text.starts_with("store location \" s3://bucket \" has 2 problems:\n  - "), "{text}");
    assert!(text.contains("whitespace around it") && text.contains("s3:// store"), "{text}");
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
