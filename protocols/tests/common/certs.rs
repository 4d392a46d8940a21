//! Test certificates made at test time with rcgen: a CA, leaf certificates
//! signed by it (valid, expired, for other names), and self-signed ones.
//! Copy or `#[path]`-include this file; it needs only `rcgen` (a
//! dev-dependency) and `rustls-pki-types`.
//!
//! ```ignore
//! use gyre_protocols::tls::{client_config_with_roots, server_config};
//! let ca = TestCa::new();
//! let leaf = ca.leaf(&["localhost"]);
//! let server = server_config(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes(), &[])?;
//! let client = client_config_with_roots(&[ca.cert_der()], &[])?; // trusts this CA only
//! ```

#![allow(dead_code)]

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

/// A certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

/// A certificate (with its chain) and its private key, in PEM.
pub struct TestCert {
    /// The leaf certificate, then the CA's (for a CA-signed leaf).
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
    /// The leaf certificate, DER.
    pub der: CertificateDer<'static>,
}

impl TestCa {
    /// A new CA, "gyre test CA", valid from 1975 to 4096 (rcgen's default).
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gyre test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid
    /// now, signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> TestCert {
        self.sign(leaf_params(names))
    }

    /// A server certificate for `names` that expired in 2020.
    pub fn expired_leaf(&self, names: &[&str]) -> TestCert {
        let mut params = leaf_params(names);
        params.not_before = date_time_ymd(2019, 1, 1);
        params.not_after = date_time_ymd(2020, 1, 1);
        self.sign(params)
    }

    /// A certificate for `names` usable by a TLS client and a TLS server
    /// (both extended key usages), valid now, signed by this CA: what a
    /// mutual-TLS peer presents.
    pub fn peer_leaf(&self, names: &[&str]) -> TestCert {
        let mut params = leaf_params(names);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params)
    }

    /// [`peer_leaf`](Self::peer_leaf), expired in 2020.
    pub fn expired_peer_leaf(&self, names: &[&str]) -> TestCert {
        let mut params = leaf_params(names);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = date_time_ymd(2019, 1, 1);
        params.not_after = date_time_ymd(2020, 1, 1);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> TestCert {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        TestCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCert {
    /// A self-signed server certificate for `names` (trusted by nobody).
    pub fn self_signed(names: &[&str]) -> TestCert {
        let key = KeyPair::generate().expect("key");
        let cert = leaf_params(names).self_signed(&key).expect("self-sign");
        TestCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}
