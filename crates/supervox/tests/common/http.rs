//! A raw HTTP/1.0 client for the node's local API: every header is ours to
//! set (a wrong `Host`, a foreign `Origin`), and HTTP/1.0 answers need no
//! chunked decoding (the server closes at the end, or streams until we go).

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The JSON error's code.
    #[track_caller]
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_else(|| panic!("no code in {:?}", self.body)).to_string()
    }
}

/// A client of one UI server.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    /// `Authorization: Bearer` value, if any.
    pub token: Option<String>,
}

impl Api {
    /// The API of a node from its `ui` URL, with the token from its data dir.
    pub fn of(ui_url: &str, data_dir: &Path) -> Api {
        let hostport = ui_url.trim_start_matches("http://").trim_end_matches('/');
        let addr = hostport.parse().unwrap_or_else(|_| panic!("ui URL {ui_url:?}"));
        let token = std::fs::read_to_string(data_dir.join("ui-token")).expect("ui-token").trim().to_string();
        Api { addr, token: Some(token) }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A request with our `Host` and token plus `headers`.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
        let mut h: Vec<(String, String)> = vec![("Host".into(), self.host())];
        if let Some(t) = &self.token {
            h.push(("Authorization".into(), format!("Bearer {t}")));
        }
        for (k, v) in headers {
            h.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
            if !v.is_empty() {
                h.push((k.to_string(), v.to_string()));
            }
        }
        raw(self.addr, method, path, &h, body)
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        let b = body.to_string();
        self.send("POST", path, &[("Content-Type", "application/json")], Some(b.as_bytes()))
    }

    /// Open the event stream.
    pub fn events(&self) -> SseStream {
        SseStream::open(self)
    }
}

/// Send one HTTP/1.0 request with exactly these headers and read the whole answer.
pub fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(String, String)], body: Option<&[u8]>) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (413) and close before it has read everything.
        let _ = s.write_all(b);
    }
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    parse(&all)
}

fn parse(all: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(all);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Answer { status, headers, body: body.to_string() }
}

/// A Server-Sent Events stream, read on a thread: one JSON value per `data:` line.
pub struct SseStream {
    pub status: u16,
    rx: std::sync::mpsc::Receiver<Value>,
}

impl SseStream {
    fn open(api: &Api) -> SseStream {
        let mut s = TcpStream::connect(api.addr).unwrap();
        let token = api.token.clone().unwrap_or_default();
        let req = format!(
            "GET /api/v1/events HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n",
            api.host()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut status_line = String::new();
        r.read_line(&mut status_line).unwrap();
        let status = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in r.lines().map_while(Result::ok) {
                if let Some(d) = l.strip_prefix("data:") {
                    if let Ok(v) = serde_json::from_str::<Value>(d.trim()) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        SseStream { status, rx }
    }

    /// The next event matching `f` within `within` (others are skipped).
    #[track_caller]
    pub fn wait(&self, within: Duration, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) if f(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("{what}: no such event within {within:?}"),
            }
        }
    }
}
