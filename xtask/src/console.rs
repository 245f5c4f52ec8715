//! What `cargo xtask run` tells a newcomer: where the console is and how to sign in.

/// Prints the console's address and the demo token before the worker starts.
///
/// The address follows `--listen` when it is among `extra`; the tokens are
/// the embedded default's (`edge-worker/src/config/default.toml`), so with
/// `--config` the operator's own `[admin]` token applies instead.
pub(crate) fn announce(extra: &[String]) {
    let listen = extra
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| extra.get(i + 1))
        .map(String::as_str)
        .or_else(|| extra.iter().find_map(|a| a.strip_prefix("--listen=")))
        .unwrap_or("127.0.0.1:8080");
    let custom_config = extra
        .iter()
        .any(|a| a == "--config" || a.starts_with("--config="));
    eprintln!("\nWaymark console: http://{listen}/admin/");
    if custom_config {
        eprintln!("  sign in with the [admin] token of your config\n");
    } else {
        eprintln!(
            "  sign in with the demo admin token: wm_admin_demo\n  \
             (read-only live token: wm_live_demo)\n"
        );
    }
}
