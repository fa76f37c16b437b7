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
    }
}

#[test]
fn join_token_enrolls_once_and_not_after_expiry() {
    let s = Store::temporary().unwrap();
    s.add_join_token(&token("t1", 1000)).unwrap();
    s.enroll("t1", 10, &agent("a")).unwrap();
    assert!(matches!(
        s.enroll("t1", 11, &agent("b")),
        Err(StoreError::TokenUsed(by)) if by == "a"
    ));
    assert!(s.agent("b").unwrap().is_none(), "nothing half-written");
    s.add_join_token(&token("t2", 1000)).unwrap();
    assert!(matches!(
        s.enroll("t2", 1000, &agent("c")),
        Err(StoreError::TokenExpired)
    ));
    assert!(matches!(
        s.enroll("t2", 5, &agent("a")),
        Err(StoreError::AgentExists(_))
    ));
    // The failed attempt did not consume the token.
    s.enroll("t2", 5, &agent("d")).unwrap();
    assert!(matches!(
        s.enroll("nope", 5, &agent("e")),
        Err(StoreError::TokenUnknown)
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
    };
    s.add_user(&u).unwrap();
    assert!(matches!(s.add_user(&u), Err(StoreError::UserExists(_))));
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
        Err(StoreError::NoAgent(_))
    ));
    s.agents.insert("v9", vec![9u8, b'{', b'}']).unwrap();
    assert!(matches!(
        s.agent("v9"),
        Err(StoreError::Version { version: 9, .. })
    ));
    s.agents.insert("bad", vec![1u8, b'x']).unwrap();
    assert!(matches!(s.agent("bad"), Err(StoreError::Corrupt { .. })));
}

#[test]
fn reopen_keeps_data_and_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.set_meta("k", "v").unwrap();
        let second = Store::open(dir.path());
        assert!(
            matches!(second, Err(StoreError::Locked { .. })),
            "{:?}",
            second.err()
        );
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.meta("k").unwrap().as_deref(), Some("v"));
}
