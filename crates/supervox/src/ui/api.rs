//! The routes of the local API (docs/API.md) and the guard in front of them.

use super::auth::{Auth, Refusal};
use super::Me;
use crate::control::{ContactAction, Request, MAX_REQUEST_LEN};
use crate::links::now_ms;
use crate::node::ControlMsg;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The page and its script and style, embedded in the binary.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The node must take a request within this (its queue is full otherwise).
const HANDOFF: Duration = Duration::from_secs(2);
/// A request's whole answer must arrive within this (a send waits up to 15 s for its message to be stored).
const ANSWER: Duration = Duration::from_secs(20);
/// The event stream's keep-alive comment (proxies and browsers drop silent streams).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The API version served under `/api/v1/`.
pub const API_VERSION: u32 = 1;

/// What every handler shares.
#[derive(Clone)]
pub(super) struct AppState {
    pub auth: Arc<Mutex<Auth>>,
    pub to_actor: mpsc::Sender<ControlMsg>,
    pub me: Arc<Me>,
}

/// A JSON error with its HTTP status and stable code.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    code: String,
    text: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, text: impl Into<String>) -> Self {
        Self { status, code: code.to_string(), text: text.into() }
    }

    fn bad_json(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-json", format!("the body is not the JSON this route takes: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.text, "code": self.code}))).into_response()
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::FORBIDDEN);
        Self::new(status, r.code(), r.text())
    }
}

type ApiResult = Result<Response, ApiError>;

pub(super) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/version", get(version))
        .route("/status", get(|s: State<AppState>| simple(s, Request::Status)))
        .route(
            "/contacts",
            get(|s: State<AppState>| list(s, Request::Contacts { action: None, name: None, message: None }))
                .post(contact),
        )
        .route("/presence", post(presence))
        .route("/messages/{name}", get(messages).post(send))
        .route("/messages/{name}/read", post(read))
        .route("/history", get(|s: State<AppState>| list(s, Request::History)))
        .route("/call", post(call))
        .route("/answer", post(|s: State<AppState>| simple(s, Request::Answer)))
        .route("/hangup", post(|s: State<AppState>| simple(s, Request::Hangup)))
        .route("/mute", post(mute))
        .route(
            "/devices",
            get(|s: State<AppState>| simple(s, Request::Devices { input: None, output: None })).post(devices),
        )
        .route("/pins", get(|s: State<AppState>| simple(s, Request::Pins)))
        .route("/trust", post(trust))
        .route("/me/qr.svg", get(qr))
        .route("/events", get(events))
        .route("/request", post(raw));
    Router::new()
        .route("/", get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/app.js", get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/style.css", get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }))
        .route("/login", get(login))
        .nest("/api/v1", api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this route takes another method")
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_LEN))
        .with_state(state)
}

/// Host and Origin on everything, a credential on the API; security headers on every answer.
async fn guard(State(st): State<AppState>, req: axum::extract::Request, next: Next) -> Response {
    let checked = check(&st, &req);
    let mut resp = match checked {
        Ok(()) => next.run(req).await,
        Err(r) => ApiError::from(r).into_response(),
    };
    let hs = resp.headers_mut();
    let set = |hs: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        hs.insert(k, HeaderValue::from_static(v));
    };
    set(
        hs,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(hs, header::X_FRAME_OPTIONS, "DENY");
    set(hs, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(hs, header::REFERRER_POLICY, "no-referrer");
    set(hs, header::CACHE_CONTROL, "no-store");
    resp
}

/// The guard's verdict on a request (no borrow of it outlives this: a body is not `Sync`).
fn check(st: &AppState, req: &axum::extract::Request) -> Result<(), Refusal> {
    let h = |n: header::HeaderName| req.headers().get(n).and_then(|v| v.to_str().ok());
    let (host, origin) = (h(header::HOST), h(header::ORIGIN));
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let auth = match st.auth.lock() {
        Ok(a) => a,
        Err(p) => p.into_inner(),
    };
    if req.uri().path().starts_with("/api/") {
        auth.check(host, origin, h(header::AUTHORIZATION), h(header::COOKIE), changes, now_ms()).map(|_| ())
    } else {
        auth.check_site(host, origin)
    }
}

fn page(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// `/login?code=…`: a one-time code from `supervox ui` becomes a session cookie.
async fn login(State(st): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let (session, cookie) = {
        let mut auth = match st.auth.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        let s = q.code.and_then(|c| auth.redeem(&c, now_ms()));
        (s, auth.cookie_name().to_string())
    };
    match session {
        Some(s) => {
            let max_age = super::auth::SESSION_TTL_MS / 1000;
            let c = format!("{cookie}={s}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
            let mut resp = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This login link is used up or expired: run `supervox ui` again.\n",
        )
            .into_response(),
    }
}

async fn version() -> Json<Value> {
    Json(json!({"api": API_VERSION, "agent": concat!("supervox/", env!("CARGO_PKG_VERSION"))}))
}

/// Hand a request to the node; its answer lines arrive on the receiver.
async fn ask(st: &AppState, req: Request) -> Result<mpsc::Receiver<String>, ApiError> {
    let (tx, rx) = mpsc::channel(64);
    let busy = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node-busy", "the node did not take the request");
    st.to_actor.send_timeout(ControlMsg { req, reply: tx }, HANDOFF).await.map_err(|_| busy())?;
    Ok(rx)
}

/// Every answer line (the node closes the channel when it is done).
async fn collect(mut rx: mpsc::Receiver<String>) -> Result<Vec<Value>, ApiError> {
    let all = async {
        let mut out = Vec::new();
        while let Some(l) = rx.recv().await {
            out.push(serde_json::from_str::<Value>(&l).unwrap_or(Value::Null));
        }
        out
    };
    tokio::time::timeout(ANSWER, all)
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node-busy", "the node did not answer in time"))
}

/// A line in which the node refused: `ok: false`, or an `error` event.
fn refused(v: &Value) -> Option<ApiError> {
    if v["ok"] == false || v["event"] == "error" || v["event"] == "call_failed" {
        let code = v["code"].as_str().unwrap_or("refused");
        let text = v["error"].as_str().or(v["reason"].as_str()).unwrap_or("refused by the node");
        let status = if code == "bad-request" { StatusCode::BAD_REQUEST } else { StatusCode::CONFLICT };
        return Some(ApiError::new(status, code, text));
    }
    None
}

/// A request answered by one object.
async fn simple(State(st): State<AppState>, req: Request) -> ApiResult {
    let lines = collect(ask(&st, req).await?).await?;
    let first = lines.into_iter().next().unwrap_or(Value::Null);
    if let Some(e) = refused(&first) {
        return Err(e);
    }
    Ok(Json(first).into_response())
}

/// A request answered by a list (one line per entry).
async fn list(State(st): State<AppState>, req: Request) -> ApiResult {
    let lines = collect(ask(&st, req).await?).await?;
    if let Some(e) = lines.iter().find_map(refused) {
        return Err(e);
    }
    Ok(Json(Value::Array(lines)).into_response())
}

fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let b = b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("bodies are at most {MAX_REQUEST_LEN} bytes"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text())
        }
    })?;
    serde_json::from_slice(&b).map_err(ApiError::bad_json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    action: ContactAction,
    name: String,
    message: Option<String>,
}

async fn contact(st: State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: ContactBody = body(b)?;
    simple(st, Request::Contacts { action: Some(b.action), name: Some(b.name), message: b.message }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceBody {
    state: String,
    text: Option<String>,
}

async fn presence(st: State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: PresenceBody = body(b)?;
    simple(st, Request::Presence { state: b.state, text: b.text }).await
}

async fn messages(st: State<AppState>, Path(name): Path<String>) -> ApiResult {
    list(st, Request::Messages { name }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    text: String,
}

async fn send(st: State<AppState>, Path(name): Path<String>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: SendBody = body(b)?;
    simple(st, Request::Send { name, text: b.text }).await
}

async fn read(st: State<AppState>, Path(name): Path<String>) -> ApiResult {
    simple(st, Request::Read { name }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBody {
    name: String,
    input: Option<String>,
    output: Option<String>,
}

async fn call(st: State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: CallBody = body(b)?;
    let req = Request::Call { name: b.name, duration: None, input: b.input, output: b.output, detach: true };
    simple(st, req).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    muted: bool,
}

async fn mute(st: State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: MuteBody = body(b)?;
    simple(st, Request::Mute { muted: b.muted }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesBody {
    input: Option<String>,
    output: Option<String>,
}

async fn devices(st: State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: DevicesBody = body(b)?;
    simple(st, Request::Devices { input: b.input, output: b.output }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustBody {
    name: String,
}

async fn trust(st: State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: TrustBody = body(b)?;
    simple(st, Request::Trust { name: b.name }).await
}

/// A QR code to add us: `supervox:NAME?fp=FINGERPRINT`.
async fn qr(State(st): State<AppState>) -> ApiResult {
    let text = format!("supervox:{}?fp={}", st.me.name, st.me.fingerprint);
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "qr", e.to_string()))?;
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(160, 160).quiet_zone(true).build();
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// The answer lines of a request as a stream (after the first, already read).
fn lines(first: Option<String>, rx: mpsc::Receiver<String>) -> impl futures_util::Stream<Item = String> + Send {
    futures_util::stream::unfold((first, rx), |(first, mut rx)| async move {
        match first {
            Some(l) => Some((l, (None, rx))),
            None => rx.recv().await.map(|l| (l, (None, rx))),
        }
    })
}

/// The event stream (Server-Sent Events), the same lines as `ctl events --json`.
async fn events(State(st): State<AppState>) -> ApiResult {
    let mut rx = ask(&st, Request::Events).await?;
    let first = rx.recv().await;
    if let Some(e) = first.as_deref().and_then(|l| serde_json::from_str::<Value>(l).ok()).as_ref().and_then(refused) {
        return Err(ApiError { status: StatusCode::SERVICE_UNAVAILABLE, ..e });
    }
    use futures_util::StreamExt;
    let stream = lines(first, rx).map(|l| Ok::<_, Infallible>(Event::default().data(l)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// A raw control request; its answer lines as NDJSON, streamed (a call's
/// events as they happen; the call ends if this request goes away).
async fn raw(State(st): State<AppState>, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let req: Request = body(b)?;
    let rx = ask(&st, req).await?;
    use futures_util::StreamExt;
    let stream = lines(None, rx).map(|l| Ok::<_, Infallible>(format!("{l}\n")));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}
