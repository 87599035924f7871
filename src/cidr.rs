//! IP prefixes (`10.0.0.0/24`, `::/0`), as used by `Address` and `AllowedIPs`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address with a prefix length. `addr` keeps the host bits as written,
/// because an interface `Address` like `10.96.0.1/24` needs them; use
/// [`Cidr::network`] for the masked prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        (prefix <= max_prefix(addr)).then_some(Cidr { addr, prefix })
    }

    /// The prefix with its host bits cleared.
    pub fn network(&self) -> Cidr {
        Cidr {
            addr: mask_addr(self.addr, self.prefix),
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies inside this prefix (an IPv4 prefix never holds an
    /// IPv6 address and the other way round).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && mask_addr(ip, self.prefix) == mask_addr(self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask_addr(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `ADDR/LEN`; a bare address means a host prefix (/32 or /128).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address with a prefix length"))?;
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| format!("'{s}' has a bad prefix length"))?,
            None => max_prefix(addr),
        };
        Cidr::new(addr, prefix).ok_or_else(|| {
            format!(
                "'{s}': prefix length {prefix} is longer than {}",
                max_prefix(addr)
            )
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c: Cidr = "10.96.0.1/24".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.96.0.0/24");
        assert!(c.contains("10.96.0.200".parse().unwrap()));
        assert!(!c.contains("10.96.1.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert_eq!("10.0.0.1".parse::<Cidr>().unwrap().prefix, 32);
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert!("10.0.0/24".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
    }
}
