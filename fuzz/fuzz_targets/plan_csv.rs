//! CSV import: a server list alone, and merged into a TOML plan (which then validates both
//! together). Property: no panic; refusals name the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preflight_core::plan::Plan;

const TOML: &str = r#"
[batch]
project = "fuzz"
batch = "fuzz-1"
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Plan::from_csv("servers.csv", text) {
        Ok(p) => assert_eq!(p.digest().len(), 64),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("servers.csv"),
                "error without the file name: {msg}"
            );
        }
    }
    let _ = Plan::from_toml_with_csv_servers("plan.toml", TOML, "servers.csv", text);
});
