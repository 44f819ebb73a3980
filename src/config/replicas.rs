//! Replicas: an entry's `replicas`, `balance` and `weights`, checked.
//!
//! An entry with `replicas = N` becomes N agents of the set, named
//! `Name#0 .. Name#N-1`, next to each other (their indices are
//! consecutive), each with the entry's fields. Callers still name `Name`:
//! a call resolves to the first replica, and [`super::AgentSet::replicas_of`]
//! lists them all, so the plan routes to every one and the runtime picks
//! one per call by `balance`. At most [`MAX_REPLICAS`], so a replica set
//! fits the balancer's 64-bit masks.
//!
//! `balance` and `weights` mean something only with two replicas or more,
//! and `weights` only with `balance = "weighted"` (one positive weight per
//! replica); anything else is an error at the value, so a typo does not
//! silently balance differently.

use toml::Spanned;

use super::agents_file::{AgentEntry, Balance};
use super::{ConfigError, SourceFile};

/// Most replicas of one agent.
pub const MAX_REPLICAS: u32 = 64;
/// Largest `weights` entry.
pub const MAX_WEIGHT: u32 = 1000;

/// How many instances an agent runs, and how calls to it are spread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    count: u32,
    balance: Balance,
    weights: Vec<u32>,
}

impl Default for ReplicaSet {
    /// One instance.
    fn default() -> Self {
        Self {
            count: 1,
            balance: Balance::default(),
            weights: Vec::new(),
        }
    }
}

impl ReplicaSet {
    /// Instances.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// How callers pick one.
    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// Each replica's weight (`weighted`); empty otherwise.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }
}

/// The replica set of `raw` (agent `agent` of `file`).
pub(super) fn validate(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
) -> Result<ReplicaSet, ConfigError> {
    let invalid = |span: std::ops::Range<usize>, message: String| ConfigError::Invalid {
        at: file.locate(span),
        message,
    };
    let count = match &raw.replicas {
        Some(n) if !(1..=MAX_REPLICAS).contains(n.get_ref()) => {
            return Err(invalid(
                n.span(),
                format!(
                    "agent {agent}: replicas must be 1 to {MAX_REPLICAS}, got {}",
                    n.get_ref()
                ),
            ));
        }
        Some(n) => *n.get_ref(),
        None => 1,
    };
    if count == 1
        && let Some(span) = raw
            .balance
            .as_ref()
            .map(Spanned::span)
            .or_else(|| raw.weights.as_ref().map(Spanned::span))
    {
        return Err(invalid(
            span,
            format!(
                "agent {agent} runs one instance; `balance` and `weights` need replicas = 2 or more"
            ),
        ));
    }
    let balance = raw
        .balance
        .as_ref()
        .map_or(Balance::default(), |b| *b.get_ref());
    let weights = weights(raw, balance, count, agent, &invalid)?;
    Ok(ReplicaSet {
        count,
        balance,
        weights,
    })
}

fn weights(
    raw: &AgentEntry,
    balance: Balance,
    count: u32,
    agent: &str,
    invalid: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Vec<u32>, ConfigError> {
    match (&raw.weights, balance) {
        (None, Balance::Weighted) => {
            let span = raw.balance.as_ref().map_or(0..0, Spanned::span);
            Err(invalid(
                span,
                format!(
                    "agent {agent}: balance = \"weighted\" needs weights = [..], one per replica ({count})"
                ),
            ))
        }
        (None, _) => Ok(Vec::new()),
        (Some(w), Balance::Weighted) => {
            let list = w.get_ref();
            if list.len() != count as usize || list.iter().any(|&x| !(1..=MAX_WEIGHT).contains(&x))
            {
                return Err(invalid(
                    w.span(),
                    format!(
                        "agent {agent}: weights needs {count} entries (one per replica), each 1 to {MAX_WEIGHT}; got {list:?}"
                    ),
                ));
            }
            Ok(list.clone())
        }
        (Some(w), other) => Err(invalid(
            w.span(),
            format!(
                "agent {agent}: weights go with balance = \"weighted\" only (it is \"{}\")",
                other.as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{AgentIndex, AgentSet, CallTarget};

    fn sut(text: &str) -> Result<AgentSet, ConfigError> {
        let file = SourceFile::from_text(Path::new("a.toml"), format!("schema = 1\n{text}"));
        AgentSet::from_sources(&[file])
    }

    fn agent(name: &str, extra: &str) -> String {
        format!(
            "[[agent]]\nname = \"{name}\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\n{extra}\n"
        )
    }

    #[test]
    fn a_replicated_agent_is_n_agents_named_by_index_and_called_by_its_name() {
        let text = agent("Caller", "calls = [\"Svc\"]") + &agent("Svc", "replicas = 3");
        let set = sut(&text).unwrap();
        let names: Vec<String> = set.iter().map(|(i, _)| set.display_name(i)).collect();
        assert_eq!(names, ["Caller", "Svc#0", "Svc#1", "Svc#2"]);
        let caller = set.get(AgentIndex(0));
        assert_eq!(caller.calls(), &[CallTarget::Local(AgentIndex(1))]);
        assert_eq!(set.target_name(&caller.calls()[0]), "Svc");
        let all: Vec<AgentIndex> = set.replicas_of(AgentIndex(2)).collect();
        assert_eq!(all, [AgentIndex(1), AgentIndex(2), AgentIndex(3)]);
        let second = set.get(AgentIndex(2));
        assert_eq!((second.service(), second.replica()), ("Svc", 1));
        assert_eq!(second.replicas().balance(), Balance::P2cEwma);
        assert_eq!(set.replicas_of(AgentIndex(0)).count(), 1);
    }

    #[test]
    fn every_replica_makes_the_entrys_calls_and_none_may_call_its_own_service() {
        let text = agent("Leaf", "") + &agent("Svc", "replicas = 2\ncalls = [\"Leaf\"]");
        let set = sut(&text).unwrap();
        for i in 1..3 {
            assert_eq!(
                set.get(AgentIndex(i)).calls(),
                &[CallTarget::Local(AgentIndex(0))]
            );
        }
        let err = sut(&agent("Svc", "replicas = 2\ncalls = [\"Svc\"]")).unwrap_err();
        assert!(err.to_string().contains("calls itself"), "{err}");
    }

    #[test]
    fn weighted_balance_takes_one_weight_per_replica() {
        let text = agent(
            "Svc",
            "replicas = 3\nbalance = \"weighted\"\nweights = [3, 1, 1]",
        );
        let set = sut(&text).unwrap();
        let replicas = set.get(AgentIndex(0)).replicas();
        assert_eq!((replicas.count(), replicas.weights()), (3, &[3, 1, 1][..]));
        let short = agent(
            "Svc",
            "replicas = 3\nbalance = \"weighted\"\nweights = [3, 1]",
        );
        let err = sut(&short).unwrap_err();
        assert!(err.to_string().contains("weights needs 3 entries"), "{err}");
        assert_eq!(err.location().unwrap().line(), 9);
        let missing = agent("Svc", "replicas = 3\nbalance = \"weighted\"");
        assert!(
            sut(&missing)
                .unwrap_err()
                .to_string()
                .contains("needs weights")
        );
        let stray = agent("Svc", "replicas = 3\nweights = [1, 1, 1]");
        assert!(
            sut(&stray)
                .unwrap_err()
                .to_string()
                .contains("weights go with balance = \"weighted\" only")
        );
    }

    #[test]
    fn balance_on_one_instance_and_too_many_replicas_are_errors_at_the_value() {
        let err = sut(&agent("Svc", "balance = \"round_robin\"")).unwrap_err();
        assert!(err.to_string().contains("runs one instance"), "{err}");
        assert_eq!(err.location().unwrap().line(), 7);
        let err = sut(&agent("Svc", "replicas = 65")).unwrap_err();
        assert!(
            err.to_string().contains("replicas must be 1 to 64"),
            "{err}"
        );
        let err = sut(&agent("Svc", "replicas = 2\nbalance = \"random\"")).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `random`"),
            "{err}"
        );
    }

    #[test]
    fn replica_names_cannot_be_called_directly() {
        let text = agent("Caller", "calls = [\"Svc#1\"]") + &agent("Svc", "replicas = 2");
        let err = sut(&text).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownCall { .. }), "{err}");
    }
}
