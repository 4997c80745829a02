//! Join tokens as `mesh-probe join --token` and the coordinator's enroll
//! service read them: never a panic; what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probemesh_proto::token::JoinToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = text.parse::<JoinToken>() {
        let printed = token.to_string();
        assert_eq!(
            printed.parse::<JoinToken>().as_ref(),
            Ok(&token),
            "{printed}"
        );
    }
});
