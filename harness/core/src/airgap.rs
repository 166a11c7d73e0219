//! Judging the air gap from the guest's own evidence.
//!
//! The VM has no NIC (the QEMU command line and QMP's device list prove
//! that on the host side). Inside, the guest must have no physical network
//! interface and no route out, and nothing may have *tried* to reach a
//! network: a pull by the engine, a DNS query, an outgoing connect. A
//! virtual bridge that the engine creates (docker0, with its connected
//! route) leads nowhere and is listed, not failed.

use airboot_proto::probe::{AirgapReport, Interface, Route};
use serde::{Deserialize, Serialize};

use airboot_model::{FailureCode, Problem};

/// Something that tried to reach a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EgressAttempt {
    /// The unit, container or process that tried.
    pub who: String,
    /// Where to, when known.
    pub destination: Option<String>,
    /// `journal`, `container-log`, `engine-event` or `kernel-counter`.
    pub source: String,
    pub evidence: String,
}

/// The report's `airgap` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Airgap {
    /// Whether the guest's side was checked (needs the probe).
    pub checked: bool,
    /// Physical network interfaces in the guest.
    pub nics: u32,
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub default_route: bool,
    pub egress_attempts: Vec<EgressAttempt>,
}

fn is_default(r: &Route) -> bool {
    r.destination == "0.0.0.0/0" || r.destination.ends_with("/0")
}

/// Judge a probe's air-gap report. Problems are failures of the run.
pub fn judge(report: &AirgapReport) -> (Airgap, Vec<Problem>) {
    let mut problems = Vec::new();
    let physical: Vec<&Interface> = report.interfaces.iter().filter(|i| i.kind == "physical").collect();
    for i in &physical {
        problems.push(Problem {
            code: FailureCode::AirgapNic,
            message: format!("the guest has a network interface {} backed by a device", i.name),
        });
    }
    let default_route = report.routes.iter().any(is_default);
    for r in &report.routes {
        let via_physical = physical.iter().any(|i| i.name == r.interface);
        if is_default(r) || r.gateway.is_some() || via_physical {
            problems.push(Problem {
                code: FailureCode::AirgapRoute,
                message: format!(
                    "the guest has a route out: {} via {}{}",
                    r.destination,
                    r.interface,
                    r.gateway.as_ref().map(|g| format!(" gateway {g}")).unwrap_or_default()
                ),
            });
        }
    }
    let mut attempts: Vec<EgressAttempt> = report
        .evidence
        .iter()
        .map(|e| EgressAttempt {
            who: e.who.clone(),
            destination: e.destination.clone(),
            source: e.source.clone(),
            evidence: e.line.clone(),
        })
        .collect();
    for c in &report.no_route {
        let n = c.ipv4 + c.ipv6;
        if n > 0 {
            attempts.push(EgressAttempt {
                who: format!("{} network namespace", c.netns),
                destination: None,
                source: "kernel-counter".into(),
                evidence: format!(
                    "{n} packet(s) had no route out (Ip OutNoRoutes {}, Ip6 OutNoRoutes {})",
                    c.ipv4, c.ipv6
                ),
            });
        }
    }
    if !attempts.is_empty() {
        let named: Vec<String> = attempts
            .iter()
            .filter(|a| a.source != "kernel-counter")
            .map(|a| match &a.destination {
                Some(d) => format!("{} tried to reach {d}", a.who),
                None => format!("{} tried to reach the network", a.who),
            })
            .collect();
        let mut whos: Vec<String> = Vec::new();
        for n in named {
            if !whos.contains(&n) {
                whos.push(n);
            }
        }
        let message = if whos.is_empty() {
            format!("egress attempted: {}", attempts.iter().map(|a| a.evidence.clone()).collect::<Vec<_>>().join("; "))
        } else {
            format!("egress attempted: {}", whos.join("; "))
        };
        problems.push(Problem { code: FailureCode::EgressAttempt, message });
    }
    let airgap = Airgap {
        checked: true,
        nics: physical.len() as u32,
        interfaces: report.interfaces.clone(),
        routes: report.routes.clone(),
        default_route,
        egress_attempts: attempts,
    };
    (airgap, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_proto::probe::{EgressEvidence, NoRouteCount};

    fn iface(name: &str, kind: &str) -> Interface {
        Interface { name: name.into(), kind: kind.into(), up: true, carrier: false }
    }

    fn route(dst: &str, dev: &str, gw: Option<&str>) -> Route {
        Route { family: "ipv4".into(), destination: dst.into(), gateway: gw.map(Into::into), interface: dev.into() }
    }

    #[test]
    fn a_clean_guest_with_dockers_bridge_passes() {
        let r = AirgapReport {
            interfaces: vec![iface("docker0", "virtual"), iface("lo", "loopback")],
            routes: vec![route("172.17.0.0/16", "docker0", None)],
            no_route: vec![NoRouteCount { netns: "host".into(), ipv4: 0, ipv6: 0 }],
            evidence: vec![],
        };
        let (a, p) = judge(&r);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!((a.nics, a.default_route, a.checked), (0, false, true));
        assert_eq!(a.routes.len(), 1);
    }

    #[test]
    fn nics_and_routes_out_fail() {
        let r = AirgapReport {
            interfaces: vec![iface("eth0", "physical"), iface("lo", "loopback")],
            routes: vec![route("0.0.0.0/0", "eth0", Some("10.0.2.2")), route("10.0.2.0/24", "eth0", None)],
            ..Default::default()
        };
        let (a, p) = judge(&r);
        let codes: Vec<_> = p.iter().map(|p| p.code).collect();
        assert_eq!(codes, [FailureCode::AirgapNic, FailureCode::AirgapRoute, FailureCode::AirgapRoute]);
        assert!(a.default_route);
        assert_eq!(a.nics, 1);
    }

    #[test]
    fn egress_names_who_and_where() {
        let r = AirgapReport {
            no_route: vec![
                NoRouteCount { netns: "host".into(), ipv4: 3, ipv6: 0 },
                NoRouteCount { netns: "container redis (fixture/redis:1)".into(), ipv4: 0, ipv6: 0 },
            ],
            evidence: vec![
                EgressEvidence {
                    who: "unit egress-pull.service (docker)".into(),
                    destination: Some("registry.example.com".into()),
                    source: "journal".into(),
                    line: "Error response from daemon: Get \"https://registry.example.com/v2/\"".into(),
                },
                EgressEvidence {
                    who: "dockerd (docker.service)".into(),
                    destination: Some("registry.example.com".into()),
                    source: "journal".into(),
                    line: "x".into(),
                },
            ],
            ..Default::default()
        };
        let (a, p) = judge(&r);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].code, FailureCode::EgressAttempt);
        assert!(
            p[0].message.contains("unit egress-pull.service (docker) tried to reach registry.example.com"),
            "{}",
            p[0].message
        );
        assert_eq!(a.egress_attempts.len(), 3, "two log lines and the host's counter");
        assert_eq!(a.egress_attempts[2].source, "kernel-counter");
        // A counter alone still fails, saying what it saw.
        let (_, p) = judge(&AirgapReport {
            no_route: vec![NoRouteCount { netns: "host".into(), ipv4: 0, ipv6: 2 }],
            ..Default::default()
        });
        assert!(p[0].message.contains("2 packet(s) had no route"), "{}", p[0].message);
    }

    /// Each rule at its edge: an IPv6 default route, a gateway on a route
    /// that is not the default, a counter summing both families, the same
    /// who-and-where named once, and a source with no destination.
    #[test]
    fn each_rule_at_its_edge() {
        let r = AirgapReport {
            interfaces: vec![iface("lo", "loopback")],
            routes: vec![
                Route { family: "ipv6".into(), destination: "::/0".into(), gateway: None, interface: "lo".into() },
                route("10.9.0.0/16", "lo", Some("10.9.0.1")),
                route("127.0.0.0/8", "lo", None),
            ],
            no_route: vec![NoRouteCount { netns: "host".into(), ipv4: 2, ipv6: 3 }],
            evidence: vec![
                EgressEvidence {
                    who: "a".into(),
                    destination: Some("x.example".into()),
                    source: "journal".into(),
                    line: "1".into(),
                },
                EgressEvidence {
                    who: "a".into(),
                    destination: Some("x.example".into()),
                    source: "journal".into(),
                    line: "2".into(),
                },
                EgressEvidence { who: "b".into(), destination: None, source: "engine-event".into(), line: "3".into() },
            ],
        };
        let (a, p) = judge(&r);
        assert!(a.default_route, "::/0 is a default route");
        assert_eq!(a.nics, 0);
        let routes: Vec<&str> =
            p.iter().filter(|p| p.code == FailureCode::AirgapRoute).map(|p| p.message.as_str()).collect();
        assert_eq!(
            routes,
            [
                "the guest has a route out: ::/0 via lo",
                "the guest has a route out: 10.9.0.0/16 via lo gateway 10.9.0.1"
            ]
        );
        let egress: Vec<&str> =
            p.iter().filter(|p| p.code == FailureCode::EgressAttempt).map(|p| p.message.as_str()).collect();
        assert_eq!(egress, ["egress attempted: a tried to reach x.example; b tried to reach the network"]);
        let counter = a.egress_attempts.iter().find(|e| e.source == "kernel-counter").unwrap();
        assert_eq!(counter.who, "host network namespace");
        assert_eq!(counter.evidence, "5 packet(s) had no route out (Ip OutNoRoutes 2, Ip6 OutNoRoutes 3)");
        assert_eq!(a.egress_attempts.len(), 4);
        // Only counters: the message quotes them.
        let (_, p) = judge(&AirgapReport {
            no_route: vec![NoRouteCount { netns: "host".into(), ipv4: 1, ipv6: 0 }],
            ..Default::default()
        });
        assert_eq!(
            p[0].message,
            "egress attempted: 1 packet(s) had no route out (Ip OutNoRoutes 1, Ip6 OutNoRoutes 0)"
        );
    }
}
