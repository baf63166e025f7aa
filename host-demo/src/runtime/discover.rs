//! Calls into the guest's `discover` interface: what to look up for an address, and the
//! ranking of what the host found.

use super::exports::mailplug::connector::discover::{Discovery, FetchedDocument, Lookup, MxRecord, SrvRecord};
use super::{HostError, Instance};

impl Instance {
    /// What to look up for `address`; a malformed address is the guest's `invalid-input` error.
    pub async fn discovery_lookups(&mut self, address: &str) -> Result<Vec<Lookup>, HostError> {
        call!(self, mailplug_connector_discover, call_lookups(address))?.map_err(HostError::from)
    }

    /// The ranked candidates for what the host found.
    pub async fn discovery_rank(
        &mut self,
        address: &str,
        mx: &[MxRecord],
        srv: &[SrvRecord],
        documents: &[FetchedDocument],
    ) -> Result<Discovery, HostError> {
        call!(self, mailplug_connector_discover, call_rank(address, mx, srv, documents))?.map_err(HostError::from)
    }
}
