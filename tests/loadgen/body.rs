//! Prebuilt requests: the whole HTTP/1.1 request (headers and JSON body) is
//! rendered once with fixed-width slots for each `messageId` and the
//! `sentAt`, and each request only overwrites those slots in place.

use base64::Engine as _;

/// Width of a `messageId` slot: 32 characters (8 hex of the run, 4 hex of
/// the connection, 20 decimal digits counting its requests; or 32 random hex).
pub const ID_WIDTH: usize = 32;
/// Width of an RFC 3339 time with milliseconds, `2024-05-01T12:00:00.000Z`.
pub const TIME_WIDTH: usize = 24;

const ID_MARK: &str = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@";
const TIME_MARK: &str = "%%%%%%%%%%%%%%%%%%%%%%%%";

/// One ~750-byte track event with its messageId slot (the batch bench;
/// the same event the previous generator built with `serde_json::json!`).
fn track_event(i: usize) -> String {
    format!(
        r#"{{"type":"track","event":"Product Added","messageId":"{ID_MARK}","anonymousId":"anon-{:05}","timestamp":"2024-05-01T12:00:00.000Z","properties":{{"product_id":"507f1f77bcf86cd799439011","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","brand":"Hasbro","variant":"200 pieces","price":18.99,"quantity":1,"coupon":"MAYDEALS","position":3,"url":"https://www.example.com/product/path","image_url":"https://www.example.com/product/path.jpg"}},"context":{{"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","page":{{"path":"/product/path","url":"https://www.example.com/product/path"}},"library":{{"name":"waymark-loadgen","version":"0.1.0"}}}}}}"#,
        i % 100_000
    )
}

/// One ~450-byte page event with its messageId and sentAt slots (the edge bench).
fn page_event() -> String {
    format!(
        r#"{{"type":"page","name":"Product","messageId":"{ID_MARK}","anonymousId":"anon-0001","sentAt":"{TIME_MARK}","properties":{{"title":"Monopoly: 3rd Edition","path":"/product/path","url":"https://www.example.com/product/path"}},"context":{{"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","library":{{"name":"waymark-loadgen","version":"0.1.0"}}}}}}"#
    )
}

/// What each request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `POST /v1/batch` of this many track events (~750 B each).
    Batch(usize),
    /// `POST /v1/page` of one page event (~450 B).
    Page,
}

impl Shape {
    /// Events per request.
    pub fn events(self) -> usize {
        match self {
            Shape::Batch(n) => n,
            Shape::Page => 1,
        }
    }

    /// The request's path.
    pub fn path(self) -> &'static str {
        match self {
            Shape::Batch(_) => "/v1/batch",
            Shape::Page => "/v1/page",
        }
    }

    /// The JSON body with its slots marked.
    fn body(self, conn: usize) -> String {
        match self {
            Shape::Batch(n) => {
                let events: Vec<String> = (conn * n..conn * n + n).map(track_event).collect();
                format!(
                    r#"{{"batch":[{}],"sentAt":"{TIME_MARK}"}}"#,
                    events.join(",")
                )
            }
            Shape::Page => page_event(),
        }
    }
}

/// A request rendered once, patched per send.
#[derive(Clone)]
pub struct Template {
    /// The request bytes.
    pub bytes: Vec<u8>,
    ids: Vec<usize>,
    times: Vec<usize>,
}

fn offsets(haystack: &[u8], mark: &str) -> Vec<usize> {
    let mark = mark.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + mark.len() <= haystack.len() {
        if &haystack[i..i + mark.len()] == mark {
            out.push(i);
            i += mark.len();
        } else {
            i += 1;
        }
    }
    out
}

impl Template {
    /// The request for `shape` to `host` (`127.0.0.1:PORT`), with the write
    /// key as Basic username and an optional `Cookie` header.
    pub fn new(
        shape: Shape,
        conn: usize,
        host: &str,
        write_key: &str,
        cookie: Option<&str>,
    ) -> Template {
        let body = shape.body(conn);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\n{cookie}Content-Length: {}\r\n\r\n{body}",
            shape.path(),
            body.len()
        );
        let bytes = request.into_bytes();
        Template {
            ids: offsets(&bytes, ID_MARK),
            times: offsets(&bytes, TIME_MARK),
            bytes,
        }
    }

    /// Number of `messageId` slots (events per request).
    pub fn id_slots(&self) -> usize {
        self.ids.len()
    }

    /// Writes `id` (exactly [`ID_WIDTH`] bytes) into slot `slot`.
    pub fn set_id(&mut self, slot: usize, id: &[u8; ID_WIDTH]) {
        let at = self.ids[slot];
        self.bytes[at..at + ID_WIDTH].copy_from_slice(id);
    }

    /// Writes the time (exactly [`TIME_WIDTH`] bytes) into every sentAt slot.
    pub fn set_time(&mut self, time: &[u8; TIME_WIDTH]) {
        for &at in &self.times {
            self.bytes[at..at + TIME_WIDTH].copy_from_slice(time);
        }
    }
}

/// Writes `n` as `width` zero-padded decimal digits into `out`.
fn put_decimal(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 15) as usize];
        n >>= 4;
    }
}

/// Makes the messageIds of one connection: counting (unique across the run
/// through the run and connection parts) or random (xorshift, as UUIDs
/// spread over a B-tree).
pub struct Ids {
    id: [u8; ID_WIDTH],
    seq: u64,
    random: Option<u64>,
}

impl Ids {
    /// The ids of connection `conn` in run `run`.
    pub fn new(run: u32, conn: u16, random: bool) -> Ids {
        let mut id = [b'0'; ID_WIDTH];
        put_hex(&mut id[..8], u64::from(run));
        put_hex(&mut id[8..12], u64::from(conn));
        // SplitMix64's finaliser: distinct (run, conn) give distinct seeds.
        let mut seed = (u64::from(run) << 16 | u64::from(conn)).wrapping_add(0x9E37_79B9_7F4A_7C15);
        seed = (seed ^ (seed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        seed = (seed ^ (seed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        seed ^= seed >> 31;
        Ids {
            id,
            seq: 0,
            random: random.then_some(seed.max(1)),
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> &[u8; ID_WIDTH] {
        self.seq += 1;
        match &mut self.random {
            None => put_decimal(&mut self.id[12..], self.seq),
            Some(state) => {
                for half in [0, 16] {
                    *state ^= *state << 13;
                    *state ^= *state >> 7;
                    *state ^= *state << 17;
                    put_hex(&mut self.id[half..half + 16], *state);
                }
            }
        }
        &self.id
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, without allocating.
pub fn now_rfc3339() -> [u8; TIME_WIDTH] {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    rfc3339_of_ms(ms)
}

fn rfc3339_of_ms(ms: u64) -> [u8; TIME_WIDTH] {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_decimal(&mut out[0..4], year as u64);
    put_decimal(&mut out[5..7], month as u64);
    put_decimal(&mut out[8..10], day as u64);
    put_decimal(&mut out[11..13], rem / 3_600_000);
    put_decimal(&mut out[14..16], rem / 60_000 % 60);
    put_decimal(&mut out[17..19], rem / 1000 % 60);
    put_decimal(&mut out[20..23], rem % 1000);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_valid_json_of_the_advertised_size() {
        for (shape, per_event) in [(Shape::Batch(20), 700..800), (Shape::Page, 400..500)] {
            let mut t = Template::new(shape, 3, "127.0.0.1:1", "wk", Some("wm_vid=x"));
            assert_eq!(t.id_slots(), shape.events());
            let mut ids = Ids::new(7, 3, false);
            for slot in 0..t.id_slots() {
                let id = *ids.next_id();
                t.set_id(slot, &id);
            }
            t.set_time(&now_rfc3339());
            let text = String::from_utf8(t.bytes.clone()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(
                per_event.contains(&(body.len() / shape.events())),
                "{}",
                body.len()
            );
            let first = if shape == Shape::Page {
                &v
            } else {
                &v["batch"][0]
            };
            assert_eq!(first["messageId"].as_str().unwrap().len(), ID_WIDTH);
        }
    }

    #[test]
    fn each_connection_sends_its_own_visitors() {
        let visitors = |conn| {
            let t = Template::new(Shape::Batch(20), conn, "127.0.0.1:1", "wk", None);
            let text = String::from_utf8(t.bytes).unwrap();
            let (_, body) = text.split_once("\r\n\r\n").unwrap();
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["anonymousId"].as_str().unwrap().to_owned())
                .collect::<std::collections::HashSet<_>>()
        };
        let (a, b) = (visitors(0), visitors(1));
        assert_eq!((a.len(), b.len()), (20, 20));
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn ids_are_unique_and_times_are_rfc3339() {
        let mut seen = std::collections::HashSet::new();
        for random in [false, true] {
            for conn in 0..3 {
                let mut ids = Ids::new(1, conn, random);
                for _ in 0..1000 {
                    assert!(seen.insert(*ids.next_id()));
                }
            }
        }
        assert_eq!(
            &rfc3339_of_ms(1_714_564_800_123),
            b"2024-05-01T12:00:00.123Z"
        );
        assert_eq!(&rfc3339_of_ms(951_782_400_000), b"2000-02-29T00:00:00.000Z");
    }
}
