//! Listen addresses as people type them: `0.0.0.0:8443`, `[::1]:8443`, `localhost:8443`, `:8443`.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Parses a listen address for clap (`value_parser = crate::cli::addr::parse_listen`).
/// An IP literal is taken as is; `:port` means every IPv4 interface; a host name is resolved
/// once, at start-up, preferring its IPv4 address (so `localhost` serves `127.0.0.1`, which
/// every client tries, rather than only `::1`).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} has no port; give host:port, e.g. localhost:8443 or 0.0.0.0:8443"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?} of {s:?}: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("host {host:?} of {s:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_host_names_and_bare_ports() {
        assert_eq!(
            parse_listen("127.0.0.1:8443").unwrap(),
            "127.0.0.1:8443".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            parse_listen(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        let local = parse_listen("localhost:8443").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8443, "{local}");
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        assert!(
            parse_listen("localhost")
                .unwrap_err()
                .contains("has no port")
        );
        assert!(
            parse_listen("localhost:http")
                .unwrap_err()
                .contains("is not a number")
        );
        assert!(
            parse_listen("localhost:70000")
                .unwrap_err()
                .contains("port")
        );
    }
}
