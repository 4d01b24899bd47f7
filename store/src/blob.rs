//! Content-addressed blobs: the key of a blob is the blake3 hash of its bytes, so the
//! same value is stored once and every read can verify what it got.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};
use crate::record::Page;
use braid_core::Timestamp;

/// The blake3 hash of a blob's content; shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobKey(pub [u8; 32]);

impl BlobKey {
    /// The key of `bytes`: their blake3 hash.
    pub fn of(bytes: &[u8]) -> Self {
        BlobKey(*blake3::hash(bytes).as_bytes())
    }

    /// The 64 lowercase hex digits it is shown as (and [`BlobKey::parse`] reads).
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Reads 64 hex digits; `Invalid` otherwise.
    pub fn parse(s: &str) -> Result<Self> {
        blake3::Hash::from_hex(s).map(|h| BlobKey(*h.as_bytes())).map_err(|e| Error::Invalid {
            what: format!("blob key {s:?}"),
            reason: format!("{e}; a blob key is 64 hex digits"),
        })
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({})", &self.to_hex()[..16])
    }
}

impl FromStr for BlobKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for BlobKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A reader of a blob's bytes.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

/// Where blobs live. Implemented by the fs backend (files, small ones inline in the
/// record database), the memory backend, S3 ([`crate::s3`]) and a shared directory
/// ([`crate::DirBlobs`]); an out-of-tree backend implements it and runs the
/// `conformance` suite. Every read is verified against the key.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Stores `bytes`; storing content that is already there writes nothing.
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey>;

    /// Stores several blobs; backends override this to write small ones in one batch.
    async fn put_many(&self, blobs: Vec<Vec<u8>>) -> Result<Vec<BlobKey>> {
        let mut keys = Vec::with_capacity(blobs.len());
        for b in blobs {
            keys.push(self.put(b).await?);
        }
        Ok(keys)
    }

    /// Stores everything `reader` yields without holding it whole in memory; returns
    /// the key and the size.
    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<(BlobKey, u64)>;

    /// The whole blob, verified against its key. `NotFound` if absent.
    async fn get(&self, key: &BlobKey) -> Result<Vec<u8>>;

    /// A reader over the blob; the content is verified against the key as it is read
    /// and a mismatch surfaces as a read error at the end.
    async fn get_stream(&self, key: &BlobKey) -> Result<BlobReader>;

    /// The blob's size, or `None` if absent.
    async fn size(&self, key: &BlobKey) -> Result<Option<u64>>;

    /// Whether the blob is stored (by default: whether it has a size).
    async fn exists(&self, key: &BlobKey) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    /// Several blobs at once, in the order asked. Backends override this to batch.
    async fn get_many(&self, keys: &[BlobKey]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Blobs in key order, with size and when each was last stored (a `put` of content
    /// already there refreshes it). Pass `next` back as `after` for the following page.
    async fn list(&self, after: Option<String>, limit: usize) -> Result<Page<BlobInfo>>;

    /// Deletes each blob of `keys` last stored before `put_before`; returns, per key,
    /// the bytes freed, or `None` if it was absent or stored since. The age check and the
    /// deletion are one step, so a blob a writer has just stored again survives. The
    /// caller decides what is unreferenced (see [`crate::RecordStore::artifact_blob_refs`]).
    async fn delete_if_older(&self, keys: &[BlobKey], put_before: Timestamp) -> Result<Vec<Option<u64>>>;
}

/// A blob as [`BlobStore::list`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// The blob's key.
    pub key: BlobKey,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last stored.
    pub put_at: Timestamp,
}

/// Checks `bytes` against `key`, naming `origin` in the error.
pub(crate) fn verify(key: &BlobKey, bytes: &[u8], origin: &str) -> Result<()> {
    let actual = BlobKey::of(bytes);
    if &actual != key {
        return Err(Error::Corrupt {
            what: format!("blob {key}"),
            path: origin.to_owned(),
            reason: format!("content hashes to {actual} ({} bytes); the blob was truncated or altered", bytes.len()),
        });
    }
    Ok(())
}

/// Wraps a reader, hashing what passes through; at end of stream, a hash that does not
/// match the key is reported as an `InvalidData` error instead of a clean EOF.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    key: BlobKey,
    origin: String,
    done: bool,
}

impl<R> VerifyingReader<R> {
    pub(crate) fn new(inner: R, key: BlobKey, origin: String) -> Self {
        VerifyingReader { inner, hasher: blake3::Hasher::new(), key, origin, done: false }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    if !this.done {
                        this.done = true;
                        let actual = BlobKey(*this.hasher.finalize().as_bytes());
                        if actual != this.key {
                            return Poll::Ready(Err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!(
                                    "corrupted blob {} in {}: content hashes to {actual}; the blob was truncated or altered",
                                    this.key, this.origin
                                ),
                            )));
                        }
                    }
                } else {
                    this.hasher.update(new);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
