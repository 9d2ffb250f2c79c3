//! Test certificates from rcgen (feature `certs`): a CA, a server and a client certificate it
//! signed, and an unrelated CA, written as PEM files into a test's directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The PEM files [`make_certs`] wrote.
#[derive(Clone, Debug)]
pub struct Certs {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// For `localhost`, `::1` and `127.0.0.1` (server authentication).
    pub server_cert: PathBuf,
    /// The server certificate's key.
    pub server_key: PathBuf,
    /// For `edge-1.v6iot.test` (client authentication).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it, a client must refuse the server.
    pub other_ca: PathBuf,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Fresh keys and certificates (see [`Certs`]) in `dir`.
pub fn make_certs(dir: &Path) -> Certs {
    let ca = CertifiedIssuer::self_signed(ca_params("v6iot test CA"), KeyPair::generate().unwrap())
        .unwrap();
    let other =
        CertifiedIssuer::self_signed(ca_params("some other CA"), KeyPair::generate().unwrap())
            .unwrap();
    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "::1".into(), "127.0.0.1".into()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        vec!["edge-1.v6iot.test".into()],
        "edge-1",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    };
    Certs {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.pem", &other.pem()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_pem() {
        let dir = crate::TempDir::new("kit-certs");
        let c = make_certs(dir.path());
        for (path, kind) in [
            (&c.ca, "CERTIFICATE"),
            (&c.server_cert, "CERTIFICATE"),
            (&c.server_key, "PRIVATE KEY"),
            (&c.client_cert, "CERTIFICATE"),
            (&c.client_key, "PRIVATE KEY"),
            (&c.other_ca, "CERTIFICATE"),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                text.contains(&format!("-----BEGIN {kind}-----")),
                "{}",
                path.display()
            );
        }
        assert_ne!(
            std::fs::read(&c.ca).unwrap(),
            std::fs::read(&c.other_ca).unwrap()
        );
    }
}
