//! The webhook egress guard (SPEC §15): which addresses a webhook may
//! reach. Public unicast addresses only, plus the CIDRs the operator named
//! (`serve --webhook-allow-cidr`). A URL is checked when it is registered
//! (its host, and every address its name resolves to) and again at each
//! delivery, where [`Pinned`] is the sender's DNS resolver: it hands the
//! connector only addresses it checked, so the address connected to is the
//! one checked (no DNS-rebinding window).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// Longest wait for a name's addresses.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// IPv4 ranges that are not public: this network, RFC 1918, shared
/// (100.64/10), loopback, link-local, IETF protocol assignments,
/// documentation, 6to4 relay, benchmarking, multicast, reserved and
/// broadcast.
const V4_NOT_PUBLIC: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),
    v4(10, 0, 0, 0, 8),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(172, 16, 0, 0, 12),
    v4(192, 0, 0, 0, 24),
    v4(192, 0, 2, 0, 24),
    v4(192, 88, 99, 0, 24),
    v4(192, 168, 0, 0, 16),
    v4(198, 18, 0, 0, 15),
    v4(198, 51, 100, 0, 24),
    v4(203, 0, 113, 0, 24),
    v4(224, 0, 0, 0, 4),
    v4(240, 0, 0, 0, 4),
];

/// Global unicast IPv6 (everything else is loopback, unspecified,
/// unique-local, link-local, multicast or reserved).
const V6_GLOBAL: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// Ranges of [`V6_GLOBAL`] that are not public: IETF protocol assignments
/// (Teredo among them) and documentation.
const V6_NOT_PUBLIC: &[Ipv6Net] = &[
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
];

/// NAT64 (64:ff9b::/96): an IPv4 address in the last 32 bits.
const V6_NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4 (2002::/16): an IPv4 address in bits 16 to 48.
const V6_6TO4: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    let ip = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    Ipv6Net::new_assert(ip, len)
}

/// True for an address anyone on the internet could reach, in any
/// spelling (IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms are
/// judged by the IPv4 address they carry).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !V4_NOT_PUBLIC.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let bits = ip.to_bits();
    if bits >> 32 == 0 || bits >> 32 == 0xffff {
        // IPv4-compatible (`::a.b.c.d`, with `::` and `::1`) or IPv4-mapped.
        return is_public(IpAddr::V4(Ipv4Addr::from_bits(bits as u32)));
    }
    if V6_NAT64.contains(&ip) {
        return is_public(IpAddr::V4(Ipv4Addr::from_bits(bits as u32)));
    }
    if V6_6TO4.contains(&ip) {
        return is_public(IpAddr::V4(Ipv4Addr::from_bits((bits >> 80) as u32)));
    }
    V6_GLOBAL.contains(&ip) && !V6_NOT_PUBLIC.iter().any(|net| net.contains(&ip))
}

/// Why a webhook URL may not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// The reason for an address outside what the guard allows.
pub const PRIVATE: Refused = Refused("url resolves to a private address");

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

/// The addresses webhooks may reach.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// CIDRs allowed though not public.
    allow: Vec<IpNet>,
}

impl Egress {
    /// Public addresses and those of `allow`.
    pub fn new(allow: Vec<IpNet>) -> Egress {
        Egress { allow }
    }

    /// True when a webhook may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }

    /// What a URL's host alone says: an address outside the guard, a
    /// name for this host, or credentials in the URL are refused; a name
    /// is left to its lookup.
    pub fn check_host(&self, url: &Url) -> Result<(), Refused> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused("url must not carry a user name or password"));
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(name)) => return self.check_name(name),
            None => return Err(Refused("url must name a host")),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(PRIVATE)
        }
    }

    /// `localhost` and its subdomains always mean this host (RFC 6761):
    /// refused without asking DNS unless loopback is allowed.
    fn check_name(&self, name: &str) -> Result<(), Refused> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let local = name == "localhost" || name.ends_with(".localhost");
        let loopback = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        if local && !loopback.into_iter().all(|ip| self.permits(ip)) {
            return Err(PRIVATE);
        }
        Ok(())
    }

    /// Checks `url` at registration: its host, then every address its
    /// name resolves to now. A name that does not resolve now is accepted:
    /// each delivery resolves and checks it again.
    pub async fn check_url(&self, url: &Url) -> Result<(), Refused> {
        self.check_host(url)?;
        if let Some(Host::Domain(name)) = url.host() {
            if let Ok(Ok(found)) = lookup(name).await {
                self.check_addrs(&found)?;
            }
        }
        Ok(())
    }

    /// Refuses a set of addresses unless the guard permits every one.
    pub fn check_addrs(&self, addrs: &[SocketAddr]) -> Result<(), Refused> {
        if addrs.iter().all(|a| self.permits(a.ip())) {
            Ok(())
        } else {
            Err(PRIVATE)
        }
    }

    /// The addresses of `name` a delivery may connect to: all of them
    /// checked, or none.
    pub async fn resolve(&self, name: &str) -> Result<Vec<SocketAddr>, Refused> {
        self.check_name(name)?;
        let found = match lookup(name).await {
            Ok(Ok(found)) if !found.is_empty() => found,
            Ok(_) => return Err(Refused("url host does not resolve")),
            Err(_) => return Err(Refused("url host lookup timed out")),
        };
        self.check_addrs(&found)?;
        Ok(found)
    }
}

async fn lookup(
    name: &str,
) -> Result<std::io::Result<Vec<SocketAddr>>, tokio::time::error::Elapsed> {
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
    found.map(|r| r.map(Iterator::collect))
}

/// The webhook sender's DNS resolver: only addresses the guard checked
/// reach the connector.
pub struct Pinned(pub Arc<Egress>);

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = Arc::clone(&self.0);
        Box::pin(async move {
            let found = egress.resolve(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    fn host(egress: &Egress, url: &str) -> Result<(), Refused> {
        egress.check_host(&Url::parse(url).unwrap())
    }

    #[test]
    fn every_spelling_of_a_private_address_is_refused() {
        let none = Egress::default();
        for url in [
            "http://127.0.0.1:9901/logging",
            "http://127.0.0.2/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://192.0.2.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[2001:db8::1]/",
            "http://[2001::1]/",
            "http://localhost:9901/",
            "http://LocalHost./",
            "http://api.localhost/",
        ] {
            assert_eq!(host(&none, url), Err(PRIVATE), "{url}");
        }
    }

    #[test]
    fn public_addresses_and_allowed_cidrs_pass() {
        let none = Egress::default();
        for url in [
            "https://93.184.215.14/h",
            "http://[2606:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[64:ff9b::808:808]/",
            "https://hooks.example.com/x",
        ] {
            assert_eq!(host(&none, url), Ok(()), "{url}");
        }
        let loopback = Egress::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(host(&loopback, "http://127.0.0.5:9/"), Ok(()));
        assert_eq!(host(&loopback, "http://[::ffff:127.0.0.1]/"), Ok(()));
        assert_eq!(host(&loopback, "http://[::1]/"), Err(PRIVATE));
        assert_eq!(host(&loopback, "http://localhost/"), Err(PRIVATE));
        assert_eq!(host(&loopback, "http://10.0.0.1/"), Err(PRIVATE));
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        let none = Egress::default();
        assert!(host(&none, "https://user:pw@hooks.example.com/").is_err());
        assert!(host(&none, "https://user@hooks.example.com/").is_err());
    }

    #[test]
    fn one_private_address_among_public_ones_refuses_them_all() {
        // A name that answers a public and a private address (a rebinding
        // attempt) gets neither.
        let none = Egress::default();
        let public: SocketAddr = "93.184.215.14:0".parse().unwrap();
        let private: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(none.check_addrs(&[public]), Ok(()));
        assert_eq!(none.check_addrs(&[public, private]), Err(PRIVATE));
    }

    #[tokio::test]
    async fn the_sender_resolver_hands_over_only_checked_addresses() {
        let resolver = |egress: Egress| Pinned(Arc::new(egress));
        let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
        // Refused before any lookup: the connector gets no address at all.
        let refused = resolver(Egress::default()).resolve(name("localhost")).await;
        let error = refused.err().unwrap();
        assert_eq!(error.to_string(), PRIVATE.0);
        // A name resolved to a private address is refused after the lookup.
        let all_loopback = Egress::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let v4_only = Egress::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let literal = resolver(Egress::default()).resolve(name("127.0.0.1")).await;
        assert_eq!(literal.err().unwrap().to_string(), PRIVATE.0);
        let allowed = resolver(v4_only).resolve(name("127.0.0.1")).await;
        let addrs: Vec<SocketAddr> = allowed.unwrap().collect();
        assert_eq!(addrs, vec!["127.0.0.1:0".parse().unwrap()]);
        let pinned = resolver(all_loopback).resolve(name("localhost")).await;
        assert!(pinned.unwrap().all(|a| a.ip().is_loopback()));
    }
}
