//! Windows paths stored in images (parent locators) and given by users who name a parent as
//! the hypervisor will see it (`-B 'C:\VMs\base.vhdx'`).

/// `C:\dir\file`, `C:/dir/file` or `\\server\share\file` (and `\\?\...`).
pub fn is_absolute(name: &str) -> bool {
    let b = name.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'\\' | b'/'))
        || name.starts_with("\\\\")
}

/// The last component of a Windows path, if it is a plain file name.
pub fn file_name(path: &str) -> Option<&str> {
    path.rsplit(['\\', '/'])
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_and_unc_paths_are_absolute_relative_ones_are_not() {
        assert!(is_absolute(r"C:\VMs\base.vhdx"));
        assert!(is_absolute("d:/x.vhdx"));
        assert!(is_absolute(r"\\server\share\x.vhdx"));
        assert!(!is_absolute(r".\x.vhdx"));
        assert!(!is_absolute("x.vhdx"));
        assert!(!is_absolute("/srv/x.vhdx"));
        assert_eq!(file_name(r"C:\VMs\base.vhdx"), Some("base.vhdx"));
        assert_eq!(file_name(r"C:\VMs\"), None);
    }
}
