//! Unit tests of discovery: lookups, MX/SRV ordering, autoconfig parsing and ranking.

use super::*;
use crate::error::ErrorKind;

fn mx(preference: u16, exchange: &str) -> MxRecord {
    MxRecord { preference, exchange: exchange.into() }
}
fn srv(service: &str, priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
    SrvRecord { service: service.into(), priority, weight, port, target: target.into() }
}

/// Modelled on an ISPDB entry: IMAP and POP3 over SSL, STARTTLS submission, a plain POP3
/// fallback, and a placeholder in every username form.
const AUTOCONFIG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- served by autoconfig.example.org -->
<clientConfig version="1.1">
  <emailProvider id="example.org">
<domain>example.org</domain>
<displayName>Example Mail &amp; Hosting</displayName>
<displayShortName>Example</displayShortName>
<incomingServer type="imap">
  <hostname>imap.%EMAILDOMAIN%</hostname>
  <port>993</port>
  <socketType>SSL</socketType>
  <authentication>password-cleartext</authentication>
  <username>%EMAILADDRESS%</username>
</incomingServer>
<incomingServer type="pop3">
  <hostname>pop.example.org</hostname>
  <port>995</port>
  <socketType>SSL</socketType>
  <authentication>password-cleartext</authentication>
  <username>%EMAILLOCALPART%</username>
</incomingServer>
<incomingServer type="pop3">
  <hostname>pop.example.org</hostname>
  <port>110</port>
  <socketType>plain</socketType>
  <username>%EMAILLOCALPART%</username>
</incomingServer>
<outgoingServer type="smtp">
  <hostname>smtp.example.org</hostname>
  <port>587</port>
  <socketType>STARTTLS</socketType>
  <authentication>password-cleartext</authentication>
  <username>%EMAILLOCALPART%@%EMAILDOMAIN%</username>
</outgoingServer>
<documentation url="https://example.org/help/mail">
  <descr lang="en">Generic settings page</descr>
</documentation>
  </emailProvider>
</clientConfig>
"#;

#[test]
fn lookups_for_an_address() {
    let v = lookups("Jo+Sales@Example.ORG").unwrap();
    assert_eq!(v[0], Lookup::Mx("example.org".into()));
    assert_eq!(v[1], Lookup::Srv("_imaps._tcp.example.org".into()));
    assert_eq!(v[6], Lookup::Srv("_submission._tcp.example.org".into()));
    assert_eq!(v[7], Lookup::Http("https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=Jo%2BSales%40example.org".into()));
    assert_eq!(v[8], Lookup::Http("https://example.org/.well-known/autoconfig/mail/config-v1.1.xml".into()));
    assert_eq!(v.len(), 9);
}

#[test]
fn malformed_addresses_refused() {
    for bad in ["", "no-at-sign", "@example.org", "a@", "a@localhost", "a b@example.org", "a@exa mple.org", "a@-x.org", "a@x..org", "a@example.org/path"] {
        let e = lookups(bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn provider_recognised_by_mx() {
    // Recorded answers for custom domains.
    let workspace = [mx(10, "alt3.aspmx.l.google.com."), mx(1, "ASPMX.L.GOOGLE.COM."), mx(5, "alt1.aspmx.l.google.com.")];
    assert_eq!(provider_from_mx(&workspace), Some("gmail"));
    assert_eq!(provider_from_mx(&[mx(1, "smtp.google.com.")]), Some("gmail"));
    assert_eq!(provider_from_mx(&[mx(10, "aspmx2.googlemail.com.")]), Some("gmail"));
    let m365 = [mx(0, "contoso-com.mail.protection.outlook.com.")];
    assert_eq!(provider_from_mx(&m365), Some("microsoft365"));
    assert_eq!(provider_from_mx(&[mx(10, "example-com.olc.protection.outlook.com.")]), Some("outlook"));
    // The most preferred recognised exchange wins.
    assert_eq!(provider_from_mx(&[mx(20, "aspmx.l.google.com"), mx(10, "contoso-com.mail.protection.outlook.com")]), Some("microsoft365"));
    assert_eq!(provider_from_mx(&[mx(10, "mx.example.org."), mx(20, "google.com.evil.example.")]), None);
    assert_eq!(provider_from_mx(&[]), None);
}

#[test]
fn mx_ordering() {
    let mut v = vec![mx(30, "c.example."), mx(10, "b.example."), mx(10, "a.example.")];
    order_mx(&mut v);
    let names: Vec<_> = v.iter().map(|r| r.exchange.as_str()).collect();
    assert_eq!(names, ["a.example.", "b.example.", "c.example."]);
}

#[test]
fn srv_ordering_and_unavailable_target() {
    let mut v = vec![
        srv("_imaps._tcp", 10, 5, 993, "low-weight.example.org."),
        srv("_imaps._tcp", 0, 0, 993, "."),
        srv("_imaps._tcp", 10, 60, 993, "high-weight.example.org."),
        srv("_imaps._tcp", 5, 0, 993, "first.example.org."),
    ];
    order_srv(&mut v);
    let names: Vec<_> = v.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(names, ["first.example.org.", "high-weight.example.org.", "low-weight.example.org."]);
}

#[test]
fn srv_to_candidates() {
    let records = [
        srv("_submission._tcp.example.org", 0, 1, 587, "smtp.example.org."),
        srv("_imap._tcp.example.org", 0, 1, 143, "imap.example.org."),
        srv("_imaps._tcp.example.org", 0, 1, 993, "imap.example.org."),
        srv("_pop3s._tcp.example.org", 0, 1, 995, "."),
        srv("_caldav._tcp.example.org", 0, 1, 443, "dav.example.org."),
    ];
    let c = from_srv(&records, "jo@example.org");
    assert_eq!(c.len(), 3);
    let imaps = c.iter().find(|c| c.source == "SRV _imaps._tcp").unwrap();
    assert_eq!((imaps.proto, imaps.host.as_str(), imaps.port, imaps.tls), (Proto::Imap, "imap.example.org", 993, true));
    let imap = c.iter().find(|c| c.source == "SRV _imap._tcp").unwrap();
    assert!(!imap.tls);
    let sub = c.iter().find(|c| c.proto == Proto::Smtp).unwrap();
    assert_eq!((sub.port, sub.tls, sub.username.as_str(), sub.trusted), (587, false, "jo@example.org", false));
}

#[test]
fn autoconfig_with_placeholders() {
    let c = parse_autoconfig(AUTOCONFIG, "jo@example.org").unwrap();
    // The plain POP3 server is left out.
    assert_eq!(c.len(), 3);
    assert_eq!(
        c[0],
        Candidate {
            proto: Proto::Imap,
            host: "imap.example.org".into(),
            port: 993,
            tls: true,
            username: "jo@example.org".into(),
            source: "autoconfig".into(),
            trusted: false,
        }
    );
    assert_eq!((c[1].proto, c[1].port, c[1].tls, c[1].username.as_str()), (Proto::Pop3, 995, true, "jo"));
    assert_eq!((c[2].proto, c[2].host.as_str(), c[2].port, c[2].tls, c[2].username.as_str()), (Proto::Smtp, "smtp.example.org", 587, false, "jo@example.org"));
}

#[track_caller]
fn refused(xml: &str, phrase: &str) {
    let e = parse_autoconfig(xml, "jo@example.org").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
    assert!(e.message.contains(phrase), "{phrase:?} missing in: {}", e.message);
}

fn one_server(host: &str, port: &str, socket: &str) -> String {
    format!(
        "<clientConfig version=\"1.1\"><emailProvider id=\"x\"><incomingServer type=\"imap\"><hostname>{host}</hostname><port>{port}</port><socketType>{socket}</socketType></incomingServer></emailProvider></clientConfig>"
    )
}

#[test]
fn hostile_values_refused() {
    assert!(parse_autoconfig(&one_server("imap.example.org", "993", "SSL"), "jo@example.org").is_ok());
    refused(&one_server("imap.example.org\r\nX-Injected: 1", "993", "SSL"), "spaces or line breaks");
    refused(&one_server("imap.example.org&#13;&#10;", "993", "SSL"), "spaces or line breaks");
    refused(&one_server("imap example.org", "993", "SSL"), "spaces or line breaks");
    refused(&one_server("imap.example.org", "70000", "SSL"), "port '70000'");
    refused(&one_server("imap.example.org", "0", "SSL"), "port '0'");
    refused(&one_server("imap.example.org", "imaps", "SSL"), "port 'imaps'");
    refused(&one_server("imap.example.org", "993", "weird"), "socketType 'weird' is unknown");
    refused(&one_server("imap.example.org/x", "993", "SSL"), "not a valid host name");
}

#[test]
fn malformed_documents_refused() {
    refused("<clientConfig><emailProvider></clientConfig>", "malformed");
    refused("<clientConfig><emailProvider>", "never closed");
    refused("<html><body>Not found</body></html>", "expected <clientConfig>");
    refused("", "no <clientConfig>");
    refused("<clientConfig><incomingServer type=\"imap\"", "unterminated start tag");
    refused("<clientConfig><!-- never ends", "unterminated comment");
}

#[test]
fn hostile_xml_refused_without_expanding_anything() {
    // Entities declared in a DTD are never expanded (no "billion laughs").
    let laughs = "<!DOCTYPE c [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
        <clientConfig><emailProvider><incomingServer type=\"imap\"><hostname>&b;</hostname>\
        <port>993</port><socketType>SSL</socketType></incomingServer></emailProvider></clientConfig>";
    refused(laughs, "unknown character reference");
    refused("<clientConfig><emailProvider></clientConfig>", "</clientConfig> closes <emailProvider>");
    refused("<clientConfig></emailProvider>", "</emailProvider> closes <clientConfig>");
    refused("<clientConfig><![CDATA[x]]></clientConfig>", "CDATA");
    refused(&format!("<clientConfig>{}", "<a>".repeat(40)), "nested too deeply");
    refused("<clientConfig/><clientConfig/>", "expected <clientConfig>");
    let mixed = one_server("imap.&#x65;xample.org", "99&#51;", "SSL");
    let c = parse_autoconfig(&mixed, "jo@example.org").unwrap();
    assert_eq!((c[0].host.as_str(), c[0].port), ("imap.example.org", 993));
    refused(&one_server("imap.&#10;example.org", "993", "SSL"), "spaces or line breaks");
}

#[test]
fn only_plain_servers_is_a_policy_error() {
    let e = parse_autoconfig(&one_server("mail.example.org", "110", "plain"), "jo@example.org").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Policy);
    assert!(e.message.contains("unencrypted"));
}

#[test]
fn oversized_document_refused() {
    let mut xml = String::from("<clientConfig version=\"1.1\"><!--");
    xml.push_str(&"x".repeat(MAX_AUTOCONFIG_BYTES));
    xml.push_str("--></clientConfig>");
    let e = parse_autoconfig(&xml, "jo@example.org").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    assert!(e.message.contains("refused"));
}

#[test]
fn every_provider_from_mx_is_a_catalogue_preset() {
    for host in ["aspmx.l.google.com", "contoso-com.mail.protection.outlook.com", "eur.olc.protection.outlook.com"] {
        let key = provider_from_mx(&[MxRecord { preference: 10, exchange: host.into() }]).expect(host);
        assert!(crate::presets::by_id(key).is_some(), "{key} is not a preset id");
    }
}

fn doc(url: &str, body: &str) -> Document {
    Document { url: url.into(), body: body.into() }
}

fn summary(d: &Discovery) -> Vec<(Proto, String, u16, bool, bool)> {
    d.candidates.iter().map(|c| (c.proto, c.host.clone(), c.port, c.tls, c.trusted)).collect()
}

#[test]
fn rank_catalogue_domain_is_trusted() {
    let d = rank("Jo@GMAIL.com", &[], &[], &[]).unwrap();
    assert_eq!(d.preset, Some("gmail"));
    assert!(d.candidates.iter().all(|c| c.trusted && c.source == "catalogue: gmail" && c.username == "Jo@gmail.com"));
    assert_eq!(d.candidates[0].host, "imap.gmail.com");
}

#[test]
fn rank_workspace_and_m365_by_mx() {
    let workspace = [mx(10, "alt2.aspmx.l.google.com."), mx(1, "ASPMX.L.GOOGLE.COM."), mx(5, "alt1.aspmx.l.google.com.")];
    let d = rank("sales@acme-workspace.example", &workspace, &[], &[]).unwrap();
    assert_eq!(d.preset, Some("gmail"));
    assert_eq!(
        summary(&d),
        [
            (Proto::Imap, "imap.gmail.com".to_string(), 993, true, true),
            (Proto::Pop3, "pop.gmail.com".to_string(), 995, true, true),
            (Proto::Smtp, "smtp.gmail.com".to_string(), 587, false, true),
        ]
    );
    assert!(d.candidates[0].source.starts_with("MX aspmx.l.google.com -> "), "{}", d.candidates[0].source);
    assert_eq!(d.candidates[0].username, "sales@acme-workspace.example");

    let d = rank("info@contoso.example", &[mx(0, "contoso-example.mail.protection.outlook.com.")], &[], &[]).unwrap();
    assert_eq!(d.preset, Some("microsoft365"));
    assert_eq!(d.candidates[0].host, "outlook.office365.com");
    assert!(d.problems.is_empty());
}

#[test]
fn rank_unknown_mx_gives_nothing_trusted() {
    let d = rank("jo@example.org", &[mx(10, "mx1.example.org.")], &[], &[]).unwrap();
    assert_eq!((d.preset, d.candidates.len(), d.problems.len()), (None, 0, 0));
    // A null MX (RFC 7505) is no error either.
    assert!(rank("jo@example.org", &[mx(0, ".")], &[], &[]).unwrap().problems.is_empty());
}

#[test]
fn rank_hostile_mx_is_reported_not_used() {
    // A name that would match a suffix but is not a host name must not pick a provider.
    let d = rank("jo@example.org", &[mx(1, "x\r\nInjected: 1.aspmx.l.google.com.")], &[], &[]).unwrap();
    assert_eq!(d.preset, None);
    assert_eq!(d.problems.len(), 1);
    assert!(!d.problems[0].source.contains('\r') && d.problems[0].source.contains("\\r\\n"), "{}", d.problems[0].source);
    assert_eq!(d.problems[0].error.kind, ErrorKind::InvalidInput);
}

#[test]
fn rank_srv_order_priority_tls_weight() {
    let records = [
        srv("_imap._tcp.example.org", 0, 100, 143, "imap-starttls.example.org."),
        srv("_imaps._tcp.example.org", 10, 5, 993, "light.example.org."),
        srv("_imaps._tcp.example.org", 0, 1, 993, "primary.example.org."),
        srv("_imaps._tcp.example.org", 10, 60, 993, "heavy.example.org."),
        srv("_submission._tcp.example.org", 0, 1, 587, "smtp.example.org."),
        srv("_submissions._tcp.example.org", 5, 1, 465, "smtp.example.org."),
        srv("_pop3s._tcp.example.org", 0, 0, 0, "."),
    ];
    let d = rank("jo@example.org", &[], &records, &[]).unwrap();
    let order: Vec<_> = d.candidates.iter().map(|c| (c.host.as_str(), c.port)).collect();
    assert_eq!(
        order,
        [
            // Priority 0: implicit TLS before STARTTLS although STARTTLS has more weight.
            ("primary.example.org", 993),
            ("imap-starttls.example.org", 143),
            // Priority 10: higher weight first.
            ("heavy.example.org", 993),
            ("light.example.org", 993),
            // SMTP: the lower priority wins over implicit TLS.
            ("smtp.example.org", 587),
            ("smtp.example.org", 465),
        ]
    );
    assert!(d.candidates.iter().all(|c| !c.trusted && c.username == "jo@example.org"));
    assert_eq!(d.candidates[0].source, "SRV _imaps._tcp.example.org");
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}

#[test]
fn rank_srv_hostile_records_reported() {
    let records = [
        srv("_imaps._tcp.example.org", 0, 1, 993, "imap example.org."),
        srv("_imaps._tcp.example.org", 0, 1, 0, "imap.example.org."),
        srv("_imaps._tcp.evil.example", 0, 1, 993, "imap.evil.example."),
        srv("_caldav._tcp.example.org", 0, 1, 443, "dav.example.org."),
        srv("_imaps._tcp.example.org", 5, 1, 993, "good.example.org."),
    ];
    let d = rank("jo@example.org", &[], &records, &[]).unwrap();
    assert_eq!(summary(&d), [(Proto::Imap, "good.example.org".to_string(), 993, true, false)]);
    assert_eq!(d.problems.len(), 4, "{:?}", d.problems);
    assert!(d.problems[0].error.message.contains("not a valid host name"));
    assert!(d.problems[1].error.message.contains("port 0"));
    assert!(d.problems[2].error.message.contains("not a mail service name of example.org"));
    assert!(d.problems.iter().all(|p| p.error.kind == ErrorKind::InvalidInput && p.source.starts_with("SRV ")));
}

#[test]
fn rank_autoconfig_with_problems_per_document() {
    let docs = [
        doc("https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=jo%40example.org", AUTOCONFIG),
        doc("https://example.org/.well-known/autoconfig/mail/config-v1.1.xml", "<html>404</html>"),
    ];
    let d = rank("jo@example.org", &[], &[], &docs).unwrap();
    assert_eq!(d.preset, None);
    assert_eq!(d.candidates.len(), 3);
    assert!(d.candidates.iter().all(|c| !c.trusted && c.source.starts_with("autoconfig https://autoconfig.example.org/")));
    assert_eq!((d.candidates[1].proto, d.candidates[1].username.as_str()), (Proto::Pop3, "jo"));
    assert_eq!(d.problems.len(), 1);
    assert_eq!(d.problems[0].source, "autoconfig https://example.org/.well-known/autoconfig/mail/config-v1.1.xml");
    assert!(d.problems[0].error.message.contains("malformed"));

    let hostile = doc("https://autoconfig.example.org/x", &one_server("imap.example.org\r\nX: 1", "993", "SSL"));
    let d = rank("jo@example.org", &[], &[], &[hostile]).unwrap();
    assert!(d.candidates.is_empty());
    assert!(d.problems[0].error.message.contains("line breaks"));
}

#[test]
fn rank_merges_sources_dedupes_and_trusts_catalogue_servers() {
    let records = [
        srv("_imaps._tcp.example.org", 0, 1, 993, "imap.example.org."),
        srv("_imaps._tcp.example.org", 1, 1, 993, "imap.gmail.com."),
        srv("_submission._tcp.example.org", 0, 1, 587, "smtp.example.org."),
    ];
    let docs = [doc("https://autoconfig.example.org/a", AUTOCONFIG)];
    let d = rank("jo@example.org", &[], &records, &docs).unwrap();
    assert_eq!(
        summary(&d),
        [
            // Exactly Gmail's server: trusted, so it ranks first.
            (Proto::Imap, "imap.gmail.com".to_string(), 993, true, true),
            (Proto::Imap, "imap.example.org".to_string(), 993, true, false),
            (Proto::Pop3, "pop.example.org".to_string(), 995, true, false),
            (Proto::Smtp, "smtp.example.org".to_string(), 587, false, false),
        ]
    );
    assert!(d.candidates[0].source.ends_with("(catalogue server of gmail)"));
    // The duplicate kept the autoconfig entry (ranked above SRV).
    assert!(d.candidates[1].source.starts_with("autoconfig "));
    assert!(d.candidates[3].source.starts_with("autoconfig "));
}

#[test]
fn rank_bounds_its_input() {
    let many: Vec<SrvRecord> = (0..MAX_RECORDS as u16 + 10).map(|i| srv("_imaps._tcp.example.org", i, 0, 993, &format!("h{i}.example.org"))).collect();
    let d = rank("jo@example.org", &[], &many, &[]).unwrap();
    assert_eq!(d.candidates.len(), MAX_RECORDS);
    assert_eq!(d.problems.len(), 1);
    assert_eq!(d.problems[0].error.kind, ErrorKind::Limit);
    let docs: Vec<Document> = (0..MAX_DOCUMENTS + 1).map(|i| doc(&format!("https://a/{i}"), "<x/>")).collect();
    let d = rank("jo@example.org", &[], &[], &docs).unwrap();
    assert_eq!(d.problems.len(), MAX_DOCUMENTS + 1);
    assert_eq!(d.problems[0].error.kind, ErrorKind::Limit);
}

#[test]
fn rank_refuses_a_malformed_address() {
    assert_eq!(rank("not an address", &[], &[], &[]).unwrap_err().kind, ErrorKind::InvalidInput);
}
