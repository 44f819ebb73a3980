//! The VRAM traces under `tests/fixtures/traces/`, generated from the
//! seed's agent manifests with a fixed-seed generator, so they can be
//! rebuilt and checked rather than trusted.
//!
//! Models and sizes come from `agents/mainpc.toml` (the agents that name a
//! GPU model); the host is `topology/mainpc.toml` (one RTX 4090, 24564
//! MiB). A voice turn follows the seed's real-time path: AudioCapture
//! (whisper-base) hears speech, STTService (whisper-large-v3) transcribes
//! it while ToneDetector (whisper-base) reads its tone, ModelOrchestrator
//! (all-MiniLM-L6-v2) embeds it for memory retrieval, the LLM answers
//! (ModelManagerSuite's phi-3 mostly, TinyLlamaServiceEnhanced
//! sometimes), and TTSService (xtts-v2) speaks. The real-time models
//! (whisper-base for listening, whisper-large-v3, xtts-v2: 5.4 GiB) are
//! pinned at the start of each trace, as an operator of the voice path
//! would.
//!
//! * `voice-day`: 24 hours. Conversations (1 to 5 turns) arrive at random,
//!   about four an hour, from 07:00 to 23:30; FaceRecognitionAgent scans
//!   the camera every 15 minutes in waking hours; ModelOrchestrator
//!   re-embeds memories every hour; a ChainOfThought reflection runs phi-3
//!   in batch at 02:00; from 19:30 to 22:30 a game holds 10-13.5 GiB.
//! * `voice-burst`: 15 minutes. After a minute of quiet, four minutes of
//!   overlapping conversations from several rooms, code questions to
//!   TinyLlama, faces at the door every 10 s and memory indexing, with
//!   the desktop holding 1.5 GiB.
//! * `memory-pressure`: 2 hours of steady conversation while an image
//!   generator (SDXL in ComfyUI) starts and stops, holding 6-12 GiB in
//!   sessions of 5-15 minutes.
//!
//! The generator is splitmix64 with a fixed seed per trace: the same
//! bytes on every machine and toolchain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::{AgentSet, ConfigError};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

/// The traces, by file name, as their full text.
pub fn generate(repo: &Path) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let catalog = Catalog::load(repo)?;
    Ok(vec![
        ("voice-day.jsonl", voice_day(&catalog)),
        ("voice-burst.jsonl", voice_burst(&catalog)),
        ("memory-pressure.jsonl", memory_pressure(&catalog)),
    ])
}

/// Each agent's model and its VRAM, from the manifests.
struct Catalog {
    models: HashMap<String, (String, u64)>,
}

impl Catalog {
    fn load(repo: &Path) -> Result<Self, ConfigError> {
        let paths: Vec<PathBuf> = ["agents/mainpc.toml", "agents/pc2.toml"]
            .iter()
            .map(|p| repo.join(p))
            .collect();
        let agents = AgentSet::load(&paths)?;
        let models = agents
            .agents()
            .iter()
            .filter_map(|a| {
                a.models()
                    .first()
                    .map(|m| (a.name().to_owned(), (m.name.clone(), m.vram_mib)))
            })
            .collect();
        Ok(Self { models })
    }

    fn of(&self, agent: &str) -> (&str, u64) {
        let (model, mib) = self
            .models
            .get(agent)
            .unwrap_or_else(|| panic!("agents/mainpc.toml gives {agent} no model"));
        (model, *mib)
    }
}

/// splitmix64: tiny, portable, good enough for scheduling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with chance `pct` percent.
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    /// Exponential gap with mean `mean`, ms.
    fn exp(&mut self, mean: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (-(1.0 - u).ln() * mean as f64) as u64
    }
}

/// Collects trace lines and sorts them by time.
struct Gen<'a> {
    catalog: &'a Catalog,
    rng: Rng,
    lines: Vec<(u64, usize, String)>,
}

impl<'a> Gen<'a> {
    fn new(catalog: &'a Catalog, seed: u64) -> Self {
        let mut tg = Self {
            catalog,
            rng: Rng(seed),
            lines: Vec::new(),
        };
        for agent in ["AudioCapture", "STTService", "TTSService"] {
            let (model, mib) = catalog.of(agent);
            tg.push(
                0,
                json!({"t_ms": 0, "op": "pin", "model": model, "vram_mib": mib}),
            );
        }
        tg
    }

    fn push(&mut self, t: u64, value: serde_json::Value) {
        let seq = self.lines.len();
        self.lines.push((t, seq, value.to_string()));
    }

    fn use_model(&mut self, t: u64, agent: &str, hold_ms: u64, priority: &str) {
        let (model, mib) = self.catalog.of(agent);
        let line = json!({"t_ms": t, "op": "use", "agent": agent, "model": model,
            "vram_mib": mib, "hold_ms": hold_ms, "priority": priority});
        self.push(t, line);
    }

    fn external(&mut self, t: u64, mib: u64) {
        self.push(
            t,
            json!({"t_ms": t, "op": "external", "gpu": 0, "vram_mib": mib}),
        );
    }

    /// One voice turn from `t`; `tiny_pct` percent go to TinyLlama.
    /// Returns when its speech ends.
    fn turn(&mut self, t: u64, tiny_pct: u64) -> u64 {
        self.use_model(t, "AudioCapture", 200, "realtime");
        let stt_at = t + 250;
        let stt = self.rng.range(600, 1400);
        self.use_model(stt_at, "STTService", stt, "realtime");
        self.use_model(stt_at, "ToneDetector", 300, "interactive");
        let llm_at = stt_at + stt + 100;
        self.use_model(llm_at, "ModelOrchestrator", 50, "interactive");
        let llm = self.rng.range(1500, 5000);
        let agent = if self.rng.chance(tiny_pct) {
            "TinyLlamaServiceEnhanced"
        } else {
            "ModelManagerSuite"
        };
        self.use_model(llm_at + 60, agent, llm, "interactive");
        let tts_at = llm_at + 60 + llm + 100;
        let tts = self.rng.range(1500, 4000);
        self.use_model(tts_at, "TTSService", tts, "realtime");
        tts_at + tts
    }

    /// A conversation of 1 to `max_turns` turns from `t`.
    fn conversation(&mut self, t: u64, max_turns: u64, tiny_pct: u64) -> u64 {
        let mut at = t;
        for _ in 0..self.rng.range(1, max_turns) {
            let end = self.turn(at, tiny_pct);
            at = end + self.rng.range(8_000, 40_000);
        }
        at
    }

    fn finish(mut self) -> String {
        self.lines.sort_by_key(|(t, seq, _)| (*t, *seq));
        let mut text = String::new();
        for (_, _, line) in self.lines {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

fn voice_day(catalog: &Catalog) -> String {
    let mut tg = Gen::new(catalog, 0x5EED_DA11);
    let mut t = 7 * HOUR + tg.rng.exp(15 * MINUTE);
    while t < 23 * HOUR + 30 * MINUTE {
        let end = tg.conversation(t, 5, 15);
        t = end.max(t + tg.rng.exp(15 * MINUTE));
    }
    let mut scan = 7 * HOUR;
    while scan < 23 * HOUR + 30 * MINUTE {
        tg.use_model(scan, "FaceRecognitionAgent", 300, "batch");
        scan += 15 * MINUTE + tg.rng.range(0, 30_000);
    }
    for hour in 0..24 {
        tg.use_model(
            hour * HOUR + 5 * MINUTE,
            "ModelOrchestrator",
            60_000,
            "batch",
        );
    }
    for i in 0..30 {
        tg.use_model(2 * HOUR + i * 10_000, "ModelManagerSuite", 5_000, "batch");
    }
    let mut game = 19 * HOUR + 30 * MINUTE;
    while game < 22 * HOUR + 30 * MINUTE {
        let mib = tg.rng.range(10_240, 13_824);
        tg.external(game, mib);
        game += tg.rng.range(5 * MINUTE, 10 * MINUTE);
    }
    tg.external(22 * HOUR + 30 * MINUTE, 0);
    tg.finish()
}

fn voice_burst(catalog: &Catalog) -> String {
    let mut tg = Gen::new(catalog, 0x00B0_0257);
    tg.external(0, 1_536);
    for room in 0..3 {
        let mut t = MINUTE + room * 7_000;
        while t < 5 * MINUTE {
            t = tg.conversation(t, 3, 30) + tg.rng.range(2_000, 8_000);
        }
    }
    let mut t = MINUTE;
    while t < 5 * MINUTE {
        tg.use_model(t, "FaceRecognitionAgent", 300, "interactive");
        if tg.rng.chance(50) {
            tg.use_model(t + 500, "ModelOrchestrator", 2_000, "batch");
        }
        t += 10_000;
    }
    tg.finish()
}

fn memory_pressure(catalog: &Catalog) -> String {
    let mut tg = Gen::new(catalog, 0x055D_C0DE);
    let mut t = tg.rng.range(10_000, 60_000);
    while t < 2 * HOUR {
        let end = tg.conversation(t, 3, 20);
        t = end + tg.rng.range(60_000, 240_000);
    }
    let mut face = 0;
    while face < 2 * HOUR {
        tg.use_model(face, "FaceRecognitionAgent", 300, "batch");
        face += 10 * MINUTE;
    }
    let mut at = 5 * MINUTE;
    while at < 2 * HOUR {
        let session_end = at + tg.rng.range(5 * MINUTE, 15 * MINUTE);
        while at < session_end {
            let mib = tg.rng.range(8_192, 16_384);
            tg.external(at, mib);
            at += tg.rng.range(30_000, 120_000);
        }
        tg.external(at, 0);
        at += tg.rng.range(3 * MINUTE, 10 * MINUTE);
    }
    tg.finish()
}
