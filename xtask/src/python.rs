//! Hightouch's own Python SDK for `tests/syncs_api.rs` (issue #18 §5): a
//! virtual environment under the target directory holding the pinned
//! `hightouch` package from PyPI (its dependencies are pinned exactly by
//! the package itself). Debian's `python3-venv` is installed when
//! `python3 -m venv` cannot work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// The SDK the test drives; bump both together.
const HIGHTOUCH: &str = "hightouch==1.31.0";
/// The venv's directory name under the target directory.
const VENV: &str = "hightouch-sdk-1.31.0";

/// Where the venv's interpreter is: the test reads this variable.
pub const PYTHON_ENV: &str = "WAYMARK_HIGHTOUCH_PYTHON";

/// Makes the venv with the SDK when it is missing, and exports its
/// interpreter as [`PYTHON_ENV`] to the tests this process starts.
pub fn ensure_hightouch_sdk(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = crate::setup::target_dir(root).join(VENV);
    let python = venv.join("bin/python");
    if !imports_sdk(&python) {
        ensure_venv_module()?;
        eprintln!(
            "+ python3 -m venv {} && pip install {HIGHTOUCH}",
            venv.display()
        );
        let _ = std::fs::remove_dir_all(&venv);
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("cannot run python3")?;
        anyhow::ensure!(status.success(), "`python3 -m venv` failed ({status})");
        let status = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                HIGHTOUCH,
            ])
            .status()
            .context("cannot run the venv's pip")?;
        anyhow::ensure!(
            status.success(),
            "`pip install {HIGHTOUCH}` failed ({status}); PyPI must be reachable"
        );
        anyhow::ensure!(
            imports_sdk(&python),
            "{HIGHTOUCH} is installed in {} but `import hightouch` fails",
            venv.display()
        );
    }
    // xtask is single-threaded here, before any test process starts.
    std::env::set_var(PYTHON_ENV, &python);
    Ok(python)
}

/// Whether `python` runs and imports the SDK.
fn imports_sdk(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import hightouch.sdk"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian's `python3-venv` when `python3` lacks `venv` or `ensurepip`.
fn ensure_venv_module() -> anyhow::Result<()> {
    let works = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    eprintln!("installing python3-venv (Hightouch's SDK runs in a venv)");
    let status = Command::new("apt-get").args(["update", "-qq"]).status()?;
    anyhow::ensure!(status.success(), "`apt-get update` failed ({status})");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "python3", "python3-venv"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    anyhow::ensure!(
        status.success(),
        "`apt-get install python3-venv` failed ({status})"
    );
    Ok(())
}
