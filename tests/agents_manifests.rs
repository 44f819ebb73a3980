//! The shipped agent manifests (`agents/*.toml`) against the seed system
//! (`seeds/000_*.txt` in the project's shared documents).
//!
//! The seed's agent names and its REQ/REP client edges are copied here by
//! hand, so a manifest edit that drops an agent or an edge fails a test
//! rather than going unnoticed. What these tests do not check: CPU
//! placement (that is `plan`'s job) or the accuracy of the VRAM estimates.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use pinwheel::config::{AgentKind, AgentSet, AgentSpec, CallTarget, NativeName};

const MAINPC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/agents/mainpc.toml");
const PC2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/agents/pc2.toml");
const VOICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/agents/voice-pipeline.toml");

/// The seed's MainPC agents (dependency table, `main_pc` rows).
#[rustfmt::skip]
const SEED_MAINPC: [&str; 54] = [
    "ActiveLearningMonitor", "AdvancedCommandHandler", "AudioCapture", "ChainOfThoughtAgent",
    "ChitchatAgent", "CloudTranslationService", "CodeGenerator", "CognitiveModelAgent",
    "CrossMachineGPUScheduler", "DynamicIdentityAgent", "EmotionEngine", "EmotionSynthesisAgent",
    "EmpathyAgent", "Executor", "FaceRecognitionAgent", "FeedbackHandler",
    "FusedAudioPreprocessor", "GoTToTAgent", "GoalManager", "HumanAwarenessAgent",
    "IntentionValidatorAgent", "KnowledgeBase", "LearningManager", "LearningOpportunityDetector",
    "LearningOrchestrationService", "MemoryClient", "ModelManagerSuite", "ModelOrchestrator",
    "MoodTrackerAgent", "NLUAgent", "ObservabilityDashboardAPI", "ObservabilityHub",
    "PredictiveHealthMonitor", "ProactiveAgent", "RequestCoordinator", "Responder", "STTService",
    "SelfHealingSupervisor", "ServiceRegistry", "SessionMemoryAgent", "SmartHomeAgent",
    "StreamingInterruptHandler", "StreamingLanguageAnalyzer", "StreamingSpeechRecognition",
    "StreamingTTSAgent", "StreamingTranslationProxy", "SystemDigitalTwin", "TTSService",
    "TinyLlamaServiceEnhanced", "ToneDetector", "UnifiedSystemAgent", "VRAMOptimizerAgent",
    "VoiceProfilingAgent", "WakeWordDetector",
];

/// The seed's PC2 agents (dependency table, `pc2` rows).
#[rustfmt::skip]
const SEED_PC2: [&str; 25] = [
    "AdvancedRouter", "AgentTrustScorer", "AsyncProcessor", "AuthenticationAgent", "CacheManager",
    "CentralErrorBus", "ContextManager", "DreamWorldAgent", "DreamingModeAgent",
    "ExperienceTracker", "FileSystemAssistantAgent", "MemoryOrchestratorService",
    "ObservabilityHub", "ProactiveContextMonitor", "RemoteConnectorAgent", "ResourceManager",
    "SelfHealingSupervisor", "SpeechRelayService", "TaskScheduler", "TieredResponder",
    "TutoringServiceAgent", "UnifiedMemoryReasoningAgent", "UnifiedUtilsAgent", "UnifiedWebAgent",
    "VisionProcessingAgent",
];

/// The seed's voice-to-response flow ("Critical Task Flow Mapping") plus
/// the registry and the interrupt handler it leans on.
#[rustfmt::skip]
const SEED_VOICE: [&str; 15] = [
    "AudioCapture", "FusedAudioPreprocessor", "StreamingSpeechRecognition", "STTService",
    "ModelManagerSuite", "RequestCoordinator", "SystemDigitalTwin", "ServiceRegistry",
    "NLUAgent", "ChainOfThoughtAgent", "Responder", "EmotionEngine", "TTSService",
    "StreamingTTSAgent", "StreamingInterruptHandler",
];

/// Every REQ/REP client edge of the seed's communication table, as
/// `caller@host -> callee@host`: the "ZMQ Client / ZMQ REQ / To X" rows and
/// the HTTP client rows whose target is an agent. ObservabilityHub's
/// "Agent health checks / Various" names no agent and is not here.
#[rustfmt::skip]
const SEED_TABLE_EDGES: [(&str, &str); 69] = [
    ("RequestCoordinator@mainpc", "ModelManagerSuite@mainpc"),
    ("RequestCoordinator@mainpc", "ChainOfThoughtAgent@mainpc"),
    ("VRAMOptimizerAgent@mainpc", "ModelManagerSuite@mainpc"),
    ("SelfHealingSupervisor@mainpc", "ObservabilityHub@mainpc"),
    ("MemoryClient@mainpc", "SystemDigitalTwin@mainpc"),
    ("SessionMemoryAgent@mainpc", "MemoryClient@mainpc"),
    ("KnowledgeBase@mainpc", "MemoryClient@mainpc"),
    ("CodeGenerator@mainpc", "ModelManagerSuite@mainpc"),
    ("PredictiveHealthMonitor@mainpc", "SystemDigitalTwin@mainpc"),
    ("Executor@mainpc", "CodeGenerator@mainpc"),
    ("TinyLlamaServiceEnhanced@mainpc", "ModelManagerSuite@mainpc"),
    ("SmartHomeAgent@mainpc", "SystemDigitalTwin@mainpc"),
    ("CrossMachineGPUScheduler@mainpc", "VisionProcessingAgent@pc2"),
    ("ChainOfThoughtAgent@mainpc", "ModelManagerSuite@mainpc"),
    ("GoTToTAgent@mainpc", "ChainOfThoughtAgent@mainpc"),
    ("CognitiveModelAgent@mainpc", "ChainOfThoughtAgent@mainpc"),
    ("FaceRecognitionAgent@mainpc", "ModelManagerSuite@mainpc"),
    ("LearningOrchestrationService@mainpc", "ModelManagerSuite@mainpc"),
    ("LearningOpportunityDetector@mainpc", "MemoryClient@mainpc"),
    ("LearningManager@mainpc", "MemoryClient@mainpc"),
    ("LearningManager@mainpc", "RequestCoordinator@mainpc"),
    ("ActiveLearningMonitor@mainpc", "LearningManager@mainpc"),
    ("ModelOrchestrator@mainpc", "ModelManagerSuite@mainpc"),
    ("GoalManager@mainpc", "ModelOrchestrator@mainpc"),
    ("IntentionValidatorAgent@mainpc", "RequestCoordinator@mainpc"),
    ("NLUAgent@mainpc", "SystemDigitalTwin@mainpc"),
    ("AdvancedCommandHandler@mainpc", "NLUAgent@mainpc"),
    ("AdvancedCommandHandler@mainpc", "CodeGenerator@mainpc"),
    ("ChitchatAgent@mainpc", "NLUAgent@mainpc"),
    ("FeedbackHandler@mainpc", "NLUAgent@mainpc"),
    ("Responder@mainpc", "EmotionEngine@mainpc"),
    ("Responder@mainpc", "TTSService@mainpc"),
    ("DynamicIdentityAgent@mainpc", "RequestCoordinator@mainpc"),
    ("EmotionSynthesisAgent@mainpc", "ModelManagerSuite@mainpc"),
    ("STTService@mainpc", "ModelManagerSuite@mainpc"),
    ("TTSService@mainpc", "ModelManagerSuite@mainpc"),
    ("AudioCapture@mainpc", "SystemDigitalTwin@mainpc"),
    ("StreamingSpeechRecognition@mainpc", "STTService@mainpc"),
    ("StreamingTTSAgent@mainpc", "TTSService@mainpc"),
    ("ProactiveAgent@mainpc", "RequestCoordinator@mainpc"),
    ("EmotionEngine@mainpc", "SystemDigitalTwin@mainpc"),
    ("MoodTrackerAgent@mainpc", "EmotionEngine@mainpc"),
    ("HumanAwarenessAgent@mainpc", "EmotionEngine@mainpc"),
    ("ToneDetector@mainpc", "EmotionEngine@mainpc"),
    ("VoiceProfilingAgent@mainpc", "EmotionEngine@mainpc"),
    ("EmpathyAgent@mainpc", "EmotionEngine@mainpc"),
    ("StreamingTranslationProxy@mainpc", "CloudTranslationService@mainpc"),
    ("ObservabilityDashboardAPI@mainpc", "ObservabilityHub@mainpc"),
    ("TieredResponder@pc2", "ResourceManager@pc2"),
    ("AsyncProcessor@pc2", "ResourceManager@pc2"),
    ("VisionProcessingAgent@pc2", "CacheManager@pc2"),
    ("DreamWorldAgent@pc2", "MemoryOrchestratorService@pc2"),
    ("UnifiedMemoryReasoningAgent@pc2", "MemoryOrchestratorService@pc2"),
    ("ContextManager@pc2", "MemoryOrchestratorService@pc2"),
    ("ExperienceTracker@pc2", "MemoryOrchestratorService@pc2"),
    ("ResourceManager@pc2", "ObservabilityHub@pc2"),
    ("TaskScheduler@pc2", "AsyncProcessor@pc2"),
    ("AuthenticationAgent@pc2", "UnifiedUtilsAgent@pc2"),
    ("UnifiedUtilsAgent@pc2", "ObservabilityHub@pc2"),
    ("ProactiveContextMonitor@pc2", "ContextManager@pc2"),
    ("AgentTrustScorer@pc2", "ObservabilityHub@pc2"),
    ("FileSystemAssistantAgent@pc2", "UnifiedUtilsAgent@pc2"),
    ("RemoteConnectorAgent@pc2", "AdvancedRouter@pc2"),
    ("DreamingModeAgent@pc2", "DreamWorldAgent@pc2"),
    ("AdvancedRouter@pc2", "TaskScheduler@pc2"),
    ("ObservabilityHub@pc2", "ObservabilityHub@mainpc"),
    ("TutoringServiceAgent@pc2", "MemoryOrchestratorService@pc2"),
    ("SelfHealingSupervisor@pc2", "ObservabilityHub@pc2"),
    ("SpeechRelayService@pc2", "VisionProcessingAgent@pc2"),
];

/// Edges from the seed's "Critical Task Flow Mapping" and mermaid graph that
/// the table does not list.
#[rustfmt::skip]
const SEED_FLOW_EDGES: [(&str, &str); 10] = [
    ("StreamingSpeechRecognition@mainpc", "RequestCoordinator@mainpc"),
    ("RequestCoordinator@mainpc", "SystemDigitalTwin@mainpc"),
    ("RequestCoordinator@mainpc", "NLUAgent@mainpc"),
    ("RequestCoordinator@mainpc", "Responder@mainpc"),
    ("SystemDigitalTwin@mainpc", "ServiceRegistry@mainpc"),
    ("SystemDigitalTwin@mainpc", "MemoryOrchestratorService@pc2"),
    ("ObservabilityHub@mainpc", "SystemDigitalTwin@mainpc"),
    ("ObservabilityHub@mainpc", "ModelManagerSuite@mainpc"),
    ("ObservabilityHub@mainpc", "RequestCoordinator@mainpc"),
    ("TTSService@mainpc", "StreamingTTSAgent@mainpc"),
];

/// The seed's ZMQ REP rows (communication table): agent, host, port.
#[rustfmt::skip]
const SEED_REP: [(&str, &str, u16); 65] = [
    ("ServiceRegistry", "mainpc", 7200), ("SystemDigitalTwin", "mainpc", 7220),
    ("RequestCoordinator", "mainpc", 26002), ("ModelManagerSuite", "mainpc", 7211),
    ("VRAMOptimizerAgent", "mainpc", 5572), ("UnifiedSystemAgent", "mainpc", 7201),
    ("MemoryClient", "mainpc", 5713), ("SessionMemoryAgent", "mainpc", 5574),
    ("KnowledgeBase", "mainpc", 5715), ("CodeGenerator", "mainpc", 5650),
    ("PredictiveHealthMonitor", "mainpc", 5613), ("Executor", "mainpc", 5606),
    ("TinyLlamaServiceEnhanced", "mainpc", 5615), ("SmartHomeAgent", "mainpc", 7125),
    ("ChainOfThoughtAgent", "mainpc", 5612), ("GoTToTAgent", "mainpc", 5646),
    ("CognitiveModelAgent", "mainpc", 5641), ("FaceRecognitionAgent", "mainpc", 5610),
    ("LearningOrchestrationService", "mainpc", 7210),
    ("LearningOpportunityDetector", "mainpc", 7202), ("LearningManager", "mainpc", 5580),
    ("ActiveLearningMonitor", "mainpc", 5638), ("ModelOrchestrator", "mainpc", 7213),
    ("GoalManager", "mainpc", 7205), ("IntentionValidatorAgent", "mainpc", 5701),
    ("NLUAgent", "mainpc", 5709), ("AdvancedCommandHandler", "mainpc", 5710),
    ("ChitchatAgent", "mainpc", 5711), ("FeedbackHandler", "mainpc", 5636),
    ("Responder", "mainpc", 5637), ("DynamicIdentityAgent", "mainpc", 5802),
    ("EmotionSynthesisAgent", "mainpc", 5706), ("STTService", "mainpc", 5800),
    ("TTSService", "mainpc", 5801), ("StreamingInterruptHandler", "mainpc", 5576),
    ("StreamingTTSAgent", "mainpc", 5562), ("ProactiveAgent", "mainpc", 5624),
    ("EmotionEngine", "mainpc", 5590), ("MoodTrackerAgent", "mainpc", 5704),
    ("HumanAwarenessAgent", "mainpc", 5705), ("ToneDetector", "mainpc", 5625),
    ("VoiceProfilingAgent", "mainpc", 5708), ("EmpathyAgent", "mainpc", 5703),
    ("CloudTranslationService", "mainpc", 5592), ("MemoryOrchestratorService", "pc2", 7140),
    ("TieredResponder", "pc2", 7100), ("AsyncProcessor", "pc2", 7101),
    ("CacheManager", "pc2", 7102), ("VisionProcessingAgent", "pc2", 7150),
    ("DreamWorldAgent", "pc2", 7104), ("UnifiedMemoryReasoningAgent", "pc2", 7105),
    ("ContextManager", "pc2", 7111), ("ExperienceTracker", "pc2", 7112),
    ("ResourceManager", "pc2", 7113), ("TaskScheduler", "pc2", 7115),
    ("AuthenticationAgent", "pc2", 7116), ("UnifiedUtilsAgent", "pc2", 7118),
    ("ProactiveContextMonitor", "pc2", 7119), ("AgentTrustScorer", "pc2", 7122),
    ("FileSystemAssistantAgent", "pc2", 7123), ("RemoteConnectorAgent", "pc2", 7124),
    ("UnifiedWebAgent", "pc2", 7126), ("DreamingModeAgent", "pc2", 7127),
    ("AdvancedRouter", "pc2", 7129), ("TutoringServiceAgent", "pc2", 7108),
];

/// The seed's ZMQ PUB rows whose port no REP row of the host has too.
#[rustfmt::skip]
const SEED_PUB: [(&str, &str, u16); 7] = [
    ("ObservabilityHub", "mainpc", 7152), ("AudioCapture", "mainpc", 6550),
    ("FusedAudioPreprocessor", "mainpc", 6551), ("StreamingSpeechRecognition", "mainpc", 6553),
    ("WakeWordDetector", "mainpc", 6552), ("StreamingLanguageAnalyzer", "mainpc", 5579),
    ("EmotionEngine", "mainpc", 5591),
];

fn load(paths: &[&str]) -> AgentSet {
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    AgentSet::load(&paths).unwrap_or_else(|e| panic!("{e}"))
}

fn qualified(agent: &AgentSpec) -> String {
    format!("{}@{}", agent.name(), agent.host())
}

fn target(set: &AgentSet, call: &CallTarget) -> String {
    match call {
        CallTarget::Local(index) => qualified(set.get(*index)),
        CallTarget::Remote { name, host } => format!("{name}@{host}"),
    }
}

/// Every call of the set as `caller@host -> callee@host`.
fn edges(set: &AgentSet) -> BTreeSet<(String, String)> {
    set.agents()
        .iter()
        .flat_map(|a| a.calls().iter().map(|c| (qualified(a), target(set, c))))
        .collect()
}

fn by_name<'a>(set: &'a AgentSet, name: &str) -> &'a AgentSpec {
    set.agents()
        .iter()
        .find(|a| a.name() == name)
        .unwrap_or_else(|| panic!("no agent {name}"))
}

fn names_on(set: &AgentSet, host: &str) -> BTreeSet<String> {
    set.agents()
        .iter()
        .filter(|a| a.host() == host)
        .map(|a| a.name().to_owned())
        .collect()
}

/// Simple cycles of the set's local call graph, each rotated to start at
/// its smallest name, as `a -> b -> a`.
fn call_cycles(set: &AgentSet) -> BTreeSet<String> {
    let graph: BTreeMap<String, Vec<String>> = set
        .agents()
        .iter()
        .map(|a| {
            let local = a.calls().iter().filter_map(|c| match c {
                CallTarget::Local(index) => Some(qualified(set.get(*index))),
                CallTarget::Remote { .. } => None,
            });
            (qualified(a), local.collect())
        })
        .collect();
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut path = vec![start.clone()];
        walk(&graph, start, &mut path, &mut found);
    }
    found
}

fn walk(
    graph: &BTreeMap<String, Vec<String>>,
    start: &str,
    path: &mut Vec<String>,
    found: &mut BTreeSet<String>,
) {
    let last = path.last().expect("path starts non-empty").clone();
    for next in &graph[&last] {
        if next == start {
            found.insert(format!("{} -> {start}", path.join(" -> ")));
        } else if next.as_str() > start && !path.contains(next) {
            path.push(next.clone());
            walk(graph, start, path, found);
            path.pop();
        }
    }
}

#[test]
fn mainpc_manifest_defines_exactly_the_seeds_54_mainpc_agents_on_host_mainpc() {
    let sut = load(&[MAINPC]);

    let expected: BTreeSet<String> = SEED_MAINPC.iter().map(|&n| n.to_owned()).collect();
    assert_eq!(sut.len(), 54);
    assert_eq!(names_on(&sut, "mainpc"), expected);
}

#[test]
fn pc2_manifest_defines_exactly_the_seeds_25_pc2_agents_on_host_pc2() {
    let sut = load(&[PC2]);

    let expected: BTreeSet<String> = SEED_PC2.iter().map(|&n| n.to_owned()).collect();
    assert_eq!(sut.len(), 25);
    assert_eq!(names_on(&sut, "pc2"), expected);
}

#[test]
fn both_manifests_load_together_into_the_79_agent_mesh_with_two_observability_hubs() {
    let sut = load(&[MAINPC, PC2]);

    assert_eq!(sut.len(), 79);
    assert_eq!(names_on(&sut, "mainpc").len(), 54);
    assert_eq!(names_on(&sut, "pc2").len(), 25);
    for twin in ["ObservabilityHub", "SelfHealingSupervisor"] {
        let hosts: BTreeSet<&str> = sut
            .agents()
            .iter()
            .filter(|a| a.name() == twin)
            .map(AgentSpec::host)
            .collect();
        assert_eq!(hosts, BTreeSet::from(["mainpc", "pc2"]), "{twin}");
    }
}

#[test]
fn every_request_reply_client_edge_of_the_seed_table_is_a_call() {
    let sut = edges(&load(&[MAINPC, PC2]));

    let missing: Vec<_> = SEED_TABLE_EDGES
        .iter()
        .filter(|(from, to)| !sut.contains(&((*from).to_owned(), (*to).to_owned())))
        .collect();
    assert!(missing.is_empty(), "missing table edges: {missing:?}");
}

#[test]
fn the_calls_are_the_table_edges_plus_the_flow_edges_and_nothing_else() {
    let sut = edges(&load(&[MAINPC, PC2]));

    let expected: BTreeSet<(String, String)> = SEED_TABLE_EDGES
        .iter()
        .chain(SEED_FLOW_EDGES.iter())
        .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
        .collect();
    let extra: Vec<_> = sut.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&sut).collect();
    assert!(extra.is_empty(), "calls the seed does not have: {extra:?}");
    assert!(
        missing.is_empty(),
        "seed edges that are not calls: {missing:?}"
    );
}

#[test]
fn calls_to_the_other_host_stay_remote_when_only_one_manifest_is_loaded() {
    let mainpc = load(&[MAINPC]);
    let pc2 = load(&[PC2]);

    let remote = |name: &str, host: &str| CallTarget::Remote {
        name: name.to_owned(),
        host: host.to_owned(),
    };
    assert!(
        by_name(&mainpc, "SystemDigitalTwin")
            .calls()
            .contains(&remote("MemoryOrchestratorService", "pc2"))
    );
    assert!(
        by_name(&mainpc, "CrossMachineGPUScheduler")
            .calls()
            .contains(&remote("VisionProcessingAgent", "pc2"))
    );
    assert_eq!(
        by_name(&pc2, "ObservabilityHub").calls(),
        &[remote("ObservabilityHub", "mainpc")]
    );
}

#[test]
fn the_only_call_cycle_of_the_whole_mesh_is_tts_service_and_streaming_tts_agent() {
    let expected = BTreeSet::from([
        "StreamingTTSAgent@mainpc -> TTSService@mainpc -> StreamingTTSAgent@mainpc".to_owned(),
    ]);

    assert_eq!(call_cycles(&load(&[MAINPC])), expected);
    assert_eq!(call_cycles(&load(&[PC2])), BTreeSet::new());
    assert_eq!(call_cycles(&load(&[MAINPC, PC2])), expected);
}

#[test]
fn only_the_registries_and_the_coordinator_are_native_and_the_rest_is_synthetic() {
    let sut = load(&[MAINPC, PC2]);

    for agent in sut.agents() {
        let expected = match agent.name() {
            "ServiceRegistry" | "SystemDigitalTwin" => AgentKind::Native(NativeName::Registry),
            "RequestCoordinator" => AgentKind::Native(NativeName::Coordinator),
            _ => AgentKind::Synthetic,
        };
        assert_eq!(agent.kind(), expected, "{}", qualified(agent));
    }
}

#[test]
fn every_subscribed_topic_has_a_publisher_in_the_mesh() {
    let sut = load(&[MAINPC, PC2]);

    let published: BTreeSet<&str> = sut
        .agents()
        .iter()
        .flat_map(|a| a.publishes().iter().map(String::as_str))
        .collect();
    for agent in sut.agents() {
        for topic in agent.subscribes() {
            assert!(
                published.contains(topic.as_str()),
                "{} subscribes to {topic}, which nobody publishes",
                qualified(agent)
            );
        }
    }
}

#[test]
fn voice_pipeline_holds_exactly_the_seeds_voice_to_response_flow_on_mainpc() {
    let sut = load(&[VOICE]);

    let expected: BTreeSet<String> = SEED_VOICE.iter().map(|&n| n.to_owned()).collect();
    assert_eq!(sut.len(), 15);
    assert_eq!(names_on(&sut, "mainpc"), expected);
}

#[test]
fn voice_pipeline_agents_are_mainpc_agents_with_the_same_kind_class_priority_and_models() {
    let sut = load(&[VOICE]);
    let mainpc = load(&[MAINPC]);

    let full_edges = edges(&mainpc);
    for agent in sut.agents() {
        let twin = by_name(&mainpc, agent.name());
        assert_eq!(agent.host(), twin.host(), "{}", agent.name());
        assert_eq!(agent.kind(), twin.kind(), "{}", agent.name());
        assert_eq!(agent.placement(), twin.placement(), "{}", agent.name());
        assert_eq!(agent.priority(), twin.priority(), "{}", agent.name());
        assert_eq!(agent.models(), twin.models(), "{}", agent.name());
        assert_eq!(agent.weight(), twin.weight(), "{}", agent.name());
        assert_eq!(agent.ports(), twin.ports(), "{}", agent.name());
        assert_eq!(agent.publishes(), twin.publishes(), "{}", agent.name());
        assert_eq!(agent.subscribes(), twin.subscribes(), "{}", agent.name());
        for call in agent.calls() {
            let edge = (qualified(agent), target(&sut, call));
            assert!(full_edges.contains(&edge), "{edge:?} is not in mainpc.toml");
        }
    }
}

#[test]
fn voice_pipeline_keeps_every_mainpc_call_between_its_own_agents() {
    let sut = edges(&load(&[VOICE]));

    let inside = |name: &str| {
        SEED_VOICE
            .iter()
            .any(|v| name == format!("{v}@mainpc") || name.ends_with("@pc2"))
    };
    let expected: BTreeSet<(String, String)> = edges(&load(&[MAINPC]))
        .into_iter()
        .filter(|(from, to)| inside(from) && inside(to))
        .collect();
    assert_eq!(sut, expected);
}

#[test]
fn every_model_need_is_marked_as_an_estimate() {
    for sut in [load(&[MAINPC, PC2]), load(&[VOICE])] {
        let needs: Vec<_> = sut
            .agents()
            .iter()
            .flat_map(|a| a.models().iter().map(move |m| (qualified(a), m)))
            .collect();
        assert!(!needs.is_empty());
        for (agent, model) in needs {
            assert!(model.estimate, "{agent}: {} is not an estimate", model.name);
        }
    }
}

#[test]
fn every_zmq_rep_and_pub_row_of_the_seed_is_a_legacy_port_of_its_agent() {
    let sut = load(&[MAINPC, PC2]);
    let on = |name: &str, host: &str| {
        sut.agents()
            .iter()
            .find(|a| a.name() == name && a.host() == host)
            .unwrap_or_else(|| panic!("{name}@{host} is not in the manifests"))
    };

    for (name, host, port) in SEED_REP {
        assert_eq!(on(name, host).legacy().rep(), Some(port), "{name}@{host}");
    }
    for (name, host, port) in SEED_PUB {
        assert_eq!(
            on(name, host).legacy().publish(),
            Some(port),
            "{name}@{host}"
        );
    }
    let reps = sut.agents().iter().filter(|a| a.legacy().rep().is_some());
    let pubs = sut
        .agents()
        .iter()
        .filter(|a| a.legacy().publish().is_some());
    assert_eq!(
        (reps.count(), pubs.count()),
        (SEED_REP.len(), SEED_PUB.len())
    );
}
