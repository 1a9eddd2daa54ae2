//! Where segment files live. [`FileStorage`] is a real directory (preallocated files,
//! shared mappings, `msync`, directory fsync); [`SimStorage`] is a deterministic in-memory
//! stand-in with a *live* plane (what the process sees) and a *durable* plane (what survives
//! a power cut), used to test that every acknowledged event survives losing everything that
//! was not synced (`reliability.md` §3.0). [`MemStorage`] backs memory-mode stores.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::log::raw::Region;

/// The operations the log needs from a directory of segment files.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// File names present, in no particular order.
    fn list(&self) -> Result<Vec<String>>;
    /// Creates `name` with `len` zero bytes, preallocated (a full disk fails here, not
    /// later), and maps it. The name is durable only after [`Storage::sync_dir`].
    fn create(&self, name: &str, len: u64) -> Result<Region>;
    /// Maps an existing file at its real length.
    fn open(&self, name: &str) -> Result<Region>;
    /// Makes `[off, off+len)` of `name`'s mapping durable. The range holds only published,
    /// immutable frames (or the header written before the file was shared).
    fn sync(&self, name: &str, region: &Region, off: usize, len: usize) -> Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    fn sync_dir(&self) -> Result<()>;
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    fn remove(&self, name: &str) -> Result<()>;
    /// Copies a file (the `.broken` backup before a repair).
    fn copy(&self, from: &str, to: &str) -> Result<()>;
    /// Where errors point to.
    fn describe(&self, name: &str) -> PathBuf;
    /// The log has closed and writes nothing more: let another log open this storage.
    fn release(&self) {}
}

/// The file in a log directory whose exclusive lock marks the directory as in use.
pub const LOCK_FILE: &str = "LOCK";

/// Segment files in a real directory.
///
/// A `FileStorage` holds an exclusive advisory lock (`flock`) on the directory's
/// [`LOCK_FILE`] until its log closes (or it is dropped), so a log directory is open once
/// at a time, across processes and within one. Two logs appending to the same segments
/// would claim the same positions, and one's recovery would cut the other's tail while it
/// writes. The kernel drops the lock when the holder exits, however it exits.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    lock: Mutex<Option<File>>,
}

impl FileStorage {
    /// Opens (creating if needed) the directory and takes its lock. `Io` if another
    /// open log holds the lock; the error names the holder's process id.
    pub fn new(dir: impl AsRef<Path>) -> Result<FileStorage> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        if !dir.is_dir() {
            return Err(Error::invalid(
                "path",
                format!("{} is not a directory", dir.display()),
            ));
        }
        let lock = lock_dir(&dir)?;
        Ok(FileStorage {
            dir,
            lock: Mutex::new(lock),
        })
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Storage for FileStorage {
    fn list(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?;
        let mut out = vec![];
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?;
            if let Some(n) = entry.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    fn create(&self, name: &str, len: u64) -> Result<Region> {
        let path = self.path(name);
        let ctx = || format!("create segment {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(ctx(), e))?;
        let allocated = allocate(&file, len);
        if let Err(e) = allocated {
            let _ = fs::remove_file(&path);
            return Err(Error::io(ctx(), e));
        }
        Region::map_file(&file, len as usize).map_err(|e| Error::io(ctx(), e))
    }

    fn open(&self, name: &str) -> Result<Region> {
        let path = self.path(name);
        let ctx = || format!("open segment {}", path.display());
        let meta = fs::metadata(&path).map_err(|e| Error::io(ctx(), e))?;
        if !meta.is_file() {
            return Err(Error::corrupt(&path, None, "not a regular file"));
        }
        if meta.len() == 0 {
            return Err(Error::corrupt(&path, Some(0), "empty segment file"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(ctx(), e))?;
        Region::map_file(&file, meta.len() as usize).map_err(|e| Error::io(ctx(), e))
    }

    fn sync(&self, name: &str, region: &Region, off: usize, len: usize) -> Result<()> {
        region
            .flush(off, len)
            .map_err(|e| Error::io(format!("sync {}", self.path(name).display()), e))
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("sync directory {}", self.dir.display()), e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        fs::rename(self.path(from), self.path(to))
            .map_err(|e| Error::io(format!("rename {from} to {to}"), e))
    }

    fn remove(&self, name: &str) -> Result<()> {
        fs::remove_file(self.path(name)).map_err(|e| Error::io(format!("remove {name}"), e))
    }

    fn copy(&self, from: &str, to: &str) -> Result<()> {
        fs::copy(self.path(from), self.path(to))
            .and_then(|_| File::open(self.path(to))?.sync_all())
            .map_err(|e| Error::io(format!("copy {from} to {to}"), e))
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    fn release(&self) {
        if let Some(f) = self.lock.lock().take() {
            let _ = f.unlock();
        }
    }
}

/// Takes the exclusive lock on `dir`'s [`LOCK_FILE`] without waiting, and records this
/// process's id in it. `None` (with a warning) where the filesystem has no locks.
fn lock_dir(dir: &Path) -> Result<Option<File>> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let ctx = || format!("lock {}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(ctx(), e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) if pid == std::process::id() => format!("this process ({pid})"),
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_string(),
            };
            return Err(Error::io(
                ctx(),
                std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "the directory is in use by {holder}: a log (and the store over it) \
                         can be open once at a time; close and drop the other handle first"
                    ),
                ),
            ));
        }
        Err(fs::TryLockError::Error(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::InvalidInput
            ) || e.raw_os_error() == Some(libc::ENOLCK) =>
        {
            tracing::warn!(path = %path.display(), error = %e,
                "the filesystem has no file locks; nothing stops a second open of this log");
            return Ok(None);
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io(ctx(), e)),
    }
    // Only a hint for the error above; the lock itself is what excludes.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(Some(file))
}

/// Reserves real blocks for the whole file so a full disk is an error now instead of a
/// SIGBUS when a page of the mapping is first written.
#[allow(unsafe_code)]
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate: fall back to extending (sparse) and say so.
        libc::EOPNOTSUPP | libc::EINVAL => {
            tracing::warn!("posix_fallocate unsupported; segment file may be sparse");
            file.set_len(len)
        }
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// Memory-mode storage: segments are anonymous mappings, nothing is persisted, sync is free.
#[derive(Debug, Default)]
pub struct MemStorage {
    names: Mutex<BTreeSet<String>>,
}

impl Storage for MemStorage {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.names.lock().iter().cloned().collect())
    }
    fn create(&self, name: &str, len: u64) -> Result<Region> {
        let r = Region::anon(len as usize).map_err(|e| Error::io("map anonymous memory", e))?;
        self.names.lock().insert(name.to_string());
        Ok(r)
    }
    fn open(&self, name: &str) -> Result<Region> {
        Err(Error::NotFound(format!(
            "memory segment {name} cannot be reopened"
        )))
    }
    fn sync(&self, _: &str, _: &Region, _: usize, _: usize) -> Result<()> {
        Ok(())
    }
    fn sync_dir(&self) -> Result<()> {
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut n = self.names.lock();
        n.remove(from);
        n.insert(to.to_string());
        Ok(())
    }
    fn remove(&self, name: &str) -> Result<()> {
        self.names.lock().remove(name);
        Ok(())
    }
    fn copy(&self, _: &str, to: &str) -> Result<()> {
        self.names.lock().insert(to.to_string());
        Ok(())
    }
    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("memory:{name}"))
    }
}

/// Deterministic simulated storage with a durable plane.
///
/// `sync` copies the synced byte range into the durable image; `sync_dir` makes the current
/// set of names durable. [`SimStorage::power_cut`] builds what a machine would find after
/// losing power: for every page that changed since its last sync, independently, the page
/// survives whole, is lost, or is torn at a 512-byte sector boundary; files whose creation
/// was never made durable by `sync_dir` may vanish. Failures can be injected: the n-th sync
/// fails with EIO, or creation fails with ENOSPC.
#[derive(Clone, Debug, Default)]
pub struct SimStorage {
    inner: Arc<Mutex<SimInner>>,
}

#[derive(Debug, Default)]
struct SimInner {
    files: BTreeMap<String, SimFile>,
    /// Names as of the last `sync_dir`, each with the file identity it pointed to.
    durable_names: BTreeMap<String, u64>,
    next_id: u64,
    /// Fail the sync after this many more successful ones.
    syncs_until_failure: Option<u64>,
    fail_create: bool,
    syncs: u64,
}

#[derive(Debug)]
struct SimFile {
    id: u64,
    /// The live mapping shared with the log (kept alive while the file exists).
    live: Option<Arc<Region>>,
    /// Live bytes of files that are not mapped right now (after a rename/copy).
    durable: Vec<u8>,
}

/// Result of inspecting the live plane at a power cut: how many pages were kept, lost, torn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerCutReport {
    pub pages_kept: usize,
    pub pages_lost: usize,
    pub pages_torn: usize,
    pub files_vanished: usize,
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// Makes the sync after `n` more successful syncs fail with EIO (fsyncgate).
    pub fn fail_sync_after(&self, n: u64) {
        self.inner.lock().syncs_until_failure = Some(n);
    }

    /// Makes every later `create` fail with ENOSPC.
    pub fn fail_creates(&self, on: bool) {
        self.inner.lock().fail_create = on;
    }

    /// Number of successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.inner.lock().syncs
    }

    /// Builds the storage a restarted machine would see. `rng` drives every choice, so one
    /// seed gives one image. The log using `self` must be closed or abandoned (its threads
    /// stopped) before the cut.
    pub fn power_cut(&self, rng: &mut impl FnMut() -> u64) -> (SimStorage, PowerCutReport) {
        const PAGE: usize = 4096;
        const SECTOR: usize = 512;
        let inner = self.inner.lock();
        let mut report = PowerCutReport::default();
        let mut out = SimInner {
            next_id: inner.next_id,
            ..SimInner::default()
        };
        for (name, id) in &inner.durable_names {
            let Some(file) = inner.files.values().find(|f| f.id == *id) else {
                continue;
            };
            let durable = &file.durable;
            let mut image = durable.clone();
            if let Some(live) = &file.live {
                let live_bytes = live_bytes(live);
                image.resize(live_bytes.len(), 0);
                let mut p = 0;
                while p < live_bytes.len() {
                    let e = (p + PAGE).min(live_bytes.len());
                    if live_bytes[p..e] != image[p..e] {
                        match rng() % 3 {
                            0 => {
                                image[p..e].copy_from_slice(&live_bytes[p..e]);
                                report.pages_kept += 1;
                            }
                            1 => report.pages_lost += 1,
                            _ => {
                                let mut s = p;
                                while s < e {
                                    let se = (s + SECTOR).min(e);
                                    if rng().is_multiple_of(2) {
                                        image[s..se].copy_from_slice(&live_bytes[s..se]);
                                    }
                                    s = se;
                                }
                                report.pages_torn += 1;
                            }
                        }
                    }
                    p = e;
                }
            }
            out.files.insert(
                name.clone(),
                SimFile {
                    id: *id,
                    live: None,
                    durable: image,
                },
            );
            out.durable_names.insert(name.clone(), *id);
        }
        for name in inner.files.keys() {
            if !inner.durable_names.contains_key(name) {
                report.files_vanished += 1;
            }
        }
        (
            SimStorage {
                inner: Arc::new(Mutex::new(out)),
            },
            report,
        )
    }

    /// Reads a file's current live bytes (tests).
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        let inner = self.inner.lock();
        let f = inner.files.get(name)?;
        Some(match &f.live {
            Some(r) => live_bytes(r).to_vec(),
            None => f.durable.clone(),
        })
    }

    /// Replaces a file's bytes (tests that corrupt files). The file must not be mapped.
    pub fn write(&self, name: &str, bytes: Vec<u8>) {
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.files.insert(
            name.to_string(),
            SimFile {
                id,
                live: None,
                durable: bytes,
            },
        );
        inner.durable_names.insert(name.to_string(), id);
    }
}

/// The live bytes of a simulated file.
#[allow(unsafe_code)]
fn live_bytes(region: &Region) -> &[u8] {
    // SAFETY: called only when the log over this storage is stopped (power cut, test
    // inspection) or from `sync` on ranges of published frames, which are immutable.
    unsafe { region.slice(0, region.len()) }
}

impl Storage for SimStorage {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.inner.lock().files.keys().cloned().collect())
    }

    fn create(&self, name: &str, len: u64) -> Result<Region> {
        let mut inner = self.inner.lock();
        if inner.fail_create {
            return Err(Error::io(
                format!("create {name}"),
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        if inner.files.contains_key(name) {
            return Err(Error::io(
                format!("create {name}"),
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        let region = Region::anon(len as usize).map_err(|e| Error::io("map", e))?;
        inner.next_id += 1;
        let id = inner.next_id;
        // The simulated file keeps the live region; the log gets a handle aliasing it.
        let shared = Arc::new(region);
        inner.files.insert(
            name.to_string(),
            SimFile {
                id,
                live: Some(shared.clone()),
                durable: vec![0; len as usize],
            },
        );
        drop(inner);
        Ok(Region::alias(shared))
    }

    fn open(&self, name: &str) -> Result<Region> {
        let mut inner = self.inner.lock();
        let f = inner.files.get_mut(name).ok_or_else(|| {
            Error::io(
                format!("open {name}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        if let Some(live) = &f.live {
            return Ok(Region::alias(live.clone()));
        }
        if f.durable.is_empty() {
            return Err(Error::corrupt(
                self.describe(name),
                Some(0),
                "empty segment file",
            ));
        }
        let region = Region::anon(f.durable.len()).map_err(|e| Error::io("map", e))?;
        let shared = Arc::new(region);
        #[allow(unsafe_code)]
        // SAFETY: the region was just created and is not shared with anyone yet.
        unsafe {
            shared.write(0, &f.durable)
        };
        f.live = Some(shared.clone());
        Ok(Region::alias(shared))
    }

    fn sync(&self, name: &str, _region: &Region, off: usize, len: usize) -> Result<()> {
        let mut inner = self.inner.lock();
        if let Some(n) = inner.syncs_until_failure {
            if n == 0 {
                return Err(Error::io(
                    format!("sync {name}"),
                    std::io::Error::from_raw_os_error(libc::EIO),
                ));
            }
            inner.syncs_until_failure = Some(n - 1);
        }
        inner.syncs += 1;
        let f = inner
            .files
            .get_mut(name)
            .ok_or_else(|| Error::Internal(format!("sync of unknown {name}")))?;
        if let Some(live) = &f.live {
            let bytes = live_bytes(live);
            let end = (off + len).min(bytes.len());
            if f.durable.len() < bytes.len() {
                f.durable.resize(bytes.len(), 0);
            }
            f.durable[off..end].copy_from_slice(&bytes[off..end]);
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.durable_names = inner.files.iter().map(|(n, f)| (n.clone(), f.id)).collect();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        let f = inner.files.remove(from).ok_or_else(|| {
            Error::io(
                format!("rename {from}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        inner.files.insert(to.to_string(), f);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.inner.lock().files.remove(name);
        Ok(())
    }

    fn copy(&self, from: &str, to: &str) -> Result<()> {
        let bytes = self.read(from).ok_or_else(|| {
            Error::io(
                format!("copy {from}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.files.insert(
            to.to_string(),
            SimFile {
                id,
                live: None,
                durable: bytes,
            },
        );
        Ok(())
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("sim:{name}"))
    }
}
