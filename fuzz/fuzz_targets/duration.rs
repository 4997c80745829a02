//! Duration flags (`500ms`, `1h30m`): never a panic; what parses prints
//! (humantime) back to the same duration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probemesh_model::duration::parse_duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text) {
        let printed = humantime::format_duration(d).to_string();
        assert_eq!(parse_duration(&printed), Ok(d), "{printed}");
    }
});
