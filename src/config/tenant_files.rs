//! `tenant_files:`, in the shape of Prometheus's `file_sd_configs`: blocks of
//! `{files: [paths or globs], refresh_interval}`, each file a YAML or JSON list of tenant
//! entries (the schema of a `tenants:` entry, `tenant_defaults:` applied). See: #34
//!
//! Owns the blocks as written and checked ([`FileBlock`]), what reading one tenant file needs
//! from the config file ([`TenantSources`]: the defaults, the poll interval, the
//! `script_metrics:` rules), the expansion of the globs ([`TenantSources::paths`]), reading one
//! file's text into its tenants ([`TenantSources::read`], a pure function of the text) with
//! errors naming the file, the line and the key ([`FileError`]), a tenant refused alone
//! ([`Refused`]), and putting a configuration together from the config file's own tenants
//! and the files' ([`combine`]). Does not own when files are read again, their last good
//! content, nor names claimed across files (`crate::app::tenant_files`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{Invalid, check_range};
use super::script_metrics::ScriptRule;
use super::tenant::{self, Context, Entry, RawTenant};
use super::{Config, Tenant};

/// Prometheus's default `refresh_interval` of `file_sd_configs`.
const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// `refresh_interval`: from a second (tests, quick onboarding) to a day.
const REFRESH_INTERVAL: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// One block of `tenant_files:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlock {
    #[serde(default)]
    files: Vec<String>,
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    refresh_interval: Duration,
}

fn default_refresh_interval() -> Duration {
    DEFAULT_REFRESH_INTERVAL
}

/// One block of `tenant_files:`, checked: its files (relative ones made relative to the config
/// file; a `*` or `?` may stand in the file name, not in the directories) and how often they
/// are read again.
#[derive(Debug, Clone, PartialEq)]
pub struct FileBlock {
    pub files: Vec<PathBuf>,
    pub refresh_interval: Duration,
}

impl RawBlock {
    /// The block checked; keys relative to the block (`files[1]`, `refresh_interval`).
    pub(super) fn validate(self, config_file: &Path) -> Result<FileBlock, Invalid> {
        if self.files.is_empty() {
            return Err(Invalid::new(
                "files",
                "at least one file or glob is required",
            ));
        }
        check_range(self.refresh_interval, REFRESH_INTERVAL)
            .map_err(|m| Invalid::new("refresh_interval", m))?;
        let mut files = Vec::with_capacity(self.files.len());
        for (j, f) in self.files.iter().enumerate() {
            let path = Path::new(f);
            let dir_wild = path
                .parent()
                .is_some_and(|d| d.to_string_lossy().contains(['*', '?']));
            if f.trim().is_empty() || dir_wild {
                return Err(Invalid::new(
                    format!("files[{j}]"),
                    "a file path, where only the file name may hold a wildcard (* or ?)",
                ));
            }
            files.push(match config_file.parent() {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            });
        }
        Ok(FileBlock {
            files,
            refresh_interval: self.refresh_interval,
        })
    }
}

/// What reading a tenant file needs from the configuration file: its `tenant_files:` blocks,
/// its `tenant_defaults:`, the poll interval, the `script_metrics:` rules and the names of its
/// own tenants (which come first).
#[derive(Clone, Default)]
pub struct TenantSources {
    pub blocks: Vec<FileBlock>,
    pub(super) defaults: Option<RawTenant>,
    pub(super) poll_interval: Duration,
    pub(super) rules: Vec<ScriptRule>,
}

impl std::fmt::Debug for TenantSources {
    /// The defaults may hold a secret as written: shown as whether they are set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSources")
            .field("blocks", &self.blocks)
            .field("defaults", &self.defaults.is_some())
            .finish_non_exhaustive()
    }
}

/// The tenants one file brings: those served, their narrowing of the `script_metrics:`
/// rules, and those refused alone (their sign-in cannot be resolved).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileTenants {
    pub tenants: Vec<Tenant>,
    pub narrowed: BTreeMap<String, BTreeSet<String>>,
    pub refused: Vec<Refused>,
}

/// A tenant refused alone: its sign-in cannot be resolved (a variable not set, a certificate
/// file missing). The other tenants go on. See: #34
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {}: {key}: {message}", file.display())]
pub struct Refused {
    /// `config file` or `tenant file`.
    pub kind: &'static str,
    pub file: PathBuf,
    pub tenant: String,
    pub key: String,
    pub message: String,
}

impl Refused {
    pub(super) fn new(kind: &'static str, file: &Path, tenant: &str, e: Invalid) -> Refused {
        Refused {
            kind,
            file: file.to_path_buf(),
            tenant: tenant.to_string(),
            key: e.key,
            message: e.message,
        }
    }
}

/// The largest tenant file read: 10,000 entries of a name and a tenant id take about 1 MB. A
/// larger one is refused before it is read (a glob that matches a log or a dump by mistake
/// would otherwise be read whole at every `refresh_interval`).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// A tenant file that cannot be used: it keeps its last good tenants. The message names the
/// file, the line (when known: where the parser stopped, or the line of the entry's name)
/// and the key (`[2].lookback`: the third entry's `lookback`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant file {}: {}{}{message}", file.display(), line.map(|l| format!("line {l}: ")).unwrap_or_default(), if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct FileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl TenantSources {
    /// The shortest `refresh_interval` of the blocks; `None` without `tenant_files:`.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.blocks.iter().map(|b| b.refresh_interval).min()
    }

    /// The files the blocks name now, in the order of the blocks (a glob's matches in the
    /// order of their names), each once. As in Prometheus, a name without a wildcard is a
    /// glob too: a file that does not exist is not named (deleting a file removes its
    /// tenants).
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for pattern in self.blocks.iter().flat_map(|b| &b.files) {
            for p in expand(pattern) {
                if seen.insert(p.clone()) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The tenants of the file `file` holding `text`: JSON when its name ends in `.json`,
    /// else YAML; an empty file is an empty list. Names must be unique within the file (across
    /// sources is the caller's). `env` resolves `${VAR}`.
    pub fn read(
        &self,
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<FileTenants, FileError> {
        let fail = |line, key: String, message: String| FileError {
            file: file.to_path_buf(),
            line,
            key,
            message,
        };
        let raw: Vec<RawTenant> = if text.trim().is_empty() {
            Vec::new()
        } else if file.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(text)
                .map_err(|e| fail(Some(e.line()), String::new(), e.to_string()))?
        } else {
            serde_norway::from_str(text).map_err(|e| {
                let line = e.location().map(|l| l.line());
                // The parser's message starts with the path of the entry at fault (`.[2]:`).
                let message = e.to_string();
                match message.split_once(": ") {
                    Some((key, rest)) if key.starts_with(".[") => fail(
                        line,
                        key.trim_start_matches('.').to_string(),
                        rest.to_string(),
                    ),
                    _ => fail(line, String::new(), message),
                }
            })?
        };
        let cx = Context {
            defaults: self.defaults.as_ref(),
            poll_interval: self.poll_interval,
            rules: &self.rules,
            path: file,
            env,
        };
        let mut out = FileTenants::default();
        let mut names = BTreeSet::new();
        // Kept as the file's last good content: in the room its entries take, not the
        // doubling growth of a push at a time (a file of 100 took 128 places of 700 bytes).
        out.tenants.reserve_exact(raw.len());
        for (i, t) in raw.into_iter().enumerate() {
            let name = t.name.clone();
            let line = line_of_name(text, &name);
            let at = format!("[{i}].");
            if !name.trim().is_empty() && !names.insert(name.clone()) {
                return Err(fail(
                    line,
                    format!("{at}name"),
                    format!("duplicate tenant name {name:?}"),
                ));
            }
            match tenant::entry(t, &at, &cx).map_err(|e| fail(line, e.key, e.message))? {
                Entry::Served(tenant, narrowed) => {
                    if let Some(kept) = narrowed {
                        out.narrowed.insert(name, kept);
                    }
                    out.tenants.push(*tenant);
                }
                Entry::Refused(e) => out
                    .refused
                    .push(Refused::new("tenant file", file, &name, e)),
            }
        }
        Ok(out)
    }
}

/// The first line (1-based) that holds the entry's name after a `name` key, if any.
fn line_of_name(text: &str, name: &str) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    text.lines()
        .position(|l| l.find("name").is_some_and(|k| l[k + 4..].contains(name)))
        .map(|i| i + 1)
}

/// The files `pattern` names: itself, or when its file name holds `*` or `?`, the files of
/// its directory whose names match, in name order.
fn expand(pattern: &Path) -> Vec<PathBuf> {
    let Some(name) = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return match pattern.is_file() {
            true => vec![pattern.to_path_buf()],
            false => Vec::new(),
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    // Regular files only, through symbolic links (a Kubernetes ConfigMap's files are links):
    // a FIFO or a device matched by a wide glob would block the read for ever.
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters and `?` for
/// one.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// `base` (the configuration file's own tenants) with the tenants of `files`, in order: a
/// name already served from an earlier source is left out (the source that had it first
/// keeps it; the store refuses such a file, this only guards the put-together list).
pub fn combine<'a>(base: &Config, files: impl IntoIterator<Item = &'a FileTenants>) -> Config {
    let files: Vec<&FileTenants> = files.into_iter().collect();
    let mut config = base.clone();
    // The tenants in force, held for as long as they are: room for them all at once (#34).
    config
        .tenants
        .reserve_exact(files.iter().map(|f| f.tenants.len()).sum());
    let mut names: BTreeSet<String> = config.tenants.iter().map(|t| t.name.clone()).collect();
    for f in files {
        for t in &f.tenants {
            if names.insert(t.name.clone()) {
                if let Some(kept) = f.narrowed.get(&t.name) {
                    config
                        .script_metrics
                        .narrowed
                        .insert(t.name.clone(), kept.clone());
                }
                config.tenants.push(t.clone());
            }
        }
        config.refused.extend(f.refused.iter().cloned());
    }
    config
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_file_names() {
        assert!(wildcard("*.yml", "a.yml"));
        assert!(wildcard("customers-?.yaml", "customers-1.yaml"));
        assert!(!wildcard("customers-?.yaml", "customers-12.yaml"));
        assert!(wildcard("*-eu-*.json", "group-eu-3.json"));
        assert!(!wildcard("*.yml", "a.yml.bak"));
        assert!(wildcard("*", ""));
    }

    /// See: #34. A glob names regular files, through symbolic links (a ConfigMap's files are
    /// links), never a directory, a link to one, or a FIFO (whose read would block for ever).
    #[test]
    fn a_glob_names_regular_files_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.yml"), "[]").unwrap();
        std::os::unix::fs::symlink(d.join("a.yml"), d.join("b.yml")).unwrap();
        std::fs::create_dir(d.join("c.yml")).unwrap();
        std::os::unix::fs::symlink(d.join("c.yml"), d.join("d.yml")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(d.join("e.yml"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let c = parse(&format!(
            "tenant_defaults: {{client_id: a, client_secret: s}}\ntenant_files: [{{files: ['{}/*.yml']}}]\n",
            d.display()
        ))
        .unwrap();
        assert_eq!(c.tenant_files.paths(), [d.join("a.yml"), d.join("b.yml")]);
    }

    #[test]
    fn the_line_is_that_of_the_entrys_name() {
        let text = "- name: a\n  lookback: 1h\n- name: b\n  lookback: 0s\n";
        assert_eq!(line_of_name(text, "b"), Some(3));
        assert_eq!(line_of_name(text, ""), None);
    }

    use super::super::fixtures::{assert_errors, env, parse};

    /// A configuration of defaults and one tenant file block (the file's name is not read).
    const SOURCES: &str = "
tenant_defaults:
  client_id: mssp-app
  client_secret: ${MDE_SECRET}
  lookback: 2h
tenant_files:
  - files: [customers/*.yml]
    refresh_interval: 30s
";

    fn read(file: &str, text: &str) -> Result<FileTenants, FileError> {
        let c = parse(SOURCES).unwrap();
        c.tenant_files.read(Path::new(file), text, &env)
    }

    /// See: #34. Tenants come from files alone; entries of a name and a tenant id, YAML or
    /// JSON, with the defaults applied and their own keys winning.
    #[test]
    fn a_file_is_a_list_of_tenant_entries_with_the_defaults() {
        let c = parse(SOURCES).unwrap();
        assert!(c.tenants.is_empty());
        assert_eq!(
            c.tenant_files.refresh_interval(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            c.tenant_files.blocks[0].files,
            [PathBuf::from("customers/*.yml")]
        );
        let yaml = read(
            "eu.yml",
            "- name: contoso\n  tenant_id: t1\n- name: fabrikam\n  tenant_id: t2\n  lookback: 1h\n",
        )
        .unwrap();
        let json = read(
            "eu.json",
            r#"[{"name": "contoso", "tenant_id": "t1"}, {"name": "fabrikam", "tenant_id": "t2", "lookback": "1h"}]"#,
        )
        .unwrap();
        for f in [&yaml, &json] {
            let got: Vec<(&str, &str, u64)> = f
                .tenants
                .iter()
                .map(|t| {
                    (
                        t.name.as_str(),
                        t.client_id.as_str(),
                        t.selectors.lookback.as_secs(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("contoso", "mssp-app", 7200),
                    ("fabrikam", "mssp-app", 3600)
                ]
            );
        }
        assert!(read("empty.yml", "\n").unwrap().tenants.is_empty());
        assert!(read("empty.json", "[]").unwrap().tenants.is_empty());
        // Held in the room they take, read and combined (#34).
        assert_eq!(yaml.tenants.capacity(), 2);
        let combined = combine(&c, [&yaml]);
        assert_eq!(combined.tenants.len(), 2);
        assert_eq!(combined.tenants.capacity(), 2);
    }

    /// See: #34. A file's errors name the file, the line and the key.
    #[test]
    fn file_errors_name_the_file_the_line_and_the_key() {
        let e = read(
            "eu.yml",
            "- name: a\n  tenant_id: t1\n- name: b\n  tenant_id: t2\n  lookback: 0s\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "[1].lookback"));
        assert_eq!(
            e.to_string(),
            "tenant file eu.yml: line 3: [1].lookback: must be greater than 0"
        );
        let e = read(
            "eu.yml",
            "- name: a\n  tenant_id: t1\n- name: a\n  tenant_id: t2\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tenant file eu.yml: line 1: [1].name: duplicate tenant name \"a\""
        );
        let e = read("eu.yml", "- name: a\n  tenant_id: t1\n  colud: gcc\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(
            e.to_string()
                .starts_with("tenant file eu.yml: line 3: [0]: unknown field `colud`"),
            "{e}"
        );
        let e = read("eu.json", "[{\"name\": \"a\",\n \"tenant_id\": 5}]").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string()
                .starts_with("tenant file eu.json: line 2: invalid type"),
            "{e}"
        );
        // A sign-in that cannot be resolved refuses that tenant alone.
        let f = read(
            "eu.yml",
            "- name: a\n  tenant_id: t1\n- name: b\n  tenant_id: t2\n  client_secret: ${NOT_SET}\n",
        )
        .unwrap();
        assert_eq!(f.tenants.len(), 1);
        assert_eq!(
            f.refused[0].to_string(),
            "tenant file eu.yml: [1].client_secret: environment variable NOT_SET is not set"
        );
    }

    /// See: #34. The blocks' own errors, on their exact messages.
    #[test]
    fn block_errors_name_the_key() {
        let block = |b: &str| format!("tenant_files:\n  - {b}\n");
        assert_errors(&[
            (
                block("refresh_interval: 1m"),
                "config file cfg.yml: tenant_files[0].files: at least one file or glob is required",
            ),
            (
                block("files: [a.yml]\n    refresh_interval: 10ms"),
                "config file cfg.yml: tenant_files[0].refresh_interval: must be at least 1s",
            ),
            (
                block("files: [a.yml, '*/b.yml']"),
                "config file cfg.yml: tenant_files[0].files[1]: a file path, where only the file name may hold a wildcard (* or ?)",
            ),
            (
                "tenants: []\n".to_string(),
                "config file cfg.yml: tenants: at least one tenant is required",
            ),
        ]);
    }
}
