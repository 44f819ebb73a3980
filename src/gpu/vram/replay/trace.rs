//! Trace files: one JSON object per line, in time order.
//!
//! ```text
//! {"t_ms": 0, "op": "use", "agent": "STTService", "model": "whisper-large-v3", "vram_mib": 3100, "hold_ms": 800, "priority": "realtime"}
//! {"t_ms": 0, "op": "pin", "model": "whisper-large-v3"}
//! {"t_ms": 5000, "op": "external", "gpu": 0, "vram_mib": 2000}
//! {"t_ms": 9000, "op": "gpu_lost", "gpu": 0}
//! ```
//!
//! `external` says other programs now hold that much on the GPU (0 ends
//! it). A `pin` may carry `vram_mib`; without it the model must have been
//! used earlier in the trace, so its size is known. Blank lines are
//! skipped. Every line is checked before the replay starts: unknown keys,
//! a missing field, a time that goes backwards, a GPU the topology does
//! not have, a zero size. The error names the line and what to write.

use std::path::Path;

use serde::Deserialize;

use super::super::{Priority, VramError};

/// What happens at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TraceOp {
    /// An agent uses a model.
    Use {
        /// When, ms.
        t_ms: u64,
        /// The agent.
        agent: String,
        /// The model.
        model: String,
        /// Its VRAM, MiB.
        vram_mib: u64,
        /// How long the use holds it, ms.
        hold_ms: u64,
        /// Its class.
        priority: Priority,
    },
    /// The model is pinned from now on.
    Pin {
        /// When, ms.
        t_ms: u64,
        /// The model.
        model: String,
        /// Its VRAM, MiB, if not used earlier.
        vram_mib: Option<u64>,
    },
    /// Other programs now hold `vram_mib` on `gpu`.
    External {
        /// When, ms.
        t_ms: u64,
        /// The GPU.
        gpu: u32,
        /// MiB they hold.
        vram_mib: u64,
    },
    /// The GPU falls off the bus.
    GpuLost {
        /// When, ms.
        t_ms: u64,
        /// The GPU.
        gpu: u32,
    },
}

impl TraceOp {
    /// When it happens, ms.
    pub fn t_ms(&self) -> u64 {
        match self {
            TraceOp::Use { t_ms, .. }
            | TraceOp::Pin { t_ms, .. }
            | TraceOp::External { t_ms, .. }
            | TraceOp::GpuLost { t_ms, .. } => *t_ms,
        }
    }
}

/// A checked trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The operations, in time order.
    pub ops: Vec<TraceOp>,
}

impl Trace {
    /// Reads and checks `path` for a host with `gpus` GPUs.
    pub fn read(path: &Path, gpus: usize) -> Result<Self, VramError> {
        let text = std::fs::read_to_string(path).map_err(|source| VramError::TraceRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, gpus)
    }

    /// Checks the text of a trace (`path` names it in errors).
    pub fn parse(path: &Path, text: &str, gpus: usize) -> Result<Self, VramError> {
        let mut ops: Vec<TraceOp> = Vec::new();
        let mut sized: std::collections::HashSet<String> = Default::default();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| VramError::Trace {
                path: path.to_path_buf(),
                line: index + 1,
                message,
            };
            let op: TraceOp = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            if let Some(prev) = ops.last()
                && op.t_ms() < prev.t_ms()
            {
                return Err(bad(format!(
                    "t_ms {} is before the previous line's {}; sort the trace by t_ms",
                    op.t_ms(),
                    prev.t_ms()
                )));
            }
            check(&op, gpus, &mut sized).map_err(bad)?;
            ops.push(op);
        }
        Ok(Self { ops })
    }
}

fn check(
    op: &TraceOp,
    gpus: usize,
    sized: &mut std::collections::HashSet<String>,
) -> Result<(), String> {
    match op {
        TraceOp::Use {
            agent,
            model,
            vram_mib,
            ..
        } => {
            if agent.is_empty() || model.is_empty() {
                return Err("a use needs a non-empty agent and model".to_owned());
            }
            if *vram_mib == 0 {
                return Err(format!(
                    "use of {model} has vram_mib 0; give its VRAM in MiB"
                ));
            }
            sized.insert(model.clone());
        }
        TraceOp::Pin {
            model, vram_mib, ..
        } => match vram_mib {
            Some(0) => return Err(format!("pin of {model} has vram_mib 0")),
            Some(_) => {
                sized.insert(model.clone());
            }
            None if !sized.contains(model) => {
                return Err(format!(
                    "pin of {model} has no vram_mib and no earlier use gives its size; add \"vram_mib\""
                ));
            }
            None => {}
        },
        TraceOp::External { gpu, .. } | TraceOp::GpuLost { gpu, .. } => {
            if *gpu as usize >= gpus {
                return Err(format!(
                    "GPU {gpu} does not exist; the topology declares {gpus} GPU(s)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sut(text: &str) -> Result<Trace, VramError> {
        Trace::parse(Path::new("t.jsonl"), text, 1)
    }

    #[test]
    fn the_issue_example_lines_parse() {
        let trace = sut(concat!(
            r#"{"t_ms": 0, "op": "use", "agent": "STTService", "model": "whisper-large-v3", "vram_mib": 3100, "hold_ms": 800, "priority": "realtime"}"#,
            "\n",
            r#"{"t_ms": 1, "op": "pin", "model": "whisper-large-v3"}"#,
            "\n\n",
            r#"{"t_ms": 2, "op": "external", "gpu": 0, "vram_mib": 2000}"#,
            "\n",
            r#"{"t_ms": 3, "op": "gpu_lost", "gpu": 0}"#,
            "\n",
        ))
        .unwrap();
        assert_eq!(trace.ops.len(), 4);
    }

    #[test]
    fn errors_name_the_line() {
        let text = "{\"t_ms\": 5, \"op\": \"external\", \"gpu\": 0, \"vram_mib\": 1}\n{\"t_ms\": 4, \"op\": \"gpu_lost\", \"gpu\": 0}\n";
        let err = sut(text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.jsonl:2: t_ms 4 is before the previous line's 5; sort the trace by t_ms"
        );
        let err = sut("{\"t_ms\": 0, \"op\": \"gpu_lost\", \"gpu\": 1}\n").unwrap_err();
        assert!(
            err.to_string().contains("t.jsonl:1: GPU 1 does not exist"),
            "{err}"
        );
        let err = sut("{\"t_ms\": 0, \"op\": \"gpu_lost\", \"gpu\": 0, \"x\": 1}\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        let err = sut("{\"t_ms\": 0, \"op\": \"pin\", \"model\": \"m\"}\n").unwrap_err();
        assert!(err.to_string().contains("add \"vram_mib\""), "{err}");
    }
}
