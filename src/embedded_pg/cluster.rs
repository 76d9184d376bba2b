//! The cluster on disk and its processes: the data directory's lock, where the cluster
//! lives, the server binaries, the user PostgreSQL runs as, initialisation, leftovers.

use std::ffi::CString;
use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::*;

/// Takes the data directory's lock without waiting and writes our pid into the lock file, or
/// names the live owner. The lock is an advisory `flock`: it belongs to the open file, so it
/// lasts exactly as long as the owning process keeps the file open, and no longer.
pub(super) fn lock_data_dir(data_dir: &Path) -> Result<File, EmbeddedError> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(data_dir.join(LOCK_FILE))
        .map_err(io("opening the data directory's lock file"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
            return Err(EmbeddedError::InUse {
                data_dir: data_dir.to_owned(),
                owner: if owner.is_empty() {
                    "(pid not yet written)".to_owned()
                } else {
                    owner.to_owned()
                },
            });
        }
        Err(TryLockError::Error(err)) => {
            return Err(io("locking the data directory")(err));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io("writing the lock file"))?;
    Ok(file)
}

/// Where the cluster lives. Normally `<data-dir>/postgres`. When this process is root and the
/// `postgres` user cannot reach the data directory (it sits under `/root`, say), the cluster
/// is kept under `/var/lib/boxoffice/<hash of the data directory>/postgres` instead, and
/// `<data-dir>/postgres` is a symbolic link to it, so the next run finds it again.
pub(super) fn cluster_location(
    data_dir: &Path,
    run_as: Option<RunAs>,
) -> Result<PathBuf, EmbeddedError> {
    let local = data_dir.join("postgres");
    if fs::symlink_metadata(&local).is_ok_and(|m| m.file_type().is_symlink()) {
        return fs::read_link(&local).map_err(io("reading the cluster link"));
    }
    let Some(user) = run_as else { return Ok(local) };
    if local.exists()
        || data_dir
            .ancestors()
            .skip(1)
            .all(|dir| traversable(dir, user))
    {
        return Ok(local);
    }
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let tag = crate::domain::hex::encode(&digest[..8]);
    let home = Path::new(RELOCATED_ROOT).join(tag);
    fs::create_dir_all(&home).map_err(io("creating the relocated cluster directory"))?;
    let cluster = home.join("postgres");
    std::os::unix::fs::symlink(&cluster, &local).map_err(io("linking the relocated cluster"))?;
    tracing::info!(
        cluster = %cluster.display(),
        "the postgres user cannot reach the data directory; the cluster is kept here instead"
    );
    Ok(cluster)
}

/// Where clusters go whose data directory the `postgres` user cannot reach.
pub(super) const RELOCATED_ROOT: &str = "/var/lib/boxoffice";

/// Whether `user` may pass through `dir` (the execute bit that applies to it; ACLs aside).
pub(super) fn traversable(dir: &Path, user: RunAs) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(dir) else {
        return false;
    };
    let mode = meta.mode();
    if meta.uid() == user.uid {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// `initdb` on PATH, else the newest `/usr/lib/postgresql/<version>/bin`.
pub(super) fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|d| has_server(d)))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

pub(super) fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns null or a pointer to a static record we read at once.
    let record = unsafe { libc::getpwnam(name.as_ptr()) };
    if record.is_null() {
        return Err(EmbeddedError::NoPostgresUser);
    }
    // SAFETY: non-null pointer from getpwnam, read before any other passwd call.
    let (uid, gid) = unsafe { ((*record).pw_uid, (*record).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

pub(super) fn chown(path: &Path, user: RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(io("handing a file to the postgres user"))
}

/// Creates the cluster at `cluster_dir`: `initdb` into a directory of its own beside it
/// (`<name>.init-<pid>`), renamed to `cluster_dir` only once `initdb` has succeeded, so a run
/// killed during `initdb` never leaves a half-made cluster where the next run would take it
/// for a finished one (`initdb` writes `PG_VERSION` among its first files). Directories of
/// earlier runs' unfinished `initdb` are removed first, as far as they can be: the data
/// directory's lock, held by the caller, says no live run is making them. `initdb` is killed
/// with this thread, so a killed run leaves no `initdb` writing on.
pub(super) fn init_cluster(
    bin_dir: &Path,
    data_dir: &Path,
    cluster_dir: &Path,
    run_as: Option<RunAs>,
) -> Result<(), EmbeddedError> {
    let parent = cluster_dir.parent().ok_or_else(|| {
        io("finding the cluster's directory")(std::io::ErrorKind::NotFound.into())
    })?;
    let name = cluster_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unfinished_prefix = format!("{name}.init-");
    for entry in fs::read_dir(parent).map_err(io("reading the cluster's directory"))? {
        let entry = entry.map_err(io("reading the cluster's directory"))?;
        // Best effort: a crashed run's `initdb` may have left a single-user server writing
        // on for a moment, so removing can fail ("Directory not empty"). What is left is
        // garbage under another name, never taken for the cluster; a later start removes it.
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&unfinished_prefix)
            && let Err(err) = fs::remove_dir_all(entry.path())
        {
            tracing::warn!(
                directory = %entry.path().display(),
                error = %err,
                "could not remove an unfinished cluster yet; a later start will"
            );
        }
    }
    // A cluster directory without PG_VERSION (made by hand, or by a version that ran initdb
    // in place) holds nothing to keep.
    if cluster_dir.exists() {
        fs::remove_dir_all(cluster_dir).map_err(io("removing an unfinished cluster"))?;
    }
    let making = parent.join(format!("{unfinished_prefix}{}", std::process::id()));
    fs::create_dir_all(&making).map_err(io("creating the cluster directory"))?;
    fs::set_permissions(&making, fs::Permissions::from_mode(0o700))
        .map_err(io("securing the cluster directory"))?;
    if let Some(user) = run_as {
        // The postgres user must be able to reach the cluster through the data directory.
        let mode = fs::metadata(data_dir)
            .map_err(io("reading the data directory"))?
            .permissions()
            .mode();
        fs::set_permissions(data_dir, fs::Permissions::from_mode(mode | 0o011))
            .map_err(io("opening the data directory to the postgres user"))?;
        chown(&making, user)?;
    }
    let mut command = Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(&making)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ])
        .stdin(Stdio::null());
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It runs after
    // the user change (std runs pre_exec closures last), which would otherwise clear it.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let output = command.output().map_err(io("running initdb"))?;
    if !output.status.success() {
        return Err(EmbeddedError::Failed {
            action: "initdb",
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    fs::rename(&making, cluster_dir).map_err(io("putting the new cluster in place"))
}

/// A run that was killed leaves `postmaster.pid` behind, and maybe its server still running.
/// Called only while holding the data directory's lock, so such a server has no live owner:
/// it is shut down (fast) so this process owns the next one. A dead one's pid file is removed
/// so the start is not refused. Then no server of this cluster runs, so the socket's files
/// in the cluster directory are stale too, and are removed ([`clear_stale_socket`]).
pub(super) fn clear_leftovers(cluster_dir: &Path) -> Result<(), EmbeddedError> {
    clear_stale_postmaster(cluster_dir)?;
    clear_stale_socket(cluster_dir)
}

fn clear_stale_postmaster(cluster_dir: &Path) -> Result<(), EmbeddedError> {
    let pid_file = cluster_dir.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|&pid| is_postgres_of(pid, cluster_dir)) {
        signal(pid, libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid) {
            return Err(EmbeddedError::Failed {
                action: "stopping a PostgreSQL left running by an earlier run",
                detail: format!("process {pid} did not exit"),
            });
        }
    }
    match fs::remove_file(&pid_file) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(io("removing a stale postmaster.pid")(err))
        }
        _ => Ok(()),
    }
}

/// Removes the socket (`.s.PGSQL.<port>`) and its lock file (`.s.PGSQL.<port>.lock`) from the
/// cluster directory, which is the socket's directory, once no server of this cluster runs.
/// A base backup of a running cluster (`pg_basebackup`, as docs/operations.md says) carries
/// the lock file, holding the pid of the server it was taken from; PostgreSQL refuses to
/// start while a process of that pid lives, as the original does on the same machine.
fn clear_stale_socket(cluster_dir: &Path) -> Result<(), EmbeddedError> {
    let socket = format!(".s.PGSQL.{}", super::SOCKET_PORT);
    for name in [format!("{socket}.lock"), socket] {
        match fs::remove_file(cluster_dir.join(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing a stale socket file")(err));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `pid` is a live postmaster serving this cluster (not a recycled pid).
pub(super) fn is_postgres_of(pid: i32, cluster_dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_postgres = args.first().is_some_and(|a| a.ends_with(b"postgres"));
    let dir = cluster_dir.as_os_str().as_encoded_bytes();
    is_postgres && args.contains(&dir)
}

pub(super) fn process_alive(pid: i32) -> bool {
    // Zombies count as gone: they no longer hold the cluster.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub(super) fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; a vanished pid only returns ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

pub(super) fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
