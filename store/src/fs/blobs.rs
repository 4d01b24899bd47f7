//! Blobs of an fs store. Small ones (up to [`INLINE_MAX`]) live in the record database,
//! so a few-hundred-byte artifact costs a row, not a file and an fsync; larger ones are
//! files `blobs/<2 hex>/<64 hex>`, written to `tmp/` first, fsynced and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::db::{Db, db_err};
use crate::blob::{BlobKey, BlobReader, BlobStore, VerifyingReader, verify};
use crate::error::{Error, Result};

/// Blobs up to this size are stored inline in the record database.
pub const INLINE_MAX: usize = 32 * 1024;
const STREAM_CHUNK: usize = 1024 * 1024;

/// Blobs of an fs store.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    pub(crate) root: PathBuf,
    pub(crate) db: Arc<Db>,
}

/// Content-addressed blob files under a root: `blobs/<2 hex>/<64 hex>`, written to
/// `tmp/` first, fsynced and renamed into place. The files half of the fs backend, and
/// the whole of the shared-directory backend ([`crate::DirBlobs`]): names are unique
/// across machines (host, process, time), a published file is never changed, and a
/// rename is atomic on every machine that mounts the directory.
#[derive(Debug, Clone)]
pub(crate) struct BlobFiles {
    pub(crate) root: PathBuf,
}

impl BlobFiles {
    pub(crate) fn path(&self, key: &BlobKey) -> PathBuf {
        let hex = key.to_hex();
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    fn tmp_path(&self) -> PathBuf {
        let unique = format!(
            "{}-{}-{}-{:x}.tmp",
            crate::record::host_name(),
            std::process::id(),
            braid_core::Timestamp::now().as_micros(),
            rand_u64()
        );
        self.root.join("tmp").join(unique)
    }

    /// Stores `bytes` as the file of `key` unless it is there.
    pub(crate) async fn put(&self, key: BlobKey, bytes: Vec<u8>) -> Result<()> {
        let dest = self.path(&key);
        if dest.exists() {
            return Ok(());
        }
        let tmp = self.tmp_path();
        tokio::task::spawn_blocking(move || write_file_blob(&tmp, &dest, &bytes)).await.map_err(join_err)?
    }

    /// Reads `reader` to its end, hashing it. Content up to `keep` bytes is returned
    /// (`Some`) and not written; past that it spills to a temp file as it is read and is
    /// published as the file of its key, so any size streams in bounded memory.
    pub(crate) async fn put_stream(
        &self,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        keep: usize,
    ) -> Result<(BlobKey, u64, Option<Vec<u8>>)> {
        let mut hasher = blake3::Hasher::new();
        let mut head: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; STREAM_CHUNK];
        let mut file: Option<(std::fs::File, PathBuf)> = None;
        let mut total: u64 = 0;
        loop {
            let n = reader.read(&mut chunk).await.map_err(|e| Error::io("read blob stream for", &self.root, e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&chunk[..n]);
            match &mut file {
                Some((f, tmp)) => f.write_all(&chunk[..n]).map_err(|e| Error::io("write temp file", &*tmp, e))?,
                None => {
                    head.extend_from_slice(&chunk[..n]);
                    if head.len() > keep {
                        let tmp = self.tmp_path();
                        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create temp file", &tmp, e))?;
                        f.write_all(&head).map_err(|e| Error::io("write temp file", &tmp, e))?;
                        head = Vec::new();
                        file = Some((f, tmp));
                    }
                }
            }
        }
        let key = BlobKey(*hasher.finalize().as_bytes());
        match file {
            None => Ok((key, total, Some(head))),
            Some((f, tmp)) => {
                let dest = self.path(&key);
                tokio::task::spawn_blocking(move || {
                    f.sync_all().map_err(|e| Error::io("fsync temp file", &tmp, e))?;
                    drop(f);
                    publish(&tmp, &dest)
                })
                .await
                .map_err(join_err)??;
                Ok((key, total, None))
            }
        }
    }

    /// The file's bytes, verified; `None` if there is no file for `key`.
    pub(crate) async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read blob file", &path, e)),
        };
        verify(key, &bytes, &path.display().to_string())?;
        Ok(Some(bytes))
    }

    /// A verifying reader over the file; `None` if there is no file for `key`.
    pub(crate) async fn open(&self, key: &BlobKey) -> Result<Option<BlobReader>> {
        let path = self.path(key);
        let f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open blob file", &path, e)),
        };
        let reader = tokio::io::BufReader::with_capacity(STREAM_CHUNK, f);
        Ok(Some(Box::new(VerifyingReader::new(reader, *key, path.display().to_string()))))
    }

    pub(crate) async fn size(&self, key: &BlobKey) -> Result<Option<u64>> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat blob file", &path, e)),
        }
    }
}

impl FsBlobs {
    pub(crate) fn files(&self) -> BlobFiles {
        BlobFiles { root: self.root.clone() }
    }

    pub(crate) fn blob_path(&self, key: &BlobKey) -> PathBuf {
        self.files().path(key)
    }

    async fn put_inline(&self, key: BlobKey, bytes: Vec<u8>) -> Result<()> {
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached("INSERT OR IGNORE INTO blobs (blob_key, data) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![&key.0[..], bytes]))
                    .map_err(|e| db_err(&path, format!("store blob {key}"), e))?;
                Ok(())
            })
            .await
    }

    fn get_inline(&self, key: &BlobKey) -> Result<Option<Vec<u8>>> {
        let path = self.db.path().to_owned();
        self.db.read(|c| {
            c.prepare_cached("SELECT data FROM blobs WHERE blob_key = ?1")
                .and_then(|mut s| s.query_row([&key.0[..]], |r| r.get(0)).optional())
                .map_err(|e| db_err(&path, format!("read blob {key}"), e))
        })
    }

    fn inline_size(&self, key: &BlobKey) -> Result<Option<u64>> {
        let path = self.db.path().to_owned();
        self.db.read(|c| {
            c.prepare_cached("SELECT length(data) FROM blobs WHERE blob_key = ?1")
                .and_then(|mut s| s.query_row([&key.0[..]], |r| r.get::<_, i64>(0)).optional())
                .map(|o| o.map(|n| n as u64))
                .map_err(|e| db_err(&path, format!("read blob {key}"), e))
        })
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(braid_core::Timestamp::now().as_micros() as u64);
    h.finish()
}

/// Moves a finished temp file to its content-addressed place, durably: the file was
/// fsynced, the rename is atomic, and the directory is fsynced so the rename survives a
/// power cut. If the blob is already there, the temp file is dropped.
fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let new_dir = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    if new_dir && let Some(parent) = dir.parent() {
        // The new shard directory's own entry must survive a power cut too.
        sync_dir(parent)?;
    }
    if dest.exists() {
        // The same content is in place already. A temp file that cannot be removed is
        // harmless: it is never read, `verify` lists it, and it is cleaned when an hour old.
        if let Err(e) = std::fs::remove_file(tmp) {
            tracing::debug!(tmp = %tmp.display(), error = %e, "cannot remove a duplicate temp blob");
        }
        return Ok(());
    }
    std::fs::rename(tmp, dest).map_err(|e| Error::io("rename temp file to", dest, e))?;
    sync_dir(dir)
}

/// Fsyncs a directory, so the entries renamed or created in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}

fn write_file_blob(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(tmp).map_err(|e| Error::io("create temp file", tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io("write temp file", tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync temp file", tmp, e))?;
    drop(f);
    publish(tmp, dest)
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::io("run blocking file work", "blobs", std::io::Error::other(e.to_string()))
}

#[async_trait]
impl BlobStore for FsBlobs {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey> {
        let key = BlobKey::of(&bytes);
        if bytes.len() <= INLINE_MAX {
            self.put_inline(key, bytes).await?;
            return Ok(key);
        }
        self.files().put(key, bytes).await?;
        Ok(key)
    }

    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<(BlobKey, u64)> {
        // Small content stays in memory and goes inline; larger spills to a file.
        let (key, total, head) = self.files().put_stream(reader, INLINE_MAX).await?;
        if let Some(head) = head {
            self.put_inline(key, head).await?;
        }
        Ok((key, total))
    }

    async fn get(&self, key: &BlobKey) -> Result<Vec<u8>> {
        if let Some(bytes) = self.get_inline(key)? {
            verify(key, &bytes, &self.db.path().display().to_string())?;
            return Ok(bytes);
        }
        self.files().get(key).await?.ok_or_else(|| Error::NotFound { what: format!("blob {key}") })
    }

    async fn get_stream(&self, key: &BlobKey) -> Result<BlobReader> {
        if let Some(bytes) = self.get_inline(key)? {
            verify(key, &bytes, &self.db.path().display().to_string())?;
            return Ok(Box::new(std::io::Cursor::new(bytes)));
        }
        self.files().open(key).await?.ok_or_else(|| Error::NotFound { what: format!("blob {key}") })
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>> {
        if let Some(n) = self.inline_size(key)? {
            return Ok(Some(n));
        }
        self.files().size(key).await
    }
}
