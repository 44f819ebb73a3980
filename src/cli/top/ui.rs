//! Drawing `pinwheel top`: one frame from the [`App`]'s state.
//!
//! ```text
//!  host vm-2cpu: degraded   79 agents on 2 CPUs              sort: plan
//!  ! no_pmu: no hardware performance counters ...
//! ─agents────────────────────────────────────────────────────────────────
//!    agent                        state       msgs/s       p50       p99  rst
//!  CPU 0 uniform: busy 12%  backlog 0 slots  parks 30  stalls 0
//!    ServiceRegistry              up            12.0    1.20 us   4.20 us    0
//! ─GPUs──────────────────────────────────────────────────────────────────
//!  0 sim-24g  [████░░░░░░░░░░░░░░░░░░··] 3100/24576 MiB, budget 23347
//!    resident: whisper-large-v3* 3100   recent: +12.0s load whisper gpu 0
//! ─cluster───────────────────────────────────────────────────────────────
//!  vm-2cpu (here)   up
//!  q quit  s sort  / filter  ↑↓ select  enter routes  p pin/unpin
//! ```
//!
//! At 80 columns the panels stack; from [`WIDE`] columns the GPUs, the
//! optimizer's decisions, the cluster and the selected agent's routes sit
//! beside the agents. Everything reads without colour: states are words,
//! bars are characters, the selection is reverse video. Colour is added
//! unless `NO_COLOR` is set.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, Paragraph};

use super::app::{App, Mode, Row};
use crate::cli::status::latency;
use crate::observe::api::{
    AgentState, ClusterResponse, GpuStatus, HealthStatus, HostState, VramDecision,
};

/// Columns from which the panels sit side by side.
pub const WIDE: u16 = 120;
/// Health reasons shown above the panels (the rest are counted).
const REASONS_SHOWN: usize = 3;
/// Width of everything in an agent line but its name.
const AGENT_COLUMNS: u16 = 50;

/// Colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    colour: bool,
}

impl Palette {
    /// Colour unless `NO_COLOR` is set to anything non-empty.
    pub fn from_env() -> Palette {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Palette { colour: !no_color }
    }

    fn fg(self, color: Color) -> Style {
        if self.colour {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }
}

/// Draws one frame.
pub fn draw(frame: &mut Frame<'_>, app: &mut App, palette: Palette) {
    let area = frame.area();
    let reasons = app.data.as_ref().map_or(0, |d| d.health.reasons.len());
    let reason_lines = reasons.min(REASONS_SHOWN) + usize::from(reasons > REASONS_SHOWN);
    let [header, health, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::try_from(reason_lines).unwrap_or(0)),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, header, palette);
    draw_reasons(frame, app, health, palette);
    if area.width >= WIDE {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)])
                .areas(body);
        draw_agents(frame, app, left, palette);
        draw_side(frame, app, right, palette, true);
    } else {
        let side = side_height(app);
        let [top, bottom] =
            Layout::vertical([Constraint::Min(6), Constraint::Length(side)]).areas(body);
        draw_agents(frame, app, top, palette);
        draw_side(frame, app, bottom, palette, false);
    }
    draw_footer(frame, app, footer);
    if let Mode::Pick { models, at } = &app.mode {
        draw_pick(frame, models, *at, area);
    }
}

fn draw_header(frame: &mut Frame<'_>, app: &App, area: Rect, palette: Palette) {
    let mut spans = Vec::new();
    match &app.data {
        Some(data) => {
            let status = data.health.status;
            let style = match status {
                HealthStatus::Ok => palette.fg(Color::Green),
                HealthStatus::Degraded => palette.fg(Color::Yellow),
            };
            spans.push(Span::styled(
                format!("host {}: ", data.agents.host),
                Style::new().add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::styled(
                status.as_str(),
                style.add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(format!(
                "   {} agents on {} CPUs   sort: {}",
                data.agents.agents.len(),
                data.agents.executors.len(),
                app.sort.as_str()
            )));
            if !app.filter.is_empty() {
                spans.push(Span::raw(format!("   filter: {}", app.filter)));
            }
        }
        None => spans.push(Span::raw("pinwheel top: waiting for the daemon")),
    }
    if let Some(error) = &app.error {
        spans.push(Span::styled(
            format!("   (stale: {error})"),
            palette.fg(Color::Red),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_reasons(frame: &mut Frame<'_>, app: &App, area: Rect, palette: Palette) {
    let Some(data) = &app.data else {
        return;
    };
    let reasons = &data.health.reasons;
    let mut lines: Vec<Line<'_>> = reasons
        .iter()
        .take(REASONS_SHOWN)
        .map(|r| {
            Line::from(vec![
                Span::styled(format!("! {}", r.reason), palette.fg(Color::Yellow)),
                Span::raw(format!(": {}", r.detail)),
            ])
        })
        .collect();
    if reasons.len() > REASONS_SHOWN {
        lines.push(Line::raw(format!(
            "  and {} more (pinwheel status)",
            reasons.len() - REASONS_SHOWN
        )));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_agents(frame: &mut Frame<'_>, app: &mut App, area: Rect, palette: Palette) {
    let block = Block::new().borders(Borders::TOP).title("agents");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [columns, list_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let name_width = usize::from(inner.width.saturating_sub(AGENT_COLUMNS).clamp(16, 48));
    let title = format!(
        "  {:<name_width$} {:<9} {:>8} {:>10} {:>10} {:>4}",
        "agent", "state", "msgs/s", "p50", "p99", "rst"
    );
    frame.render_widget(
        Paragraph::new(Line::styled(
            title,
            Style::new().add_modifier(Modifier::UNDERLINED),
        )),
        columns,
    );
    let items: Vec<ListItem<'_>> = app
        .rows()
        .into_iter()
        .map(|row| match row {
            Row::Cpu(cpu, class, executor) => {
                let detail = executor.map_or_else(String::new, |e| {
                    format!(
                        ": busy {:.0}%  backlog {} slots  parks {}  stalls {}",
                        e.busy * 100.0,
                        e.ring_backlog_slots,
                        e.parks,
                        e.stalls
                    )
                });
                ListItem::new(Line::styled(
                    format!("CPU {cpu} {class}{detail}"),
                    Style::new().add_modifier(Modifier::BOLD),
                ))
            }
            Row::Agent(a) => {
                let state = Span::styled(
                    format!("{:<9}", a.state.as_str()),
                    palette.fg(state_colour(a.state)),
                );
                let name: String = a.name.chars().take(name_width).collect();
                ListItem::new(Line::from(vec![
                    Span::raw(format!("  {name:<name_width$} ")),
                    state,
                    Span::raw(format!(
                        " {:>8.1} {:>10} {:>10} {:>4}",
                        a.msgs_per_s,
                        latency(a.p50_ns),
                        latency(a.p99_ns),
                        a.restarts
                    )),
                ]))
            }
        })
        .collect();
    let list = List::new(items).highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(list, list_area, &mut app.list);
}

fn state_colour(state: AgentState) -> Color {
    match state {
        AgentState::Up | AgentState::Running | AgentState::Attached => Color::Green,
        AgentState::Starting | AgentState::Backoff | AgentState::Stopping => Color::Yellow,
        AgentState::Isolated | AgentState::Failed => Color::Red,
        AgentState::Detached | AgentState::Exited => Color::DarkGray,
    }
}

/// Lines the stacked side panels need at 80 columns.
fn side_height(app: &App) -> u16 {
    let Some(data) = &app.data else {
        return 0;
    };
    if app.show_routes {
        return 8;
    }
    let gpus = data.gpus.gpus.len().max(1) * 2 + 1;
    let hosts = data.cluster.hosts.len().clamp(1, 3);
    u16::try_from(gpus + 1 + hosts + 1).unwrap_or(u16::MAX)
}

fn draw_side(frame: &mut Frame<'_>, app: &App, area: Rect, palette: Palette, wide: bool) {
    let Some(data) = &app.data else {
        return;
    };
    let gpu_lines = gpu_lines(&data.gpus.gpus, area.width, palette);
    let decisions = decision_lines(&data.gpus.decisions);
    let hosts = host_lines(&data.cluster, palette);
    let cluster_title = match &data.cluster.cluster {
        Some(name) => format!("cluster {name}"),
        None => "cluster: single host".to_owned(),
    };
    let routes = routes_panel(app);
    let lines = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    if wide {
        let [gpus, recent, cluster, routes_area] = Layout::vertical([
            Constraint::Length(lines(gpu_lines.len() + 1)),
            Constraint::Min(3),
            Constraint::Length(lines(hosts.len() + 1)),
            Constraint::Length(if app.show_routes { 10 } else { 0 }),
        ])
        .areas(area);
        panel(frame, "GPUs", gpu_lines, gpus);
        panel(frame, "VRAM decisions, newest first", decisions, recent);
        panel(frame, &cluster_title, hosts, cluster);
        if let Some((title, lines)) = routes {
            panel(frame, &title, lines, routes_area);
        }
        return;
    }
    if let Some((title, lines)) = routes {
        panel(frame, &title, lines, area);
        return;
    }
    let [gpus, cluster] = Layout::vertical([
        Constraint::Length(lines(gpu_lines.len() + 2)),
        Constraint::Min(1),
    ])
    .areas(area);
    let mut gpu_and_recent = gpu_lines;
    gpu_and_recent.push(Line::raw(match decisions.first() {
        Some(newest) => format!(" recent: {}", newest.to_string().trim_start()),
        None => " recent: no VRAM decisions yet".to_owned(),
    }));
    panel(frame, "GPUs", gpu_and_recent, gpus);
    panel(frame, &cluster_title, hosts, cluster);
}

/// The optimizer's recent decisions, newest first.
fn decision_lines(decisions: &[VramDecision]) -> Vec<Line<'static>> {
    decisions
        .iter()
        .rev()
        .map(|d| {
            let gpu = d.gpu.map_or_else(String::new, |g| format!(" gpu {g}"));
            let why = d
                .reason
                .as_ref()
                .map_or_else(String::new, |r| format!(" ({r})"));
            Line::raw(format!(
                "  +{:.1}s {} {}{gpu}{why}",
                d.at_ms as f64 / 1e3,
                d.kind,
                d.model
            ))
        })
        .collect()
}

/// One line per host: its state and, for peers, the link's latency.
fn host_lines(cluster: &ClusterResponse, palette: Palette) -> Vec<Line<'static>> {
    cluster
        .hosts
        .iter()
        .map(|h| {
            let here = h.host == cluster.host;
            let name = if here {
                format!("{} (here)", h.host)
            } else {
                h.host.clone()
            };
            let colour = match h.state {
                HostState::Up => Color::Green,
                HostState::Degraded => Color::Yellow,
                HostState::Lost => Color::Red,
            };
            let link = if here {
                String::new()
            } else {
                format!(
                    "  latency {}  seen {} ms ago",
                    latency(h.latency_us.saturating_mul(1_000)),
                    h.last_seen_ms
                )
            };
            Line::from(vec![
                Span::raw(format!(" {name:<24} ")),
                Span::styled(format!("{:<9}", h.state.as_str()), palette.fg(colour)),
                Span::raw(link),
            ])
        })
        .collect()
}

/// The selected agent's routes, when asked for.
fn routes_panel(app: &App) -> Option<(String, Vec<Line<'static>>)> {
    if !app.show_routes {
        return None;
    }
    let agent = app.selected_agent()?;
    let mut lines: Vec<Line<'static>> = app.routes().into_iter().map(Line::raw).collect();
    if lines.is_empty() {
        lines.push(Line::raw("no routes in the plan"));
    }
    Some((format!("routes of {} (enter closes)", agent.name), lines))
}

fn panel(frame: &mut Frame<'_>, title: &str, lines: Vec<Line<'_>>, area: Rect) {
    let block = Block::new().borders(Borders::TOP).title(title.to_owned());
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Two lines per GPU: its VRAM bar, and its resident models (`*` pinned).
fn gpu_lines(gpus: &[GpuStatus], width: u16, palette: Palette) -> Vec<Line<'static>> {
    if gpus.is_empty() {
        return vec![Line::raw(" no GPUs")];
    }
    let mut lines = Vec::new();
    for gpu in gpus {
        let label = format!(" {} {:<12.12} ", gpu.gpu, gpu.name);
        let numbers = format!(
            " {}/{} MiB, budget {}",
            gpu.used_mib, gpu.total_mib, gpu.budget_mib
        );
        let room = usize::from(width)
            .saturating_sub(label.len() + numbers.len() + 2)
            .clamp(10, 60);
        lines.push(Line::from(vec![
            Span::raw(label),
            Span::styled(bar(gpu, room), palette.fg(Color::Cyan)),
            Span::raw(numbers),
        ]));
        let resident: Vec<String> = gpu
            .resident
            .iter()
            .map(|m| {
                format!(
                    "{}{} {}",
                    m.model,
                    if m.pinned { "*" } else { "" },
                    m.vram_mib
                )
            })
            .collect();
        let resident = if resident.is_empty() {
            "none".to_owned()
        } else {
            resident.join(", ")
        };
        lines.push(Line::raw(format!("   resident (* pinned): {resident}")));
    }
    lines
}

/// `[████░░░··]`: used VRAM, free VRAM within the budget, and past it.
fn bar(gpu: &GpuStatus, width: usize) -> String {
    let total = gpu.total_mib.max(1);
    let cells = |mib: u64| {
        let scaled = u128::from(mib.min(total)) * width as u128 / u128::from(total);
        usize::try_from(scaled).unwrap_or(width)
    };
    let used = cells(gpu.used_mib);
    let budget = cells(gpu.budget_mib).max(used);
    format!(
        "[{}{}{}]",
        "█".repeat(used),
        "░".repeat(budget - used),
        "·".repeat(width - budget)
    )
}

fn draw_footer(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let text = match &app.mode {
        Mode::Filter => format!(
            "filter by name: {}_   (enter keeps it, esc clears)",
            app.filter
        ),
        Mode::Token { model, pin, path } => format!(
            "{} {model}: admin token file: {path}_   (enter sends, esc cancels)",
            if *pin { "pin" } else { "unpin" }
        ),
        Mode::Pick { .. } => "pick a model: up/down, enter, esc cancels".to_owned(),
        Mode::Normal => match &app.message {
            Some(message) => message.clone(),
            None => {
                "q quit  s sort  / filter  up/down select  enter routes  p pin/unpin".to_owned()
            }
        },
    };
    frame.render_widget(
        Paragraph::new(Line::styled(
            text,
            Style::new().add_modifier(Modifier::REVERSED),
        )),
        area,
    );
}

fn draw_pick(frame: &mut Frame<'_>, models: &[(String, bool)], at: usize, area: Rect) {
    let height = u16::try_from(models.len() + 2)
        .unwrap_or(u16::MAX)
        .min(area.height.saturating_sub(2));
    let width = 50.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    let items: Vec<ListItem<'_>> = models
        .iter()
        .map(|(model, pinned)| {
            let verb = if *pinned { "unpin" } else { "pin" };
            ListItem::new(format!("{verb:<6} {model}"))
        })
        .collect();
    let mut state = ratatui::widgets::ListState::default().with_selected(Some(at));
    let list = List::new(items)
        .block(Block::bordered().title("pin or unpin"))
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_widget(Clear, popup);
    frame.render_stateful_widget(list, popup, &mut state);
}
