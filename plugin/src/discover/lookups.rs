//! What to look up for an address, and MX / SRV answers turned into ordered candidates.

use super::{is_host_name, normalise_host, split_address, Candidate, Lookup, MxRecord, SrvRecord, SRV_SERVICES};
use crate::error::Result;

/// What the host should look up for an address, in order: MX of the domain; SRV records of
/// RFC 6186 / RFC 8314 at the domain; the Thunderbird autoconfig URLs.
pub fn lookups(address: &str) -> Result<Vec<Lookup>> {
    let (local, domain) = split_address(address)?;
    let addr = format!("{local}@{domain}");
    let mut v = Vec::with_capacity(1 + SRV_SERVICES.len() + 2);
    v.push(Lookup::Mx(domain.clone()));
    for (service, _, _) in SRV_SERVICES {
        v.push(Lookup::Srv(format!("{service}.{domain}")));
    }
    v.push(Lookup::Http(format!("https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={}", crate::oauth::percent_encode(&addr))));
    v.push(Lookup::Http(format!("https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml")));
    Ok(v)
}

/// The provider a custom domain's MX points to (the most preferred MX that is recognised).
pub fn provider_from_mx(mx: &[MxRecord]) -> Option<&'static str> {
    recognise_mx(mx).map(|(id, _)| id)
}

/// The preset id and the (normalised) exchange of the most preferred recognised MX.
pub(super) fn recognise_mx(mx: &[MxRecord]) -> Option<(&'static str, String)> {
    let mut sorted: Vec<&MxRecord> = mx.iter().collect();
    sorted.sort_by_key(|r| r.preference);
    sorted.iter().find_map(|r| {
        let host = normalise_host(&r.exchange);
        let under = |suffix: &str| host.ends_with(suffix);
        let id = if under(".google.com") || under(".googlemail.com") {
            "gmail"
        } else if under(".mail.protection.outlook.com") {
            "microsoft365"
        } else if under(".olc.protection.outlook.com") {
            "outlook"
        } else {
            return None;
        };
        Some((id, host))
    })
}

/// Orders MX records by preference (lowest first), then by name for a stable order.
#[allow(clippy::ptr_arg)] // signature shared with order_srv, which needs Vec::retain
pub fn order_mx(v: &mut Vec<MxRecord>) {
    v.sort_by(|a, b| a.preference.cmp(&b.preference).then_with(|| a.exchange.cmp(&b.exchange)));
}

/// Orders SRV records by priority, then by weight (higher first), and drops target "."
/// (RFC 2782: service decidedly not available). RFC 2782 asks clients to pick randomly by
/// weight to spread load; these are suggestions shown to an admin, who configures one fixed
/// host, so a reproducible order matters more than load spreading.
pub fn order_srv(v: &mut Vec<SrvRecord>) {
    v.retain(|r| !normalise_host(&r.target).is_empty());
    v.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| b.weight.cmp(&a.weight))
            .then_with(|| a.target.cmp(&b.target))
            .then_with(|| a.port.cmp(&b.port))
    });
}

/// SRV results to candidates (_imaps -> TLS, _imap -> STARTTLS, ...), ordered as `order_srv`.
/// Records of unknown services, with port 0 or an invalid target are left out.
pub fn from_srv(records: &[SrvRecord], address: &str) -> Vec<Candidate> {
    let mut sorted = records.to_vec();
    order_srv(&mut sorted);
    let username = address.trim().to_string();
    sorted
        .iter()
        .filter_map(|r| {
            let service = r.service.trim().to_ascii_lowercase();
            let (name, proto, tls) = SRV_SERVICES
                .iter()
                .find(|(name, _, _)| service == *name || service.starts_with(&format!("{name}.")))?;
            let host = normalise_host(&r.target);
            if r.port == 0 || !is_host_name(&host) {
                return None;
            }
            Some(Candidate {
                proto: *proto,
                host,
                port: r.port,
                tls: *tls,
                username: username.clone(),
                source: format!("SRV {name}"),
                trusted: false,
            })
        })
        .collect()
}
