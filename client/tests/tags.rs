#![allow(clippy::unwrap_used)]
//! Tags are the one write of this crate, through a `TagWriter`, never through a `Client`.

use braid_client::{Client, Error, Tag, TagWriter, fixtures};
use braid_store::Store;

#[test]
fn a_tag_writer_adds_and_removes_tags_that_a_client_then_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    fixtures::fanout(&store, 2).unwrap();
    let path = dir.path().to_str().unwrap();
    let client = Client::open(path).unwrap();
    let writer = TagWriter::open(path, None).unwrap();
    let run = client.run("fanout/latest").unwrap();
    let keep = Tag::new("keep").unwrap();
    let best = Tag::new("best").unwrap();

    let after = writer.add(&run, &[keep.clone(), best.clone()]).unwrap();
    assert!(after.has_tag("keep") && after.has_tag("best"));
    assert_eq!(after.id(), run.id());
    // Adding a tag already there changes nothing.
    let again = writer.add(&run, std::slice::from_ref(&keep)).unwrap();
    assert_eq!(again.tags(), after.tags());
    // A fresh read through the client sees the write.
    assert!(client.run("fanout/latest").unwrap().has_tag("best"));

    let after = writer.remove(&run, &[best]).unwrap();
    assert!(after.has_tag("keep") && !after.has_tag("best"));
    assert!(!client.run("fanout/latest").unwrap().has_tag("best"));
}

#[test]
fn a_tag_writer_never_creates_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nope");
    let e = TagWriter::open(nowhere.to_str().unwrap(), None).unwrap_err();
    assert!(matches!(e, Error::NoStore { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!nowhere.exists());
    // An empty directory is not a store either (opening it to write would make one).
    let e = TagWriter::open(dir.path().to_str().unwrap(), None).unwrap_err();
    assert!(e.to_string().contains("not a braid store"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written into the directory");
}

#[test]
fn a_tag_write_on_a_run_of_another_store_fails_and_names_the_run() {
    let a = Store::memory();
    fixtures::fanout(&a, 1).unwrap();
    let run = Client::from_store(a).run("fanout/latest").unwrap();
    let e = TagWriter::from_store(Store::memory()).add(&run, &[Tag::new("keep").unwrap()]).unwrap_err();
    assert!(e.to_string().contains(&format!("cannot update the tags of {}", run.pathspec())), "{e}");
}
