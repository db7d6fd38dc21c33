//! Files in the data directory: the identity key (mode 0600, refused when
//! others can read it or it is damaged), the client's host cache, and the
//! `claims.json` of a supernode from before its database (imported once,
//! `sn::db`). Writes go to a temporary file renamed into place, so a crash
//! never leaves half a file.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use supervox_core::host_cache::HostCache;
use supervox_core::Identity;
use supervox_proto::NameClaim;

/// Refuse a secret file (`what`, at `path`) that group or others may read.
pub(crate) fn refuse_if_readable_by_others(what: &str, path: &Path, meta: &fs::Metadata) -> Result<()> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} is readable by others (mode {mode:o}); fix it with: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Where a supernode kept its claims before its database.
const LEGACY_CLAIMS: &str = "claims.json";

/// The data directory of one node or supernode.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Open (creating, mode 0700) a data directory.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("cannot create data directory {}", root.display()))?;
        let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o700));
        Ok(Self { root: root.to_path_buf() })
    }

    /// The default directory for a role, under the user's data directory.
    pub fn default_path(kind: &str) -> PathBuf {
        dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("supervox").join(kind)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Load the identity, or create one on first run.
    pub fn identity(&self) -> Result<Identity> {
        let path = self.path("identity");
        match fs::metadata(&path) {
            Ok(meta) => {
                refuse_if_readable_by_others("identity file", &path, &meta)?;
                let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                Identity::from_file_bytes(&bytes).with_context(|| format!("{}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::generate(&mut rand::rngs::OsRng);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                f.write_all(&id.to_file_bytes())?;
                f.sync_all()?;
                tracing::info!("created identity {} in {}", id.fingerprint(), path.display());
                Ok(id)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The name claims in `claims.json`, where a supernode kept them before
    /// its database; `None` without one. A damaged file is an error, not an
    /// empty directory: losing claims silently would hand names to others.
    pub fn legacy_claims(&self) -> Result<Option<Vec<NameClaim>>> {
        let path = self.path(LEGACY_CLAIMS);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .with_context(|| format!("claims file {} is corrupt", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// `claims.json` is imported: rename it `claims.json.migrated` (kept for
    /// the operator, no longer read).
    pub fn retire_legacy_claims(&self) -> Result<()> {
        let (from, to) = (self.path(LEGACY_CLAIMS), self.path(&format!("{LEGACY_CLAIMS}.migrated")));
        fs::rename(&from, &to).with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
    }

    /// The client's host cache (a hint: unreadable lines are skipped).
    pub fn host_cache(&self) -> HostCache {
        fs::read_to_string(self.path("hostcache")).map(|t| HostCache::from_text(&t)).unwrap_or_default()
    }

    /// Store the host cache.
    pub fn save_host_cache(&self, hc: &HostCache) -> Result<()> {
        self.write_atomic("hostcache", hc.to_text().as_bytes())
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(name)).with_context(|| format!("cannot write {name}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        let a = d.identity().unwrap();
        let mode = fs::metadata(d.path("identity")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(d.identity().unwrap().user_id(), a.user_id());
    }

    #[test]
    fn readable_or_corrupt_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        d.identity().unwrap();
        fs::set_permissions(d.path("identity"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = d.identity().unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
        fs::set_permissions(d.path("identity"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(d.path("identity"), b"supervox-identity-v1\nnothex\n").unwrap();
        let e = format!("{:#}", d.identity().unwrap_err());
        assert!(e.contains("corrupt"), "{e}");
    }

    #[test]
    fn legacy_claims_are_read_retired_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        assert_eq!(d.legacy_claims().unwrap(), None);
        let id = Identity::from_seed([1; 32]);
        let c = NameClaim::sign(id.signing_key(), "alice", 1).unwrap();
        fs::write(d.path("claims.json"), serde_json::to_vec(&[&c]).unwrap()).unwrap();
        assert_eq!(d.legacy_claims().unwrap(), Some(vec![c]));
        d.retire_legacy_claims().unwrap();
        assert_eq!(d.legacy_claims().unwrap(), None);
        assert!(d.path("claims.json.migrated").exists());
        fs::write(d.path("claims.json"), b"{").unwrap();
        assert!(d.legacy_claims().is_err());
    }
}
