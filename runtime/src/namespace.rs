//! What a task sees: artifact name → stored artifact, shared by reference between a task
//! and its descendants. Small values stay in memory after they are set, so a child reads
//! its parent's values without touching the store.

use std::collections::{BTreeMap, BTreeSet};
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

/// Every artifact a task sees: what its own step set (`own`, sorted by name) over what
/// its parent saw (`parent`, shared by reference). A task that sets nothing sees its
/// parent's namespace itself, and one that sets k artifacts adds a layer of k entries:
/// a foreach branch costs its own artifacts, not a copy of every name it inherits (a
/// copied map per task was most of what a 100,000-branch foreach held until its join).
/// Layers are flattened past [`MAX_DEPTH`], so a lookup walks at most that many.
#[derive(Debug, Default)]
pub(crate) struct Namespace {
    own: Vec<(ArtifactName, Arc<ArtRef>)>,
    parent: Option<Arc<Namespace>>,
    depth: usize,
}

/// The most layers a lookup walks; a deeper chain (a long linear flow, a loop) is
/// flattened into one layer when the next is added.
pub(crate) const MAX_DEPTH: usize = 8;

impl Namespace {
    /// The empty namespace (what `start` and a join begin from).
    pub(crate) fn new() -> Self {
        Namespace::default()
    }

    /// `parent` with `own` set over it (a later entry for the same name wins).
    pub(crate) fn extend(parent: &Arc<Namespace>, own: Vec<(ArtifactName, Arc<ArtRef>)>) -> Arc<Namespace> {
        if own.is_empty() {
            return parent.clone();
        }
        let mut own: Vec<(ArtifactName, Arc<ArtRef>)> =
            own.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
        if parent.depth < MAX_DEPTH {
            return Arc::new(Namespace { own, parent: Some(parent.clone()), depth: parent.depth + 1 });
        }
        let mut all: BTreeMap<ArtifactName, Arc<ArtRef>> = BTreeMap::new();
        parent.collect(&mut all);
        all.extend(own.drain(..));
        Arc::new(Namespace { own: all.into_iter().collect(), parent: None, depth: 0 })
    }

    fn collect(&self, into: &mut BTreeMap<ArtifactName, Arc<ArtRef>>) {
        if let Some(p) = &self.parent {
            p.collect(into);
        }
        for (n, a) in &self.own {
            into.insert(n.clone(), a.clone());
        }
    }

    /// The artifact `name`, from the nearest layer that has it.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ArtRef>> {
        let mut layer = Some(self);
        while let Some(l) = layer {
            if let Ok(i) = l.own.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                return Some(&l.own[i].1);
            }
            layer = l.parent.as_deref();
        }
        None
    }

    /// Whether `name` is visible.
    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names this namespace sets over `base`, if it is `base` itself or one layer
    /// directly over it (what a task that started from `base` set); `None` otherwise.
    pub(crate) fn own_names_over(self: &Arc<Self>, base: &Arc<Namespace>) -> Option<Vec<ArtifactName>> {
        if Arc::ptr_eq(self, base) {
            return Some(Vec::new());
        }
        match &self.parent {
            Some(p) if Arc::ptr_eq(p, base) => Some(self.own.iter().map(|(n, _)| n.clone()).collect()),
            _ => None,
        }
    }

    /// Every visible name, sorted.
    pub(crate) fn names(&self) -> BTreeSet<ArtifactName> {
        let mut out = BTreeSet::new();
        let mut layer = Some(self);
        while let Some(l) = layer {
            out.extend(l.own.iter().map(|(n, _)| n.clone()));
            layer = l.parent.as_deref();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use braid_core::codec::Preview;
    use braid_store::{ArtifactRecord, BlobKey};

    fn art(name: &str, marker: u8) -> (ArtifactName, Arc<ArtRef>) {
        let name = ArtifactName::new(name).unwrap();
        let record = ArtifactRecord {
            name: name.clone(),
            key: BlobKey([marker; 32]),
            type_name: "u8".into(),
            size: 1,
            preview: Preview { text: "1".into(), truncated: false },
            elements: None,
            inline: None,
        };
        (name, Arc::new(ArtRef::new(record)))
    }

    fn marker(ns: &Namespace, name: &str) -> Option<u8> {
        ns.get(name).map(|a| a.record.key.0[0])
    }

    #[test]
    fn a_layer_shadows_what_its_parent_sees_and_inherits_the_rest() {
        let root = Arc::new(Namespace::new());
        let a = Namespace::extend(&root, vec![art("x", 1), art("y", 1)]);
        let b = Namespace::extend(&a, vec![art("y", 2), art("z", 2)]);
        assert_eq!((marker(&b, "x"), marker(&b, "y"), marker(&b, "z")), (Some(1), Some(2), Some(2)));
        assert_eq!((marker(&a, "y"), marker(&a, "z")), (Some(1), None), "the parent is unchanged");
        let names: Vec<String> = b.names().into_iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["x", "y", "z"]);
    }

    #[test]
    fn a_task_that_sets_nothing_shares_its_parents_namespace() {
        let root = Arc::new(Namespace::new());
        let a = Namespace::extend(&root, vec![art("x", 1)]);
        assert!(Arc::ptr_eq(&Namespace::extend(&a, Vec::new()), &a));
    }

    #[test]
    fn a_long_chain_is_flattened_and_still_sees_every_name_with_its_latest_value() {
        let mut ns = Arc::new(Namespace::new());
        for i in 0..50u8 {
            ns = Namespace::extend(&ns, vec![art(&format!("a{i}"), i), art("last", i)]);
            assert!(ns.depth <= MAX_DEPTH);
        }
        assert_eq!(marker(&ns, "a0"), Some(0));
        assert_eq!(marker(&ns, "a49"), Some(49));
        assert_eq!(marker(&ns, "last"), Some(49));
        assert_eq!(ns.names().len(), 51);
    }
}
