//! `pinwheel top`'s state: the last answers from the daemon, and what the
//! operator has chosen (sort, filter, selection, the pin dialog). Keys
//! come in as [`KeyEvent`]s and go out as an [`Action`] for the loop to
//! carry out; nothing here does I/O or draws, so it is tested directly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::widgets::ListState;

use crate::observe::api::{
    AgentStatus, AgentsResponse, ClusterResponse, ExecutorStatus, GpusResponse, HealthReport,
    PlanResponse,
};

/// Everything one refresh brought.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `GET /health`.
    pub health: HealthReport,
    /// `GET /v1/agents`.
    pub agents: AgentsResponse,
    /// `GET /v1/gpus`.
    pub gpus: GpusResponse,
    /// `GET /v1/cluster`.
    pub cluster: ClusterResponse,
    /// `GET /v1/plan` (it does not change while a daemon runs).
    pub plan: PlanResponse,
}

/// How agents are ordered within their CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// The plan's order.
    Plan,
    /// By name.
    Name,
    /// Busiest first.
    Rate,
    /// Slowest p99 first.
    P99,
    /// Most restarted first.
    Restarts,
}

impl SortKey {
    /// The next key, for the `s` key.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Plan => SortKey::Name,
            SortKey::Name => SortKey::Rate,
            SortKey::Rate => SortKey::P99,
            SortKey::P99 => SortKey::Restarts,
            SortKey::Restarts => SortKey::Plan,
        }
    }

    /// Its name on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Plan => "plan",
            SortKey::Name => "name",
            SortKey::Rate => "msgs/s",
            SortKey::P99 => "p99",
            SortKey::Restarts => "restarts",
        }
    }
}

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Moving, sorting, quitting.
    Normal,
    /// Typing the name filter after `/`.
    Filter,
    /// Choosing a model to pin or unpin after `p`.
    Pick {
        /// The models, with whether each is pinned.
        models: Vec<(String, bool)>,
        /// The one under the cursor.
        at: usize,
    },
    /// Typing the token file for a pin or unpin.
    Token {
        /// The model.
        model: String,
        /// Pin (else unpin).
        pin: bool,
        /// The path typed so far.
        path: String,
    },
}

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Leave, restoring the terminal.
    Quit,
    /// Pin or unpin a model through the admin API.
    Pin {
        /// The model.
        model: String,
        /// Pin (else unpin).
        pin: bool,
        /// The token file.
        token_file: PathBuf,
    },
}

/// A line of the agents table.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// A CPU's header: its executor and class.
    Cpu(u32, &'a str, Option<&'a ExecutorStatus>),
    /// An agent under it.
    Agent(&'a AgentStatus),
}

/// The state of `pinwheel top`.
#[derive(Debug)]
pub struct App {
    /// The last refresh, if any arrived.
    pub data: Option<Snapshot>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
    /// The order within each CPU.
    pub sort: SortKey,
    /// Only agents whose name holds this (case-insensitive).
    pub filter: String,
    /// What the keyboard is doing.
    pub mode: Mode,
    /// Show the selected agent's routes.
    pub show_routes: bool,
    /// The result of the last pin or unpin.
    pub message: Option<String>,
    /// The agents list's selection and scroll offset (row indices).
    pub list: ListState,
    /// The token file last used (pre-filled in the dialog).
    token_file: PathBuf,
    /// The selected agent's name, kept across refreshes and re-sorts.
    selected: Option<String>,
}

impl App {
    /// A fresh state; `token_file` pre-fills the pin dialog.
    pub fn new(token_file: PathBuf) -> App {
        App {
            data: None,
            error: None,
            sort: SortKey::Plan,
            filter: String::new(),
            mode: Mode::Normal,
            show_routes: false,
            message: None,
            list: ListState::default(),
            token_file,
            selected: None,
        }
    }

    /// Takes a refresh.
    pub fn update(&mut self, data: Snapshot) {
        self.data = Some(data);
        self.error = None;
        self.sync_selection();
    }

    /// The agents table: each CPU's header, then its agents that pass the
    /// filter, in the chosen order.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let Some(data) = &self.data else {
            return Vec::new();
        };
        let classes: BTreeMap<u32, &str> = data
            .plan
            .placements
            .iter()
            .map(|p| (p.cpu, p.class.as_str()))
            .collect();
        let needle = self.filter.to_lowercase();
        let mut by_cpu: BTreeMap<u32, Vec<&AgentStatus>> = BTreeMap::new();
        for agent in &data.agents.agents {
            if needle.is_empty() || agent.name.to_lowercase().contains(&needle) {
                by_cpu.entry(agent.cpu).or_default().push(agent);
            }
        }
        let mut rows = Vec::new();
        for (cpu, mut agents) in by_cpu {
            sort(&mut agents, self.sort);
            let executor = data.agents.executors.iter().find(|e| e.cpu == cpu);
            let class = classes.get(&cpu).copied().unwrap_or("?");
            rows.push(Row::Cpu(cpu, class, executor));
            rows.extend(agents.into_iter().map(Row::Agent));
        }
        rows
    }

    /// The selected agent, if any.
    pub fn selected_agent(&self) -> Option<&AgentStatus> {
        let name = self.selected.as_deref()?;
        self.data
            .as_ref()?
            .agents
            .agents
            .iter()
            .find(|a| a.name == name)
    }

    /// The selected agent's routes from the plan: `-> callee (how)` and
    /// `<- caller (how)`.
    pub fn routes(&self) -> Vec<String> {
        let (Some(data), Some(agent)) = (&self.data, self.selected_agent()) else {
            return Vec::new();
        };
        let name = agent.name.as_str();
        let mut lines = Vec::new();
        let rings = data.plan.rings.iter().flat_map(|ring| {
            let via = format!("ring cpu {} -> {}", ring.from_cpu, ring.to_cpu);
            ring.routes.iter().map(move |r| (r, via.clone()))
        });
        let local = data
            .plan
            .local_routes
            .iter()
            .map(|r| (r, "same cpu".to_owned()));
        for (route, via) in rings.chain(local) {
            let what = match &route.topic {
                Some(topic) => format!("{} {topic}", route.kind),
                None => route.kind.clone(),
            };
            if route.from == name {
                lines.push(format!("-> {} ({what}, {via})", route.to));
            } else if route.to == name {
                lines.push(format!("<- {} ({what}, {via})", route.from));
            }
        }
        for remote in data.plan.remote_routes.iter().filter(|r| r.from == name) {
            lines.push(format!("-> {} (other host)", remote.to));
        }
        lines
    }

    /// The models the daemon knows of, each with whether it is pinned:
    /// resident ones, placed ones and those of recent decisions.
    pub fn models(&self) -> Vec<(String, bool)> {
        let Some(data) = &self.data else {
            return Vec::new();
        };
        let mut models: BTreeMap<String, bool> = BTreeMap::new();
        for m in data.gpus.gpus.iter().flat_map(|g| &g.resident) {
            *models.entry(m.model.clone()).or_default() |= m.pinned;
        }
        for p in &data.cluster.placements {
            *models.entry(p.model.clone()).or_default() |= p.pinned;
        }
        for d in &data.gpus.decisions {
            models.entry(d.model.clone()).or_default();
        }
        models.into_iter().collect()
    }

    /// Handles one key.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(key),
            Mode::Filter => {
                self.filter_key(key);
                Action::None
            }
            Mode::Pick { models, at } => self.pick_key(key, models, at),
            Mode::Token { model, pin, path } => self.token_key(key, model, pin, path),
        }
    }

    fn normal_key(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('/') => {
                self.mode = Mode::Filter;
            }
            KeyCode::Char('p') => {
                let models = self.models();
                if models.is_empty() {
                    self.message = Some("no models known yet to pin".to_owned());
                } else {
                    self.mode = Mode::Pick { models, at: 0 };
                }
            }
            KeyCode::Enter => self.show_routes = !self.show_routes,
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::PageDown => self.move_by(PAGE),
            KeyCode::PageUp => self.move_by(-PAGE),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            _ => {}
        }
        self.sync_selection();
        Action::None
    }

    fn filter_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Enter => {}
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Backspace => {
                self.filter.pop();
                self.mode = Mode::Filter;
            }
            KeyCode::Char(c) => {
                self.filter.push(c);
                self.mode = Mode::Filter;
            }
            _ => self.mode = Mode::Filter,
        }
        self.sync_selection();
    }

    fn pick_key(&mut self, key: KeyEvent, models: Vec<(String, bool)>, at: usize) -> Action {
        let last = models.len().saturating_sub(1);
        match key.code {
            KeyCode::Esc => {}
            KeyCode::Enter => {
                if let Some((model, pinned)) = models.get(at) {
                    self.mode = Mode::Token {
                        model: model.clone(),
                        pin: !pinned,
                        path: self.token_file.display().to_string(),
                    };
                }
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.mode = Mode::Pick {
                    models,
                    at: (at + 1).min(last),
                };
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.mode = Mode::Pick {
                    models,
                    at: at.saturating_sub(1),
                };
            }
            _ => self.mode = Mode::Pick { models, at },
        }
        Action::None
    }

    fn token_key(&mut self, key: KeyEvent, model: String, pin: bool, mut path: String) -> Action {
        match key.code {
            KeyCode::Esc => Action::None,
            KeyCode::Enter => {
                self.token_file = PathBuf::from(path.trim());
                Action::Pin {
                    model,
                    pin,
                    token_file: self.token_file.clone(),
                }
            }
            code => {
                match code {
                    KeyCode::Backspace => {
                        path.pop();
                    }
                    KeyCode::Char(c) => path.push(c),
                    _ => {}
                }
                self.mode = Mode::Token { model, pin, path };
                Action::None
            }
        }
    }

    /// Moves the selection by `delta` agents (clamped).
    fn move_by(&mut self, delta: isize) {
        let names: Vec<String> = self
            .rows()
            .iter()
            .filter_map(|r| match r {
                Row::Agent(a) => Some(a.name.clone()),
                Row::Cpu(..) => None,
            })
            .collect();
        if names.is_empty() {
            return;
        }
        let now = self
            .selected
            .as_ref()
            .and_then(|s| names.iter().position(|n| n == s))
            .unwrap_or(0);
        let last = names.len() - 1;
        let to = now.saturating_add_signed(delta).min(last);
        self.selected = Some(names[to].clone());
    }

    /// Points the table's selection at the selected agent's row (the
    /// first agent if it is gone or filtered out).
    fn sync_selection(&mut self) {
        let rows = self.rows();
        let agent_at = |i: usize| match rows[i] {
            Row::Agent(a) => Some(a.name.clone()),
            Row::Cpu(..) => None,
        };
        let kept = self.selected.as_deref().and_then(|name| {
            rows.iter()
                .position(|r| matches!(r, Row::Agent(a) if a.name == name))
        });
        let at = kept.or_else(|| rows.iter().position(|r| matches!(r, Row::Agent(_))));
        let name = at.and_then(agent_at);
        // The first agent of a CPU brings its CPU's header into view.
        let header = at.filter(|&i| i > 0 && matches!(rows[i - 1], Row::Cpu(..)));
        drop(rows);
        self.list.select(at);
        if let Some(i) = header
            && self.list.offset() >= i
        {
            *self.list.offset_mut() = i - 1;
        }
        self.selected = name;
    }
}

/// Agents a page key moves.
const PAGE: isize = 10;

fn sort(agents: &mut [&AgentStatus], key: SortKey) {
    match key {
        SortKey::Plan => {}
        SortKey::Name => agents.sort_by(|a, b| a.name.cmp(&b.name)),
        SortKey::Rate => agents.sort_by(|a, b| b.msgs_per_s.total_cmp(&a.msgs_per_s)),
        SortKey::P99 => agents.sort_by_key(|a| std::cmp::Reverse(a.p99_ns)),
        SortKey::Restarts => agents.sort_by_key(|a| std::cmp::Reverse(a.restarts)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::observe::api::{
        AgentState, GpuStatus, HealthStatus, PlacedAgent, PlannedRing, PlannedRoute, ResidentModel,
    };
    use crate::topology::CpuClass;

    fn agent(name: &str, cpu: u32, msgs_per_s: f64, p99_ns: u64) -> AgentStatus {
        AgentStatus {
            name: name.into(),
            cpu,
            observed_cpu: Some(cpu),
            state: AgentState::Up,
            msgs_per_s,
            p50_ns: p99_ns / 2,
            p99_ns,
            handled: 1,
            failures: 0,
            restarts: 0,
            pid: None,
            user: None,
            last_exit: None,
            anomalies: Vec::new(),
            fault: None,
        }
    }

    /// Three agents on two CPUs, one GPU with a pinned and a loose model,
    /// one ring route.
    pub(in crate::cli::top) fn snapshot() -> Snapshot {
        let placed = |agent: &str, cpu| PlacedAgent {
            agent: agent.into(),
            host: "vm".into(),
            cpu,
            class: CpuClass::Uniform,
            phase: 0,
        };
        let resident = |model: &str, pinned| ResidentModel {
            model: model.into(),
            vram_mib: 1000,
            pinned,
        };
        Snapshot {
            health: HealthReport {
                status: HealthStatus::Ok,
                reasons: Vec::new(),
            },
            agents: AgentsResponse {
                host: "vm".into(),
                agents: vec![
                    agent("Zeta", 0, 5.0, 900),
                    agent("Alpha", 0, 50.0, 100),
                    agent("Mid", 1, 1.0, 10),
                ],
                executors: Vec::new(),
                legacy: Vec::new(),
                legacy_ports: Vec::new(),
            },
            gpus: GpusResponse {
                gpus: vec![GpuStatus {
                    gpu: 0,
                    name: "sim".into(),
                    uuid: "GPU-0".into(),
                    simulated: true,
                    total_mib: 24576,
                    used_mib: 2000,
                    free_mib: 22576,
                    util_pct: None,
                    planned_mib: 2000,
                    budget_mib: 23000,
                    resident: vec![resident("whisper", true), resident("phi", false)],
                }],
                ..GpusResponse::default()
            },
            cluster: ClusterResponse {
                cluster: None,
                host: "vm".into(),
                hosts: Vec::new(),
                placements: Vec::new(),
                agents: Vec::new(),
            },
            plan: PlanResponse {
                host: "vm".into(),
                topology: "t.toml".into(),
                agents: 3,
                placements: vec![placed("Zeta", 0), placed("Alpha", 0), placed("Mid", 1)],
                rings: vec![PlannedRing {
                    from_cpu: 0,
                    to_cpu: 1,
                    routes: vec![PlannedRoute {
                        from: "Zeta".into(),
                        to: "Mid".into(),
                        kind: "request".into(),
                        topic: None,
                    }],
                }],
                local_routes: Vec::new(),
                remote_routes: Vec::new(),
                unreachable_routes: Vec::new(),
                request_load: None,
                start_order: Vec::new(),
                warnings: Vec::new(),
            },
        }
    }

    fn press(sut: &mut App, code: KeyCode) -> Action {
        sut.key(KeyEvent::from(code))
    }

    fn agent_names(sut: &App) -> Vec<String> {
        sut.rows()
            .iter()
            .filter_map(|r| match r {
                Row::Agent(a) => Some(a.name.clone()),
                Row::Cpu(..) => None,
            })
            .collect()
    }

    #[test]
    fn s_cycles_the_order_within_each_cpu() {
        let mut sut = App::new("/t".into());
        sut.update(snapshot());
        assert_eq!(agent_names(&sut), ["Zeta", "Alpha", "Mid"]);

        press(&mut sut, KeyCode::Char('s'));
        assert_eq!(sut.sort, SortKey::Name);
        assert_eq!(agent_names(&sut), ["Alpha", "Zeta", "Mid"]);

        press(&mut sut, KeyCode::Char('s'));
        assert_eq!(agent_names(&sut), ["Alpha", "Zeta", "Mid"], "busiest first");
        press(&mut sut, KeyCode::Char('s'));
        assert_eq!(agent_names(&sut), ["Zeta", "Alpha", "Mid"], "slowest first");
    }

    #[test]
    fn a_filter_keeps_matching_agents_and_esc_clears_it() {
        let mut sut = App::new("/t".into());
        sut.update(snapshot());
        for key in [KeyCode::Char('/'), KeyCode::Char('M'), KeyCode::Char('i')] {
            press(&mut sut, key);
        }
        assert_eq!(agent_names(&sut), ["Mid"]);
        assert_eq!(sut.selected_agent().map(|a| a.name.as_str()), Some("Mid"));
        press(&mut sut, KeyCode::Enter);
        assert_eq!(sut.mode, Mode::Normal);
        assert_eq!(agent_names(&sut), ["Mid"], "the filter stays after Enter");

        press(&mut sut, KeyCode::Char('/'));
        press(&mut sut, KeyCode::Esc);
        assert_eq!(agent_names(&sut).len(), 3);
    }

    #[test]
    fn the_selection_follows_its_agent_and_shows_its_routes() {
        let mut sut = App::new("/t".into());
        sut.update(snapshot());
        assert_eq!(sut.list.selected(), Some(1), "row 0 is CPU 0's header");
        press(&mut sut, KeyCode::End);
        assert_eq!(sut.selected_agent().map(|a| a.name.as_str()), Some("Mid"));
        assert_eq!(sut.list.selected(), Some(4));
        assert_eq!(sut.routes(), ["<- Zeta (request, ring cpu 0 -> 1)"]);

        *sut.list.offset_mut() = 3;
        press(&mut sut, KeyCode::Home);
        assert_eq!(sut.routes(), ["-> Mid (request, ring cpu 0 -> 1)"]);
        assert_eq!(sut.list.offset(), 0, "CPU 0's header comes into view");
    }

    #[test]
    fn p_picks_a_model_asks_for_the_token_file_and_flips_its_pin() {
        let mut sut = App::new("/etc/pinwheel/admin.token".into());
        sut.update(snapshot());
        press(&mut sut, KeyCode::Char('p'));
        assert_eq!(
            sut.mode,
            Mode::Pick {
                models: vec![("phi".into(), false), ("whisper".into(), true)],
                at: 0
            }
        );
        press(&mut sut, KeyCode::Down);
        press(&mut sut, KeyCode::Enter);
        assert!(matches!(sut.mode, Mode::Token { pin: false, .. }));
        for _ in 0.."admin.token".len() {
            press(&mut sut, KeyCode::Backspace);
        }
        for c in "t".chars() {
            press(&mut sut, KeyCode::Char(c));
        }

        let action = press(&mut sut, KeyCode::Enter);

        assert_eq!(
            action,
            Action::Pin {
                model: "whisper".into(),
                pin: false,
                token_file: "/etc/pinwheel/t".into()
            }
        );
        assert_eq!(sut.mode, Mode::Normal);
    }

    #[test]
    fn q_esc_and_ctrl_c_quit_but_esc_in_a_dialog_only_closes_it() {
        let mut sut = App::new("/t".into());
        assert_eq!(press(&mut sut, KeyCode::Char('q')), Action::Quit);
        assert_eq!(
            sut.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
        press(&mut sut, KeyCode::Char('/'));
        assert_eq!(press(&mut sut, KeyCode::Esc), Action::None);
        assert_eq!(press(&mut sut, KeyCode::Esc), Action::Quit);
    }
}
