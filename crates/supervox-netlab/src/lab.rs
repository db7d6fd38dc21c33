//! Network namespaces owned by a [`Lab`], and processes run inside them.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::link::{ImpairedLink, LinkConfig, LinkShared};

/// Prefix of every namespace this crate creates: `svl-<pid>-<lab>-<name>`.
pub const NAMESPACE_PREFIX: &str = "svl-";

/// Directory where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Counter that makes lab prefixes unique inside one process.
static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Locks a mutex, recovering the data if another thread panicked while holding it (the data
/// kept here — lists of names and children — stays consistent at every step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `ip` with the given arguments and returns its standard output, or an error that carries
/// its standard error.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_checked(&mut cmd)
}

/// Runs a command to completion; non-zero exit is an error with the command's standard error.
fn run_checked(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && cmd.get_program() == "ip" {
            Error::IpMissing(e)
        } else {
            Error::io(format!("running `{line}`"), e)
        }
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::CommandFailed {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A command line as text, for error messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that we are root and that `ip` runs.
fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(Error::NotRoot { euid });
    }
    match Command::new("ip").arg("-V").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(Error::IpMissing(std::io::Error::other(format!(
            "`ip -V` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))),
        Err(e) => Err(Error::IpMissing(e)),
    }
}

/// State shared by a [`Lab`] and the [`Namespace`] handles it gave out.
pub(crate) struct LabInner {
    prefix: String,
    namespaces: Mutex<Vec<String>>,
    processes: Mutex<Vec<Arc<Mutex<Child>>>>,
    links: Mutex<Vec<Weak<LinkShared>>>,
    next_link: AtomicU32,
}

/// A set of network namespaces (and the links and processes inside them) that is torn down as
/// a whole when dropped.
///
/// Every lab has a unique prefix, `svl-<pid>-<n>`, so any number of labs (for instance tests
/// running in parallel) can coexist. Dropping the lab stops its links, kills the process groups
/// of the processes it spawned, and deletes its namespaces.
///
/// ```no_run
/// use supervox_netlab::{Impairment, Lab, LinkConfig};
/// use std::time::Duration;
///
/// let lab = Lab::new()?;
/// let a = lab.namespace("a")?;
/// let b = lab.namespace("b")?;
/// let link = lab.link(&a, &b, LinkConfig::symmetric(Impairment::none().with_delay(Duration::from_millis(25))))?;
/// let out = a.run(["ping", "-c", "1", &link.addr_b().to_string()])?;
/// println!("{}", String::from_utf8_lossy(&out.stdout));
/// # Ok::<(), supervox_netlab::Error>(())
/// ```
pub struct Lab {
    inner: Arc<LabInner>,
}

// The prefix names the lab's namespaces; the rest is mutex-guarded bookkeeping.
impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl Lab {
    /// Creates an empty lab.
    ///
    /// Fails with [`Error::NotRoot`] when not running as root and [`Error::IpMissing`] when
    /// iproute2's `ip` cannot be run. Namespaces left behind by earlier processes that died
    /// without cleaning up (their pid no longer exists) are deleted first.
    pub fn new() -> Result<Lab> {
        check_prerequisites()?;
        // Best effort: a failure to clean stale namespaces must not stop a new lab.
        let _ = Lab::cleanup_stale();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NAMESPACE_PREFIX}{}-{n}", std::process::id());
        Ok(Lab {
            inner: Arc::new(LabInner {
                prefix,
                namespaces: Mutex::new(Vec::new()),
                processes: Mutex::new(Vec::new()),
                links: Mutex::new(Vec::new()),
                next_link: AtomicU32::new(0),
            }),
        })
    }

    /// The prefix of this lab's namespace names, `svl-<pid>-<n>`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Creates a namespace named `<prefix>-<name>` with its loopback interface up.
    ///
    /// `name` may contain ASCII letters, digits, `-` and `_`.
    pub fn namespace(&self, name: &str) -> Result<Namespace> {
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::InvalidArgument(format!(
                "namespace name {name:?} must be 1-64 ASCII letters, digits, '-' or '_'"
            )));
        }
        let full = format!("{}-{name}", self.inner.prefix);
        ip(["netns", "add", &full])?;
        lock(&self.inner.namespaces).push(full.clone());
        let ns = Namespace { name: full, lab: Arc::clone(&self.inner) };
        ip(["-n", ns.name(), "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Joins namespaces `a` and `b` with an impaired point-to-point link.
    ///
    /// The link's `n`-th address pair is `10.77.n.1/30` in `a` and `10.77.n.2/30` in `b`, where
    /// `n` counts the links of this lab from 0 (or is [`LinkConfig::subnet`] when set). The
    /// interfaces are TUN devices named `svl<n>`. See [`ImpairedLink`].
    pub fn link(&self, a: &Namespace, b: &Namespace, config: LinkConfig) -> Result<ImpairedLink> {
        if a.name == b.name {
            return Err(Error::InvalidArgument("an impaired link needs two different namespaces".into()));
        }
        let index = match config.subnet {
            Some(s) => s,
            None => {
                let n = self.inner.next_link.fetch_add(1, Ordering::Relaxed);
                u8::try_from(n).map_err(|_| Error::InvalidArgument("a lab holds at most 256 links".into()))?
            }
        };
        let link = ImpairedLink::create(a, b, index, config)?;
        let mut links = lock(&self.inner.links);
        links.retain(|w| w.strong_count() > 0);
        links.push(link.downgrade_shared());
        Ok(link)
    }

    /// Lists the namespaces of this lab, full names.
    pub fn namespaces(&self) -> Vec<String> {
        lock(&self.inner.namespaces).clone()
    }

    /// Deletes namespaces named `svl-<pid>-...` whose process no longer exists, left behind by
    /// a run that was killed. Returns the names deleted.
    pub fn cleanup_stale() -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        for name in list_namespaces()? {
            let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else { continue };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            if ip(["netns", "delete", &name]).is_ok() {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }
}

/// Names of all namespaces known to `ip netns`.
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = ip(["netns", "list"])?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

impl Drop for Lab {
    fn drop(&mut self) {
        for link in lock(&self.inner.links).drain(..) {
            if let Some(shared) = link.upgrade() {
                shared.request_stop();
            }
        }
        for child in lock(&self.inner.processes).drain(..) {
            kill_group(&mut lock(&child));
        }
        for name in lock(&self.inner.namespaces).drain(..) {
            // Deleting can fail transiently while a just-killed process is exiting; retry a little.
            for attempt in 0..5 {
                match ip(["netns", "delete", &name]) {
                    Ok(_) => break,
                    Err(_) if attempt < 4 => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => eprintln!("supervox-netlab: could not delete namespace {name}: {e}"),
                }
            }
        }
    }
}

/// Kills a child's whole process group (children were started as group leaders) and reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A network namespace of a [`Lab`]. Cheap to clone; it stays usable as long as the lab lives.
#[derive(Clone)]
pub struct Namespace {
    name: String,
    lab: Arc<LabInner>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish()
    }
}

impl Namespace {
    /// The namespace's full name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A [`Command`] that runs `program` inside this namespace (`ip netns exec <name> program`).
    ///
    /// The command is made the leader of a new process group, so [`Namespace::spawn`] and the
    /// lab can kill everything it starts. Add arguments, environment and stdio as usual.
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program).process_group(0);
        cmd
    }

    /// A [`Command`] that runs a shell script (`sh -c script`) inside this namespace.
    pub fn shell(&self, script: &str) -> Command {
        let mut cmd = self.command("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    /// Runs `argv` inside the namespace to completion and returns its output. A non-zero exit
    /// is an [`Error::CommandFailed`] carrying the standard error.
    pub fn run<I, S>(&self, argv: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = argv.into_iter();
        let program = argv.next().ok_or_else(|| Error::InvalidArgument("empty command".into()))?;
        let mut cmd = self.command(program);
        cmd.args(argv).stdin(Stdio::null());
        let line = describe(&cmd);
        let out = cmd.output().map_err(|e| Error::io(format!("running `{line}`"), e))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(Error::CommandFailed {
                command: line,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Spawns a command built with [`Namespace::command`] or [`Namespace::shell`] and tracks it:
    /// its process group is killed when the lab is dropped, unless it has ended before.
    pub fn spawn(&self, mut cmd: Command) -> Result<NsProcess> {
        let line = describe(&cmd);
        let child = cmd.spawn().map_err(|e| Error::io(format!("spawning `{line}`"), e))?;
        let child = Arc::new(Mutex::new(child));
        let mut processes = lock(&self.lab.processes);
        processes.retain(|c| matches!(lock(c).try_wait(), Ok(None)));
        processes.push(Arc::clone(&child));
        Ok(NsProcess { child, command: line })
    }

    /// Runs `f` on a thread that has entered this namespace and returns its result.
    ///
    /// Sockets created inside `f` belong to the namespace for their whole life, whichever
    /// thread uses them later, so this is how a test opens a socket "in" a namespace:
    ///
    /// ```no_run
    /// # let lab = supervox_netlab::Lab::new()?;
    /// # let a = lab.namespace("a")?;
    /// let sock = a.enter(|| std::net::UdpSocket::bind("0.0.0.0:0"))??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("{NETNS_DIR}/{}", self.name);
        let file = File::open(&path).map_err(|e| Error::io(format!("opening namespace {path}"), e))?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| -> Result<R> {
                // SAFETY: setns on a valid namespace fd; it only changes this thread's network
                // namespace, and the thread ends when the scope does.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(Error::io(
                        format!("entering namespace {}", self.name),
                        std::io::Error::last_os_error(),
                    ));
                }
                Ok(f())
            });
            handle.join().map_err(|_| Error::Panicked(self.name.clone()))?
        })
    }
}

/// A process started in a namespace with [`Namespace::spawn`].
///
/// Dropping the handle does not kill the process; the lab does when it is dropped, or call
/// [`NsProcess::kill`].
#[derive(Debug)]
pub struct NsProcess {
    child: Arc<Mutex<Child>>,
    command: String,
}

impl NsProcess {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> &str {
        &self.command
    }

    /// Returns the exit status if the process has ended.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        lock(&self.child).try_wait().map_err(|e| Error::io(format!("waiting for `{}`", self.command), e))
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process to end.
    pub fn wait(&self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_timeout(Duration::from_secs(1))? {
                return Ok(status);
            }
        }
    }

    /// Takes the process's standard output pipe, if it was configured with
    /// `Stdio::piped()`.
    pub fn take_stdout(&self) -> Option<std::process::ChildStdout> {
        lock(&self.child).stdout.take()
    }

    /// Kills the process group and reaps the process. Returns its status.
    pub fn kill(&self) -> Result<ExitStatus> {
        let mut child = lock(&self.child);
        kill_group(&mut child);
        match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Ok(ExitStatus::from_raw(libc::SIGKILL)),
            Err(e) => Err(Error::io(format!("reaping `{}`", self.command), e)),
        }
    }
}
