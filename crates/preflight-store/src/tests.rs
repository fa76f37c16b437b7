use super::*;

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        hostname: "h".into(),
        addresses: vec![],
        listen_addr: "127.0.0.1:7444".into(),
        observed_ip: String::new(),
        version: "0.1.0".into(),
        enrolled_at_ms: 1,
        last_heartbeat_ms: 0,
        cert_sha256: "00".into(),
        cert_not_after_unix: 0,
        revoked: false,
        ..Default::default()
    }
}

fn token(hash: &str, expires: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        token_sha256: hash.into(),
        created_at_ms: 0,
        expires_at_ms: expires,
        created_by: "admin".into(),
        used_by: None,
        used_at_ms: None,
        max_uses: 1,
        uses: vec![],
    }
}

#[test]
fn join_token_enrolls_once_and_not_after_expiry() {
    let s = Store::temporary().unwrap();
    s.add_join_token(&token("t1", 1000)).unwrap();
    s.enroll("t1", 10, &agent("a")).unwrap();
    assert!(matches!(
        s.enroll("t1", 11, &agent("b")),
        Err(StoreError::Refused(StoreRefusal::TokenUsed(by))) if by == "a"
    ));
    assert!(s.agent("b").unwrap().is_none(), "nothing half-written");
    s.add_join_token(&token("t2", 1000)).unwrap();
    assert!(matches!(
        s.enroll("t2", 1000, &agent("c")),
        Err(StoreError::Refused(StoreRefusal::TokenExpired))
    ));
    assert!(matches!(
        s.enroll("t2", 5, &agent("a")),
        Err(StoreError::Refused(StoreRefusal::AgentExists(_)))
    ));
    // The failed attempt did not consume the token.
    s.enroll("t2", 5, &agent("d")).unwrap();
    assert!(matches!(
        s.enroll("nope", 5, &agent("e")),
        Err(StoreError::Refused(StoreRefusal::TokenUnknown))
    ));
    assert_eq!(s.agents().unwrap().len(), 2);
}

#[test]
fn users_by_token_hash() {
    let s = Store::temporary().unwrap();
    let u = UserRecord {
        name: "alice".into(),
        role: "admin".into(),
        token_sha256: "abc".into(),
        created_at_ms: 0,
        expires_at_ms: None,
        disabled: false,
        token_issued_at_ms: 0,
    };
    s.add_user(&u, &audit("add", "alice")).unwrap();
    assert!(matches!(
        s.add_user(&u, &audit("add", "alice")),
        Err(StoreError::Refused(StoreRefusal::UserExists(_)))
    ));
    assert_eq!(s.user_by_token("abc").unwrap(), Some(u));
    assert_eq!(s.user_by_token("abd").unwrap(), None);
}

#[test]
fn update_and_unknown_versions() {
    let s = Store::temporary().unwrap();
    s.add_join_token(&token("t", 10)).unwrap();
    s.enroll("t", 1, &agent("a")).unwrap();
    let r = s.update_agent("a", true, |r| r.revoked = true).unwrap();
    assert!(r.revoked && s.agent("a").unwrap().unwrap().revoked);
    assert!(matches!(
        s.update_agent("zz", false, |_| {}),
        Err(StoreError::Refused(StoreRefusal::NoAgent(_)))
    ));
    s.agents.insert("v9", vec![9u8, b'{', b'}']).unwrap();
    assert!(matches!(
        s.agent("v9"),
        Err(StoreError::Fault(StoreFault::Version { version: 9, .. }))
    ));
    s.agents.insert("bad", vec![1u8, b'x']).unwrap();
    assert!(matches!(
        s.agent("bad"),
        Err(StoreError::Fault(StoreFault::Corrupt { .. }))
    ));
}

#[test]
fn reopen_keeps_data_and_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.set_meta("k", "v").unwrap();
        let second = Store::open(dir.path());
        assert!(
            matches!(second, Err(StoreError::Fault(StoreFault::Locked { .. }))),
            "{:?}",
            second.err()
        );
    }
    let s = crate::reopen(dir.path());
    assert_eq!(s.meta("k").unwrap().as_deref(), Some("v"));
}

fn audit(action: &str, user: &str) -> UserAuditRecord {
    UserAuditRecord {
        at_ms: 5,
        by: "root".into(),
        action: action.into(),
        user: user.into(),
        detail: String::new(),
    }
}

#[test]
fn a_token_with_uses_enrolls_that_many_and_records_each() {
    let s = Store::temporary().unwrap();
    let mut t = token("multi", 1000);
    t.max_uses = 3;
    s.add_join_token(&t).unwrap();
    for (i, id) in ["m1", "m2", "m3"].into_iter().enumerate() {
        s.enroll("multi", 10 + i as i64, &agent(id)).unwrap();
    }
    assert!(matches!(
        s.enroll("multi", 20, &agent("m4")),
        Err(StoreError::Refused(StoreRefusal::TokenUsed(by))) if by == "m3"
    ));
    let rec = s.join_token("multi").unwrap().unwrap();
    let who: Vec<_> = rec
        .uses
        .iter()
        .map(|u| (u.agent.as_str(), u.at_ms))
        .collect();
    assert_eq!(who, [("m1", 10), ("m2", 11), ("m3", 12)]);
    assert_eq!(rec.used_by.as_deref(), Some("m1"));
}

#[test]
fn a_revoked_id_is_refused_naming_a_new_name() {
    let s = Store::temporary().unwrap();
    s.add_join_token(&token("r1", 1000)).unwrap();
    s.enroll("r1", 1, &agent("a")).unwrap();
    s.update_agent("a", true, |a| a.revoked = true).unwrap();
    s.add_join_token(&token("r2", 1000)).unwrap();
    let e = s.enroll("r2", 2, &agent("a")).unwrap_err();
    assert!(
        matches!(e, StoreError::Refused(StoreRefusal::AgentRevoked(_))),
        "{e}"
    );
    assert!(e.to_string().contains("new --name"), "{e}");
    assert!(!e.to_string().contains("revoke the old agent first"), "{e}");
}

#[test]
fn rotate_disable_remove_keep_an_audit_log() {
    let s = Store::temporary().unwrap();
    let u = UserRecord {
        name: "bob".into(),
        role: "deployer".into(),
        token_sha256: "old".into(),
        created_at_ms: 0,
        expires_at_ms: Some(100),
        disabled: false,
        token_issued_at_ms: 0,
    };
    s.add_user(&u, &audit("add", "bob")).unwrap();
    s.update_user("bob", &audit("rotate", "bob"), |r| {
        r.token_sha256 = "new".into();
        r.expires_at_ms = Some(200);
    })
    .unwrap();
    assert_eq!(s.user_by_token("old").unwrap(), None, "old token gone");
    assert_eq!(
        s.user_by_token("new").unwrap().unwrap().expires_at_ms,
        Some(200)
    );
    s.update_user("bob", &audit("disable", "bob"), |r| r.disabled = true)
        .unwrap();
    assert!(s.user("bob").unwrap().unwrap().disabled);
    s.remove_user("bob", &audit("remove", "bob")).unwrap();
    assert_eq!(s.user_by_token("new").unwrap(), None);
    assert!(matches!(
        s.remove_user("bob", &audit("remove", "bob")),
        Err(StoreError::Refused(StoreRefusal::NoUser(_)))
    ));
    let log: Vec<_> = s
        .user_audit()
        .unwrap()
        .into_iter()
        .map(|a| (a.action, a.user))
        .collect();
    let want: Vec<_> = ["add", "rotate", "disable", "remove"]
        .iter()
        .map(|a| (a.to_string(), "bob".to_string()))
        .collect();
    assert_eq!(log, want);
}

#[test]
fn the_database_is_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Store::open(&db).unwrap();
    s.set_meta("k", "v").unwrap();
    drop(s);
    let s = crate::reopen(&db);
    drop(s);
    fn walk(p: &std::path::Path) {
        let m = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        if p.is_dir() {
            assert_eq!(m, 0o700, "{}", p.display());
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path());
            }
        } else {
            assert_eq!(m & 0o077, 0, "{} is {m:o}", p.display());
        }
    }
    walk(&db);
}
