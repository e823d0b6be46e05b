//! Who the client is when latchkey sits behind reverse proxies (`trusted_proxies`, a list of
//! addresses and CIDR ranges, parsed by `ipnet`).
//!
//! Forwarding headers are believed only when the TCP peer is a trusted proxy, and then read
//! from the right: nginx, Traefik and Caddy *append* the address they saw, so everything left
//! of the last hop a trusted proxy added was written by the client and may be forged. The
//! client is the rightmost address that is not itself a trusted proxy. RFC 7239 `Forwarded`
//! is preferred when present, else `X-Forwarded-For`. `X-Forwarded-Proto` / `X-Forwarded-Host`
//! (or `Forwarded`'s `proto=` / `host=`) likewise count only from a trusted peer.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.1`, `::1`) and ranges (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or a CIDR range"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// The entries as text (CIDR notation).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address: the peer itself unless it is a trusted proxy; then the rightmost
    /// forwarded address that is not a trusted proxy (the leftmost one when all are).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(address) => {
                    client = address.to_canonical();
                    if !self.trusts(client) {
                        return client;
                    }
                }
                // A hop we cannot read (`unknown`, an obfuscated name): stop at what we know.
                None => return client,
            }
        }
        client
    }

    /// The scheme and host the client asked for, from a trusted peer's forwarding headers.
    pub fn forwarded_origin(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> (Option<String>, Option<String>) {
        if !self.trusts(peer) {
            return (None, None);
        }
        let last = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .rfind(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let forwarded = last_forwarded_element(headers);
        let pick = |key: &str| {
            forwarded.as_ref().and_then(|pairs| {
                pairs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.clone())
            })
        };
        let proto = pick("proto").or_else(|| last("x-forwarded-proto"));
        let host = pick("host").or_else(|| last("x-forwarded-host"));
        let proto = proto.filter(|p| p == "http" || p == "https");
        let host = host.filter(|h| is_host(h));
        (proto, host)
    }
}

/// The forwarding chain, oldest hop first: `Forwarded: for=` when present, else
/// `X-Forwarded-For` (every header line, in order). `None` marks a hop that is not an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|line| split_elements(line))
            .filter_map(|pairs| {
                pairs
                    .into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("for"))
                    .map(|(_, v)| node_address(&v))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| node_address(hop.trim()))
        .collect()
}

fn last_forwarded_element(headers: &HeaderMap) -> Option<Vec<(String, String)>> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_elements)
        .next_back()
}

/// RFC 7239 elements (comma-separated) of `key=value` pairs (semicolon-separated), values
/// unquoted. Commas and semicolons inside quoted strings are kept.
fn split_elements(line: &str) -> Vec<Vec<(String, String)>> {
    let mut elements = Vec::new();
    let mut pairs = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let flush_pair = |current: &mut String, pairs: &mut Vec<(String, String)>| {
        if let Some((k, v)) = current.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\""))
                .unwrap_or_else(|| v.to_owned());
            pairs.push((k.trim().to_owned(), v));
        }
        current.clear();
    };
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => flush_pair(&mut current, &mut pairs),
            ',' if !quoted => {
                flush_pair(&mut current, &mut pairs);
                elements.push(std::mem::take(&mut pairs));
            }
            _ => current.push(c),
        }
    }
    flush_pair(&mut current, &mut pairs);
    elements.push(pairs);
    elements
}

/// An address from a node: `203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::1]:4711`,
/// `2001:db8::1`. Anything else (`unknown`, `_hidden`) is not an address.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.parse().ok().or_else(|| {
        let (host, port) = node.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
    })
}

/// A plausible Host value: letters, digits, `.-:[]`, at most 255 bytes.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(proxies.client(ip("198.51.100.9"), &h), ip("198.51.100.9"));
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        assert_eq!(
            none.forwarded_origin(ip("127.0.0.1"), &headers(&[("x-forwarded-proto", "https")])),
            (None, None)
        );
    }

    #[test]
    fn through_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.1", "10.1.0.0/16"]).unwrap();
        // The client wrote 6.6.6.6 itself; nginx appended the address it saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        // Two proxies: the edge's hop is skipped as trusted.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        // No header: the proxy itself.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // IPv4-mapped peers are the IPv4 address.
        assert_eq!(
            proxies.client(
                ip("::ffff:10.0.0.1"),
                &headers(&[("x-forwarded-for", "203.0.113.8")])
            ),
            ip("203.0.113.8")
        );
    }

    #[test]
    fn rfc_7239_forwarded_is_read_the_same_way_and_preferred() {
        let proxies = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        let h = headers(&[
            ("forwarded", "for=6.6.6.6;proto=http, for=\"[2001:db8::7]:4711\";proto=https;host=auth.example.com"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("2001:db8::7"));
        assert_eq!(
            proxies.forwarded_origin(ip("10.0.0.1"), &h),
            (Some("https".into()), Some("auth.example.com".into()))
        );
        let h = headers(&[("forwarded", "for=unknown, for=203.0.113.9:80")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_scheme_and_host_are_checked() {
        let proxies = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "auth.example.com:8443"),
        ]);
        assert_eq!(
            proxies.forwarded_origin(ip("127.0.0.1"), &h),
            (Some("https".into()), Some("auth.example.com:8443".into()))
        );
        let h = headers(&[
            ("x-forwarded-proto", "javascript"),
            ("x-forwarded-host", "evil.example/<script>"),
        ]);
        assert_eq!(proxies.forwarded_origin(ip("127.0.0.1"), &h), (None, None));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8", "proxy.local"]).unwrap_err();
        assert!(err.contains("proxy.local"), "{err}");
    }
}
