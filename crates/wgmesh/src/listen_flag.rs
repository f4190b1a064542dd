//! `ADDR:PORT|off` flags (`--metrics-listen` of the server and the relay).

use std::net::SocketAddr;

use anyhow::Context as _;

/// `off` is `None`; anything else must be a socket address.
pub fn parse(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("{flag} {value:?} is not ADDR:PORT or off"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_address_or_error() {
        assert_eq!(parse("--x", "off").unwrap(), None);
        assert_eq!(
            parse("--x", "127.0.0.1:9090").unwrap(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        let e = parse("--x", "9090").unwrap_err().to_string();
        assert!(e.contains("--x \"9090\""), "{e}");
    }
}
