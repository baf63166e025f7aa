//! Ranking what the host found (catalogue, MX, autoconfig, SRV) into one list of candidates.

use super::lookups::recognise_mx;
use super::{bad_input, is_host_name, normalise_host, parse_autoconfig, split_address, Candidate, MxRecord, Proto, SrvRecord, SRV_SERVICES};
use crate::error::{Error, Result, Stage};

/// A document the host fetched from one of the `Lookup::Http` URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub url: String,
    pub body: String,
}

/// An answer that was refused; discovery goes on with the other sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProblem {
    /// "autoconfig https://...", "SRV _imaps._tcp.example.org", "MX".
    pub source: String,
    pub error: Error,
}

/// Ranked candidates for an address, and the sources that were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The catalogue preset of the domain, found by its domain or its MX.
    pub preset: Option<&'static str>,
    /// Best first; see `rank`.
    pub candidates: Vec<Candidate>,
    pub problems: Vec<SourceProblem>,
}

/// More answers than this per kind are not looked at (a real domain has a handful).
pub const MAX_RECORDS: usize = 64;
/// More autoconfig documents than this are not parsed (`lookups` asks for two).
pub const MAX_DOCUMENTS: usize = 8;

/// Source labels end up in admin output: no control characters, bounded length.
fn label(kind: &str, what: &str) -> String {
    let mut clean: String = what.chars().take(200).flat_map(char::escape_debug).collect();
    if what.chars().count() > 200 {
        clean.push_str("...");
    }
    format!("{kind} {clean}")
}

fn to_preset_proto(p: Proto) -> crate::presets::Proto {
    match p {
        Proto::Pop3 => crate::presets::Proto::Pop3,
        Proto::Imap => crate::presets::Proto::Imap,
        Proto::Smtp => crate::presets::Proto::Smtp,
    }
}

/// The id of a catalogue preset whose server for the protocol is exactly this host, port and
/// TLS mode: credentials sent there can only reach that provider.
fn catalogue_server(catalogue: &[crate::presets::Preset], c: &Candidate) -> Option<&'static str> {
    catalogue.iter().find_map(|p| {
        p.server(to_preset_proto(c.proto))
            .filter(|s| s.host == c.host && s.port == c.port && s.tls == c.tls)
            .map(|_| p.id)
    })
}

/// The candidates of a catalogue preset (all trusted).
fn preset_candidates(p: &crate::presets::Preset, local: &str, full: &str, source: &str) -> Vec<Candidate> {
    let username = match p.username {
        crate::presets::UsernameForm::FullAddress => full,
        crate::presets::UsernameForm::LocalPart => local,
    };
    [(Proto::Imap, &p.imap), (Proto::Pop3, &p.pop3), (Proto::Smtp, &p.smtp)]
        .into_iter()
        .filter_map(|(proto, s)| {
            s.as_ref().map(|s| Candidate {
                proto,
                host: s.host.clone(),
                port: s.port,
                tls: s.tls,
                username: username.to_string(),
                source: source.to_string(),
                trusted: true,
            })
        })
        .collect()
}

/// Ranks what the host found for `address`: MX records, SRV records (with the queried name in
/// `service`) and fetched autoconfig documents. Only a malformed address is an error;
/// malformed or hostile answers are left out and listed in `problems`.
///
/// Order: by protocol (IMAP, POP3, SMTP); within one, trusted candidates first (a catalogue
/// preset found by domain or MX, or any server that is exactly a catalogue server), then
/// autoconfig in document order (the provider's own preference, with its username form), then
/// SRV by priority, implicit TLS before STARTTLS at equal priority (RFC 8314 prefers it), then
/// higher weight. Duplicates (same protocol, host, port, TLS) keep the first, best-ranked entry.
pub fn rank(address: &str, mx: &[MxRecord], srv: &[SrvRecord], documents: &[Document]) -> Result<Discovery> {
    let (local, domain) = split_address(address)?;
    let full = format!("{local}@{domain}");
    let catalogue = crate::presets::catalogue();
    let mut problems = Vec::new();
    let too_many = |source: &str, what: &str, n: usize, max: usize| SourceProblem {
        source: source.to_string(),
        error: Error::limit(Stage::Connect, format!("The host passed {n} {what}; only the first {max} are considered.")),
    };

    // Trusted: the catalogue by domain, else a recognised MX.
    let mut preset = None;
    let mut candidates: Vec<Candidate> = Vec::new();
    if let Some(p) = crate::presets::by_domain(&domain) {
        candidates = preset_candidates(&p, local, &full, &format!("catalogue: {}", p.id));
        preset = Some(p.id);
    } else {
        if mx.len() > MAX_RECORDS {
            problems.push(too_many("MX", "MX records", mx.len(), MAX_RECORDS));
        }
        let mut usable = Vec::with_capacity(mx.len().min(MAX_RECORDS));
        for r in mx.iter().take(MAX_RECORDS) {
            let host = normalise_host(&r.exchange);
            // "." (RFC 7505 null MX: no mail at all) is not an error, just nothing to recognise.
            if host.is_empty() {
                continue;
            }
            if is_host_name(&host) {
                usable.push(r.clone());
            } else {
                problems.push(SourceProblem {
                    source: label("MX", &r.exchange),
                    error: bad_input("The MX record's exchange is not a valid host name; it was ignored. Check the domain's DNS."),
                });
            }
        }
        if let Some((id, exchange)) = recognise_mx(&usable) {
            if let Some(p) = crate::presets::by_id(id) {
                candidates = preset_candidates(&p, local, &full, &format!("MX {exchange} -> {}", p.name));
                preset = Some(p.id);
            }
        }
    }

    // Autoconfig, in the order the documents came.
    if documents.len() > MAX_DOCUMENTS {
        problems.push(too_many("autoconfig", "autoconfig documents", documents.len(), MAX_DOCUMENTS));
    }
    for doc in documents.iter().take(MAX_DOCUMENTS) {
        let source = label("autoconfig", &doc.url);
        match parse_autoconfig(&doc.body, &full) {
            Ok(found) => candidates.extend(found.into_iter().map(|c| Candidate { source: source.clone(), ..c })),
            Err(error) => problems.push(SourceProblem { source, error }),
        }
    }

    // SRV: (priority, implicit TLS first, higher weight first) within a protocol.
    if srv.len() > MAX_RECORDS {
        problems.push(too_many("SRV", "SRV records", srv.len(), MAX_RECORDS));
    }
    let mut from_dns: Vec<(u16, u16, Candidate)> = Vec::new();
    for r in srv.iter().take(MAX_RECORDS) {
        let name = normalise_host(&r.service);
        let source = label("SRV", &name);
        let refuse = |m: String| SourceProblem { source: source.clone(), error: bad_input(format!("{m}; the record was ignored. Check the domain's DNS.")) };
        let Some((_, proto, tls)) = SRV_SERVICES
            .iter()
            .find(|(service, _, _)| name == *service || name.strip_prefix(service).and_then(|d| d.strip_prefix('.')) == Some(domain.as_str()))
        else {
            problems.push(refuse(format!("'{}' is not a mail service name of {domain}", r.service.escape_debug())));
            continue;
        };
        let target = normalise_host(&r.target);
        if target.is_empty() {
            continue; // "." = decidedly not offered (RFC 2782)
        }
        if !is_host_name(&target) {
            problems.push(refuse(format!("the target '{}' is not a valid host name", r.target.escape_debug())));
            continue;
        }
        if r.port == 0 {
            problems.push(refuse("port 0 is not a usable port".to_string()));
            continue;
        }
        let c = Candidate { proto: *proto, host: target, port: r.port, tls: *tls, username: full.clone(), source, trusted: false };
        from_dns.push((r.priority, r.weight, c));
    }
    from_dns.sort_by(|(pa, wa, a), (pb, wb, b)| {
        pa.cmp(pb).then(b.tls.cmp(&a.tls)).then(wb.cmp(wa)).then_with(|| a.host.cmp(&b.host)).then(a.port.cmp(&b.port))
    });
    candidates.extend(from_dns.into_iter().map(|(_, _, c)| c));

    // A suggestion that is exactly a catalogue server is as safe as the catalogue.
    for c in candidates.iter_mut().filter(|c| !c.trusted) {
        if let Some(id) = catalogue_server(&catalogue, c) {
            c.trusted = true;
            c.source = format!("{} (catalogue server of {id})", c.source);
        }
    }
    let proto_order = |p: Proto| match p {
        Proto::Imap => 0,
        Proto::Pop3 => 1,
        Proto::Smtp => 2,
    };
    candidates.sort_by_key(|c| (proto_order(c.proto), !c.trusted));
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert((c.proto, c.host.clone(), c.port, c.tls)));
    Ok(Discovery { preset, candidates, problems })
}
