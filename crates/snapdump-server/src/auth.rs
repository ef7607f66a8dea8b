//! API keys: `Authorization: Bearer <key>`.
//!
//! Only SHA-256 hashes of keys are stored (in the config file as `sha256:<hex>`); a presented
//! key is hashed and compared with every stored hash in constant time, so neither the timing
//! nor the log ever tells anything about a key. Keys are 32 random bytes in URL-safe base64:
//! with that much entropy an unsalted hash is as good as a salted one.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::problem::Problem;

/// How requests are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// `--no-auth`: every request is let in.
    Disabled,
    /// The SHA-256 digests of the accepted keys.
    Keys(Vec<[u8; 32]>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Disabled => f.write_str("Auth::Disabled"),
            Auth::Keys(keys) => write!(f, "Auth::Keys({} keys)", keys.len()),
        }
    }
}

/// A stored hash that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "api key hash {0:?} is not of the form sha256:<64 hex digits> (see `snapdump generatekey`)"
)]
pub struct BadHash(pub String);

/// A new random API key: 32 bytes, URL-safe base64 without padding (43 characters).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:<hex>`: the form the config file stores.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(digest(key)))
}

/// Reads a `sha256:<hex>` hash from the config file.
pub fn parse_hash(text: &str) -> Result<[u8; 32], BadHash> {
    let bad = || BadHash(text.to_owned());
    let hex_digits = text
        .trim()
        .strip_prefix("sha256:")
        .or_else(|| text.trim().strip_prefix("SHA256:"))
        .ok_or_else(bad)?;
    let bytes = hex::decode(hex_digits).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

impl Auth {
    /// Accepts the keys whose hashes are given.
    pub fn from_hashes<'a>(hashes: impl IntoIterator<Item = &'a str>) -> Result<Auth, BadHash> {
        Ok(Auth::Keys(
            hashes
                .into_iter()
                .map(parse_hash)
                .collect::<Result<_, _>>()?,
        ))
    }

    /// Adds a key (e.g. the one `--temp-apikey` made).
    pub fn add_key(&mut self, key: &str) {
        if let Auth::Keys(keys) = self {
            keys.push(digest(key));
        }
    }

    pub fn is_disabled(&self) -> bool {
        matches!(self, Auth::Disabled)
    }

    /// Whether an `Authorization` header value lets the request in.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let keys = match self {
            Auth::Disabled => return true,
            Auth::Keys(keys) => keys,
        };
        let Some(value) = authorization else {
            return false;
        };
        let Some(token) = bearer_token(value) else {
            return false;
        };
        let presented = digest(token);
        // Compare with every key, without stopping at the first match.
        let mut accepted = subtle::Choice::from(0);
        for key in keys {
            accepted |= key.ct_eq(&presented);
        }
        accepted.into()
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The middleware in front of every route but `/livez` and `/readyz`.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if state.auth.allows(header) {
        next.run(request).await
    } else {
        tracing::info!(
            path = request.uri().path(),
            presented = header.is_some(),
            "request without a valid API key refused"
        );
        Problem::unauthorized().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_hash() {
        let key = generate_key();
        assert_eq!(key.len(), 43);
        assert_ne!(key, generate_key());
        let hash = hash_key(&key);
        assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64);
        let auth = Auth::from_hashes([hash.as_str()]).unwrap();
        assert!(auth.allows(Some(format!("Bearer {key}").as_bytes())));
        assert!(auth.allows(Some(format!("bearer  {key} ").as_bytes())));
        assert!(!auth.allows(Some(format!("Basic {key}").as_bytes())));
        assert!(!auth.allows(Some(b"Bearer wrong")));
        assert!(!auth.allows(Some(b"Bearer ")));
        assert!(!auth.allows(Some(key.as_bytes())));
        assert!(!auth.allows(None));
        assert!(Auth::Disabled.allows(None));
    }

    #[test]
    fn bad_hashes_are_refused() {
        for bad in [
            "",
            "sha256:",
            "sha256:zz",
            "md5:00",
            &format!("sha256:{}", "0".repeat(62)),
        ] {
            assert_eq!(parse_hash(bad), Err(BadHash(bad.to_owned())), "{bad:?}");
        }
        assert!(parse_hash(&format!("sha256:{}", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn no_keys_allow_nothing() {
        let auth = Auth::from_hashes([]).unwrap();
        assert!(!auth.allows(Some(b"Bearer anything")));
    }
}
