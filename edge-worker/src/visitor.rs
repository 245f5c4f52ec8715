//! The signed first-party visitor cookie (`wm_vid`), DESIGN.md §4.
//!
//! Value: `v1.<visitor id>.<issued at, unix seconds>.<key id>.<tag>`, where
//! the tag is the base64url HMAC-SHA256 of everything before it, under the
//! key named by the key id. The first configured key signs; every key
//! verifies, so keys rotate by prepending a new one. A cookie that fails any
//! check is never trusted: the caller mints a new visitor id.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{ConfigError, IdentityConfig};

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// A visitor id: 22 base64url characters (128 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VisitorId(String);

impl VisitorId {
    /// A fresh random visitor id.
    pub fn mint() -> VisitorId {
        VisitorId(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(s: &str) -> Option<VisitorId> {
        let ok = s.len() == 22
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| VisitorId(s.to_owned()))
    }
}

/// Why a cookie was not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieRejection {
    /// Not of the `v1.<id>.<time>.<kid>.<tag>` shape.
    Malformed,
    /// Signed by a key id we do not have.
    UnknownKey,
    /// The tag does not match: tampered or forged.
    BadSignature,
    /// Issued longer ago than the cookie's lifetime, or in the future.
    Expired,
}

impl CookieRejection {
    /// Reason code for metrics.
    pub fn code(self) -> &'static str {
        match self {
            CookieRejection::Malformed => "malformed",
            CookieRejection::UnknownKey => "unknown_key",
            CookieRejection::BadSignature => "bad_signature",
            CookieRejection::Expired => "expired",
        }
    }
}

/// A verified cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorCookie {
    /// Who.
    pub visitor: VisitorId,
    /// When the cookie was issued, in Unix seconds.
    pub issued_at: i64,
}

/// Signs and verifies visitor cookies, and renders `Set-Cookie` headers.
#[derive(Clone)]
pub struct CookieCodec {
    /// `(key id, secret)`, the first signs.
    keys: Vec<(String, Vec<u8>)>,
    name: String,
    domain: Option<String>,
    max_age_secs: i64,
}

impl std::fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("CookieCodec")
            .field("name", &self.name)
            .field(
                "keys",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Clock skew tolerated on `issued_at`, in seconds.
const FUTURE_SKEW_SECS: i64 = 300;

impl CookieCodec {
    /// Builds the codec from `[identity]`, resolving secrets.
    pub fn from_config(config: &IdentityConfig) -> Result<CookieCodec, ConfigError> {
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Ok((k.id.clone(), k.resolve(i)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(CookieCodec {
            keys,
            name: config.cookie_name.clone(),
            domain: config.cookie_domain.clone(),
            max_age_secs: i64::from(config.cookie_max_age_days) * 86_400,
        })
    }

    /// The day key for cookieless visitor hashes on `date` (`YYYY-MM-DD`,
    /// UTC): derived from the signing secret, so every worker of a fleet
    /// with the same `[identity] keys` derives the same one, and it is
    /// never stored.
    pub fn cookieless_day_key(&self, date: &str) -> [u8; 32] {
        let (_, secret) = &self.keys[0];
        let mut m = mac(secret, b"waymark cookieless day key v1\0");
        m.update(date.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs a cookie value for `visitor` issued at `now` (Unix seconds).
    pub fn sign(&self, visitor: &VisitorId, now: i64) -> String {
        let (kid, secret) = &self.keys[0];
        let payload = format!("{VERSION}.{}.{now}.{kid}", visitor.as_str());
        let tag = URL_SAFE_NO_PAD.encode(mac(secret, payload.as_bytes()).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// Verifies a cookie value at `now` (Unix seconds).
    pub fn verify(&self, value: &str, now: i64) -> Result<VisitorCookie, CookieRejection> {
        let (payload, tag) = value.rsplit_once('.').ok_or(CookieRejection::Malformed)?;
        let mut parts = payload.split('.');
        let (Some(version), Some(id), Some(issued), Some(kid), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CookieRejection::Malformed);
        };
        if version != VERSION {
            return Err(CookieRejection::Malformed);
        }
        let visitor = VisitorId::parse(id).ok_or(CookieRejection::Malformed)?;
        let issued_at: i64 = issued.parse().map_err(|_| CookieRejection::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CookieRejection::Malformed)?;
        let (_, secret) = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .ok_or(CookieRejection::UnknownKey)?;
        // `verify_slice` compares in constant time.
        mac(secret, payload.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| CookieRejection::BadSignature)?;
        if issued_at > now + FUTURE_SKEW_SECS || now - issued_at > self.max_age_secs {
            return Err(CookieRejection::Expired);
        }
        Ok(VisitorCookie { visitor, issued_at })
    }

    /// Finds and verifies our cookie in a `Cookie` header. `Ok(None)` when absent.
    pub fn from_header(
        &self,
        header: &str,
        now: i64,
    ) -> Result<Option<VisitorCookie>, CookieRejection> {
        let value = header.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == self.name).then_some(value.trim_matches('"'))
        });
        value.map(|v| self.verify(v, now)).transpose()
    }

    /// A `Set-Cookie` header value that sets (or refreshes) the cookie.
    pub fn set_cookie(&self, visitor: &VisitorId, now: i64, secure: bool) -> String {
        self.attributes(&self.sign(visitor, now), self.max_age_secs, secure)
    }

    /// A `Set-Cookie` header value that deletes the cookie.
    pub fn clear_cookie(&self, secure: bool) -> String {
        self.attributes("", 0, secure)
    }

    fn attributes(&self, value: &str, max_age: i64, secure: bool) -> String {
        let mut out = format!(
            "{}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax",
            self.name
        );
        if let Some(domain) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if secure {
            out.push_str("; Secure");
        }
        out
    }

    /// Whether a cookie issued at `issued_at` is due a refresh (older than a day).
    pub fn needs_refresh(&self, issued_at: i64, now: i64) -> bool {
        now - issued_at > 86_400
    }
}

fn mac(secret: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CookieKeyConfig;

    fn codec(keys: &[(&str, &str)]) -> CookieCodec {
        let config = IdentityConfig {
            keys: keys
                .iter()
                .map(|(id, secret)| CookieKeyConfig {
                    id: id.to_string(),
                    secret_env: None,
                    secret: Some(secret.to_string()),
                })
                .collect(),
            ..IdentityConfig::default()
        };
        CookieCodec::from_config(&config).unwrap()
    }

    const K1: (&str, &str) = ("k1", "first-secret-0123456789abcdef0123456789");
    const K2: (&str, &str) = ("k2", "second-secret-0123456789abcdef012345678");
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_signed_cookie_verifies() {
        let c = codec(&[K1]);
        let v = VisitorId::mint();
        let value = c.sign(&v, NOW);
        assert!(value.starts_with("v1."));
        assert!(value.contains(".k1."));
        let got = c.verify(&value, NOW + 10).unwrap();
        assert_eq!(got.visitor, v);
        assert_eq!(got.issued_at, NOW);
    }

    #[test]
    fn rotation_first_key_signs_all_verify() {
        let old = codec(&[K1]);
        let rotated = codec(&[K2, K1]);
        let v = VisitorId::mint();
        assert!(rotated.verify(&old.sign(&v, NOW), NOW).is_ok());
        assert!(rotated.sign(&v, NOW).contains(".k2."));
        assert_eq!(
            old.verify(&rotated.sign(&v, NOW), NOW),
            Err(CookieRejection::UnknownKey)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let c = codec(&[K1]);
        let v = VisitorId::mint();
        let value = c.sign(&v, NOW);
        let other = VisitorId::mint();
        let swapped = value.replace(v.as_str(), other.as_str());
        assert_eq!(c.verify(&swapped, NOW), Err(CookieRejection::BadSignature));
        let later = value.replace(&NOW.to_string(), &(NOW + 1).to_string());
        assert_eq!(c.verify(&later, NOW), Err(CookieRejection::BadSignature));
        let forged = codec(&[("k1", "attacker-secret-0123456789abcdef0123456")]).sign(&v, NOW);
        assert_eq!(c.verify(&forged, NOW), Err(CookieRejection::BadSignature));
        for junk in [
            "",
            "abc",
            "v1.x.1.k1.sig",
            "v2.aaaaaaaaaaaaaaaaaaaaaa.1.k1.AA",
            "v1....",
        ] {
            assert!(c.verify(junk, NOW).is_err(), "{junk}");
        }
    }

    #[test]
    fn old_and_future_cookies_expire() {
        let c = codec(&[K1]);
        let v = VisitorId::mint();
        assert_eq!(
            c.verify(&c.sign(&v, NOW - 401 * 86_400), NOW),
            Err(CookieRejection::Expired)
        );
        assert_eq!(
            c.verify(&c.sign(&v, NOW + 3_600), NOW),
            Err(CookieRejection::Expired)
        );
    }

    #[test]
    fn set_cookie_has_the_contract_attributes() {
        let c = codec(&[K1]);
        let header = c.set_cookie(&VisitorId::mint(), NOW, true);
        assert!(header.starts_with("wm_vid=v1."));
        for attr in [
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=34560000",
            "Secure",
        ] {
            assert!(header.contains(attr), "{header} lacks {attr}");
        }
        assert!(!c
            .set_cookie(&VisitorId::mint(), NOW, false)
            .contains("Secure"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let c = codec(&[K1]);
        let v = VisitorId::mint();
        let header = format!("a=1; wm_vid={}; b=2", c.sign(&v, NOW));
        assert_eq!(c.from_header(&header, NOW).unwrap().unwrap().visitor, v);
        assert_eq!(c.from_header("a=1", NOW), Ok(None));
    }
}
