//! What a resource's status says about its runs, derived from its Jobs and the runner's
//! report (`latestAttempt`). Pure functions, so every sequence of events (a Pod that
//! never starts, a runner killed mid-run, a report that never arrives, Jobs removed by
//! their TTL) is tested without a cluster.
//!
//! The rules:
//! - a finished Job is a finished run: Complete means backed up (the runner exits 0 only
//!   after the commit), Failed means not; the runner's report for that Job, where it
//!   arrived, gives the precise reason and message;
//! - the recorded `lastRun` only moves forward: to a run that finished later, or to the
//!   same run with a better account; a Job removed by its TTL changes nothing;
//! - an active Job is a run in progress (`Running`), and the last outcome stays visible.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use stowage_api::{Attempt, AttemptPhase, RunOutcome};

/// The part of a Job that matters for the status.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    pub name: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    /// Unset while the Job is active.
    pub finished: Option<JobEnd>,
}

/// How a Job ended, by its own conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    pub complete: bool,
    /// The Job controller's reason and message for `Failed`, e.g. `BackoffLimitExceeded`.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub at: Timestamp,
}

impl JobState {
    pub fn of(job: &Job) -> Option<JobState> {
        let status = job.status.clone().unwrap_or_default();
        let finished = status.conditions.unwrap_or_default().into_iter().find_map(|condition| {
            let complete = match condition.type_.as_str() {
                "Complete" => true,
                "Failed" => false,
                _ => return None,
            };
            (condition.status == "True").then(|| JobEnd {
                complete,
                reason: condition.reason,
                message: condition.message,
                at: condition
                    .last_transition_time
                    .map(|t| t.0)
                    .or(status.completion_time.as_ref().map(|t| t.0))
                    .unwrap_or_else(Timestamp::now),
            })
        });
        Some(JobState {
            name: job.name_any(),
            uid: job.uid()?,
            created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            finished,
        })
    }
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRun {
    pub job: String,
    /// Where it stands, for the `Running` condition.
    pub message: String,
    /// The runner reported a failure no retry can mend: the Job's retries are to stop.
    pub stop_retrying: bool,
}

/// What the Jobs and the report say.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The newest active run, if any.
    pub active: Option<ActiveRun>,
    /// The run `Succeeded` describes: the recorded one, or a newer one.
    pub last_run: Option<RunOutcome>,
}

fn rfc3339(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The outcome of a finished Job of `work` (`Backup` or `Restore`).
fn outcome(work: &str, job: &JobState, end: &JobEnd, attempt: Option<&Attempt>) -> RunOutcome {
    let report = attempt.filter(|a| a.job_uid == job.uid);
    let (succeeded, reason, message) = match report {
        Some(report) if end.complete && report.phase == AttemptPhase::Succeeded => {
            (true, report.reason.clone(), report.message.clone())
        }
        Some(report) if !end.complete && report.phase == AttemptPhase::Failed => {
            (false, report.reason.clone(), report.message.clone())
        }
        _ if end.complete => (
            true,
            format!("{work}Succeeded"),
            format!("Job {} completed; the runner's report did not arrive", job.name),
        ),
        _ => (
            false,
            format!("Job{}", end.reason.as_deref().unwrap_or("Failed")),
            format!(
                "Job {} failed without a report from the runner: {}",
                job.name,
                end.message.as_deref().unwrap_or("no message")
            ),
        ),
    };
    RunOutcome {
        job: job.name.clone(),
        job_uid: job.uid.clone(),
        succeeded,
        reason,
        message,
        finished_at: rfc3339(end.at),
    }
}

fn finished_at(outcome: &RunOutcome) -> Option<Timestamp> {
    outcome.finished_at.parse().ok()
}

/// Whether `candidate`, the newest listed run, is newer than the `recorded` one. Job
/// times have whole seconds, so two runs often end in the same one: while the recorded
/// run's Job is listed, the candidate was chosen over it (finished later, or in the same
/// second and created later); once that Job is gone, only a later second is newer.
fn is_newer(candidate: &RunOutcome, recorded: &RunOutcome, jobs: &[JobState]) -> bool {
    let recorded_listed = jobs.iter().any(|job| job.uid == recorded.job_uid);
    match finished_at(candidate).cmp(&finished_at(recorded)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => recorded_listed,
        std::cmp::Ordering::Less => false,
    }
}

/// Derive the state of the runs of `work` (`Backup` or `Restore`) from the resource's
/// Jobs, the runner's latest report and the `lastRun` recorded so far.
pub fn observe(work: &str, jobs: &[JobState], attempt: Option<&Attempt>, recorded: Option<&RunOutcome>) -> Observation {
    let newest_finished = jobs
        .iter()
        .filter_map(|job| job.finished.as_ref().map(|end| (job, end)))
        .max_by_key(|(job, end)| (end.at, job.created));
    let candidate = newest_finished.map(|(job, end)| outcome(work, job, end, attempt));
    let reported = |run: &RunOutcome| attempt.is_some_and(|a| a.job_uid == run.job_uid && a.finished());
    let last_run = match (candidate, recorded) {
        // The recorded run again, now without a finished report: a retry's Pod began (its
        // report says Running) just before the Job was ended. What was recorded stands.
        (Some(candidate), Some(recorded)) if candidate.job_uid == recorded.job_uid && !reported(&candidate) => {
            Some(recorded.clone())
        }
        (Some(candidate), Some(recorded))
            if candidate.job_uid != recorded.job_uid && !is_newer(&candidate, recorded, jobs) =>
        {
            Some(recorded.clone())
        }
        (Some(candidate), _) => Some(candidate),
        (None, recorded) => recorded.cloned(),
    };
    let active = jobs.iter().filter(|job| job.finished.is_none()).max_by_key(|job| job.created).map(|job| {
        let report = attempt.filter(|a| a.job_uid == job.uid);
        let message = match report {
            Some(report) if report.phase == AttemptPhase::Running => report.message.clone(),
            Some(report) if report.phase == AttemptPhase::Failed && report.permanent => format!(
                "Job {}: {} ({}); a retry cannot succeed, so the Job is being stopped",
                job.name, report.message, report.reason
            ),
            Some(report) if report.phase == AttemptPhase::Failed => {
                format!(
                    "Job {}: Pod {} failed ({}): {}; the Job retries",
                    job.name, report.pod, report.reason, report.message
                )
            }
            Some(report) => format!("Job {}: {}; the Job is finishing", job.name, report.message),
            None => format!("Job {} is starting", job.name),
        };
        let stop_retrying = report.is_some_and(|r| r.phase == AttemptPhase::Failed && r.permanent);
        ActiveRun { job: job.name.clone(), message, stop_retrying }
    });
    Observation { active, last_run }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    fn job(name: &str, created: i64, finished: Option<(bool, i64)>) -> JobState {
        JobState {
            name: name.into(),
            uid: format!("uid-{name}"),
            created: Some(at(created)),
            finished: finished.map(|(complete, second)| JobEnd {
                complete,
                reason: (!complete).then(|| "BackoffLimitExceeded".into()),
                message: (!complete).then(|| "Job has reached the specified backoff limit".into()),
                at: at(second),
            }),
        }
    }

    fn report(job: &str, phase: AttemptPhase, reason: &str, permanent: bool) -> Attempt {
        Attempt {
            job: job.into(),
            job_uid: format!("uid-{job}"),
            pod: format!("{job}-pod"),
            phase,
            reason: reason.into(),
            message: format!("{reason} message"),
            permanent,
            ..Attempt::default()
        }
    }

    fn summary(observation: &Observation) -> Option<(String, bool, String)> {
        observation.last_run.as_ref().map(|run| (run.job.clone(), run.succeeded, run.reason.clone()))
    }

    #[test]
    fn a_pod_that_never_starts_fails_the_run_once_its_job_fails() {
        let starting = observe("Backup", &[job("a", 0, None)], None, None);
        assert_eq!(starting.last_run, None);
        assert_eq!(starting.active.as_ref().map(|a| a.message.as_str()), Some("Job a is starting"));
        let failed = observe("Backup", &[job("a", 0, Some((false, 60)))], None, None);
        assert_eq!(summary(&failed), Some(("a".into(), false, "JobBackoffLimitExceeded".into())));
        assert!(failed.last_run.as_ref().is_some_and(|r| r.message.contains("without a report from the runner")));
        assert_eq!(failed.active, None);
        // The Job removed by its TTL: the outcome stays.
        assert_eq!(observe("Backup", &[], None, failed.last_run.as_ref()).last_run, failed.last_run);
    }

    #[test]
    fn a_retry_that_starts_as_its_job_is_ended_keeps_the_recorded_outcome() {
        let ended = [job("a", 0, Some((false, 60)))];
        let failed = report("a", AttemptPhase::Failed, "InvalidPluginSettings", true);
        let recorded = observe("Backup", &ended, Some(&failed), None).last_run;
        assert_eq!(
            summary(&observe("Backup", &ended, Some(&failed), None)).map(|s| s.2).as_deref(),
            Some("InvalidPluginSettings")
        );
        // The immediate retry's Pod reports Running after the operator ended the Job.
        let retry = report("a", AttemptPhase::Running, "", false);
        let again = observe("Backup", &ended, Some(&retry), recorded.as_ref());
        assert_eq!(again.last_run, recorded);
        // Without a recorded outcome the Job's own reason is all there is.
        let unrecorded = observe("Backup", &ended, Some(&retry), None);
        assert_eq!(summary(&unrecorded), Some(("a".into(), false, "JobBackoffLimitExceeded".into())));
    }

    #[test]
    fn the_runners_report_names_the_reason_of_its_job_only() {
        let attempt = report("a", AttemptPhase::Failed, "DatabaseUnreachable", false);
        let failed = observe("Backup", &[job("a", 0, Some((false, 60)))], Some(&attempt), None);
        assert_eq!(summary(&failed), Some(("a".into(), false, "DatabaseUnreachable".into())));
        // A report of another Job (a resource recreated under the same name, say) is not this Job's.
        let other = observe("Backup", &[job("b", 0, Some((false, 60)))], Some(&attempt), None);
        assert_eq!(summary(&other), Some(("b".into(), false, "JobBackoffLimitExceeded".into())));
    }

    #[test]
    fn a_killed_runner_leaves_a_running_report_and_the_job_decides() {
        let attempt = report("a", AttemptPhase::Running, "BackupRunning", false);
        let running = observe("Backup", &[job("a", 0, None)], Some(&attempt), None);
        assert_eq!(running.active.map(|a| a.message), Some("BackupRunning message".into()));
        let failed = observe("Backup", &[job("a", 0, Some((false, 90)))], Some(&attempt), None);
        assert_eq!(summary(&failed), Some(("a".into(), false, "JobBackoffLimitExceeded".into())));
        let completed = observe("Backup", &[job("a", 0, Some((true, 90)))], Some(&attempt), None);
        assert_eq!(summary(&completed), Some(("a".into(), true, "BackupSucceeded".into())));
        assert!(completed.last_run.is_some_and(|r| r.message.contains("report did not arrive")));
    }

    #[test]
    fn the_last_outcome_stays_visible_while_the_next_run_is_in_progress() {
        let succeeded = report("a", AttemptPhase::Succeeded, "BackupSucceeded", false);
        let first = observe("Backup", &[job("a", 0, Some((true, 30)))], Some(&succeeded), None);
        let running = report("b", AttemptPhase::Running, "BackupRunning", false);
        let jobs = [job("a", 0, Some((true, 30))), job("b", 100, None)];
        let second = observe("Backup", &jobs, Some(&running), first.last_run.as_ref());
        assert_eq!(summary(&second), Some(("a".into(), true, "BackupSucceeded".into())));
        assert_eq!(second.active.map(|a| a.job), Some("b".into()));
    }

    #[test]
    fn the_recorded_outcome_never_moves_back_to_an_older_run() {
        let newer = observe("Backup", &[job("b", 100, Some((false, 160)))], None, None);
        // Job b is gone, an older Job a is still listed.
        let later = observe("Backup", &[job("a", 0, Some((true, 30)))], None, newer.last_run.as_ref());
        assert_eq!(summary(&later), Some(("b".into(), false, "JobBackoffLimitExceeded".into())));
    }

    #[test]
    fn a_run_that_ends_in_the_same_second_as_the_previous_one_is_the_last_run() {
        let succeeded = report("a", AttemptPhase::Succeeded, "BackupSucceeded", false);
        let first = observe("Backup", &[job("a", 0, Some((true, 1)))], Some(&succeeded), None);
        let succeeded = report("b", AttemptPhase::Succeeded, "BackupSucceeded", false);
        let jobs = [job("a", 0, Some((true, 1))), job("b", 1, Some((true, 1)))];
        let second = observe("Backup", &jobs, Some(&succeeded), first.last_run.as_ref());
        assert_eq!(summary(&second), Some(("b".into(), true, "BackupSucceeded".into())));
        assert!(second.last_run.is_some_and(|r| r.message == "BackupSucceeded message"));
    }

    #[test]
    fn repeated_failures_are_one_outcome_each_and_retries_are_stopped_when_futile() {
        let transient = report("a", AttemptPhase::Failed, "DatabaseUnreachable", false);
        let retrying = observe("Backup", &[job("a", 0, None)], Some(&transient), None);
        let active = retrying.active.expect("active");
        assert!(!active.stop_retrying && active.message.contains("the Job retries"), "{}", active.message);
        assert_eq!(retrying.last_run, None);
        let permanent = report("a", AttemptPhase::Failed, "MissingStorageCredentials", true);
        assert!(
            observe("Backup", &[job("a", 0, None)], Some(&permanent), None).active.is_some_and(|a| a.stop_retrying)
        );
        let first = observe("Backup", &[job("a", 0, Some((false, 20)))], Some(&permanent), None);
        let again = observe("Backup", &[job("a", 0, Some((false, 20)))], Some(&permanent), first.last_run.as_ref());
        assert_eq!(first.last_run, again.last_run, "the same run is the same outcome");
        let second = report("b", AttemptPhase::Failed, "MissingStorageCredentials", true);
        let jobs = [job("a", 0, Some((false, 20))), job("b", 100, Some((false, 120)))];
        let next = observe("Backup", &jobs, Some(&second), first.last_run.as_ref());
        assert_eq!(next.last_run.map(|r| r.job), Some("b".into()));
    }
}
