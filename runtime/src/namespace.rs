//! What a task sees: artifact name → stored artifact, shared by reference between a task
//! and its descendants. Small values stay in memory after they are set, so a child reads
//! its parent's values without touching the store.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use braid_core::ArtifactName;
use braid_store::{ArtifactRecord, BlobStore};

use crate::error::Result;

/// Values up to this size are kept in memory for the run after they are set or read.
pub(crate) const CACHE_MAX: usize = 64 * 1024;

/// One artifact as a task sees it.
#[derive(Debug)]
pub(crate) struct ArtRef {
    pub(crate) record: ArtifactRecord,
    bytes: OnceLock<Arc<Vec<u8>>>,
    elements: OnceLock<Arc<Vec<Vec<u8>>>>,
}

impl ArtRef {
    pub(crate) fn new(record: ArtifactRecord) -> Self {
        ArtRef { record, bytes: OnceLock::new(), elements: OnceLock::new() }
    }

    pub(crate) fn with_bytes(self, bytes: Arc<Vec<u8>>) -> Self {
        if bytes.len() <= CACHE_MAX {
            // A cache: if another reader filled it first, it holds the same bytes.
            let _ = self.bytes.set(bytes);
        }
        self
    }

    pub(crate) fn with_elements(self, elements: Arc<Vec<Vec<u8>>>) -> Self {
        // A cache, set once: an earlier value is the same content.
        let _ = self.elements.set(elements);
        self
    }

    /// The envelope bytes, from memory or the store.
    pub(crate) async fn bytes(&self, blobs: &dyn BlobStore) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.bytes.get() {
            return Ok(b.clone());
        }
        if let Some(inline) = &self.record.inline {
            let b = Arc::new(inline.clone());
            // A cache: a concurrent reader may have filled it with the same bytes.
            let _ = self.bytes.set(b.clone());
            return Ok(b);
        }
        let b = Arc::new(blobs.get(&self.record.key).await?);
        if b.len() <= CACHE_MAX {
            // A cache: a concurrent reader may have filled it with the same bytes.
            let _ = self.bytes.set(b.clone());
        }
        Ok(b)
    }

    /// The per-element envelopes of a sequence artifact, if it has them.
    pub(crate) async fn elements(&self, blobs: &dyn BlobStore) -> Result<Option<Arc<Vec<Vec<u8>>>>> {
        if let Some(e) = self.elements.get() {
            return Ok(Some(e.clone()));
        }
        let Some(r) = self.record.elements else {
            return Ok(None);
        };
        let manifest = blobs.get(&r.key).await?;
        let elements = Arc::new(braid_core::codec::decode_manifest(&manifest)?);
        // A cache: a concurrent reader may have filled it with the same elements.
        let _ = self.elements.set(elements.clone());
        Ok(Some(elements))
    }
}

/// Every artifact a task sees, flattened (a map clone per task is a few pointer copies;
/// walking a chain of ancestors on every read would not be).
pub(crate) type Namespace = HashMap<ArtifactName, Arc<ArtRef>>;

pub(crate) fn sorted_names(ns: &Namespace) -> Vec<String> {
    let mut v: Vec<String> = ns.keys().map(|k| k.to_string()).collect();
    v.sort();
    v
}
