//! Refusal messages as the CLI shows them: naming the offending value, what is allowed and the
//! fix; and the JSON shape of events and commands the controller stores and accepts.

use preflight_core::role::Role;
use preflight_core::workflow::*;

/// 2026-06-19T09:00:00Z.
const T: Timestamp = Timestamp(1_781_859_600_000);

fn setup() -> (World, Actor) {
    let mut w = World::new(WorkflowConfig::default());
    let adm = Actor::user("adm", Role::Admin);
    let pat = Actor::user("pat", Role::Project);
    w.execute(
        T,
        &adm,
        Command::CreateProject {
            id: "P1".into(),
            name: "p".into(),
            business_line: "gov".into(),
            approval: Approval::Pending,
        },
    )
    .expect("create project");
    w.execute(
        T,
        &pat,
        Command::CreateBatch {
            id: "B1".into(),
            project: "P1".into(),
            business_line: None,
            title: "t".into(),
        },
    )
    .expect("create batch");
    (w, pat)
}

fn pause() -> Command {
    Command::Pause {
        batch: "B1".into(),
        reason: PauseReason::Other,
        text: "x".into(),
        party: None,
    }
}

#[test]
fn refusal_messages() {
    let (mut w, pat) = setup();
    let msg = |w: &World, a: &Actor, c: Command| match w.apply(T, a, c) {
        Ok(o) => panic!("accepted: {:?}", o.events),
        Err(e) => e.to_string(),
    };
    let cases = [
        (
            Actor::user("dan", Role::Dispatcher),
            Command::Advance { batch: "B1".into() },
            "dan (dispatcher) may not advance from apply: allowed roles are project",
        ),
        (
            pat.clone(),
            Command::Resolve {
                batch: "B1".into(),
                note: String::new(),
            },
            "cannot resolve the pause: batch B1 is in stage apply (项目组申请); allowed only in problem_handling",
        ),
        (
            pat.clone(),
            pause(),
            "cannot pause: batch B1 is in stage apply (项目组申请); pausing is allowed in stages 3 (deploy_request) to 13 (accept)",
        ),
        (
            pat.clone(),
            Command::RecordReadiness {
                batch: "B1".into(),
                summary: ReadinessSummary {
                    run_id: "r".into(),
                    finished_at: T,
                    plan_digest: "d".into(),
                    hard_failures: vec![],
                    soft_failures: vec![],
                },
            },
            "pat (project) may not record a readiness sweep: only the controller records it (sweeps and the escalation timer)",
        ),
        (
            pat.clone(),
            Command::Advance { batch: "B 1".into() },
            "invalid batch: \"B 1\" is not an id: use 1 to 64 characters of A-Z a-z 0-9 . _ -",
        ),
        (
            pat.clone(),
            Command::Advance { batch: "B2".into() },
            "batch \"B2\" not found: list batches with `preflight batch list`",
        ),
        (
            Actor::user("aud", Role::Auditor),
            Command::Advance { batch: "B1".into() },
            "aud (auditor) may not advance from apply: allowed roles are project",
        ),
    ];
    for (a, c, want) in cases {
        assert_eq!(msg(&w, &a, c), want);
    }
    let ian = Actor::user("ian", Role::Integrator);
    w.execute(T, &pat, Command::Advance { batch: "B1".into() })
        .expect("apply -> pre_plan");
    w.execute(T, &ian, Command::Advance { batch: "B1".into() })
        .expect("pre_plan -> deploy_request");
    assert_eq!(
        msg(&w, &pat, Command::Advance { batch: "B1".into() }),
        "batch B1 cannot leave deploy_request: project_approved needs the project approved (立项) with a budget, or an exception record (approver and reference) (missing: project P1 has neither approval with budget nor an exception record)"
    );
    w.execute(T, &pat, pause()).expect("pause");
    assert_eq!(
        msg(&w, &Actor::System, Command::Escalate { batch: "B1".into() }),
        "batch B1 is not due for escalation: its pause is escalated only after 2026-07-04T09:00:00Z"
    );
}

#[test]
fn json_shapes() {
    let (w, _) = setup();
    let ev = serde_json::to_value(&w.history[1]).expect("event json");
    assert_eq!(
        ev,
        serde_json::json!({
            "seq": 1,
            "at": 1_781_859_600_000_i64,
            "by": {"kind": "user", "name": "pat", "role": "project"},
            "batch": "B1",
            "project": "P1",
            "from": null,
            "to": "apply",
            "why": "batch B1 applied for by project P1",
            "kind": {"kind": "batch_created", "business_line": "gov", "title": "t"}
        })
    );
    let cmd: Command = serde_json::from_str(
        r#"{"command":"pause","batch":"B1","reason":"network_ports","text":"x","party":"customer"}"#,
    )
    .expect("command json");
    assert_eq!(
        cmd,
        Command::Pause {
            batch: "B1".into(),
            reason: PauseReason::NetworkPorts,
            text: "x".into(),
            party: Some(Party::Customer),
        }
    );
}
