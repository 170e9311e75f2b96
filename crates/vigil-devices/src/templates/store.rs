//! Hot-reloading template store and the `template:PATH` decoder.

use super::{TemplateError, TemplateSet};
use crate::{DecodeContext, DecodeError, Decoded, Decoder};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The files a template path stands for (see [`TemplateSet::load`]).
pub(crate) fn template_files(path: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let io = |source| TemplateError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|x| x.eq_ignore_ascii_case("json"))
            })
            .collect();
        files.sort();
        Ok(files)
    } else {
        let mut files = vec![path.to_owned()];
        if let Some(sibling) = fhir_sibling(path)
            && sibling.is_file()
        {
            files.push(sibling);
        }
        Ok(files)
    }
}

/// `x-devicecontent.json` → `x-fhirmapping.json`.
fn fhir_sibling(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let lower = name.to_ascii_lowercase();
    let at = lower.rfind("devicecontent.json")?;
    let prefix = name.get(..at)?;
    Some(path.with_file_name(format!("{prefix}fhirmapping.json")))
}

/// What the store watches: each file with its modification time and length.
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(path: &Path) -> Fingerprint {
    let mut files = template_files(path).unwrap_or_default();
    if files.is_empty() {
        files.push(path.to_owned());
    }
    if let Some(s) = fhir_sibling(path)
        && !files.contains(&s)
    {
        files.push(s);
    }
    files
        .into_iter()
        .map(|f| {
            let stamp = std::fs::metadata(&f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f, stamp)
        })
        .collect()
}

/// The outcome of [`TemplateStore::reload_if_changed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// No file changed.
    Unchanged,
    /// The files changed and the new version is in use.
    Reloaded,
}

#[derive(Debug)]
struct State {
    set: Arc<TemplateSet>,
    fingerprint: Fingerprint,
    checked: Instant,
    last_error: Option<String>,
    reloads: u64,
}

/// Templates loaded from a file or directory that reload when the files change: on
/// [`Self::current`] (at most once per poll interval) or on [`Self::reload_if_changed`]. A
/// change that does not load keeps the previous version in use and is reported by
/// [`Self::last_error`] until a later change loads.
#[derive(Debug)]
pub struct TemplateStore {
    path: PathBuf,
    poll: Duration,
    state: Mutex<State>,
}

impl TemplateStore {
    /// Loads the templates at `path`; they are checked for changes at most every `poll`.
    pub fn open(path: impl Into<PathBuf>, poll: Duration) -> Result<Self, TemplateError> {
        let path = path.into();
        let fingerprint = fingerprint(&path);
        let set = TemplateSet::load(&path)?;
        Ok(Self {
            path,
            poll,
            state: Mutex::new(State {
                set: Arc::new(set),
                fingerprint,
                checked: Instant::now(),
                last_error: None,
                reloads: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The templates in use, reloaded first when the poll interval has passed and a file
    /// changed.
    pub fn current(&self) -> Arc<TemplateSet> {
        let mut st = self.lock();
        if st.checked.elapsed() >= self.poll {
            let _ = self.check(&mut st);
        }
        Arc::clone(&st.set)
    }

    /// Reloads now if a file changed. On a load error the previous version stays in use and
    /// the error is returned (and kept for [`Self::last_error`]).
    pub fn reload_if_changed(&self) -> Result<Reload, TemplateError> {
        let mut st = self.lock();
        self.check(&mut st)
    }

    fn check(&self, st: &mut State) -> Result<Reload, TemplateError> {
        st.checked = Instant::now();
        let now = fingerprint(&self.path);
        if now == st.fingerprint {
            return Ok(Reload::Unchanged);
        }
        st.fingerprint = now;
        match TemplateSet::load(&self.path) {
            Ok(set) => {
                st.set = Arc::new(set);
                st.last_error = None;
                st.reloads += 1;
                Ok(Reload::Reloaded)
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Why the latest change did not load, while the previous version is still in use.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// How many times the templates were reloaded.
    pub fn reloads(&self) -> u64 {
        self.lock().reloads
    }

    /// The load-time warnings of the templates in use.
    pub fn warnings(&self) -> Vec<String> {
        self.lock().set.warnings.clone()
    }
}

/// The decoder of `template:PATH`: vendor JSON through hot-reloaded templates.
#[derive(Debug)]
pub struct TemplateDecoder {
    format: String,
    store: TemplateStore,
}

impl TemplateDecoder {
    pub fn store(&self) -> &TemplateStore {
        &self.store
    }
}

/// How often `template:PATH` decoders look for changed files.
pub const POLL: Duration = Duration::from_millis(1000);

/// A `template:PATH` decoder for a path (case preserved), or why its templates do not load.
pub fn open_decoder(path: impl AsRef<Path>) -> Result<TemplateDecoder, TemplateError> {
    let path = path.as_ref();
    Ok(TemplateDecoder {
        format: format!("template:{}", path.display()),
        store: TemplateStore::open(path, POLL)?,
    })
}

impl Decoder for TemplateDecoder {
    fn format(&self) -> &str {
        &self.format
    }

    fn decode(&self, input: &[u8], ctx: &DecodeContext) -> Result<Vec<Decoded>, DecodeError> {
        let set = self.store.current();
        let out = set.decode(input, ctx).map_err(|e| DecodeError::Format {
            format: self.format.clone(),
            source: Box::new(e),
        })?;
        let fields = serde_json::to_value(&out).unwrap_or_default();
        Ok(vec![Decoded {
            format: self.format.clone(),
            fields,
            readings: out.readings,
            events: Vec::new(),
        }])
    }
}

/// `decoder_for` lower-cases format names; a path that does not exist as given is looked up
/// component by component without regard to case.
fn resolve_path(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if path.exists() {
        return Some(path.to_owned());
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => {
                let exact = out.join(name);
                if exact.exists() {
                    out = exact;
                    continue;
                }
                let dir = if out.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    out.clone()
                };
                let want = name.to_str()?.to_lowercase();
                let found = std::fs::read_dir(&dir)
                    .ok()?
                    .filter_map(Result::ok)
                    .find(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.to_lowercase() == want)
                    })?;
                out.push(found.file_name());
            }
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

pub(crate) fn decoder_for(rest: &str) -> Option<Box<dyn Decoder>> {
    let rest = rest.trim();
    if rest.is_empty() {
        return None;
    }
    let path = resolve_path(rest)?;
    open_decoder(path)
        .ok()
        .map(|d| Box::new(d) as Box<dyn Decoder>)
}

/// `template:PATH` is open-ended: no fixed names to list.
pub(crate) fn format_names() -> Vec<String> {
    Vec::new()
}
