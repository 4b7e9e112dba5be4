//! The OIDC → SSH certificate issuer service (HTTPS) and OIDC discovery/JWKS fetching.
