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
use crate::blob::{BlobInfo, BlobKey, BlobReader, BlobStore, VerifyingReader, verify};
use crate::error::{Error, Result};
use crate::record::{Page, effective_limit, page};
use braid_core::Timestamp;

/// Blobs up to this size are stored inline in the record database.
pub(crate) const INLINE_MAX: usize = 32 * 1024;
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
        if refresh(&dest) {
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

    /// Blob files with keys after `after`, in key order, at most `limit`; a file's
    /// modification time is when its content was last stored.
    pub(crate) async fn list(&self, after: Option<BlobKey>, limit: usize) -> Result<Vec<BlobInfo>> {
        let root = self.root.join("blobs");
        tokio::task::spawn_blocking(move || list_files(&root, after, limit)).await.map_err(join_err)?
    }

    /// Deletes the file of `key` if its content was last stored before `put_before`;
    /// the bytes freed, or `None` if there was no such file.
    pub(crate) async fn delete_if_older(&self, key: &BlobKey, put_before: Timestamp) -> Result<Option<u64>> {
        let dest = self.path(key);
        let aside = self.tmp_path();
        tokio::task::spawn_blocking(move || delete_file_if_older(&dest, &aside, put_before)).await.map_err(join_err)?
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
                // Storing content already there refreshes `put_at` (at most once a minute,
                // so repeated puts do not rewrite the row): gc's grace period counts from it.
                c.prepare_cached(
                    "INSERT INTO blobs (blob_key, data, put_at) VALUES (?1, ?2, ?3) ON CONFLICT (blob_key) \
                     DO UPDATE SET put_at = excluded.put_at WHERE blobs.put_at < excluded.put_at - 60000000",
                )
                .and_then(|mut s| s.execute(params![&key.0[..], bytes, braid_core::Timestamp::now().as_micros()]))
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
    if refresh(dest) {
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

/// True if the blob file exists and its modification time is set to now: storing content
/// that is already there counts as storing it again for gc's grace period. False if it
/// is absent or its time cannot be set; the caller then writes it (a rename over it).
fn refresh(path: &Path) -> bool {
    std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now())).is_ok()
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

    async fn list(&self, after: Option<String>, limit: usize) -> Result<Page<BlobInfo>> {
        let limit = effective_limit(limit, 1000);
        let after = after.as_deref().map(BlobKey::parse).transpose()?;
        let path = self.db.path().to_owned();
        let from: Vec<u8> = after.map(|k| k.0.to_vec()).unwrap_or_default();
        let lim = (limit + 1) as i64;
        let inline: Vec<(Vec<u8>, i64, i64)> = self.db.read(|c| {
            c.prepare_cached(
                "SELECT blob_key, length(data), put_at FROM blobs WHERE blob_key > ?1 ORDER BY blob_key LIMIT ?2",
            )
            .and_then(|mut s| s.query_map(params![from, lim], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(|e| db_err(&path, "list inline blobs", e))
        })?;
        let mut items: Vec<BlobInfo> = Vec::with_capacity(inline.len());
        for (k, size, at) in inline {
            let key: [u8; 32] = k.try_into().map_err(|_| Error::Corrupt {
                what: "inline blob".into(),
                path: path.display().to_string(),
                reason: "its key is not 32 bytes".into(),
            })?;
            items.push(BlobInfo { key: BlobKey(key), size: size as u64, put_at: Timestamp::from_micros(at) });
        }
        let files = self.files().list(after, limit + 1).await?;
        items.extend(files);
        items.sort_by_key(|b| b.key);
        items.dedup_by_key(|b| b.key);
        Ok(page(items, limit, |b| b.key.to_hex()))
    }

    async fn delete_if_older(&self, keys: &[BlobKey], put_before: Timestamp) -> Result<Vec<Option<u64>>> {
        let path = self.db.path().to_owned();
        let wanted: Vec<BlobKey> = keys.to_vec();
        let mut out: Vec<Option<u64>> = self
            .db
            .write(move |c| {
                let mut del = c
                    .prepare_cached("DELETE FROM blobs WHERE blob_key = ?1 AND put_at < ?2 RETURNING length(data)")
                    .map_err(|e| db_err(&path, "delete inline blobs", e))?;
                let mut out = Vec::with_capacity(wanted.len());
                for k in &wanted {
                    let n: Option<i64> = del
                        .query_row(params![&k.0[..], put_before.as_micros()], |r| r.get(0))
                        .optional()
                        .map_err(|e| db_err(&path, format!("delete blob {k}"), e))?;
                    out.push(n.map(|n| n as u64));
                }
                Ok(out)
            })
            .await?;
        for (k, freed) in keys.iter().zip(out.iter_mut()) {
            if freed.is_none() {
                *freed = self.files().delete_if_older(k, put_before).await?;
            }
        }
        Ok(out)
    }
}

fn mtime(meta: &std::fs::Metadata) -> Timestamp {
    let at = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    Timestamp::from_micros(i64::try_from(at.as_micros()).unwrap_or(i64::MAX))
}

/// Blob files with keys after `after`, in key order, at most `limit`.
fn list_files(root: &Path, after: Option<BlobKey>, limit: usize) -> Result<Vec<BlobInfo>> {
    let after_hex = after.map(|k| k.to_hex());
    let mut shards: Vec<String> = match std::fs::read_dir(root) {
        Ok(entries) => entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("list", root, e)),
    };
    shards.retain(|s| s.len() == 2 && after_hex.as_deref().is_none_or(|a| s.as_str() >= &a[..2]));
    shards.sort();
    let mut out = Vec::new();
    for shard in shards {
        let dir = root.join(&shard);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io("list", &dir, e))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| after_hex.as_deref().is_none_or(|a| n.as_str() > a))
            .collect();
        names.sort();
        for name in names {
            // Anything else in a shard directory is not a blob (`braid verify` names it).
            let Ok(key) = BlobKey::parse(&name) else { continue };
            let p = dir.join(&name);
            match std::fs::metadata(&p) {
                Ok(m) => out.push(BlobInfo { key, size: m.len(), put_at: mtime(&m) }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat blob file", &p, e)),
            }
            if out.len() >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Deletes a blob file last stored before `put_before`. The file is first moved aside
/// (to `tmp/`, atomically) and its time checked again there: a `put` of the same content
/// between the first check and the move refreshed the time, and the file goes back; a
/// `put` after the move finds no file and writes a new one. Either way a blob stored
/// again is never lost.
fn delete_file_if_older(dest: &Path, aside: &Path, put_before: Timestamp) -> Result<Option<u64>> {
    let meta = match std::fs::metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat blob file", dest, e)),
    };
    if mtime(&meta) >= put_before {
        return Ok(None);
    }
    match std::fs::rename(dest, aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("move aside blob file", dest, e)),
    }
    let meta = std::fs::metadata(aside).map_err(|e| Error::io("stat blob file", aside, e))?;
    if mtime(&meta) >= put_before {
        // Same content by construction, so replacing a copy written meanwhile is harmless.
        std::fs::rename(aside, dest).map_err(|e| Error::io("move back blob file", dest, e))?;
        return Ok(None);
    }
    std::fs::remove_file(aside).map_err(|e| Error::io("delete blob file", aside, e))?;
    Ok(Some(meta.len()))
}
