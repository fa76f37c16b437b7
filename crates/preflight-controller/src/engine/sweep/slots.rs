//! Slot accounting: at most [`MAX_RUNNING_SWEEPS`] sweeps at once, one per batch, and the
//! running ones findable by run id (to attach to or cancel them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{Progress, SweepError};

/// Most sweeps running at once in one controller.
pub(crate) const MAX_RUNNING_SWEEPS: usize = 8;

/// A running sweep as others see it: its progress (the latest event; the last one carries the
/// report) and the switch that cancels it (set to who cancelled).
#[derive(Clone)]
pub(crate) struct RunningSweep {
    pub run_id: u64,
    pub events: watch::Receiver<Progress>,
    pub cancel: Arc<watch::Sender<Option<String>>>,
}

type SlotMap = HashMap<String, Option<RunningSweep>>;

/// The sweeps running now, by batch. Owned by the controller's state (`Shared::sweeps`); its
/// lock is held only to look up or change the map, never across an await.
#[derive(Default)]
pub(crate) struct SweepSlots(Arc<Mutex<SlotMap>>);

/// A running sweep's place in [`SweepSlots`], given back when dropped (the run ends).
pub(crate) struct SweepSlot {
    slots: Arc<Mutex<SlotMap>>,
    batch: String,
}

fn lock(m: &Mutex<SlotMap>) -> MutexGuard<'_, SlotMap> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SweepSlots {
    /// A place for a sweep of `batch`, or why not: the batch is being swept (naming the run
    /// when it has one), or [`MAX_RUNNING_SWEEPS`] are running.
    pub fn take(&self, batch: &str) -> Result<SweepSlot, SweepError> {
        let mut m = lock(&self.0);
        if let Some(r) = m.get(batch) {
            return Err(SweepError::Busy {
                batch: batch.to_string(),
                run_id: r.as_ref().map(|r| r.run_id),
            });
        }
        if m.len() >= MAX_RUNNING_SWEEPS {
            return Err(SweepError::Full { running: m.len() });
        }
        m.insert(batch.to_string(), None);
        Ok(SweepSlot {
            slots: self.0.clone(),
            batch: batch.to_string(),
        })
    }

    /// The running sweep `run_id`, if it is running in this controller.
    pub fn running(&self, run_id: u64) -> Option<RunningSweep> {
        lock(&self.0)
            .values()
            .flatten()
            .find(|r| r.run_id == run_id)
            .cloned()
    }
}

impl SweepSlot {
    /// Makes the run findable by its id.
    pub fn set_run(&self, run: RunningSweep) {
        if let Some(r) = lock(&self.slots).get_mut(&self.batch) {
            *r = Some(run);
        }
    }
}

impl Drop for SweepSlot {
    fn drop(&mut self) {
        lock(&self.slots).remove(&self.batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_are_bounded_and_one_per_batch() {
        let slots = SweepSlots::default();
        let first = slots.take("B1").unwrap();
        let (_ev_tx, events) = watch::channel(Progress::default());
        let (cancel, _) = watch::channel(None);
        first.set_run(RunningSweep {
            run_id: 41,
            events,
            cancel: Arc::new(cancel),
        });
        let e = slots.take("B1").err().unwrap();
        assert!(
            matches!(&e, SweepError::Busy { batch, run_id: Some(41) } if batch == "B1"),
            "{e:?}"
        );
        // The refusal names the run and how to follow or stop it.
        let shown = e.to_string();
        for want in [
            "run 41",
            "preflight sweep --attach 41",
            "preflight sweep cancel 41",
        ] {
            assert!(shown.contains(want), "{shown}");
        }
        assert_eq!(slots.running(41).map(|r| r.run_id), Some(41));
        assert!(slots.running(42).is_none());
        let mut held: Vec<SweepSlot> = (1..MAX_RUNNING_SWEEPS)
            .map(|i| slots.take(&format!("C{i}")).unwrap())
            .collect();
        let e = slots.take("D").err().unwrap();
        assert!(
            matches!(
                e,
                SweepError::Full {
                    running: MAX_RUNNING_SWEEPS
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&MAX_RUNNING_SWEEPS.to_string()),
            "{e}"
        );
        held.pop();
        drop(first);
        let _again = slots.take("B1").unwrap();
        let _d = slots.take("D").unwrap();
    }
}
