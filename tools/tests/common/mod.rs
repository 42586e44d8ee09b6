//! What the tools' integration tests share: a scratch directory that is
//! removed when the test that made it ends (pass or fail), so runs do not
//! pile up in the temp directory.

pub mod raw_node;

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh `<temp>/verity-<suite>-<name>-XXXXXX` (tempfile's), gone at
/// drop.
pub struct TmpDir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TmpDir {
    pub fn new(suite: &str, name: &str) -> TmpDir {
        let t = tempfile::Builder::new()
            .prefix(&format!("verity-{suite}-{name}-"))
            .tempdir()
            .unwrap();
        TmpDir(t.path().to_path_buf(), t)
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
