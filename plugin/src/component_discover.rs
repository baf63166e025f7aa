//! The wit-bindgen glue of the `discover` interface: converts WIT values to `crate::discover`
//! and back. The decisions live in `discover`.

use crate::component::exports::mailplug::connector::discover::{
    Candidate, Discovery, FetchedDocument, Guest, Lookup, MxRecord, ProtocolKind, SourceProblem, SrvRecord,
};
use crate::component::exports::mailplug::connector::types::Error;
use crate::component::{error_to_wit, Component};
use crate::discover;

impl Guest for Component {
    fn lookups(address: String) -> Result<Vec<Lookup>, Error> {
        let lookups = discover::lookups(&address).map_err(error_to_wit)?;
        Ok(lookups
            .into_iter()
            .map(|l| match l {
                discover::Lookup::Mx(d) => Lookup::Mx(d),
                discover::Lookup::Srv(n) => Lookup::Srv(n),
                discover::Lookup::Http(u) => Lookup::Http(u),
            })
            .collect())
    }

    fn rank(
        address: String,
        mx: Vec<MxRecord>,
        srv: Vec<SrvRecord>,
        documents: Vec<FetchedDocument>,
    ) -> Result<Discovery, Error> {
        let mx: Vec<_> = mx.into_iter().map(|r| discover::MxRecord { preference: r.preference, exchange: r.exchange }).collect();
        let srv: Vec<_> = srv
            .into_iter()
            .map(|r| discover::SrvRecord { service: r.name, priority: r.priority, weight: r.weight, port: r.port, target: r.target })
            .collect();
        let documents: Vec<_> = documents.into_iter().map(|d| discover::Document { url: d.url, body: d.body }).collect();
        let found = discover::rank(&address, &mx, &srv, &documents).map_err(error_to_wit)?;
        Ok(Discovery {
            preset: found.preset.map(str::to_string),
            candidates: found
                .candidates
                .into_iter()
                .map(|c| Candidate {
                    protocol: match c.proto {
                        discover::Proto::Pop3 => ProtocolKind::Pop3,
                        discover::Proto::Imap => ProtocolKind::Imap,
                        discover::Proto::Smtp => ProtocolKind::Smtp,
                    },
                    host: c.host,
                    port: c.port,
                    tls: c.tls,
                    username: c.username,
                    source: c.source,
                    trusted: c.trusted,
                })
                .collect(),
            problems: found
                .problems
                .into_iter()
                .map(|p| SourceProblem { source: p.source, error: error_to_wit(p.error) })
                .collect(),
        })
    }
}
