//! TLS material: the PEM files a config names, read once, and the rustls configs built from
//! them for both directions (turnout to endpoints, clients to turnout).
//!
//! Config validation calls [`client_config`] and [`server_config`], so a missing or unparsable
//! file is a config problem with its path, and the built configs are cached by their settings:
//! connections reuse them and never read files again (certificates change with a restart).
//! Every config uses the ring provider explicitly, so nothing depends on a process-wide default.

use crate::config::{ProxyTls, TlsSettings};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// A TLS file (or the pair of them) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError {
    /// The config key naming the file: `ca_file`, `cert_file`, `key_file`; `ca_file` also
    /// when the system roots are missing.
    pub field: &'static str,
    /// The file; `None` for the system roots.
    pub path: Option<PathBuf>,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} {}: {}", self.field, path.display(), self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for TlsFileError {}

/// Built client configs, per endpoint TLS settings.
static CLIENT_CONFIGS: Mutex<Option<HashMap<TlsSettings, Arc<ClientConfig>>>> = Mutex::new(None);
/// Built server configs, per `[proxy.tls]`.
static SERVER_CONFIGS: Mutex<Option<HashMap<ProxyTls, Arc<ServerConfig>>>> = Mutex::new(None);

/// The crypto provider of every config turnout builds.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for an endpoint's TLS settings: its CA bundle (or the system
/// roots), and its client certificate for mutual TLS. Built once per settings, then cached.
///
/// # Errors
/// [`TlsFileError`] naming the file that cannot be read or used.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsFileError> {
    if let Some(config) = cached(&CLIENT_CONFIGS, settings) {
        return Ok(config);
    }
    let roots = match &settings.ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| general("ca_file", None, &e))?
        .with_root_certificates(roots);
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = read_certs("cert_file", cert_file)?;
            let key = read_key(key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| general("key_file", Some(key_file), &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    let config = Arc::new(config);
    remember(&CLIENT_CONFIGS, settings, &config);
    Ok(config)
}

/// The rustls server config for `[proxy.tls]`: its certificate chain and key, no client
/// certificates. Built once per settings, then cached.
///
/// # Errors
/// [`TlsFileError`] naming the file that cannot be read or used.
pub fn server_config(settings: &ProxyTls) -> Result<Arc<ServerConfig>, TlsFileError> {
    if let Some(config) = cached(&SERVER_CONFIGS, settings) {
        return Ok(config);
    }
    let chain = read_certs("cert_file", &settings.cert_file)?;
    let key = read_key(&settings.key_file)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| general("cert_file", None, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| general("key_file", Some(&settings.key_file), &e))?;
    let config = Arc::new(config);
    remember(&SERVER_CONFIGS, settings, &config);
    Ok(config)
}

/// Every unusable file among `ca_file`, `cert_file` and `key_file`, each checked on its own
/// (so validation reports them all at once, even when the set is incomplete).
pub fn check_files(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Vec<TlsFileError> {
    let mut errors = Vec::new();
    if let Some(Err(e)) = ca_file.map(roots_from_file) {
        errors.push(e);
    }
    if let Some(Err(e)) = cert_file.map(|path| read_certs("cert_file", path)) {
        errors.push(e);
    }
    if let Some(Err(e)) = key_file.map(read_key) {
        errors.push(e);
    }
    errors
}

fn cached<K: Eq + std::hash::Hash, V>(
    cache: &Mutex<Option<HashMap<K, Arc<V>>>>,
    key: &K,
) -> Option<Arc<V>> {
    let guard = cache.lock().ok()?;
    guard.as_ref()?.get(key).cloned()
}

fn remember<K: Eq + std::hash::Hash + Clone, V>(
    cache: &Mutex<Option<HashMap<K, Arc<V>>>>,
    key: &K,
    value: &Arc<V>,
) {
    // A poisoned cache only costs a rebuild on the next connection.
    if let Ok(mut guard) = cache.lock() {
        guard
            .get_or_insert_with(HashMap::new)
            .insert(key.clone(), value.clone());
    }
}

fn general(field: &'static str, path: Option<&Path>, cause: &rustls::Error) -> TlsFileError {
    let message = match cause {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not belong to cert_file's certificate".to_string()
        }
        other => other.to_string(),
    };
    TlsFileError {
        field,
        path: path.map(Path::to_path_buf),
        message,
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError {
        field,
        path: Some(path.to_path_buf()),
        message: format!("cannot read: {e}"),
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(field, path)?;
    let bad = |message: String| TlsFileError {
        field,
        path: Some(path.to_path_buf()),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".to_string()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsFileError {
        field: "key_file",
        path: Some(path.to_path_buf()),
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM private key in the file".to_string()
            }
            other => format!("invalid PEM: {other}"),
        },
    })
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("ca_file", path)? {
        roots.add(cert).map_err(|e| TlsFileError {
            field: "ca_file",
            path: Some(path.to_path_buf()),
            message: format!("invalid CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsFileError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(TlsFileError {
            field: "ca_file",
            path: None,
            message: format!("not set, and no system root certificates were found{why}"),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca_file: Option<PathBuf>) -> TlsSettings {
        TlsSettings {
            ca_file,
            server_name: None,
            cert_file: None,
            key_file: None,
        }
    }

    #[test]
    fn a_missing_ca_file_names_itself() {
        let err = client_config(&settings(Some(PathBuf::from("/nonexistent/ca.pem"))))
            .expect_err("no such file");
        assert_eq!(err.field, "ca_file");
        assert!(
            err.to_string()
                .starts_with("ca_file /nonexistent/ca.pem: cannot read: "),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = client_config(&settings(Some(path.clone()))).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!("ca_file {}: no PEM certificate in the file", path.display())
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "").expect("write");
        let cert = dir.path().join("cert.pem");
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("self-signed");
        std::fs::write(&cert, generated.cert.pem()).expect("write");
        let err = server_config(&ProxyTls {
            cert_file: cert,
            key_file: key.clone(),
        })
        .expect_err("no key");
        assert_eq!(
            err.to_string(),
            format!("key_file {}: no PEM private key in the file", key.display())
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = rcgen::generate_simple_self_signed(vec!["a".to_string()]).expect("a");
        let two = rcgen::generate_simple_self_signed(vec!["b".to_string()]).expect("b");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, one.cert.pem()).expect("write");
        std::fs::write(&key, two.key_pair.serialize_pem()).expect("write");
        let err = server_config(&ProxyTls {
            cert_file: cert,
            key_file: key,
        })
        .expect_err("mismatch");
        assert_eq!(err.field, "key_file");
        assert!(err.message.contains("does not belong"), "{err}");
    }

    #[test]
    fn built_configs_are_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_string()]).expect("ca");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).expect("write");
        let first = client_config(&settings(Some(path.clone()))).expect("valid");
        std::fs::remove_file(&path).expect("remove");
        let second = client_config(&settings(Some(path))).expect("cached");
        assert!(Arc::ptr_eq(&first, &second));
    }
}
