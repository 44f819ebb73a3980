//! `pinwheel cluster init`: one NATS identity per host and a nats-server
//! configuration whose permissions let each host speak only as itself.
//!
//! For host H of cluster C, the configuration lets H
//!
//! * publish its state (`pinwheel.C.host.H.state`), its error reports
//!   (`pinwheel.C.errors.H`), calls from it to any host
//!   (`pinwheel.C.call.*.H.>`), its registry records (the KV put subject
//!   `$KV.pinwheel-C-registry.H.>`), placements
//!   (`$KV.pinwheel-C-placements.>`: any host may move a placement, the
//!   bucket's compare-and-set orders them), and the JetStream API requests
//!   the two buckets need (stream info and create, ordered consumers for
//!   the watches, direct gets), nothing else of JetStream's API (no purge,
//!   no delete, no other stream);
//! * reply to requests it received (`allow_responses`), and to nothing
//!   else: another host's inbox is not a subject H may publish on;
//! * subscribe to every host's state and error reports, calls to H
//!   (`pinwheel.C.call.H.>`) and its own inbox prefix
//!   (`pinwheel.C.inbox.H.>`, where replies and JetStream's answers come),
//!   so no host reads another's replies.
//!
//! Files: `<host>.nk` per host (the user seed; the daemon's `nkey_file`,
//! mode 0600), `auth.conf` (the users and their permissions) and
//! `nats-server.conf` (JetStream on, store under the output directory, and
//! `include auth.conf`; runnable as `nats-server -c nats-server.conf -p
//! PORT`). For a NATS cluster, each node's own configuration adds its
//! `cluster {}` block and store, and includes the same `auth.conf`.

use std::fmt::Write as _;
use std::path::Path;

use super::{ClusterConfig, ClusterError};

/// What `pinwheel cluster init` writes.
#[derive(Debug)]
pub struct InitFiles {
    /// Per host: its name, its seed (the file's content) and its public
    /// key.
    pub seeds: Vec<(String, String, String)>,
    /// The nats-server configuration (`nats-server.conf`).
    pub server_conf: String,
    /// The users and their permissions (`auth.conf`), which the server
    /// configuration includes.
    pub auth_conf: String,
}

/// Fresh identities for `hosts` of `cluster` and the server configuration
/// that names them; JetStream stores under `store_dir`.
pub fn init_files(
    cluster: &str,
    hosts: &[String],
    store_dir: &Path,
) -> Result<InitFiles, ClusterError> {
    if hosts.is_empty() {
        return Err(ClusterError::Init {
            reason: "no hosts; pass --hosts mainpc,pc2".to_owned(),
        });
    }
    let mut seeds = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        ClusterConfig::try_new(cluster, host, "nats://127.0.0.1:4222", 250, 4)?;
        if hosts[..i].contains(host) {
            return Err(ClusterError::Init {
                reason: format!("host {host} is named twice"),
            });
        }
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().map_err(|err| ClusterError::Init {
            reason: format!("no seed for {host}: {err}"),
        })?;
        seeds.push((host.clone(), seed, pair.public_key()));
    }
    let store = store_dir.join("jetstream");
    let server_conf = format!(
        "# NATS for pinwheel cluster {cluster:?}, written by `pinwheel cluster init`.\n\
         # Run: nats-server -c nats-server.conf -p 4222\n\
         # For a NATS cluster, give each node a file like this one with its own\n\
         # store and a cluster {{}} block, including the same auth.conf, and set\n\
         # kv_replicas = 3 in the hosts' topologies.\n\n\
         jetstream {{\n  store_dir: {:?}\n}}\n\ninclude \"auth.conf\"\n",
        store.display().to_string()
    );
    let auth_conf = auth_conf(cluster, &seeds);
    Ok(InitFiles {
        seeds,
        server_conf,
        auth_conf,
    })
}

fn auth_conf(cluster: &str, seeds: &[(String, String, String)]) -> String {
    let mut conf = String::new();
    let _ = writeln!(
        conf,
        "# The hosts of pinwheel cluster {cluster:?}: one nkey user each (its\n\
         # <host>.nk seed), each allowed to speak only as itself.\n"
    );
    let _ = writeln!(conf, "authorization {{\n  users: [");
    for (host, _, public) in seeds {
        let (publish, subscribe) = permissions(cluster, host);
        let _ = writeln!(conf, "    # {host}\n    {{\n      nkey: {public:?}");
        let _ = writeln!(conf, "      permissions: {{\n        publish: {{ allow: [");
        for subject in publish {
            let _ = writeln!(conf, "          {subject:?}");
        }
        let _ = writeln!(conf, "        ] }}\n        subscribe: {{ allow: [");
        for subject in subscribe {
            let _ = writeln!(conf, "          {subject:?}");
        }
        let _ = writeln!(
            conf,
            "        ] }}\n        allow_responses: true\n      }}\n    }}"
        );
    }
    let _ = writeln!(conf, "  ]\n}}");
    conf
}

/// What host `host` of `cluster` may publish and subscribe to.
pub fn permissions(cluster: &str, host: &str) -> (Vec<String>, Vec<String>) {
    let registry = format!("pinwheel-{cluster}-registry");
    let placements = format!("pinwheel-{cluster}-placements");
    let mut publish = vec![
        format!("pinwheel.{cluster}.host.{host}.state"),
        format!("pinwheel.{cluster}.errors.{host}"),
        format!("pinwheel.{cluster}.call.*.{host}.>"),
        format!("$KV.{registry}.{host}.>"),
        format!("$KV.{placements}.>"),
        "$JS.API.INFO".to_owned(),
    ];
    for bucket in [&registry, &placements] {
        let stream = format!("KV_{bucket}");
        publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.CREATE.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        ]);
    }
    let subscribe = vec![
        format!("pinwheel.{cluster}.host.*.state"),
        format!("pinwheel.{cluster}.errors.*"),
        format!("pinwheel.{cluster}.call.{host}.>"),
        format!("pinwheel.{cluster}.inbox.{host}.>"),
    ];
    (publish, subscribe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_gets_a_user_seed_and_permissions_that_name_only_itself() {
        let hosts = ["mainpc", "pc2"].map(str::to_owned);

        let sut = init_files("home", &hosts, Path::new("/var/lib/nats")).expect("valid");

        assert_eq!(sut.seeds.len(), 2);
        for (host, seed, public) in &sut.seeds {
            let pair = nkeys::KeyPair::from_seed(seed).expect("a seed");
            assert_eq!(&pair.public_key(), public, "{host}");
            assert!(public.starts_with('U'));
            assert!(sut.auth_conf.contains(public.as_str()));
        }
        let (publish, subscribe) = permissions("home", "pc2");
        assert!(publish.contains(&"pinwheel.home.host.pc2.state".to_owned()));
        assert!(publish.contains(&"$KV.pinwheel-home-registry.pc2.>".to_owned()));
        assert!(
            !publish
                .iter()
                .any(|s| s.contains("mainpc") || s.contains("PURGE"))
        );
        assert!(subscribe.contains(&"pinwheel.home.inbox.pc2.>".to_owned()));
        assert!(sut.server_conf.contains("\"/var/lib/nats/jetstream\""));
        assert!(sut.server_conf.contains("include \"auth.conf\""));
        assert!(sut.auth_conf.contains("allow_responses: true"));
    }

    #[test]
    fn no_hosts_a_twice_named_host_or_a_dotted_name_are_refused() {
        let none = init_files("home", &[], Path::new("/x"));
        let twice = init_files("home", &["a".to_owned(), "a".to_owned()], Path::new("/x"));
        let dotted = init_files("home", &["pc.2".to_owned()], Path::new("/x"));

        assert!(matches!(none, Err(ClusterError::Init { .. })));
        assert!(matches!(twice, Err(ClusterError::Init { .. })));
        assert!(matches!(dotted, Err(ClusterError::Name { .. })));
    }
}
