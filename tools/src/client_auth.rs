//! Client authentication for the sender and the receiver
//! (`wire/PROTOCOL.md`, Authentication): with a client secret configured, a
//! client answers the node's challenge and checks the node's answer to its
//! own, exactly as nodes do between themselves.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use verity_wire::auth::{self, Answerer, Side};
use verity_wire::HelloBody;

/// The largest secret file read.
pub const MAX_SECRET_FILE_LEN: u64 = 4096;

/// Reads a secret file: its bytes without trailing whitespace, at least
/// [`auth::MIN_SECRET_LEN`] of them. As ssh treats keys, the file must be a
/// regular file that group and others cannot access (mode 600 or 400), of at
/// most [`MAX_SECRET_FILE_LEN`] bytes; type, mode and size are checked on
/// the opened file.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut b = read_private(path, MAX_SECRET_FILE_LEN)?;
    while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
        b.pop();
    }
    if b.len() < auth::MIN_SECRET_LEN {
        return Err(format!(
            "{}: a secret needs at least {} bytes, the file has {}",
            path.display(),
            auth::MIN_SECRET_LEN,
            b.len()
        ));
    }
    Ok(b)
}

/// Reads a file that holds a secret (a client secret, a TLS private key)
/// as ssh treats keys: a regular file that group and others cannot access
/// (mode 600 or 400), of at most `max` bytes; type, mode and size are
/// checked on the opened file.
pub fn read_private(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    // Refuse what is plainly not a regular file before opening it: opening a
    // FIFO would wait for a writer. The opened file is checked again below.
    let before = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !before.file_type().is_file() {
        return Err(not_regular(path, before.file_type()));
    }
    let f = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: group or others can access it, and it holds a secret; run `chmod 600 {shown}`"
        ));
    }
    let too_long = |len: u64| format!("{shown} is {len} bytes; a secret file holds at most {max}");
    if meta.len() > max {
        return Err(too_long(meta.len()));
    }
    let mut b = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut b)
        .map_err(|e| format!("{shown}: {e}"))?;
    if b.len() as u64 > max {
        return Err(too_long(b.len() as u64));
    }
    Ok(b)
}

fn not_regular(path: &Path, t: std::fs::FileType) -> String {
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    format!("{} is not a regular file (it is {kind})", path.display())
}

/// Writes a secret file as [`load_secret`] and the engine accept it: mode
/// 600 from its creation, and set to 600 if it existed with another mode.
pub fn write_secret(path: &Path, secret: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(secret.as_ref())
}

/// A fresh challenge from the operating system's random source.
pub fn challenge() -> std::io::Result<[u8; 32]> {
    let mut c = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut c)?;
    Ok(c)
}

/// Our answer to `peer_challenge` as (cluster, id, role) on `side`.
pub fn answer(
    secret: &[u8],
    who: (u64, u32, u16),
    side: Side,
    peer_challenge: &[u8; 32],
    own_challenge: &[u8; 32],
) -> [u8; 32] {
    let me = Answerer {
        cluster_id: who.0,
        node_id: who.1,
        role: who.2,
        side,
    };
    auth::response(secret, &me, peer_challenge, own_challenge)
}

/// Whether the peer's HELLO `h` (on `side`) answers `own_challenge`.
pub fn verify(secret: &[u8], h: &HelloBody, side: Side, own_challenge: &[u8; 32]) -> bool {
    let them = Answerer {
        cluster_id: h.cluster_id.get(),
        node_id: h.node_id.get(),
        role: h.role.get(),
        side,
    };
    auth::verify(secret, &them, own_challenge, &h.challenge, &h.response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    /// A fresh directory for one test (tempfile's, removed when dropped).
    struct Dir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

    impl Dir {
        fn new(name: &str) -> Dir {
            let t = tempfile::Builder::new()
                .prefix(&format!("verity-client-auth-{name}-"))
                .tempdir()
                .unwrap();
            Dir(t.path().to_path_buf(), t)
        }

        /// `bytes` in `name` with exactly `mode` (not masked by the umask).
        fn file(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    const SECRET: &[u8] = b"client-secret-0123456789\n";

    #[test]
    fn a_secret_file_group_or_others_can_access_is_refused() {
        let d = Dir::new("modes");
        for (mode, octal) in [
            (0o640, "0640"),
            (0o644, "0644"),
            (0o602, "0602"),
            (0o606, "0606"),
        ] {
            let p = d.file("client.key", SECRET, mode);
            let e = load_secret(&p).unwrap_err();
            assert!(e.contains(&format!("mode {octal}")), "{e}");
            assert!(e.contains(&format!("chmod 600 {}", p.display())), "{e}");
        }
        for mode in [0o600, 0o400] {
            let p = d.file("client.key", SECRET, mode);
            assert_eq!(load_secret(&p).unwrap(), b"client-secret-0123456789");
        }
    }

    #[test]
    fn a_secret_that_is_not_a_regular_file_is_refused_quickly() {
        let d = Dir::new("kinds");
        let started = Instant::now();
        let e = load_secret(Path::new("/dev/zero")).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            e.contains("/dev/zero is not a regular file (it is a character device)"),
            "{e}"
        );
        let e = load_secret(&d.0).unwrap_err();
        assert!(e.contains("not a regular file (it is a directory)"), "{e}");
        let fifo = d.0.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let started = Instant::now();
        let e = load_secret(&fifo).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(e.contains("not a regular file (it is a FIFO)"), "{e}");
    }

    #[test]
    fn an_over_long_secret_file_is_refused_with_its_size() {
        let d = Dir::new("long");
        let p = d.file("client.key", &[b'k'; 5000], 0o600);
        let e = load_secret(&p).unwrap_err();
        assert!(
            e.contains("is 5000 bytes; a secret file holds at most 4096"),
            "{e}"
        );
        let p = d.file("client.key", &[b'k'; 4096], 0o600);
        assert_eq!(load_secret(&p).unwrap().len(), 4096);
        let p = d.file("client.key", b"short", 0o600);
        let e = load_secret(&p).unwrap_err();
        assert!(e.contains("at least 16 bytes"), "{e}");
    }

    #[test]
    fn write_secret_writes_a_file_load_secret_accepts() {
        let d = Dir::new("write");
        let p = d.0.join("cluster.secret");
        write_secret(&p, SECRET).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_secret(&p).unwrap(), b"client-secret-0123456789");
        // An existing file with a wider mode is narrowed and overwritten.
        let p = d.file("old.secret", b"x", 0o644);
        write_secret(&p, SECRET).unwrap();
        assert_eq!(load_secret(&p).unwrap(), b"client-secret-0123456789");
    }
}
