//! Default dump names: `<comm>_<pid>_<YYYYMMDD_HHMMSS>.<ext>`, with `_1`, `_2`, ... added when
//! a file of that name exists, so no dump ever replaces another.

use std::path::{Path, PathBuf};

/// The name part made safe for a file name: path separators, control characters and spaces
/// become `_`.
pub fn sanitize(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    let clean: String = text
        .chars()
        .map(|c| {
            if c == '/' || c.is_control() || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean.is_empty() || clean == "." || clean == ".." {
        "process".to_owned()
    } else {
        clean
    }
}

/// `<comm>_<pid>_<YYYYMMDD_HHMMSS>` in local time, without extension.
pub fn default_stem(comm: &[u8], pid: i32, when: std::time::SystemTime) -> String {
    let local: chrono::DateTime<chrono::Local> = when.into();
    format!(
        "{}_{}_{}",
        sanitize(comm),
        pid,
        local.format("%Y%m%d_%H%M%S")
    )
}

/// `dir/stem.ext`, or `dir/stem_N.ext` for the first N that names no existing file (nor a
/// partial one being written).
pub fn unique_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let taken = |p: &Path| {
        let mut partial = p.as_os_str().to_owned();
        partial.push(".partial");
        p.symlink_metadata().is_ok() || Path::new(&partial).symlink_metadata().is_ok()
    };
    let first = dir.join(format!("{stem}.{ext}"));
    if !taken(&first) {
        return first;
    }
    (1u64..)
        .map(|n| dir.join(format!("{stem}_{n}.{ext}")))
        .find(|p| !taken(p))
        .expect("an unused name exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_unique() {
        assert_eq!(sanitize(b"a/b c\n\xff"), "a_b_c_\u{fffd}");
        assert_eq!(sanitize(b".."), "process");
        let dir = std::env::temp_dir().join(format!("snapdump-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = unique_path(&dir, "x_1_20260101_000000", "core");
        assert_eq!(first.file_name().unwrap(), "x_1_20260101_000000.core");
        std::fs::write(&first, b"").unwrap();
        let second = unique_path(&dir, "x_1_20260101_000000", "core");
        assert_eq!(second.file_name().unwrap(), "x_1_20260101_000000_1.core");
        std::fs::write(dir.join("x_1_20260101_000000_1.core.partial"), b"").unwrap();
        let third = unique_path(&dir, "x_1_20260101_000000", "core");
        assert_eq!(third.file_name().unwrap(), "x_1_20260101_000000_2.core");
        std::fs::remove_dir_all(dir).unwrap();
        let stem = default_stem(b"my prog", 42, std::time::SystemTime::now());
        assert!(stem.starts_with("my_prog_42_2"), "{stem}");
        assert_eq!(stem.len(), "my_prog_42_".len() + 15);
    }
}
