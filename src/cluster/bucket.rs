//! Opening the link's JetStream KV buckets: the registry and the
//! placements, created on first use with the replicas the cluster asks for.
//!
//! The bucket's stream is created by hand, as async-nats's
//! `create_key_value` would create it: that call first reads account
//! fields (`reserved_memory`) which Debian's nats-server 2.9 does not
//! send, and fails. Two settings differ from a default bucket: rollups
//! are off (a KV purge is a rollup, and a rollup header on any key of a
//! bucket purges keys other hosts wrote; nothing here purges), and
//! deletes through the stream API are refused (`deny_delete`); a key is
//! deleted only by a delete marker, which is a write like any other.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

/// How long one KV operation may take.
pub const KV_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens `bucket`, creating it with `replicas` if missing.
pub async fn open(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    replicas: u8,
) -> Result<kv::Store, String> {
    let stream = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: false,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: usize::from(replicas.max(1)),
        ..jetstream::stream::Config::default()
    };
    match tokio::time::timeout(KV_TIMEOUT, js.get_or_create_stream(stream)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("timed out".to_owned()),
    }
    match tokio::time::timeout(KV_TIMEOUT, js.get_key_value(bucket)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}
