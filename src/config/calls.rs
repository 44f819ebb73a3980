//! Resolving `calls`: a target written `Name` or `Name@host` to the
//! agent it means (see `agents.rs` for the rules), with errors that
//! suggest a near name or list the hosts that share it.

use std::collections::HashMap;
use std::fmt;

use toml::Spanned;

use super::agents::{AgentIndex, AgentSpec, CallTarget, Pending};
use super::{ConfigError, suggest};

pub(super) fn resolve_calls(pending: Vec<Pending>) -> Result<Vec<AgentSpec>, ConfigError> {
    let mut by_name: HashMap<&str, Vec<AgentIndex>> = HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        // A replicated agent is found by its service name, at its first
        // replica.
        if p.spec.replica() == 0 {
            by_name
                .entry(p.spec.service())
                .or_default()
                .push(AgentIndex(i));
        }
    }
    let hosts: Vec<&str> = pending.iter().map(|p| p.spec.host()).collect();
    let mut resolved: Vec<Vec<CallTarget>> = Vec::with_capacity(pending.len());
    for (me, p) in pending.iter().enumerate() {
        let mut targets: Vec<CallTarget> = Vec::new();
        for call in &p.raw_calls {
            let target = resolve_one(call, me, &pending, &by_name, &hosts)?;
            let at = || p.file.locate(call.span());
            let own_first = AgentIndex(me - p.spec.replica() as usize);
            if target == CallTarget::Local(own_first) {
                return Err(ConfigError::Invalid {
                    at: at(),
                    message: format!(
                        "agent {} calls itself; remove it from `calls`",
                        p.spec.service()
                    ),
                });
            }
            if targets.contains(&target) {
                return Err(ConfigError::Invalid {
                    at: at(),
                    message: format!(
                        "agent {} calls {} twice; remove one",
                        p.spec.service(),
                        call.get_ref()
                    ),
                });
            }
            targets.push(target);
        }
        resolved.push(targets);
    }
    Ok(pending
        .into_iter()
        .zip(resolved)
        .map(|(p, calls)| p.spec.with_calls(calls))
        .collect())
}

fn resolve_one(
    call: &Spanned<String>,
    me: usize,
    pending: &[Pending],
    by_name: &HashMap<&str, Vec<AgentIndex>>,
    hosts: &[&str],
) -> Result<CallTarget, ConfigError> {
    let caller = &pending[me];
    let text = call.get_ref();
    let (name, host) = match text.split_once('@') {
        Some((name, host)) => (name, Some(host)),
        None => (text.as_str(), None),
    };
    let candidates = by_name.get(name).map(Vec::as_slice).unwrap_or_default();
    let on = |host: &str| {
        candidates
            .iter()
            .copied()
            .find(|i| pending[i.0].spec.host() == host)
    };
    let found = match host {
        Some(host) => match on(host) {
            Some(index) => Ok(index),
            None if !hosts.contains(&host) => {
                return Ok(CallTarget::Remote {
                    name: name.to_owned(),
                    host: host.to_owned(),
                });
            }
            None => Err(None),
        },
        None => match (on(caller.spec.host()), candidates) {
            (Some(index), _) => Ok(index),
            (None, [only]) => Ok(*only),
            (None, []) => Err(None),
            (None, several) => Err(Some(several)),
        },
    };
    found
        .map(CallTarget::Local)
        .map_err(|several| call_error(call, caller, several, pending, by_name))
}

/// An unknown call (`several` is `None`) or one that fits agents on
/// several hosts.
fn call_error(
    call: &Spanned<String>,
    caller: &Pending,
    several: Option<&[AgentIndex]>,
    pending: &[Pending],
    by_name: &HashMap<&str, Vec<AgentIndex>>,
) -> ConfigError {
    let at = caller.file.locate(call.span());
    let agent = caller.spec.service().to_owned();
    let target = call.get_ref().clone();
    match several {
        Some(several) => {
            let hosts: Vec<&str> = several.iter().map(|i| pending[i.0].spec.host()).collect();
            ConfigError::AmbiguousCall {
                at,
                agent,
                target,
                hosts: hosts.join(", "),
            }
        }
        None => {
            let name = target.split('@').next().unwrap_or_default();
            let hint = Hint(suggest(name, by_name.keys().copied()).map(str::to_owned));
            ConfigError::UnknownCall {
                at,
                agent,
                target,
                hint,
            }
        }
    }
}

/// A "did you mean" for an unknown name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint(pub Option<String>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(name) => write!(f, "did you mean {name:?}?"),
            None => f.write_str("add the agent to a manifest, or qualify it as Name@host if it runs on another host"),
        }
    }
}
