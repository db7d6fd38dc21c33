//! Secrets given to the daemons (the network key, the TURN relay secret):
//! from a file only its owner may read, or from the environment, so that
//! they do not show in `/proc/PID/cmdline` or `ps` as a command-line value
//! does. A value on the command line is still taken, with a warning.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Longest secret file read; a secret is a short line, not a document.
pub const MAX_SECRET_FILE: u64 = 4096;

/// Where one secret may come from; at most one of `arg` and `file` is set
/// (the CLI makes them conflict), `env` names the variable tried last.
#[derive(Debug)]
pub struct SecretSource<'a> {
    /// What the secret is, for messages ("network key").
    pub what: &'a str,
    /// The command-line flag of the value, for the warning ("--network-key").
    pub flag: &'a str,
    /// A value given on the command line.
    pub arg: Option<String>,
    /// A file holding the value.
    pub file: Option<PathBuf>,
    /// The environment variable holding the value.
    pub env: &'a str,
}

/// Where a secret was found (for the log, never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// On the command line (visible to every local user).
    CommandLine,
    /// In this file.
    File(PathBuf),
    /// In this environment variable.
    Environment(String),
}

impl SecretSource<'_> {
    /// The secret (trimmed of surrounding white space) and where it came from,
    /// or `None` when no source holds one. A file that group or others may
    /// read, that is longer than [`MAX_SECRET_FILE`] or empty is refused.
    pub fn read(self) -> Result<Option<(String, Origin)>> {
        self.read_with(|k| std::env::var(k).ok())
    }

    /// [`Self::read`] with the environment given (tests).
    pub fn read_with(self, env: impl Fn(&str) -> Option<String>) -> Result<Option<(String, Origin)>> {
        if let Some(v) = self.arg {
            tracing::warn!(
                "the {} given with {} is visible to every user of this machine (ps, /proc); \
                 use {}-file or {} instead",
                self.what,
                self.flag,
                self.flag,
                self.env
            );
            return Ok(Some((v.trim().to_string(), Origin::CommandLine)));
        }
        if let Some(path) = self.file {
            let v = read_secret_file(self.what, &path)?;
            return Ok(Some((v, Origin::File(path))));
        }
        match env(self.env) {
            Some(v) if !v.trim().is_empty() => Ok(Some((v.trim().to_string(), Origin::Environment(self.env.into())))),
            Some(_) => bail!("{} is set but empty", self.env),
            None => Ok(None),
        }
    }
}

/// Read a secret file: owner-only permissions, bounded, not empty.
fn read_secret_file(what: &str, path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open the {what} file {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        bail!("the {what} file {} is not a regular file", path.display());
    }
    crate::store::refuse_if_readable_by_others(&format!("{what} file"), path, &meta)?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} file {} as text", path.display()))?;
    if text.len() as u64 > MAX_SECRET_FILE {
        bail!("the {what} file {} is longer than {MAX_SECRET_FILE} bytes", path.display());
    }
    let v = text.trim();
    if v.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn source(arg: Option<&str>, file: Option<PathBuf>) -> SecretSource<'static> {
        SecretSource { what: "network key", flag: "--network-key", arg: arg.map(Into::into), file, env: "SV_TEST_KEY" }
    }

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("key");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_file_only_its_owner_reads_is_taken_trimmed() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "  abc\n", 0o600);
        let got = source(None, Some(p.clone())).read_with(|_| None).unwrap();
        assert_eq!(got, Some(("abc".into(), Origin::File(p))));
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let p = write(d.path(), "abc", mode);
            let e = source(None, Some(p)).read_with(|_| None).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        }
    }

    #[test]
    fn empty_oversized_missing_and_directory_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), " \n", 0o600);
        assert!(source(None, Some(p)).read_with(|_| None).unwrap_err().to_string().contains("empty"));
        let p = write(d.path(), &"x".repeat(MAX_SECRET_FILE as usize + 1), 0o600);
        assert!(source(None, Some(p)).read_with(|_| None).unwrap_err().to_string().contains("longer"));
        assert!(source(None, Some(d.path().join("none"))).read_with(|_| None).is_err());
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(source(None, Some(sub)).read_with(|_| None).is_err());
    }

    #[test]
    fn the_environment_is_the_last_resort_and_must_not_be_empty() {
        let env = |k: &str| (k == "SV_TEST_KEY").then(|| "from-env\n".to_string());
        assert_eq!(
            source(None, None).read_with(env).unwrap(),
            Some(("from-env".into(), Origin::Environment("SV_TEST_KEY".into())))
        );
        assert_eq!(source(Some("arg"), None).read_with(env).unwrap().map(|v| v.1), Some(Origin::CommandLine));
        assert!(source(None, None).read_with(|_| Some(String::new())).is_err());
        assert_eq!(source(None, None).read_with(|_| None).unwrap(), None);
    }
}
