//! Conditions are replaced by type, never appended, and their transition time moves only
//! when their status really changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    pub type_: &'a str,
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    /// CamelCase reason, e.g. `BackupSucceeded`.
    pub reason: &'a str,
    pub message: &'a str,
    pub observed_generation: Option<i64>,
}

/// Set `update` in `conditions`, replacing any condition of the same type.
/// `now` becomes the transition time when the status changes.
pub fn set_condition(conditions: &mut Vec<Condition>, update: &ConditionUpdate<'_>, now: Time) {
    let transition = conditions
        .iter()
        .find(|c| c.type_ == update.type_ && c.status == update.status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    conditions.retain(|c| c.type_ != update.type_);
    conditions.push(Condition {
        type_: update.type_.to_owned(),
        status: update.status.to_owned(),
        reason: update.reason.to_owned(),
        message: update.message.to_owned(),
        observed_generation: update.observed_generation,
        last_transition_time: transition,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update<'a>(status: &'a str, reason: &'a str) -> ConditionUpdate<'a> {
        ConditionUpdate { type_: "Succeeded", status, reason, message: "m", observed_generation: Some(2) }
    }

    #[test]
    fn conditions_are_replaced_and_transition_only_on_status_changes() {
        let at = |seconds| Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("valid time"));
        let (t0, t1, t2) = (at(1_000), at(1_010), at(1_020));
        let mut conditions = Vec::new();
        set_condition(&mut conditions, &update("True", "BackupSucceeded"), t0.clone());
        set_condition(&mut conditions, &update("True", "BackupSucceeded"), t1);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, t0);
        set_condition(&mut conditions, &update("False", "DatabaseUnreachable"), t2.clone());
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].reason, "DatabaseUnreachable");
        assert_eq!(conditions[0].last_transition_time, t2);
        set_condition(
            &mut conditions,
            &ConditionUpdate { type_: "Other", status: "True", reason: "R", message: "", observed_generation: None },
            t2,
        );
        assert_eq!(conditions.len(), 2);
    }
}
