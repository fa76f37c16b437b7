//! Whatever the input, parsing never panics and either accepts the plan or reports errors that
//! each carry the file name and a line and column inside the text.

use std::path::PathBuf;

use preflight_core::plan::{InvalidPlan, Plan};
use proptest::prelude::*;

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/examples")
        .join(name);
    std::fs::read_to_string(path).expect("example file is readable")
}

fn assert_located(file: &str, text: &str, result: Result<Plan, InvalidPlan>) {
    let Err(err) = result else { return };
    assert!(
        !err.errors.is_empty(),
        "an error result holds at least one error"
    );
    let lines = u32::try_from(text.lines().count()).unwrap_or(u32::MAX);
    for e in &err.errors {
        assert_eq!(e.location.file, file);
        assert!(e.location.line >= 1, "line of {e}");
        assert!(
            e.location.line <= lines + 1,
            "line of {e} beyond the text ({lines} lines)"
        );
        assert!(e.location.column >= 1, "column of {e}");
        assert!(e
            .to_string()
            .starts_with(&format!("{file}:{}:", e.location.line)));
    }
}

/// Characters that matter to TOML and CSV, plus some that do not.
fn edit_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            '"', '\'', '[', ']', '{', '}', '=', ',', ';', '-', '.', '/', '\n', '#', ' ', '0', '9',
            'a', '\u{feff}', 'é', '端', '\t', '\\',
        ]),
        any::<char>(),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), edit_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
            (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        ],
        1..6,
    )
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match *e {
            Edit::Insert(i, c) => {
                let at = i % (chars.len() + 1);
                chars.insert(at, c);
            }
            Edit::Delete(i, n) => {
                if chars.is_empty() {
                    continue;
                }
                let at = i % chars.len();
                let end = (at + n).min(chars.len());
                chars.drain(at..end);
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        assert_located("p.toml", &text, Plan::from_toml("p.toml", &text));
        assert_located("p.csv", &text, Plan::from_csv("p.csv", &text));
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert_located("p.toml", &text, Plan::from_toml("p.toml", &text));
        assert_located("p.csv", &text, Plan::from_csv("p.csv", &text));
    }

    #[test]
    fn edited_example_plan_is_accepted_or_located(e in edits()) {
        let text = apply(&example("plan.toml"), &e);
        assert_located("plan.toml", &text, Plan::from_toml("plan.toml", &text));
    }

    #[test]
    fn edited_example_csv_is_accepted_or_located(e in edits()) {
        let text = apply(&example("servers.csv"), &e);
        assert_located("servers.csv", &text, Plan::from_csv("servers.csv", &text));
        let toml = example("plan-paths.toml");
        let merged = Plan::from_toml_with_csv_servers("plan-paths.toml", &toml, "servers.csv", &text);
        if let Err(err) = &merged {
            for x in &err.errors {
                assert!(x.location.line >= 1 && x.location.column >= 1, "{x}");
                assert!(x.location.file == "servers.csv" || x.location.file == "plan-paths.toml", "{x}");
            }
        }
    }

    #[test]
    fn plans_of_random_values_are_accepted_or_located(
        address in prop_oneof![Just("10.0.0.1".to_string()), "[0-9.:a-f]{0,20}"],
        hostname in "[a-zA-Z0-9._-]{0,20}",
        ports in prop_oneof![
            "[0-9,\\- ]{0,20}".prop_map(|s| format!("\"{s}\"")),
            prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| format!("{v:?}")),
        ],
        cores in any::<i64>(),
        sha in "[0-9a-fA-Fg]{60,68}",
    ) {
        let text = format!(
            "[[servers]]\naddress = \"{address}\"\nhostname = \"{hostname}\"\nrole = \"r\"\n\
             apps = [{{ name = \"a\", ports = {ports} }}]\n\n[thresholds]\nmin_cores = {cores}\n\n\
             [[packages]]\npath = \"/p\"\nsize = 1\nsha256 = \"{sha}\"\nkind = \"app\"\n"
        );
        let result = Plan::from_toml("r.toml", &text);
        assert_located("r.toml", &text, result.clone());
        if let Ok(plan) = result {
            // Whatever was accepted is within the documented rules.
            prop_assert!(plan.thresholds.min_cores >= 1 && plan.thresholds.min_cores <= 4096);
            prop_assert_eq!(plan.packages[0].sha256.len(), 64);
            for p in plan.servers[0].planned_ports() {
                prop_assert!(p.port >= 1);
            }
        }
    }
}
