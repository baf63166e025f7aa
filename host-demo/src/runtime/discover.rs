//! Calls into the guest's `discover` interface: what to look up for an address, and the
//! ranking of what the host found.

use super::exports::mailplug::connector::discover::{Discovery, FetchedDocument, Lookup, MxRecord, SrvRecord};
use super::{HostError, Instance};

impl Instance {
    /// What to look up for `address`; a malformed address is the guest's `invalid-input` error.
    pub async fn discovery_lookups(&mut self, address: &str) -> Result<Vec<Lookup>, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_discover().call_lookups(&mut self.store, address).await.map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    /// The ranked candidates for what the host found.
    pub async fn discovery_rank(
        &mut self,
        address: &str,
        mx: &[MxRecord],
        srv: &[SrvRecord],
        documents: &[FetchedDocument],
    ) -> Result<Discovery, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_discover()
            .call_rank(&mut self.store, address, mx, srv, documents)
            .await
            .map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }
}
