//! Test certificates made with rcgen: a CA, and leaf certificates it signs
//! (each usable as server and as client, as cluster members need). Written
//! as PEM files into a directory the caller owns; never committed.
//! Shared by tests/tls.rs and examples/test_certs.rs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that can sign leaf certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA named `cn`.
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.pem()).expect("write CA");
        path.to_path_buf()
    }

    /// Signs a leaf named `cn` for `sans` (DNS names or IP addresses), good
    /// for both server and client authentication; writes `<name>.pem` and
    /// `<name>.key` into `dir`.
    pub fn leaf(&self, dir: &Path, name: &str, cn: &str, sans: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let leaf = Leaf {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write leaf");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }

    /// A server (and member) certificate for this machine: `DNS:localhost`
    /// and `IP:127.0.0.1`, as clients that check the host name need.
    pub fn localhost(&self, dir: &Path, name: &str) -> Leaf {
        self.leaf(dir, name, name, &["localhost", "127.0.0.1"])
    }
}

/// A full set in `dir`: `ca.pem`, `server.{pem,key}` (localhost), `client.{pem,key}`
/// (CN `app`), and from a second CA `foreign-ca.pem`, `foreign.{pem,key}` (localhost).
pub struct Pki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The trusted CA.
    pub ca: Ca,
    /// `ca.pem`.
    pub ca_file: PathBuf,
    /// The server's certificate.
    pub server: Leaf,
    /// A client certificate from the trusted CA.
    pub client: Leaf,
    /// A certificate from another CA (as server or client).
    pub foreign: Leaf,
    /// `foreign-ca.pem`.
    pub foreign_ca_file: PathBuf,
}

impl Pki {
    /// Generates everything into `dir` (created if missing).
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("cert dir");
        let ca = Ca::new("flagstaff test CA");
        let ca_file = ca.write(&dir.join("ca.pem"));
        let server = ca.localhost(dir, "server");
        let client = ca.leaf(dir, "client", "app", &[]);
        let foreign_ca = Ca::new("some other CA");
        let foreign_ca_file = foreign_ca.write(&dir.join("foreign-ca.pem"));
        let foreign = foreign_ca.localhost(dir, "foreign");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_file,
            server,
            client,
            foreign,
            foreign_ca_file,
        }
    }

    /// The server arguments for a TLS port with this set.
    pub fn server_args(&self, tls_port: u16) -> Vec<String> {
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            self.server.cert.display().to_string(),
            "--tls-key-file".into(),
            self.server.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            self.ca_file.display().to_string(),
        ]
    }
}
