//! Finding the address to bind the host-facing listeners to.
//!
//! On the local Docker target the router joins two networks: the app network (every service
//! name is an alias of the router there) and a host-facing network that only the router
//! joins and on which Docker publishes its ports on 127.0.0.1. The admin API and the public
//! data port bind to the router's address on the host-facing network only, so no app
//! container can reach them. The router learns that address without enumerating interfaces:
//! a UDP socket "connected" to the network's gateway (no packet is sent) reports the local
//! address the kernel would use, which is checked to lie inside the network's subnet.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A network given as its gateway and prefix length (`172.20.0.1/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindNetwork {
    pub gateway: IpAddr,
    pub prefix_len: u8,
}

/// Why the address on a [`BindNetwork`] could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BindNetworkError {
    #[error("`{0}` is not GATEWAY/PREFIX (e.g. 172.20.0.1/16)")]
    Syntax(String),
    #[error("no local address on the network {network} within {waited:?} (the kernel routes its gateway through {found})")]
    NotAttached {
        network: String,
        found: String,
        waited: Duration,
    },
}

impl std::fmt::Display for BindNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.gateway, self.prefix_len)
    }
}

impl FromStr for BindNetwork {
    type Err = BindNetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BindNetworkError::Syntax(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let gateway: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        let max = if gateway.is_ipv4() { 32 } else { 128 };
        if prefix_len == 0 || prefix_len > max || gateway.is_unspecified() {
            return Err(bad());
        }
        Ok(BindNetwork {
            gateway,
            prefix_len,
        })
    }
}

impl BindNetwork {
    /// Whether `ip` lies in this network's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.gateway, ip) {
            (IpAddr::V4(g), IpAddr::V4(a)) => {
                let mask = u32::MAX << (32 - u32::from(self.prefix_len));
                u32::from(g) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(g), IpAddr::V6(a)) => {
                let mask = u128::MAX << (128 - u32::from(self.prefix_len));
                u128::from(g) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// This host's address on the network: the source address towards the gateway, if it
    /// lies in the subnet. Retries for up to `wait` (an interface may come up late); never
    /// falls back to another address.
    pub fn local_address(&self, wait: Duration) -> Result<IpAddr, BindNetworkError> {
        let deadline = Instant::now() + wait;
        loop {
            let found = self.probe();
            match found {
                Ok(ip) if self.contains(ip) && ip != self.gateway => return Ok(ip),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => {
                    return Err(BindNetworkError::NotAttached {
                        network: self.to_string(),
                        found: match other {
                            Ok(ip) => ip.to_string(),
                            Err(e) => e.to_string(),
                        },
                        waited: wait,
                    })
                }
            }
        }
    }

    fn probe(&self) -> std::io::Result<IpAddr> {
        let any: SocketAddr = match self.gateway {
            IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let socket = UdpSocket::bind(any)?;
        socket.connect(SocketAddr::new(self.gateway, 9))?;
        Ok(socket.local_addr()?.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_membership() {
        let n: BindNetwork = "172.20.0.1/16".parse().unwrap();
        assert!(n.contains("172.20.9.3".parse().unwrap()));
        assert!(!n.contains("172.21.0.2".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let n: BindNetwork = "fd00::1/64".parse().unwrap();
        assert!(n.contains("fd00::2".parse().unwrap()));
        for bad in [
            "172.20.0.1",
            "172.20.0.1/33",
            "172.20.0.1/0",
            "x/16",
            "0.0.0.0/8",
        ] {
            assert!(bad.parse::<BindNetwork>().is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_the_loopback_address_and_refuses_other_networks() {
        let lo: BindNetwork = "127.0.0.2/8".parse().unwrap();
        assert_eq!(
            lo.local_address(Duration::ZERO).unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        // The kernel answers with 127.0.0.1, which is outside 127.0.0.2/32: refused rather
        // than bound to an address of another network.
        let unrelated: BindNetwork = "127.0.0.2/32".parse().unwrap();
        assert!(matches!(
            unrelated.local_address(Duration::ZERO),
            Err(BindNetworkError::NotAttached { .. })
        ));
    }
}
