//! Finds the Git commit checked out in the config directory by reading
//! `.git` directly (no `git` process on every reload).

use std::path::{Path, PathBuf};

/// Largest Git metadata file read (`packed-refs` of a big repository is
/// the only one past a few bytes).
const MAX_GIT_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a Git metadata file with the guarded read every file named by the
/// configuration's location gets: the ancestors searched for `.git` reach
/// shared directories like `/tmp`, where anyone can leave a FIFO named
/// `.git` that a plain read would block every reload on.
fn read(path: &Path) -> Option<String> {
    let bytes = crate::fsread::read_bounded(path, MAX_GIT_FILE_BYTES).ok()?;
    String::from_utf8(bytes).ok()
}

/// The commit `HEAD` points at in the work tree containing `dir`, if any.
pub fn head_commit(dir: &Path) -> Option<String> {
    let start = std::fs::canonicalize(dir).ok()?;
    let git_dir = start.ancestors().find_map(git_dir_of)?;
    let head = read(&git_dir.join("HEAD"))?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return is_hash(head).then(|| head.to_owned());
    };
    // Linked work trees keep refs in the common directory.
    let common = match read(&git_dir.join("commondir")) {
        Some(rel) => git_dir.join(rel.trim()),
        None => git_dir.clone(),
    };
    for base in [&git_dir, &common] {
        if let Some(text) = read(&base.join(reference)) {
            let hash = text.trim();
            if is_hash(hash) {
                return Some(hash.to_owned());
            }
        }
    }
    let packed = read(&common.join("packed-refs"))?;
    packed.lines().find_map(|line| {
        let (hash, name) = line.split_once(' ')?;
        (name == reference && is_hash(hash)).then(|| hash.to_owned())
    })
}

fn git_dir_of(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let text = read(&dot_git)?;
    let target = text.trim().strip_prefix("gitdir: ")?;
    Some(dir.join(target))
}

fn is_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loose_and_packed_refs_and_detached_head() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        let sub = dir.path().join("connections");
        std::fs::create_dir(&sub).unwrap();
        let a = "a".repeat(40);
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(git.join("refs/heads/main"), format!("{a}\n")).unwrap();
        assert_eq!(head_commit(&sub).as_deref(), Some(a.as_str()));

        let b = "b".repeat(40);
        std::fs::remove_file(git.join("refs/heads/main")).unwrap();
        std::fs::write(
            git.join("packed-refs"),
            format!("# pack-refs\n{b} refs/heads/main\n"),
        )
        .unwrap();
        assert_eq!(head_commit(&sub).as_deref(), Some(b.as_str()));

        let c = "c".repeat(40);
        std::fs::write(git.join("HEAD"), format!("{c}\n")).unwrap();
        assert_eq!(head_commit(&sub).as_deref(), Some(c.as_str()));
    }

    #[test]
    fn a_fifo_named_dot_git_above_the_config_dir_is_skipped_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mkfifo")
            .arg(dir.path().join(".git"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let sub = dir.path().join("conf");
        std::fs::create_dir(&sub).unwrap();
        // No writer ever opens the FIFO: a blocking read would hang here.
        assert_eq!(head_commit(&sub), None);
    }
}
