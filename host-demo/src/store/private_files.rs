//! Files that hold mail or secrets are readable by their owner only (mode 0600): the message
//! database with its `-wal` and `-shm` files and the segment files of its `-raw` folder (0700),
//! and the `.eml` files of `fetch --out`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::HostError;

/// Creates `dir` and its missing parents with mode 0700 (existing folders are left as they are).
pub fn create_dir(dir: &Path) -> Result<(), HostError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| HostError::Storage(format!("cannot create {}: {e}", dir.display())))
}

/// Creates or truncates `path` for writing, with mode 0600 whatever the umask or an older
/// file's mode.
pub fn create_file(path: &Path) -> Result<fs::File, HostError> {
    let err = |e: std::io::Error| HostError::Storage(format!("cannot write {}: {e}", path.display()));
    let f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(err)?;
    f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(f)
}

/// Makes the database at `path` private before SQLite opens it: a new database file is created
/// empty with mode 0600 (SQLite gives its `-wal` and `-shm` files the database file's mode);
/// an existing database, WAL or SHM file that others may read is tightened to 0600, and when
/// that is not possible (another user owns it) the database is refused with what to do.
pub fn secure_database(path: &Path) -> Result<(), HostError> {
    match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| refused(path, 0o600, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(HostError::Storage(format!("cannot create the database {}: {e}", path.display()))),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = fs::metadata(&p) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o700)).map_err(|e| refused(&p, mode, e))?;
        }
    }
    // The folder of the messages' raw bytes (`db::raw_folder`) and its segment files likewise.
    let raw = crate::db::raw_folder(path);
    if let Ok(meta) = fs::symlink_metadata(&raw) {
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() && mode & 0o077 != 0 {
            fs::set_permissions(&raw, fs::Permissions::from_mode(0o700)).map_err(|e| refused(&raw, mode, e))?;
        }
        for entry in fs::read_dir(&raw).into_iter().flatten().flatten() {
            let p = entry.path();
            let Ok(meta) = fs::symlink_metadata(&p) else { continue };
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_file() && mode & 0o077 != 0 {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o700)).map_err(|e| refused(&p, mode, e))?;
            }
        }
    }
    Ok(())
}

fn refused(path: &Path, mode: u32, e: std::io::Error) -> HostError {
    HostError::Storage(format!(
        "the database file {p} may be read by other users (mode {mode:04o}) and cannot be made private ({e}): \
         as its owner run `chmod 600 {p}*`, or move it to a folder of this user \
         / die Datenbankdatei {p} ist für andere Benutzer lesbar (Modus {mode:04o}) und lässt sich nicht schützen: \
         als Eigentümer `chmod 600 {p}*` ausführen oder sie in einen Ordner dieses Benutzers verschieben",
        p = path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_wide_files_end_up_0600() {
        let tmp = tempfile::Builder::new().prefix("mailplug-private-").tempdir().unwrap();
        let dir = tmp.path();
        create_dir(&dir.join("a/b")).unwrap();
        assert_eq!(fs::metadata(dir.join("a/b")).unwrap().permissions().mode() & 0o777, 0o700);
        let db = dir.join("a/b/m.sqlite3");
        secure_database(&db).unwrap();
        assert_eq!(fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join("a/b/m.sqlite3-wal"), b"").unwrap();
        fs::set_permissions(dir.join("a/b/m.sqlite3-wal"), fs::Permissions::from_mode(0o666)).unwrap();
        let raw = crate::db::raw_folder(&db);
        fs::create_dir(&raw).unwrap();
        fs::set_permissions(&raw, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(raw.join("000001.seg"), b"").unwrap();
        fs::set_permissions(raw.join("000001.seg"), fs::Permissions::from_mode(0o644)).unwrap();
        secure_database(&db).unwrap();
        for f in ["m.sqlite3", "m.sqlite3-wal", "m.sqlite3-raw/000001.seg"] {
            assert_eq!(fs::metadata(dir.join("a/b").join(f)).unwrap().permissions().mode() & 0o777, 0o600, "{f}");
        }
        assert_eq!(fs::metadata(&raw).unwrap().permissions().mode() & 0o777, 0o700);
        let eml = dir.join("x.eml");
        fs::write(&eml, b"old").unwrap();
        fs::set_permissions(&eml, fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_file(&eml).unwrap());
        assert_eq!(fs::metadata(&eml).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
