//! `POST /v1/agents/{name}/fault`: puts an agent or a replica (`Name#1`)
//! under a fault drill ([`FaultSpec`]), or ends one (`"none"`).
//!
//! The drill is one atomic word on the board, which a synthetic agent
//! reads per request (and the control side sends an agent process over
//! its link when it changes), so the handler writes it itself rather than
//! asking the core loop. A drill given `for_s` is ended by a timer task on the control
//! runtime, unless another drill replaced it meanwhile.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pinwheel_ipc::drill::FaultSpec;
use pinwheel_ipc::wire::AgentId;
use tracing::info;

use super::super::api::{FaultAnswer, FaultRequest};
use super::super::view::DaemonView;
use super::{AppState, Body, authorised, error};

/// Longest `for_s`: a day.
pub const MAX_FAULT_S: f64 = 86_400.0;

/// Parses a drill as `--fault` and the API write it; `none` is no drill.
pub fn parse_fault(text: &str) -> Result<FaultSpec, String> {
    if text.trim() == "none" {
        return Ok(FaultSpec::NONE);
    }
    FaultSpec::parse(text).map_err(|err| err.to_string())
}

/// The agent the view names `name` (`Name#1` for a replica).
pub fn agent_named(view: &DaemonView, name: &str) -> Option<AgentId> {
    view.agents
        .iter()
        .find(|a| a.name == name)
        .map(|a| AgentId(a.id as u32))
}

pub(super) async fn fault(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match authorised(&state, &headers, body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let request: FaultRequest = match serde_json::from_str(&body) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("body: {err}")),
    };
    let spec = match parse_fault(&request.fault) {
        Ok(spec) => spec,
        Err(why) => return error(StatusCode::BAD_REQUEST, &format!("fault: {why}")),
    };
    if let Some(s) = request.for_s
        && !(s.is_finite() && s > 0.0 && s <= MAX_FAULT_S)
    {
        let why = format!("for_s {s}: give a number of seconds above 0, at most {MAX_FAULT_S}");
        return error(StatusCode::BAD_REQUEST, &why);
    }
    let Some(agent) = agent_named(&state.view, &name) else {
        let why =
            format!("no agent {name:?} here; `pinwheel status` lists them (replicas as Name#N)");
        return error(StatusCode::NOT_FOUND, &why);
    };
    let board = Arc::clone(state.view.routes.board());
    board.set_drill(agent, spec);
    info!(agent = %name, fault = %spec, "fault drill set");
    if let Some(s) = request.for_s.filter(|_| !spec.is_none()) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(s)).await;
            if board.drill(agent) == spec {
                board.set_drill(agent, FaultSpec::NONE);
                info!("fault drill ended");
            }
        });
    }
    let answer = FaultAnswer {
        agent: name,
        fault: spec.to_string(),
        for_s: request.for_s.filter(|_| !spec.is_none()),
    };
    Json(answer).into_response()
}
