//! What the tools' integration tests share: a scratch directory that is
//! removed when the test that made it ends (pass or fail), so runs do not
//! pile up in the temp directory.

pub mod raw_node;

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// `<temp>/verity-<suite>-<name>-<pid>`, empty at the start, gone at drop.
pub struct TmpDir(PathBuf);

impl TmpDir {
    pub fn new(suite: &str, name: &str) -> TmpDir {
        let d = std::env::temp_dir().join(format!("verity-{suite}-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    }
}

impl Deref for TmpDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
