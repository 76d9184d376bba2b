//! The client address behind reverse proxies: read from `Forwarded` (RFC 7239) or else
//! `X-Forwarded-For`, and believed only as far as a chain of trusted proxies vouches for it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The standard forwarding header (RFC 7239).
const FORWARDED: &str = "forwarded";

/// The de facto header most proxies append the address of their client to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The reverse proxies and load balancers whose forwarding headers are believed
/// (`--trusted-proxy`). Empty by default: the client address is always the TCP peer's.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// The proxies in `networks` (as `--trusted-proxy` parsed them); none when empty.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks.into())
    }

    /// Whether `address` is one of the trusted proxies (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, address: IpAddr) -> bool {
        // A dual-stack listener shows IPv4 peers as IPv4-mapped IPv6 addresses.
        let canonical = address.to_canonical();
        self.0
            .iter()
            .any(|network| network.contains(&address) || network.contains(&canonical))
    }

    /// The client address of a request that came from `peer`: the peer itself unless it is a
    /// trusted proxy; otherwise the right-most forwarded address that is not itself a trusted
    /// proxy (see [`walk`]). Only the right end of a forwarding list is written by proxies
    /// we trust: whatever lies left of the first untrusted hop came from the client, who can
    /// write anything there.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        walk(peer, &hops(headers), |address| self.contains(address))
    }
}

/// Walks `hops` (in header order, client first) from the right, starting at the TCP `peer`:
/// each trusted address vouches for the hop left of it. Returns the first address that is
/// not trusted; the left-most when all are; and the last address reached when the next hop
/// names no usable address (`unknown`, an obfuscated name, malformed text), because what
/// lies left of it was written by no one we trust.
fn walk(peer: IpAddr, hops: &[Option<IpAddr>], trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(address) if trusted(client) => client = *address,
            _ => break,
        }
    }
    client
}

/// The hops of the request's `Forwarded` header lines, or, when there are none, of its
/// `X-Forwarded-For` lines, in order; `None` for a hop without a usable address. Several
/// lines of one header count as one comma-separated list, in the order they came.
fn hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded = list(headers, FORWARDED, parse_forwarded);
    if !forwarded.is_empty() {
        return forwarded;
    }
    list(headers, X_FORWARDED_FOR, parse_x_forwarded_for)
}

fn list(
    headers: &HeaderMap,
    name: &'static str,
    parse: fn(&str) -> Vec<Option<IpAddr>>,
) -> Vec<Option<IpAddr>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|line| match line.to_str() {
            Ok(text) => parse(text),
            Err(_) => vec![None],
        })
        .collect()
}

/// The `for=` addresses of one `Forwarded` line (RFC 7239 section 4), element by element.
/// An element is `None` when it is malformed, has no `for=` or more than one, or names
/// `unknown` or an obfuscated identifier. Empty elements are skipped.
fn parse_forwarded(line: &str) -> Vec<Option<IpAddr>> {
    let (elements, unterminated) = split_outside_quotes(line, b',');
    let last = elements.len().saturating_sub(1);
    elements
        .into_iter()
        .enumerate()
        .filter(|(_, element)| !element.trim().is_empty())
        .map(|(i, element)| {
            // An open quote swallows the rest of the line: nothing in it can be read.
            if unterminated && i == last {
                None
            } else {
                forwarded_for(element.trim())
            }
        })
        .collect()
}

/// The address in one element's `for` parameter.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let (pairs, _) = split_outside_quotes(element, b';');
    let mut node = None;
    for pair in pairs {
        let (name, value) = pair.trim().split_once('=')?;
        if !is_token(name) {
            return None;
        }
        let value = match value.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None if is_token(value) => value.to_owned(),
            None => return None,
        };
        if name.eq_ignore_ascii_case("for") && node.replace(value).is_some() {
            return None;
        }
    }
    parse_node(&node?)
}

/// The entries of one `X-Forwarded-For` line: IP addresses, IPv6 with or without brackets,
/// and tolerated with a port (some load balancers add one). Empty entries are skipped.
fn parse_x_forwarded_for(line: &str) -> Vec<Option<IpAddr>> {
    line.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| entry.parse().ok().or_else(|| parse_node(entry)))
        .collect()
}

/// A node (RFC 7239 section 6): an IPv4 address or a bracketed IPv6 address, with an
/// optional port. `unknown` and obfuscated identifiers name no address.
fn parse_node(node: &str) -> Option<IpAddr> {
    let (address, port) = match node.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, port) = bracketed.split_once(']')?;
            (IpAddr::V6(v6.parse().ok()?), port)
        }
        None => {
            let end = node.find(':').unwrap_or(node.len());
            (IpAddr::V4(node[..end].parse().ok()?), &node[end..])
        }
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(port) => match port.strip_prefix('_') {
            Some(obfuscated) => {
                !obfuscated.is_empty()
                    && obfuscated
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }
            None => (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()),
        },
    };
    port_ok.then_some(address)
}

/// Splits at `separator`s outside quoted strings; also says whether the text ends inside
/// an unterminated quoted string (then the last piece holds it).
fn split_outside_quotes(text: &str, separator: u8) -> (Vec<&str>, bool) {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if byte == separator && !quoted => {
                pieces.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    (pieces, quoted)
}

/// The content of a quoted string whose opening quote is already stripped; `None` unless
/// its closing quote ends the text.
fn unquote(quoted: &str) -> Option<String> {
    let mut content = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => content.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(content),
            c => content.push(c),
        }
    }
    None
}

/// An RFC 9110 token.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn some(texts: &[&str]) -> Vec<Option<IpAddr>> {
        texts.iter().map(|t| Some(ip(t))).collect()
    }

    fn trusted(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_for_parameters() {
        assert_eq!(parse_forwarded("for=192.0.2.60"), some(&["192.0.2.60"]));
        assert_eq!(
            parse_forwarded(r#"for=192.0.2.43, For="[2001:db8:cafe::17]:4711""#),
            some(&["192.0.2.43", "2001:db8:cafe::17"])
        );
        assert_eq!(
            parse_forwarded(r#"for="192.0.2.60:8080";proto=http;by=203.0.113.43"#),
            some(&["192.0.2.60"])
        );
        assert_eq!(
            parse_forwarded(r#"proto=https; for="[2001:db8::1]" ; host="a,b;c""#),
            some(&["2001:db8::1"])
        );
        assert_eq!(
            parse_forwarded(r#"for="\[2001:db8::1\]:_port-1""#),
            some(&["2001:db8::1"])
        );
        // Empty list elements are allowed and skipped.
        assert_eq!(parse_forwarded(" , for=192.0.2.1,,"), some(&["192.0.2.1"]));
    }

    #[test]
    fn forwarded_elements_without_a_usable_address() {
        for element in [
            "for=unknown",
            "for=_hidden",
            r#"for="_SEVKISEK:_port""#,
            "proto=https",
            "for=192.0.2.1;for=192.0.2.2",
            "for=[2001:db8::1]",
            r#"for="2001:db8::1""#,
            r#"for="192.0.2.1:123456""#,
            r#"for="192.0.2.1"x"#,
            "for=192.0.2.1:80",
            "for=example.com",
            "for",
            "for=",
            "=192.0.2.1",
            "garbage",
        ] {
            assert_eq!(parse_forwarded(element), vec![None], "{element}");
        }
        // An unterminated quote swallows the rest of its line, but not what came before.
        assert_eq!(
            parse_forwarded(r#"for=192.0.2.1, for="192.0.2.2, for=192.0.2.3"#),
            vec![Some(ip("192.0.2.1")), None]
        );
    }

    #[test]
    fn x_forwarded_for_entries() {
        assert_eq!(
            parse_x_forwarded_for(" 203.0.113.7 ,2001:db8::1,, 192.0.2.1:443, [2001:db8::2]:80"),
            some(&["203.0.113.7", "2001:db8::1", "192.0.2.1", "2001:db8::2"])
        );
        assert_eq!(
            parse_x_forwarded_for("203.0.113.7, unknown, 10.0.0.1"),
            vec![Some(ip("203.0.113.7")), None, Some(ip("10.0.0.1"))]
        );
    }

    #[test]
    fn walk_takes_the_right_most_untrusted_address() {
        let proxies = |a: IpAddr| a.to_string().starts_with("10.");
        let peer = ip("10.0.0.1");
        let hops = some(&["198.51.100.1", "203.0.113.7", "10.0.0.2"]);
        assert_eq!(walk(peer, &hops, proxies), ip("203.0.113.7"));
        // Every hop trusted: the left-most.
        assert_eq!(
            walk(peer, &some(&["10.0.0.3", "10.0.0.2"]), proxies),
            ip("10.0.0.3")
        );
        assert_eq!(walk(peer, &[], proxies), peer);
        // An unusable hop ends the walk at the last address a trusted proxy vouched for.
        let hops = vec![Some(ip("198.51.100.1")), None, Some(ip("10.0.0.2"))];
        assert_eq!(walk(peer, &hops, proxies), ip("10.0.0.2"));
        assert_eq!(walk(peer, &[Some(ip("198.51.100.1")), None], proxies), peer);
        // An untrusted peer's headers are not read at all.
        let stranger = ip("198.51.100.9");
        assert_eq!(walk(stranger, &hops, proxies), stranger);
    }

    #[test]
    fn client_address_from_headers() {
        let proxies = trusted(&["127.0.0.0/8", "10.0.0.0/8", "2001:db8:ffff::/48"]);
        let peer = ip("127.0.0.1");
        let xff = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]);
        assert_eq!(proxies.client_address(peer, &xff), ip("203.0.113.7"));
        // Forwarded wins over X-Forwarded-For.
        let both = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", r#"for="[2001:db8::5]:1234""#),
        ]);
        assert_eq!(proxies.client_address(peer, &both), ip("2001:db8::5"));
        // An empty Forwarded names no hop: X-Forwarded-For is read.
        let empty = headers(&[("forwarded", ""), ("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(proxies.client_address(peer, &empty), ip("203.0.113.7"));
        // Several lines are one list, in order.
        let lines = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1, 10.2.2.2"),
        ]);
        assert_eq!(proxies.client_address(peer, &lines), ip("203.0.113.7"));
        let lines = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("forwarded", r#"for="[2001:db8:ffff::1]""#),
        ]);
        assert_eq!(proxies.client_address(peer, &lines), ip("198.51.100.1"));
        // A line that is not visible ASCII is unusable.
        let mut opaque = headers(&[("x-forwarded-for", "203.0.113.7")]);
        opaque.append(
            X_FORWARDED_FOR,
            axum::http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert_eq!(proxies.client_address(peer, &opaque), peer);
        // Nothing trusted, or the peer not among the trusted: the peer.
        assert_eq!(TrustedProxies::default().client_address(peer, &xff), peer);
        assert_eq!(trusted(&["10.0.0.0/8"]).client_address(peer, &xff), peer);
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let proxies = trusted(&["127.0.0.0/8"]);
        let xff = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            proxies.client_address(ip("::ffff:127.0.0.1"), &xff),
            ip("203.0.113.7")
        );
    }
}
