//! Which addresses a discovery may fetch autoconfig from: public unicast ones only (loopback
//! when a test rig allows it), so a hostile domain cannot point the host at its own network.

use std::net::IpAddr;

/// Addresses a discovery may fetch from: public ones, and loopback when allowed for tests.
/// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as the IPv4 address they hold;
/// addresses that reach an IPv4 host through a translator or tunnel (NAT64, 6to4, Teredo) are
/// refused outright, since the IPv4 address behind them may be private.
pub(super) fn reachable(ip: IpAddr, allow_loopback: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0 // "this network"
                || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240) // reserved, broadcast
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let first = s[0];
            // ::a.b.c.d (deprecated IPv4-compatible): the IPv4 address decides.
            if s[..6] == [0; 6] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return reachable(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)), allow_loopback);
            }
            !(v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated, still routed inside sites)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) // NAT64 64:ff9b::/96
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
                || first == 0x2002 // 6to4 2002::/16
                || (first == 0x2001 && s[1] == 0) // Teredo 2001::/32
                || (first == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
                || (first == 0x2001 && (s[1] & 0xfff0) == 0x0020) // ORCHIDv2 2001:20::/28
                || (first == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (first & 0xfff0) == 0x3ff0 // documentation 3fff::/20
                || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard only 100::/64
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0xffff && s[5] == 0)) // IPv4-translated ::ffff:0:a.b.c.d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_loopback_allowed() {
        for public in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            assert!(reachable(public.parse().unwrap(), false), "{public}");
        }
        for private in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "fd00::1", "fe80::1", "::ffff:10.0.0.1"] {
            assert!(!reachable(private.parse().unwrap(), true), "{private}");
        }
        for private in [
            "64:ff9b::a00:1", "64:ff9b::5db8:d822", "64:ff9b:1::1", "2002:c0a8:101::1", "2002:5db8:d822::1", "fec0::1",
            "feff::1", "2001:0:4136:e378::1", "2001:db8::1", "3fff::1", "100::1", "2001:10::1", "2001:20::1",
            "::ffff:0:a00:1", "::10.0.0.1", "::127.0.0.1", "::ffff:192.168.0.1", "::ffff:255.255.255.255", "ff02::1",
            "ff0e::1", "192.0.0.8", "192.0.2.1", "198.51.100.1", "203.0.113.1", "198.18.0.1", "198.19.255.255",
            "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "0.1.2.3", "100.127.255.255", "::",
        ] {
            assert!(!reachable(private.parse().unwrap(), false), "{private}");
        }
        for public in ["100.128.0.1", "198.20.0.1", "2001:4860:4860::8888", "2a00:1450:4001::1", "::ffff:93.184.216.34", "::93.184.216.34"] {
            assert!(reachable(public.parse().unwrap(), false), "{public}");
        }
        // Loopback in IPv6 forms only with the test rig's permission.
        assert!(!reachable("::ffff:127.0.0.1".parse().unwrap(), false));
        assert!(!reachable("::127.0.0.1".parse().unwrap(), false));
        assert!(!reachable("127.0.0.1".parse().unwrap(), false));
        assert!(reachable("127.0.0.1".parse().unwrap(), true));
        assert!(!reachable("::1".parse().unwrap(), false));
    }
}
