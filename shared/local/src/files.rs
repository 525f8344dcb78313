//! `ResultStore` as files `<dir>/<key>.json`.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use vacal_core::ports::{check_result_key, ResultStore, StoreError, StoreResult};

/// Prefix of files being written; never a valid key (keys are hex).
const TEMP_PREFIX: &str = ".tmp-";
/// Temp files older than this at start-up were left by a crash.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Results as files. A write goes to a temp file first and is then hard-linked to its
/// name: the link fails if the name exists, so a put never overwrites and a reader never
/// sees a partial file.
#[derive(Debug, Clone)]
pub struct FsResultStore {
    dir: Arc<PathBuf>,
}

impl FsResultStore {
    /// Opens (creating if needed) a results folder and removes temp files a crash left.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        remove_stale_temps(dir);
        Ok(FsResultStore {
            dir: Arc::new(dir.to_path_buf()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        check_result_key(key)?;
        Ok(self.dir.join(format!("{key}.json")))
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce() -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Other(format!("result store task failed: {e}")))?
    }
}

#[async_trait]
impl ResultStore for FsResultStore {
    async fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        let path = self.path_of(key)?;
        let dir = self.dir.clone();
        let key = key.to_string();
        let bytes = bytes.to_vec();
        self.blocking(move || put_if_absent(&dir, &key, &path, &bytes))
            .await
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let path = self.path_of(key)?;
        self.blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path_of(key)?;
        self.blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        })
        .await
    }
}

fn put_if_absent(dir: &Path, key: &str, path: &Path, bytes: &[u8]) -> StoreResult<()> {
    if path.exists() {
        return Ok(());
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{key}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_synced(&temp, bytes).and_then(|()| match fs::hard_link(&temp, path) {
        Ok(()) => Ok(()),
        // Someone else stored it first: theirs stays, and that is success.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        // A file system without hard links: rename, which is atomic but may replace a
        // concurrent writer's equal-keyed (so equal-content) result.
        Err(_) if !path.exists() => fs::rename(&temp, path),
        Err(_) => Ok(()),
    });
    let _ = fs::remove_file(&temp);
    written.map_err(|e| io_err(path, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    // The link must never name a file whose data a power cut could still lose.
    file.sync_all()
}

fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let is_temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP);
        if is_temp && old {
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove stale temp file");
            }
        }
    }
}

/// File-system failures are reported as transient: a full disk or a busy mount may
/// recover, and the caller's retry is harmless because writes are idempotent.
fn io_err(path: &Path, e: io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_keys_that_are_not_lowercase_hex() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsResultStore::open(dir.path()).unwrap();
        for key in [
            "",
            "../etc/passwd",
            "ABCDEF",
            "abc.json",
            "12 34",
            &"a".repeat(129),
        ] {
            assert!(
                matches!(
                    store.put_if_absent(key, b"x").await,
                    Err(StoreError::Other(_))
                ),
                "{key:?} must be refused"
            );
            assert!(store.get(key).await.is_err(), "{key:?} must be refused");
            assert!(store.delete(key).await.is_err(), "{key:?} must be refused");
        }
        store.put_if_absent("0123456789abcdef", b"x").await.unwrap();
        assert!(dir.path().join("0123456789abcdef.json").exists());
    }

    #[tokio::test]
    async fn leaves_no_temp_files_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsResultStore::open(dir.path()).unwrap();
        store.put_if_absent("aa", b"1").await.unwrap();
        store.put_if_absent("aa", b"2").await.unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["aa.json".to_string()]);
    }
}
