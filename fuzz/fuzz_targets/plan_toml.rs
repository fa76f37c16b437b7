//! Plan files: TOML parsing and every validation rule. Property: no panic; a refusal lists at
//! least one error and each names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preflight_core::plan::Plan;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Plan::from_toml("plan.toml", text) {
        Ok(p) => {
            assert_eq!(p.digest().len(), 64);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(
                msg.contains("plan.toml"),
                "error without the file name: {msg}"
            );
        }
    }
});
