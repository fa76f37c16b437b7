//! The deployer queue (部署排队): one ordered list per deployer, three classes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Batch, BatchId, QueueJump, Stage, Timestamp};
use super::World;

/// Class of a batch in its deployer's list; lists are ordered by class, then time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueClass {
    /// Being deployed, by the time deployment started.
    Deploying,
    /// Queued, by the time it entered the queue (or returned from a pause).
    Queued,
    /// Paused, by the time it was paused.
    Paused,
}

/// One line of a deployer's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Position from 1.
    pub position: u32,
    /// Batch.
    pub batch: BatchId,
    /// Class.
    pub class: QueueClass,
    /// The time the class orders by (deploy start, queue entry, pause).
    pub since: Timestamp,
    /// Approved jump, if the batch jumped the queue.
    pub jump: Option<QueueJump>,
}

/// The class and ordering time of a batch in its deployer's list, `None` when not in a list.
///
/// A batch is in the list of its deployer while in `assign` (queued) or `deploy` (deploying,
/// or queued again after returning from a pause until the deployer restarts it), and while
/// paused from one of those two stages. It leaves the list when deployment finishes.
pub fn queue_class(b: &Batch) -> Option<(QueueClass, Timestamp)> {
    b.deployer.as_ref()?;
    match b.stage {
        Stage::Deploy => match b.deploy_started_at {
            Some(t) => Some((QueueClass::Deploying, t)),
            None => Some((QueueClass::Queued, b.queued_at.unwrap_or(b.stage_since))),
        },
        Stage::Assign => Some((QueueClass::Queued, b.queued_at.unwrap_or(b.stage_since))),
        Stage::ProblemHandling | Stage::GdConfirm => {
            let p = b.pause.as_ref()?;
            p.stage
                .in_deployer_queue()
                .then_some((QueueClass::Paused, p.at))
        }
        _ => None,
    }
}

impl World {
    /// The ordered list of one deployer: deploying by start, then queued by entry time (approved
    /// jumps placed at their target position, never ahead of a batch being deployed), then
    /// paused by pause time. Ties break by batch id.
    pub fn queue(&self, deployer: &str) -> Vec<QueueEntry> {
        let mut deploying = Vec::new();
        let mut queued = Vec::new();
        let mut jumped = Vec::new();
        let mut paused = Vec::new();
        for b in self.batches.values() {
            if b.deployer.as_deref() != Some(deployer) {
                continue;
            }
            let Some((class, since)) = queue_class(b) else {
                continue;
            };
            let e = QueueEntry {
                position: 0,
                batch: b.id.clone(),
                class,
                since,
                jump: None,
            };
            match class {
                QueueClass::Deploying => deploying.push(e),
                QueueClass::Paused => paused.push(e),
                QueueClass::Queued => match &b.jump {
                    Some(j) => jumped.push(QueueEntry {
                        jump: Some(j.clone()),
                        ..e
                    }),
                    None => queued.push(e),
                },
            }
        }
        let key = |e: &QueueEntry| (e.since, e.batch.clone());
        deploying.sort_by_key(key);
        queued.sort_by_key(key);
        paused.sort_by_key(key);
        // Earlier approvals are placed first, so a later approval for the same position wins it.
        jumped.sort_by_key(|e| (e.jump.as_ref().map(|j| j.at), e.batch.clone()));
        for e in jumped {
            let target = e.jump.as_ref().map_or(1, |j| j.position) as usize;
            let idx = target
                .saturating_sub(1)
                .saturating_sub(deploying.len())
                .min(queued.len());
            queued.insert(idx, e);
        }
        let mut all = deploying;
        all.extend(queued);
        all.extend(paused);
        for (i, e) in all.iter_mut().enumerate() {
            e.position = i as u32 + 1;
        }
        all
    }

    /// Every deployer's list (deployers without batches included, empty).
    pub fn queues(&self) -> BTreeMap<String, Vec<QueueEntry>> {
        self.deployers
            .iter()
            .map(|d| (d.clone(), self.queue(d)))
            .collect()
    }

    /// Load of a deployer for assignment: batches being deployed plus queued.
    pub fn load(&self, deployer: &str) -> usize {
        self.batches
            .values()
            .filter(|b| b.deployer.as_deref() == Some(deployer))
            .filter(|b| {
                matches!(
                    queue_class(b),
                    Some((QueueClass::Deploying | QueueClass::Queued, _))
                )
            })
            .count()
    }

    /// The deployer load balancing picks: fewest deploying+queued batches, ties by name.
    /// `except` is left out of the counts (a batch being reassigned).
    pub fn least_loaded(&self, except: Option<&str>) -> Option<String> {
        self.deployers
            .iter()
            .map(|d| {
                let own = except
                    .and_then(|id| self.batches.get(id))
                    .filter(|b| b.deployer.as_deref() == Some(d.as_str()))
                    .is_some_and(|b| {
                        matches!(
                            queue_class(b),
                            Some((QueueClass::Deploying | QueueClass::Queued, _))
                        )
                    });
                (self.load(d) - usize::from(own), d)
            })
            .min()
            .map(|(_, d)| d.clone())
    }
}

/// Whether an ordered list satisfies the three-class rule: classes in order deploying, queued,
/// paused; deploying and paused sorted by time; queued batches without a jump sorted by time.
pub fn satisfies_three_class_rule(list: &[QueueEntry]) -> bool {
    let classes_ordered = list.windows(2).all(|w| w[0].class <= w[1].class);
    let sorted = |class: QueueClass, skip_jumps: bool| {
        let times: Vec<_> = list
            .iter()
            .filter(|e| e.class == class && !(skip_jumps && e.jump.is_some()))
            .map(|e| (e.since, e.batch.as_str()))
            .collect();
        times.windows(2).all(|w| w[0] <= w[1])
    };
    let positions = list
        .iter()
        .enumerate()
        .all(|(i, e)| e.position as usize == i + 1);
    classes_ordered
        && positions
        && sorted(QueueClass::Deploying, false)
        && sorted(QueueClass::Queued, true)
        && sorted(QueueClass::Paused, false)
}
