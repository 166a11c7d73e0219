//! Evidence for the air gap, gathered inside the guest: which network
//! interfaces and routes exist, how many packets had nowhere to go (per
//! network namespace: the host's and each container's), and log lines or
//! engine events that show something tried to reach a network.
//!
//! With no NIC and no route, an outgoing TCP connect or UDP send fails
//! with ENETUNREACH, and the kernel counts it (`Ip: OutNoRoutes` in
//! /proc/net/snmp, `Ip6OutNoRoutes` in /proc/net/snmp6) in the namespace of
//! the process that tried. Logs name who tried and where.

use std::path::Path;
use std::process::Command;

use airboot_proto::probe::{AirgapReport, ContainerInfo, EgressEvidence, EngineEvent, Interface, NoRouteCount, Route};
use serde_json::Value;

use crate::engine::Engine;

pub fn interfaces(sys_class_net: &Path) -> Vec<Interface> {
    let Ok(rd) = std::fs::read_dir(sys_class_net) else { return Vec::new() };
    let mut out: Vec<Interface> = rd
        .flatten()
        .map(|e| {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default().trim().to_string();
            let flags = u32::from_str_radix(read("flags").trim_start_matches("0x"), 16).unwrap_or(0);
            let kind = if read("type") == "772" || name == "lo" {
                "loopback"
            } else if p.join("device").exists() {
                "physical"
            } else {
                "virtual"
            };
            Interface { name, kind: kind.into(), up: flags & 1 != 0, carrier: read("carrier") == "1" }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn ipv4_hex(h: &str) -> String {
    let v = u32::from_str_radix(h, 16).unwrap_or(0).to_le_bytes();
    format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3])
}

/// Routes other than loopback ones, from /proc/net/route and
/// /proc/net/ipv6_route.
pub fn parse_routes(v4: &str, v6: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for l in v4.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[0] == "lo" {
            continue;
        }
        let bits = u32::from_str_radix(f[7], 16).unwrap_or(0).count_ones();
        let gw = ipv4_hex(f[2]);
        out.push(Route {
            family: "ipv4".into(),
            destination: format!("{}/{bits}", ipv4_hex(f[1])),
            gateway: (gw != "0.0.0.0").then_some(gw),
            interface: f[0].into(),
        });
    }
    for l in v6.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 || f[9] == "lo" {
            continue;
        }
        let dst = f[0];
        // Link-local and multicast routes exist on every up interface and lead nowhere.
        if dst.starts_with("fe80") || dst.starts_with("ff") {
            continue;
        }
        let hex6 = |h: &str| {
            h.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
        };
        let gw = f[4];
        out.push(Route {
            family: "ipv6".into(),
            destination: format!("{}/{}", hex6(dst), u32::from_str_radix(f[1], 16).unwrap_or(0)),
            gateway: (gw.chars().any(|c| c != '0')).then(|| hex6(gw)),
            interface: f[9].into(),
        });
    }
    out
}

/// `OutNoRoutes` from /proc/…/net/snmp and `Ip6OutNoRoutes` from snmp6.
pub fn parse_no_routes(snmp: &str, snmp6: &str) -> (u64, u64) {
    let mut v4 = 0;
    let mut header: Option<Vec<&str>> = None;
    for l in snmp.lines() {
        if let Some(rest) = l.strip_prefix("Ip: ") {
            match header.take() {
                None => header = Some(rest.split_whitespace().collect()),
                Some(h) => {
                    let vals: Vec<&str> = rest.split_whitespace().collect();
                    if let Some(i) = h.iter().position(|k| *k == "OutNoRoutes") {
                        v4 = vals.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
                    }
                }
            }
        }
    }
    let v6 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Ip6OutNoRoutes").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    (v4, v6)
}

fn no_routes_of(proc_net: &Path) -> (u64, u64) {
    let snmp = std::fs::read_to_string(proc_net.join("snmp")).unwrap_or_default();
    let snmp6 = std::fs::read_to_string(proc_net.join("snmp6")).unwrap_or_default();
    parse_no_routes(&snmp, &snmp6)
}

const PATTERNS: &[&str] = &[
    "dial tcp",
    "dial udp",
    "network is unreachable",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Could not resolve host",
    "no such host",
    "Name or service not known",
    "i/o timeout",
    "Pulling from",
    "Pulling fs layer",
    "pull access denied",
    "Attempting next endpoint for pull",
    "Error getting v2 registry",
    "Error response from daemon: Get \"http",
];

/// Whether a log line shows a network attempt, and where to if it says.
pub fn egress_in_line(line: &str) -> Option<Option<String>> {
    if !PATTERNS.iter().any(|p| line.contains(p)) {
        return None;
    }
    Some(destination(line))
}

fn destination(line: &str) -> Option<String> {
    let host_of = |s: &str| s.split(['/', '"', ' ', ':', '\\']).next().filter(|h| !h.is_empty()).map(str::to_string);
    for scheme in ["https://", "http://"] {
        if let Some(i) = line.find(scheme) {
            return host_of(&line[i + scheme.len()..]);
        }
    }
    if let Some(i) = line.find("lookup ") {
        return host_of(&line[i + 7..]);
    }
    for marker in ["dial tcp ", "dial udp ", "connect to "] {
        if let Some(i) = line.find(marker) {
            let rest = &line[i + marker.len()..];
            let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
            let target = rest[..end].trim_end_matches(':');
            if !target.is_empty() {
                return Some(target.to_string());
            }
        }
    }
    if let Some(i) = line.find("Pulling from ") {
        return host_of(&line[i + 13..]);
    }
    None
}

/// Egress evidence in the journal of this boot: `journalctl -o json`
/// lines, attributed to their unit.
pub fn journal_evidence(json_lines: &str) -> Vec<EgressEvidence> {
    let mut out = Vec::new();
    for l in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else { continue };
        let msg = match &v["MESSAGE"] {
            Value::String(s) => s.clone(),
            Value::Array(bytes) => {
                String::from_utf8_lossy(&bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<_>>())
                    .into_owned()
            }
            _ => continue,
        };
        let Some(dest) = egress_in_line(&msg) else { continue };
        let unit = v["_SYSTEMD_UNIT"].as_str().unwrap_or("");
        let ident = v["SYSLOG_IDENTIFIER"].as_str().unwrap_or("");
        let who = match (unit, ident) {
            ("docker.service", _) => "dockerd (docker.service)".to_string(),
            ("", "") => "unknown process".to_string(),
            ("", i) => i.to_string(),
            (u, i) if !i.is_empty() => format!("unit {u} ({i})"),
            (u, _) => format!("unit {u}"),
        };
        out.push(EgressEvidence { who, destination: dest, source: "journal".into(), line: msg });
    }
    out
}

/// The registry an image reference points at (`redis:7` → Docker Hub).
pub fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_string(),
        _ => "registry-1.docker.io".to_string(),
    }
}

/// Whether a registry is this device itself (loopback): no egress.
fn is_loopback(registry: &str) -> bool {
    let host =
        registry.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(registry, |x| x.0);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Pulls and pushes the engine (`engine`: who, in the evidence) reports
/// are egress by definition, but for references on the device itself:
/// Podman names local images `localhost/...`, and reports a `pull` event
/// when `podman run --pull never` finds one in its store.
pub fn event_evidence(events: &[EngineEvent], engine: &str) -> Vec<EgressEvidence> {
    events
        .iter()
        .filter(|e| e.kind == "image" && matches!(e.action.as_str(), "pull" | "push"))
        .filter(|e| !is_loopback(&registry_of(&e.actor)))
        .map(|e| EgressEvidence {
            who: engine.to_string(),
            destination: Some(registry_of(&e.actor)),
            source: "engine-event".into(),
            line: format!("{} {}", e.action, e.actor),
        })
        .collect()
}

/// Gather everything (inside the guest).
pub fn collect(
    engine: Option<&dyn Engine>,
    name: &str,
    containers: &[ContainerInfo],
    events: &[EngineEvent],
) -> AirgapReport {
    let mut no_route = Vec::new();
    let (v4, v6) = no_routes_of(Path::new("/proc/net"));
    no_route.push(NoRouteCount { netns: "host".into(), ipv4: v4, ipv6: v6 });
    let mut evidence = Vec::new();
    for c in containers {
        let name = c.name.trim_start_matches('/');
        if let Some(pid) = c.pid {
            let (v4, v6) = no_routes_of(&Path::new("/proc").join(pid.to_string()).join("net"));
            no_route.push(NoRouteCount { netns: format!("container {name} ({})", c.image), ipv4: v4, ipv6: v6 });
        }
        if let Some(d) = engine
            && let Ok(logs) = d.container_logs(name)
        {
            for l in logs.lines() {
                if let Some(dest) = egress_in_line(l) {
                    evidence.push(EgressEvidence {
                        who: format!("container {name} ({})", c.image),
                        destination: dest,
                        source: "container-log".into(),
                        line: l.to_string(),
                    });
                }
            }
        }
    }
    let journal = Command::new("journalctl")
        .args(["-b", "-o", "json", "--no-pager", "-q"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    evidence.extend(journal_evidence(&journal));
    evidence.extend(event_evidence(events, name));
    AirgapReport {
        interfaces: interfaces(Path::new("/sys/class/net")),
        routes: parse_routes(
            &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
            &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
        ),
        no_route,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_from_proc() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                  eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        let v6 = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 docker0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000000 00000000 00000003 eth0\n\
                  00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001 lo\n";
        let r = parse_routes(v4, v6);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!((r[0].destination.as_str(), r[0].gateway.as_deref()), ("172.17.0.0/16", None));
        assert_eq!((r[1].destination.as_str(), r[1].gateway.as_deref()), ("0.0.0.0/0", Some("192.168.2.1")));
        assert_eq!(r[2].family, "ipv6");
        assert_eq!(r[2].destination, "0000:0000:0000:0000:0000:0000:0000:0000/0");
        assert!(r[2].gateway.as_deref().unwrap().starts_with("fe80"));
    }

    #[test]
    fn no_route_counters() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives OutRequests OutDiscards OutNoRoutes\nIp: 2 64 10 12 0 3\nIcmp: InMsgs\nIcmp: 0\n";
        let snmp6 = "Ip6InReceives 4\nIp6OutNoRoutes 2\n";
        assert_eq!(parse_no_routes(snmp, snmp6), (3, 2));
        assert_eq!(parse_no_routes("", ""), (0, 0));
    }

    #[test]
    fn egress_lines_and_destinations() {
        let cases = [
            (
                r#"Error response from daemon: Get "https://registry.example.com/v2/": dial tcp: lookup registry.example.com on 192.0.2.1:53: dial udp 192.0.2.1:53: connect: network is unreachable"#,
                Some("registry.example.com"),
            ),
            ("curl: (6) Could not resolve host: api.example.net", None),
            ("dial tcp 10.1.2.3:443: connect: network is unreachable", Some("10.1.2.3:443")),
            (
                r#"level=warning msg="Error getting v2 registry: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io""#,
                Some("registry-1.docker.io"),
            ),
        ];
        for (line, dest) in cases {
            let d = egress_in_line(line).unwrap_or_else(|| panic!("missed: {line}"));
            assert_eq!(d.as_deref(), dest, "{line}");
        }
        assert_eq!(egress_in_line("[  OK  ] Started docker.service"), None);
        assert_eq!(egress_in_line("redis: Ready to accept connections tcp"), None);
    }

    #[test]
    fn journal_entries_are_attributed_to_units() {
        let j = concat!(
            r#"{"MESSAGE":"Error response from daemon: Get \"https://registry.example.com/v2/\": dial tcp: lookup registry.example.com on 192.0.2.1:53","_SYSTEMD_UNIT":"egress-pull.service","SYSLOG_IDENTIFIER":"docker"}"#,
            "\n",
            r#"{"MESSAGE":"level=info msg=\"Attempting next endpoint for pull after error: Get \\\"https://registry.example.com/v2/\\\"\"","_SYSTEMD_UNIT":"docker.service","SYSLOG_IDENTIFIER":"dockerd"}"#,
            "\n",
            r#"{"MESSAGE":"Started container-redis.service","_SYSTEMD_UNIT":"init.scope"}"#,
            "\n"
        );
        let e = journal_evidence(j);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].who, "unit egress-pull.service (docker)");
        assert_eq!(e[0].destination.as_deref(), Some("registry.example.com"));
        assert_eq!(e[1].who, "dockerd (docker.service)");
    }

    #[test]
    fn pulls_are_egress() {
        let ev = [
            EngineEvent {
                time_nano: 1,
                kind: "image".into(),
                action: "pull".into(),
                actor: "registry.example.com/app:1".into(),
            },
            EngineEvent { time_nano: 2, kind: "image".into(), action: "load".into(), actor: "fixture/redis:1".into() },
        ];
        let e = event_evidence(&ev, "dockerd");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].destination.as_deref(), Some("registry.example.com"));
        assert_eq!(e[0].who, "dockerd");
        // Podman's local images, and anything on loopback, are no egress.
        for local in ["localhost/fixture/redis:1", "localhost:5000/x:1", "127.0.0.1:5000/x:1"] {
            let ev = [EngineEvent { time_nano: 3, kind: "image".into(), action: "pull".into(), actor: local.into() }];
            assert!(event_evidence(&ev, "podman").is_empty(), "{local}");
        }
        let ev = [EngineEvent {
            time_nano: 3,
            kind: "image".into(),
            action: "pull".into(),
            actor: "localhost.example.com/x:1".into(),
        }];
        assert_eq!(
            event_evidence(&ev, "podman")[0].who,
            "podman",
            "a registry named like localhost is still a registry"
        );
        assert_eq!(registry_of("redis:7"), "registry-1.docker.io");
        assert_eq!(registry_of("library/redis:7"), "registry-1.docker.io");
        assert_eq!(registry_of("localhost:5000/x"), "localhost:5000");
    }
}
