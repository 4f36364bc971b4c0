//! Conditions are replaced by type, never appended, and their transition time moves only
//! when their status really changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::status::CONDITION_MESSAGE_MAX;

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

/// A message cut to what the condition schema allows, on a character boundary.
pub fn bounded_message(message: &str) -> &str {
    cut_text(message, CONDITION_MESSAGE_MAX)
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn cut_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The conditions of a status being written about one generation.
#[derive(Debug, Clone)]
pub struct Conditions {
    list: Vec<Condition>,
    generation: Option<i64>,
    now: Time,
}

impl Conditions {
    /// Start from the `existing` conditions; `now` is the transition time of a changed status.
    pub fn new(existing: Vec<Condition>, generation: Option<i64>, now: Time) -> Self {
        Conditions { list: existing, generation, now }
    }

    /// Replace the condition of `type_`, with the message bounded.
    pub fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let update = ConditionUpdate {
            type_,
            status,
            reason,
            message: bounded_message(message),
            observed_generation: self.generation,
        };
        set_condition(&mut self.list, &update, self.now.clone());
    }

    /// Remove the condition of `type_` (its subject is gone from the spec).
    pub fn remove(&mut self, type_: &str) {
        self.list.retain(|c| c.type_ != type_);
    }

    pub fn into_vec(self) -> Vec<Condition> {
        self.list
    }
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
