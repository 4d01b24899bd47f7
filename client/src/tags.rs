//! [`TagWriter`]: the one write the client crate offers, kept apart from [`Client`](crate::Client).

use braid_core::Tag;
use braid_store::Store;

use crate::client::open_store;
use crate::error::Result;
use crate::rt;
use crate::run::Run;

/// Adds and removes run tags: a writer, apart from the read-only [`Client`](crate::Client)
/// (which has no way to write). Each call is one atomic write of the run's tags; a tag
/// already there (or already gone) is no change.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use braid_client::{Client, Store, Tag, TagWriter};
///
/// let store = Store::memory();
/// # braid_client::fixtures::fanout(&store, 2)?;
/// let client = Client::from_store(store.clone());
/// let tags = TagWriter::from_store(store); // or TagWriter::open(".braid", None)
/// let run = client.run("fanout/latest")?;
/// let run = tags.add(&run, &[Tag::new("keep")?])?;
/// assert!(run.has_tag("keep"));
/// let run = tags.remove(&run, &[Tag::new("keep")?])?;
/// assert!(!run.has_tag("keep"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TagWriter {
    store: Store,
}

impl TagWriter {
    /// Opens the store at `location` (and, for a `postgres://` store, its blobs at
    /// `blobs`) to write tags in. Like [`Client::open_with_blobs`](crate::Client::open_with_blobs),
    /// a location that holds no braid store is an error: no store is created.
    pub fn open(location: &str, blobs: Option<&str>) -> Result<TagWriter> {
        open_store(location, blobs).map(TagWriter::from_store)
    }

    /// A tag writer over a store already open (e.g. the one a [`Client`](crate::Client) reads).
    pub fn from_store(store: Store) -> TagWriter {
        TagWriter { store }
    }

    /// Writes `tags` onto `run` (which must be a run of this writer's store) and returns
    /// the run as it is after the write.
    pub fn add(&self, run: &Run, tags: &[Tag]) -> Result<Run> {
        self.update(run, tags, &[])
    }

    /// Takes `tags` off `run` (which must be a run of this writer's store) and returns
    /// the run as it is after the write.
    pub fn remove(&self, run: &Run, tags: &[Tag]) -> Result<Run> {
        self.update(run, &[], tags)
    }

    fn update(&self, run: &Run, add: &[Tag], remove: &[Tag]) -> Result<Run> {
        let records = &self.store.records;
        let record = rt::call(
            || format!("cannot update the tags of {}", run.pathspec()),
            records.update_tags(run.flow_name(), run.id(), add, remove),
        )?;
        Ok(Run::new(run.client().clone(), record))
    }
}
