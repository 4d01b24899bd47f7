//! The shared-directory blob backend, for `--blobs file:///mnt/shared/braid`: every
//! blob a file `blobs/<2 hex>/<64 hex>` named by the blake3 of its content, in a
//! directory every machine of a cluster mounts (NFS, a cluster file system). For
//! clusters without object storage.
//!
//! The files are the fs backend's ([`crate::fs`]): written to `tmp/` under a name unique
//! across machines (host, process, time), fsynced, renamed into place (atomic), never
//! changed after; every read verified against its key. Unlike the fs backend nothing is
//! kept inline in a database: all of a blob is in its file.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::blob::{BlobInfo, BlobKey, BlobReader, BlobStore};
use crate::error::{Error, Result};
use crate::fs::BlobFiles;
use crate::record::{Page, effective_limit, page};
use braid_core::Timestamp;

const MARKER: &str = "BRAID_BLOBS";
const MARKER_TEXT: &str = "braid-blobs 1\n";

/// Blobs as files in a shared directory.
#[derive(Debug, Clone)]
pub struct DirBlobs {
    files: BlobFiles,
    location: String,
}

fn refuse(location: &str, problem: String) -> Error {
    Error::Location { location: location.to_owned(), problems: vec![problem] }
}

/// The directory of a `file:///abs/path` location.
pub(crate) fn parse(location: &str) -> Result<PathBuf> {
    let path = location.strip_prefix("file://").unwrap_or(location);
    if !path.starts_with('/') {
        return Err(refuse(
            location,
            "is not an absolute file:// location; write file:///ABSOLUTE/PATH (three slashes), e.g. file:///mnt/shared/braid"
                .to_owned(),
        ));
    }
    Ok(PathBuf::from(path))
}

impl DirBlobs {
    /// Opens the blob directory at `location` (`file:///path`), creating it if it does
    /// not exist (its parent must) or is empty. A directory of other files is refused.
    pub fn open(location: &str) -> Result<DirBlobs> {
        let root = parse(location)?;
        prepare(location, &root)?;
        for dir in ["blobs", "tmp"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("create directory", &p, e))?;
        }
        Ok(DirBlobs { files: BlobFiles { root }, location: location.to_owned() })
    }
}

fn prepare(location: &str, root: &Path) -> Result<()> {
    let marker = root.join(MARKER);
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {
            if marker.is_file() {
                return Ok(());
            }
            let used = std::fs::read_dir(root)
                .map_err(|e| Error::io("list", root, e))?
                .flatten()
                .any(|e| !e.file_name().to_string_lossy().starts_with(&format!("{MARKER}.")));
            if used {
                return Err(refuse(
                    location,
                    format!(
                        "is a directory that is not a braid blob directory (it has no {MARKER} file) and is not empty; give a new or empty directory, or one braid made"
                    ),
                ));
            }
        }
        Ok(_) => return Err(refuse(location, "is a file, not a directory".to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = root.parent().unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(refuse(
                    location,
                    format!(
                        "does not exist, and neither does its parent directory {p}; mount the shared directory (or mkdir -p {p}) first",
                        p = parent.display()
                    ),
                ));
            }
            match std::fs::create_dir(root) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create blob directory", root, e)),
            }
        }
        Err(e) => return Err(Error::io("inspect", root, e)),
    }
    // Written atomically: a machine opening it at the same time sees none or all of it.
    let tmp = root.join(format!("{MARKER}.{}.{}.tmp", crate::record::host_name(), std::process::id()));
    std::fs::write(&tmp, MARKER_TEXT).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &marker).map_err(|e| Error::io("write", &marker, e))
}

#[async_trait]
impl BlobStore for DirBlobs {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey> {
        let key = BlobKey::of(&bytes);
        self.files.put(key, bytes).await?;
        Ok(key)
    }

    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<(BlobKey, u64)> {
        let (key, total, head) = self.files.put_stream(reader, 0).await?;
        if let Some(bytes) = head {
            // Nothing was read (an empty blob): it still gets its file.
            self.files.put(key, bytes).await?;
        }
        Ok((key, total))
    }

    async fn get(&self, key: &BlobKey) -> Result<Vec<u8>> {
        self.files.get(key).await?.ok_or_else(|| Error::NotFound { what: format!("blob {key} in {}", self.location) })
    }

    async fn get_stream(&self, key: &BlobKey) -> Result<BlobReader> {
        self.files.open(key).await?.ok_or_else(|| Error::NotFound { what: format!("blob {key} in {}", self.location) })
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>> {
        self.files.size(key).await
    }

    async fn list(&self, after: Option<String>, limit: usize) -> Result<Page<BlobInfo>> {
        let limit = effective_limit(limit, 1000);
        let after = after.as_deref().map(BlobKey::parse).transpose()?;
        let items = self.files.list(after, limit + 1).await?;
        Ok(page(items, limit, |b| b.key.to_hex()))
    }

    async fn delete_if_older(&self, keys: &[BlobKey], put_before: Timestamp) -> Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.files.delete_if_older(k, put_before).await?);
        }
        Ok(out)
    }
}
