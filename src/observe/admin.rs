//! The admin HTTP API (axum, on the control thread).
//!
//! Read-only endpoints are open; the ones that change something need
//! `Authorization: Bearer <token>`, the token read at start from a file
//! only root can read (owner root, no group or other permissions). With no
//! such file the changing endpoints answer 403 and say how to create one;
//! nothing else is affected.
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /health` | `{"status": "ok"\|"degraded", "reasons": [...]}` |
//! | `GET /metrics` | Prometheus text ([`super::metrics`]) |
//! | `GET /v1/agents` | agents (CPU, state, msgs/s, p99) and executors |
//! | `GET /v1/plan` | the running plan, as `pinwheel plan --format json` |
//! | `GET /v1/gpus`, `/v1/cluster` | what the core loop last published |
//! | `POST /v1/gpu/place`, `/v1/models/pin`, `/v1/models/unpin` | a command to the core loop, answered when it has decided |
//!
//! Handlers never touch the data plane: they read the [`DaemonView`] and
//! send commands to the core loop over a channel, each with a reply slot
//! and a timeout.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::ObserveError;
use super::api::{
    AgentsResponse, ClusterResponse, ErrorBody, GpusResponse, HealthReport, ModelAnswer,
};
use super::view::DaemonView;

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
    /// Reads the token from `path`, which must be a root-owned file that
    /// only its owner can read.
    pub fn load(path: &Path) -> Auth {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) => {
                return Auth::Disabled(format!(
                    "no admin token ({}: {err}); create it with `install -m 600 -o root /dev/stdin {}` and restart",
                    path.display(),
                    path.display()
                ));
            }
        };
        if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
            return Auth::Disabled(format!(
                "{} must be owned by root with mode 600 (it is uid {}, mode {:o}); fix with `chown root {} && chmod 600 {}`",
                path.display(),
                meta.uid(),
                meta.mode() & 0o777,
                path.display(),
                path.display()
            ));
        }
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Auth::Token(text.trim().to_owned()),
            Ok(_) => Auth::Disabled(format!(
                "{} is empty; write a token into it",
                path.display()
            )),
            Err(err) => Auth::Disabled(format!("cannot read {}: {err}", path.display())),
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
    commands: SyncSender<Request>,
}

/// The running API.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `config.addr` now (so a taken port is an error at boot) and
    /// serves on a new control thread.
    pub fn start(
        config: &AdminConfig,
        view: Arc<DaemonView>,
        registry: Registry,
        commands: SyncSender<Request>,
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
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("pinwheel-admin".into())
            .spawn(move || serve(listener, state, stopped))
            .map_err(|source| ObserveError::Thread { source })?;
        tracing::info!(%addr, "admin API listening");
        Ok(Admin {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn serve(listener: TcpListener, state: Arc<AppState>, stopped: tokio::sync::oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "admin API: no async runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(error = %err, "admin API: listener");
                return;
            }
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(err) = axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "admin API stopped");
        }
    });
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
        .with_state(state)
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
    Json(AgentsResponse {
        host: state.view.host.clone(),
        agents: live.agents,
        executors: live.executors,
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

async fn place(state: State<Arc<AppState>>, headers: HeaderMap, body: String) -> Response {
    command(state, headers, body, "place").await
}

async fn pin(state: State<Arc<AppState>>, headers: HeaderMap, body: String) -> Response {
    command(state, headers, body, "pin").await
}

async fn unpin(state: State<Arc<AppState>>, headers: HeaderMap, body: String) -> Response {
    command(state, headers, body, "unpin").await
}

/// Authorises, parses the body as the `op` command, asks the core loop.
async fn command(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: String,
    op: &str,
) -> Response {
    if let Err((status, why)) = state.auth.check(&headers) {
        return error(status, &why);
    }
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

fn error(status: StatusCode, why: &str) -> Response {
    let body = ErrorBody {
        error: why.to_owned(),
    };
    (status, Json(body)).into_response()
}
