//! `pinwheel`: the agent SDK (`crates/pinwheel-agent`) for Python agents.
//!
//! ```python
//! import pinwheel
//! agent = pinwheel.Agent()
//! for req in agent.requests():
//!     req.reply(req.body)
//! ```
//!
//! Design: every Python object wraps an SDK handle, which is `Send +
//! Sync`, so Python threads may call, publish and answer at once. Every
//! wait gives up the GIL (`allow_threads`) for a bounded slice
//! ([`SLICE`]) and checks for signals between slices, so Ctrl-C raises
//! `KeyboardInterrupt` within a slice while `requests()`, a subscription
//! or a `call` waits (an interrupted call is given up: its reply, if it
//! comes later, is dropped).
//!
//! Bodies are `bytes` both ways; anything else given as a body (a dict, a
//! list) is sent as JSON through Python's own `json` module, and `json()`
//! parses with it, so JSON values look exactly as a ZeroMQ agent's
//! `json.loads` gave them.
//!
//! GPU models: `with agent.model("whisper-large-v3"):` asks the daemon's
//! VRAM optimizer for the model (waiting, without the GIL, for a load if
//! need be) and holds it resident for the block; leaving the block, by
//! any way, releases it.
//!
//! Drills: an operator's `pinwheel fault` reaches the agent through the
//! SDK, which applies it to `req.reply` (slowed, failed or withheld
//! replies; a slowed reply waits without the GIL); `agent.drill` says
//! which is in force.
//!
//! Errors: `pinwheel.Error` (attaching failed, the link broke, the
//! manifest refuses a call or topic), `pinwheel.CallError(Error)` for a
//! reply with a non-zero status (its `.status` and `.body`),
//! `pinwheel.Timeout(Error)` when no reply (or no model) came in time,
//! `pinwheel.ModelDenied(Error)` when the daemon refuses a model.

use std::sync::Mutex;
use std::time::Duration;

use pinwheel_agent::AgentError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView};

/// Longest the GIL is given up in one piece while waiting for a request
/// or an event: how late Ctrl-C may be.
const SLICE: Duration = Duration::from_millis(100);

create_exception!(pinwheel, Error, PyException, "A pinwheel agent failed.");
create_exception!(
    pinwheel,
    CallError,
    Error,
    "A call was answered with a non-zero status (`.status`, `.body`)."
);
create_exception!(pinwheel, Timeout, Error, "A call got no reply in time.");
create_exception!(
    pinwheel,
    ModelDenied,
    Error,
    "The daemon refused a GPU model (not in the manifest, larger than any GPU, too many uses)."
);

/// An SDK error as the Python exception that fits it.
fn raise(err: AgentError) -> PyErr {
    match err {
        AgentError::Timeout { .. } => Timeout::new_err(err.to_string()),
        AgentError::ModelDenied { .. } => ModelDenied::new_err(err.to_string()),
        other => Error::new_err(other.to_string()),
    }
}

/// A body from Python: bytes-like as they are, anything else as JSON.
fn body_bytes(py: Python<'_>, body: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = body.downcast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(array) = body.downcast::<PyByteArray>() {
        return Ok(array.to_vec());
    }
    if body.downcast::<PyMemoryView>().is_ok() {
        return body.call_method0("tobytes")?.extract();
    }
    let text: String = py
        .import("json")?
        .call_method1("dumps", (body,))?
        .extract()?;
    Ok(text.into_bytes())
}

/// `json.loads(body)`.
fn parse_json(py: Python<'_>, body: &[u8]) -> PyResult<PyObject> {
    Ok(py
        .import("json")?
        .call_method1("loads", (PyBytes::new(py, body),))?
        .unbind())
}

/// An agent attached to the daemon that started this process.
#[pyclass(module = "pinwheel", frozen)]
struct Agent {
    sdk: pinwheel_agent::Agent,
}

#[pymethods]
impl Agent {
    /// Attaches as the environment the daemon set says; raises
    /// `pinwheel.Error` when it says nothing (not started by pinwheel).
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let sdk = py
            .allow_threads(pinwheel_agent::Agent::from_env)
            .map_err(|err| {
                Error::new_err(format!(
                    "cannot attach to pinwheel ({err}); run this agent from a manifest \
                     (kind \"process\") or set PINWHEEL_AGENT and PINWHEEL_AGENT_SOCKET"
                ))
            })?;
        Ok(Self { sdk })
    }

    /// Its name, from the manifest.
    #[getter]
    fn name(&self) -> &str {
        self.sdk.name()
    }

    /// The agents it may call, from the manifest, in order.
    #[getter]
    fn calls<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.sdk.calls().collect::<Vec<_>>())
    }

    /// The requests to this agent, as they come; the loop ends when the
    /// daemon stops the agent.
    fn requests(&self) -> Requests {
        Requests {
            sdk: self.sdk.clone(),
        }
    }

    /// Calls `name`'s `method` with `body` (bytes, or a value sent as
    /// JSON) and waits up to `timeout` seconds for its reply.
    #[pyo3(signature = (name, method, body, timeout = 1.0))]
    fn call(
        &self,
        py: Python<'_>,
        name: &str,
        method: &str,
        body: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<Reply> {
        let body = body_bytes(py, body)?;
        let timeout = seconds(timeout)?;
        let pending = py
            .allow_threads(|| self.sdk.send_call(name, method, &body, timeout))
            .map_err(raise)?;
        let reply = loop {
            match py.allow_threads(|| pending.wait(SLICE)) {
                Ok(Some(reply)) => break reply,
                // Ctrl-C: raising drops `pending`, which gives the call up.
                Ok(None) => py.check_signals()?,
                Err(err) => return Err(raise(err)),
            }
        };
        let body: Py<PyBytes> = PyBytes::new(py, &reply.body).unbind();
        if reply.status != 0 {
            let err =
                CallError::new_err(format!("{name}.{method} answered status {}", reply.status));
            let value = err.value(py);
            value.setattr("status", reply.status)?;
            value.setattr("body", body)?;
            return Err(err);
        }
        Ok(Reply {
            status: reply.status,
            body,
        })
    }

    /// Publishes `body` (bytes, or a value sent as JSON) on `topic`.
    fn publish(&self, py: Python<'_>, topic: &str, body: &Bound<'_, PyAny>) -> PyResult<()> {
        let body = body_bytes(py, body)?;
        py.allow_threads(|| self.sdk.publish(topic, &body))
            .map_err(raise)
    }

    /// The events heard on `topic` (one of the manifest's `subscribes`).
    fn subscribe(&self, topic: &str) -> PyResult<Subscription> {
        let sdk = self.sdk.subscribe(topic).map_err(raise)?;
        Ok(Subscription { sdk })
    }

    /// GPU model `name` (one of the manifest's `models`) for a `with`
    /// block: entering waits up to `timeout` seconds for the VRAM
    /// optimizer and holds the model; leaving releases it.
    #[pyo3(signature = (name, timeout = 30.0))]
    fn model(&self, name: &str, timeout: f64) -> PyResult<Model> {
        Ok(Model {
            sdk: self.sdk.clone(),
            name: name.to_owned(),
            timeout: seconds(timeout)?,
            guard: Mutex::new(None),
        })
    }

    /// The fault drill the agent is under (`none`, `slow=10x`,
    /// `error=0.2`, `stall`); `req.reply` applies it.
    #[getter]
    fn drill(&self) -> String {
        self.sdk.drill().to_string()
    }

    fn __repr__(&self) -> String {
        format!("pinwheel.Agent({:?})", self.sdk.name())
    }
}

/// A timeout in seconds as a duration.
fn seconds(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout)
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("timeout must be >= 0 seconds"))
}

/// Waits in slices for what `next` finds, checking signals between them;
/// `None` once the daemon closed the link.
fn wait_sliced<T: Send>(
    py: Python<'_>,
    next: impl Fn() -> Result<Option<T>, AgentError> + Sync,
) -> PyResult<Option<T>> {
    loop {
        match py.allow_threads(&next) {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => py.check_signals()?,
            Err(AgentError::Disconnected) => return Ok(None),
            Err(err) => return Err(raise(err)),
        }
    }
}

/// Iterator over the requests to the agent.
#[pyclass(module = "pinwheel", frozen)]
struct Requests {
    sdk: pinwheel_agent::Agent,
}

#[pymethods]
impl Requests {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Request>> {
        let Some(sdk) = wait_sliced(py, || self.sdk.recv(SLICE))? else {
            return Ok(None);
        };
        Ok(Some(Request {
            method: sdk.method().to_owned(),
            body: PyBytes::new(py, sdk.body()).unbind(),
            sdk: Mutex::new(Some(sdk)),
        }))
    }
}

/// A request to this agent; answer it once with `reply`.
#[pyclass(module = "pinwheel", frozen)]
struct Request {
    method: String,
    body: Py<PyBytes>,
    sdk: Mutex<Option<pinwheel_agent::Request>>,
}

#[pymethods]
impl Request {
    /// The method called.
    #[getter]
    fn method(&self) -> &str {
        &self.method
    }

    /// The arguments, as sent.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// The arguments parsed as JSON.
    fn json(&self, py: Python<'_>) -> PyResult<PyObject> {
        parse_json(py, self.body.as_bytes(py))
    }

    /// Answers: `body` is bytes, or a value sent as JSON; `status` 0 for
    /// success. Under a drill the SDK answers as the drill says (a
    /// slowed reply waits here, without the GIL).
    #[pyo3(signature = (body = None, status = 0))]
    fn reply(&self, py: Python<'_>, body: Option<&Bound<'_, PyAny>>, status: u16) -> PyResult<()> {
        let body = match body {
            Some(body) => body_bytes(py, body)?,
            None => Vec::new(),
        };
        let sdk = lock(&self.sdk)
            .take()
            .ok_or_else(|| Error::new_err("this request was already answered"))?;
        py.allow_threads(|| sdk.reply(status, &body)).map_err(raise)
    }

    fn __repr__(&self) -> String {
        format!("pinwheel.Request(method={:?})", self.method)
    }
}

/// A GPU model for a `with` block (`agent.model(name)`).
#[pyclass(module = "pinwheel", frozen)]
struct Model {
    sdk: pinwheel_agent::Agent,
    name: String,
    timeout: Duration,
    guard: Mutex<Option<pinwheel_agent::ModelGuard>>,
}

#[pymethods]
impl Model {
    /// The model's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Whether the block holds it now.
    #[getter]
    fn held(&self) -> bool {
        lock(&self.guard).is_some()
    }

    /// Asks for the model (without the GIL) and holds it.
    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        let this = slf.get();
        if this.held() {
            return Err(Error::new_err(format!(
                "model {} is held by this block already",
                this.name
            )));
        }
        let guard = py
            .allow_threads(|| this.sdk.model_within(&this.name, this.timeout))
            .map_err(raise)?;
        *lock(&this.guard) = Some(guard);
        Ok(slf)
    }

    /// Releases the model, however the block ended; exceptions go on.
    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let guard = lock(&self.guard).take();
        py.allow_threads(|| drop(guard));
        false
    }

    fn __repr__(&self) -> String {
        format!("pinwheel.Model({:?}, held={})", self.name, self.held())
    }
}

/// Locks `mutex`; a panic while holding it left plain data behind.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The answer to a call (status 0; other statuses raise `CallError`).
#[pyclass(module = "pinwheel", frozen)]
struct Reply {
    /// 0.
    #[pyo3(get)]
    status: u16,
    body: Py<PyBytes>,
}

#[pymethods]
impl Reply {
    /// The callee's answer.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// The answer parsed as JSON.
    fn json(&self, py: Python<'_>) -> PyResult<PyObject> {
        parse_json(py, self.body.as_bytes(py))
    }

    fn __repr__(&self) -> String {
        format!("pinwheel.Reply(status={})", self.status)
    }
}

/// Iterator over the events heard on one topic.
#[pyclass(module = "pinwheel", frozen)]
struct Subscription {
    sdk: pinwheel_agent::Subscription,
}

#[pymethods]
impl Subscription {
    /// The topic.
    #[getter]
    fn topic(&self) -> &str {
        self.sdk.topic()
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Message>> {
        let Some(event) = wait_sliced(py, || self.sdk.recv(SLICE))? else {
            return Ok(None);
        };
        Ok(Some(Message {
            topic: event.topic.to_string(),
            body: PyBytes::new(py, &event.body).unbind(),
        }))
    }
}

/// An event heard on a topic.
#[pyclass(module = "pinwheel", frozen)]
struct Message {
    /// The topic.
    #[pyo3(get)]
    topic: String,
    body: Py<PyBytes>,
}

#[pymethods]
impl Message {
    /// The publisher's body.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// The body parsed as JSON.
    fn json(&self, py: Python<'_>) -> PyResult<PyObject> {
        parse_json(py, self.body.as_bytes(py))
    }
}

/// The `pinwheel` module.
#[pymodule]
fn pinwheel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Agent>()?;
    m.add_class::<Request>()?;
    m.add_class::<Reply>()?;
    m.add_class::<Subscription>()?;
    m.add_class::<Message>()?;
    m.add_class::<Model>()?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("CallError", py.get_type::<CallError>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("ModelDenied", py.get_type::<ModelDenied>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
