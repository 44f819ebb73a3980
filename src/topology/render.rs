//! Output of `pinwheel topo detect` (placeholder).

use super::HostCpus;

/// JSON form.
pub fn render_detect_json(host: &HostCpus) -> String {
    let _ = host;
    todo!()
}

/// TOML form.
pub fn render_detect_toml(host: &HostCpus, name: &str) -> String {
    let _ = (host, name);
    todo!()
}
