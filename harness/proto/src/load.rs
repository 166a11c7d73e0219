//! Load progress events (console protocol, version 1): the probe watches
//! an engine load archives into its store and prints one console line per
//! step, so the harness can place a power cut at "layer N of image X is
//! being loaded" (`[power_cut] load`/`layer`).
//!
//! On `podman load` (the same events, another store): podman reads the
//! archive itself (the probe reads its `manifest.json` and configs from
//! the tar), and writes each layer into containers-storage in turn: the
//! layer is recorded in `overlay-layers/layers.json` flagged `incomplete`
//! while its files are written, and the flag is dropped when it is done.
//! A layer's ID there is its diff_id for the first layer, else
//! sha256("<parent ID>+<diff_id hex>") ([`podman_layer_ids`]).
//!
//! What Docker does on `docker load` (the daemon side, whatever the
//! client): it unpacks the archive into `<data-root>/tmp/docker-import-*/`,
//! reads its `manifest.json`, then for each image in order registers each
//! layer in turn: a transaction folder `image/overlay2/layerdb/tmp/write-set-*`
//! exists while the layer is unpacked into the store, and is renamed to
//! `image/overlay2/layerdb/sha256/<chain id>` when it is done. A layer
//! already in the store is skipped. Only then is the image tagged.
//!
//! ```text
//! AIRBOOT-EVENT v1 layer-load layer=2/3 state=loading image=fixture/redis:1 id=sha256:e983… archive=fixture-redis-1.tar diff_id=sha256:…
//! AIRBOOT-EVENT v1 image-loaded layers=3 image=fixture/redis:1 id=sha256:e983… archive=fixture-redis-1.tar
//! ```
//!
//! `image` is the archive's first tag for the image (`RepoTags`), else its
//! image ID; `id` is the image ID (the config's digest); `archive` is the
//! file the loading `docker load` reads (`-i FILE` or its standard input),
//! when the probe can tell. Values hold no spaces.
//!
//! `state=loading`: the probe saw the layer's registration under way (its
//! chain id absent, a registration open, every earlier layer of the image
//! present). `state=present`: the layer was in the store when the probe
//! first looked at it (already there, or registered between two looks);
//! a power cut placed by the event only fires on `loading`.

use std::collections::BTreeSet;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The marker every event line carries.
pub const EVENT_MARKER: &str = "AIRBOOT-EVENT";

/// Docker's chain IDs: the first layer's is its diff_id, each next one is
/// sha256("<parent chain id> <diff_id>").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => {
                let digest = Sha256::digest(format!("{p} {d}").as_bytes());
                format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
        };
        out.push(next);
    }
    out
}

/// Podman's (containers-storage's) layer IDs, hex: the first layer's is
/// its diff_id's hex, each next one is sha256("<parent ID>+<diff_id hex>").
pub fn podman_layer_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let hex = d.trim_start_matches("sha256:");
        let next = match out.last() {
            None => hex.to_string(),
            Some(parent) => {
                Sha256::digest(format!("{parent}+{hex}").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        out.push(next);
    }
    out
}

/// One image of an archive being loaded: its name (first tag, else its
/// image ID), its image ID when the config file is named by its digest,
/// the archive's file name when known, and its layers' diff_ids in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadImage {
    pub name: String,
    pub id: Option<String>,
    pub archive: Option<String>,
    pub diff_ids: Vec<String>,
}

/// The image ID from the config's path in an archive: `<hex>.json`
/// (`docker save`) or `blobs/sha256/<hex>` (OCI layout).
fn config_id(path: &str) -> Option<String> {
    let last = path.rsplit('/').next()?;
    let hex = last.strip_suffix(".json").unwrap_or(last);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// A value as an event line carries it (no spaces).
fn word(s: &str) -> String {
    s.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect()
}

#[derive(Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ConfigRootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: ConfigRootFs,
}

/// The images of an unpacked archive, from its `manifest.json` text and a
/// reader of the files it names. `None` while the archive is still being
/// unpacked (a file missing or not yet whole).
pub fn archive_images(manifest: &str, read: &dyn Fn(&str) -> Option<String>) -> Option<Vec<LoadImage>> {
    let entries: Vec<ManifestEntry> = serde_json::from_str(manifest).ok()?;
    let mut out = Vec::new();
    for e in entries {
        let config: ImageConfig = serde_json::from_str(&read(&e.config)?).ok()?;
        let id = config_id(&e.config);
        let name = e.repo_tags.and_then(|t| t.into_iter().next()).or(id.clone()).unwrap_or(e.config);
        out.push(LoadImage { name: word(&name), id, archive: None, diff_ids: config.rootfs.diff_ids });
    }
    Some(out)
}

/// Which image an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Who {
    pub image: String,
    pub id: Option<String>,
    pub archive: Option<String>,
}

impl Who {
    fn of(img: &LoadImage) -> Who {
        Who { image: img.name.clone(), id: img.id.clone(), archive: img.archive.clone() }
    }

    fn words(&self) -> String {
        let mut out = format!("image={}", word(&self.image));
        if let Some(id) = &self.id {
            out.push_str(&format!(" id={}", word(id)));
        }
        if let Some(a) = &self.archive {
            out.push_str(&format!(" archive={}", word(a)));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadEvent {
    /// Layer `layer` (from 1) of `layers` of an image.
    Layer { who: Who, layer: usize, layers: usize, loading: bool, diff_id: String },
    /// Every layer of the image is registered (Docker tags it next).
    ImageLoaded { who: Who, layers: usize },
}

impl LoadEvent {
    /// The console line (no newline).
    pub fn line(&self) -> String {
        match self {
            LoadEvent::Layer { who, layer, layers, loading, diff_id } => format!(
                "{EVENT_MARKER} v1 layer-load layer={layer}/{layers} state={} {} diff_id={diff_id}",
                if *loading { "loading" } else { "present" },
                who.words()
            ),
            LoadEvent::ImageLoaded { who, layers } => {
                format!("{EVENT_MARKER} v1 image-loaded layers={layers} {}", who.words())
            }
        }
    }

    /// An event line, found anywhere in a console line.
    pub fn parse(line: &str) -> Option<LoadEvent> {
        let rest = &line[line.find(EVENT_MARKER)? + EVENT_MARKER.len()..];
        let mut words = rest.split_whitespace();
        if words.next()? != "v1" {
            return None;
        }
        let kind = words.next()?;
        let fields: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let who =
            Who { image: get("image")?.into(), id: get("id").map(Into::into), archive: get("archive").map(Into::into) };
        match kind {
            "layer-load" => {
                let (layer, layers) = get("layer")?.split_once('/')?;
                Some(LoadEvent::Layer {
                    who,
                    layer: layer.parse().ok()?,
                    layers: layers.parse().ok()?,
                    loading: match get("state")? {
                        "loading" => true,
                        "present" => false,
                        _ => return None,
                    },
                    diff_id: get("diff_id").unwrap_or_default().into(),
                })
            }
            "image-loaded" => Some(LoadEvent::ImageLoaded { who, layers: get("layers")?.parse().ok()? }),
            _ => None,
        }
    }
}

/// Turns successive looks at the store into events, each reported once.
#[derive(Debug, Default)]
pub struct LoadTracker {
    /// (image name, layer) reported, and images reported loaded.
    layers: BTreeSet<(String, usize)>,
    images: BTreeSet<String>,
}

impl LoadTracker {
    pub fn new() -> LoadTracker {
        LoadTracker::default()
    }

    /// One look: the images of an archive being loaded (in the order
    /// the engine loads them), whether a layer is being written, what the
    /// store calls each layer of an image (`keys`: [`chain_ids`] for
    /// Docker, [`podman_layer_ids`] for Podman), and which of those the
    /// store holds. Returns the new events in order.
    pub fn observe(
        &mut self,
        images: &[LoadImage],
        registering: bool,
        keys: &dyn Fn(&[String]) -> Vec<String>,
        present: &dyn Fn(&str) -> bool,
    ) -> Vec<LoadEvent> {
        let mut events = Vec::new();
        for img in images {
            let chains = keys(&img.diff_ids);
            let n = chains.len();
            let done = chains.iter().take_while(|c| present(c)).count();
            let mut report = |layer: usize, loading: bool, events: &mut Vec<LoadEvent>| {
                if self.layers.insert((img.name.clone(), layer)) {
                    events.push(LoadEvent::Layer {
                        who: Who::of(img),
                        layer,
                        layers: n,
                        loading,
                        diff_id: img.diff_ids[layer - 1].clone(),
                    });
                }
            };
            for layer in 1..=done {
                report(layer, false, &mut events);
            }
            if done == n {
                if self.images.insert(img.name.clone()) {
                    events.push(LoadEvent::ImageLoaded { who: Who::of(img), layers: n });
                }
                continue;
            }
            // Docker loads the images in order: this one is under way (or
            // next), the later ones have not started.
            if registering {
                report(done + 1, true, &mut events);
            }
            break;
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str, ids: &[&str]) -> LoadImage {
        LoadImage { name: name.into(), id: None, archive: None, diff_ids: ids.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn chain_ids_follow_docker() {
        // The first chain id is the first diff_id; the next hashes "<parent> <diff_id>".
        let ids = chain_ids(&["sha256:aa".into(), "sha256:bb".into()]);
        assert_eq!(ids[0], "sha256:aa");
        let want = Sha256::digest(b"sha256:aa sha256:bb");
        assert_eq!(ids[1], format!("sha256:{}", want.iter().map(|b| format!("{b:02x}")).collect::<String>()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn podman_layer_ids_follow_containers_storage() {
        // Measured on a store podman 4.3 wrote: busybox's two layers.
        let ids = podman_layer_ids(&[
            "sha256:cb3178004ce46b3738763e82ea7366b4f5f477f98d6d2bd4f2713f281241abe2".into(),
            "sha256:4fd97db04753724de8f44cc04d75dd155788a4a640f20e6588cabe1abc51533e".into(),
        ]);
        assert_eq!(
            ids,
            [
                "cb3178004ce46b3738763e82ea7366b4f5f477f98d6d2bd4f2713f281241abe2",
                "afcb5e03157efba7099162c8c88c39eae6e78eea96d03fdb67a5b57bc668dfad"
            ]
        );
        // The tracker reports podman's layers by these keys.
        let images = [img(
            "b:1",
            &[
                "sha256:cb3178004ce46b3738763e82ea7366b4f5f477f98d6d2bd4f2713f281241abe2",
                "sha256:4fd97db04753724de8f44cc04d75dd155788a4a640f20e6588cabe1abc51533e",
            ],
        )];
        let mut t = LoadTracker::new();
        let e = t.observe(&images, true, &podman_layer_ids, &|k: &str| k == ids[0]);
        assert!(
            matches!(
                &e[..],
                [LoadEvent::Layer { layer: 1, loading: false, .. }, LoadEvent::Layer { layer: 2, loading: true, .. }]
            ),
            "{e:?}"
        );
    }

    #[test]
    fn events_round_trip_and_are_found_in_noisy_lines() {
        let full = Who {
            image: "fixture/redis:1".into(),
            id: Some(format!("sha256:{}", "e9".repeat(32))),
            archive: Some("fixture-redis-1.tar".into()),
        };
        let evs = [
            LoadEvent::Layer { who: full.clone(), layer: 2, layers: 4, loading: true, diff_id: "sha256:ab".into() },
            LoadEvent::Layer {
                who: Who { image: "x".into(), ..Who::default() },
                layer: 1,
                layers: 1,
                loading: false,
                diff_id: "sha256:cd".into(),
            },
            LoadEvent::ImageLoaded { who: full, layers: 2 },
        ];
        for e in evs {
            assert_eq!(LoadEvent::parse(&format!("[  3.1] kernel noise {}", e.line())), Some(e.clone()));
        }
        assert_eq!(LoadEvent::parse("AIRBOOT-EVENT v2 layer-load image=x layer=1/1 state=loading"), None);
        assert_eq!(LoadEvent::parse("AIRBOOT-EVENT v1 layer-load image=x layer=1/1 state=odd"), None);
        assert_eq!(LoadEvent::parse("AIRBOOT-EVENT v1 layer-load image=x layer=one/1 state=loading"), None);
        assert_eq!(LoadEvent::parse("nothing here"), None);
        // A value with a space would split the line: it is carried with `_`.
        let odd = LoadEvent::ImageLoaded { who: Who { image: "a b".into(), ..Who::default() }, layers: 1 };
        assert!(odd.line().contains("image=a_b"));
    }

    #[test]
    fn archive_images_waits_for_whole_files() {
        let cfg = r#"{"architecture":"amd64","rootfs":{"type":"layers","diff_ids":["sha256:a","sha256:b"]}}"#;
        let manifest = r#"[{"Config":"c1.json","RepoTags":["fixture/busybox:1"],"Layers":["l1/layer.tar","l2/layer.tar"]},
                           {"Config":"c2.json","RepoTags":null,"Layers":["l1/layer.tar"]}]"#;
        let read = |p: &str| match p {
            "c1.json" => Some(cfg.to_string()),
            "c2.json" => Some(r#"{"rootfs":{"diff_ids":["sha256:a"]}}"#.to_string()),
            _ => None,
        };
        let got = archive_images(manifest, &read).unwrap();
        assert_eq!(got, vec![img("fixture/busybox:1", &["sha256:a", "sha256:b"]), img("c2.json", &["sha256:a"])]);
        // An untagged image is named by its ID when the config is named by its digest.
        let hex = "e9".repeat(32);
        let m = format!(r#"[{{"Config":"{hex}.json","RepoTags":null,"Layers":[]}}]"#);
        let got = archive_images(&m, &|_: &str| Some(r#"{"rootfs":{"diff_ids":[]}}"#.into())).unwrap();
        assert_eq!((got[0].name.clone(), got[0].id.clone()), (format!("sha256:{hex}"), Some(format!("sha256:{hex}"))));
        let m = format!(r#"[{{"Config":"blobs/sha256/{hex}","RepoTags":["a:1"],"Layers":[]}}]"#);
        let got = archive_images(&m, &|_: &str| Some(r#"{"rootfs":{"diff_ids":[]}}"#.into())).unwrap();
        assert_eq!((got[0].name.as_str(), got[0].id.clone()), ("a:1", Some(format!("sha256:{hex}"))));
        // A config not there yet, a manifest cut short: not ready.
        assert_eq!(archive_images(manifest, &|p: &str| if p == "c1.json" { read(p) } else { None }), None);
        assert_eq!(archive_images(&manifest[..40], &read), None);
    }

    #[test]
    fn the_tracker_reports_each_step_once_in_order() {
        let images = [img("a:1", &["sha256:1", "sha256:2"]), img("b:1", &["sha256:3"])];
        let chains_a = chain_ids(&images[0].diff_ids);
        let chain_b = chain_ids(&images[1].diff_ids)[0].clone();
        let mut t = LoadTracker::new();
        let mut present: Vec<String> = Vec::new();
        let look = |t: &mut LoadTracker, present: &[String], registering| {
            t.observe(&images, registering, &chain_ids, &|c: &str| present.iter().any(|p| p == c))
        };
        // Archive unpacked, nothing registering yet: nothing to say.
        assert!(look(&mut t, &present, false).is_empty());
        // a's first layer registering.
        let e = look(&mut t, &present, true);
        assert_eq!(e.len(), 1);
        assert!(
            matches!(&e[0], LoadEvent::Layer { who, layer: 1, layers: 2, loading: true, .. } if who.image == "a:1")
        );
        assert!(look(&mut t, &present, true).is_empty(), "reported once");
        // Layer 1 done, layer 2 registering.
        present.push(chains_a[0].clone());
        let e = look(&mut t, &present, true);
        assert!(matches!(&e[..], [LoadEvent::Layer { layer: 2, loading: true, .. }]), "{e:?}");
        // a done, b's only layer done between two looks: reported present, then both images loaded.
        present.push(chains_a[1].clone());
        present.push(chain_b.clone());
        let e = look(&mut t, &present, false);
        let lines: Vec<String> = e.iter().map(|e| e.line()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("image-loaded layers=2 image=a:1"));
        assert!(lines[1].contains("layer=1/1 state=present image=b:1"));
        assert!(lines[2].contains("image-loaded layers=1 image=b:1"));
        assert!(look(&mut t, &present, false).is_empty());
    }

    #[test]
    fn later_images_wait_for_earlier_ones() {
        // While a:1 has a layer to go, an open registration is a's, not b's.
        let images = [img("a:1", &["sha256:1"]), img("b:1", &["sha256:9"])];
        let mut t = LoadTracker::new();
        let e = t.observe(&images, true, &chain_ids, &|_: &str| false);
        assert!(matches!(&e[..], [LoadEvent::Layer { who, .. }] if who.image == "a:1"), "{e:?}");
        // A layer already in the store (shared with an earlier image) is present, not loading.
        let e = t.observe(&images, true, &chain_ids, &|c: &str| c == "sha256:1" || c == "sha256:9");
        assert!(e.iter().all(|e| !matches!(e, LoadEvent::Layer { loading: true, .. })), "{e:?}");
    }
}
