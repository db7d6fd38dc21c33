//! Who may use the local API: the API token, one-time login codes, browser
//! sessions, and the `Host`/`Origin` checks against DNS rebinding and CSRF
//! (docs/API.md "Authentication"). Pure logic: time comes in as `now_ms`.

use rand::RngCore;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use subtle::ConstantTimeEq;

/// The API token's file in the data directory (mode 0600).
pub const TOKEN_FILE: &str = "ui-token";
/// A login code works this long after `supervox ui` asked for it.
pub const CODE_TTL_MS: u64 = 60_000;
/// Login codes outstanding at once (the oldest goes).
pub const MAX_CODES: usize = 8;
/// A browser session lasts this long.
pub const SESSION_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Browser sessions at once (the oldest goes).
pub const MAX_SESSIONS: usize = 32;

/// How a request proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer` with the API token (a program).
    Token,
    /// The session cookie (a browser: ambient, so CSRF rules apply).
    Cookie,
}

/// Why a request is refused before it reaches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token or session.
    Unauthorized,
    /// `Host` is not this server (DNS rebinding).
    BadHost,
    /// `Origin` is another site.
    BadOrigin,
    /// A state-changing browser request without `Origin`.
    OriginRequired,
}

impl Refusal {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Unauthorized => 401,
            _ => 403,
        }
    }

    /// The stable code of the JSON error.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::BadHost => "bad-host",
            Refusal::BadOrigin => "bad-origin",
            Refusal::OriginRequired => "origin-required",
        }
    }

    /// Words for the JSON error.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "no valid API token or session: run `supervox ui` to log in",
            Refusal::BadHost => "this Host is not the supervox web app (DNS rebinding?)",
            Refusal::BadOrigin => "requests from another site are refused",
            Refusal::OriginRequired => "a browser request that changes something must carry Origin",
        }
    }
}

/// The token, codes and sessions of one UI server.
#[derive(Debug)]
pub struct Auth {
    token: String,
    codes: VecDeque<(String, u64)>,
    sessions: VecDeque<(String, u64)>,
    hosts: Vec<String>,
    /// Bound to every address (`0.0.0.0`, `::`): any `Host`, but `Origin` must match it.
    any_host: bool,
    cookie: String,
    scheme: &'static str,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Auth {
    /// For a server at `addr` (`tls`: https), with the API token `token`.
    pub fn new(addr: SocketAddr, tls: bool, token: String) -> Self {
        let port = addr.port();
        let mut hosts = vec![match addr {
            SocketAddr::V4(a) => format!("{}:{port}", a.ip()),
            SocketAddr::V6(a) => format!("[{}]:{port}", a.ip()),
        }];
        if addr.ip().is_loopback() {
            for h in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        Self {
            token,
            codes: VecDeque::new(),
            sessions: VecDeque::new(),
            hosts,
            any_host: addr.ip().is_unspecified(),
            cookie: format!("sv_{port}"),
            scheme: if tls { "https" } else { "http" },
        }
    }

    /// The session cookie's name (per port: cookies do not tell ports apart).
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// The base URL of the app.
    pub fn base_url(&self) -> String {
        format!("{}://{}/", self.scheme, self.hosts[0])
    }

    /// A fresh one-time login code.
    pub fn new_code(&mut self, now_ms: u64) -> String {
        self.codes.retain(|(_, exp)| *exp > now_ms);
        while self.codes.len() >= MAX_CODES {
            self.codes.pop_front();
        }
        let code = random_hex(16);
        self.codes.push_back((code.clone(), now_ms + CODE_TTL_MS));
        code
    }

    /// Trade a login code for a session id; a code works once.
    pub fn redeem(&mut self, code: &str, now_ms: u64) -> Option<String> {
        let i = self.codes.iter().position(|(c, exp)| *exp > now_ms && same(c, code))?;
        self.codes.remove(i);
        self.sessions.retain(|(_, exp)| *exp > now_ms);
        while self.sessions.len() >= MAX_SESSIONS {
            self.sessions.pop_front();
        }
        let session = random_hex(32);
        self.sessions.push_back((session.clone(), now_ms + SESSION_TTL_MS));
        Some(session)
    }

    /// Check a request's headers: `host`, `origin`, `authorization` and
    /// `cookie` as sent, `changes` when the method may change state.
    pub fn check(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        authorization: Option<&str>,
        cookie: Option<&str>,
        changes: bool,
        now_ms: u64,
    ) -> Result<Credential, Refusal> {
        self.check_site(host, origin)?;
        if let Some(t) = authorization.and_then(|a| a.strip_prefix("Bearer ")) {
            return if same(t.trim(), &self.token) { Ok(Credential::Token) } else { Err(Refusal::Unauthorized) };
        }
        let session = cookie.and_then(|c| self.session_in(c));
        match session {
            Some(s) if self.sessions.iter().any(|(id, exp)| *exp > now_ms && same(id, s)) => {
                if changes && origin.is_none() {
                    return Err(Refusal::OriginRequired);
                }
                Ok(Credential::Cookie)
            }
            _ => Err(Refusal::Unauthorized),
        }
    }

    /// The `Host` and `Origin` checks alone (for the pages and the login).
    pub fn check_site(&self, host: Option<&str>, origin: Option<&str>) -> Result<(), Refusal> {
        let host = host.map(|h| h.to_ascii_lowercase());
        let Some(host) = host.filter(|h| !h.is_empty()) else { return Err(Refusal::BadHost) };
        if !self.any_host && !self.hosts.contains(&host) {
            return Err(Refusal::BadHost);
        }
        if let Some(o) = origin {
            let o = o.to_ascii_lowercase();
            let ok = o
                .strip_prefix(self.scheme)
                .and_then(|r| r.strip_prefix("://"))
                .is_some_and(|h| h == host || (!self.any_host && self.hosts.iter().any(|a| a == h)));
            if !ok {
                return Err(Refusal::BadOrigin);
            }
        }
        Ok(())
    }

    fn session_in<'a>(&self, cookie_header: &'a str) -> Option<&'a str> {
        cookie_header.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == self.cookie).then_some(v)
        })
    }
}

/// The API token from `dir`, made (mode 0600) on first start.
pub fn load_or_create_token(dir: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let meta = std::fs::metadata(&path)?;
            if meta.permissions().mode() & 0o077 != 0 {
                anyhow::bail!("{} is readable by others: chmod 600 it (or remove it for a new token)", path.display());
            }
            let t = t.trim().to_string();
            if t.len() < 32 {
                anyhow::bail!("{} holds no usable token: remove it for a new one", path.display());
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = random_hex(32);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(format!("{t}\n").as_bytes())?;
            Ok(t)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new("127.0.0.1:8790".parse().unwrap(), false, "t".repeat(64))
    }

    #[test]
    fn a_code_works_once_and_not_after_a_minute() {
        let mut a = auth();
        let c = a.new_code(0);
        assert!(a.redeem(&c, CODE_TTL_MS + 1).is_none(), "expired");
        let c = a.new_code(1_000);
        let s = a.redeem(&c, 2_000).expect("fresh code");
        assert!(a.redeem(&c, 2_001).is_none(), "second use");
        let cookie = format!("other=1; sv_8790={s}");
        assert_eq!(a.check(Some("127.0.0.1:8790"), None, None, Some(&cookie), false, 3_000), Ok(Credential::Cookie));
        assert_eq!(
            a.check(Some("127.0.0.1:8790"), None, None, Some(&cookie), false, 2_000 + SESSION_TTL_MS + 1),
            Err(Refusal::Unauthorized)
        );
        assert!(a.redeem("not-a-code", 2_000).is_none());
    }

    #[test]
    fn hosts_and_origins_other_than_ours_are_refused() {
        let a = auth();
        let tok = format!("Bearer {}", "t".repeat(64));
        for h in ["127.0.0.1:8790", "localhost:8790", "LOCALHOST:8790", "[::1]:8790"] {
            assert_eq!(a.check(Some(h), None, Some(&tok), None, true, 0), Ok(Credential::Token), "{h}");
        }
        for h in ["evil.example:8790", "127.0.0.1:8791", "127.0.0.1", ""] {
            assert_eq!(a.check(Some(h), None, Some(&tok), None, true, 0), Err(Refusal::BadHost), "{h}");
        }
        assert_eq!(a.check(None, None, Some(&tok), None, true, 0), Err(Refusal::BadHost));
        for o in ["http://evil.example", "http://127.0.0.1:9999", "https://127.0.0.1:8790", "null"] {
            assert_eq!(a.check(Some("127.0.0.1:8790"), Some(o), Some(&tok), None, true, 0), Err(Refusal::BadOrigin));
        }
        assert!(a.check_site(Some("localhost:8790"), Some("http://localhost:8790")).is_ok());
    }

    #[test]
    fn a_wrong_token_or_cookie_is_unauthorized_and_browser_changes_need_origin() {
        let mut a = auth();
        let h = Some("127.0.0.1:8790");
        assert_eq!(a.check(h, None, Some("Bearer nope"), None, false, 0), Err(Refusal::Unauthorized));
        assert_eq!(a.check(h, None, None, Some("sv_8790=forged"), false, 0), Err(Refusal::Unauthorized));
        assert_eq!(a.check(h, None, None, None, false, 0), Err(Refusal::Unauthorized));
        let c = a.new_code(0);
        let s = a.redeem(&c, 0).unwrap();
        let cookie = format!("sv_8790={s}");
        // Another port's cookie of the same name prefix is not ours.
        assert_eq!(a.check(h, None, None, Some(&format!("sv_8791={s}")), false, 0), Err(Refusal::Unauthorized));
        assert_eq!(a.check(h, None, None, Some(&cookie), true, 0), Err(Refusal::OriginRequired));
        assert_eq!(a.check(h, Some("http://127.0.0.1:8790"), None, Some(&cookie), true, 0), Ok(Credential::Cookie));
    }

    #[test]
    fn sessions_and_codes_are_bounded() {
        let mut a = auth();
        let first = a.new_code(0);
        for _ in 0..MAX_CODES {
            a.new_code(0);
        }
        assert!(a.redeem(&first, 0).is_none(), "the oldest code went");
        let mut sessions = Vec::new();
        for _ in 0..MAX_SESSIONS + 1 {
            let c = a.new_code(0);
            sessions.push(a.redeem(&c, 0).unwrap());
        }
        assert_eq!(a.sessions.len(), MAX_SESSIONS);
        let h = Some("127.0.0.1:8790");
        let oldest = format!("sv_8790={}", sessions[0]);
        assert_eq!(a.check(h, None, None, Some(&oldest), false, 0), Err(Refusal::Unauthorized));
    }

    #[test]
    fn an_all_addresses_bind_takes_any_host_but_only_its_own_origin() {
        let a = Auth::new("0.0.0.0:8790".parse().unwrap(), true, "t".repeat(64));
        let tok = format!("Bearer {}", "t".repeat(64));
        let h = Some("phone.example:8790");
        assert_eq!(a.check(h, Some("https://phone.example:8790"), Some(&tok), None, true, 0), Ok(Credential::Token));
        assert_eq!(a.check(h, Some("https://evil.example:8790"), Some(&tok), None, true, 0), Err(Refusal::BadOrigin));
        assert_eq!(a.check(h, Some("http://phone.example:8790"), Some(&tok), None, true, 0), Err(Refusal::BadOrigin));
        assert_eq!(a.check(None, None, Some(&tok), None, true, 0), Err(Refusal::BadHost));
    }

    #[test]
    fn the_token_file_is_private_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let t = load_or_create_token(d.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_or_create_token(d.path()).unwrap(), t);
        use std::os::unix::fs::PermissionsExt;
        let p = d.path().join(TOKEN_FILE);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_token(d.path()).is_err(), "a token others can read is refused");
    }
}
