//! The deployment workflow as people read it: batch views, lists, queues, projects, users,
//! pause statistics and the events a command produced. Pure rendering of the controller's
//! typed replies (decoded into the core's types), in English or Chinese; every function
//! returns the text and prints nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use preflight_core::workflow::{
    Approval, BatchSummary, BatchView, Event, EventKind, GateStatus, Holder, Party, PauseReason,
    PauseStatsRow, ProjectsView, QueueClass, QueueEntry, Stage, StatsKey, Timestamp, DAY_MS,
};
use preflight_proto::v1 as pb;

use crate::{Lang, Table};

/// `writeln!` into a `String`, which cannot fail.
macro_rules! w {
    ($o:expr, $($t:tt)*) => {{
        let _ = writeln!($o, $($t)*);
    }};
}

/// Tokens expiring sooner than this are flagged in `user list`.
const EXPIRY_WARNING_MS: i64 = 7 * DAY_MS;

/// The EXPIRES column and, for a token close to expiry, the warning printed under the table.
pub fn expiry_text(u: &pb::WorkflowUser, now: i64) -> (String, Option<String>) {
    if u.expires_at_ms == 0 {
        return (
            "never".into(),
            Some(format!(
                "warning: the token of {} never expires (made before tokens expired by default): `preflight user token rotate {}` gives it an expiry",
                u.name, u.name
            )),
        );
    }
    let at = at(Timestamp(u.expires_at_ms));
    let left = u.expires_at_ms - now;
    if left <= 0 {
        return (
            format!("{at} (expired)"),
            Some(format!(
                "warning: the token of {} has expired: `preflight user token rotate {}` makes a new one",
                u.name, u.name
            )),
        );
    }
    if left < EXPIRY_WARNING_MS {
        let hours = left / 3_600_000;
        let when = if hours < 48 {
            format!("{hours} h")
        } else {
            format!("{} days {} h", hours / 24, hours % 24)
        };
        return (
            format!("{at} (in {when})"),
            Some(format!(
                "warning: the token of {} expires in {when}: `preflight user token rotate {}` makes a new one",
                u.name, u.name
            )),
        );
    }
    (at, None)
}

/// A stage in the output language: its id, or its Chinese name.
pub fn stage_name(s: Stage, lang: Lang) -> String {
    match lang {
        Lang::En => s.id().to_string(),
        Lang::Zh => s.zh().to_string(),
    }
}

/// A pause reason in the output language.
pub fn reason_name(r: PauseReason, lang: Lang) -> String {
    match lang {
        Lang::En => r.id().to_string(),
        Lang::Zh => r.zh().to_string(),
    }
}

/// A party in the output language.
pub fn party_name(p: Party, lang: Lang) -> String {
    match lang {
        Lang::En => p.id().to_string(),
        Lang::Zh => p.zh().to_string(),
    }
}

/// Who holds a batch, in English.
pub fn holder(h: &Holder) -> String {
    match h {
        Holder::Person(p) => p.clone(),
        Holder::Roles(r) => format!(
            "role {}",
            r.iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        Holder::Nobody => "nobody".into(),
    }
}

/// Who holds the batch, in the output language.
fn holder_in(hd: &Holder, lang: Lang) -> String {
    match (hd, lang) {
        (Holder::Roles(r), Lang::Zh) => format!(
            "角色 {}",
            r.iter()
                .map(|r| crate::role_word(r.as_str(), Lang::Zh))
                .collect::<Vec<_>>()
                .join(" 或 ")
        ),
        (Holder::Nobody, Lang::Zh) => "无".into(),
        _ => holder(hd),
    }
}

/// A queue class in the output language.
pub fn class_name(c: QueueClass, lang: Lang) -> &'static str {
    match (c, lang) {
        (QueueClass::Deploying, Lang::En) => "deploying",
        (QueueClass::Queued, Lang::En) => "queued",
        (QueueClass::Paused, Lang::En) => "paused",
        (QueueClass::Deploying, Lang::Zh) => "部署中",
        (QueueClass::Queued, Lang::Zh) => "排队",
        (QueueClass::Paused, Lang::Zh) => "暂停",
    }
}

/// What a command did: one line per event (`kind batch B7: plan -> confirm_plan (…) [event 9 at …]`).
pub fn events(events: &[Event]) -> String {
    let mut o = String::new();
    for e in events {
        let what = match (&e.batch, &e.project, &e.kind) {
            (Some(b), _, _) => format!("batch {b}"),
            (None, Some(p), _) => format!("project {p}"),
            (_, _, EventKind::DeployerAdded { name }) => {
                format!("deployer {name}")
            }
            _ => String::new(),
        };
        let moved = match (e.from, e.to) {
            (Some(f), Some(t)) if f != t => format!(": {} -> {} ({})", f.id(), t.id(), t.zh()),
            (None, Some(t)) => format!(": now in {} ({})", t.id(), t.zh()),
            _ => String::new(),
        };
        w!(
            o,
            "{} {what}{moved} [event {} at {}]",
            e.kind.name(),
            e.seq,
            at(e.at)
        );
        if let EventKind::Assigned { .. } = &e.kind {
            // Whom it went to, and why (the least loaded deployer when none was named).
            w!(o, "  {}", e.why);
        }
    }
    o
}

/// A header or label in the output language.
fn h(lang: Lang, en: &'static str, zh: &'static str) -> &'static str {
    match lang {
        Lang::En => en,
        Lang::Zh => zh,
    }
}

/// A workflow time as shown: in the display zone (`--tz`); JSON keeps UTC.
fn at(t: Timestamp) -> String {
    crate::time(t.0)
}

fn gate_line(g: &GateStatus, lang: Lang) -> String {
    // Chinese when the controller sent it (one that predates the Chinese texts sends none).
    let zh = lang == Lang::Zh && !g.needs_zh.is_empty() && g.missing_zh.len() == g.missing.len();
    if zh {
        let mark = if g.met { "[已满足]" } else { "[未满足]" };
        let mut l = format!("  {mark} {}：{}", g.gate.id(), g.needs_zh);
        if !g.missing_zh.is_empty() {
            l.push_str("\n             缺少：");
            for m in &g.missing_zh {
                l.push_str(&format!("\n               - {m}"));
            }
        }
        return l;
    }
    let mark = if g.met { "[met]    " } else { "[not met]" };
    let mut l = format!("  {mark} {}: {}", g.gate.id(), g.needs);
    if !g.missing.is_empty() {
        l.push_str("\n             missing:");
        for m in &g.missing {
            l.push_str(&format!("\n               - {m}"));
        }
    }
    l
}

/// `batch show`: stage, holder, deployer and queue line, pause, escalation, restriction, the
/// gates of the stage and the history.
pub fn batch(v: &BatchView, lang: Lang, now: i64) -> String {
    let mut o = String::new();
    let b = &v.batch;
    let zh = lang == Lang::Zh;
    if zh {
        w!(o, "批次 {}：{}", b.id, b.title);
        w!(o, "项目：      {}（业务线 {}）", b.project, b.business_line);
    } else {
        w!(o, "batch {}: {}", b.id, b.title);
        w!(o, "project:   {} (line {})", b.project, b.business_line);
    }
    let stage = match lang {
        Lang::En => format!("{} ({})", b.stage.id(), b.stage.zh()),
        Lang::Zh => format!("{}（{}）", b.stage.zh(), b.stage.id()),
    };
    if zh {
        w!(o, "阶段：      {stage}，自 {} 起", at(b.stage_since));
        w!(o, "当前处理人：{}", holder_in(&v.held_by, lang));
    } else {
        w!(o, "stage:     {stage} since {}", at(b.stage_since));
        w!(o, "held by:   {}", holder(&v.held_by));
    }
    if let Some(d) = &b.deployer {
        match (&v.queue, zh) {
            (Some(q), false) => w!(
                o,
                "deployer:  {d}, position {} in the queue ({} since {})",
                q.position,
                class_name(q.class, lang),
                at(q.since)
            ),
            (Some(q), true) => w!(
                o,
                "部署人员：  {d}，队列第 {} 位（{}，自 {} 起）",
                q.position,
                class_name(q.class, lang),
                at(q.since)
            ),
            (None, false) => w!(o, "deployer:  {d}"),
            (None, true) => w!(o, "部署人员：  {d}"),
        }
    }
    if let Some(p) = &b.pause {
        if zh {
            w!(
                o,
                "暂停：      {}（{}），由 {} 于 {} 暂停，责任方 {}：{}",
                reason_name(p.reason, lang),
                p.reason.id(),
                p.by,
                at(p.at),
                party_name(p.party, lang),
                p.text
            );
        } else {
            w!(
                o,
                "pause:     {} ({}) by {} at {}, party {}: {}",
                reason_name(p.reason, lang),
                p.reason.zh(),
                p.by,
                at(p.at),
                party_name(p.party, lang),
                p.text
            );
        }
        for i in &p.items {
            if zh {
                w!(
                    o,
                    "           - {}：{}（{}）",
                    i.check,
                    i.detail,
                    party_name(i.party, lang)
                );
            } else {
                w!(
                    o,
                    "           - {}: {} ({})",
                    i.check,
                    i.detail,
                    party_name(i.party, lang)
                );
            }
        }
    }
    if let Some(t) = v.escalates_after {
        if zh {
            w!(
                o,
                "升级：      {} 后转 GD 确认（现在 {}）",
                at(t),
                at(Timestamp(now))
            );
        } else {
            w!(
                o,
                "escalates: to GD after {} (now {})",
                at(t),
                at(Timestamp(now))
            );
        }
    }
    if let Some(r) = &v.restricted_by {
        if zh {
            w!(
                o,
                "受限：      批次 {r} 等待 GD 确认期间，项目 {} 不能提交部署申请",
                b.project
            );
        } else {
            w!(
                o,
                "restricted: project {} may not request deployment while batch {r} awaits GD",
                b.project
            );
        }
    }
    if v.gates.is_empty() {
        w!(
            o,
            "{}",
            h(
                lang,
                "gates:     none to leave this stage",
                "关口：      离开本阶段无需关口"
            )
        );
    } else {
        if zh {
            w!(o, "离开{}阶段的关口：", stage_name(b.stage, lang));
        } else {
            w!(o, "gates to leave {}:", stage_name(b.stage, lang));
        }
        for g in &v.gates {
            w!(o, "{}", gate_line(g, lang));
        }
    }
    w!(o, "{}", h(lang, "history:", "历史记录："));
    let mut t = Table::new(&[
        h(lang, "SEQ", "序号"),
        h(lang, "AT", "时间"),
        h(lang, "BY", "操作人"),
        h(lang, "EVENT", "事件"),
        h(lang, "FROM", "原阶段"),
        h(lang, "TO", "新阶段"),
        h(lang, "WHY", "原因"),
    ]);
    for e in &v.history {
        t.row(vec![
            e.seq.to_string(),
            at(e.at),
            e.by.to_string(),
            e.kind.name().to_string(),
            e.from.map(|s| stage_name(s, lang)).unwrap_or_default(),
            e.to.map(|s| stage_name(s, lang)).unwrap_or_default(),
            e.why.clone(),
        ]);
    }
    o.push_str(&t.render());
    o
}

/// Why `batch advance --lang zh` is refused for unmet gates, in Chinese, from the gates of the
/// view (`None` when a gate has no Chinese text, from an older controller, or all are met).
pub fn unmet_gates_zh(v: &BatchView) -> Option<String> {
    let unmet: Vec<&GateStatus> = v.gates.iter().filter(|g| !g.met).collect();
    if unmet.is_empty()
        || unmet
            .iter()
            .any(|g| g.needs_zh.is_empty() || g.missing_zh.len() != g.missing.len())
    {
        return None;
    }
    let parts: Vec<String> = unmet
        .iter()
        .map(|g| {
            if g.missing_zh.is_empty() {
                format!("`{}` 未满足，要求：{}", g.gate.id(), g.needs_zh)
            } else {
                format!(
                    "`{}` 未满足，缺少：{}",
                    g.gate.id(),
                    g.missing_zh.join("；")
                )
            }
        })
        .collect();
    Some(format!(
        "批次 `{}` 不能离开{}阶段：{}",
        v.batch.id,
        v.batch.stage.zh(),
        parts.join("；")
    ))
}

/// `batch list`.
pub fn batch_list(list: &[BatchSummary], lang: Lang) -> String {
    if list.is_empty() {
        return "no batches yet: `preflight batch create` makes one\n".into();
    }
    let l = lang;
    let mut t = Table::new(&[
        h(l, "BATCH", "批次"),
        h(l, "PROJECT", "项目"),
        h(l, "STAGE", "阶段"),
        h(l, "SINCE", "进入时间"),
        h(l, "HELD BY", "当前处理人"),
        h(l, "DEPLOYER", "部署人员"),
        h(l, "TITLE", "标题"),
    ]);
    for b in list {
        t.row(vec![
            b.id.clone(),
            b.project.clone(),
            stage_name(b.stage, lang),
            at(b.stage_since),
            holder(&b.held_by),
            b.deployer.clone().unwrap_or_else(|| "-".into()),
            b.title.clone(),
        ]);
    }
    t.render()
}

/// `queue`: each deployer's order, then their list.
pub fn queues(queues: &BTreeMap<String, Vec<QueueEntry>>, lang: Lang) -> String {
    let mut o = String::new();
    let l = lang;
    for (d, list) in queues {
        let order: Vec<&str> = list.iter().map(|e| e.batch.as_str()).collect();
        w!(
            o,
            "{} {d}: {}",
            h(l, "deployer", "部署人员"),
            if order.is_empty() {
                h(l, "(empty)", "（空）").to_string()
            } else {
                order.join("-")
            }
        );
        if list.is_empty() {
            continue;
        }
        let mut t = Table::new(&[
            h(l, "POS", "位置"),
            h(l, "BATCH", "批次"),
            h(l, "CLASS", "类别"),
            h(l, "SINCE", "起始时间"),
            h(l, "JUMP", "插队"),
        ]);
        for e in list {
            t.row(vec![
                e.position.to_string(),
                e.batch.clone(),
                class_name(e.class, l).into(),
                at(e.since),
                e.jump
                    .as_ref()
                    .map(|j| format!("to {} approved by {}: {}", j.position, j.approver, j.reason))
                    .unwrap_or_default(),
            ]);
        }
        o.push_str(&t.render());
    }
    o
}

/// `project list` and `deployer list`: projects with approval and restriction, deployers with
/// their load.
pub fn projects(v: &ProjectsView) -> String {
    let mut t = Table::new(&["PROJECT", "NAME", "LINE", "APPROVAL", "RESTRICTED BY"]);
    for row in &v.projects {
        let p = &row.project;
        let approval = match p.approval {
            Approval::Pending => "pending",
            Approval::Approved { .. } => "approved",
            Approval::Exception { .. } => "exception",
        };
        t.row(vec![
            p.id.clone(),
            p.name.clone(),
            p.business_line.clone(),
            approval.into(),
            row.restricted_by.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut o = t.render();
    let mut t = Table::new(&["DEPLOYER", "LOAD"]);
    for d in &v.deployers {
        t.row(vec![d.name.clone(), d.load.to_string()]);
    }
    o.push_str(&t.render());
    o
}

/// `stats pauses`: count, total and median days per group.
pub fn pause_stats(rows: &[PauseStatsRow], by: StatsKey, lang: Lang) -> String {
    if rows.is_empty() {
        return "no pauses recorded\n".into();
    }
    let l = lang;
    let by_head = match (by, l) {
        (StatsKey::Reason, Lang::Zh) => "暂停原因".to_string(),
        (StatsKey::Party, Lang::Zh) => "责任方".to_string(),
        (b, _) => b.to_string().to_uppercase(),
    };
    let mut t = Table::new(&[
        &by_head,
        h(l, "PAUSES", "暂停次数"),
        h(l, "TOTAL DAYS", "累计天数"),
        h(l, "MEDIAN DAYS", "中位天数"),
    ]);
    for row in rows {
        let key = match by {
            StatsKey::Reason => row
                .key
                .parse::<PauseReason>()
                .map(|r| reason_name(r, l))
                .unwrap_or_else(|_| row.key.clone()),
            StatsKey::Party => row
                .key
                .parse::<Party>()
                .map(|p| party_name(p, l))
                .unwrap_or_else(|_| row.key.clone()),
            _ => row.key.clone(),
        };
        t.row(vec![
            key,
            row.count.to_string(),
            format!("{:.1}", row.total_days),
            format!("{:.1}", row.median_days),
        ]);
    }
    t.render()
}

/// A role as the controller sent it, in its word.
pub fn role(v: i32) -> String {
    preflight_proto::json::name::<pb::Role>(v)
}

/// `user list`: the table, then a warning per active user whose token expires soon, has
/// expired or never expires.
pub fn users(r: &pb::ListUsersReply) -> String {
    let mut t = Table::new(&["NAME", "ROLE", "STATUS", "CREATED", "TOKEN EXPIRES"]);
    let mut warnings = Vec::new();
    for u in &r.users {
        let (expires, warning) = expiry_text(u, r.now_ms);
        if !u.disabled {
            warnings.extend(warning);
        }
        t.row(vec![
            u.name.clone(),
            role(u.role),
            if u.disabled { "disabled" } else { "active" }.into(),
            at(Timestamp(u.created_at_ms)),
            expires,
        ]);
    }
    let mut o = t.render();
    for w in warnings {
        w!(o, "{w}");
    }
    o
}

/// `user history`.
pub fn user_history(entries: &[pb::UserAuditEntry]) -> String {
    let mut t = Table::new(&["AT", "BY", "ACTION", "USER", "DETAIL"]);
    for e in entries {
        t.row(vec![
            at(Timestamp(e.at_ms)),
            e.by.clone(),
            preflight_proto::json::name::<pb::UserAuditAction>(e.action),
            e.user.clone(),
            e.detail.clone(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::role::Role;
    use preflight_core::workflow::{Actor, Command, WorkflowConfig, World};

    fn world() -> World {
        let mut w = World::new(WorkflowConfig::default());
        let t = |h: i64| Timestamp(1_780_272_000_000 + h * 3_600_000);
        let admin = Actor::user("adm", Role::Admin);
        let pat = Actor::user("pat", Role::Project);
        let cmds = [
            (&admin, Command::AddDeployer { name: "amy".into() }),
            (
                &admin,
                Command::CreateProject {
                    id: "P1".into(),
                    name: "Tax".into(),
                    business_line: "gov".into(),
                    approval: Approval::Pending,
                },
            ),
            (
                &pat,
                Command::CreateBatch {
                    id: "B1".into(),
                    project: "P1".into(),
                    business_line: None,
                    title: "three nodes".into(),
                },
            ),
            (&pat, Command::Advance { batch: "B1".into() }),
        ];
        for (i, (who, cmd)) in cmds.into_iter().enumerate() {
            w.execute(t(i as i64), who, cmd).expect("applies");
        }
        w
    }

    #[test]
    fn a_batch_shows_in_both_languages() {
        let w = world();
        let v = w
            .batch_view("B1", Timestamp(1_780_300_000_000))
            .expect("B1");
        let en = batch(&v, Lang::En, 0);
        assert!(en.starts_with("batch B1: three nodes\n"), "{en}");
        assert!(en.contains("stage:     pre_plan (集成开发预规划)"), "{en}");
        assert!(en.contains("held by:   role integrator"), "{en}");
        assert!(en.contains("batch_created"), "{en}");
        let zh = batch(&v, Lang::Zh, 0);
        assert!(
            zh.contains("阶段：      集成开发预规划（pre_plan）"),
            "{zh}"
        );
        assert!(zh.contains("当前处理人：角色 集成开发"), "{zh}");
    }

    #[test]
    fn lists_show_their_rows() {
        let w = world();
        let list = batch_list(&w.batch_summaries(None), Lang::Zh);
        assert!(list.contains("批次") && list.contains("B1"), "{list}");
        assert!(batch_list(&[], Lang::En).starts_with("no batches yet"));
        let p = projects(&w.projects_view(Timestamp(0)));
        assert!(
            p.contains("P1") && p.contains("pending") && p.contains("amy"),
            "{p}"
        );
        let q = queues(&w.queues(), Lang::En);
        assert_eq!(q, "deployer amy: (empty)\n");
        let e = events(&w.history[..1]);
        assert!(
            e.starts_with("deployer_added deployer amy [event 0 at "),
            "{e}"
        );
        assert_eq!(
            pause_stats(&[], StatsKey::Reason, Lang::En),
            "no pauses recorded\n"
        );
    }

    #[test]
    fn roles_and_audit_actions_show_their_words() {
        assert_eq!(role(pb::Role::DeliveryLead as i32), "delivery_lead");
        let h = user_history(&[pb::UserAuditEntry {
            at_ms: 0,
            by: "adm".into(),
            action: pb::UserAuditAction::Rotate as i32,
            user: "amy".into(),
            detail: String::new(),
        }]);
        assert!(h.contains("rotate"), "{h}");
    }
}
