//! The CSR a joining host sends (PEM), signed by a CA: never a panic, and
//! whatever is signed carries exactly the name and role the CA chose.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use probemesh_proto::identity::{Identity, Role};
use probemesh_proto::pki::{CertAuthority, Validity};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

fn ca() -> &'static CertAuthority {
    static CA: OnceLock<CertAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        let now = time::OffsetDateTime::now_utc();
        CertAuthority::generate(Validity::ca(now)).expect("a CA")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(pem) = std::str::from_utf8(data) else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    if let Ok(cert) = ca().sign_csr(pem, "fuzzed", Role::Probe, Validity::leaf(now)) {
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("the CA's own PEM");
        let identity = Identity::from_cert_der(&der).expect("the CA's own certificate");
        assert_eq!(
            (identity.name.as_str(), identity.role),
            ("fuzzed", Role::Probe)
        );
    }
});
