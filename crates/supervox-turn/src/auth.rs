//! Credentials: SN-minted short-lived "TURN REST API" credentials, long-term keys and
//! stateless nonces.
//!
//! * username = `"<expiry-unix-secs>:<user-id-hex>"`
//! * password = `base64(HMAC-SHA1(secret, username))`
//! * long-term key = `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2)
//!
//! Nonces are stateless (no per-client memory, so unauthenticated floods cost nothing):
//! `hex(expiry_ms) || hex(HMAC-SHA256(nonce_key, expiry_ms || client address)[..12])`.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// Longest USERNAME accepted (RFC 8489 §14.3: < 513 bytes).
pub const MAX_USERNAME_LEN: usize = 512;
/// Longest user id (in bytes, before hex encoding) accepted in a username.
pub const MAX_USER_ID_LEN: usize = 64;
/// Length of a nonce produced by [`NonceFactory`].
pub const NONCE_LEN: usize = 40;

/// Mint short-lived TURN credentials for a signed-in client.
///
/// `now_unix_secs` is the SN's wall clock; the credentials are valid until `now + ttl_secs`.
/// The SN hands `(username, password)` to its client, which uses them as ordinary long-term
/// TURN credentials. Any TURN server configured with the same `secret` accepts them.
pub fn mint_credentials(secret: &[u8], user_id: &[u8], now_unix_secs: u64, ttl_secs: u64) -> (String, String) {
    let uid = &user_id[..user_id.len().min(MAX_USER_ID_LEN)];
    let username = format!("{}:{}", now_unix_secs.saturating_add(ttl_secs), hex::encode(uid));
    let password = rest_password(secret, &username);
    (username, password)
}

/// `base64(HMAC-SHA1(secret, username))`, the password for a REST-style username.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length; the error branch is unreachable but handled anyway.
    let mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(mut h) => {
            h.update(username.as_bytes());
            h.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    };
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// The long-term credential key `MD5(username:realm:password)`.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// A syntactically valid REST-style username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestUsername {
    /// Expiry, Unix seconds.
    pub expiry_unix_secs: u64,
    /// Lower-case hex user id (the identity quotas and 441 checks are keyed on).
    pub user_id: String,
}

/// Parse `"<expiry-unix-secs>:<user-id-hex>"`. Returns `None` for anything else.
pub fn parse_username(username: &str) -> Option<RestUsername> {
    if username.len() > MAX_USERNAME_LEN {
        return None;
    }
    let (exp, uid) = username.split_once(':')?;
    if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if uid.is_empty()
        || uid.len() % 2 != 0
        || uid.len() > 2 * MAX_USER_ID_LEN
        || !uid.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some(RestUsername { expiry_unix_secs: exp.parse().ok()?, user_id: uid.to_ascii_lowercase() })
}

/// Outcome of checking a NONCE attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by us for this client and not yet expired.
    Valid,
    /// Expired, forged, or issued to another address: answer 438 with a fresh nonce.
    Stale,
}

/// Issues and verifies stateless nonces bound to the client address.
#[derive(Clone)]
pub struct NonceFactory {
    key: [u8; 32],
    ttl_ms: u64,
}

impl std::fmt::Debug for NonceFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceFactory").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

impl NonceFactory {
    /// Create a factory with a secret `key` and nonce lifetime.
    pub fn new(key: [u8; 32], ttl_ms: u64) -> Self {
        NonceFactory { key, ttl_ms: ttl_ms.max(1) }
    }

    fn mac(&self, expiry_ms: u64, client: SocketAddr) -> [u8; 12] {
        let mut out = [0u8; 12];
        if let Ok(mut h) = Hmac::<Sha256>::new_from_slice(&self.key) {
            h.update(&expiry_ms.to_be_bytes());
            match client.ip() {
                IpAddr::V4(ip) => h.update(&ip.octets()),
                IpAddr::V6(ip) => h.update(&ip.octets()),
            }
            h.update(&client.port().to_be_bytes());
            out.copy_from_slice(&h.finalize().into_bytes()[..12]);
        }
        out
    }

    /// A fresh nonce for `client`, valid until `now_ms + ttl`.
    pub fn issue(&self, client: SocketAddr, now_ms: u64) -> String {
        let expiry = now_ms.saturating_add(self.ttl_ms);
        format!("{:016x}{}", expiry, hex::encode(self.mac(expiry, client)))
    }

    /// Check a nonce presented by `client`.
    pub fn check(&self, nonce: &[u8], client: SocketAddr, now_ms: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN || !nonce.iter().all(u8::is_ascii_hexdigit) {
            return NonceCheck::Stale;
        }
        let Ok(text) = std::str::from_utf8(nonce) else { return NonceCheck::Stale };
        let Ok(expiry) = u64::from_str_radix(&text[..16], 16) else { return NonceCheck::Stale };
        let Ok(mac) = hex::decode(&text[16..]) else { return NonceCheck::Stale };
        let expected = self.mac(expiry, client);
        // Constant-time comparison.
        let diff = mac.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if mac.len() != expected.len() || diff != 0 || expiry <= now_ms {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

/// Derive the nonce key from the first credential secret.
pub fn derive_nonce_key(secret: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut h) = Hmac::<Sha256>::new_from_slice(secret) {
        h.update(b"supervox-turn nonce key v1");
        out.copy_from_slice(&h.finalize().into_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_parse() {
        let (u, p) = mint_credentials(b"secret", &[0xAB, 0x01], 1_000, 3_600);
        assert_eq!(u, "4600:ab01");
        assert_eq!(p, rest_password(b"secret", "4600:ab01"));
        assert_ne!(p, rest_password(b"other", "4600:ab01"));
        assert_eq!(parse_username(&u), Some(RestUsername { expiry_unix_secs: 4600, user_id: "ab01".into() }));
        for bad in ["", "4600", ":ab", "46x0:ab", "4600:abc", "4600:zz", "99999999999999999999999:ab", "-1:ab"] {
            assert_eq!(parse_username(bad), None, "{bad}");
        }
        assert_eq!(parse_username("5:AB").map(|u| u.user_id), Some("ab".into()));
    }

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("north", "1433895918:user")) computed independently (Python hmac).
        assert_eq!(rest_password(b"north", "1433895918:user"), "/gk4t5tUc08OpM3NjrVjHSFVNmY=");
    }

    #[test]
    fn long_term_key_rfc5769() {
        // MD5("user:realm:pass"), computed independently.
        let k = long_term_key("user", "realm", "pass");
        assert_eq!(hex::encode(k), "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn nonce_validity() {
        let f = NonceFactory::new([1; 32], 1_000);
        let a: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let b: SocketAddr = "192.0.2.1:5001".parse().expect("addr");
        let n = f.issue(a, 10);
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(f.check(n.as_bytes(), a, 500), NonceCheck::Valid);
        assert_eq!(f.check(n.as_bytes(), b, 500), NonceCheck::Stale);
        assert_eq!(f.check(n.as_bytes(), a, 1_010), NonceCheck::Stale);
        assert_eq!(f.check(b"short", a, 0), NonceCheck::Stale);
        let mut forged = n.into_bytes();
        forged[39] = if forged[39] == b'0' { b'1' } else { b'0' };
        assert_eq!(f.check(&forged, a, 500), NonceCheck::Stale);
        let g = NonceFactory::new([2; 32], 1_000);
        assert_eq!(g.check(f.issue(a, 0).as_bytes(), a, 1), NonceCheck::Stale);
    }
}
