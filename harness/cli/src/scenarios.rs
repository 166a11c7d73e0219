//! Finding, parsing and cross-checking scenario files before anything boots.

use std::path::{Path, PathBuf};

use airboot_core::scenario::{self, ImageSource, Scenario, ScenarioError};

/// The built-in default scenario, used by `airboot run` with no arguments.
pub const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/preseeded-x86_64.toml");
pub const DEFAULT_NAME: &str = "<built-in>/preseeded-x86_64.toml";

/// Expand folders into their `*.toml` files (sorted); keep files as given.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(format!("{}: no *.toml scenario files in this folder", p.display()));
            }
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such scenario file or folder", p.display()));
        }
    }
    Ok(out)
}

/// Parse one scenario and check what the core parser cannot know: that a
/// fixture exists and matches the machine's architecture.
pub fn load(src: &str, file: &Path) -> Result<Scenario, ScenarioError> {
    let s = scenario::parse(src, file, &|p| p.is_file())?;
    if let ImageSource::Fixture(name) = &s.image.source {
        let at = |key: &str| {
            let re = regex_lite_find(src, key);
            let (line, column) = re.map(|o| scenario::line_col(src, o)).unzip();
            (line, column)
        };
        // The architecture is checked against the image itself when the
        // scenario runs (before QEMU starts), with the evidence.
        if airboot_images::find(name).is_none() {
            let (line, column) = at("fixture");
            let known: Vec<&str> = airboot_images::catalog().iter().map(|f| f.name).collect();
            return Err(ScenarioError {
                file: file.display().to_string(),
                line,
                column,
                key: Some("image.fixture".into()),
                message: format!("unknown fixture {name:?}; known fixtures: {}", known.join(", ")),
            });
        }
    }
    Ok(s)
}

/// Byte offset of `key =` at the start of a line.
fn regex_lite_find(src: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    None
}

/// Load every scenario named by `paths` (or the default), all or nothing.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Scenario>, Vec<String>> {
    if paths.is_empty() {
        return load(DEFAULT_SCENARIO, Path::new(DEFAULT_NAME)).map(|s| vec![s]).map_err(|e| vec![e.to_string()]);
    }
    let files = expand(paths).map_err(|e| vec![e])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Err(e) => errors.push(format!("{}: cannot read: {e}", f.display())),
            Ok(src) => match load(&src, &f) {
                Ok(s) => out.push(s),
                Err(e) => errors.push(e.to_string()),
            },
        }
    }
    let mut names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    for w in names.windows(2) {
        if w[0] == w[1] {
            errors.push(format!(
                "two scenarios are named {:?}: names must be unique in one run (they name report folders)",
                w[0]
            ));
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// `airboot check`.
pub fn check(paths: &[PathBuf]) -> i32 {
    match load_all(paths) {
        Ok(list) => {
            for s in &list {
                println!("ok  {}  ({})", s.name, s.file.display());
            }
            0
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_is_valid() {
        let s = load(DEFAULT_SCENARIO, Path::new(DEFAULT_NAME)).unwrap();
        assert_eq!(s.name, "preseeded-x86_64");
    }

    #[test]
    fn every_shipped_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        let all = load_all(&[dir]).unwrap();
        assert!(all.len() >= 3);
    }

    #[test]
    fn unknown_fixture_is_located_and_arch_is_left_to_the_image() {
        let e = load("[image]\nfixture = \"nope\"\n", Path::new("s.toml")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("image.fixture")));
        assert!(e.message.contains("debian-preseeded-x86_64"));
        // A contradicting arch is judged against the image itself at run
        // time (with the evidence), not against the catalog here.
        let s = load(
            "[image]\nfixture = \"debian-preseeded-x86_64\"\n[machine]\narch = \"aarch64\"\n",
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(s.machine.arch, Some(airboot_model::Arch::Aarch64));
    }

    #[test]
    fn folders_expand_and_missing_paths_are_named() {
        let e = expand(&[PathBuf::from("/nonexistent/x.toml")]).unwrap_err();
        assert!(e.contains("/nonexistent/x.toml"));
    }
}
