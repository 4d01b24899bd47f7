//! The server: shared state, the router, and the middleware every request passes:
//! token check, security headers, metrics, and rendering of errors as pages or JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use braid_client::{Client, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;

use super::error::{ErrorInfo, UiError, UiResult};
use super::{api, live, openapi, pages, plans, view};

/// The token rule and the CSRF secret of one server process.
#[derive(Clone)]
pub struct Security {
    token: Option<blake3::Hash>,
    csrf: String,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").field("token_required", &self.token.is_some()).finish_non_exhaustive()
    }
}

/// The cookie a `?token=` visit sets, so a browser carries the token afterwards.
pub const TOKEN_COOKIE: &str = "braid_ui_token";

impl Security {
    /// A fresh CSRF secret (32 random bytes) and the token, if any.
    pub fn new(token: Option<String>) -> Self {
        let mut bytes = [0u8; 32];
        // Without the OS's randomness a secret derived from time and address still
        // differs per process; getrandom fails only on exotic platforms.
        if getrandom::fill(&mut bytes).is_err() {
            let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &bytes);
            bytes = *blake3::hash(seed.as_bytes()).as_bytes();
        }
        Security {
            token: token.map(|t| blake3::hash(t.as_bytes())),
            csrf: blake3::Hash::from(bytes).to_hex().to_string(),
        }
    }

    /// Whether every request must carry the token (one was given).
    pub(crate) fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `given` is the token; compared as blake3 hashes, in constant time.
    fn token_ok(&self, given: &str) -> bool {
        self.token.is_some_and(|t| t == blake3::hash(given.as_bytes()))
    }

    /// The token every form of this server carries.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's CSRF field is this server's, compared in constant time.
    pub(crate) fn csrf_ok(&self, given: &str) -> bool {
        blake3::hash(given.as_bytes()) == blake3::hash(self.csrf.as_bytes())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// The UI server's own Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) live_streams: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("braid_ui");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "HTTP requests served, by method, route and status", requests.clone());
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(request_histogram);
        registry.register("request_duration_seconds", "Time to produce a response, by route", durations.clone());
        let live_streams = Gauge::default();
        registry.register("live_streams", "Server-sent event streams open now", live_streams.clone());
        Metrics { registry, requests, durations, live_streams }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A grid of a finished step, kept so a 100,000-branch grid is read from the store once.
pub(crate) type GridCache = Mutex<HashMap<String, Arc<api::Grid>>>;
/// How many finished grids are kept.
pub(crate) const GRID_CACHE_MAX: usize = 16;

/// What every handler sees.
#[derive(Debug)]
pub struct AppState {
    /// Every read goes through it.
    pub client: Client,
    /// The store the client reads, for the UI's only writes: activating, deactivating
    /// and launching plans (form POSTs with a CSRF token).
    pub store: Store,
    pub security: Security,
    pub metrics: Metrics,
    pub(crate) grids: GridCache,
    /// Steps of finished runs, by run pathspec.
    pub(crate) steps: Mutex<HashMap<String, Arc<Vec<braid_client::Step>>>>,
    /// Grids being computed in the background, by step pathspec.
    pub(crate) prefetching: Mutex<std::collections::HashSet<String>>,
}

pub type Shared = Arc<AppState>;

/// Runs a blocking client read off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> UiResult<T> + Send + 'static) -> UiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(UiError::Store { context: "a read of the store panicked".to_owned(), source: Box::new(e) }),
    }
}

/// The whole application over `store`: pages, API, events, assets, metrics, with the
/// middleware.
pub fn router(store: Store, security: Security) -> Router {
    let state = Arc::new(AppState {
        client: Client::from_store(store.clone()),
        store,
        security,
        metrics: Metrics::new(),
        grids: Mutex::new(HashMap::new()),
        steps: Mutex::new(HashMap::new()),
        prefetching: Mutex::new(Default::default()),
    });
    Router::new()
        .route("/", get(pages::runs))
        .route("/runs/{flow}/{run}", get(pages::run))
        .route("/runs/{flow}/{run}/{step}", get(pages::step))
        .route("/runs/{flow}/{run}/~/{task}", get(pages::task_any))
        .route("/runs/{flow}/{run}/{step}/index/{index}", get(pages::task_by_index))
        .route("/runs/{flow}/{run}/{step}/{task}", get(pages::task))
        .route("/plans", get(plans::list))
        .route("/plans/actions", post(plans::bulk_action))
        .route("/plans/{plan}", get(plans::show))
        .route("/plans/{plan}/{action}", post(plans::action))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/flows", get(api::flows))
        .route("/api/v1/runs", get(api::runs))
        .route("/api/v1/runs/{flow}/{run}", get(api::run))
        .route("/api/v1/runs/{flow}/{run}/steps/{step}/tasks", get(api::step_tasks))
        .route("/api/v1/runs/{flow}/{run}/steps/{step}/grid", get(api::grid))
        .route("/api/v1/runs/{flow}/{run}/steps/{step}/index/{index}", get(api::task_by_index))
        .route("/api/v1/runs/{flow}/{run}/tasks/{task}", get(api::task))
        .route("/api/v1/runs/{flow}/{run}/tasks/{task}/logs", get(api::logs))
        .route("/api/v1/runs/{flow}/{run}/tasks/{task}/artifacts/{name}", get(api::artifact))
        .route("/api/v1/runs/{flow}/{run}/tasks/{task}/artifacts/{name}/value", get(api::artifact_value))
        .route("/api/v1/plans", get(api::plans))
        .route("/api/v1/plans/{plan}", get(api::plan))
        .route("/api/v1/plans/{plan}/matrix", get(api::matrix))
        .route("/events/runs", get(live::runs))
        .route("/events/runs/{flow}/{run}", get(live::run))
        .route("/events/runs/{flow}/{run}/tasks/{task}", get(live::task))
        .route("/assets/app.js", get(assets_js))
        .route("/assets/style.css", get(assets_css))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), render_errors))
        .layer(middleware::from_fn_with_state(state.clone(), csrf_check))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), measure))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn fallback(method: Method, uri: axum::http::Uri) -> UiError {
    if method != Method::GET && method != Method::HEAD && method != Method::POST {
        return UiError::bad(format!("method {method} is not served here; the UI answers GET (and POST for actions)"));
    }
    UiError::NotFound(format!(
        "no page at {}; start from / (runs), /plans, or the API at /api/v1/openapi.json",
        view::cut(uri.path(), 200)
    ))
}

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

async fn assets_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn assets_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], st.metrics.encode())
        .into_response()
}

/// Counts every request by route and status, and times it.
async fn measure(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics.durations.get_or_create(&RouteLabels { route: route.clone() }).observe(start.elapsed().as_secs_f64());
    st.metrics.requests.get_or_create(&RequestLabels { method, route, status: resp.status().as_u16() }).inc();
    resp
}

/// With a token configured, every request must carry it: `Authorization: Bearer`, the
/// cookie, or `?token=` (which sets the cookie and redirects to the same URL without it).
async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if !st.security.token_required() {
        return next.run(req).await;
    }
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.security.token_ok(t.trim()));
    if bearer || cookie(headers, TOKEN_COOKIE).is_some_and(|t| st.security.token_ok(&t)) {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    if let Some((_, t)) = pairs.iter().find(|(k, _)| k == "token")
        && st.security.token_ok(t)
    {
        let rest: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "token").collect();
        let rest = serde_urlencoded::to_string(rest).unwrap_or_default();
        let to = if rest.is_empty() { req.uri().path().to_owned() } else { format!("{}?{rest}", req.uri().path()) };
        let mut resp = Redirect::to(&to).into_response();
        let value = format!("{TOKEN_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    let mut resp = UiError::Unauthorized.into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    // Rendered here: the error middleware sits inside this one.
    render(req.uri().path(), resp).await
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// A POST must come from this site: `Sec-Fetch-Site` and `Origin`, when the browser
/// sends them, must say so. (The form's CSRF token is checked by [`check_form`].)
async fn csrf_check(req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let h = req.headers();
    let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        let e = UiError::Forbidden(format!(
            "refused a {} request (Sec-Fetch-Site: {}): actions are taken only from this UI's own pages",
            req.method(),
            site.unwrap_or_default()
        ));
        return render(req.uri().path(), e.into_response()).await;
    }
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if origin == "null" || origin_host != host {
            let e = UiError::Forbidden(format!(
                "refused a POST from origin {} (this server is {host}): actions are taken only from this UI's own pages",
                view::cut(origin, 100)
            ));
            return render(req.uri().path(), e.into_response()).await;
        }
    }
    next.run(req).await
}

/// Headers on every response: a content security policy that allows only this server's
/// own script and styles (no inline script can run, whatever a value holds), no sniffing,
/// no framing, no referrer to other sites (`same-origin`: with `no-referrer` a browser
/// sends `Origin: null` on its own forms, which the CSRF check must refuse).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

/// Renders error responses: JSON under `/api/`, an HTML page elsewhere. Errors made by
/// axum itself (e.g. a method not allowed) are rendered the same way.
async fn render_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    render(&path, resp).await
}

async fn render(path: &str, resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let info = match resp.extensions().get::<ErrorInfo>() {
        Some(i) => i.clone(),
        None => {
            let headers = resp.headers().clone();
            let body = axum::body::to_bytes(resp.into_body(), 16 * 1024).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            let info = ErrorInfo {
                kind: if status.is_server_error() { "server" } else { "bad_request" },
                message: if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text },
            };
            return finish(path, status, &info, Some(headers));
        }
    };
    let headers = resp.headers().clone();
    finish(path, status, &info, Some(headers))
}

fn finish(path: &str, status: StatusCode, info: &ErrorInfo, keep: Option<HeaderMap>) -> Response {
    let mut resp = if path.starts_with("/api/") {
        (status, Json(serde_json::json!({"error": info.kind, "message": info.message}))).into_response()
    } else {
        (status, pages::error_page(status, &info.message)).into_response()
    };
    if let Some(h) = keep {
        for name in [header::WWW_AUTHENTICATE, header::ALLOW] {
            if let Some(v) = h.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
    }
    resp
}

/// `Path<T>` whose rejection is a [`UiError`] naming the bad segment.
#[derive(Debug)]
pub struct Seg<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Seg<T> {
    type Rejection = UiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, UiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Seg(v)),
            Err(e) => {
                Err(UiError::bad(format!("malformed path {}: {}", view::cut(parts.uri.path(), 200), e.body_text())))
            }
        }
    }
}

/// `Query<T>` whose rejection is a [`UiError`] naming the bad parameter.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = UiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, UiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q).map(Q).map_err(|e| UiError::bad(format!("malformed query string: {e}")))
    }
}

/// The fields of a form POST, once its `csrf` field is found to be this server's CSRF
/// token (compared in constant time); otherwise 403.
pub fn check_form(st: &Shared, body: &[u8]) -> UiResult<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| UiError::bad(format!("malformed form: {e}")))?;
    let given = pairs.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v.as_str());
    if !st.security.csrf_ok(given) {
        return Err(UiError::Forbidden(
            "the form's CSRF token is missing or wrong: reload the page and submit it again".to_owned(),
        ));
    }
    Ok(pairs)
}
