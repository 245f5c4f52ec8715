//! The client-IP parser: any forwarding header lines give an address that
//! is the peer or one written in them, never a panic, and never a trusted
//! proxy's when an untrusted address is to its right.

use std::net::IpAddr;
use std::sync::OnceLock;

use waymark::http::client_ip::{parse_addr, Cidr, ClientIpHeader, ProxyTrust};

fn proxies() -> &'static [Cidr] {
    static P: OnceLock<Vec<Cidr>> = OnceLock::new();
    P.get_or_init(|| {
        ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .filter_map(|c| Cidr::parse(c).ok())
            .collect()
    })
}

const KINDS: [ClientIpHeader; 6] = [
    ClientIpHeader::XForwardedFor,
    ClientIpHeader::Forwarded,
    ClientIpHeader::CfConnectingIp,
    ClientIpHeader::TrueClientIp,
    ClientIpHeader::FastlyClientIp,
    ClientIpHeader::XRealIp,
];

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(first) % KINDS.len()];
    // Header lines are separated by newlines, as several header fields.
    let lines: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let peer: IpAddr = "10.0.0.1".parse().expect("a literal address");
    let trust = ProxyTrust::new(proxies(), kind);
    let ip = trust.client_from(kind, peer, &lines);
    // The answer is the peer or an address the headers contain.
    if ip != peer {
        let text = String::from_utf8_lossy(rest);
        let written = text
            .split([',', '\n', ';', '='])
            .filter_map(|s| parse_addr(s.trim().trim_matches('"')))
            .any(|a| a == ip || a.to_canonical() == ip);
        assert!(written, "{ip} is neither the peer nor in {text:?}");
    }
    // Text parsers alone, on the whole input.
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = parse_addr(text);
        let _ = Cidr::parse(text);
    }
}
