//! The daemon side of the control socket.

use crate::control::{Request, MAX_REQUEST_LEN};
use anyhow::{Context, Result};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Most control connections served at once.
const MAX_CONTROL_CONNS: usize = 32;

/// A parsed request and where its answer lines go.
#[derive(Debug)]
pub struct ControlMsg {
    /// The request.
    pub req: Request,
    /// Lines for the client; dropping it ends the connection.
    pub reply: mpsc::Sender<String>,
}

/// Listen on `path` (mode 0600: the socket controls calls) and forward
/// requests to the actor.
pub fn listen(path: &Path, to_actor: mpsc::Sender<ControlMsg>) -> Result<()> {
    if path.exists() {
        // A live daemon answers; a stale socket file from a crash does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another node is already running on control socket {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot create control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONTROL_CONNS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let to_actor = to_actor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                let mut rd = BufReader::new(rd.take(MAX_REQUEST_LEN as u64));
                if rd.read_line(&mut line).await.is_err() {
                    return;
                }
                let req: Request = match serde_json::from_str(line.trim()) {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = serde_json::json!({"error": format!("bad request: {e}")}).to_string();
                        let _ = wr.write_all(format!("{msg}\n").as_bytes()).await;
                        return;
                    }
                };
                let (tx, mut rx) = mpsc::channel(64);
                if to_actor.send(ControlMsg { req, reply: tx }).await.is_err() {
                    return;
                }
                // Forward answer lines until the daemon is done, or until the
                // client goes away (EOF on its side): dropping `rx` then tells
                // the daemon, which hangs up a call nobody is watching.
                let mut probe = [0u8; 1];
                loop {
                    tokio::select! {
                        l = rx.recv() => match l {
                            Some(l) => {
                                if wr.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        },
                        r = rd.read(&mut probe) => {
                            if matches!(r, Ok(0) | Err(_)) {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}
