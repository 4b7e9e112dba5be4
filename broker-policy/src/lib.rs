//! jitsh-broker-policy: policy documents, command-line parsing and decisions with reasons.
//! Pure library: no I/O, no Kubernetes, no SSH.
