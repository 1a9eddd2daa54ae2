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
    /// Creates `name` for writing a whole file front to back (snapshots); its bytes are
    /// durable after [`FileWriter::sync`], its name after [`Storage::sync_dir`].
    fn create_file(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        Err(unsupported(name))
    }
    /// An existing whole file to read (snapshots): a real file, which the reader maps, or
    /// its bytes.
    fn read_file(&self, name: &str) -> Result<FileSource> {
        Err(unsupported(name))
    }
}

fn unsupported(name: &str) -> Error {
    Error::io(
        format!("{name}: this storage keeps segments only"),
        std::io::Error::from(std::io::ErrorKind::Unsupported),
    )
}

/// A file being written by [`Storage::create_file`].
pub trait FileWriter: std::io::Write + std::io::Seek + Send {
    /// Makes everything written so far durable (`fsync`).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl FileWriter for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// Opens `path` for reading and returns it with its length; `Corrupt` if it is not a
/// regular file.
pub(crate) fn open_regular_file(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::corrupt(path, None, "not a regular file"));
    }
    Ok((file, meta.len()))
}

/// A whole file to read, from [`Storage::read_file`].
#[derive(Debug)]
pub enum FileSource {
    /// A real file, open for reading, with its length at the time it was opened.
    File(File, u64),
    /// The file's bytes (simulated storage).
    Bytes(Vec<u8>),
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
    /// A directory of files that another lock already covers (a store's snapshots, beside
    /// its log): no [`LOCK_FILE`] of its own. Creates the directory if needed.
    pub fn without_lock(dir: impl AsRef<Path>) -> Result<FileStorage> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok(FileStorage {
            dir,
            lock: Mutex::new(None),
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

    fn create_file(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        let path = self.path(name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        Ok(Box::new(file))
    }

    fn read_file(&self, name: &str) -> Result<FileSource> {
        let (file, len) = open_regular_file(&self.path(name))?;
        Ok(FileSource::File(file, len))
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
                // The lock belongs to an open file description, which a fork shares: a
                // child can hold it after the process that took it (and wrote its id) died.
                Ok(pid) if !process_exists(pid) => {
                    format!("a process forked from process {pid}, which has exited,")
                }
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

/// Whether a process with this id exists (`kill(pid, 0)`); true when that cannot be told.
#[allow(unsafe_code)]
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists and may be
    // signalled. No memory is passed.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
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
    /// Files removed or replaced since the last `sync_dir`, by identity: a power cut
    /// before that sync brings back the names that still point to them.
    unlinked: BTreeMap<u64, SimFile>,
    /// Names as of the last `sync_dir`, each with the file identity it pointed to.
    durable_names: BTreeMap<String, u64>,
    next_id: u64,
    /// Fail the sync after this many more successful ones.
    syncs_until_failure: Option<u64>,
    fail_create: bool,
    syncs: u64,
    /// Shared by storages on one machine ([`SimStorage::on_same_power`]).
    power: Arc<PowerSupply>,
    /// The durable plane as it was when the power went: later operations change only the
    /// live plane, and [`SimStorage::power_cut`] starts from this.
    lost_power: Option<Box<SimInner>>,
}

#[derive(Debug)]
struct SimFile {
    id: u64,
    /// The live mapping shared with the log (kept alive while the file exists).
    live: Option<Arc<Region>>,
    /// The durable bytes; for a file that is not mapped and has no `unsynced` bytes, also
    /// its live bytes.
    durable: Vec<u8>,
    /// Live bytes of an unmapped file written since its last sync ([`Storage::create_file`]).
    unsynced: Option<Vec<u8>>,
}

impl SimFile {
    /// The file as a power loss now leaves it for [`SimStorage::power_cut`]: the durable
    /// bytes, and the unsynced bytes of a whole file still to be decided page by page. The
    /// unsynced pages of a mapped segment are lost: they cannot be read safely while its
    /// log runs.
    fn at_power_loss(&self) -> SimFile {
        SimFile {
            id: self.id,
            live: None,
            durable: self.durable.clone(),
            unsynced: self.unsynced.clone(),
        }
    }

    /// What the process sees in the file now.
    fn live(&self) -> &[u8] {
        match (&self.live, &self.unsynced) {
            (Some(r), _) => live_bytes(r),
            (None, Some(b)) => b,
            (None, None) => &self.durable,
        }
    }
}

/// Storage operations left before the power goes ([`SimStorage::lose_power_after`]):
/// `Some(0)` once it has gone.
#[derive(Debug, Default)]
struct PowerSupply(Mutex<Option<u64>>);

impl PowerSupply {
    /// Counts one operation; true if the power is out for it.
    fn tick(&self) -> bool {
        let mut left = self.0.lock();
        match *left {
            Some(0) => true,
            Some(n) => {
                *left = Some(n - 1);
                false
            }
            None => false,
        }
    }

    fn is_out(&self) -> bool {
        *self.0.lock() == Some(0)
    }
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

    /// Loses the power just before the `n`-th next storage operation (create, write, sync,
    /// rename, remove, copy): from then on nothing reaches the durable plane, while the
    /// process goes on unaware until [`SimStorage::power_cut`] builds the image. Every page of
    /// a mapped segment not synced by then is lost; unsynced bytes of whole files written
    /// through [`Storage::create_file`] survive, are lost or tear page by page, as at a
    /// power cut. So a cut can land inside a snapshot or a compaction, between any two of
    /// their steps.
    /// Operations of every storage [`SimStorage::on_same_power`] count together.
    pub fn lose_power_after(&self, n: u64) {
        *self.inner.lock().power.0.lock() = Some(n);
    }

    /// Whether the power is out ([`SimStorage::lose_power_after`]).
    pub fn power_lost(&self) -> bool {
        self.inner.lock().power.is_out()
    }

    /// A new, empty storage on the same machine as this one (another directory): one
    /// [`SimStorage::lose_power_after`] takes the power from both at the same operation.
    pub fn on_same_power(&self) -> SimStorage {
        let power = self.inner.lock().power.clone();
        SimStorage {
            inner: Arc::new(Mutex::new(SimInner {
                power,
                ..SimInner::default()
            })),
        }
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
        let mut guard = self.inner.lock();
        if guard.power.is_out() && guard.lost_power.is_none() {
            // Nothing reached this storage's durable plane since the power went.
            guard.keep_durable_plane();
        }
        let inner: &SimInner = guard.lost_power.as_deref().unwrap_or(&guard);
        let mut report = PowerCutReport::default();
        let mut out = SimInner {
            next_id: inner.next_id,
            ..SimInner::default()
        };
        for (name, id) in &inner.durable_names {
            let Some(file) = inner
                .files
                .values()
                .find(|f| f.id == *id)
                .or_else(|| inner.unlinked.get(id))
            else {
                continue;
            };
            let mut image = file.durable.clone();
            if file.live.is_some() || file.unsynced.is_some() {
                let live_bytes = file.live();
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
                    unsynced: None,
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
        Some(inner.files.get(name)?.live().to_vec())
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
                unsynced: None,
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
        inner.start_create(name)?;
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
                unsynced: None,
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
        if f.unsynced.is_some() {
            return Err(Error::Internal(format!(
                "{name} is being written as a whole file; it cannot be mapped as a segment"
            )));
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
        inner.tick();
        inner
            .count_sync()
            .map_err(|e| Error::io(format!("sync {name}"), e))?;
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
        inner.tick();
        inner.durable_names = inner.files.iter().map(|(n, f)| (n.clone(), f.id)).collect();
        inner.unlinked.clear();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.tick();
        let f = inner.files.remove(from).ok_or_else(|| {
            Error::io(
                format!("rename {from}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        if let Some(replaced) = inner.files.insert(to.to_string(), f) {
            inner.unlinked.insert(replaced.id, replaced);
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.tick();
        if let Some(f) = inner.files.remove(name) {
            inner.unlinked.insert(f.id, f);
        }
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
        inner.tick();
        inner.next_id += 1;
        let id = inner.next_id;
        let file = SimFile {
            id,
            live: None,
            durable: bytes,
            unsynced: None,
        };
        if let Some(replaced) = inner.files.insert(to.to_string(), file) {
            inner.unlinked.insert(replaced.id, replaced);
        }
        Ok(())
    }

    fn create_file(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        let mut inner = self.inner.lock();
        inner.start_create(name)?;
        inner.next_id += 1;
        let id = inner.next_id;
        let file = SimFile {
            id,
            live: None,
            durable: vec![],
            unsynced: Some(vec![]),
        };
        if let Some(replaced) = inner.files.insert(name.to_string(), file) {
            inner.unlinked.insert(replaced.id, replaced);
        }
        Ok(Box::new(SimWriter {
            inner: self.inner.clone(),
            id,
            pos: 0,
        }))
    }

    fn read_file(&self, name: &str) -> Result<FileSource> {
        self.read(name).map(FileSource::Bytes).ok_or_else(|| {
            Error::io(
                format!("open {name}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("sim:{name}"))
    }
}

impl SimInner {
    /// Counts a storage operation towards [`SimStorage::lose_power_after`]; when the count
    /// runs out, keeps the durable plane as it is now.
    fn tick(&mut self) {
        if self.lost_power.is_none() && self.power.tick() {
            self.keep_durable_plane();
        }
    }

    /// Keeps the durable plane as it is now, for the power cut (see `lost_power`).
    fn keep_durable_plane(&mut self) {
        let kept = SimInner {
            files: self
                .files
                .iter()
                .map(|(n, f)| (n.clone(), f.at_power_loss()))
                .collect(),
            unlinked: self
                .unlinked
                .iter()
                .map(|(i, f)| (*i, f.at_power_loss()))
                .collect(),
            durable_names: self.durable_names.clone(),
            next_id: self.next_id,
            ..SimInner::default()
        };
        self.lost_power = Some(Box::new(kept));
    }

    /// The start of a creation: counts the operation, fails it with ENOSPC when
    /// [`SimStorage::fail_creates`] says so.
    fn start_create(&mut self, name: &str) -> Result<()> {
        self.tick();
        if self.fail_create {
            return Err(Error::io(
                format!("create {name}"),
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        Ok(())
    }

    /// Counts a sync, or fails it with EIO when [`SimStorage::fail_sync_after`] says so.
    fn count_sync(&mut self) -> std::io::Result<()> {
        if let Some(n) = self.syncs_until_failure {
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.syncs_until_failure = Some(n - 1);
        }
        self.syncs += 1;
        Ok(())
    }

    /// The file with identity `id`, under whatever name it has now (or none).
    fn file_mut(&mut self, id: u64) -> Option<&mut SimFile> {
        if self.unlinked.contains_key(&id) {
            return self.unlinked.get_mut(&id);
        }
        self.files.values_mut().find(|f| f.id == id)
    }
}

/// A simulated file being written: writes go to its live bytes, `sync` makes them durable.
/// It follows the file by identity, across renames (and writes into it after an unlink,
/// as a real descriptor would).
struct SimWriter {
    inner: Arc<Mutex<SimInner>>,
    id: u64,
    pos: u64,
}

impl SimWriter {
    fn gone() -> std::io::Error {
        std::io::Error::other("the simulated file is gone")
    }
}

impl std::io::Write for SimWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut inner = self.inner.lock();
        inner.tick();
        let f = inner.file_mut(self.id).ok_or_else(SimWriter::gone)?;
        let durable = &f.durable;
        let live = f.unsynced.get_or_insert_with(|| durable.clone());
        let at = self.pos as usize;
        if live.len() < at + buf.len() {
            live.resize(at + buf.len(), 0);
        }
        live[at..at + buf.len()].copy_from_slice(buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for SimWriter {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let len = {
            let mut inner = self.inner.lock();
            let f = inner.file_mut(self.id).ok_or_else(SimWriter::gone)?;
            f.live().len() as u64
        };
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

impl FileWriter for SimWriter {
    fn sync(&mut self) -> std::io::Result<()> {
        let mut inner = self.inner.lock();
        inner.tick();
        inner.count_sync()?;
        let f = inner.file_mut(self.id).ok_or_else(SimWriter::gone)?;
        if let Some(live) = f.unsynced.take() {
            f.durable = live;
        }
        Ok(())
    }
}
