//! TLS configuration: the certificate files turned into rustls configs for
//! the client port (and HTTPS), and for both ends of the cluster bus.
//!
//! Certificates are read again on [`Tls::reload`] (SIGHUP); a reload that
//! fails keeps the configs in use. Existing connections keep the session they
//! negotiated, so a reload never drops anyone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Settings, TlsAuthClients};

/// Why the TLS files cannot be used, worded as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{setting} {path}: {why}")]
    File {
        /// The setting that names it (`--tls-cert-file`, ...).
        setting: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The certificates and key are each valid but do not go together.
    #[error("{0}")]
    Mismatch(String),
}

/// The files TLS is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (leaf first).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificates for client and peer certificates.
    pub ca: Option<PathBuf>,
    /// Whether clients must present a certificate.
    pub auth_clients: TlsAuthClients,
    /// Whether the cluster bus configs are needed.
    pub cluster: bool,
}

impl TlsFiles {
    /// The files named in `s`, or `None` when nothing uses TLS.
    pub fn from_settings(s: &Settings) -> Option<TlsFiles> {
        if !s.tls_in_use() {
            return None;
        }
        Some(TlsFiles {
            cert: s.tls_cert_file.clone()?,
            key: s.tls_key_file.clone()?,
            ca: s.tls_ca_cert_file.clone(),
            auth_clients: s.tls_auth_clients,
            cluster: s.tls_cluster,
        })
    }
}

/// One consistent set of configs, built from the files at one moment.
#[derive(Debug)]
pub struct TlsConfigs {
    /// For the TLS client port and HTTPS (`--tls-auth-clients` applies).
    pub clients: Arc<ServerConfig>,
    /// The cluster bus server: a peer certificate chaining to the CA is required.
    pub bus_server: Option<Arc<ServerConfig>>,
    /// The cluster bus client: presents this node's certificate, verifies the peer's.
    pub bus_client: Option<Arc<ClientConfig>>,
}

/// The TLS configs in use, swapped whole on reload.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<TlsConfigs>,
}

impl Tls {
    /// Reads the files; fails with the first problem found.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let configs = build(&files)?;
        Ok(Tls {
            files,
            current: ArcSwap::from_pointee(configs),
        })
    }

    /// The configs new connections use.
    pub fn current(&self) -> Arc<TlsConfigs> {
        self.current.load_full()
    }

    /// Reads the files again (blocking file I/O: call it off the runtime
    /// thread); on success new connections use them, on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = build(&self.files)?;
        self.current.store(Arc::new(configs));
        Ok(())
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        setting,
        path: path.display().to_string(),
        why: format!("cannot read: {e}"),
    })
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File {
        setting,
        path: path.display().to_string(),
        why,
    };
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)".into(),
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let setting = "--tls-key-file";
    let pem = read(setting, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        setting,
        path: path.display().to_string(),
        why: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected a PEM PRIVATE KEY block)".into()
            }
            other => format!("not a valid PEM private key: {other}"),
        },
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let setting = "--tls-ca-cert-file";
    let mut store = RootCertStore::empty();
    for cert in certificates(setting, path)? {
        store.add(cert).map_err(|e| TlsError::File {
            setting,
            path: path.display().to_string(),
            why: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(store))
}

fn build(files: &TlsFiles) -> Result<TlsConfigs, TlsError> {
    let chain = certificates("--tls-cert-file", &files.cert)?;
    let key = private_key(&files.key)?;
    let roots = files.ca.as_deref().map(roots).transpose()?;
    let mismatch = |e: rustls::Error| {
        TlsError::Mismatch(format!(
            "--tls-key-file {} does not go with --tls-cert-file {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    };
    let ca_problem = |e: String| TlsError::File {
        setting: "--tls-ca-cert-file",
        path: files
            .ca
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        why: e,
    };
    let client_verifier = |roots: &Arc<RootCertStore>, required: bool| {
        let builder = WebPkiClientVerifier::builder(roots.clone());
        let builder = if required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder.build().map_err(|e| ca_problem(e.to_string()))
    };
    let builder = ServerConfig::builder();
    let clients = match (files.auth_clients, &roots) {
        (TlsAuthClients::No, _) | (_, None) => builder.with_no_client_auth(),
        (TlsAuthClients::Yes, Some(r)) => {
            builder.with_client_cert_verifier(client_verifier(r, true)?)
        }
        (TlsAuthClients::Optional, Some(r)) => {
            builder.with_client_cert_verifier(client_verifier(r, false)?)
        }
    }
    .with_single_cert(chain.clone(), key.clone_key())
    .map_err(mismatch)?;
    let (bus_server, bus_client) = match (&roots, files.cluster) {
        (Some(roots), true) => {
            let server = ServerConfig::builder()
                .with_client_cert_verifier(client_verifier(roots, true)?)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(mismatch)?;
            let verifier = WebPkiServerVerifier::builder(roots.clone())
                .build()
                .map_err(|e| ca_problem(e.to_string()))?;
            let client = ClientConfig::builder()
                .with_webpki_verifier(verifier)
                .with_client_auth_cert(chain, key)
                .map_err(mismatch)?;
            (Some(Arc::new(server)), Some(Arc::new(client)))
        }
        _ => (None, None),
    };
    Ok(TlsConfigs {
        clients: Arc::new(clients),
        bus_server,
        bus_client,
    })
}

/// One DER element: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject's common name (CN) of a DER certificate, if it has one.
/// rustls verifies the chain but does not read the subject; this walks just
/// enough of the structure to find it, and gives up on anything unexpected.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, rest) = der_element(tbs)?;
    tbs = if tag == 0xa0 {
        der_element(rest)?.2
    } else {
        rest
    };
    for _ in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (SEQUENCE, mut subject, _) = der_element(tbs)? else {
        return None;
    };
    while !subject.is_empty() {
        let (SET, mut rdn, rest) = der_element(subject)? else {
            return None;
        };
        subject = rest;
        while !rdn.is_empty() {
            let (SEQUENCE, attribute, rest) = der_element(rdn)? else {
                return None;
            };
            rdn = rest;
            let (0x06, oid, value) = der_element(attribute)? else {
                return None;
            };
            if oid == CN_OID {
                let (_, text, _) = der_element(value)?;
                return std::str::from_utf8(text).ok().map(str::to_string);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_read_from_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Flag Co");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app-prod");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("app-prod"));
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
        // Truncated or garbage input is no name, never a panic.
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = common_name(&der[..cut]);
        }
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
