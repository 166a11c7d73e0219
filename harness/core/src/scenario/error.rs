//! Where in a scenario file something is wrong: line, column and the
//! dotted key, for messages that point at the mistake.

use std::ops::Range;

/// Where in a scenario file something is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", file, pos(*.line, *.column), key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

fn pos(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key a byte offset of a TOML document belongs to, e.g.
/// `expect.containers.healthy` for a value inside an inline table of an
/// array. Best effort: used only to make error messages precise.
pub fn key_path(src: &str, offset: usize) -> Option<String> {
    let b = src.as_bytes();
    let at = offset.min(b.len());
    let mut header: Vec<String> = Vec::new();
    // Open brackets, each with the key whose value it starts.
    let mut stack: Vec<(Option<Vec<String>>, u8)> = Vec::new();
    let mut expecting_key = true;
    let mut current: Option<Vec<String>> = None;
    let mut i = 0;
    while i < b.len() && i <= at {
        let start = i;
        let c = b[i];
        match c {
            b'\n' => {
                if stack.is_empty() {
                    expecting_key = true;
                    current = None;
                }
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'[' if expecting_key && stack.is_empty() => {
                let line_end = src[i..].find('\n').map(|n| i + n).unwrap_or(b.len());
                let text = src[i..line_end].split('#').next().unwrap_or("");
                let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
                header = split_dotted(inner);
                if line_end > at {
                    return Some(header.join("."));
                }
                i = line_end;
            }
            b'[' | b'{' => {
                stack.push((current.take(), c));
                expecting_key = c == b'{';
                i += 1;
            }
            b']' | b'}' => {
                if let Some((k, _)) = stack.pop() {
                    current = k;
                }
                expecting_key = false;
                i += 1;
            }
            b',' => {
                if let Some((_, b'{')) = stack.last() {
                    expecting_key = true;
                    current = None;
                }
                i += 1;
            }
            b'=' => {
                expecting_key = false;
                i += 1;
            }
            b'"' | b'\'' => {
                i = skip_string(b, i);
                if expecting_key {
                    current = Some(split_dotted(&src[start..i]));
                }
            }
            _ => {
                while i < b.len() && !b" \t\r\n=,]}[{#".contains(&b[i]) {
                    i += 1;
                }
                if i == start {
                    i += 1;
                }
                if expecting_key {
                    current = Some(split_dotted(&src[start..i]));
                }
            }
        }
    }
    let mut path = header;
    for (k, _) in &stack {
        if let Some(k) = k {
            path.extend(k.iter().cloned());
        }
    }
    if let Some(k) = current {
        path.extend(k);
    }
    (!path.is_empty()).then(|| path.join("."))
}

fn split_dotted(s: &str) -> Vec<String> {
    s.split('.').map(|p| p.trim().trim_matches('"').trim_matches('\'').to_string()).filter(|p| !p.is_empty()).collect()
}

fn skip_string(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let triple = b.len() >= start + 3 && b[start + 1] == q && b[start + 2] == q;
    let mut i = start + if triple { 3 } else { 1 };
    while i < b.len() {
        if q == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if !triple {
                return i + 1;
            }
            if b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q {
                return i + 3;
            }
        }
        if !triple && b[i] == b'\n' {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// What every section's validation needs: the text (for positions), the
/// file's name and folder, and how to tell whether a named file exists.
pub(super) struct Ctx<'a> {
    pub src: &'a str,
    pub file: &'a std::path::Path,
    pub file_name: String,
    pub files: &'a dyn Fn(&std::path::Path) -> bool,
}

impl Ctx<'_> {
    /// An error at `span` (its line, column and, unless `key` says, the
    /// key found there).
    pub fn err(&self, span: Option<Range<usize>>, key: Option<String>, message: String) -> ScenarioError {
        let (line, column, found_key) = match span {
            Some(span) => {
                let (l, c) = line_col(self.src, span.start);
                (Some(l), Some(c), key_path(self.src, span.start))
            }
            None => (None, None, None),
        };
        ScenarioError { file: self.file_name.clone(), line, column, key: key.or(found_key), message }
    }

    /// A path from the file, relative to the scenario's folder.
    pub fn resolve(&self, p: &str) -> std::path::PathBuf {
        let p = std::path::Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { self.file.parent().unwrap_or(std::path::Path::new("")).join(p) }
    }
}
