//! pods/portforward as the user, for one permitted port.

use jitsh_broker_policy::PortPermit;
use k8s_openapi::api::core::v1::Pod;

use super::{Impersonated, KubeError};

/// An open forward to one port of a pod.
pub struct Forward {
    forwarder: kube::api::Portforwarder,
    port: u16,
}

/// Opens pods/portforward to the port the permit allows, on its pod.
pub async fn open(k: &Impersonated, permit: &PortPermit) -> Result<Forward, KubeError> {
    let (target, port) = (permit.target(), permit.port());
    let forwarder = k
        .api::<Pod>(&target.namespace)
        .portforward(&target.pod, &[port])
        .await?;
    Ok(Forward { forwarder, port })
}

impl Forward {
    /// The byte stream to the port and the future that resolves with the port's error message
    /// (if the pod reports one); `None` if the API server gave no stream.
    pub fn take(
        &mut self,
    ) -> Option<(
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + use<>,
        impl std::future::Future<Output = Option<String>> + use<>,
    )> {
        let stream = self.forwarder.take_stream(self.port)?;
        let errors = self.forwarder.take_error(self.port)?;
        Some((stream, errors))
    }

    /// Ends the forward.
    pub fn abort(&self) {
        self.forwarder.abort();
    }
}
