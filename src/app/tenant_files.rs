//! Tenant files while the exporter runs (#34): each file's last good tenants, read again
//! every `refresh_interval` (and the tenants refused for a missing sign-in file, of the files
//! and of the configuration file, tried again) and applied through the reload path when they
//! changed, so that the tenants kept keep their quota windows and API clock (`app::prepare`),
//! and a file that does not parse keeps its last good tenants and changes nothing else.
//!
//! Owns [`TenantFiles`]: the configuration file as last loaded (before sharding), every tenant
//! file's last good content and latest error, which source a tenant name belongs to (the
//! configuration file first, then the files in the order they were first loaded: a file that
//! brings a name served from elsewhere is refused, naming both places), the [`Loader`] that
//! puts the two together for a reload, and what is shown of them (the
//! `mde_exporter_tenant_file_*` families, the status page, the log lines). Does not own
//! reading one file into tenants (`config::tenant_files`), the reload itself (`app`'s
//! supervisor) nor the signals (`run`).
//!
//! Files are read again on a timer, not watched with inotify (the `notify` crate): the timer
//! sees every change however it is made (a Kubernetes ConfigMap's symlink swap, a network
//! file system, an editor's rename), a file changed twice in a second is read once, and there
//! is no dependency to add. The cost is the delay: a change is seen within `refresh_interval`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::app::{Handle, Loader};
use crate::config::tenant_files::{MAX_FILE_BYTES, combine};
use crate::config::{Config, FileError, FileTenants};
use crate::metrics::Metrics;
use crate::metrics::exporter::{TenantFileStatus, TenantSourcesStatus};

/// How often files are looked at when the configuration names none (a reload may add some).
const IDLE_REFRESH: Duration = Duration::from_secs(60);

/// The configuration file and the tenant files, as last loaded.
pub struct TenantFiles {
    /// `--config.file`.
    path: PathBuf,
    /// `--shard.index`, `--shard.count`.
    shard: Option<(u32, u32)>,
    /// Set before a reload the timer asks for: that reload keeps the configuration file as
    /// last loaded, unless the file changed on disk meanwhile (a SIGHUP may share the reload).
    files_only: AtomicBool,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The configuration file as last loaded (its own tenants, before sharding).
    base: Config,
    /// A digest of its text, to tell whether it changed on disk.
    base_digest: u64,
    /// Every tenant file named now, in the order they were first loaded.
    files: Vec<(PathBuf, Loaded)>,
}

/// One tenant file.
#[derive(Default)]
struct Loaded {
    /// A digest of the text last read (`None`: never read).
    digest: Option<u64>,
    /// The last good content.
    good: FileTenants,
    /// Why the latest read was not used.
    error: Option<FileError>,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The process environment, for `${VAR}` in tenant files.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl TenantFiles {
    /// The tenant files of `base` (read from `path`), read for the first time. A file that
    /// cannot be used is logged and has no tenants.
    pub fn new(path: &Path, base: Config, shard: Option<(u32, u32)>) -> Arc<TenantFiles> {
        let base_digest = std::fs::read(path).map(|b| digest(&b)).unwrap_or_default();
        let files = TenantFiles {
            path: path.to_path_buf(),
            shard,
            files_only: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                base,
                base_digest,
                files: Vec::new(),
            }),
        };
        files.log_refused();
        files.refresh(true);
        Arc::new(files)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configuration in force: the configuration file's tenants, then the files', then
    /// this process's shard of them.
    pub fn config(&self) -> Config {
        let inner = self.inner();
        let config = combine(&inner.base, inner.files.iter().map(|(_, l)| &l.good));
        match self.shard {
            Some((index, count)) => config.shard(index, count),
            None => config,
        }
    }

    /// How long until the files are read again.
    pub fn refresh_interval(&self) -> Duration {
        self.inner()
            .base
            .tenant_files
            .refresh_interval()
            .unwrap_or(IDLE_REFRESH)
    }

    /// Read the files again: those whose text changed, and those whose latest read was not
    /// used (a name they brought may be free now); all of them when `force` (the defaults
    /// may have changed). True when a file's tenants were taken anew (its text changed: a
    /// rotated secret must be applied, and tenants do not compare) or went with the file.
    pub fn refresh(&self, force: bool) -> bool {
        let mut inner = self.inner();
        let inner = &mut *inner;
        let paths = inner.base.tenant_files.paths();
        let mut changed = false;
        // Files no longer named (deleted, or out of the globs) take their tenants with them.
        inner.files.retain(|(p, l)| {
            let keep = paths.contains(p);
            changed |= !keep && !l.good.tenants.is_empty();
            keep
        });
        for p in &paths {
            if !inner.files.iter().any(|(q, _)| q == p) {
                inner.files.push((p.clone(), Loaded::default()));
            }
        }
        let mut claimed = claims(&inner.base, &inner.files);
        for i in 0..inner.files.len() {
            let path = inner.files[i].0.clone();
            let bytes = match read_capped(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Gone since the listing: as if not named.
                    let loaded = &mut inner.files[i].1;
                    changed |= !loaded.good.tenants.is_empty();
                    *loaded = Loaded::default();
                    continue;
                }
                Err(e) => {
                    let error = FileError {
                        file: path.clone(),
                        line: None,
                        key: String::new(),
                        message: format!("cannot read: {e}"),
                    };
                    note_error(&mut inner.files[i].1, error);
                    continue;
                }
            };
            let d = digest(&bytes);
            let loaded = &inner.files[i].1;
            // A file whose text is as last read is read again only when it failed, or when it
            // refused a tenant: the secret file or variable that entry lacked may be there now.
            if !force
                && loaded.digest == Some(d)
                && loaded.error.is_none()
                && loaded.good.refused.is_empty()
            {
                continue;
            }
            let read = crate::config::text::decode(&bytes)
                .map_err(|e| FileError {
                    file: path.clone(),
                    line: e.line,
                    key: String::new(),
                    message: e.message,
                })
                .and_then(|text| {
                    inner
                        .base
                        .tenant_files
                        .read(&path, text, &process_env)
                        .and_then(|t| unclaimed(&self.path, &claimed, &inner.files, i, t, text))
                });
            let loaded = &mut inner.files[i].1;
            loaded.digest = Some(d);
            match read {
                Ok(tenants) => {
                    if loaded.error.take().is_some() {
                        tracing::info!(file = %path.display(), "tenant file loaded again");
                    }
                    // Logged once, and again at each reload (not at each read of a file that
                    // still refuses it).
                    for r in &tenants.refused {
                        if force || !loaded.good.refused.contains(r) {
                            tracing::warn!(tenant = %r.tenant, file = %r.file.display(), key = %r.key, error = %r, "tenant refused: its sign-in cannot be resolved; the other tenants go on");
                        }
                    }
                    if tenants == loaded.good {
                        continue;
                    }
                    for name in names(&loaded.good) {
                        if claimed.get(name) == Some(&Some(i)) {
                            claimed.remove(name);
                        }
                    }
                    for name in names(&tenants) {
                        claimed.entry(name.clone()).or_insert(Some(i));
                    }
                    loaded.good = tenants;
                    changed = true;
                }
                Err(e) => note_error(loaded, e),
            }
        }
        changed
    }

    /// What the families and the status page show of the files and the refused tenants.
    pub fn status(&self) -> TenantSourcesStatus {
        let refused = self
            .config()
            .refused
            .iter()
            .map(|r| (r.tenant.clone(), r.to_string()))
            .collect();
        let inner = self.inner();
        let files = inner
            .files
            .iter()
            .map(|(p, l)| TenantFileStatus {
                file: p.display().to_string(),
                tenants: l.good.tenants.len(),
                error: l.error.as_ref().map(ToString::to_string),
            })
            .collect();
        TenantSourcesStatus { files, refused }
    }

    /// Show the files and refused tenants in `metrics` (and so on the status page).
    pub fn publish(&self, metrics: &Metrics) {
        metrics.exporter.set_tenant_sources(self.status());
    }

    /// How a reload reads the configuration: the configuration file again, then every tenant
    /// file again (the defaults may have changed) ; or, for a reload the timer asked for
    /// while the configuration file is as last loaded, only the files' tenants as they are.
    pub fn loader(self: &Arc<Self>) -> Loader {
        let files = self.clone();
        Arc::new(move || files.load())
    }

    fn load(&self) -> Result<Config, crate::config::Error> {
        let bytes = std::fs::read(&self.path).map_err(|source| crate::config::Error::Read {
            path: self.path.clone(),
            source,
        })?;
        let d = digest(&bytes);
        let files_only = self.files_only.swap(false, Ordering::SeqCst);
        if files_only && d == self.inner().base_digest {
            return Ok(self.config());
        }
        let base = Config::load(&self.path)?;
        {
            let mut inner = self.inner();
            inner.base = base;
            inner.base_digest = d;
        }
        self.log_refused();
        self.refresh(true);
        Ok(self.config())
    }

    /// Log the configuration file's own tenants refused alone (the files' are logged as they
    /// are read).
    fn log_refused(&self) {
        for r in &self.inner().base.refused {
            tracing::warn!(tenant = %r.tenant, file = %r.file.display(), key = %r.key, error = %r, "tenant refused: its sign-in cannot be resolved; the other tenants go on");
        }
    }

    /// One turn of the timer: read the files again and, when their tenants changed, reload
    /// through `handle` (the outcome is logged and in the reload families). Then publish.
    pub async fn tick(self: &Arc<Self>, handle: &Handle) {
        let files = self.clone();
        let (changed, resolved) =
            tokio::task::spawn_blocking(move || (files.refresh(false), files.base_resolves_now()))
                .await
                .unwrap_or((false, false));
        if changed || resolved {
            // A change of the files alone keeps the configuration file as last loaded; an
            // entry of it refused before and resolved now needs it read again.
            self.files_only.store(!resolved, Ordering::SeqCst);
            match (handle.reload().await, resolved) {
                (Ok(()), false) => tracing::info!("tenant files changed: configuration reloaded"),
                (Err(e), false) => {
                    tracing::error!(error = %e, "tenant files changed but the reload failed")
                }
                (Ok(()), true) => tracing::info!(
                    "a tenant refused in the configuration file can be signed in now: configuration reloaded"
                ),
                (Err(e), true) => tracing::error!(
                    error = %e,
                    "a tenant refused in the configuration file can be signed in now, but the reload failed"
                ),
            }
        }
        self.publish(&handle.shared().metrics);
    }

    /// Whether the configuration file, its text unchanged, now resolves a tenant it refused
    /// (a secret or certificate file mounted since): the tenant files' entries are tried again
    /// at every read, and so are its. A file changed on disk is left to a SIGHUP.
    fn base_resolves_now(&self) -> bool {
        let (refused, last) = {
            let inner = self.inner();
            (inner.base.refused.clone(), inner.base_digest)
        };
        if refused.is_empty() {
            return false;
        }
        let unchanged = std::fs::read(&self.path).is_ok_and(|b| digest(&b) == last);
        unchanged
            && Config::load(&self.path).is_ok_and(|c| {
                refused
                    .iter()
                    .any(|r| !c.refused.iter().any(|now| now.tenant == r.tenant))
            })
    }
}

/// The bytes of a tenant file of at most [`MAX_FILE_BYTES`]; a larger one is an error that
/// gives its size and the limit, found before it is read.
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::config::sign_in_file::read_at_most(path, MAX_FILE_BYTES, |len| {
        let mib = |n: u64| format!("{:.1} MiB", n as f64 / f64::from(1 << 20));
        let size = match len {
            Some(len) => mib(len),
            None => format!("more than {}", mib(MAX_FILE_BYTES)),
        };
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "{size}, over the {} MiB a tenant file may hold",
                MAX_FILE_BYTES >> 20
            ),
        )
    })
}

/// Keep `loaded`'s last good tenants and note why the latest read was not used (logged when
/// it changed, with the file, the line and the key).
fn note_error(loaded: &mut Loaded, error: FileError) {
    if loaded.error.as_ref() != Some(&error) {
        tracing::error!(
            file = %error.file.display(),
            line = error.line.map(|l| l as u64),
            key = %error.key,
            error = %error,
            kept_tenants = loaded.good.tenants.len(),
            "tenant file not used; its last good tenants stay"
        );
    }
    loaded.error = Some(error);
}

/// Which source serves each tenant name now: `None` for the configuration file, else the
/// index of the file. Built once per read of the files and kept up to date as each file is
/// taken, so that checking a file costs its own names, not every other file's (#34).
type Claims = BTreeMap<String, Option<usize>>;

fn claims(base: &Config, files: &[(PathBuf, Loaded)]) -> Claims {
    let mut claimed = Claims::new();
    for name in base
        .tenants
        .iter()
        .map(|t| &t.name)
        .chain(base.refused.iter().map(|r| &r.tenant))
    {
        claimed.insert(name.clone(), None);
    }
    for (j, (_, l)) in files.iter().enumerate() {
        for name in names(&l.good) {
            claimed.entry(name.clone()).or_insert(Some(j));
        }
    }
    claimed
}

/// The names a file brings: those served and those refused.
fn names(t: &FileTenants) -> impl Iterator<Item = &String> {
    t.tenants
        .iter()
        .map(|t| &t.name)
        .chain(t.refused.iter().map(|r| &r.tenant))
}

/// `tenants` read from file `i`, unless one of its names is served from another source now:
/// the configuration file, or another file's last good content. The source that had the name
/// first keeps it.
fn unclaimed(
    config_file: &Path,
    claimed: &Claims,
    files: &[(PathBuf, Loaded)],
    i: usize,
    tenants: FileTenants,
    text: &str,
) -> Result<FileTenants, FileError> {
    for name in names(&tenants) {
        let other = match claimed.get(name) {
            Some(None) => format!("config file {} (tenants:)", config_file.display()),
            Some(Some(j)) if *j != i => format!("tenant file {}", files[*j].0.display()),
            _ => continue,
        };
        let line = text
            .lines()
            .position(|l| {
                l.find("name")
                    .is_some_and(|at| l[at + 4..].contains(name.as_str()))
            })
            .map(|n| n + 1);
        return Err(FileError {
            file: files[i].0.clone(),
            line,
            key: "name".to_string(),
            message: format!("tenant {name:?} is already served from {other}"),
        });
    }
    Ok(tenants)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A directory with `config.yml` (one tenant of its own, `own`, and the defaults) naming
    /// the tenant files `*.yml` and `*.json` under `customers/`.
    fn setup() -> (tempfile::TempDir, PathBuf, Arc<TenantFiles>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("customers")).unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            "tenant_defaults:\n  client_id: app\n  client_secret: s\ntenants:\n  - name: own\n    tenant_id: t0\ntenant_files:\n  - files: [customers/*.yml, customers/*.json]\n    refresh_interval: 1s\n",
        )
        .unwrap();
        let files = TenantFiles::new(&cfg, Config::load(&cfg).unwrap(), None);
        (dir, cfg, files)
    }

    fn names(files: &TenantFiles) -> Vec<String> {
        files.config().tenants.into_iter().map(|t| t.name).collect()
    }

    fn write(dir: &tempfile::TempDir, file: &str, text: &str) {
        std::fs::write(dir.path().join("customers").join(file), text).unwrap();
    }

    /// See: #34. A file added, changed, broken (its last good tenants kept, the others
    /// untouched), fixed and removed.
    #[test]
    fn a_file_added_changed_broken_fixed_and_removed() {
        let (dir, _, files) = setup();
        assert_eq!(names(&files), ["own"]);
        assert!(!files.refresh(false), "nothing changed");
        write(&dir, "eu.yml", "- name: a\n  tenant_id: t1\n");
        write(&dir, "us.yml", "- name: u\n  tenant_id: t9\n");
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "a", "u"]);
        assert!(!files.refresh(false), "read again, unchanged");
        write(
            &dir,
            "eu.yml",
            "- name: a\n  tenant_id: t1\n- name: b\n  tenant_id: t2\n",
        );
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "a", "b", "u"]);
        // Broken: eu.yml keeps a and b; us.yml and the config file's tenant are untouched.
        write(
            &dir,
            "eu.yml",
            "- name: a\n  tenant_id: t1\n- name: c\n  lookback: nope\n",
        );
        assert!(!files.refresh(false));
        assert_eq!(names(&files), ["own", "a", "b", "u"]);
        let status = files.status();
        let eu = &status.files[0];
        assert_eq!(eu.tenants, 2);
        let error = eu.error.as_deref().unwrap();
        assert!(
            error.contains("eu.yml: line 4: [1].lookback: invalid value"),
            "{error}"
        );
        assert_eq!(status.files[1].error, None);
        // Fixed.
        write(
            &dir,
            "eu.yml",
            "- name: a\n  tenant_id: t1\n- name: c\n  tenant_id: t3\n",
        );
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "a", "c", "u"]);
        assert_eq!(files.status().files[0].error, None);
        // Removed.
        std::fs::remove_file(dir.path().join("customers/eu.yml")).unwrap();
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "u"]);
        assert_eq!(files.status().files.len(), 1);
    }

    /// See: #34. A file saved with a byte order mark (Notepad, `Out-File -Encoding utf8`) is
    /// read; one saved as UTF-16 or with bytes that are not UTF-8 is refused like any invalid
    /// file, saying why and where, its last good tenants kept: never a tenant named with
    /// U+FFFD.
    #[test]
    fn files_saved_by_windows_tools_are_read_or_refused_by_name() {
        let (dir, _, files) = setup();
        let bytes = |file: &str, b: &[u8]| {
            std::fs::write(dir.path().join("customers").join(file), b).unwrap()
        };
        bytes(
            "eu.json",
            b"\xEF\xBB\xBF[{\"name\": \"a\", \"tenant_id\": \"t1\"}]",
        );
        bytes("us.yml", b"\xEF\xBB\xBF- name: u\n  tenant_id: t9\n");
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "u", "a"]);
        bytes(
            "us.yml",
            b"- name: u\n  tenant_id: t9\n- name: v\xFF\n  tenant_id: t8\n",
        );
        bytes("eu.json", b"\xFF\xFE[\x00{\x00");
        assert!(!files.refresh(false));
        assert_eq!(names(&files), ["own", "u", "a"]);
        let status = files.status();
        let (us, eu) = (&status.files[0], &status.files[1]);
        assert_eq!(
            eu.error.as_deref().unwrap(),
            format!(
                "tenant file {}: UTF-16 text (the file begins with a UTF-16 byte order mark, as \
                 Windows PowerShell 5.1's `>` and `Out-File` write): save it as UTF-8",
                dir.path().join("customers/eu.json").display()
            )
        );
        assert_eq!(
            us.error.as_deref().unwrap(),
            format!(
                "tenant file {}: line 3: not UTF-8 text: byte 0xFF at column 10",
                dir.path().join("customers/us.yml").display()
            )
        );
        assert_eq!((eu.tenants, us.tenants), (1, 1));
    }

    /// See: #34. A file larger than a tenant file may be is refused before it is read, with
    /// its size and the limit; its last good tenants stay.
    #[test]
    fn a_file_too_large_is_refused_before_it_is_read() {
        let (dir, _, files) = setup();
        write(&dir, "eu.yml", "- name: a\n  tenant_id: t1\n");
        assert!(files.refresh(false));
        let eu = dir.path().join("customers/eu.yml");
        // Sparse: nothing is written, and nothing may be read.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&eu)
            .unwrap()
            .set_len(40 << 20)
            .unwrap();
        assert!(!files.refresh(false));
        assert_eq!(names(&files), ["own", "a"]);
        assert_eq!(
            files.status().files[0].error.as_deref().unwrap(),
            format!(
                "tenant file {}: cannot read: 40.0 MiB, over the 16 MiB a tenant file may hold",
                eu.display()
            )
        );
    }

    /// See: #34. A tenant refused because its secret file is missing is taken once the file
    /// is there, without a change to its tenant file; while it stays refused, reading the
    /// file again changes nothing (no reload).
    #[test]
    fn a_refused_tenant_is_taken_once_its_secret_is_there() {
        let (dir, _, files) = setup();
        write(
            &dir,
            "eu.yml",
            "- name: a\n  tenant_id: t1\n- name: b\n  tenant_id: t2\n  client_secret_file: b.secret\n",
        );
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "a"]);
        assert_eq!(files.config().refused.len(), 1);
        assert!(!files.refresh(false), "still refused: nothing to reload");
        std::fs::write(dir.path().join("customers/b.secret"), "s3cret\n").unwrap();
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "a", "b"]);
        assert!(files.config().refused.is_empty());
        assert!(!files.refresh(false));
    }

    /// See: #34. A name served from elsewhere refuses the file that brings it second, naming
    /// both places; the first source keeps it, and the file is taken once the name is free.
    #[test]
    fn a_duplicate_name_across_sources_is_refused() {
        let (dir, cfg, files) = setup();
        write(&dir, "a.yml", "- name: x\n  tenant_id: t1\n");
        assert!(files.refresh(false));
        write(
            &dir,
            "b.yml",
            "- name: y\n  tenant_id: t2\n- name: x\n  tenant_id: t3\n",
        );
        assert!(!files.refresh(false));
        assert_eq!(names(&files), ["own", "x"]);
        let b = dir.path().join("customers/b.yml");
        let a = dir.path().join("customers/a.yml");
        assert_eq!(
            files.status().files[1].error.as_deref(),
            Some(
                format!(
                    "tenant file {}: line 3: name: tenant \"x\" is already served from tenant file {}",
                    b.display(),
                    a.display()
                )
                .as_str()
            )
        );
        write(&dir, "c.yml", "- name: own\n  tenant_id: t4\n");
        assert!(!files.refresh(false));
        assert_eq!(
            files.status().files[2].error.as_deref(),
            Some(
                format!(
                    "tenant file {}: line 1: name: tenant \"own\" is already served from config file {} (tenants:)",
                    dir.path().join("customers/c.yml").display(),
                    cfg.display()
                )
                .as_str()
            )
        );
        // x leaves a.yml: b.yml, unchanged, is taken at the next read.
        write(&dir, "a.yml", "[]\n");
        assert!(files.refresh(false));
        assert_eq!(names(&files), ["own", "y", "x"]);
    }

    /// See: #34. A reload the timer asks for keeps the configuration file as last loaded; a
    /// full one (SIGHUP) reads it again, with the files under the new defaults.
    #[test]
    fn a_files_only_reload_keeps_the_config_file_as_loaded() {
        let (dir, cfg, files) = setup();
        write(&dir, "a.yml", "- name: x\n  tenant_id: t1\n");
        files.refresh(false);
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("client_id: app", "client_id: app2")).unwrap();
        files.files_only.store(true, Ordering::SeqCst);
        // The file changed on disk: read again after all (a SIGHUP may share this reload).
        let c = files.load().unwrap();
        assert!(c.tenants.iter().all(|t| t.client_id == "app2"));
        // A broken configuration file fails a full reload and leaves everything as it was.
        std::fs::write(&cfg, "tenants: [\n").unwrap();
        assert!(files.load().is_err());
        assert_eq!(names(&files), ["own", "x"]);
    }
}
