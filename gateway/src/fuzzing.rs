//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the gateway's own parsers
//! of what a client sends. Each must return for any input — never panic, never loop.

/// The exec string: `TARGET -- CMD`, the gateway words, `scp -f`.
pub fn intent(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::intent::parse(text);
    }
}

/// A path in the virtual file tree (sftp and scp); what parses prints back as itself.
pub fn tree_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::files::tree::canonical(text);
    if let Ok(node) = crate::files::tree::parse(text) {
        let again = crate::files::tree::parse(&node.to_string());
        assert_eq!(again.as_ref(), Ok(&node), "{text:?} printed as {node}");
    }
}

/// A port-forward destination: the first four bytes are the port, the rest the host.
pub fn forward_destination(data: &[u8]) {
    let (port, host) = data.split_at(data.len().min(4));
    let mut be = [0u8; 4];
    for (b, p) in be.iter_mut().zip(port) {
        *b = *p;
    }
    if let Ok(host) = std::str::from_utf8(host) {
        let _ = crate::files::portforward::destination(host, u32::from_be_bytes(be));
    }
}

/// The scp protocol's acknowledgements, read until the input ends or turns fatal.
pub fn scp_acks(data: &[u8]) {
    futures::executor::block_on(async {
        let mut input = data;
        while crate::files::scp::ack(&mut input).await.is_ok() {}
    });
}
