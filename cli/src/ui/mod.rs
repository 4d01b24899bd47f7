//! `braid ui`: a web UI and a JSON API over a store, served by the `braid` binary.
//!
//! Server-rendered HTML (maud, which escapes every value) with one small embedded
//! script (`assets/app.js`) for the live parts (server-sent events), the foreach grid
//! (a canvas) and nothing else; every asset is compiled into the binary, so the UI
//! needs no network. The JSON API lives under `/api/v1` and is described by the
//! OpenAPI document at `/api/v1/openapi.json`; Prometheus metrics at `/metrics`.
//!
//! Security: it binds 127.0.0.1 unless told otherwise; a non-loopback address needs a
//! token (`--token` or `BRAID_UI_TOKEN`) and then every request must carry it. The only
//! writes (activate, deactivate, launch a plan) are form POSTs with a CSRF token, and a
//! cross-site POST is refused.
//!
//! - `server`: state, router, security and metrics middleware
//! - `pages`, `plans`: the HTML pages; `dag`: the flow graph and timeline as SVG
//! - `api`: the JSON API; `openapi`: its document; `live`: server-sent events

mod api;
mod dag;
mod error;
mod live;
mod openapi;
mod pages;
mod plans;
mod server;
mod view;

use std::net::SocketAddr;

use braid_client::Store;
use clap::Args;

pub use server::{Security, router};

/// Options of `braid ui`.
#[derive(Debug, Clone, Args)]
pub(crate) struct UiArgs {
    /// Address to listen on. Anything but a loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: SocketAddr,
    /// A secret every request must carry (as `Authorization: Bearer TOKEN`, or once as
    /// `?token=TOKEN`, which sets a cookie); required off loopback, at least 16 characters.
    #[arg(long, env = "BRAID_UI_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Checks the address and token rules: a non-loopback address needs a token, and a
/// token must be long enough. The message says how to fix it.
pub fn check_security(addr: &SocketAddr, token: Option<&str>) -> Result<Option<String>, String> {
    let token = token.filter(|t| !t.is_empty());
    if let Some(t) = token
        && t.len() < MIN_TOKEN_LEN
    {
        return Err(format!(
            "the UI token is {} characters; use at least {MIN_TOKEN_LEN} (e.g. `--token $(head -c 24 /dev/urandom | base64)`)",
            t.len()
        ));
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--addr {addr} is not a loopback address, so the UI needs a token: pass --token TOKEN or set BRAID_UI_TOKEN (at least {MIN_TOKEN_LEN} characters), or bind 127.0.0.1"
        ));
    }
    Ok(token.map(str::to_owned))
}

/// Runs the server until Ctrl-C.
pub(crate) fn serve(store: Store, args: &UiArgs) -> crate::inspect::Result<()> {
    let token = check_security(&args.addr, args.token.as_deref()).map_err(crate::inspect::Error::Usage)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("braid-ui")
        .build()
        .map_err(crate::inspect::Error::Runtime)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| crate::inspect::Error::Failed(format!("cannot listen on {}: {e}", args.addr)))?;
        let local = listener.local_addr().map_err(crate::inspect::Error::Io)?;
        let security = Security::new(token);
        let auth = if security.token_required() { " (token required)" } else { "" };
        eprintln!("braid ui: serving the store at {} on http://{local}/{auth}", store.location());
        tracing::info!(%local, store = store.location(), "braid ui listening");
        let app = router(store, security);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| crate::inspect::Error::Failed(format!("the UI server stopped: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn loopback_needs_no_token() {
        assert_eq!(check_security(&addr("127.0.0.1:8080"), None), Ok(None));
        assert_eq!(check_security(&addr("[::1]:8080"), None), Ok(None));
    }

    #[test]
    fn a_non_loopback_address_refuses_to_start_without_a_token() {
        let e = check_security(&addr("0.0.0.0:8080"), None).unwrap_err();
        assert!(e.contains("needs a token") && e.contains("BRAID_UI_TOKEN"), "{e}");
        let e = check_security(&addr("0.0.0.0:8080"), Some("")).unwrap_err();
        assert!(e.contains("needs a token"), "{e}");
        let ok = check_security(&addr("0.0.0.0:8080"), Some("0123456789abcdef"));
        assert_eq!(ok, Ok(Some("0123456789abcdef".to_owned())));
    }

    #[test]
    fn a_short_token_is_refused() {
        let e = check_security(&addr("127.0.0.1:8080"), Some("short")).unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
    }
}
