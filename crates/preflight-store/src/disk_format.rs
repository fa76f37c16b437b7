//! The on-disk format pinned by what a release really wrote: the data directory in
//! `tests/fixtures/datadir-v0.1/` (made by the v0.1 release binaries) is unpacked, and every
//! value of every tree is decoded with the type the store uses for that tree and encoded again.
//! What the release wrote must come back unchanged: a field renamed or removed in core, or a
//! changed enum word, fails here; a field added (with a serde default) passes. A tree this test
//! does not know fails too, so a new stored type gets its line here.

use std::path::Path;

use preflight_core::evidence::{AgentKey, SignedCheckpoint, SignedRecord};
use preflight_core::workflow::{Batch, Event, Project};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::{
    sweeps::SweepRecord, AgentRecord, JoinTokenRecord, UserAuditRecord, UserRecord, RECORD_V1,
};

/// Does `now` (the current types' encoding) keep everything in `then` (what the release wrote)?
/// Objects may have gained keys; everything else must be equal.
fn keeps(then: &Value, now: &Value, at: &str) -> Result<(), String> {
    match (then, now) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let Some(w) = b.get(k) else {
                    return Err(format!("{at}.{k}: written by the release, gone now"));
                };
                keeps(v, w, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .try_for_each(|(i, (v, w))| keeps(v, w, &format!("{at}[{i}]"))),
        _ if then == now => Ok(()),
        _ => Err(format!("{at}: the release wrote {then}, now {now}")),
    }
}

/// Decodes every value of `tree` as `T` and checks its encoding keeps what was written.
/// Returns how many values it checked.
fn check_tree<T: Serialize + DeserializeOwned>(db: &sled::Db, tree: &str) -> usize {
    let t = db.open_tree(tree).unwrap();
    let mut n = 0;
    for kv in t.iter() {
        let (k, v) = kv.unwrap();
        let key = String::from_utf8_lossy(&k).into_owned();
        let (version, body) = v.split_first().expect("a value is never empty");
        assert_eq!(*version, RECORD_V1, "{tree}/{key}: version byte");
        let then: Value = serde_json::from_slice(body).unwrap();
        let typed: T = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{tree}/{key} no longer decodes: {e}"));
        let now = serde_json::to_value(&typed).unwrap();
        if let Err(e) = keeps(&then, &now, &format!("{tree}/{key}")) {
            panic!("the on-disk format changed: {e}");
        }
        n += 1;
    }
    n
}

/// Trees whose values are not versioned JSON records (indexes and raw strings); their values
/// are checked by shape.
fn check_raw(db: &sled::Db, tree: &str, ok: impl Fn(&[u8], &[u8]) -> bool) -> usize {
    let t = db.open_tree(tree).unwrap();
    let mut n = 0;
    for kv in t.iter() {
        let (k, v) = kv.unwrap();
        assert!(ok(&k, &v), "{tree}: unexpected entry {k:?} => {v:?}");
        n += 1;
    }
    n
}

#[test]
fn every_tree_the_v0_1_release_wrote_still_reads_and_encodes_the_same() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/datadir-v0.1/datadir.tar.gz");
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(tmp.path())
        .output()
        .expect("tar runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = sled::open(tmp.path().join("data/db")).unwrap();

    let utf8 = |b: &[u8]| std::str::from_utf8(b).is_ok();
    let mut counts = std::collections::BTreeMap::new();
    let mut count = |tree: &'static str, n: usize| counts.insert(tree, n);
    count("users", check_tree::<UserRecord>(&db, "users"));
    count(
        "user_audit",
        check_tree::<UserAuditRecord>(&db, "user_audit"),
    );
    count(
        "join_tokens",
        check_tree::<JoinTokenRecord>(&db, "join_tokens"),
    );
    count("agents", check_tree::<AgentRecord>(&db, "agents"));
    count("sweeps", check_tree::<SweepRecord>(&db, "sweeps"));
    count("wf_events", check_tree::<Event>(&db, "wf_events"));
    count("wf_batches", check_tree::<Batch>(&db, "wf_batches"));
    count("wf_projects", check_tree::<Project>(&db, "wf_projects"));
    count("wf_plans", check_tree::<String>(&db, "wf_plans"));
    count("wf_meta", check_tree::<i64>(&db, "wf_meta"));
    count(
        "evidence_leaves",
        check_tree::<SignedRecord>(&db, "evidence_leaves"),
    );
    count(
        "evidence_certs",
        check_tree::<AgentKey>(&db, "evidence_certs"),
    );
    count(
        "evidence_meta",
        check_tree::<SignedCheckpoint>(&db, "evidence_meta"),
    );
    count(
        "user_tokens",
        check_raw(&db, "user_tokens", |k, v| k.len() == 64 && utf8(v)),
    );
    count("meta", check_raw(&db, "meta", |k, v| utf8(k) && utf8(v)));
    count(
        "wf_deployers",
        check_raw(&db, "wf_deployers", |k, v| utf8(k) && v.is_empty()),
    );
    count(
        "evidence_by_agent",
        check_raw(&db, "evidence_by_agent", |k, v| k.len() > 9 && v.is_empty()),
    );

    // Every tree of the release is known here (sled's own default tree aside).
    for name in db.tree_names() {
        let name = String::from_utf8_lossy(&name).into_owned();
        if name != "__sled__default" {
            assert!(
                counts.contains_key(name.as_str()),
                "tree {name} is not checked by this test"
            );
        }
    }
    // The manifest's contents, so the test cannot pass on an empty directory.
    assert_eq!(counts["users"], 9, "{counts:?}");
    assert_eq!(counts["agents"], 2, "{counts:?}");
    assert_eq!(counts["sweeps"], 1, "{counts:?}");
    assert_eq!(counts["evidence_leaves"], 66, "{counts:?}");
    assert!(counts["wf_events"] >= 18, "{counts:?}");
    assert!(counts["wf_plans"] >= 1, "{counts:?}");
}

#[test]
fn a_renamed_field_is_caught() {
    let then: Value = serde_json::json!({"id": "a", "nested": {"state": "finished"}, "l": [1, 2]});
    assert!(keeps(&then, &then, "x").is_ok());
    let mut grown = then.clone();
    grown["new"] = Value::Bool(true);
    assert!(keeps(&then, &grown, "x").is_ok(), "an added field is fine");
    let renamed = serde_json::json!({"ident": "a", "nested": {"state": "finished"}, "l": [1, 2]});
    assert!(keeps(&then, &renamed, "x").unwrap_err().contains("x.id"));
    let reworded = serde_json::json!({"id": "a", "nested": {"state": "done"}, "l": [1, 2]});
    assert!(keeps(&then, &reworded, "x")
        .unwrap_err()
        .contains("x.nested.state"));
    let shorter = serde_json::json!({"id": "a", "nested": {"state": "finished"}, "l": [1]});
    assert!(keeps(&then, &shorter, "x").is_err());
}
