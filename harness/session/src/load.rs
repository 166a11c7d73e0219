//! Finding, reading and cross-checking scenario files before anything
//! boots: folders expand to their `*.toml` files, every named file must
//! exist, a fixture must be one airboot knows, names must be unique.

use std::path::{Path, PathBuf};

use airboot_core::scenario::{self, ImageSource, Scenario, ScenarioError};

/// The built-in default scenario, used by `airboot run` with no arguments.
pub const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/preseeded-x86_64.toml");
pub const DEFAULT_NAME: &str = "<built-in>/preseeded-x86_64.toml";

/// Scenario files that cannot be used, each problem on its own line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct LoadError {
    pub problems: Vec<String>,
}

impl LoadError {
    fn one(p: impl Into<String>) -> LoadError {
        LoadError { problems: vec![p.into()] }
    }
}

/// Expand folders into their `*.toml` files (sorted); keep files as given.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| LoadError::one(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(LoadError::one(format!("{}: no *.toml scenario files in this folder", p.display())));
            }
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(LoadError::one(format!("{}: no such scenario file or folder", p.display())));
        }
    }
    Ok(out)
}

/// Parse one scenario, checking the files it names exist, and what the
/// core parser cannot know: that a fixture is one airboot can build.
pub fn load(src: &str, file: &Path) -> Result<Scenario, ScenarioError> {
    let s = scenario::parse(src, file, &|p| p.is_file())?;
    // The architecture is checked against the image itself when the
    // scenario runs (before QEMU starts), with the evidence.
    if let ImageSource::Fixture(name) = &s.image.source
        && airboot_images::find(name).is_none()
    {
        let (line, column) = key_line(src, "fixture").map(|o| scenario::line_col(src, o)).unzip();
        let known: Vec<&str> = airboot_images::catalog().iter().map(|f| f.name).collect();
        return Err(ScenarioError {
            file: file.display().to_string(),
            line,
            column,
            key: Some("image.fixture".into()),
            message: format!("unknown fixture {name:?}; known fixtures: {}", known.join(", ")),
        });
    }
    Ok(s)
}

/// Byte offset of `key =` at the start of a line.
fn key_line(src: &str, key: &str) -> Option<usize> {
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
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Scenario>, LoadError> {
    if paths.is_empty() {
        return load(DEFAULT_SCENARIO, Path::new(DEFAULT_NAME))
            .map(|s| vec![s])
            .map_err(|e| LoadError::one(e.to_string()));
    }
    let files = expand(paths)?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Err(e) => problems.push(format!("{}: cannot read: {e}", f.display())),
            Ok(src) => match load(&src, &f) {
                Ok(s) => out.push(s),
                Err(e) => problems.push(e.to_string()),
            },
        }
    }
    let mut names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    for w in names.windows(2) {
        if w[0] == w[1] {
            problems.push(format!(
                "two scenarios are named {:?}: names must be unique in one run (they name report folders)",
                w[0]
            ));
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(LoadError { problems }) }
}

/// Exactly one scenario from one file.
pub fn load_one(path: &Path) -> Result<Scenario, LoadError> {
    let mut l = load_all(&[path.to_path_buf()])?;
    match l.len() {
        1 => Ok(l.remove(0)),
        n => Err(LoadError::one(format!("{} holds {n} scenarios: give one scenario file", path.display()))),
    }
}

/// The name tests and filters use for a scenario: `<arch>::<name>`.
pub fn test_name(s: &Scenario) -> String {
    let fixture_arch = match &s.image.source {
        ImageSource::Fixture(f) => airboot_images::find(f).map(|d| d.arch),
        ImageSource::Path(_) => None,
    };
    s.test_name(fixture_arch)
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
        assert!(e.to_string().contains("/nonexistent/x.toml"));
        let tmp = tempfile::tempdir().unwrap();
        let e = expand(&[tmp.path().to_path_buf()]).unwrap_err();
        assert!(e.to_string().contains("no *.toml scenario files"), "{e}");
        for n in ["b.toml", "a.toml", "notes.txt"] {
            std::fs::write(tmp.path().join(n), "[image]\nfixture = \"debian-preseeded-x86_64\"\n").unwrap();
        }
        let files = expand(&[tmp.path().to_path_buf()]).unwrap();
        assert_eq!(files, [tmp.path().join("a.toml"), tmp.path().join("b.toml")]);
        // Two files may not give two scenarios the same name.
        std::fs::write(tmp.path().join("b.toml"), "name = \"a\"\n[image]\nfixture = \"debian-preseeded-x86_64\"\n")
            .unwrap();
        let e = load_all(&[tmp.path().to_path_buf()]).unwrap_err();
        assert!(e.to_string().contains("two scenarios are named \"a\""), "{e}");
    }
}
