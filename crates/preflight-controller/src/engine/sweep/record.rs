//! Recording a run: its findings as stored, whether the workflow may take it as the batch's
//! readiness, the summary the workflow is given, and how a stored run stands today.

use preflight_core::readiness::{self, Finding};
use preflight_core::workflow::{
    CheckFailure, ReadinessSummary, Timestamp, MAX_LIST_LEN, MAX_TEXT_LEN,
};
use preflight_store::sweeps::{FindingRecord, SweepRecord, TargetRecord};

use super::BatchFacts;

/// Why a run is not the readiness when the workflow refused to record it (the English text
/// carries the workflow's own reason).
pub(super) const NOT_ACCEPTED_ZH: &str =
    "工作流未接受这次检查的记录，因此不计入批次的就绪结论；具体原因见英文报告（--lang en）";

/// Whether a finished run may be recorded as its batch's readiness: `Ok(true)` when a batch of
/// that id exists (`batch`) with this very plan attached and the run left nothing out,
/// `Ok(false)` when no batch of that id exists (a free label), else why not (shown with the
/// report), in English and Chinese.
pub(super) fn workflow_decision(
    batch: Option<&BatchFacts>,
    rec: &SweepRecord,
) -> Result<bool, (String, String)> {
    match batch.map(|b| b.plan_digest.as_deref()) {
        None => Ok(false),
        Some(None) => Err((format!(
            "batch {} has no plan attached, so the run is not recorded as its readiness; attach one with `preflight plan attach {} PLAN_FILE`",
            rec.batch, rec.batch
        ), format!(
            "批次 {} 尚未挂接部署方案，本次检查不计入其就绪结论；请先用 `preflight plan attach {} 方案文件` 挂接方案",
            rec.batch, rec.batch
        ))),
        Some(Some(d)) if d != rec.plan_digest => Err((format!(
            "the run checked another plan than the one attached to batch {}, so it is not recorded as the batch's readiness; sweep without --plan to check the attached plan",
            rec.batch
        ), format!(
            "本次检查的方案与批次 {} 已挂接的方案不同，不计入其就绪结论；去掉 --plan 重新检查即可检查已挂接的方案",
            rec.batch
        ))),
        Some(Some(_)) if !rec.skipped.is_empty() => Err((format!(
            "checks were skipped: {}, not recorded as the batch's readiness; sweep again without --skip for the confirm_plan gate",
            rec.skipped.join(", ")
        ), format!(
            "跳过了检查项 {}，不计入批次的就绪结论；去掉 --skip 重新检查，才能满足方案确认（confirm_plan）关口",
            rec.skipped.join("、")
        ))),
        Some(Some(_)) => Ok(true),
    }
}

/// The summary of a finished run the workflow records as the batch's readiness: the gate of
/// `confirm_plan` then sees it, and a hard failure from `confirm_plan` on pauses the batch with
/// the failing checks and their parties (WORKFLOW.md).
pub(super) fn summary(rec: &SweepRecord, findings: &[Finding]) -> ReadinessSummary {
    let pick = |v: readiness::Verdict| {
        fit_failures(
            findings
                .iter()
                .filter(|f| f.verdict == v)
                .map(Finding::to_failure)
                .collect(),
            rec.run_id,
        )
    };
    ReadinessSummary {
        run_id: rec.run_id.to_string(),
        finished_at: Timestamp(rec.finished_at_ms),
        plan_digest: rec.plan_digest.clone(),
        hard_failures: pick(readiness::Verdict::Hard),
        soft_failures: pick(readiness::Verdict::Soft),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, ending with "…" when cut.
fn clip(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

/// Failures as the workflow accepts them (`check_failures`): texts cut to MAX_TEXT_LEN bytes,
/// and past MAX_LIST_LEN entries the first ones plus one saying how many more the run has,
/// so a large plan's summary is never refused (which would leave an older readiness in force).
fn fit_failures(mut v: Vec<CheckFailure>, run_id: u64) -> Vec<CheckFailure> {
    if v.len() > MAX_LIST_LEN {
        let more = v.len() - (MAX_LIST_LEN - 1);
        let rest = v.split_off(MAX_LIST_LEN - 1);
        v.push(CheckFailure {
            check: "more".into(),
            detail: format!(
                "{more} more failures not listed here: `preflight report --run {run_id}` shows them all"
            ),
            reason: rest[0].reason,
            party: rest[0].party,
        });
    }
    for f in &mut v {
        clip(&mut f.check, MAX_TEXT_LEN);
        clip(&mut f.detail, MAX_TEXT_LEN);
    }
    v
}

/// A judged check as the store keeps it.
pub(super) fn to_record(f: &Finding) -> FindingRecord {
    FindingRecord {
        server: f.server.clone(),
        check: f.check.clone(),
        verdict: f.verdict.as_str().into(),
        party: f.party.id().into(),
        reason: f.reason.id().into(),
        message: f.message.clone(),
        message_zh: f.message_zh.clone(),
        fix: f.fix.clone(),
        fix_zh: f.fix_zh.clone(),
        measured: f.measured,
        threshold: f.threshold,
        unit: f.unit.clone(),
        target: f.target.as_ref().map(|t| TargetRecord {
            kind: t.kind.as_str().into(),
            server: t.server.clone(),
            dest: t.dest.clone(),
            port: t.port,
            proto: t.proto.as_str().into(),
        }),
    }
}

/// A stored finding's target: as stored, or for a run stored before targets were data, read
/// once from its check id (`path:DEST:PORT`, `port:PORT/PROTO`, `bandwidth:DEST`,
/// `vip:ADDRESS`), so old reports keep their path matrix. The one place a check id is parsed.
pub(crate) fn target_of(f: &FindingRecord) -> Option<TargetRecord> {
    if f.target.is_some() {
        return f.target.clone();
    }
    let rec = |kind: &str, dest: &str, port: Option<u16>, proto: &str| TargetRecord {
        kind: kind.into(),
        server: f.server.clone(),
        dest: dest.into(),
        port,
        proto: proto.into(),
    };
    let (family, rest) = f.check.split_once(':')?;
    match family {
        "path" => {
            let (dest, ports) = rest.rsplit_once(':')?;
            Some(rec("path", dest, ports.parse().ok(), "tcp"))
        }
        "port" => {
            let (port, proto) = rest.split_once('/')?;
            let proto = proto.parse::<preflight_core::net::Proto>().ok()?.as_str();
            Some(rec("port", &f.server, Some(port.parse().ok()?), proto))
        }
        "bandwidth" => Some(rec("bandwidth", rest, None, "tcp")),
        "vip" => Some(rec("vip", rest, None, "tcp")),
        _ => None,
    }
}

/// A stored run as it stands now: whether it counts is the workflow's fact (`current`, the run
/// id of the batch's readiness), since a later run may have replaced it.
pub(super) fn standing(mut rec: SweepRecord, current: Option<&str>) -> SweepRecord {
    match current {
        Some(id) if id == rec.run_id.to_string() => rec.context.recorded = true,
        Some(id) if rec.context.recorded => {
            rec.context.recorded = false;
            rec.not_recorded = format!(
                "run {id} replaced this run as the readiness of batch {}",
                rec.batch
            );
            rec.context.not_recorded_zh = format!(
                "第 {id} 次运行已取代本次，成为批次 {} 的就绪结论",
                rec.batch
            );
        }
        _ => rec.context.recorded = false,
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::workflow::{Command, Party, PauseReason};

    fn failure(i: usize, detail: String) -> CheckFailure {
        CheckFailure {
            check: format!("s{i}:path:b:{i}"),
            detail,
            reason: PauseReason::NetworkPorts,
            party: Party::Customer,
        }
    }

    #[test]
    fn a_large_summary_fits_the_workflows_limits() {
        let v: Vec<CheckFailure> = (0..MAX_LIST_LEN + 500)
            .map(|i| failure(i, "x".into()))
            .collect();
        let fitted = fit_failures(v, 7);
        assert_eq!(fitted.len(), MAX_LIST_LEN);
        assert_eq!(
            fitted[MAX_LIST_LEN - 2].check,
            format!("s{}:path:b:{}", MAX_LIST_LEN - 2, MAX_LIST_LEN - 2)
        );
        let last = &fitted[MAX_LIST_LEN - 1];
        assert_eq!(last.check, "more");
        assert!(
            last.detail.starts_with("501 more failures"),
            "{}",
            last.detail
        );
        assert!(last.detail.contains("--run 7"));

        // Multi-byte text over the limit is cut on a character boundary.
        let long = "端".repeat(MAX_TEXT_LEN);
        let fitted = fit_failures(vec![failure(1, long)], 7);
        assert!(fitted[0].detail.len() <= MAX_TEXT_LEN);
        assert!(fitted[0].detail.ends_with('…'));
        let short = fit_failures(vec![failure(1, "fine".into())], 7);
        assert_eq!(short[0].detail, "fine");

        // The workflow accepts it.
        let summary = ReadinessSummary {
            run_id: "7".into(),
            finished_at: Timestamp(0),
            plan_digest: "d".into(),
            hard_failures: fit_failures(
                (0..MAX_LIST_LEN + 1)
                    .map(|i| failure(i, "端".repeat(2000)))
                    .collect(),
                7,
            ),
            soft_failures: vec![],
        };
        Command::RecordReadiness {
            batch: "B1".into(),
            summary,
        }
        .validate()
        .unwrap();
    }

    fn run(recorded: bool) -> SweepRecord {
        SweepRecord {
            run_id: 5,
            batch: "B1".into(),
            plan_digest: "d".into(),
            started_at_ms: 0,
            finished_at_ms: 1,
            state: "finished".into(),
            findings: vec![],
            skipped: vec![],
            not_recorded: String::new(),
            context: preflight_store::sweeps::SweepContext {
                recorded,
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_target_is_stored_as_data_and_read_from_old_check_ids() {
        use preflight_core::net::Proto;
        use preflight_core::plan::Plan;
        let p = Plan::from_toml(
            "plan.toml",
            "[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"a\"\nrole = \"x\"\n[[servers]]\naddress = \"10.0.0.2\"\nhostname = \"b\"\nrole = \"y\"\n",
        )
        .unwrap();
        let (a, b) = (&p.servers[0], &p.servers[1]);
        let new = [
            readiness::path(a, b, 5432, "refused", "", None),
            readiness::port_free(a, 53, Proto::Udp, "dns", None),
            readiness::bandwidth(a, b, 5201, &Default::default(), Err("x")),
            readiness::vip("web", "10.0.0.9", &[]),
        ];
        for f in &new {
            let stored = to_record(f);
            let t = stored
                .target
                .clone()
                .expect("a network finding has a target");
            let want = f.target.as_ref().unwrap();
            assert_eq!(
                (
                    t.kind.as_str(),
                    &t.server,
                    &t.dest,
                    t.port,
                    t.proto.as_str()
                ),
                (
                    want.kind.as_str(),
                    &want.server,
                    &want.dest,
                    want.port,
                    want.proto.as_str()
                )
            );
            // An old record (no target) of the same check reads to the same target, except
            // what its id never said (a bandwidth pair's port).
            let old = FindingRecord {
                target: None,
                ..stored.clone()
            };
            let read = target_of(&old).unwrap();
            assert_eq!((&read.kind, &read.dest), (&t.kind, &t.dest), "{}", f.check);
            if t.kind != "bandwidth" {
                assert_eq!(read, t, "{}", f.check);
            }
        }
        // A server's own checks have none; a refused range has no port.
        let own = to_record(&readiness::reachable(a, None));
        assert_eq!(target_of(&own), None);
        let range = FindingRecord {
            check: "path:b:80-90".into(),
            ..own
        };
        assert_eq!(target_of(&range).unwrap().port, None);
    }

    #[test]
    fn a_run_counts_while_it_is_the_batchs_readiness() {
        assert!(standing(run(true), Some("5")).context.recorded);
        let replaced = standing(run(true), Some("9"));
        assert!(!replaced.context.recorded);
        assert_eq!(
            replaced.not_recorded,
            "run 9 replaced this run as the readiness of batch B1"
        );
        assert!(replaced.context.not_recorded_zh.contains('9'));
        // Never recorded: says nothing of a replacement.
        let never = standing(run(false), Some("9"));
        assert!(!never.context.recorded && never.not_recorded.is_empty());
        assert!(!standing(run(true), None).context.recorded);
    }

    #[test]
    fn only_a_complete_run_of_the_attached_plan_is_the_readiness() {
        let facts = |digest: Option<&str>| BatchFacts {
            project: "p".into(),
            plan_digest: digest.map(String::from),
            readiness_run: None,
        };
        let r = run(false);
        assert_eq!(workflow_decision(None, &r), Ok(false));
        assert_eq!(workflow_decision(Some(&facts(Some("d"))), &r), Ok(true));
        let other = workflow_decision(Some(&facts(Some("e"))), &r).unwrap_err();
        assert!(other.0.contains("another plan"), "{}", other.0);
        let none = workflow_decision(Some(&facts(None)), &r).unwrap_err();
        assert!(none.0.contains("preflight plan attach B1"), "{}", none.0);
        let skipped = SweepRecord {
            skipped: vec!["disk".into()],
            ..run(false)
        };
        let e = workflow_decision(Some(&facts(Some("d"))), &skipped).unwrap_err();
        assert!(e.0.contains("skipped: disk"), "{}", e.0);
    }
}
