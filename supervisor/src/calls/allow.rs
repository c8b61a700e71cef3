//! Where the server may POST results: the operator's allow-list of `return_url` hosts.
//!
//! A rule is a host name (`receiver.example.com`, matched exactly, case-insensitive), an
//! IP address, or a CIDR block (`10.0.0.0/8`, `fd00::/8`). The default allows loopback
//! only: `localhost`, `127.0.0.0/8` and `::1`. A URL is allowed when its scheme is
//! `http` or `https`, it carries no user info, and its host matches a rule. A host name
//! is checked as written, not resolved: list a name only when you trust what it
//! resolves to. The check runs when a call is submitted, so a refused `return_url` is a
//! clear -32602 then, never a silent drop later.

use std::net::IpAddr;

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Host(String),
    Net { addr: IpAddr, prefix: u8 },
}

/// The hosts results may be delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnAllowList {
    rules: Vec<Rule>,
}

impl Default for ReturnAllowList {
    /// Loopback only.
    fn default() -> Self {
        ReturnAllowList::parse(["localhost", "127.0.0.0/8", "::1"])
            .unwrap_or_else(|e| unreachable!("the default rules parse: {e}"))
    }
}

/// A rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("return host rule {0:?}: expected a host name, an IP address or a CIDR block")]
pub struct BadRule(pub String);

impl ReturnAllowList {
    /// The list of `rules` (see the module docs).
    pub fn parse<I, S>(rules: I) -> Result<ReturnAllowList, BadRule>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rules
            .into_iter()
            .map(|r| parse_rule(r.as_ref().trim()))
            .collect::<Result<_, _>>()?;
        Ok(ReturnAllowList { rules })
    }

    /// Whether `url` may receive results; `Err` says why not.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("return_url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("return_url must be http or https".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("return_url must not carry credentials".into());
        }
        let allowed = match url.host() {
            None => return Err("return_url has no host".into()),
            Some(url::Host::Domain(name)) => {
                let name = name.to_ascii_lowercase();
                self.rules
                    .iter()
                    .any(|r| matches!(r, Rule::Host(h) if *h == name))
            }
            Some(url::Host::Ipv4(ip)) => self.allows_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.allows_ip(IpAddr::V6(ip)),
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "return_url host {} is not in the server's allow-list of return hosts",
                url.host_str().unwrap_or_default()
            ))
        }
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.rules.iter().any(|r| match r {
            Rule::Net { addr, prefix } => in_net(ip, *addr, *prefix),
            Rule::Host(_) => false,
        })
    }
}

fn parse_rule(text: &str) -> Result<Rule, BadRule> {
    let bad = || BadRule(text.to_string());
    if let Some((addr, prefix)) = text.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        return if prefix <= max {
            Ok(Rule::Net { addr, prefix })
        } else {
            Err(bad())
        };
    }
    if let Ok(addr) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Ok(Rule::Net { addr, prefix });
    }
    let valid_name = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if valid_name {
        Ok(Rule::Host(text.to_ascii_lowercase()))
    } else {
        Err(bad())
    }
}

/// Whether `ip` is in `net/prefix` (an IPv4-mapped IPv6 address counts as IPv4).
fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_loopback_only() {
        let list = ReturnAllowList::default();
        for ok in [
            "http://127.0.0.1:9000/ret",
            "http://127.8.9.10/",
            "https://localhost/x",
            "http://LOCALHOST:1/",
            "http://[::1]:80/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert_eq!(list.check(ok), Ok(()), "{ok}");
        }
        for refused in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://localhost.evil.com/",
            "http://[::2]/",
            "ftp://127.0.0.1/",
            "file:///etc/passwd",
            "http://user:pw@127.0.0.1/",
            "not a url",
        ] {
            assert!(list.check(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn cidrs_hosts_and_bad_rules() {
        let list = ReturnAllowList::parse([
            "10.1.0.0/16",
            "Receiver.Example.com",
            "fd00::/8",
            "0.0.0.0/0",
        ])
        .unwrap();
        assert!(list.check("http://10.1.200.3/").is_ok());
        assert!(list.check("https://receiver.example.com/").is_ok());
        assert!(list.check("http://[fd12::1]/").is_ok());
        assert!(list.check("http://[fe80::1]/").is_err());
        assert!(
            list.check("http://8.8.8.8/").is_ok(),
            "0.0.0.0/0 allows every IPv4"
        );
        for bad in ["10.0.0.0/33", "::/129", "a b", "", "x/y", "1.2.3.4/"] {
            assert!(ReturnAllowList::parse([bad]).is_err(), "{bad:?}");
        }
        let narrow = ReturnAllowList::parse(["10.1.0.0/16"]).unwrap();
        assert!(narrow.check("http://10.2.0.1/").is_err());
    }
}
