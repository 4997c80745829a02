//! The lab cluster's own certificate authority (a real cluster has one too,
//! apart from probemesh's): the API server's serving certificate, client
//! certificates naming a user (CN) and groups (O), and kubeconfig files that
//! carry them, as `kubeadm kubeconfig user` writes them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

/// The cluster CA and the API server's certificate, in one directory.
#[derive(Debug, Clone)]
pub struct KubePki {
    dir: PathBuf,
}

impl KubePki {
    /// The files under `dir` (made by [`KubePki::create`]).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Makes a new CA and a serving certificate for `addresses` (plus
    /// `localhost` and the in-cluster names) in `dir`.
    pub fn create(dir: &Path, addresses: &[IpAddr]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("lab-kubernetes-ca-{:08x}", rand::random::<u32>()),
        );
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut server = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server
            .subject_alt_names
            .extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
        server
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let pki = Self::at(dir);
        write(&pki.ca_cert(), ca_cert.pem().as_bytes(), false)?;
        write(
            &dir.join("ca-key.pem"),
            issuer.key().serialize_pem().as_bytes(),
            true,
        )?;
        write(&pki.server_cert(), server_cert.pem().as_bytes(), false)?;
        write(
            &pki.server_key(),
            server_key.serialize_pem().as_bytes(),
            true,
        )?;
        Ok(pki)
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The API server's certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("apiserver.pem")
    }

    /// The API server's key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("apiserver-key.pem")
    }

    /// Issues a client certificate for `user` in `groups` and returns a
    /// kubeconfig (JSON, which every kubeconfig reader accepts) that uses it
    /// against `server` (`https://IP:PORT`).
    pub fn kubeconfig(&self, server: &str, user: &str, groups: &[&str]) -> anyhow::Result<Value> {
        let ca_pem = std::fs::read_to_string(self.ca_cert()).context("reading the cluster CA")?;
        let ca_key = std::fs::read_to_string(self.dir.join("ca-key.pem"))
            .context("reading the cluster CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key)?)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "lab", "cluster": {
                "server": server,
                "certificate-authority-data": b64(&ca_pem),
            }}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(&cert.pem()),
                "client-key-data": b64(&key.serialize_pem()),
            }}],
            "contexts": [{"name": format!("{user}@lab"), "context": {"cluster": "lab", "user": user}}],
            "current-context": format!("{user}@lab"),
        }))
    }

    /// Writes [`KubePki::kubeconfig`] to `path` (mode 0600: it holds a key).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<()> {
        let config = self.kubeconfig(server, user, groups)?;
        write(path, &serde_json::to_vec_pretty(&config)?, true)
    }
}

/// Writes a file atomically; `private` files are mode 0600.
fn write(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    probemesh_proto::pki::write_atomic(path, contents, private)
        .with_context(|| format!("writing {}", path.display()))
}
