//! jitsh-certs: the SSH certificate authority, certificate verification, OIDC token
//! validation and the certificate issuer. Pure library: no printing, no exiting.
