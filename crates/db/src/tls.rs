//! TLS to PostgreSQL, as libpq's connection parameters ask for it, on
//! rustls (no OpenSSL):
//!
//! | `sslmode` | encrypted | the server's certificate |
//! |---|---|---|
//! | `disable` | no | - |
//! | `prefer` (the default) | when the server offers it | not checked |
//! | `require` | yes, or no connection | not checked; checked as `verify-ca` when `sslrootcert` is given |
//! | `verify-ca` | yes | signed by a trusted root |
//! | `verify-full` | yes | signed by a trusted root, and names the host connected to |
//!
//! `sslrootcert` is a PEM file of the roots to trust, or `system` for the
//! machine's (also what `verify-ca`/`verify-full` trust without it).
//! `sslmode=allow` and client certificates (`sslcert`, `sslkey`) are
//! refused rather than ignored. The connection string given to the client
//! is the original without these parameters, which it does not know.

use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// What a connection string says of TLS, and the string without it.
pub(crate) struct Tls {
    /// The connection string for the client (TLS parameters removed).
    pub conninfo: String,
    pub mode: SslMode,
    /// What `describe` shows: the mode as given.
    pub shown: String,
    pub connector: MakeRustlsConnect,
}

/// The parameters this module takes out of a connection string.
const OWN: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

fn config_error(detail: impl Into<String>) -> DbError {
    DbError::Config {
        detail: detail.into(),
    }
}

/// Reads the TLS parameters of `url` (a `postgres://` URL or `key=value`
/// pairs) and makes the connector they ask for.
pub(crate) fn settings(url: &str) -> Result<Tls, DbError> {
    let (conninfo, params) = take(url);
    let get = |key: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if get("sslcert").is_some() || get("sslkey").is_some() {
        return Err(config_error(
            "client certificates (sslcert, sslkey) are not supported; authenticate with a password",
        ));
    }
    let root = get("sslrootcert");
    let shown = get("sslmode").unwrap_or("prefer").to_string();
    let (mode, verify) = match shown.as_str() {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "prefer" => (SslMode::Prefer, Verify::Nothing),
        "require" if root.is_none() => (SslMode::Require, Verify::Nothing),
        "require" | "verify-ca" => (SslMode::Require, Verify::Chain(roots(root)?)),
        "verify-full" => (SslMode::Require, Verify::Full(roots(root)?)),
        "allow" => {
            return Err(config_error(
                "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full",
            ))
        }
        other => {
            return Err(config_error(format!(
                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    Ok(Tls {
        conninfo,
        mode,
        shown,
        connector: MakeRustlsConnect::new(client_config(verify)?),
    })
}

/// How the server's certificate is checked.
enum Verify {
    Nothing,
    /// The chain, up to one of these roots; not the name.
    Chain(RootCertStore),
    /// The chain and the name.
    Full(RootCertStore),
}

/// The roots `sslrootcert` names: a PEM file, or `system` (also the default).
fn roots(root: Option<&str>) -> Result<RootCertStore, DbError> {
    let mut store = RootCertStore::empty();
    match root {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system certificate rustls cannot use is skipped.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(config_error(
                    "no trusted root certificates on this machine: name a PEM file with sslrootcert=PATH",
                ));
            }
        }
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect())
                .map_err(|e| config_error(format!("sslrootcert={path}: {e}")))?;
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| config_error(format!("sslrootcert={path}: {e}")))?;
            }
            if store.is_empty() {
                return Err(config_error(format!(
                    "sslrootcert={path}: no certificate in the file"
                )));
            }
        }
    }
    Ok(store)
}

fn client_config(verify: Verify) -> Result<ClientConfig, DbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS: {e}")))?;
    let webpki = |roots: RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| config_error(format!("TLS roots: {e}")))
    };
    Ok(match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(Arc::clone(&provider))))
            .with_no_client_auth(),
        Verify::Chain(roots) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki(roots)?)))
            .with_no_client_auth(),
        Verify::Full(roots) => builder
            .with_webpki_verifier(webpki(roots)?)
            .with_no_client_auth(),
    })
}

/// `prefer`/`require`: the connection is encrypted, the certificate not
/// checked (the handshake's signatures still are), as libpq does.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked up to a trusted root; a name that does
/// not match the host is accepted (the chain was checked before the name).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `url` without this module's parameters, and their values (decoded).
fn take(url: &str) -> (String, Vec<(String, String)>) {
    let mut taken = Vec::new();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), taken);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if OWN.contains(&k) {
                    taken.push((k.to_string(), decode(v)));
                    false
                } else {
                    true
                }
            })
            .collect();
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rebuilt, taken)
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if OWN.contains(&k.trim()) {
                    taken.push((k.trim().to_string(), v.trim_matches('\'').to_string()));
                    false
                } else {
                    true
                }
            })
            .collect();
        (kept.join(" "), taken)
    }
}

/// Percent-decoding of a URL query value.
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_both_forms() {
        let (rest, taken) = take(
            "postgres://u:p@h:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(
            taken,
            [
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca.pem".to_string())
            ]
        );
        let (rest, taken) = take("postgres://h/db?sslmode=require");
        assert_eq!((rest.as_str(), taken.len()), ("postgres://h/db", 1));
        let (rest, taken) = take("host=h dbname=db sslmode='disable' user=u");
        assert_eq!(rest, "host=h dbname=db user=u");
        assert_eq!(taken, [("sslmode".to_string(), "disable".to_string())]);
        let (rest, taken) = take("postgres://h/db");
        assert_eq!((rest.as_str(), taken.len()), ("postgres://h/db", 0));
    }

    #[test]
    fn modes_and_refusals() {
        let mode = |url: &str| settings(url).map(|t| (t.mode, t.shown));
        assert_eq!(
            mode("postgres://h/db").unwrap(),
            (SslMode::Prefer, "prefer".into())
        );
        assert_eq!(
            mode("postgres://h/db?sslmode=disable").unwrap().0,
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://h/db?sslmode=require").unwrap().0,
            SslMode::Require
        );
        for (url, says) in [
            (
                "postgres://h/db?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            (
                "postgres://h/db?sslmode=sometimes",
                "sslmode=sometimes: expected",
            ),
            ("postgres://h/db?sslcert=/c.pem", "client certificates"),
            (
                "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert=/nonexistent/ca.pem",
            ),
        ] {
            let err = settings(url)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(says), "{url}: {err}");
        }
        let dir = tempfile::TempDir::new().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = settings(&format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("no certificate in the file"), "{err}");
    }
}
