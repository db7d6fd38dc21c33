//! The softphone: the node's local web app and its HTTP/SSE API
//! (docs/API.md). Every route builds one control [`Request`] and hands it to
//! the node's actor exactly as the control socket does, so `ctl` and the
//! browser share one API; this module only moves bytes and checks who asks.

mod api;
pub mod auth;

use crate::node::ControlMsg;
use anyhow::{bail, Context, Result};
use auth::Auth;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

/// The port the web app tries first (then the next ones).
pub const DEFAULT_PORT: u16 = 8790;
/// Ports tried after [`DEFAULT_PORT`] before taking any free one.
pub const PORT_SCAN: u16 = 100;
/// HTTP connections served at once (a browser opens about 6).
pub const MAX_CONNECTIONS: usize = 64;
/// A TLS handshake must finish within this.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Where and how the web app is served.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// `listen` was not given: if its port is taken, try the next ones.
    pub scan: bool,
    /// Allow a non-loopback address (served over HTTPS only).
    pub allow_remote: bool,
}

impl Default for UiOptions {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)), scan: true, allow_remote: false }
    }
}

/// What the node keeps of its running web app: its address and the login
/// codes `supervox ui` asks for.
#[derive(Debug, Clone)]
pub struct UiHandle {
    auth: Arc<Mutex<Auth>>,
    url: String,
}

impl UiHandle {
    /// The app's base URL.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A one-time login URL (valid for [`auth::CODE_TTL_MS`]).
    pub fn login_url(&self, now_ms: u64) -> String {
        let code = match self.auth.lock() {
            Ok(mut a) => a.new_code(now_ms),
            Err(p) => p.into_inner().new_code(now_ms),
        };
        format!("{}login?code={code}", self.url)
    }
}

/// Who the node is, for the QR code.
#[derive(Debug, Clone)]
pub struct Me {
    /// Our name.
    pub name: String,
    /// Our fingerprint.
    pub fingerprint: String,
}

/// Bind the web app's listener and serve it until `shutdown`.
pub async fn start(
    opts: &UiOptions,
    data_dir: &Path,
    me: Me,
    to_actor: mpsc::Sender<ControlMsg>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<UiHandle> {
    let remote = !opts.listen.ip().is_loopback();
    if remote && !opts.allow_remote {
        bail!(
            "--ui {} is not a loopback address: anyone who can reach it could try to control this node; \
             give --ui-allow-remote to serve it over HTTPS there",
            opts.listen
        );
    }
    let tcp = bind(opts).await?;
    let addr = tcp.local_addr()?;
    let tls = if remote {
        let cert = crate::tls::RelayCert::load_or_create(&ui_tls_dir(data_dir)?)?;
        let mut cfg = (*cert.server_config()?).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        info!("web app over HTTPS, certificate SHA-256 {}", crate::tls::format_fingerprint(&cert.fingerprint));
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    } else {
        None
    };
    let token = auth::load_or_create_token(data_dir)?;
    let auth = Arc::new(Mutex::new(Auth::new(addr, tls.is_some(), token)));
    let url = auth.lock().map(|a| a.base_url()).unwrap_or_default();
    let router = api::router(api::AppState { auth: auth.clone(), to_actor, me: Arc::new(me) });
    let listener = UiListener::spawn(tcp, tls);
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        });
        // Graceful shutdown waits for open event streams: bound it.
        tokio::select! {
            r = served => if let Err(e) = r { warn!("web app: {e}") },
            _ = async { let _ = shutdown.changed().await; tokio::time::sleep(Duration::from_millis(500)).await } => {}
        }
    });
    info!("ui {url}");
    Ok(UiHandle { auth, url })
}

fn ui_tls_dir(data_dir: &Path) -> Result<std::path::PathBuf> {
    let d = data_dir.join("ui-tls");
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

/// The listener: the given port, or with `scan` the next free one after it
/// (then any), so several nodes on one machine each get one.
async fn bind(opts: &UiOptions) -> Result<TcpListener> {
    let first = TcpListener::bind(opts.listen).await;
    match first {
        Ok(l) => Ok(l),
        Err(e) if !opts.scan => Err(e).with_context(|| format!("cannot listen on --ui {}", opts.listen)),
        Err(_) => {
            let base = opts.listen.port();
            for p in (1..=PORT_SCAN).filter_map(|i| base.checked_add(i)) {
                if let Ok(l) = TcpListener::bind(SocketAddr::new(opts.listen.ip(), p)).await {
                    return Ok(l);
                }
            }
            TcpListener::bind(SocketAddr::new(opts.listen.ip(), 0)).await.context("cannot listen for the web app")
        }
    }
}

/// Accepted connections, counted (at most [`MAX_CONNECTIONS`]) and, for a
/// remote bind, through TLS; handshakes run beside each other so a slow
/// client holds up nobody.
struct UiListener {
    rx: mpsc::Receiver<(UiIo, SocketAddr)>,
    local: SocketAddr,
}

impl UiListener {
    fn spawn(tcp: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let local = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = mpsc::channel(16);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok((stream, from)) = tcp.accept().await else {
                    // Out of descriptors, most likely: let them free up.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("web app: {MAX_CONNECTIONS} connections open, {from} dropped");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let tx = tx.clone();
                match &tls {
                    None => {
                        if tx.send((UiIo { stream: Stream::Plain(stream), _slot: permit }, from)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => {
                                    let _ =
                                        tx.send((UiIo { stream: Stream::Tls(Box::new(s)), _slot: permit }, from)).await;
                                }
                                Ok(Err(e)) => tracing::debug!("web app TLS from {from}: {e}"),
                                Err(_) => tracing::debug!("web app TLS from {from}: handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Self { rx, local }
    }
}

impl axum::serve::Listener for UiListener {
    type Io = UiIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (the runtime is going down): wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// One connection of the web app, holding its slot until it closes.
struct UiIo {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for UiIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UiIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
