use super::*;
use axum::http::HeaderValue;

const CDN: &str = "10.0.0.5";
const PUBLIC_PEER: &str = "203.0.113.9";

fn trust(header: ClientIpHeader) -> ProxyTrust<'static> {
    static PROXIES: std::sync::OnceLock<Vec<Cidr>> = std::sync::OnceLock::new();
    let proxies = PROXIES.get_or_init(|| {
        vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8:cd::/48").unwrap(),
        ]
    });
    ProxyTrust::new(proxies, header)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn resolve(t: &ProxyTrust<'_>, peer: &str, headers: &[(&str, &str)]) -> ClientAddr {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    t.resolve(ip(peer), &map)
}

/// The bad-input table: (case, header kind, peer, header lines, expected client).
#[test]
fn the_client_is_the_right_most_untrusted_hop_and_never_what_a_client_forges() {
    use ClientIpHeader::*;
    let long = format!("{}, 198.51.100.7", "1.1.1.1, ".repeat(2000));
    let many_hops = format!("198.51.100.7, {}", "10.0.0.1, ".repeat(40));
    let cases: &[(&str, ClientIpHeader, &str, &[&str], &str)] = &[
        (
            "plain",
            XForwardedFor,
            CDN,
            &["198.51.100.7"],
            "198.51.100.7",
        ),
        (
            "spoofed left-most",
            XForwardedFor,
            CDN,
            &["6.6.6.6, 198.51.100.7"],
            "198.51.100.7",
        ),
        (
            "spoofed, through two proxies",
            XForwardedFor,
            CDN,
            &["6.6.6.6, 198.51.100.7, 10.1.1.1"],
            "198.51.100.7",
        ),
        (
            "untrusted peer's header ignored",
            XForwardedFor,
            PUBLIC_PEER,
            &["6.6.6.6"],
            PUBLIC_PEER,
        ),
        ("no header", XForwardedFor, CDN, &[], CDN),
        (
            "malformed right-most",
            XForwardedFor,
            CDN,
            &["198.51.100.7, garbage"],
            CDN,
        ),
        (
            "malformed behind a trusted hop",
            XForwardedFor,
            CDN,
            &["nonsense, 10.2.2.2"],
            "10.2.2.2",
        ),
        (
            "malformed left of the client",
            XForwardedFor,
            CDN,
            &["<script>, 198.51.100.7"],
            "198.51.100.7",
        ),
        (
            "empty entries",
            XForwardedFor,
            CDN,
            &[" , 198.51.100.7 ,"],
            "198.51.100.7",
        ),
        (
            "port-suffixed v4",
            XForwardedFor,
            CDN,
            &["198.51.100.7:5555"],
            "198.51.100.7",
        ),
        (
            "bad port",
            XForwardedFor,
            CDN,
            &["198.51.100.7:99999999"],
            CDN,
        ),
        (
            "IPv6",
            XForwardedFor,
            CDN,
            &["2001:db8:1::7"],
            "2001:db8:1::7",
        ),
        (
            "bracketed IPv6",
            XForwardedFor,
            CDN,
            &["[2001:db8:1::7]"],
            "2001:db8:1::7",
        ),
        (
            "bracketed IPv6 with port",
            XForwardedFor,
            CDN,
            &["[2001:db8:1::7]:443"],
            "2001:db8:1::7",
        ),
        (
            "unclosed bracket",
            XForwardedFor,
            CDN,
            &["[2001:db8:1::7"],
            CDN,
        ),
        (
            "IPv4-mapped IPv6 trusted hop",
            XForwardedFor,
            CDN,
            &["198.51.100.7, ::ffff:10.3.3.3"],
            "198.51.100.7",
        ),
        (
            "trusted IPv6 proxy peer",
            XForwardedFor,
            "2001:db8:cd::1",
            &["198.51.100.7"],
            "198.51.100.7",
        ),
        (
            "overlong header: read from the right only",
            XForwardedFor,
            CDN,
            &[long.as_str()],
            "198.51.100.7",
        ),
        (
            "too many trusted hops",
            XForwardedFor,
            CDN,
            &[many_hops.as_str()],
            "10.0.0.1",
        ),
        (
            "overlong entry",
            XForwardedFor,
            CDN,
            &["198.51.100.7, 1111111111111111111111111111111111111111111111111111111111111111111"],
            CDN,
        ),
        (
            "multiple header lines: the last is closest",
            XForwardedFor,
            CDN,
            &["6.6.6.6", "198.51.100.7"],
            "198.51.100.7",
        ),
        (
            "multiple lines, trusted hop last",
            XForwardedFor,
            CDN,
            &["198.51.100.7", "10.4.4.4"],
            "198.51.100.7",
        ),
        (
            "all hops trusted",
            XForwardedFor,
            CDN,
            &["10.9.9.9, 10.8.8.8"],
            "10.9.9.9",
        ),
        (
            "forwarded",
            Forwarded,
            CDN,
            &["for=198.51.100.7;proto=https"],
            "198.51.100.7",
        ),
        (
            "forwarded, spoofed",
            Forwarded,
            CDN,
            &["for=6.6.6.6, for=198.51.100.7;proto=https"],
            "198.51.100.7",
        ),
        (
            "forwarded, quoted v6 with port",
            Forwarded,
            CDN,
            &["for=\"[2001:db8:1::7]:4711\""],
            "2001:db8:1::7",
        ),
        (
            "forwarded, case and spaces",
            Forwarded,
            CDN,
            &["For = 198.51.100.7 ; by=10.0.0.5"],
            "198.51.100.7",
        ),
        ("forwarded, unknown", Forwarded, CDN, &["for=unknown"], CDN),
        (
            "forwarded, obfuscated",
            Forwarded,
            CDN,
            &["for=_hidden, for=10.7.7.7"],
            "10.7.7.7",
        ),
        ("forwarded, no for", Forwarded, CDN, &["proto=https"], CDN),
        (
            "cf-connecting-ip",
            CfConnectingIp,
            CDN,
            &["198.51.100.7"],
            "198.51.100.7",
        ),
        (
            "cf-connecting-ip v6",
            CfConnectingIp,
            CDN,
            &["2001:db8:1::7"],
            "2001:db8:1::7",
        ),
        (
            "cf-connecting-ip from an untrusted peer",
            CfConnectingIp,
            PUBLIC_PEER,
            &["6.6.6.6"],
            PUBLIC_PEER,
        ),
        (
            "cf-connecting-ip, a list",
            CfConnectingIp,
            CDN,
            &["6.6.6.6, 198.51.100.7"],
            CDN,
        ),
        (
            "true-client-ip, two lines",
            TrueClientIp,
            CDN,
            &["6.6.6.6", "198.51.100.7"],
            CDN,
        ),
        (
            "fastly-client-ip",
            FastlyClientIp,
            CDN,
            &["198.51.100.7"],
            "198.51.100.7",
        ),
        (
            "x-real-ip with port",
            XRealIp,
            CDN,
            &["198.51.100.7:80"],
            "198.51.100.7",
        ),
        ("x-real-ip garbage", XRealIp, CDN, &["not-an-ip"], CDN),
    ];
    for (case, kind, peer, lines, want) in cases {
        let t = trust(*kind);
        let headers: Vec<(&str, &str)> = lines.iter().map(|l| (kind.name(), *l)).collect();
        let got = resolve(&t, peer, &headers);
        assert_eq!(got.ip, ip(want), "case `{case}`");
    }
}

#[test]
fn the_other_headers_are_not_read_when_one_is_configured() {
    let t = trust(ClientIpHeader::CfConnectingIp);
    let got = resolve(&t, CDN, &[("x-forwarded-for", "6.6.6.6")]);
    assert_eq!(got.ip, ip(CDN));
}

#[test]
fn https_follows_forwarded_proto_only_from_trusted_peers() {
    let t = trust(ClientIpHeader::XForwardedFor);
    assert!(resolve(&t, CDN, &[("x-forwarded-proto", "https")]).https);
    assert!(resolve(&t, CDN, &[("x-forwarded-proto", "HTTPS, http")]).https);
    assert!(!resolve(&t, CDN, &[("x-forwarded-proto", "http")]).https);
    assert!(!resolve(&t, CDN, &[]).https);
    assert!(resolve(&t, CDN, &[("cloudfront-forwarded-proto", "https")]).https);
    assert!(!resolve(&t, PUBLIC_PEER, &[("x-forwarded-proto", "https")]).https);
    let f = trust(ClientIpHeader::Forwarded);
    assert!(resolve(&f, CDN, &[("forwarded", "for=198.51.100.7;proto=https")]).https);
    assert!(!resolve(&f, PUBLIC_PEER, &[("forwarded", "for=1.2.3.4;proto=https")]).https);
    assert!(!resolve(&f, CDN, &[("forwarded", "for=198.51.100.7;proto=http")]).https);
}

#[test]
fn no_trusted_proxies_means_no_header_is_read() {
    let t = ProxyTrust::new(&[], ClientIpHeader::XForwardedFor);
    let got = resolve(
        &t,
        "127.0.0.1",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ],
    );
    assert_eq!(
        got,
        ClientAddr {
            ip: ip("127.0.0.1"),
            https: false
        }
    );
}

#[test]
fn the_legacy_header_is_believed_from_private_peers_only_and_read_from_the_right() {
    let t = ProxyTrust::legacy(ClientIpHeader::XForwardedFor);
    assert_eq!(
        resolve(
            &t,
            "127.0.0.1",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]
        )
        .ip,
        ip("198.51.100.7")
    );
    assert_eq!(
        resolve(&t, PUBLIC_PEER, &[("x-forwarded-for", "6.6.6.6")]).ip,
        ip(PUBLIC_PEER)
    );
}

#[test]
fn cidrs_parse_and_match() {
    let c = Cidr::parse("192.168.0.0/16").unwrap();
    assert!(c.contains(ip("192.168.44.1")));
    assert!(!c.contains(ip("192.169.0.1")));
    assert!(c.contains(ip("::ffff:192.168.1.1")));
    assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    assert!(!Cidr::parse("0.0.0.0/0")
        .unwrap()
        .contains(ip("2001:db8::1")));
    assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    assert!(Cidr::parse("10.0.0.1").unwrap().contains(ip("10.0.0.1")));
    assert!(!Cidr::parse("10.0.0.1").unwrap().contains(ip("10.0.0.2")));
    assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
    assert!(Cidr::parse("ten/8").unwrap_err().contains("10.0.0.0/8"));
}
