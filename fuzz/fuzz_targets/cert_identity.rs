//! The identity of a peer certificate (DER) and of a SPIFFE URI: never a
//! panic; an identity read back has a valid name and prints its URI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probemesh_proto::identity::{Identity, parse_spiffe_uri, validate_name};

fuzz_target!(|data: &[u8]| {
    if let Ok(identity) = Identity::from_cert_der(data) {
        assert!(validate_name(&identity.name).is_ok(), "{identity:?}");
        let uri = identity.spiffe_uri();
        assert_eq!(
            parse_spiffe_uri(&uri),
            Ok((identity.role, identity.name.clone())),
            "{uri}"
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_spiffe_uri(text);
    }
});
