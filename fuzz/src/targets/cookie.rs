//! The visitor cookie codec: any `Cookie` header is refused or verified,
//! never a panic, and whatever verifies round-trips through `sign`.

use std::sync::OnceLock;

use waymark::visitor::CookieCodec;

fn codec() -> &'static CookieCodec {
    static CODEC: OnceLock<CookieCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let config = waymark::Config::embedded_default();
        CookieCodec::from_config(&config.identity).expect("the embedded default builds")
    })
}

pub fn run(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let now = 1_760_000_000;
    let codec = codec();
    if let Ok(Some(cookie)) = codec.from_header(header, now) {
        // A cookie that verifies is one we signed: re-signing it verifies too.
        let again = codec.sign(&cookie.visitor, cookie.issued_at);
        assert_eq!(codec.verify(&again, now).ok(), Some(cookie));
    }
    // A fresh cookie for a fuzzed id never panics either.
    let _ = codec.verify(header, now);
}
