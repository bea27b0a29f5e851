//! Files only their owner can read. A trace holds kernel addresses, task
//! names and the command line of the recorder: every file the tool writes
//! (traces, rotated segments, exports) is created with mode 0600, so there
//! is no moment when another user could open it, whatever the umask.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file the tool creates.
pub const PRIVATE_MODE: u32 = 0o600;

/// Creates `path` with mode 0600, or empties an existing one after
/// restricting it to 0600: the mode is changed before the old contents are
/// dropped, so a file that cannot be made private keeps them rather than
/// being replaced by a readable capture. Devices and pipes (`-o
/// /dev/stdout`) are written as they are; their modes are not the tool's
/// to change.
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_MODE)
        .open(path)?;
    if file.metadata()?.is_file() {
        file.set_permissions(Permissions::from_mode(PRIVATE_MODE))?;
        file.set_len(0)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn new_and_existing_files_end_up_0600_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        drop(create_private(&p).unwrap());
        assert_eq!(mode(&p), 0o600);

        std::fs::write(&p, b"old contents").unwrap();
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        let f = create_private(&p).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn a_device_is_written_without_touching_its_mode() {
        let before = mode(Path::new("/dev/null"));
        drop(create_private(Path::new("/dev/null")).unwrap());
        assert_eq!(mode(Path::new("/dev/null")), before);
    }
}
