//! Unit tests of the workflow: transitions, refusals, gates, queue, escalation, statistics.

use super::*;
use crate::role::Role;

/// 2026-06-01T00:00:00Z.
const JUNE_1: i64 = 1_780_272_000_000;

/// A time in June 2026 (UTC).
fn june(day: i64, hour: i64, minute: i64) -> Timestamp {
    Timestamp(JUNE_1 + (day - 1) * DAY_MS + hour * 3_600_000 + minute * 60_000)
}

fn name_of(role: Role) -> &'static str {
    match role {
        Role::Admin => "adm",
        Role::Dispatcher => "dan",
        Role::Project => "pat",
        Role::Integrator => "ian",
        Role::Deployer => "amy",
        Role::PerfChecker => "pete",
        Role::Reviewer => "rita",
        Role::DeliveryLead => "lee",
        Role::Gd => "gina",
        Role::Auditor => "aud",
    }
}

fn user(role: Role) -> Actor {
    Actor::user(name_of(role), role)
}

/// The actor of `role` for batch `id`: a deployer acts as the batch's deployer.
fn actor_for(w: &World, id: &str, role: Role) -> Actor {
    match (role, w.batch(id).and_then(|b| b.deployer.clone())) {
        (Role::Deployer, Some(d)) => Actor::user(d, role),
        _ => user(role),
    }
}

#[track_caller]
fn ok(w: &mut World, now: Timestamp, actor: &Actor, cmd: Command) -> Vec<Event> {
    match w.execute(now, actor, cmd.clone()) {
        Ok(evs) => evs,
        Err(e) => panic!("{cmd:?} by {actor} refused: {e}"),
    }
}

#[track_caller]
fn refused(w: &World, now: Timestamp, actor: &Actor, cmd: Command) -> Refusal {
    match w.apply(now, actor, cmd.clone()) {
        Ok(o) => panic!("{cmd:?} by {actor} was accepted: {:?}", o.events),
        Err(e) => e,
    }
}

fn stage(w: &World, id: &str) -> Stage {
    w.batch(id).map(|b| b.stage).expect("batch exists")
}

fn plan() -> PlanFacts {
    PlanFacts {
        digest: "plan-d1".into(),
        hosts: vec!["10.0.0.5".into(), "10.0.0.6".into()],
        incomplete: vec![],
        incomplete_zh: vec![],
    }
}

fn readiness(finished_at: Timestamp, hard: Vec<CheckFailure>) -> ReadinessSummary {
    ReadinessSummary {
        run_id: "run-1".into(),
        finished_at,
        plan_digest: "plan-d1".into(),
        hard_failures: hard,
        soft_failures: vec![],
    }
}

fn failure(check: &str, reason: PauseReason, party: Party) -> CheckFailure {
    CheckFailure {
        check: check.into(),
        detail: format!("{check} failed"),
        reason,
        party,
    }
}

fn host_ok() -> HostHardening {
    HostHardening {
        baseline_applied: true,
        all_compliant: true,
        verified_after_last_change: true,
        firewall_covers_planned_ports: true,
        noncompliant: vec![],
        firewall_missing_ports: vec![],
    }
}

fn hardening(at: Timestamp, h: HostHardening) -> HardeningSummary {
    HardeningSummary {
        recorded_at: at,
        hosts: plan().hosts.into_iter().map(|x| (x, h.clone())).collect(),
    }
}

/// A world with approved project P1 (line `gov`), restricted-able project P2 and deployers.
fn world(deployers: &[&str]) -> World {
    let mut w = World::new(WorkflowConfig::default());
    let t = june(1, 8, 0);
    for d in deployers {
        ok(
            &mut w,
            t,
            &user(Role::Admin),
            Command::AddDeployer {
                name: d.to_string(),
            },
        );
    }
    for (id, line) in [("P1", "gov"), ("P2", "trading")] {
        ok(
            &mut w,
            t,
            &user(Role::Admin),
            Command::CreateProject {
                id: id.into(),
                name: format!("project {id}"),
                business_line: line.into(),
                approval: Approval::Approved {
                    budget: "B-2026-7".into(),
                },
            },
        );
    }
    w
}

fn create(w: &mut World, id: &str, project: &str, now: Timestamp) {
    ok(
        w,
        now,
        &user(Role::Project),
        Command::CreateBatch {
            id: id.into(),
            project: project.into(),
            business_line: None,
            title: format!("batch {id}"),
        },
    );
}

/// Record the facts needed to leave the batch's current stage (without leaving it).
fn prepare(w: &mut World, id: &str, now: Timestamp, deployer: &str) {
    let b = id.to_string();
    match stage(w, id) {
        Stage::Plan => {
            ok(
                w,
                now,
                &user(Role::Integrator),
                Command::AttachPlan {
                    batch: b,
                    plan: plan(),
                },
            );
        }
        Stage::ConfirmPlan => {
            ok(
                w,
                now,
                &user(Role::Project),
                Command::ConfirmPlan { batch: b.clone() },
            );
            ok(
                w,
                now,
                &Actor::System,
                Command::RecordReadiness {
                    batch: b,
                    summary: readiness(now, vec![]),
                },
            );
        }
        Stage::Assign => {
            ok(
                w,
                now,
                &user(Role::Dispatcher),
                Command::Assign {
                    batch: b,
                    deployer: Some(deployer.into()),
                },
            );
        }
        Stage::Deploy | Stage::Harden => {
            ok(
                w,
                now,
                &Actor::System,
                Command::RecordHardening {
                    batch: b,
                    summary: hardening(now, host_ok()),
                },
            );
        }
        Stage::EnvCheck => {
            ok(
                w,
                now,
                &Actor::System,
                Command::RecordPerf {
                    batch: b,
                    summary: PerfSummary {
                        run_id: "perf-1".into(),
                        finished_at: now,
                        shortfalls: vec![],
                    },
                },
            );
        }
        Stage::RiskUpload => {
            let risks = w
                .batch(id)
                .map(|x| x.risks.iter().map(|r| r.id).collect())
                .unwrap_or_default();
            ok(
                w,
                now,
                &user(Role::Project),
                Command::FileRisks {
                    batch: b,
                    risks,
                    document: "filing-1.pdf".into(),
                },
            );
        }
        Stage::Accept => {
            ok(
                w,
                now,
                &user(Role::Project),
                Command::RecordAcceptance {
                    batch: b,
                    rating: 5,
                    comment: "works".into(),
                },
            );
        }
        _ => {}
    }
}

/// The command that leaves a numbered stage once prepared.
fn exit_cmd(s: Stage, id: &str) -> Command {
    match s {
        Stage::RiskReview => Command::ReviewFiling {
            batch: id.into(),
            approve: true,
            note: "fine".into(),
        },
        _ => Command::Advance { batch: id.into() },
    }
}

/// Drive a batch forward to `target` through every gate.
fn drive_to(w: &mut World, id: &str, target: Stage, now: Timestamp, deployer: &str) {
    let mut guard = 0;
    while stage(w, id) != target {
        guard += 1;
        assert!(guard < 20, "cannot reach {target}");
        let s = stage(w, id);
        prepare(w, id, now, deployer);
        let role = s.advance_roles()[0];
        let actor = actor_for(w, id, role);
        ok(w, now, &actor, exit_cmd(s, id));
    }
}

/// Every allowed forward transition, with every allowed role.
#[test]
fn every_forward_transition_with_every_allowed_role() {
    use Stage::*;
    let table: &[(Stage, Role, Stage)] = &[
        (Apply, Role::Project, PrePlan),
        (PrePlan, Role::Integrator, DeployRequest),
        (DeployRequest, Role::Project, Plan),
        (Plan, Role::Integrator, ConfirmPlan),
        (ConfirmPlan, Role::Project, Assign),
        (Assign, Role::Dispatcher, Deploy),
        (Assign, Role::Deployer, Deploy),
        (Deploy, Role::Deployer, Integrate),
        (Integrate, Role::Integrator, Harden),
        (Harden, Role::Integrator, EnvCheck),
        (Harden, Role::Deployer, EnvCheck),
        (EnvCheck, Role::PerfChecker, RiskUpload),
        (RiskUpload, Role::Project, RiskReview),
        (RiskReview, Role::Reviewer, Accept),
        (Accept, Role::Project, Archive),
        (Archive, Role::Admin, Done),
    ];
    for (from, role, to) in table {
        let mut w = world(&["amy"]);
        let t = june(2, 9, 0);
        create(&mut w, "B1", "P1", t);
        drive_to(&mut w, "B1", *from, t, "amy");
        prepare(&mut w, "B1", t, "amy");
        let before = w.history.len();
        let actor = actor_for(&w, "B1", *role);
        let evs = ok(&mut w, t, &actor, exit_cmd(*from, "B1"));
        assert_eq!(stage(&w, "B1"), *to, "{from} by {role}");
        let last = evs.last().expect("an event");
        assert_eq!((last.from, last.to), (Some(*from), Some(*to)));
        assert_eq!(last.by, actor);
        assert_eq!(last.at, t);
        assert!(!last.why.is_empty());
        assert_eq!(w.history.len(), before + evs.len());
        // Every allowed role of the table is the stage's advance roles, and nobody else may.
        for other in Role::ALL {
            if from.advance_roles().contains(&other) {
                continue;
            }
            let mut w2 = world(&["amy"]);
            create(&mut w2, "B1", "P1", t);
            drive_to(&mut w2, "B1", *from, t, "amy");
            prepare(&mut w2, "B1", t, "amy");
            let e = refused(&w2, t, &actor_for(&w2, "B1", other), exit_cmd(*from, "B1"));
            assert_eq!(
                e.kind(),
                RefusalKind::PermissionDenied,
                "{from} by {other}: {e}"
            );
        }
    }
}

/// Pause, resolve, terminate, GD decisions, escalation: every side transition.
#[test]
fn every_side_transition() {
    let t0 = june(2, 9, 0);
    for s in Stage::ALL.into_iter().filter(|s| s.pausable()) {
        let mut w = world(&["amy"]);
        create(&mut w, "B1", "P1", t0);
        drive_to(&mut w, "B1", s, t0, "amy");
        // Any participant may pause; check a few different ones.
        let pauser = [Role::Deployer, Role::Integrator, Role::Gd, Role::Dispatcher]
            [s.number().unwrap_or(0) as usize % 4];
        let pauser = actor_for(&w, "B1", pauser);
        let evs = ok(
            &mut w,
            t0,
            &pauser,
            Command::Pause {
                batch: "B1".into(),
                reason: PauseReason::NetworkPorts,
                text: "nginx cannot reach the SOA nodes".into(),
                party: None,
            },
        );
        assert_eq!(
            (evs[0].from, evs[0].to),
            (Some(s), Some(Stage::ProblemHandling))
        );
        let p = w.batch("B1").and_then(|b| b.pause.clone()).expect("pause");
        assert_eq!((p.stage, p.party, &p.by), (s, Party::Project, &pauser));
        // resolve: back to the stage and the person who paused.
        let t1 = t0.plus_ms(DAY_MS);
        ok(
            &mut w,
            t1,
            &user(Role::Project),
            Command::Resolve {
                batch: "B1".into(),
                note: "ports opened".into(),
            },
        );
        let b = w.batch("B1").expect("batch");
        assert_eq!(b.stage, s);
        assert_eq!(b.holder.as_deref(), Some(pauser.name()));
        assert!(b.pause.is_none());
        // terminate -> gd_confirm -> GD confirms reason -> problem_handling
        // -> escalate after 15 days -> gd_confirm -> GD confirms termination -> terminated.
        ok(
            &mut w,
            t1,
            &user(Role::Deployer),
            Command::Pause {
                batch: "B1".into(),
                reason: PauseReason::SiteBusy,
                text: "nobody on site".into(),
                party: Some(Party::Customer),
            },
        )
        .len();
        ok(
            &mut w,
            t1,
            &user(Role::Project),
            Command::Terminate {
                batch: "B1".into(),
                reason: "customer cancelled".into(),
            },
        );
        assert_eq!(stage(&w, "B1"), Stage::GdConfirm);
        let t2 = t1.plus_ms(DAY_MS);
        ok(
            &mut w,
            t2,
            &user(Role::Gd),
            Command::GdConfirm {
                batch: "B1".into(),
                decision: GdDecision::ConfirmReason,
                note: "not cancelled after all".into(),
            },
        );
        assert_eq!(stage(&w, "B1"), Stage::ProblemHandling);
        let t3 = t2.plus_ms(ESCALATE_AFTER_MS + SECOND_MS);
        let due = w.escalate_due(t3);
        assert_eq!(due.len(), 1);
        for c in due {
            ok(&mut w, t3, &Actor::System, c);
        }
        assert_eq!(stage(&w, "B1"), Stage::GdConfirm);
        ok(
            &mut w,
            t3,
            &user(Role::Gd),
            Command::GdConfirm {
                batch: "B1".into(),
                decision: GdDecision::ConfirmTermination,
                note: "terminated".into(),
            },
        );
        assert_eq!(stage(&w, "B1"), Stage::Terminated);
        let replayed = World::replay(w.config.clone(), w.history.clone()).expect("replay");
        assert_eq!(replayed, w);
    }
}

#[test]
fn reviewer_rejection_returns_to_risk_upload() {
    let t = june(2, 9, 0);
    let mut w = world(&["amy"]);
    create(&mut w, "B1", "P1", t);
    drive_to(&mut w, "B1", Stage::RiskReview, t, "amy");
    ok(
        &mut w,
        t,
        &user(Role::Reviewer),
        Command::ReviewFiling {
            batch: "B1".into(),
            approve: false,
            note: "missing the disk risk".into(),
        },
    );
    assert_eq!(stage(&w, "B1"), Stage::RiskUpload);
    let e = refused(
        &w,
        t,
        &user(Role::Project),
        Command::Advance { batch: "B1".into() },
    );
    assert!(matches!(e, Refusal::GateUnmet { .. }), "{e}");
    assert!(e.to_string().contains("rejected"), "{e}");
    drive_to(&mut w, "B1", Stage::Done, t, "amy");
}

#[test]
fn refusals_name_what_is_allowed() {
    let t = june(2, 9, 0);
    let mut w = world(&["amy", "bob"]);
    create(&mut w, "B1", "P1", t);
    drive_to(&mut w, "B1", Stage::Plan, t, "amy");

    // Wrong role: permission, naming the allowed role.
    let e = refused(
        &w,
        t,
        &user(Role::Project),
        Command::Advance { batch: "B1".into() },
    );
    assert_eq!(e.kind(), RefusalKind::PermissionDenied);
    assert!(
        matches!(&e, Refusal::Permission { allowed, .. } if allowed == &vec![Role::Integrator])
    );
    assert!(
        e.to_string().contains("allowed roles are integrator"),
        "{e}"
    );

    // Admin is not an override.
    let e = refused(
        &w,
        t,
        &user(Role::Admin),
        Command::Advance { batch: "B1".into() },
    );
    assert_eq!(e.kind(), RefusalKind::PermissionDenied, "{e}");

    // Gate unmet: no plan yet.
    let e = refused(
        &w,
        t,
        &user(Role::Integrator),
        Command::Advance { batch: "B1".into() },
    );
    assert_eq!(e.kind(), RefusalKind::FailedPrecondition);
    assert!(e.to_string().contains("plan_complete"), "{e}");
    assert!(e.to_string().contains("no plan attached"), "{e}");

    // Wrong stage.
    let e = refused(
        &w,
        t,
        &user(Role::Project),
        Command::Resolve {
            batch: "B1".into(),
            note: String::new(),
        },
    );
    assert!(
        matches!(&e, Refusal::WrongStage { stage: Stage::Plan, allowed, .. } if allowed == &vec![Stage::ProblemHandling])
    );
    assert_eq!(e.kind(), RefusalKind::FailedPrecondition);
    assert!(e.to_string().contains("problem_handling"), "{e}");
    let e = refused(
        &w,
        t,
        &user(Role::Dispatcher),
        Command::Assign {
            batch: "B1".into(),
            deployer: None,
        },
    );
    assert!(matches!(e, Refusal::WrongStage { .. }), "{e}");

    // Pausing outside stages 3..=13.
    create(&mut w, "B2", "P1", t);
    let e = refused(
        &w,
        t,
        &user(Role::Project),
        Command::Pause {
            batch: "B2".into(),
            reason: PauseReason::Other,
            text: "x".into(),
            party: None,
        },
    );
    assert!(matches!(e, Refusal::WrongStage { .. }), "{e}");
    assert!(e.to_string().contains("stages 3"), "{e}");

    // Sweep facts only from the controller.
    let e = refused(
        &w,
        t,
        &user(Role::Integrator),
        Command::RecordReadiness {
            batch: "B1".into(),
            summary: readiness(t, vec![]),
        },
    );
    assert!(matches!(e, Refusal::SystemOnly { .. }), "{e}");
    assert_eq!(e.kind(), RefusalKind::PermissionDenied);
    let e = refused(
        &w,
        t,
        &Actor::System,
        Command::Advance { batch: "B1".into() },
    );
    assert_eq!(e.kind(), RefusalKind::PermissionDenied, "{e}");

    // Input validation and unknown ids.
    let e = refused(
        &w,
        t,
        &user(Role::Integrator),
        Command::Advance {
            batch: "b 1".into(),
        },
    );
    assert_eq!(e.kind(), RefusalKind::InvalidArgument, "{e}");
    let e = refused(
        &w,
        t,
        &user(Role::Integrator),
        Command::Advance { batch: "B9".into() },
    );
    assert_eq!(e.kind(), RefusalKind::NotFound, "{e}");
    let e = refused(
        &w,
        t,
        &user(Role::Project),
        Command::CreateBatch {
            id: "B1".into(),
            project: "P1".into(),
            business_line: None,
            title: String::new(),
        },
    );
    assert_eq!(e.kind(), RefusalKind::AlreadyExists, "{e}");
}

#[test]
fn auditor_changes_nothing() {
    let t = june(2, 9, 0);
    let mut w = world(&["amy"]);
    create(&mut w, "B1", "P1", t);
    drive_to(&mut w, "B1", Stage::Assign, t, "amy");
    let aud = user(Role::Auditor);
    let cmds = vec![
        Command::AddDeployer { name: "zed".into() },
        Command::CreateProject {
            id: "P9".into(),
            name: "p".into(),
            business_line: "l".into(),
            approval: Approval::Pending,
        },
        Command::CreateBatch {
            id: "B9".into(),
            project: "P1".into(),
            business_line: None,
            title: String::new(),
        },
        Command::Advance { batch: "B1".into() },
        Command::Assign {
            batch: "B1".into(),
            deployer: None,
        },
        Command::Pause {
            batch: "B1".into(),
            reason: PauseReason::Other,
            text: "x".into(),
            party: None,
        },
        Command::AddRisk {
            batch: "B1".into(),
            text: "x".into(),
            source: None,
        },
        Command::JumpQueue {
            batch: "B1".into(),
            position: 1,
            reason: "x".into(),
        },
    ];
    for c in cmds {
        let e = refused(&w, t, &aud, c);
        assert_eq!(e.kind(), RefusalKind::PermissionDenied, "{e}");
    }
}

#[test]
fn gates_explain_what_is_missing() {
    let t = june(2, 9, 0);
    let mut w = world(&["amy"]);
    ok(
        &mut w,
        t,
        &user(Role::Admin),
        Command::CreateProject {
            id: "P3".into(),
            name: "unapproved".into(),
            business_line: "gov".into(),
            approval: Approval::Pending,
        },
    );
    create(&mut w, "B1", "P3", t);
    drive_to(&mut w, "B1", Stage::DeployRequest, t, "amy");
    let e = refused(
        &w,
        t,
        &user(Role::Project),
        Command::Advance { batch: "B1".into() },
    );
    assert!(e.to_string().contains("project_approved"), "{e}");
    ok(
        &mut w,
        t,
        &user(Role::DeliveryLead),
        Command::SetApproval {
            project: "P3".into(),
            approval: Approval::Exception {
                approver: "director wang".into(),
                reference: "EX-12".into(),
            },
        },
    );
    drive_to(&mut w, "B1", Stage::ConfirmPlan, t, "amy");

    // confirm_plan: confirmation, fresh readiness, soft failures as risks.
    let b = w.batch("B1").expect("batch").clone();
    let unmet: Vec<GateId> = w
        .gates(&b, t)
        .into_iter()
        .filter(|g| !g.met)
        .map(|g| g.gate)
        .collect();
    assert_eq!(
        unmet,
        vec![
            GateId::PlanConfirmed,
            GateId::ReadinessFresh,
            GateId::NoHardFailures
        ]
    );
    ok(
        &mut w,
        t,
        &user(Role::Project),
        Command::ConfirmPlan { batch: "B1".into() },
    );
    let mut r = readiness(t, vec![]);
    r.soft_failures = vec![failure(
        "disk.10.0.0.5:/data",
        PauseReason::DiskPerformance,
        Party::Customer,
    )];
    ok(
        &mut w,
        t,
        &Actor::System,
        Command::RecordReadiness {
            batch: "B1".into(),
            summary: r,
        },
    );
    let e = refused(
        &w,
        t,
        &user(Role::Project),
        Command::Advance { batch: "B1".into() },
    );
    assert!(e.to_string().contains("disk.10.0.0.5:/data"), "{e}");
    // A source that names no recorded finding is refused, naming the ones that exist.
    let e = refused(
        &w,
        t,
        &user(Role::Integrator),
        Command::AddRisk {
            batch: "B1".into(),
            text: "slow disk".into(),
            source: Some("disk.10.0.0.9:/data".into()),
        },
    );
    let msg = e.to_string();
    assert!(
        msg.contains("--source disk.10.0.0.9:/data matches no finding")
            && msg.contains("the recorded findings are: disk.10.0.0.5:/data"),
        "{msg}"
    );
    ok(
        &mut w,
        t,
        &user(Role::Integrator),
        Command::AddRisk {
            batch: "B1".into(),
            text: "slow disk".into(),
            source: Some("disk.10.0.0.5:/data".into()),
        },
    );
    // Too old a report: max age one day.
    let late = t.plus_ms(DAY_MS + SECOND_MS);
    let e = refused(
        &w,
        late,
        &user(Role::Project),
        Command::Advance { batch: "B1".into() },
    );
    assert!(e.to_string().contains("readiness_fresh"), "{e}");
    ok(
        &mut w,
        t,
        &user(Role::Project),
        Command::Advance { batch: "B1".into() },
    );

    // A new plan needs a new confirmation.
    drive_to(&mut w, "B1", Stage::Deploy, t, "amy");
    // deploy: baseline hardening on every planned host.
    let mut partial = hardening(t, host_ok());
    partial.hosts.remove("10.0.0.6");
    ok(
        &mut w,
        t,
        &Actor::System,
        Command::RecordHardening {
            batch: "B1".into(),
            summary: partial,
        },
    );
    let e = refused(
        &w,
        t,
        &actor_for(&w, "B1", Role::Deployer),
        Command::Advance { batch: "B1".into() },
    );
    assert!(
        e.to_string().contains("10.0.0.6: no hardening evidence"),
        "{e}"
    );
    // Another deployer may not act on amy's batch.
    let e = refused(
        &w,
        t,
        &Actor::user("bob", Role::Deployer),
        Command::Advance { batch: "B1".into() },
    );
    assert!(matches!(e, Refusal::NotAssignee { .. }), "{e}");
    assert!(e.to_string().contains("amy"), "{e}");

    drive_to(&mut w, "B1", Stage::Harden, t, "amy");
    let bad = HostHardening {
        all_compliant: false,
        verified_after_last_change: false,
        noncompliant: vec!["ssh.permit_root_login".into()],
        ..host_ok()
    };
    ok(
        &mut w,
        t,
        &Actor::System,
        Command::RecordHardening {
            batch: "B1".into(),
            summary: hardening(t, bad.clone()),
        },
    );
    let e = refused(
        &w,
        t,
        &user(Role::Integrator),
        Command::Advance { batch: "B1".into() },
    );
    let msg = e.to_string();
    assert!(
        msg.contains("ssh.permit_root_login") && msg.contains("not verified"),
        "{msg}"
    );
    // A firewall that lacks planned ports is refused with the ports named.
    let fw = HostHardening {
        firewall_covers_planned_ports: false,
        firewall_missing_ports: vec!["8080/tcp".into(), "9100/udp".into()],
        ..host_ok()
    };
    ok(
        &mut w,
        t,
        &Actor::System,
        Command::RecordHardening {
            batch: "B1".into(),
            summary: hardening(t, fw),
        },
    );
    let msg = refused(
        &w,
        t,
        &user(Role::Integrator),
        Command::Advance { batch: "B1".into() },
    )
    .to_string();
    assert!(
        msg.contains("firewall allow-list lacks planned ports 8080/tcp, 9100/udp"),
        "{msg}"
    );

    // A host that has not passed harden never reaches accept: the review re-checks hardening.
    drive_to(&mut w, "B1", Stage::RiskReview, t, "amy");
    ok(
        &mut w,
        t,
        &Actor::System,
        Command::RecordHardening {
            batch: "B1".into(),
            summary: hardening(t, bad),
        },
    );
    let e = refused(
        &w,
        t,
        &user(Role::Reviewer),
        exit_cmd(Stage::RiskReview, "B1"),
    );
    assert!(e.to_string().contains("hardening_compliant"), "{e}");
    assert_eq!(stage(&w, "B1"), Stage::RiskReview);
}

#[test]
fn readiness_hard_failure_pauses_from_confirm_plan_on() {
    let t = june(2, 9, 0);
    let mut w = world(&["amy"]);
    create(&mut w, "B1", "P1", t);
    drive_to(&mut w, "B1", Stage::Plan, t, "amy");
    ok(
        &mut w,
        t,
        &user(Role::Integrator),
        Command::AttachPlan {
            batch: "B1".into(),
            plan: plan(),
        },
    );
    let hard = vec![
        failure(
            "ports.10.0.0.5->10.0.0.6:8080",
            PauseReason::NetworkPorts,
            Party::Customer,
        ),
        failure("package.db_backup", PauseReason::Package, Party::Project),
    ];
    // In plan (before confirm_plan): recorded, not paused.
    ok(
        &mut w,
        t,
        &Actor::System,
        Command::RecordReadiness {
            batch: "B1".into(),
            summary: readiness(t, hard.clone()),
        },
    );
    assert_eq!(stage(&w, "B1"), Stage::Plan);
    ok(
        &mut w,
        t,
        &user(Role::Integrator),
        Command::Advance { batch: "B1".into() },
    );
    let evs = ok(
        &mut w,
        t,
        &Actor::System,
        Command::RecordReadiness {
            batch: "B1".into(),
            summary: readiness(t, hard.clone()),
        },
    );
    assert_eq!(evs.len(), 2);
    let b = w.batch("B1").expect("batch");
    assert_eq!(b.stage, Stage::ProblemHandling);
    let p = b.pause.as_ref().expect("pause");
    assert_eq!(
        (p.stage, p.reason, p.party),
        (
            Stage::ConfirmPlan,
            PauseReason::NetworkPorts,
            Party::Customer
        )
    );
    assert_eq!(p.items, hard);
    assert!(p.text.contains("package.db_backup [project]"), "{}", p.text);
    assert_eq!(p.by, Actor::System);
}

#[test]
fn worked_queue_example_of_workflow_md() {
    let mut w = world(&["amy"]);
    let ids = ["A", "B", "C", "D", "E", "F", "H"];
    for id in ids {
        create(&mut w, id, "P1", june(16, 9, 0));
        drive_to(&mut w, id, Stage::Assign, june(16, 9, 0), "amy");
    }
    let assign = |w: &mut World, id: &str, t: Timestamp| {
        ok(
            w,
            t,
            &user(Role::Dispatcher),
            Command::Assign {
                batch: id.into(),
                deployer: Some("amy".into()),
            },
        );
    };
    let start = |w: &mut World, id: &str, t: Timestamp| {
        ok(
            w,
            t,
            &Actor::user("amy", Role::Deployer),
            Command::Advance { batch: id.into() },
        );
    };
    let pause = |w: &mut World, id: &str, t: Timestamp| {
        ok(
            w,
            t,
            &Actor::user("amy", Role::Deployer),
            Command::Pause {
                batch: id.into(),
                reason: PauseReason::Package,
                text: "database backup files missing".into(),
                party: None,
            },
        );
    };
    for (i, id) in ["A", "B", "C", "D", "E", "F"].iter().enumerate() {
        assign(&mut w, id, june(17, 8, i as i64));
    }
    start(&mut w, "A", june(17, 9, 0));
    start(&mut w, "B", june(17, 10, 0));
    pause(&mut w, "C", june(18, 8, 0));
    pause(&mut w, "D", june(18, 9, 0));
    let order = |w: &World| -> String {
        w.queue("amy")
            .iter()
            .map(|e| e.batch.as_str())
            .collect::<Vec<_>>()
            .join("-")
    };
    assert_eq!(order(&w), "A-B-E-F-C-D");
    // A finishes on 18 June.
    prepare(&mut w, "A", june(18, 17, 0), "amy");
    start(&mut w, "A", june(18, 17, 0));
    assert_eq!(stage(&w, "A"), Stage::Integrate);
    assert_eq!(order(&w), "B-E-F-C-D");
    // 19 June 08:30 H is queued; 09:00 D's pause is resolved.
    assign(&mut w, "H", june(19, 8, 30));
    ok(
        &mut w,
        june(19, 9, 0),
        &user(Role::Project),
        Command::Resolve {
            batch: "D".into(),
            note: "backup files uploaded".into(),
        },
    );
    assert_eq!(order(&w), "B-E-F-H-D-C");
    let q = w.queue("amy");
    let classes: Vec<QueueClass> = q.iter().map(|e| e.class).collect();
    use QueueClass::*;
    assert_eq!(
        classes,
        vec![Deploying, Queued, Queued, Queued, Queued, Paused]
    );
    assert!(satisfies_three_class_rule(&q));
    assert_eq!(q[4].since, june(19, 9, 0));
    let v = w.batch_view("D", june(19, 9, 1)).expect("view of D");
    assert_eq!(
        v.queue.map(|e| (e.position, e.class)),
        Some((5, QueueClass::Queued))
    );
    assert_eq!(
        v.gates.iter().map(|g| (g.gate, g.met)).collect::<Vec<_>>(),
        vec![(GateId::DeployerAssigned, true)]
    );
    let held = |id: &str| w.batch(id).map(Batch::held_by);
    assert_eq!(held("B"), Some(Holder::Person("amy".into())));
    assert_eq!(
        held("E"),
        Some(Holder::Roles(vec![Role::Dispatcher, Role::Deployer]))
    );
    assert_eq!(held("C"), Some(Holder::Roles(vec![Role::Project])));
    assert_eq!(held("A"), Some(Holder::Roles(vec![Role::Integrator])));
    // D returns to the deployer who paused it.
    assert_eq!(
        w.batch("D").and_then(|b| b.holder.clone()).as_deref(),
        Some("amy")
    );
}

#[test]
fn resolve_requeues_behind_earlier_batches_and_deploy_restarts() {
    let mut w = world(&["amy"]);
    let t = june(3, 8, 0);
    for id in ["Q1", "Q2", "Q3"] {
        create(&mut w, id, "P1", t);
        drive_to(&mut w, id, Stage::Assign, t, "amy");
    }
    for (i, id) in ["Q1", "Q2", "Q3"].iter().enumerate() {
        ok(
            &mut w,
            june(3, 9, i as i64),
            &user(Role::Dispatcher),
            Command::Assign {
                batch: id.to_string(),
                deployer: None,
            },
        );
    }
    // Q2 starts deploying, is paused, then resolved: back to deploy, but queued at return time.
    let amy = Actor::user("amy", Role::Deployer);
    ok(
        &mut w,
        june(3, 10, 0),
        &amy,
        Command::Advance { batch: "Q2".into() },
    );
    ok(
        &mut w,
        june(3, 11, 0),
        &amy,
        Command::Pause {
            batch: "Q2".into(),
            reason: PauseReason::RemoteAccess,
            text: "VPN down".into(),
            party: Some(Party::Customer),
        },
    );
    ok(
        &mut w,
        june(4, 9, 0),
        &user(Role::Project),
        Command::Resolve {
            batch: "Q2".into(),
            note: "VPN back".into(),
        },
    );
    assert_eq!(stage(&w, "Q2"), Stage::Deploy);
    let order: Vec<_> = w
        .queue("amy")
        .into_iter()
        .map(|e| (e.batch, e.class))
        .collect();
    assert_eq!(
        order,
        vec![
            ("Q1".to_string(), QueueClass::Queued),
            ("Q3".to_string(), QueueClass::Queued),
            ("Q2".to_string(), QueueClass::Queued),
        ]
    );
    prepare(&mut w, "Q2", june(4, 9, 30), "amy");
    let e = refused(
        &w,
        june(4, 9, 30),
        &amy,
        Command::Advance { batch: "Q2".into() },
    );
    assert!(e.to_string().contains("deployment_started"), "{e}");
    ok(
        &mut w,
        june(4, 10, 0),
        &amy,
        Command::StartDeploy { batch: "Q2".into() },
    );
    assert_eq!(w.queue("amy")[0].batch, "Q2");
    assert_eq!(w.queue("amy")[0].class, QueueClass::Deploying);
    let e = refused(
        &w,
        june(4, 10, 0),
        &amy,
        Command::StartDeploy { batch: "Q2".into() },
    );
    assert_eq!(e.kind(), RefusalKind::FailedPrecondition, "{e}");
}

#[test]
fn queue_jump_needs_a_delivery_lead_and_is_in_history() {
    let mut w = world(&["amy"]);
    let t = june(3, 8, 0);
    for (i, id) in ["J1", "J2", "J3", "J4"].iter().enumerate() {
        create(&mut w, id, "P1", t);
        drive_to(&mut w, id, Stage::Assign, t, "amy");
        ok(
            &mut w,
            june(3, 9, i as i64),
            &user(Role::Dispatcher),
            Command::Assign {
                batch: id.to_string(),
                deployer: Some("amy".into()),
            },
        );
    }
    ok(
        &mut w,
        june(3, 10, 0),
        &Actor::user("amy", Role::Deployer),
        Command::Advance { batch: "J1".into() },
    );
    let jump = Command::JumpQueue {
        batch: "J4".into(),
        position: 1,
        reason: "minister's demo on friday".into(),
    };
    let e = refused(&w, june(3, 11, 0), &user(Role::Dispatcher), jump.clone());
    assert!(e.to_string().contains("delivery_lead"), "{e}");
    ok(&mut w, june(3, 11, 0), &user(Role::DeliveryLead), jump);
    let order: Vec<_> = w.queue("amy").into_iter().map(|e| e.batch).collect();
    // Position 1 is taken by the batch being deployed: J4 goes right behind it.
    assert_eq!(order, vec!["J1", "J4", "J2", "J3"]);
    assert!(satisfies_three_class_rule(&w.queue("amy")));
    let ev = w
        .batch_history("J4")
        .find(|e| matches!(e.kind, EventKind::QueueJumped { .. }))
        .expect("jump in history");
    assert!(
        ev.why.contains("approved by lee") && ev.why.contains("minister"),
        "{}",
        ev.why
    );
    // A deploying batch cannot jump.
    let e = refused(
        &w,
        june(3, 12, 0),
        &user(Role::DeliveryLead),
        Command::JumpQueue {
            batch: "J1".into(),
            position: 1,
            reason: "x".into(),
        },
    );
    assert_eq!(e.kind(), RefusalKind::FailedPrecondition, "{e}");
}

#[test]
fn assignment_balances_load_ties_by_name() {
    let mut w = world(&["bob", "amy", "cat"]);
    let t = june(3, 8, 0);
    let mut got = Vec::new();
    let mut why = String::new();
    for i in 0..7 {
        let id = format!("L{i}");
        create(&mut w, &id, if i % 2 == 0 { "P1" } else { "P2" }, t);
        drive_to(&mut w, &id, Stage::Assign, t, "amy");
        why = ok(
            &mut w,
            t.plus_ms(i),
            &user(Role::Dispatcher),
            Command::Assign {
                batch: id.clone(),
                deployer: None,
            },
        )
        .last()
        .map(|e| e.why.clone())
        .unwrap_or_default();
        got.push(
            w.batch(&id)
                .and_then(|b| b.deployer.clone())
                .unwrap_or_default(),
        );
    }
    assert_eq!(got, ["amy", "bob", "cat", "amy", "bob", "cat", "amy"]);
    // The event says whom it chose and why.
    assert_eq!(
        why,
        "assigned to amy: least loaded of 3 deployers (2 batches deploying or queued; ties go by name)"
    );
    // A paused batch does not count as load: pause one of bob's.
    ok(
        &mut w,
        t,
        &user(Role::Dispatcher),
        Command::Pause {
            batch: "L1".into(),
            reason: PauseReason::SiteBusy,
            text: "x".into(),
            party: None,
        },
    );
    assert_eq!(w.load("bob"), 1);
    assert_eq!(w.least_loaded(None).as_deref(), Some("bob"));
    let e = refused(
        &w,
        t,
        &user(Role::Dispatcher),
        Command::Assign {
            batch: "L0".into(),
            deployer: Some("zed".into()),
        },
    );
    assert_eq!(e.kind(), RefusalKind::NotFound, "{e}");
    assert!(
        e.to_string().contains("`preflight deployer add zed`"),
        "{e}"
    );
    // Reassignment moves to the end of the other queue; the same deployer is refused.
    let e = refused(
        &w,
        t,
        &user(Role::Dispatcher),
        Command::Assign {
            batch: "L0".into(),
            deployer: Some("amy".into()),
        },
    );
    assert!(e.to_string().contains("already in amy's queue"), "{e}");
    let later = t.plus_ms(DAY_MS);
    ok(
        &mut w,
        later,
        &user(Role::Dispatcher),
        Command::Assign {
            batch: "L0".into(),
            deployer: Some("cat".into()),
        },
    );
    let q = w.queue("cat");
    assert_eq!(
        q.last().map(|e| (e.batch.as_str(), e.since)),
        Some(("L0", later))
    );
    assert!(w.queue("amy").iter().all(|e| e.batch != "L0"));
}

fn pause_cmd(id: &str) -> Command {
    Command::Pause {
        batch: id.into(),
        reason: PauseReason::Planning,
        text: "IPs differ from the plan".into(),
        party: None,
    }
}

#[test]
fn escalation_boundary_is_strictly_more_than_15_days() {
    let mut w = world(&["amy"]);
    let t = june(2, 9, 0);
    create(&mut w, "B1", "P1", t);
    drive_to(&mut w, "B1", Stage::Plan, t, "amy");
    ok(&mut w, t, &user(Role::Integrator), pause_cmd("B1"));
    let exactly = t.plus_ms(ESCALATE_AFTER_MS);
    assert!(w.escalate_due(exactly).is_empty());
    assert!(w.escalate_due(exactly.plus_ms(-SECOND_MS)).is_empty());
    let e = refused(
        &w,
        exactly,
        &Actor::System,
        Command::Escalate { batch: "B1".into() },
    );
    assert!(
        matches!(e, Refusal::NotDue { due_after, .. } if due_after == exactly),
        "{e}"
    );
    assert_eq!(w.restriction("P1", exactly), None);
    let v = w.batch_view("B1", exactly).expect("view");
    assert_eq!(v.escalates_after, Some(exactly));
    assert_eq!(v.stage_zh, "项目部署问题处理");
    assert_eq!(v.held_by, Holder::Roles(vec![Role::Project]));
    assert_eq!(v.history.len(), w.batch_history("B1").count());
    assert_eq!(v.history.last().map(|e| e.kind.name()), Some("paused"));
    assert!(v.gates.is_empty() && v.queue.is_none());
    assert_eq!(
        w.batch_view("B1", exactly.plus_ms(1))
            .and_then(|v| v.restricted_by)
            .as_deref(),
        Some("B1")
    );
    let after = exactly.plus_ms(SECOND_MS);
    assert_eq!(
        w.escalate_due(after),
        vec![Command::Escalate { batch: "B1".into() }]
    );
    assert_eq!(w.restriction("P1", after).as_deref(), Some("B1"));
    // Only the controller escalates.
    let e = refused(
        &w,
        after,
        &user(Role::Gd),
        Command::Escalate { batch: "B1".into() },
    );
    assert!(matches!(e, Refusal::SystemOnly { .. }), "{e}");
    // A controller down for 20 days escalates on start-up.
    let back = t.plus_ms(20 * DAY_MS);
    for c in w.escalate_due(back) {
        ok(&mut w, back, &Actor::System, c);
    }
    let b = w.batch("B1").expect("batch");
    assert_eq!(b.stage, Stage::GdConfirm);
    assert_eq!(b.pause.as_ref().and_then(|p| p.escalated_at), Some(back));
    assert!(w.escalate_due(back).is_empty());
    // GD confirms the reason: the clock restarts.
    ok(
        &mut w,
        back,
        &user(Role::Gd),
        Command::GdConfirm {
            batch: "B1".into(),
            decision: GdDecision::ConfirmReason,
            note: "customer re-planning".into(),
        },
    );
    assert!(w.escalate_due(back.plus_ms(ESCALATE_AFTER_MS)).is_empty());
    assert_eq!(w.escalate_due(back.plus_ms(ESCALATE_AFTER_MS + 1)).len(), 1);
}

#[test]
fn restriction_blocks_deploy_requests_until_gd_processed() {
    for decision in [GdDecision::ConfirmReason, GdDecision::ConfirmTermination] {
        let mut w = world(&["amy"]);
        let t = june(2, 9, 0);
        create(&mut w, "X", "P1", t);
        drive_to(&mut w, "X", Stage::Plan, t, "amy");
        ok(&mut w, t, &user(Role::Integrator), pause_cmd("X"));
        let later = t.plus_ms(16 * DAY_MS);
        for (id, p) in [("Y", "P1"), ("Z", "P2")] {
            create(&mut w, id, p, later);
            drive_to(&mut w, id, Stage::DeployRequest, later, "amy");
        }
        // Even before the timer ran, the request is refused, naming the blocking batch.
        let e = refused(
            &w,
            later,
            &user(Role::Project),
            Command::Advance { batch: "Y".into() },
        );
        assert!(
            matches!(&e, Refusal::Restricted { blocking, .. } if blocking == "X"),
            "{e}"
        );
        assert!(e.to_string().contains("batch X"), "{e}");
        assert_eq!(e.kind(), RefusalKind::FailedPrecondition);
        let y = w.batch("Y").expect("Y").clone();
        assert!(w
            .gates(&y, later)
            .iter()
            .any(|g| g.gate == GateId::ProjectNotRestricted && !g.met));
        // Other projects are not affected.
        ok(
            &mut w,
            later,
            &user(Role::Project),
            Command::Advance { batch: "Z".into() },
        );
        for c in w.escalate_due(later) {
            ok(&mut w, later, &Actor::System, c);
        }
        let e = refused(
            &w,
            later,
            &user(Role::Project),
            Command::Advance { batch: "Y".into() },
        );
        assert!(matches!(e, Refusal::Restricted { .. }), "{e}");
        ok(
            &mut w,
            later,
            &user(Role::Gd),
            Command::GdConfirm {
                batch: "X".into(),
                decision,
                note: "processed".into(),
            },
        );
        ok(
            &mut w,
            later,
            &user(Role::Project),
            Command::Advance { batch: "Y".into() },
        );
        assert_eq!(stage(&w, "Y"), Stage::Plan);
    }
}

#[test]
fn terminated_and_done_batches_never_move() {
    let mut w = world(&["amy"]);
    let t = june(2, 9, 0);
    create(&mut w, "T", "P1", t);
    drive_to(&mut w, "T", Stage::Assign, t, "amy");
    ok(&mut w, t, &user(Role::Project), pause_cmd("T"));
    ok(
        &mut w,
        t,
        &user(Role::Project),
        Command::Terminate {
            batch: "T".into(),
            reason: "cancelled".into(),
        },
    );
    ok(
        &mut w,
        t,
        &user(Role::Gd),
        Command::GdConfirm {
            batch: "T".into(),
            decision: GdDecision::ConfirmTermination,
            note: "ok".into(),
        },
    );
    create(&mut w, "D", "P1", t);
    drive_to(&mut w, "D", Stage::Done, t, "amy");
    let later = t.plus_ms(30 * DAY_MS);
    for id in ["T", "D"] {
        let cmds = vec![
            Command::Advance { batch: id.into() },
            pause_cmd(id),
            Command::Resolve {
                batch: id.into(),
                note: String::new(),
            },
            Command::Terminate {
                batch: id.into(),
                reason: "x".into(),
            },
            Command::GdConfirm {
                batch: id.into(),
                decision: GdDecision::ConfirmReason,
                note: String::new(),
            },
            Command::Escalate { batch: id.into() },
            Command::StartDeploy { batch: id.into() },
            Command::Assign {
                batch: id.into(),
                deployer: None,
            },
            Command::AddRisk {
                batch: id.into(),
                text: "x".into(),
                source: None,
            },
            Command::RecordReadiness {
                batch: id.into(),
                summary: readiness(later, vec![]),
            },
        ];
        for c in cmds {
            for actor in Role::ALL.into_iter().map(user).chain([Actor::System]) {
                let e = refused(&w, later, &actor, c.clone());
                if actor.role() == Some(Role::Auditor) {
                    assert_eq!(e.kind(), RefusalKind::PermissionDenied, "{e}");
                } else {
                    assert!(matches!(e, Refusal::Final { .. }), "{e}");
                    assert_eq!(e.kind(), RefusalKind::FailedPrecondition);
                }
            }
        }
        assert!(w.escalate_due(later).is_empty());
    }
    assert!(w.queue("amy").is_empty());
    // Restriction is lifted by termination.
    assert_eq!(w.restriction("P1", later), None);
}

#[test]
fn pause_statistics_group_count_total_and_median() {
    let mut w = world(&["amy"]);
    let t = june(2, 0, 0);
    for (i, (id, days, reason, party)) in [
        ("S1", 1, PauseReason::Package, Party::Project),
        ("S2", 3, PauseReason::Package, Party::Project),
        ("S3", 10, PauseReason::Package, Party::Customer),
        ("S4", 4, PauseReason::NetworkPorts, Party::Customer),
    ]
    .into_iter()
    .enumerate()
    {
        let project = if i == 3 { "P2" } else { "P1" };
        create(&mut w, id, project, t);
        drive_to(&mut w, id, Stage::DeployRequest, t, "amy");
        ok(
            &mut w,
            t,
            &user(Role::Integrator),
            Command::Pause {
                batch: id.into(),
                reason,
                text: "x".into(),
                party: Some(party),
            },
        );
        if id != "S4" {
            ok(
                &mut w,
                t.plus_ms(days * DAY_MS),
                &user(Role::Project),
                Command::Resolve {
                    batch: id.into(),
                    note: String::new(),
                },
            );
        }
    }
    let now = t.plus_ms(4 * DAY_MS);
    let rows = w.pause_stats(StatsKey::Reason, None, now);
    assert_eq!(
        rows,
        vec![
            PauseStatsRow {
                key: "network_ports".into(),
                count: 1,
                total_days: 4.0,
                median_days: 4.0
            },
            PauseStatsRow {
                key: "package".into(),
                count: 3,
                total_days: 14.0,
                median_days: 3.0
            },
        ]
    );
    let rows = w.pause_stats(StatsKey::Party, None, now);
    let customer = rows
        .iter()
        .find(|r| r.key == "customer")
        .expect("customer row");
    assert_eq!(
        (customer.count, customer.total_days, customer.median_days),
        (2, 14.0, 7.0)
    );
    let rows = w.pause_stats(StatsKey::Line, None, now);
    assert_eq!(
        rows.iter()
            .map(|r| (r.key.as_str(), r.count))
            .collect::<Vec<_>>(),
        vec![("gov", 3), ("trading", 1)]
    );
    let rows = w.pause_stats(StatsKey::Project, Some(t.plus_ms(1)), now);
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!("line".parse::<StatsKey>(), Ok(StatsKey::Line));
    assert!("day"
        .parse::<StatsKey>()
        .unwrap_err()
        .to_string()
        .contains("reason, party"));
}

#[test]
fn replay_reproduces_state_and_detects_tampering() {
    let mut w = world(&["amy", "bob"]);
    let t = june(2, 9, 0);
    create(&mut w, "R1", "P1", t);
    drive_to(&mut w, "R1", Stage::Done, t, "amy");
    create(&mut w, "R2", "P2", t);
    drive_to(&mut w, "R2", Stage::Deploy, t, "bob");
    ok(&mut w, t, &user(Role::Deployer), pause_cmd("R2"));
    let back = World::replay(w.config.clone(), w.history.clone()).expect("replay");
    assert_eq!(back, w);
    // JSON round trip of the whole state and of the history.
    let json = serde_json::to_string(&w).expect("serialize");
    let again: World = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(again, w);

    let mut gap = w.history.clone();
    gap.remove(3);
    assert!(matches!(
        World::replay(w.config.clone(), gap),
        Err(ReplayError::Sequence {
            expected: 3,
            found: 4
        })
    ));
    let mut forged = w.history.clone();
    let i = forged
        .iter()
        .position(|e| e.kind == EventKind::Advanced)
        .expect("an advance");
    forged[i].to = Some(Stage::Archive);
    assert!(matches!(
        World::replay(w.config.clone(), forged),
        Err(ReplayError::StageMismatch { .. })
    ));
    // A state kept without its history still numbers new events after the old ones.
    let mut slim = w.clone();
    slim.history.clear();
    let evs = ok(
        &mut slim,
        t,
        &user(Role::Admin),
        Command::AddDeployer { name: "dee".into() },
    );
    assert_eq!(evs[0].seq, w.history.len() as u64);
    assert_eq!(slim.next_seq, w.next_seq + 1);
    // A stale outcome is refused by commit.
    let o = w
        .apply(
            t,
            &user(Role::Admin),
            Command::AddDeployer { name: "cat".into() },
        )
        .expect("apply");
    let mut w2 = w.clone();
    w2.commit(o.clone()).expect("commit");
    assert!(w2.commit(o).is_err());
}

#[test]
fn names_ids_and_chinese() {
    for s in Stage::ALL {
        assert_eq!(s.id().parse::<Stage>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).ok(),
            Some(format!("\"{}\"", s.id()))
        );
        assert!(!s.zh().is_empty());
    }
    assert_eq!(Stage::ProblemHandling.zh(), "项目部署问题处理");
    assert_eq!(Stage::GdConfirm.zh(), "GD确认暂停原因");
    assert_eq!(Stage::Harden.number(), Some(9));
    assert!(Stage::DeployRequest.pausable() && Stage::Accept.pausable());
    assert!(!Stage::PrePlan.pausable() && !Stage::Archive.pausable());
    for r in PauseReason::ALL {
        assert_eq!(r.id().parse::<PauseReason>(), Ok(r));
        assert!(!r.zh().is_empty());
    }
    assert_eq!(june(19, 9, 0).to_string(), "2026-06-19T09:00:00Z");
    assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
    assert_eq!(
        Timestamp(951_782_400_000).to_string(),
        "2000-02-29T00:00:00Z"
    );
    for p in Party::ALL {
        assert_eq!(p.id().parse::<Party>(), Ok(p));
    }
    assert!("later"
        .parse::<Stage>()
        .unwrap_err()
        .to_string()
        .contains("pre_plan"));
    let zh: std::collections::BTreeSet<_> = Stage::ALL.iter().map(|s| s.zh()).collect();
    assert_eq!(zh.len(), Stage::ALL.len());
}

/// Issue 13 item 17: every gate has a Chinese text, and every missing item (each variant is
/// produced here) has a Chinese form, item for item, following `check_zh_text`: no ASCII
/// letters outside `backticks` and 「quotes」 except the acronyms GD, IP and VPN.
#[test]
fn every_gate_and_missing_item_has_chinese() {
    let mut all: Vec<GateId> = Stage::ALL
        .iter()
        .flat_map(|s| gates_of(*s).iter().copied())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 15, "{all:?}");
    for g in &all {
        check_zh_text(g.needs_zh()).unwrap_or_else(|e| panic!("{}: {e}", g.id()));
    }
    // The rule itself.
    assert!(check_zh_text("主机 `web-01`：尚未完成基线加固").is_ok());
    assert!(check_zh_text("GD 尚未处理，缺少虚拟IP").is_ok());
    assert!(check_zh_text("风险 1（「slow disk」）不在备案中").is_ok());
    assert!(check_zh_text("尚未 attach 规划").is_err());
    assert!(check_zh_text("no plan attached").is_err());
    assert!(check_zh_text("缺少 `端口").is_err());
    assert!(check_zh_text("GDP 未处理").is_err());

    let t = june(2, 9, 0);
    let mut w = world(&["amy"]);
    ok(
        &mut w,
        t,
        &user(Role::Admin),
        Command::CreateProject {
            id: "P3".into(),
            name: "unapproved".into(),
            business_line: "gov".into(),
            approval: Approval::Pending,
        },
    );
    create(&mut w, "B1", "P3", t);
    let bare = w.batch("B1").expect("batch").clone();
    let mut states = vec![bare.clone()];
    let mut missing_project = bare.clone();
    missing_project.project = "P404".into();
    states.push(missing_project);
    // A plan with gaps, confirmed at another digest, a stale report on another plan with
    // hard and soft failures, hardening gaps, an unlisted perf shortfall, a rejected filing.
    let mut b = bare.clone();
    let mut p = plan();
    p.hosts.clear();
    p.incomplete = vec!["jump host: none declared".into()];
    p.incomplete_zh = vec!["跳板机：未声明".into()];
    b.plan = Some(p);
    b.plan_confirmed = Some("plan-d0".into());
    let mut r = readiness(
        t,
        vec![failure(
            "ports.a->b:80",
            PauseReason::NetworkPorts,
            Party::Customer,
        )],
    );
    r.plan_digest = "plan-d0".into();
    r.soft_failures = vec![failure(
        "disk.a:/data",
        PauseReason::DiskPerformance,
        Party::Customer,
    )];
    b.readiness = Some(r);
    b.perf = Some(PerfSummary {
        run_id: "perf-1".into(),
        finished_at: t,
        shortfalls: vec![failure(
            "disk.a:/data",
            PauseReason::DiskPerformance,
            Party::Customer,
        )],
    });
    b.filing = Some(RiskFiling {
        risks: vec![],
        document: "f.pdf".into(),
        by: "ivy".into(),
        at: t,
        status: FilingStatus::Rejected,
        review_note: None,
    });
    states.push(b.clone());
    // Plan recorded before the Chinese texts: a Chinese fallback.
    let mut old = b.clone();
    if let Some(p) = old.plan.as_mut() {
        p.incomplete_zh.clear();
    }
    states.push(old);
    // Hardening: one host without evidence, one with every gap.
    let mut h = b.clone();
    h.plan = Some(plan());
    let mut hs = hardening(
        t,
        HostHardening {
            baseline_applied: false,
            all_compliant: false,
            verified_after_last_change: false,
            noncompliant: vec!["ssh.permit_root_login".into()],
            firewall_missing_ports: vec!["8080/tcp".into()],
            ..host_ok()
        },
    );
    hs.hosts.remove("10.0.0.6");
    h.hardening = Some(hs);
    states.push(h.clone());
    let mut h2 = h.clone();
    h2.hardening = Some(hardening(
        t,
        HostHardening {
            all_compliant: false,
            firewall_covers_planned_ports: false,
            ..host_ok()
        },
    ));
    // A filing that misses a risk, pending review.
    h2.risks = vec![Risk {
        id: 1,
        text: "slow disk".into(),
        source: None,
        by: "ivy".into(),
        at: t,
    }];
    h2.filing = Some(RiskFiling {
        status: FilingStatus::Pending,
        ..b.filing.clone().expect("filing")
    });
    states.push(h2);
    let late = t.plus_ms(3 * DAY_MS);
    let mut seen = 0;
    for s in &states {
        for g in &all {
            let st = w.gate_status(s, *g, late);
            assert_eq!(st.needs_zh, g.needs_zh());
            assert_eq!(st.missing_zh.len(), st.missing.len(), "{st:?}");
            for z in &st.missing_zh {
                check_zh_text(z).unwrap_or_else(|e| panic!("{}: {e}", g.id()));
                seen += 1;
            }
        }
    }
    assert!(seen >= 30, "only {seen} Chinese missing items produced");
}
