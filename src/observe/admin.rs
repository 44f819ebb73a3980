//! The admin HTTP API (axum over hyper, a task on the control runtime).
//!
//! Read-only endpoints are open; the ones that change something need
//! `Authorization: Bearer <token>`, the token read at start from a file
//! only root can read (owner root, no group or other permissions). With no
//! such file the changing endpoints answer 403 and say how to create one;
//! nothing else is affected. A file that others could read or change stops
//! `pinwheel run` at boot instead (`config::trust`).
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /health` | `{"status": "ok"\|"degraded", "reasons": [...]}` |
//! | `GET /metrics` | Prometheus text ([`super::metrics`]) |
//! | `GET /v1/agents` | agents (CPU, state, msgs/s, p99) and executors |
//! | `GET /v1/plan` | the running plan, as `pinwheel plan --format json` |
//! | `GET /v1/gpus`, `/v1/cluster` | what the core loop last published |
//! | `POST /v1/gpu/place`, `/v1/models/pin`, `/v1/models/unpin` | a command to the core loop, answered when it has decided |
//! | `POST /v1/agents/{name}/fault` | a fault drill on an agent or replica, written to the board (`admin/fault.rs`) |
//!
//! Handlers never touch the data plane: they read the [`DaemonView`] and
//! send commands to the core loop over a bounded channel, each with a
//! reply slot and a timeout; a full channel answers 503, never waits. The
//! one exception is a fault drill: a single atomic word on the board.
//!
//! A body over [`MAX_BODY_BYTES`] is answered 413 before the token is
//! checked, so an unauthenticated client cannot make the daemon buffer
//! more than that: a declared `Content-Length` over the limit is refused
//! before the body is read, and a chunked body is cut off at the limit
//! (axum's `DefaultBodyLimit`) while it is extracted, which happens before
//! the handler looks at the token. Connections, timeouts and shutdown are
//! the edge's (`admin/edge.rs`): see there for what keeps a client from
//! holding the daemon.

mod edge;
mod fault;

pub use self::fault::{agent_named, parse_fault};

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::StringRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::mpsc;

use super::ObserveError;
use super::api::{
    AgentsResponse, ClusterResponse, ErrorBody, GpusResponse, HealthReport, ModelAnswer,
};
use super::view::DaemonView;
use crate::config::ConfigError;
use crate::config::trust::{self, Strictness};
use crate::runtime::control::{ControlRuntime, ControlTask};

pub use edge::{
    HEADER_READ_TIMEOUT, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_HEAD_BYTES, SHUTDOWN_GRACE,
};

/// Longest a changing request waits for the core loop.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the token is read from unless `--admin-token-file` says.
pub const DEFAULT_TOKEN_FILE: &str = "/etc/pinwheel/admin.token";
/// OpenMetrics text, which Prometheus scrapes natively.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A change asked of the core loop: the body of a `POST` (its `op` is
/// the endpoint's, whatever the body says).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Place a model (or GPU job) somewhere in the cluster.
    Place {
        /// Model name.
        model: String,
        /// VRAM it needs, MiB.
        vram_mib: u64,
        /// Keep it resident.
        #[serde(default)]
        pin: bool,
        /// Only on this host.
        #[serde(default)]
        host: Option<String>,
    },
    /// Pin a model: never evicted.
    Pin {
        /// Model name.
        model: String,
    },
    /// Unpin a model.
    Unpin {
        /// Model name.
        model: String,
    },
}

/// The core loop's answer: the model's state, or an HTTP status and a
/// reason.
pub type Answer = Result<ModelAnswer, (u16, String)>;

/// A command and where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// The answer.
    pub reply: tokio::sync::oneshot::Sender<Answer>,
}

/// How changing endpoints are authorised.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The expected bearer token.
    Token(String),
    /// Changing endpoints are off, for this reason.
    Disabled(String),
}

impl Auth {
    /// Reads the token from `path`, a secret that must pass
    /// [`trust`]'s checks (owned by root or this process, no group or
    /// other permissions, nor writable directories above it).
    pub fn load(path: &Path) -> Auth {
        match trust::read(path, Strictness::secret()) {
            Ok(text) if !text.trim().is_empty() => Auth::Token(text.trim().to_owned()),
            Ok(_) => Auth::Disabled(format!(
                "{} is empty; write a token into it",
                path.display()
            )),
            Err(ConfigError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {
                Auth::Disabled(format!(
                    "no admin token ({}: {source}); create it with `install -m 600 -o root /dev/stdin {}` and restart",
                    path.display(),
                    path.display()
                ))
            }
            Err(err) => Auth::Disabled(err.to_string()),
        }
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        let expected = match self {
            Auth::Token(token) => token,
            Auth::Disabled(why) => return Err((StatusCode::FORBIDDEN, why.clone())),
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare every byte whatever the first difference, so the time
        // taken says nothing about the token.
        let same = given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err((
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            ))
        }
    }
}

/// Where and how the API serves.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// The token file.
    pub token_file: PathBuf,
}

struct AppState {
    view: Arc<DaemonView>,
    registry: Registry,
    auth: Auth,
    commands: mpsc::Sender<Request>,
}

/// The running API.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    task: ControlTask,
}

impl Admin {
    /// Binds `config.addr` now (so a taken port is an error at boot) and
    /// serves from a task on `control`.
    pub fn start(
        config: &AdminConfig,
        view: Arc<DaemonView>,
        registry: Registry,
        commands: mpsc::Sender<Request>,
        control: &ControlRuntime,
    ) -> Result<Admin, ObserveError> {
        let bind_error = |source| ObserveError::Bind {
            addr: config.addr,
            source,
        };
        let listener = TcpListener::bind(config.addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let auth = Auth::load(&config.token_file);
        if let Auth::Disabled(why) = &auth {
            tracing::warn!(reason = %why, "admin API: changing endpoints are off");
        }
        let state = Arc::new(AppState {
            view,
            registry,
            auth,
            commands,
        });
        let router = router(state);
        let task = control.spawn(|stopped| edge::serve(listener, router, stopped));
        tracing::info!(%addr, "admin API listening");
        Ok(Admin { addr, task })
    }

    /// The address it listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and tells open connections to finish; returns at
    /// once. [`Admin::stop`] then waits for the rest.
    pub fn begin_stop(&mut self) {
        self.task.signal();
    }

    /// Stops serving and waits, at most [`SHUTDOWN_GRACE`], for the
    /// connections to close (from outside the control runtime).
    pub fn stop(mut self) {
        self.task.signal();
        self.task.join();
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/agents", get(agents))
        .route("/v1/plan", get(plan))
        .route("/v1/gpus", get(gpus))
        .route("/v1/cluster", get(cluster))
        .route("/v1/gpu/place", post(place))
        .route("/v1/models/pin", post(pin))
        .route("/v1/models/unpin", post(unpin))
        .route("/v1/agents/{name}/fault", post(fault::fault))
        // Bodies extracted as strings stop at the limit...
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // ... and a body declared larger is refused before it is read.
        .layer(middleware::from_fn(refuse_large_bodies))
        .with_state(state)
}

/// 413 for a request whose declared body is over [`MAX_BODY_BYTES`],
/// before any handler (and its token check) runs.
async fn refuse_large_bodies(request: HttpRequest, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    next.run(request).await
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is over {MAX_BODY_BYTES} bytes"),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Json<HealthReport> {
    Json(state.view.health.report())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = super::metrics::encode(&state.registry);
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}

async fn agents(State(state): State<Arc<AppState>>) -> Json<AgentsResponse> {
    let live = state.view.live();
    let (legacy, legacy_ports) = state.view.legacy_agents();
    Json(AgentsResponse {
        host: state.view.host.clone(),
        agents: live.agents,
        executors: live.executors,
        legacy,
        legacy_ports,
    })
}

async fn plan(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.view.plan_json.clone(),
    )
        .into_response()
}

async fn gpus(State(state): State<Arc<AppState>>) -> Json<GpusResponse> {
    Json(state.view.gpus())
}

async fn cluster(State(state): State<Arc<AppState>>) -> Json<ClusterResponse> {
    Json(state.view.cluster())
}

/// A command's body, read up to [`MAX_BODY_BYTES`] before the handler
/// runs.
type Body = Result<String, StringRejection>;

async fn place(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    command(state, headers, body, "place").await
}

async fn pin(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    command(state, headers, body, "pin").await
}

async fn unpin(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    command(state, headers, body, "unpin").await
}

/// Checks the body's size, authorises, parses the body as the `op`
/// command, asks the core loop.
async fn command(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    op: &str,
) -> Response {
    let body = match authorised(&state, &headers, body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let mut map = match serde_json::from_str(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("body: {err}")),
    };
    map.insert("op".to_owned(), Value::String(op.to_owned()));
    let command: Command = match serde_json::from_value(Value::Object(map)) {
        Ok(command) => command,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("body: {err}")),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if state.commands.try_send(Request { command, reply }).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the core loop is busy or stopping; try again",
        );
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
        Ok(Ok(Ok(body))) => Json(body).into_response(),
        Ok(Ok(Err((status, why)))) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &why,
        ),
        Ok(Err(_)) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the core loop did not answer in time",
        ),
    }
}

/// The body of a changing request, once its size and token are checked;
/// else the refusal to answer.
fn authorised(state: &AppState, headers: &HeaderMap, body: Body) -> Result<String, Box<Response>> {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Box::new(too_large()));
        }
        Err(rejection) => {
            return Err(Box::new(error(rejection.status(), &rejection.body_text())));
        }
    };
    state
        .auth
        .check(headers)
        .map_err(|(status, why)| Box::new(error(status, &why)))?;
    Ok(body)
}

fn error(status: StatusCode, why: &str) -> Response {
    let body = ErrorBody {
        error: why.to_owned(),
    };
    (status, Json(body)).into_response()
}
