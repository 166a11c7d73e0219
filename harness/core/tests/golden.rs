//! The report schema is a promise to scripts: `report.json`, `run.json`
//! and the timing history keep their field names, nesting and value
//! spellings within a schema version (fields may only be added). Each
//! golden file under `golden/` holds every field, filled; it must come
//! back unchanged from a round trip through today's types. A renamed
//! field, an enum spelt differently (`"Tcg"` for `"tcg"`), a field made
//! required or dropped fails here. Adding a field means adding it to
//! the golden file: the diff then shows an addition, nothing else.

use std::path::Path;

use airboot_core::history::HistoryEntry;
use airboot_core::report::{Report, RunIndex};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn golden(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Parse `text` as `T`, write it again, and compare the two as JSON.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str, text: &str) {
    let typed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} no longer parses: {e}"));
    let again = serde_json::to_value(&typed).unwrap();
    let want: Value = serde_json::from_str(text).unwrap();
    if again != want {
        let mut diffs = Vec::new();
        diff("", &want, &again, &mut diffs);
        panic!("{name}: the schema changed:\n{}", diffs.join("\n"));
    }
}

/// Where two JSON values differ, as `path: golden → now` lines.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("{path}.{k}: dropped")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}: new field (add it to the golden file if intended)"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} → {b}")),
        _ => {}
    }
}

#[test]
fn report_json_keeps_its_schema() {
    round_trip::<Report>("report.json", &golden("report.json"));
}

#[test]
fn run_json_keeps_its_schema() {
    round_trip::<RunIndex>("run.json", &golden("run.json"));
}

#[test]
fn history_lines_keep_their_schema() {
    for line in golden("history.jsonl").lines() {
        round_trip::<HistoryEntry>("history.jsonl", line);
    }
}

#[test]
fn the_golden_report_holds_every_field() {
    // A field left out of the golden file would not be guarded: every
    // top-level field of a fresh report must be in it.
    let fresh = serde_json::to_value(Report::new("s", "s.toml", "t".into())).unwrap();
    let golden: Value = serde_json::from_str(&golden("report.json")).unwrap();
    for k in fresh.as_object().unwrap().keys() {
        if k != "power_cuts" {
            assert!(golden.get(k).is_some(), "golden report.json lacks {k}");
        }
    }
    assert!(golden["power_cuts"].as_array().is_some_and(|c| c.len() == 2), "the golden keeps two cuts");
}
