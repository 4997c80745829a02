//! TARGET specs as meshctl and the control API take them: never a panic;
//! what parses prints back to the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probemesh_model::target::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(target) = text.parse::<Target>() {
        let printed = target.to_string();
        assert_eq!(printed.parse::<Target>().as_ref(), Ok(&target), "{printed}");
    }
});
