//! When to start rebuild Jobs: from a plan's repair queue, its schedule's limits and the
//! Jobs already running. Pure, so every rule is unit-tested.

use sublet_crds::{Rebuild, RebuildWindow};

use crate::admin::RepairQueue;

/// Objects one repair Job is expected to handle; a longer queue gets more Jobs (up to
/// `maxConcurrentJobs`). Jobs claim objects from the gateway's queue, so they never repair
/// the same object twice.
pub const OBJECTS_PER_JOB: u64 = 1000;

/// What the operator does about a plan's repair queue now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairDecision {
    /// Nothing is due.
    Idle,
    /// Objects are due but no Job may start now; the reason says why.
    Wait(String),
    /// Start this many Jobs; `urgent` when objects are at risk of loss.
    Start {
        /// Jobs to create.
        jobs: u32,
        /// Objects are at risk: the window was ignored.
        urgent: bool,
    },
}

/// What the decision is made from.
#[derive(Clone, Copy, Debug)]
pub struct RepairInput<'a> {
    /// The plan's repair queue from the gateway.
    pub queue: RepairQueue,
    /// The schedule's rebuild rules (the default rules when the plan names no schedule).
    pub rebuild: &'a Rebuild,
    /// Minutes since midnight, in the time zone the window is written in.
    pub minute_of_day: u32,
    /// Repair Jobs running for every plan of the schedule (they share `maxConcurrentJobs`).
    pub running_for_schedule: u32,
    /// Repair Jobs running for this plan.
    pub running_for_plan: u32,
}

/// Decides which Jobs to create for one plan.
pub fn decide(input: RepairInput<'_>) -> RepairDecision {
    let RepairInput {
        queue,
        rebuild,
        minute_of_day,
        running_for_schedule,
        running_for_plan,
    } = input;
    if queue.due == 0 {
        return RepairDecision::Idle;
    }
    let urgent = queue.at_risk > 0;
    if !urgent
        && let Some(window) = &rebuild.window
        && !in_window(window, minute_of_day)
    {
        return RepairDecision::Wait(format!(
            "{} objects wait for the rebuild window {}-{}",
            queue.due, window.start, window.end
        ));
    }
    let free = rebuild
        .max_concurrent_jobs
        .saturating_sub(running_for_schedule);
    if free == 0 {
        return RepairDecision::Wait(format!(
            "{} objects wait: maxConcurrentJobs ({}) repairs are running",
            queue.due, rebuild.max_concurrent_jobs
        ));
    }
    let wanted = u32::try_from(queue.due.div_ceil(OBJECTS_PER_JOB))
        .unwrap_or(u32::MAX)
        .min(rebuild.max_concurrent_jobs);
    let jobs = wanted.saturating_sub(running_for_plan).min(free);
    if jobs == 0 {
        return RepairDecision::Wait(format!(
            "{} objects are being repaired by {running_for_plan} running jobs",
            queue.due
        ));
    }
    RepairDecision::Start { jobs, urgent }
}

fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    Some(h.parse::<u32>().ok()? * 60 + m.parse::<u32>().ok()?)
}

/// Whether `minute_of_day` falls in `window`; an end before the start wraps past midnight.
/// A window that does not parse (validation keeps those out) never blocks repairs.
pub fn in_window(window: &RebuildWindow, minute_of_day: u32) -> bool {
    let (Some(start), Some(end)) = (minutes(&window.start), minutes(&window.end)) else {
        return true;
    };
    if start <= end {
        (start..end).contains(&minute_of_day)
    } else {
        minute_of_day >= start || minute_of_day < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuild(max: u32, window: Option<(&str, &str)>) -> Rebuild {
        Rebuild {
            max_concurrent_jobs: max,
            window: window.map(|(s, e)| RebuildWindow {
                start: s.into(),
                end: e.into(),
            }),
            ..Rebuild::default()
        }
    }

    fn queue(due: u64, at_risk: u64) -> RepairQueue {
        RepairQueue {
            due,
            at_risk,
            waiting: 0,
        }
    }

    fn run(q: RepairQueue, r: &Rebuild, minute: u32, schedule: u32, plan: u32) -> RepairDecision {
        decide(RepairInput {
            queue: q,
            rebuild: r,
            minute_of_day: minute,
            running_for_schedule: schedule,
            running_for_plan: plan,
        })
    }

    const NOON: u32 = 12 * 60;
    const TWO_AM: u32 = 2 * 60;

    #[test]
    fn nothing_due_starts_nothing() {
        // Objects still inside the grace period are not due.
        let q = RepairQueue {
            due: 0,
            at_risk: 0,
            waiting: 40,
        };
        assert_eq!(run(q, &rebuild(2, None), NOON, 0, 0), RepairDecision::Idle);
    }

    #[test]
    fn due_objects_start_one_job_per_thousand_up_to_the_limit() {
        let r = rebuild(2, None);
        assert_eq!(
            run(queue(10, 0), &r, NOON, 0, 0),
            RepairDecision::Start {
                jobs: 1,
                urgent: false
            }
        );
        assert_eq!(
            run(queue(1001, 0), &r, NOON, 0, 0),
            RepairDecision::Start {
                jobs: 2,
                urgent: false
            }
        );
        assert_eq!(
            run(queue(50_000, 0), &r, NOON, 0, 0),
            RepairDecision::Start {
                jobs: 2,
                urgent: false
            }
        );
    }

    #[test]
    fn running_jobs_count_against_max_concurrent_jobs() {
        let r = rebuild(3, None);
        // Two of another plan of the same schedule run: one slot left.
        assert_eq!(
            run(queue(5000, 0), &r, NOON, 2, 0),
            RepairDecision::Start {
                jobs: 1,
                urgent: false
            }
        );
        assert_eq!(
            run(queue(5000, 0), &r, NOON, 3, 1),
            RepairDecision::Wait(
                "5000 objects wait: maxConcurrentJobs (3) repairs are running".into()
            )
        );
        // This plan already has the job its queue needs.
        assert_eq!(
            run(queue(10, 0), &r, NOON, 1, 1),
            RepairDecision::Wait("10 objects are being repaired by 1 running jobs".into())
        );
    }

    #[test]
    fn window_holds_repairs_unless_objects_are_at_risk() {
        let r = rebuild(2, Some(("01:00", "06:00")));
        assert_eq!(
            run(queue(10, 0), &r, NOON, 0, 0),
            RepairDecision::Wait("10 objects wait for the rebuild window 01:00-06:00".into())
        );
        assert_eq!(
            run(queue(10, 0), &r, TWO_AM, 0, 0),
            RepairDecision::Start {
                jobs: 1,
                urgent: false
            }
        );
        assert_eq!(
            run(queue(10, 1), &r, NOON, 0, 0),
            RepairDecision::Start {
                jobs: 1,
                urgent: true
            }
        );
        // At risk still respects maxConcurrentJobs.
        assert!(matches!(
            run(queue(10, 1), &r, NOON, 2, 0),
            RepairDecision::Wait(_)
        ));
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let w = RebuildWindow {
            start: "22:00".into(),
            end: "06:00".into(),
        };
        assert!(in_window(&w, 23 * 60));
        assert!(in_window(&w, TWO_AM));
        assert!(!in_window(&w, NOON));
        assert!(!in_window(&w, 6 * 60), "the end is exclusive");
        let day = RebuildWindow {
            start: "01:00".into(),
            end: "06:00".into(),
        };
        assert!(in_window(&day, 60));
        assert!(!in_window(&day, 59));
    }
}
