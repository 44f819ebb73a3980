//! How a host proves who it is to NATS: [`Credentials`] read from the
//! files the topology names (or `--nats-nkey`), and the TLS files of a
//! `tls://` URL.
//!
//! Every file here is read or checked through `config::trust`, which a
//! root daemon applies to its secrets: owned by root (or the daemon's
//! user), no access for group or others, in directories only root can
//! change. A seed is parsed before the link starts, so a wrong file stops
//! the daemon at boot with its path, not with a refused connection later.
//! Secrets never reach a log: [`Credentials`] prints only the public key
//! or the user name.

use std::fmt;
use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;

use super::ClusterError;
use crate::config::trust::{self, Strictness};

/// A host's NATS identity.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None: a server without authorization.
    None,
    /// A user nkey: the seed signs the server's challenge.
    Nkey {
        /// The seed (`SU...`), secret.
        seed: String,
        /// Its public key (`U...`), as the server's config names it.
        public: String,
    },
    /// A user and its password.
    Password {
        /// The user.
        user: String,
        /// The password, secret.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Nkey { public, .. } => write!(f, "Nkey({public})"),
            Credentials::Password { user, .. } => write!(f, "Password({user})"),
        }
    }
}

impl Credentials {
    /// A user nkey from the seed in `path` (the first line; `pinwheel
    /// cluster init` writes one per host).
    pub fn nkey_file(path: &Path) -> Result<Self, ClusterError> {
        let text = read_secret(path)?;
        let seed = text.lines().next().unwrap_or_default().trim().to_owned();
        Self::nkey(&seed).map_err(|reason| ClusterError::Secret {
            path: path.to_owned(),
            reason,
        })
    }

    /// A user nkey from its seed.
    pub fn nkey(seed: &str) -> Result<Self, String> {
        let pair = nkeys::KeyPair::from_seed(seed)
            .map_err(|err| format!("not an nkey seed ({err}); write the seed, `SU...`, alone"))?;
        if pair.key_pair_type() != nkeys::KeyPairType::User {
            return Err("not a user nkey seed (`SU...`)".to_owned());
        }
        Ok(Credentials::Nkey {
            seed: seed.to_owned(),
            public: pair.public_key(),
        })
    }

    /// A user and password from `path`, one line `user:password`.
    pub fn password_file(path: &Path) -> Result<Self, ClusterError> {
        let text = read_secret(path)?;
        let line = text.lines().next().unwrap_or_default();
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(Credentials::Password {
                    user: user.to_owned(),
                    password: password.to_owned(),
                })
            }
            _ => Err(ClusterError::Secret {
                path: path.to_owned(),
                reason: "write one line, user:password".to_owned(),
            }),
        }
    }

    /// `options` with this identity.
    pub(super) fn apply(&self, options: ConnectOptions) -> ConnectOptions {
        match self {
            Credentials::None => options,
            Credentials::Nkey { seed, .. } => options.nkey(seed.clone()),
            Credentials::Password { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
        }
    }
}

fn read_secret(path: &Path) -> Result<String, ClusterError> {
    trust::read(path, Strictness::secret()).map_err(|err| ClusterError::Secret {
        path: path.to_owned(),
        reason: err.to_string(),
    })
}

/// Checks the TLS files before async-nats reads them: the CA as a config
/// file (no one else may change it), the client key as a secret.
pub(super) fn check_tls_files(
    ca: Option<&Path>,
    client: Option<&(PathBuf, PathBuf)>,
) -> Result<(), ClusterError> {
    let refused = |path: &Path| {
        let path = path.to_owned();
        move |err: crate::config::ConfigError| ClusterError::Secret {
            path,
            reason: err.to_string(),
        }
    };
    if let Some(ca) = ca {
        trust::read(ca, Strictness::config()).map_err(refused(ca))?;
    }
    if let Some((cert, key)) = client {
        trust::read(cert, Strictness::config()).map_err(refused(cert))?;
        trust::check_secret(key).map_err(refused(key))?;
    }
    Ok(())
}

/// `options` with the TLS files: TLS is required for a `tls://` URL (as
/// async-nats also infers), with the given CA and client certificate.
pub(super) fn apply_tls(
    options: ConnectOptions,
    url: &str,
    ca: Option<&Path>,
    client: Option<&(PathBuf, PathBuf)>,
) -> ConnectOptions {
    let mut options = options;
    if url.split(',').any(|u| u.trim().starts_with("tls://")) {
        options = options.require_tls(true);
    }
    if let Some(ca) = ca {
        options = options.add_root_certificates(ca.to_owned());
    }
    if let Some((cert, key)) = client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn secret(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("mode");
        path
    }

    #[test]
    fn a_user_seed_file_gives_its_public_key_and_debug_never_shows_the_seed() {
        let dir = tempfile::tempdir().expect("a directory");
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().expect("a seed");
        let path = secret(dir.path(), "h.nk", &format!("{seed}\n"), 0o600);

        let sut = Credentials::nkey_file(&path).expect("a seed");

        assert_eq!(format!("{sut:?}"), format!("Nkey({})", pair.public_key()));
        assert!(!format!("{sut:?}").contains(&seed));
    }

    #[test]
    fn a_seed_others_can_read_or_that_is_no_user_seed_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("a directory");
        let user = nkeys::KeyPair::new_user().seed().expect("a seed");
        let server = nkeys::KeyPair::new_server().seed().expect("a seed");
        let open = secret(dir.path(), "open.nk", &user, 0o644);
        let wrong = secret(dir.path(), "server.nk", &server, 0o600);

        let readable = Credentials::nkey_file(&open);
        let not_user = Credentials::nkey_file(&wrong);

        let Err(ClusterError::Secret { path, .. }) = readable else {
            panic!("expected a refusal, got {readable:?}");
        };
        assert_eq!(path, open);
        let Err(ClusterError::Secret { reason, .. }) = not_user else {
            panic!("expected a refusal, got {not_user:?}");
        };
        assert!(reason.contains("user nkey"), "{reason}");
    }

    #[test]
    fn a_password_file_holds_user_colon_password() {
        let dir = tempfile::tempdir().expect("a directory");
        let good = secret(dir.path(), "ok", "pc2:s3cret:with:colons\n", 0o600);
        let bad = secret(dir.path(), "bad", "no-colon\n", 0o600);

        let sut = Credentials::password_file(&good).expect("valid");

        assert_eq!(
            sut,
            Credentials::Password {
                user: "pc2".to_owned(),
                password: "s3cret:with:colons".to_owned()
            }
        );
        assert!(Credentials::password_file(&bad).is_err());
    }
}
