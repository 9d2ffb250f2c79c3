//! TLS for the north side: one rustls 0.23 client configuration (ring provider) for MQTT over
//! TLS and for `wss://`.
//!
//! - Roots: with `ca_file`, exactly the certificates in that PEM file (CA pinning: the system's
//!   roots are not added); without it, the system's roots.
//! - Client authentication (mutual TLS): `client_cert` (PEM chain) and `client_key` (PEM:
//!   PKCS#8, PKCS#1 RSA or SEC1 EC), both or neither.
//! - Server name: `server_name` when set, else the URL's host. It is both the SNI sent and the
//!   name the certificate must carry (a DNS name, or an IP address SAN for IP literals).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// TLS settings (from the MQTT or WebSocket configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) to trust, and only those.
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate chain, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client's private key, for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// Name to verify (and send as SNI) instead of the URL's host.
    pub server_name: Option<String>,
}

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} `{path}`: {why}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// Only one of `client_cert` and `client_key` is set.
    #[error("client_cert and client_key go together: set both or neither")]
    HalfClientAuth,
    /// No CA file and no usable system root.
    #[error("no CA file given and no system root certificate found")]
    NoRoots,
    /// The server name is neither a DNS name nor an IP address.
    #[error("`{0}` is not a valid TLS server name")]
    BadServerName(String),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsOptions {
    /// Builds the rustls client configuration.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let roots = match &self.ca_file {
            Some(path) => pinned_roots(path)?,
            None => system_roots()?,
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert, "client certificate")?, load_key(key)?)?,
            _ => return Err(TlsSetupError::HalfClientAuth),
        };
        Ok(Arc::new(config))
    }

    /// The name to verify: `server_name` if set, else `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsSetupError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned())
            .map_err(|_| TlsSetupError::BadServerName(name.to_owned()))
    }
}

fn file_error(what: &'static str, path: &Path, why: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        what,
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no CERTIFICATE in the PEM file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        file_error(
            "client key",
            path,
            format!("{e} (expected a PEM PKCS#8, RSA or EC private key)"),
        )
    })
}

fn pinned_roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA file")? {
        roots
            .add(cert)
            .map_err(|e| file_error("CA file", path, e))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system's root certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "unusable system root certificates");
    }
    if added == 0 {
        return Err(TlsSetupError::NoRoots);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_override_and_ip_literals() {
        let opts = TlsOptions::default();
        assert_eq!(
            opts.server_name("broker.example").unwrap(),
            ServerName::try_from("broker.example").unwrap()
        );
        assert!(matches!(
            opts.server_name("::1").unwrap(),
            ServerName::IpAddress(_)
        ));
        let opts = TlsOptions {
            server_name: Some("mqtt.internal".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            opts.server_name("::1").unwrap(),
            ServerName::try_from("mqtt.internal").unwrap()
        );
        let bad = TlsOptions {
            server_name: Some("not a name".into()),
            ..TlsOptions::default()
        };
        assert!(matches!(
            bad.server_name("h"),
            Err(TlsSetupError::BadServerName(_))
        ));
    }

    #[test]
    fn missing_files_and_half_client_auth_are_errors() {
        let opts = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = opts.client_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let opts = TlsOptions {
            client_cert: Some("/nonexistent/c.pem".into()),
            ..TlsOptions::default()
        };
        // the roots come first; without system roots this may be NoRoots instead
        assert!(opts.client_config().is_err());
    }
}
