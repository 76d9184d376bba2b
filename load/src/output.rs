//! The files a run writes besides its printed report: the HTML page (`--report`) and the
//! charts (`--charts-dir`), and the check, before the run, that they can be written.

use std::fs::OpenOptions;
use std::path::Path;

use crate::{Report, charts, html};

/// Writes the HTML report ([`html`]) to `path`.
pub fn write_report(report: &Report, path: &Path) -> Result<(), String> {
    std::fs::write(path, html(report)).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes each chart of the HTML report ([`charts`]) to `{dir}/{name}.svg`.
pub fn write_charts(report: &Report, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for chart in charts(report) {
        let path = dir.join(format!("{}.svg", chart.name));
        std::fs::write(&path, chart.svg).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Whether the report file and the charts' directory can be written, checked before the run
/// so that a wrong path costs no load: the report is opened for writing (an existing one is
/// left as it is, a new one removed again), the directory created and a file made in it and
/// removed. The two at one path are refused: each alone passes, and the second would fail
/// only after the load.
///
/// # Errors
/// A message naming the path and why it cannot be written.
pub fn check_writable(report: Option<&Path>, charts_dir: Option<&Path>) -> Result<(), String> {
    if let (Some(file), Some(dir)) = (report, charts_dir) {
        // Compared absolute, so that `out` and `./out` are one path too.
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        if absolute(file) == absolute(dir) {
            return Err(format!(
                "--report and --charts-dir name the same path, {}: the report is a file, the \
                 charts a directory of files; give them different paths",
                file.display()
            ));
        }
    }
    if let Some(path) = report {
        let existed = path.exists();
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("cannot write the report {}: {e}", path.display()))?;
        if !existed {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some(dir) = charts_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the charts' directory {}: {e}", dir.display()))?;
        let probe = dir.join(format!(".boxoffice-load-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| {
                format!(
                    "cannot write in the charts' directory {}: {e}",
                    dir.display()
                )
            })?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
