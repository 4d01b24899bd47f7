//! The S3 blob backend, for `--blobs s3://bucket/prefix`: blobs as objects
//! `<prefix>/blobs/<2 hex>/<64 hex>` (the blake3 of their content) in any S3-compatible
//! object store, through the `object_store` crate.
//!
//! - Endpoint, region and credentials come from the standard `AWS_*` environment
//!   variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` or
//!   `AWS_DEFAULT_REGION`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL` for S3-compatible
//!   servers, `AWS_ALLOW_HTTP=true` for an `http://` endpoint).
//! - Puts are create-only (`PutMode::Create`): an object already under the key is the
//!   same content, so "already exists" is success. An existing object last written more
//!   than [`REFRESH_AFTER`] ago is written again (same bytes), so its `last_modified`
//!   says it is in use and `braid gc`'s grace period (1 h by default) spares it.
//! - Values over [`MULTIPART_THRESHOLD`] go up in parts of [`PART_SIZE`], a few at a
//!   time; `put_stream` spools to a temp file while hashing (the key is known only at
//!   the end), so any size streams in bounded memory.
//! - Every read is verified against the key; a mismatch is [`Error::Corrupt`] naming the
//!   object's URL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use crate::blob::{BlobInfo, BlobKey, BlobReader, BlobStore, VerifyingReader, verify};
use crate::error::{Error, Result};
use crate::record::{Page, effective_limit, page};
use braid_core::Timestamp;

/// Values larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// The size of each part of a multipart upload (S3 wants at least 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once: with [`PART_SIZE`], at most 32 MiB of a value in memory.
const PARTS_IN_FLIGHT: usize = 4;
/// Puts and reads in flight at once in `put_many` / `get_many`.
const REQUESTS_IN_FLIGHT: usize = 32;
/// How long connecting to the endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening (checking the bucket and credentials) may take in all.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
const MARKER: &str = "BRAID_BLOBS";
/// A put of content already stored rewrites it when its object is older than this, so
/// the object's time says when its content was last stored (for `braid gc`). Ten minutes:
/// far inside gc's grace period, and at most one rewrite per blob per ten minutes.
pub const REFRESH_AFTER: Duration = Duration::from_secs(600);

/// Blobs in an S3 bucket under a prefix.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// Without leading or trailing `/`; may be empty.
    prefix: String,
    location: String,
    /// See [`S3Blobs::with_refresh_after`].
    refresh_after: Duration,
}

fn location_error(location: &str, problem: String) -> Error {
    Error::Location { location: location.to_owned(), problems: vec![problem] }
}

/// Reads `s3://bucket[/prefix]` into bucket and prefix.
pub(crate) fn parse(location: &str) -> Result<(String, String)> {
    let url = url::Url::parse(location)
        .map_err(|e| location_error(location, format!("is not an S3 location ({e}); write s3://BUCKET[/PREFIX]")))?;
    let bucket = url.host_str().unwrap_or("").to_owned();
    if url.scheme() != "s3" || bucket.is_empty() {
        return Err(location_error(location, "names no bucket; write s3://BUCKET[/PREFIX]".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() || url.username() != "" || url.password().is_some() {
        return Err(location_error(
            location,
            "has parts an S3 location cannot have (user, query or fragment); write s3://BUCKET[/PREFIX] and give credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                .to_owned(),
        ));
    }
    let prefix = url.path().trim_matches('/').to_owned();
    Ok((bucket, prefix))
}

impl S3Blobs {
    /// Opens the blobs at `location` (`s3://bucket[/prefix]`), with endpoint, region and
    /// credentials from the `AWS_*` environment. Checks, within 20 s, that the bucket
    /// exists and that the credentials may read and write it; each failure says which.
    pub async fn open(location: &str) -> Result<S3Blobs> {
        Self::open_with(location, &[]).await
    }

    /// Like [`S3Blobs::open`], with `settings` (`AWS_*` names and values, e.g.
    /// `("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")`) taking precedence over the
    /// environment's: for programs that point at a server without changing their
    /// environment.
    pub async fn open_with(location: &str, settings: &[(&str, String)]) -> Result<S3Blobs> {
        let (bucket, prefix) = parse(location)?;
        // reqwest's TLS needs a process-wide crypto provider; an error means one is
        // installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Client options first: `with_client_options` replaces them whole, so the
        // environment's (`AWS_ALLOW_HTTP`, ...) and the settings go on top.
        let mut builder = AmazonS3Builder::new()
            .with_client_options(
                ClientOptions::new().with_connect_timeout(CONNECT_TIMEOUT).with_timeout(Duration::from_secs(300)),
            )
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(30), ..Default::default() });
        let from_env = std::env::vars().filter(|(k, _)| k.starts_with("AWS_"));
        for (name, value) in from_env {
            if let Ok(key) = name.to_ascii_lowercase().parse::<object_store::aws::AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        for (name, value) in settings {
            let key = name
                .to_ascii_lowercase()
                .parse::<object_store::aws::AmazonS3ConfigKey>()
                .map_err(|e| location_error(location, format!("cannot be used with setting {name}: {e}")))?;
            builder = builder.with_config(key, value);
        }
        let builder = builder.with_bucket_name(&bucket);
        let endpoint = builder
            .get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| "AWS S3".to_owned());
        let store = builder.build().map_err(|e| {
            location_error(
                location,
                format!("cannot be used: {e}; check the AWS_* environment (AWS_REGION, AWS_ENDPOINT_URL, ...)"),
            )
        })?;
        let blobs = S3Blobs {
            store: Arc::new(store),
            bucket,
            prefix,
            location: location.to_owned(),
            refresh_after: REFRESH_AFTER,
        };
        match tokio::time::timeout(OPEN_TIMEOUT, blobs.check()).await {
            Ok(Ok(())) => Ok(blobs),
            Ok(Err(e)) => Err(location_error(location, blobs.open_problem(&endpoint, &e))),
            Err(_) => Err(location_error(
                location,
                format!(
                    "cannot be reached: {endpoint} did not answer within {} s; check AWS_ENDPOINT_URL and the network",
                    OPEN_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// Writes the marker object (the bucket exists, writes are allowed), then lists the
    /// prefix (reads are allowed). The put comes first: its failures have typed variants
    /// (a missing bucket is `NotFound`, refused credentials `PermissionDenied` or
    /// `Unauthenticated`), where a failed list is only `Generic`.
    async fn check(&self) -> object_store::Result<()> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&self.path_of(MARKER), PutPayload::from_static(b"braid-blobs 1\n"), opts).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(e),
        }
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        self.store.list_with_delimiter(prefix.as_ref()).await?;
        Ok(())
    }

    fn open_problem(&self, endpoint: &str, e: &object_store::Error) -> String {
        let bucket = &self.bucket;
        match e {
            object_store::Error::NotFound { .. } => format!(
                "names bucket `{bucket}`, which does not exist at {endpoint}; create it (e.g. `aws s3 mb s3://{bucket}`) or name another"
            ),
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => format!(
                "was refused by {endpoint}: the credentials may not read and write bucket `{bucket}` ({e}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ),
            other => format!(
                "cannot be reached: {endpoint} failed ({}); check AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP=true for an http:// endpoint), and that the server is running",
                error_chain(other)
            ),
        }
    }

    /// Sets how old an object must be for a put of its content to write it again
    /// (default [`REFRESH_AFTER`]); `braid gc --grace` must be longer. Zero rewrites on
    /// every put of existing content (the conformance suite does, to check the refresh).
    pub fn with_refresh_after(mut self, after: Duration) -> Self {
        self.refresh_after = after;
        self
    }

    fn path_of(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    fn key_path(&self, key: &BlobKey) -> ObjectPath {
        let hex = key.to_hex();
        self.path_of(&format!("blobs/{}/{hex}", &hex[..2]))
    }

    /// The URL of a blob's object, for messages: `s3://bucket/prefix/blobs/ab/<hex>`.
    pub fn object_url(&self, key: &BlobKey) -> String {
        format!("s3://{}/{}", self.bucket, self.key_path(key))
    }

    /// The object store and path of a blob, for tests that tamper with it.
    #[doc(hidden)]
    pub fn raw(&self, key: &BlobKey) -> (Arc<dyn ObjectStore>, ObjectPath) {
        (self.store.clone(), self.key_path(key))
    }

    fn err(&self, context: String, e: object_store::Error) -> Error {
        Error::ObjectStore { location: self.location.clone(), context, source: Arc::new(e) }
    }

    async fn put_small(&self, key: BlobKey, bytes: Vec<u8>) -> Result<()> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let path = self.key_path(&key);
        let payload = PutPayload::from(bytes);
        match self.store.put_opts(&path, payload.clone(), opts).await {
            Ok(_) => Ok(()),
            // The same key is the same content: already there is stored.
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                if self.is_stale(&key).await? {
                    self.store.put(&path, payload).await.map_err(|e| self.err(format!("refresh blob {key}"), e))?;
                }
                Ok(())
            }
            Err(e) => Err(self.err(format!("store blob {key}"), e)),
        }
    }

    /// True if the object of `key` was last written longer ago than `refresh_after`.
    async fn is_stale(&self, key: &BlobKey) -> Result<bool> {
        match self.store.head(&self.key_path(key)).await {
            Ok(meta) => Ok(age(meta.last_modified) > self.refresh_after),
            // Deleted meanwhile: the create-only put will be retried by the caller's next put.
            Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(self.err(format!("look up blob {key}"), e)),
        }
    }

    /// A multipart upload of what `next_part` yields (each call the next part, `None` at
    /// the end), a few parts in flight; aborted on failure.
    async fn put_parts<F, Fut>(&self, key: BlobKey, mut next_part: F) -> Result<()>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<Option<Vec<u8>>>> + Send,
    {
        let path = self.key_path(&key);
        if let Ok(meta) = self.store.head(&path).await
            && age(meta.last_modified) <= self.refresh_after
        {
            return Ok(());
        }
        let upload =
            self.store.put_multipart(&path).await.map_err(|e| self.err(format!("start upload of blob {key}"), e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let result: Result<()> = async {
            while let Some(part) = next_part().await? {
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.err(format!("upload blob {key}"), e))?;
                writer.put(part.into());
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await.map_err(|e| self.err(format!("finish upload of blob {key}"), e))?;
                Ok(())
            }
            Err(e) => {
                // The error that matters is `e`; an upload that cannot be aborted is
                // removed by the bucket's lifecycle rules for incomplete uploads.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

/// How long ago an object's `last_modified` was (zero if in the future).
fn age(at: impl Into<std::time::SystemTime>) -> Duration {
    std::time::SystemTime::now().duration_since(at.into()).unwrap_or_default()
}

fn timestamp_of(at: impl Into<std::time::SystemTime>) -> Timestamp {
    let since = at.into().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        cur = s.source();
    }
    text
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey> {
        let key = BlobKey::of(&bytes);
        if bytes.len() <= MULTIPART_THRESHOLD {
            self.put_small(key, bytes).await?;
        } else {
            let bytes = Arc::new(bytes);
            let mut offset = 0;
            self.put_parts(key, || {
                let part = (offset < bytes.len()).then(|| {
                    let end = (offset + PART_SIZE).min(bytes.len());
                    let part = bytes[offset..end].to_vec();
                    offset = end;
                    part
                });
                async move { Ok(part) }
            })
            .await?;
        }
        Ok(key)
    }

    async fn put_many(&self, blobs: Vec<Vec<u8>>) -> Result<Vec<BlobKey>> {
        futures_util::stream::iter(blobs.into_iter().map(|b| self.put(b)))
            .buffered(REQUESTS_IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<(BlobKey, u64)> {
        // Up to the threshold in memory and one put; past it, spooled to a temp file while
        // hashing, then uploaded from the file part by part.
        let read_err = |e| Error::io("read blob stream for", &self.location, e);
        let mut hasher = blake3::Hasher::new();
        let mut head = Vec::new();
        let mut chunk = vec![0u8; 1024 * 1024];
        let mut spool: Option<tokio::fs::File> = None;
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut chunk).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&chunk[..n]);
            match &mut spool {
                Some(f) => tokio::io::AsyncWriteExt::write_all(f, &chunk[..n])
                    .await
                    .map_err(|e| Error::io("write spool file for", &self.location, e))?,
                None => {
                    head.extend_from_slice(&chunk[..n]);
                    if head.len() > MULTIPART_THRESHOLD {
                        let f =
                            tempfile::tempfile().map_err(|e| Error::io("create spool file for", &self.location, e))?;
                        let mut f = tokio::fs::File::from_std(f);
                        tokio::io::AsyncWriteExt::write_all(&mut f, &head)
                            .await
                            .map_err(|e| Error::io("write spool file for", &self.location, e))?;
                        head = Vec::new();
                        spool = Some(f);
                    }
                }
            }
        }
        let key = BlobKey(*hasher.finalize().as_bytes());
        let Some(mut f) = spool else {
            self.put_small(key, head).await?;
            return Ok((key, total));
        };
        f.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| Error::io("rewind spool file for", &self.location, e))?;
        let f = tokio::sync::Mutex::new(f);
        let f = &f;
        let location = &self.location;
        self.put_parts(key, move || async move {
            let mut part = vec![0u8; PART_SIZE];
            let mut filled = 0;
            let mut f = f.lock().await;
            while filled < PART_SIZE {
                let n = f.read(&mut part[filled..]).await.map_err(|e| Error::io("read spool file for", location, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            part.truncate(filled);
            Ok((filled > 0).then_some(part))
        })
        .await?;
        Ok((key, total))
    }

    async fn get(&self, key: &BlobKey) -> Result<Vec<u8>> {
        let got = match self.store.get(&self.key_path(key)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::NotFound { what: format!("blob {key}") }),
            Err(e) => return Err(self.err(format!("read blob {key}"), e)),
        };
        let bytes = got.bytes().await.map_err(|e| self.err(format!("read blob {key}"), e))?.to_vec();
        verify(key, &bytes, &self.object_url(key))?;
        Ok(bytes)
    }

    async fn get_stream(&self, key: &BlobKey) -> Result<BlobReader> {
        let got = match self.store.get(&self.key_path(key)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::NotFound { what: format!("blob {key}") }),
            Err(e) => return Err(self.err(format!("read blob {key}"), e)),
        };
        let stream = got.into_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Box::new(VerifyingReader::new(reader, *key, self.object_url(key))))
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>> {
        match self.store.head(&self.key_path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(format!("look up blob {key}"), e)),
        }
    }

    async fn get_many(&self, keys: &[BlobKey]) -> Result<Vec<Vec<u8>>> {
        let keys = keys.to_vec();
        futures_util::stream::iter(keys)
            .map(|k| async move { self.get(&k).await })
            .buffered(REQUESTS_IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn list(&self, after: Option<String>, limit: usize) -> Result<Page<BlobInfo>> {
        let limit = effective_limit(limit, 1000);
        let after = after.as_deref().map(BlobKey::parse).transpose()?;
        let prefix = self.path_of("blobs");
        // S3 lists keys in byte order (ListObjectsV2 with StartAfter), so a page is the
        // next `limit` keys; sorted again here in case a compatible server does not.
        let mut listing = match after {
            Some(k) => self.store.list_with_offset(Some(&prefix), &self.key_path(&k)),
            None => self.store.list(Some(&prefix)),
        };
        let mut items = Vec::new();
        while items.len() <= limit {
            let Some(meta) = listing.next().await else { break };
            let meta = meta.map_err(|e| self.err("list blobs".into(), e))?;
            // Anything else under the prefix is not a blob of ours.
            let Some(Ok(key)) = meta.location.filename().map(BlobKey::parse) else { continue };
            if self.key_path(&key) != meta.location {
                continue;
            }
            items.push(BlobInfo { key, size: meta.size, put_at: timestamp_of(meta.last_modified) });
        }
        items.sort_by_key(|b| b.key);
        Ok(page(items, limit, |b| b.key.to_hex()))
    }

    /// S3 has no delete conditional on an object's age, so this is a `HEAD` then a
    /// `DELETE`: a put of the same content in the milliseconds between them is lost with
    /// the object (the fs and directory backends move the file aside and check again).
    async fn delete_if_older(&self, keys: &[BlobKey], put_before: Timestamp) -> Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let path = self.key_path(key);
            let meta = match self.store.head(&path).await {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => {
                    out.push(None);
                    continue;
                }
                Err(e) => return Err(self.err(format!("look up blob {key}"), e)),
            };
            if timestamp_of(meta.last_modified) >= put_before {
                out.push(None);
                continue;
            }
            match self.store.delete(&path).await {
                Ok(()) => out.push(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => out.push(None),
                Err(e) => return Err(self.err(format!("delete blob {key}"), e)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_location_is_a_bucket_and_a_prefix() {
        assert_eq!(parse("s3://runs/team/braid/").unwrap(), ("runs".into(), "team/braid".into()));
        assert_eq!(parse("s3://runs").unwrap(), ("runs".into(), String::new()));
        for bad in ["s3:///x", "s3://u:p@b/x", "s3://b/x?y=1"] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, Error::Location { .. }), "{bad}: {e}");
        }
    }
}
