//! The seed's JSON contract, both ways, as pure functions over bytes.
//!
//! ```text
//!  request  {"action": "<method>", ...anything else...}
//!  reply    {"status": "success" | "error", "message": "...", "data": ...}
//! ```
//!
//! * **Into pinwheel** ([`check_request`]): the bytes must be at most the
//!   gateway's limit, valid JSON (serde_json's own recursion limit stops
//!   deep nesting), an object, with an `action` that is a method name
//!   ([`action_problem`]). The whole object is the request's body; the
//!   action is its method.
//! * **Replies to a legacy client** ([`reply_for`]): a body that is
//!   already a seed reply (a JSON object with a `status`) is passed on as
//!   it is; otherwise the gateway wraps it: status 0 is `success`, any
//!   other status is `error` with a message naming it, and the body is
//!   `data` (JSON as it is, text as a string, other bytes as
//!   `{"base64": ...}`, nothing as `null`).
//! * **Out of pinwheel** ([`request_for`]): a call to a `zmq` agent is
//!   sent as `{"action": "<method>", ...}`: a JSON object body gets the
//!   action added (replacing one it had), anything else becomes `data`.
//!   Its reply ([`reply_status`]) comes back as the reply body, with
//!   status 0 for `success` and [`STATUS_FAILED`] otherwise.
//!
//! Nothing here does I/O or keeps state; every input is untrusted.

use base64::Engine as _;
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use crate::runtime::legacy::SeedReply;
use crate::runtime::node::{
    STATUS_FAILED, STATUS_OK, STATUS_OVERLOADED, STATUS_TIMEOUT, STATUS_UNAVAILABLE,
    STATUS_UNKNOWN_METHOD,
};

/// Longest action name.
pub const MAX_ACTION_BYTES: usize = 64;

/// Why a legacy request is refused before it reaches an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over the gateway's limit.
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON.
    NotJson(String),
    /// JSON, but not an object.
    NotObject,
    /// No `action`, or one that is not a string.
    NoAction,
    /// An action that cannot be a method name.
    BadAction(String),
    /// A multipart request (the seed sends one JSON frame).
    Frames(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLarge { len, max } => {
                write!(f, "message of {len} bytes is over the limit of {max} bytes")
            }
            Refusal::NotJson(why) => write!(f, "invalid JSON: {why}"),
            Refusal::NotObject => f.write_str("the request must be a JSON object"),
            Refusal::NoAction => f.write_str("the request has no \"action\" string"),
            Refusal::BadAction(why) => f.write_str(why),
            Refusal::Frames(n) => write!(
                f,
                "a request is one JSON frame after the envelope, got {n} frames"
            ),
        }
    }
}

/// Why `action` cannot be a method name, if it cannot: 1 to
/// [`MAX_ACTION_BYTES`] letters, digits, `_`, `-` and `.`.
pub fn action_problem(action: &str) -> Option<String> {
    let ok = !action.is_empty()
        && action.len() <= MAX_ACTION_BYTES
        && action
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    (!ok).then(|| {
        let shown: String = action.chars().take(MAX_ACTION_BYTES).collect();
        format!(
            "action {shown:?} is not a method name (1 to {MAX_ACTION_BYTES} letters, digits, '_', '-', '.')"
        )
    })
}

#[derive(Deserialize)]
struct Head {
    action: Option<serde_json::Value>,
}

/// Whether `bytes` start (after white space) with `{`.
fn opens_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The action of a legacy request, checked (see the module doc).
pub fn check_request(bytes: &[u8], max: usize) -> Result<String, Refusal> {
    if bytes.len() > max {
        return Err(Refusal::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    // A struct deserializes from an array too; a request is an object.
    let head = match serde_json::from_slice::<Head>(bytes) {
        Ok(head) if opens_object(bytes) => head,
        Err(err) if opens_object(bytes) => return Err(Refusal::NotJson(err.to_string())),
        _ => {
            return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => Refusal::NotObject,
                Err(err) => Refusal::NotJson(err.to_string()),
            });
        }
    };
    let Some(serde_json::Value::String(action)) = head.action else {
        return Err(Refusal::NoAction);
    };
    match action_problem(&action) {
        Some(why) => Err(Refusal::BadAction(why)),
        None => Ok(action),
    }
}

/// `body` as a JSON value: itself when it is JSON, else a string when it
/// is text, else `{"base64": ...}`; `null` when empty.
pub fn as_data(body: &[u8]) -> serde_json::Value {
    if body.is_empty() {
        return serde_json::Value::Null;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        return value;
    }
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::Value::String(text.to_owned()),
        Err(_) => {
            let mut wrapped = serde_json::Map::new();
            wrapped.insert(
                "base64".to_owned(),
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            );
            serde_json::Value::Object(wrapped)
        }
    }
}

/// What a reply status means, in words.
pub fn status_message(status: u16, action: &str) -> String {
    match status {
        STATUS_OK => "ok".to_owned(),
        STATUS_UNKNOWN_METHOD => format!("unknown action {action:?}"),
        STATUS_TIMEOUT => "timed out".to_owned(),
        STATUS_OVERLOADED => "overloaded; retry later".to_owned(),
        STATUS_UNAVAILABLE => "the agent is unavailable".to_owned(),
        STATUS_FAILED => "the agent failed".to_owned(),
        other => format!("the agent answered status {other}"),
    }
}

/// The seed reply for an agent's reply `(status, body)` to `action`.
pub fn reply_for(status: u16, body: &[u8], action: &str) -> Vec<u8> {
    if is_seed_reply(body) {
        return body.to_vec();
    }
    let reply = SeedReply {
        status: if status == STATUS_OK {
            "success"
        } else {
            "error"
        }
        .to_owned(),
        message: status_message(status, action),
        data: as_data(body),
    };
    reply.to_bytes()
}

#[derive(Deserialize)]
struct StatusOnly {
    status: Option<IgnoredAny>,
}

/// Whether `body` is a JSON object with a `status`.
fn is_seed_reply(body: &[u8]) -> bool {
    opens_object(body)
        && serde_json::from_slice::<StatusOnly>(body).is_ok_and(|s| s.status.is_some())
}

/// The request a `zmq` agent gets for a call of `method` with `body`.
pub fn request_for(method: &str, body: &[u8]) -> Vec<u8> {
    let mut object = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(object)) => object,
        _ => {
            let mut object = serde_json::Map::new();
            object.insert("data".to_owned(), as_data(body));
            object
        }
    };
    // The action leads, as the seed writes it.
    object.shift_insert(0, "action".to_owned(), method.into());
    serde_json::to_vec(&serde_json::Value::Object(object)).expect("a JSON object serializes")
}

/// The status of a `zmq` agent's reply: 0 for `{"status": "success"}`,
/// [`STATUS_FAILED`] for anything else (an error reply, or bytes that are
/// not a seed reply).
pub fn reply_status(reply: &[u8]) -> u16 {
    #[derive(Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Status<'_>>(reply) {
        Ok(Status { status: Some(s) }) if s == "success" => STATUS_OK,
        _ => STATUS_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_request_object_with_an_action_gives_the_action() {
        let sut = check_request(
            br#" {"action": "get_agent_endpoint", "agent_name": "X"}"#,
            1024,
        );
        assert_eq!(sut, Ok("get_agent_endpoint".to_owned()));
    }

    #[test]
    fn bad_requests_are_refused_each_with_its_reason() {
        let cases: [(&[u8], &str); 7] = [
            (b"{not json", "invalid JSON"),
            (b"[1, 2]", "JSON object"),
            (b"\"text\"", "JSON object"),
            (br#"{"agent_name": "X"}"#, "no \"action\""),
            (br#"{"action": 7}"#, "no \"action\""),
            (br#"{"action": "two words"}"#, "not a method name"),
            (br#"{"action": ""}"#, "not a method name"),
        ];
        for (bytes, why) in cases {
            let err = check_request(bytes, 1024).expect_err(why);
            assert!(err.to_string().contains(why), "{err}");
        }
        let big = vec![b' '; 2048];
        assert_eq!(
            check_request(&big, 1024),
            Err(Refusal::TooLarge {
                len: 2048,
                max: 1024
            })
        );
    }

    #[test]
    fn a_seed_reply_from_an_agent_passes_through_unchanged() {
        let body = br#"{"status": "success", "message": "hi", "data": {"x": 1}}"#;
        assert_eq!(reply_for(STATUS_OK, body, "a"), body.to_vec());
    }

    #[test]
    fn other_bodies_are_wrapped_as_data_with_the_status_in_words() {
        let parse = |bytes: Vec<u8>| serde_json::from_slice::<SeedReply>(&bytes).expect("JSON");

        let json = parse(reply_for(STATUS_OK, br#"{"x": 1}"#, "a"));
        let text = parse(reply_for(STATUS_OK, b"hello", "a"));
        let binary = parse(reply_for(STATUS_OK, &[0xff, 0x00], "a"));
        let unknown = parse(reply_for(STATUS_UNKNOWN_METHOD, b"", "dance"));

        assert_eq!(
            (json.status.as_str(), json.data["x"].as_i64()),
            ("success", Some(1))
        );
        assert_eq!(text.data, serde_json::Value::String("hello".to_owned()));
        assert_eq!(binary.data["base64"].as_str(), Some("/wA="));
        assert_eq!(unknown.status, "error");
        assert_eq!(unknown.message, "unknown action \"dance\"");
        assert_eq!(unknown.data, serde_json::Value::Null);
    }

    #[test]
    fn a_call_becomes_a_request_with_the_method_as_its_leading_action() {
        let object = request_for("search", br#"{"query": "q", "action": "old"}"#);
        let bytes = request_for("work", &[0xff, 0, 1]);

        assert_eq!(object, br#"{"action":"search","query":"q"}"#.to_vec());
        assert_eq!(
            bytes,
            br#"{"action":"work","data":{"base64":"/wAB"}}"#.to_vec()
        );
    }

    #[test]
    fn a_legacy_reply_is_success_only_when_it_says_so() {
        assert_eq!(reply_status(br#"{"status": "success"}"#), STATUS_OK);
        assert_eq!(reply_status(br#"{"status": "error"}"#), STATUS_FAILED);
        assert_eq!(reply_status(b"garbage"), STATUS_FAILED);
        assert_eq!(reply_status(br#"{"data": 1}"#), STATUS_FAILED);
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic_and_an_accepted_action_is_a_method_name(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            if let Ok(action) = check_request(&bytes, 4096) {
                prop_assert!(action_problem(&action).is_none());
            }
            let _ = reply_for(STATUS_OK, &bytes, "a");
            let _ = request_for("a", &bytes);
            let _ = reply_status(&bytes);
        }
    }
}
