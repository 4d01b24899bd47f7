use braid_core::{ArtifactName, TaskId};
use braid_store::{ArtifactRecord, BlobKey, TaskKey, VisibleArtifact};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::{Client, rt};

/// An artifact as a task sees it: name, type, size, content key, preview, and the task
/// that set it (the task itself, or an ancestor it inherits from by reference).
#[derive(Debug, Clone)]
pub struct Artifact {
    client: Client,
    task: TaskKey,
    visible: VisibleArtifact,
}

impl Artifact {
    pub(crate) fn new(client: Client, task: TaskKey, visible: VisibleArtifact) -> Self {
        Artifact { client, task, visible }
    }

    /// The name the task set it under.
    pub fn name(&self) -> &ArtifactName {
        &self.visible.artifact.name
    }

    /// The Rust type the value was stored as, e.g. `u64` or `alloc::vec::Vec<f64>`.
    pub fn type_name(&self) -> &str {
        &self.visible.artifact.type_name
    }

    /// Size of the stored envelope in bytes.
    pub fn size(&self) -> u64 {
        self.visible.artifact.size
    }

    /// The content key (blake3) of the stored envelope.
    pub fn key(&self) -> BlobKey {
        self.visible.artifact.key
    }

    /// The task this artifact was read through.
    pub fn task(&self) -> &TaskKey {
        &self.task
    }

    /// The task that set the value: the reading task itself, or an ancestor.
    pub fn set_by(&self) -> TaskId {
        self.visible.set_by
    }

    /// Whether the value was inherited from an ancestor rather than set by the task.
    pub fn is_inherited(&self) -> bool {
        self.visible.set_by != self.task.task
    }

    /// For a sequence a foreach may fan out over: how many elements it has.
    pub fn elements_len(&self) -> Option<u64> {
        self.visible.artifact.elements.map(|e| e.len)
    }

    /// The whole record.
    pub fn record(&self) -> &ArtifactRecord {
        &self.visible.artifact
    }

    /// The JSON preview made at write time; a cut preview is a JSON string ending in a marker.
    pub fn preview(&self) -> serde_json::Value {
        self.visible.artifact.preview.to_json_value()
    }

    /// The preview's JSON text as stored.
    pub fn preview_text(&self) -> &str {
        &self.visible.artifact.preview.text
    }

    /// Whether the preview was cut at its size limit.
    pub fn preview_truncated(&self) -> bool {
        self.visible.artifact.preview.truncated
    }

    /// The stored envelope bytes (inline in the record or from the blob store), verified
    /// against the content key.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        let store = self.client.store();
        rt::call(
            || format!("cannot read artifact `{}` of {}", self.name(), self.task),
            store.artifact_bytes(&self.visible.artifact),
        )
    }

    /// The value decoded as `T`; a value stored as another type is an error naming both.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        let bytes = self.bytes()?;
        braid_core::codec::decode::<T>(&bytes)
            .map_err(|e| Error::decode(self.task.to_string(), self.name().to_string(), e))
    }
}
