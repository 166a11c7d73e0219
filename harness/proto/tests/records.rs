//! What mutation testing found unguarded in proto's records. These live
//! outside the crate's own sources on purpose: any edit to proto's
//! sources, tests included, changes the guest probe's binary (rustc's
//! crate hash covers every source file) and so every fixture's cache key.

use airboot_proto::probe::UnitInfo;
use airboot_proto::time::rfc3339;
use airboot_proto::{UnitRecord, json_strings, status_text};

/// Century years are leap years only every 400 years.
#[test]
fn rfc3339_knows_century_leap_years() {
    assert_eq!(rfc3339(4_107_542_400, 0), "2100-03-01T00:00:00.000000000Z");
    assert_eq!(rfc3339(-2_203_891_200, 0), "1900-03-01T00:00:00.000000000Z");
    assert_eq!(rfc3339(13_574_563_200, 0), "2400-02-29T00:00:00.000000000Z");
}

/// The checksum covers the line from the marker on, not what came before it.
#[test]
fn the_status_text_starts_at_the_marker() {
    let l = r#"[   12.0] audit: type=1400 AIRBOOT-STATUS v1 unit {"name":"a.service","state":"active"}"#;
    assert_eq!(status_text(l), Some(&l[l.find("AIRBOOT").unwrap()..]));
    assert_eq!(status_text("no marker here"), None);
}

#[test]
fn json_strings_takes_the_strings_of_an_array_only() {
    let v = serde_json::json!({"rootfs": {"diff_ids": ["sha256:a", 7, "sha256:b", null]}});
    assert_eq!(json_strings(&v["rootfs"]["diff_ids"]), ["sha256:a", "sha256:b"]);
    assert!(json_strings(&v["rootfs"]).is_empty(), "an object is no list");
    assert!(json_strings(&v["missing"]).is_empty());
}

/// A unit as the status block carries it: its state (`skipped` when not
/// installed), and its error only when there is one.
#[test]
fn unit_records_keep_an_error_only_when_there_is_one() {
    let u =
        UnitInfo { name: "docker.service".into(), active: "failed".into(), error: "boom".into(), ..Default::default() };
    let r = UnitRecord::from(&u);
    assert_eq!((r.name.as_str(), r.state.as_str(), r.error.as_deref()), ("docker.service", "failed", Some("boom")));
    let ok = UnitInfo { active: "active".into(), error: String::new(), ..u };
    assert_eq!(UnitRecord::from(&ok).error, None);
    let skipped = UnitInfo { skipped: true, ..ok };
    assert_eq!(UnitRecord::from(&skipped).state, "skipped");
}
