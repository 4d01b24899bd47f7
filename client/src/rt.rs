//! The client's blocking bridge to the async store API.
//!
//! The store's traits are async; the client is blocking, so it reads the same from a
//! script, a notebook or a CLI. One small current-thread tokio runtime per process drives
//! every store call (the fs backend's file reads need a runtime's blocking pool). It lives
//! in a static, so dropping a client inside an async context never drops a runtime there.
//! Called from inside another tokio runtime (where blocking on a runtime panics), the call
//! runs on a short-lived scoped thread instead.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::{Error, Result};

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_current_thread().enable_all().thread_name("braid-client").build().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|reason| Error::Runtime { reason: reason.clone() })
}

/// Runs `fut` to completion and returns its output.
pub(crate) fn block_on<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(rt.block_on(fut));
    }
    std::thread::scope(|s| match s.spawn(|| rt.block_on(fut)).join() {
        Ok(out) => Ok(out),
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Runs a store call, naming what was being read if it fails.
pub(crate) fn call<T, F>(context: impl FnOnce() -> String, fut: F) -> Result<T>
where
    F: Future<Output = braid_store::Result<T>> + Send,
    T: Send,
{
    block_on(fut)?.map_err(|e| Error::store(context(), e))
}
