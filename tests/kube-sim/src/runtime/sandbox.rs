//! How container processes are launched: inside bubblewrap, or unsandboxed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{RuntimeError, SandboxMode};

/// Where the sandbox mounts the host binary that implements the built-in images.
pub(crate) const EXE_IN_SANDBOX: &str = "/kube-sim/container";

/// `PATH` inside containers.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host files bound read-only into the sandbox's otherwise empty `/etc`.
const ETC_FILES: [&str; 8] = [
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

/// Top-level host directories that may be (merged-/usr) symlinks into `/usr`.
const ROOT_LINKS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The resolved isolation of this runtime.
#[derive(Debug, Clone)]
pub(crate) enum Sandbox {
    /// bubblewrap at this path; exec enters the main process's namespaces with `nsenter` when set
    /// (needs root), else runs in a second bubblewrap over the same directories.
    Bubblewrap {
        bwrap: PathBuf,
        nsenter: Option<PathBuf>,
        setsid: Option<PathBuf>,
        setpriv: Option<PathBuf>,
    },
    /// Plain processes; `setpriv` (when found) makes them die with the runtime.
    None {
        setpriv: Option<PathBuf>,
        setsid: Option<PathBuf>,
    },
}

/// Host directories of one container.
#[derive(Debug, Clone)]
pub(crate) struct ContainerDirs {
    /// `state_dir/pods/<ns>/<pod>/<container>`.
    pub(crate) root: PathBuf,
    /// Mounted as `/var`.
    pub(crate) var: PathBuf,
    /// Mounted as `/tmp`.
    pub(crate) tmp: PathBuf,
    /// Log files (`current.log`, `previous.log`); not visible in the container.
    pub(crate) logs: PathBuf,
}

impl ContainerDirs {
    /// The directories of a container under `root`.
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            var: root.join("var"),
            tmp: root.join("tmp"),
            logs: root.join("logs"),
            root,
        }
    }

    /// Creates them (the container's `/var/log` included).
    pub(crate) fn create(&self) -> Result<(), RuntimeError> {
        for dir in [&self.var.join("log"), &self.tmp, &self.logs] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Host path of a container path under `/var` or `/tmp` (the unsandboxed rewrite).
    pub(crate) fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        for (prefix, dir) in [("/var", &self.var), ("/tmp", &self.tmp)] {
            if container_path == prefix {
                return Some(dir.clone());
            }
            if let Some(rest) = container_path.strip_prefix(prefix)
                && let Some(rest) = rest.strip_prefix('/')
            {
                return Some(dir.join(rest));
            }
        }
        None
    }
}

/// What to launch for one container process (main or exec).
#[derive(Debug, Clone)]
pub(crate) struct Launch<'a> {
    /// The container's hostname (the pod name).
    pub(crate) hostname: &'a str,
    /// Its directories.
    pub(crate) dirs: &'a ContainerDirs,
    /// The host binary implementing built-in images.
    pub(crate) exe: &'a Path,
    /// Environment (beyond PATH, HOSTNAME, HOME).
    pub(crate) env: &'a [(String, String)],
    /// argv (container paths).
    pub(crate) argv: &'a [String],
    /// Working directory inside the container.
    pub(crate) workdir: Option<&'a str>,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(PATH));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Sandbox {
    /// Resolves `mode` on this machine.
    pub(crate) fn detect(mode: SandboxMode) -> Result<Self, RuntimeError> {
        let setsid = find_program("setsid");
        let none = || Self::None {
            setpriv: find_program("setpriv"),
            setsid: find_program("setsid"),
        };
        if mode == SandboxMode::None {
            return Ok(none());
        }
        let probe = find_program("bwrap")
            .ok_or_else(|| "bwrap not found in PATH".to_owned())
            .and_then(|bwrap| probe_bwrap(&bwrap).map(|()| bwrap));
        match (probe, mode) {
            (Ok(bwrap), _) => {
                let nsenter = if rustix::process::geteuid().is_root() {
                    find_program("nsenter")
                } else {
                    None
                };
                Ok(Self::Bubblewrap {
                    bwrap,
                    nsenter,
                    setsid,
                    setpriv: find_program("setpriv"),
                })
            }
            (Err(why), SandboxMode::Bubblewrap) => Err(RuntimeError::SandboxUnavailable(why)),
            (Err(_), _) => Ok(none()),
        }
    }

    /// Whether this is bubblewrap.
    pub(crate) fn is_bubblewrap(&self) -> bool {
        matches!(self, Self::Bubblewrap { .. })
    }

    /// Whether exec'd commands share the main process's namespaces (and see it in `ps`).
    pub(crate) fn exec_shares_namespaces(&self) -> bool {
        matches!(
            self,
            Self::Bubblewrap {
                nsenter: Some(_),
                ..
            }
        )
    }

    /// The command that starts a container's main process.
    pub(crate) fn main_command(
        &self,
        launch: &Launch<'_>,
        marker: &(String, String),
    ) -> tokio::process::Command {
        match self {
            Self::Bubblewrap { bwrap, .. } => bwrap_command(bwrap, launch, marker, &[]),
            Self::None { setpriv, .. } => {
                let argv = rewrite_argv(launch);
                let (program, args) = match argv.split_first() {
                    Some((program, args)) => (program.as_str(), args),
                    None => ("/usr/bin/false", &[][..]),
                };
                let mut cmd = with_pdeathsig(setpriv.as_deref(), Path::new(program));
                cmd.args(args);
                unsandboxed_env(&mut cmd, launch, marker);
                cmd
            }
        }
    }

    /// The command that runs `launch.argv` inside the container whose namespaces are those of
    /// `ns_pid` (the sandbox's init process), on a controlling terminal when `tty`.
    pub(crate) fn exec_command(
        &self,
        launch: &Launch<'_>,
        marker: &(String, String),
        ns_pid: Option<u32>,
        tty: bool,
    ) -> tokio::process::Command {
        let mut argv: Vec<String> = Vec::new();
        let (setsid, setpriv) = match self {
            Self::Bubblewrap {
                setsid, setpriv, ..
            }
            | Self::None {
                setsid, setpriv, ..
            } => (setsid, setpriv),
        };
        if tty && setsid.is_some() {
            // A new session whose controlling terminal is stdin (the pty): job control works.
            argv.extend(["/usr/bin/setsid", "--ctty", "--wait"].map(str::to_owned));
        }
        if let Some(dir) = launch.workdir {
            argv.extend(["/usr/bin/env", "-C", dir, "--"].map(str::to_owned));
        }
        argv.extend(launch.argv.iter().cloned());
        let inner = Launch {
            argv: &argv,
            workdir: None,
            ..launch.clone()
        };
        let mut extra_env: Vec<(String, String)> = Vec::new();
        if tty {
            extra_env.push(("TERM".to_owned(), "xterm".to_owned()));
        }
        match (self, ns_pid) {
            (
                Self::Bubblewrap {
                    nsenter: Some(nsenter),
                    ..
                },
                Some(pid),
            ) => {
                let mut cmd = with_pdeathsig(setpriv.as_deref(), nsenter);
                cmd.arg(format!("--target={pid}"))
                    .args(["--mount", "--uts", "--ipc", "--pid", "--"])
                    .args(&argv);
                cmd.env_clear();
                for (k, v) in base_env(launch, "/root", marker)
                    .into_iter()
                    .chain(extra_env)
                {
                    cmd.env(k, v);
                }
                cmd
            }
            (Self::Bubblewrap { bwrap, .. }, _) => bwrap_command(bwrap, &inner, marker, &extra_env),
            (Self::None { .. }, _) => {
                // Through env(1), so a missing command is exit status 127 as in a container.
                let mut argv = vec!["/usr/bin/env".to_owned(), "--".to_owned()];
                argv.extend(rewrite_argv(&inner));
                let mut cmd = with_pdeathsig(setpriv.as_deref(), Path::new("/usr/bin/env"));
                cmd.args(argv.iter().skip(1));
                unsandboxed_env(&mut cmd, launch, marker);
                for (k, v) in extra_env {
                    cmd.env(k, v);
                }
                cmd
            }
        }
    }
}

/// `program`, made to die with the spawning thread through `setpriv --pdeathsig KILL` when
/// setpriv exists (the runtime spawns from one long-lived thread that ends with it).
fn with_pdeathsig(setpriv: Option<&Path>, program: &Path) -> tokio::process::Command {
    match setpriv {
        Some(setpriv) => {
            let mut cmd = tokio::process::Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
            cmd
        }
        None => tokio::process::Command::new(program),
    }
}

fn base_env(launch: &Launch<'_>, home: &str, marker: &(String, String)) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), PATH.to_owned()),
        ("HOSTNAME".to_owned(), launch.hostname.to_owned()),
        ("HOME".to_owned(), home.to_owned()),
        marker.clone(),
    ];
    env.extend(launch.env.iter().cloned());
    env
}

fn unsandboxed_env(
    cmd: &mut tokio::process::Command,
    launch: &Launch<'_>,
    marker: &(String, String),
) {
    cmd.env_clear();
    let home = launch.dirs.root.to_string_lossy().into_owned();
    for (k, v) in base_env(launch, &home, marker) {
        cmd.env(k, v);
    }
    cmd.env("TMPDIR", &launch.dirs.tmp);
    let dir = launch
        .workdir
        .and_then(|w| launch.dirs.host_path(w))
        .unwrap_or_else(|| launch.dirs.root.clone());
    cmd.current_dir(dir);
}

/// argv with the built-in exe and `/var`, `/tmp` paths mapped to the host (unsandboxed mode).
fn rewrite_argv(launch: &Launch<'_>) -> Vec<String> {
    launch
        .argv
        .iter()
        .map(|arg| {
            if arg == EXE_IN_SANDBOX {
                return launch.exe.to_string_lossy().into_owned();
            }
            launch
                .dirs
                .host_path(arg)
                .map_or_else(|| arg.clone(), |p| p.to_string_lossy().into_owned())
        })
        .collect()
}

fn bwrap_command(
    bwrap: &Path,
    launch: &Launch<'_>,
    marker: &(String, String),
    extra_env: &[(String, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bwrap);
    cmd.env_clear();
    // bwrap itself carries the marker too (it does not pass its environment on: --clearenv).
    cmd.env(&marker.0, &marker.1);
    cmd.args([
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-ipc",
    ]);
    cmd.args(["--hostname", launch.hostname]);
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    for name in ROOT_LINKS {
        let host = Path::new("/").join(name);
        match std::fs::read_link(&host) {
            Ok(target) => {
                cmd.arg("--symlink").arg(target).arg(&host);
            }
            Err(_) if host.is_dir() => {
                cmd.arg("--ro-bind").arg(&host).arg(&host);
            }
            Err(_) => {}
        }
    }
    cmd.args([
        "--proc", "/proc", "--dev", "/dev", "--dir", "/etc", "--dir", "/root",
    ]);
    for file in ETC_FILES {
        cmd.args(["--ro-bind-try", file, file]);
    }
    cmd.arg("--bind").arg(&launch.dirs.var).arg("/var");
    cmd.arg("--bind").arg(&launch.dirs.tmp).arg("/tmp");
    cmd.arg("--ro-bind").arg(launch.exe).arg(EXE_IN_SANDBOX);
    cmd.arg("--clearenv");
    for (k, v) in base_env(launch, "/root", marker).iter().chain(extra_env) {
        cmd.args(["--setenv", k, v]);
    }
    cmd.args(["--chdir", launch.workdir.unwrap_or("/")]);
    cmd.arg("--").args(launch.argv);
    cmd
}

fn probe_bwrap(bwrap: &Path) -> Result<(), String> {
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args([
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-uts",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for name in ROOT_LINKS {
        let host = Path::new("/").join(name);
        if let Ok(target) = std::fs::read_link(&host) {
            cmd.arg("--symlink").arg(target).arg(&host);
        } else if host.is_dir() {
            cmd.arg("--ro-bind").arg(&host).arg(&host);
        }
    }
    cmd.args(["--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} does not work here ({}): {}",
            bwrap.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
