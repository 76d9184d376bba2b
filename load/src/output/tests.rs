use super::*;

/// A fresh directory of this test's own under the system's temporary directory.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("boxoffice-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn paths_that_cannot_be_written_are_refused_naming_them() {
    let dir = scratch("unwritable");
    let err = check_writable(Some(&dir.join("missing/r.html")), None).unwrap_err();
    assert!(err.starts_with("cannot write the report "), "{err}");
    assert!(err.contains("missing/r.html"), "{err}");
    // A file where the directory should be.
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = check_writable(None, Some(&file)).unwrap_err();
    assert!(
        err.starts_with("cannot create the charts' directory "),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writable_paths_pass_and_are_left_as_they_were() {
    let dir = scratch("writable");
    let report = dir.join("r.html");
    let charts = dir.join("charts");
    check_writable(Some(&report), Some(&charts)).unwrap();
    assert!(!report.exists());
    assert_eq!(std::fs::read_dir(&charts).unwrap().count(), 0);
    // An existing report is kept until the run overwrites it.
    std::fs::write(&report, "before").unwrap();
    check_writable(Some(&report), None).unwrap();
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "before");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_report_and_the_charts_directory_at_one_path_are_refused_naming_both() {
    // Each alone could be written there, so the check passed them, and the run failed only
    // after the load, writing the second.
    let dir = scratch("same-path");
    let path = dir.join("out");
    let dotted = dir.join(".").join("out");
    for (report, charts) in [(&path, &path), (&path, &dotted)] {
        let err = check_writable(Some(report), Some(charts)).unwrap_err();
        assert!(err.starts_with("--report and --charts-dir"), "{err}");
        assert!(err.contains("out"), "{err}");
    }
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
