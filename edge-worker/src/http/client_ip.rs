//! The client's address and scheme, believed from forwarding headers only
//! when the TCP peer is a proxy we trust.
//!
//! [`ProxyTrust`] is built once from `[server]` and asked per request. For
//! `X-Forwarded-For` and `Forwarded` (RFC 7239) the chain is walked from
//! the right: each hop our trusted proxies appended is skipped, and the
//! first address that is not a trusted proxy is the client. The left-most
//! address is whatever the client wrote and is never believed by itself.
//!
//! # Design
//! Walking from the right is the only reading a client cannot steer
//! (issue 13; adam-p, "The perils of the 'real' client IP"). A malformed
//! entry stops the walk at the closest hop we could read, overlong headers
//! are read only up to [`MAX_HEADER_BYTES`] from the right, and a peer we
//! do not trust is always the answer, whatever it sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::HeaderMap;
use schemars::JsonSchema;
use serde::Deserialize;

/// Most bytes of a forwarding header read, from its right end.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Most hops walked from the right before the walk stops.
pub const MAX_HOPS: usize = 32;
/// Longest single entry (`[v6]:port` is 47 bytes; `for="…"` a few more).
const MAX_ENTRY_BYTES: usize = 64;

/// Which header carries the client address behind a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, CloudFront, most CDNs).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
    /// Cloudflare's `CF-Connecting-IP` (one address).
    CfConnectingIp,
    /// `True-Client-IP` (Cloudflare Enterprise, Akamai; one address).
    TrueClientIp,
    /// Fastly's `Fastly-Client-IP` (one address; reset it in VCL).
    FastlyClientIp,
    /// `X-Real-IP` (nginx `real_ip` style; one address).
    XRealIp,
}

impl ClientIpHeader {
    /// The header's wire name.
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::CfConnectingIp => "cf-connecting-ip",
            ClientIpHeader::TrueClientIp => "true-client-ip",
            ClientIpHeader::FastlyClientIp => "fastly-client-ip",
            ClientIpHeader::XRealIp => "x-real-ip",
        }
    }

    /// The variant named `name` (case-insensitive), if it is one we read.
    pub fn parse(name: &str) -> Option<ClientIpHeader> {
        [
            ClientIpHeader::XForwardedFor,
            ClientIpHeader::Forwarded,
            ClientIpHeader::CfConnectingIp,
            ClientIpHeader::TrueClientIp,
            ClientIpHeader::FastlyClientIp,
            ClientIpHeader::XRealIp,
        ]
        .into_iter()
        .find(|h| h.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// An address range such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix`, or a bare address as a single-host range.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address range; use e.g. \"10.0.0.0/8\""))?;
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, as dual-stack sockets report) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

const fn v4(a: u8, b: u8, prefix: u8) -> Cidr {
    Cidr {
        network: IpAddr::V4(Ipv4Addr::new(a, b, 0, 0)),
        prefix,
    }
}

const fn v6(first: u16, prefix: u8) -> Cidr {
    Cidr {
        network: IpAddr::V6(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0)),
        prefix,
    }
}

/// The ranges trusted when only the deprecated `trusted_proxy_header` is
/// set: loopback and private networks, where a same-host or same-LAN proxy
/// sits. A peer on the public internet is never believed.
pub const PRIVATE_RANGES: &[Cidr] = &[
    v4(127, 0, 8),
    v4(10, 0, 8),
    v4(172, 16, 12),
    v4(192, 168, 16),
    v4(169, 254, 16),
    Cidr {
        network: IpAddr::V6(Ipv6Addr::LOCALHOST),
        prefix: 128,
    },
    v6(0xfc00, 7),
    v6(0xfe80, 10),
];

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// What a request says about its client, after the trust rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address.
    pub ip: IpAddr,
    /// Whether the public origin is https (a trusted proxy said so).
    pub https: bool,
}

/// The trust rules of `[server]`: which peers may say who the client is,
/// and in which header. Borrowed from the config, so free to make per request.
#[derive(Debug, Clone, Copy)]
pub struct ProxyTrust<'a> {
    proxies: &'a [Cidr],
    header: ClientIpHeader,
}

impl<'a> ProxyTrust<'a> {
    /// Rules trusting `proxies` to set `header`. With no proxies, no header
    /// is ever read.
    pub fn new(proxies: &'a [Cidr], header: ClientIpHeader) -> ProxyTrust<'a> {
        ProxyTrust { proxies, header }
    }

    /// The rules for the deprecated `trusted_proxy_header` alone: `header`
    /// believed from loopback and private peers only, read from the right.
    pub fn legacy(header: ClientIpHeader) -> ProxyTrust<'static> {
        ProxyTrust::new(PRIVATE_RANGES, header)
    }

    /// Whether `ip` is one of our proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|c| c.contains(ip))
    }

    /// The client address and scheme of a request from `peer`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let peer = canonical(peer);
        let header = self.header;
        if !self.trusts(peer) {
            return ClientAddr {
                ip: peer,
                https: false,
            };
        }
        let values: Vec<&[u8]> = headers
            .get_all(header.name())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let ip = self.client_from(header, peer, &values);
        let https = match header {
            ClientIpHeader::Forwarded => forwarded_proto(&values),
            _ => None,
        }
        .or_else(|| {
            // CloudFront says `CloudFront-Forwarded-Proto` instead.
            ["x-forwarded-proto", "cloudfront-forwarded-proto"]
                .iter()
                .find_map(|name| {
                    let protos: Vec<&[u8]> = headers
                        .get_all(*name)
                        .iter()
                        .map(|v| v.as_bytes())
                        .collect();
                    forwarded_proto_header(&protos)
                })
        })
        .unwrap_or(false);
        ClientAddr { ip, https }
    }

    /// The client address from the raw values of `header` (one per header
    /// line, in arrival order) sent by the trusted `peer`. Pure and total:
    /// the fuzz target drives it with arbitrary bytes.
    pub fn client_from(&self, header: ClientIpHeader, peer: IpAddr, values: &[&[u8]]) -> IpAddr {
        match header {
            ClientIpHeader::XForwardedFor => self.walk(peer, values, parse_xff_entry),
            ClientIpHeader::Forwarded => self.walk(peer, values, parse_forwarded_element),
            _ => match values {
                // One address only: several lines mean something rewrote
                // nothing, and we cannot tell which one the proxy set.
                [one] => std::str::from_utf8(one)
                    .ok()
                    .filter(|s| s.len() <= MAX_ENTRY_BYTES)
                    .and_then(parse_addr)
                    .unwrap_or(peer),
                _ => peer,
            },
        }
    }

    /// Walks a comma-separated chain from the right, skipping trusted hops.
    fn walk(&self, peer: IpAddr, values: &[&[u8]], parse: fn(&str) -> Option<IpAddr>) -> IpAddr {
        let mut closest = peer;
        let mut hops = 0;
        let mut budget = MAX_HEADER_BYTES;
        // Later header lines were appended by closer proxies.
        for value in values.iter().rev() {
            let take = value.len().min(budget);
            budget -= take;
            let tail = &value[value.len() - take..];
            let Ok(text) = std::str::from_utf8(tail) else {
                return closest;
            };
            let mut entries = text.rsplit(',').peekable();
            while let Some(entry) = entries.next() {
                // The left-most piece of a cut header may be partial.
                let cut = take < value.len() && entries.peek().is_none();
                hops += 1;
                if cut || hops > MAX_HOPS || entry.len() > MAX_ENTRY_BYTES {
                    return closest;
                }
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = parse(entry) else {
                    return closest;
                };
                let ip = canonical(ip);
                if !self.trusts(ip) {
                    return ip;
                }
                closest = ip;
            }
            if budget == 0 {
                return closest;
            }
        }
        closest
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`.
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = text.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn parse_xff_entry(entry: &str) -> Option<IpAddr> {
    parse_addr(entry)
}

/// The `for=` address of one RFC 7239 element (`for=…;proto=…;by=…`).
/// `for=unknown` and obfuscated identifiers (`_hidden`) are not addresses.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let value = forwarded_param(element, "for")?;
    parse_addr(value)
}

/// The value of `key` in one Forwarded element, unquoted.
fn forwarded_param<'a>(element: &'a str, key: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case(key) {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v),
        )
    })
}

/// `proto=` of the right-most Forwarded element that has one (the closest
/// proxy's view).
fn forwarded_proto(values: &[&[u8]]) -> Option<bool> {
    let last = values.last()?;
    let text = std::str::from_utf8(last).ok()?;
    text.rsplit(',')
        .find_map(|e| forwarded_param(e, "proto"))
        .map(|p| p.eq_ignore_ascii_case("https"))
}

/// `X-Forwarded-Proto`: the left-most value, which the edge proxy sets
/// (CDNs overwrite it; inner hops may append their own `http`).
fn forwarded_proto_header(values: &[&[u8]]) -> Option<bool> {
    let first = values.first()?;
    let text = std::str::from_utf8(first).ok()?;
    let proto = text.split(',').next()?.trim();
    (!proto.is_empty()).then(|| proto.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests;
