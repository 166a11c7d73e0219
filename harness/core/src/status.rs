//! Assembles console status blocks (protocol in `airboot_proto`) from
//! console lines. Damaged or incomplete blocks are dropped and counted; the
//! guest repeats its block, so the next good one is used.

use airboot_proto::{
    Begin, ContainerRecord, EngineRecord, ImageRecord, LineError, Record, StatusLine, UnitRecord, parse_status_line,
    posix_cksum, status_text,
};

/// A complete, consistent block: what the engine reported at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusBlock {
    pub seq: u64,
    /// Host time (since t0) of the block's `end` line.
    pub t: f64,
    pub uptime_s: Option<f64>,
    pub is_final: bool,
    pub engine: Option<EngineRecord>,
    pub images: Vec<ImageRecord>,
    pub containers: Vec<ContainerRecord>,
    pub units: Vec<UnitRecord>,
    /// Image ID → platform (`linux/arm64/v8`), when the transport tells.
    pub platforms: std::collections::BTreeMap<String, String>,
    /// The guest's architecture in Docker's naming (`amd64`, `arm64`), when known.
    pub guest_arch: Option<String>,
}

/// What feeding one line produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// Not a status line, or a line in the middle of a block.
    Nothing,
    Block(Box<StatusBlock>),
    /// A line or block was damaged; the reason is for the report.
    Damaged(String),
    /// The guest speaks a protocol version this harness does not know.
    Unsupported(String),
}

#[derive(Debug, Default)]
pub struct Assembler {
    /// The open block: its begin, records, their text (for the checksum),
    /// and whether a line of it was damaged.
    open: Option<(Begin, Vec<Record>, String, bool)>,
    pub damaged: u64,
    pub complete: u64,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, t: f64, line: &str) -> Assembled {
        let parsed = match parse_status_line(line) {
            None => return Assembled::Nothing,
            Some(p) => p,
        };
        match parsed {
            Err(LineError::Version(v)) => {
                self.open = None;
                Assembled::Unsupported(LineError::Version(v).to_string())
            }
            Err(e) => {
                // Poison the open block: it lost a record.
                if let Some(open) = self.open.as_mut() {
                    open.3 = true;
                }
                self.damaged += 1;
                Assembled::Damaged(e.to_string())
            }
            Ok(StatusLine::Begin(b)) => {
                let dropped = self.open.take().is_some();
                self.open = Some((b, Vec::new(), String::new(), false));
                if dropped {
                    self.damaged += 1;
                    Assembled::Damaged("status block without `end` (a new `begin` came first)".into())
                } else {
                    Assembled::Nothing
                }
            }
            Ok(StatusLine::Record(r)) => match self.open.as_mut() {
                Some(open) => {
                    open.1.push(r);
                    open.2.push_str(status_text(line).unwrap_or_default());
                    open.2.push('\n');
                    Assembled::Nothing
                }
                None => {
                    self.damaged += 1;
                    Assembled::Damaged("status record outside a block (its `begin` was lost)".into())
                }
            },
            Ok(StatusLine::End(e)) => {
                let Some((begin, records, text, poisoned)) = self.open.take() else {
                    self.damaged += 1;
                    return Assembled::Damaged("status `end` without `begin`".into());
                };
                if poisoned || begin.seq != e.seq || records.len() != e.records {
                    self.damaged += 1;
                    return Assembled::Damaged(format!(
                        "status block {} incomplete: {} of {} records arrived intact (seq {} vs {})",
                        begin.seq,
                        records.len(),
                        e.records,
                        begin.seq,
                        e.seq
                    ));
                }
                if let Some(want) = &e.cksum {
                    let got = posix_cksum(text.as_bytes());
                    if &got != want {
                        self.damaged += 1;
                        return Assembled::Damaged(format!(
                            "status block {} failed its checksum ({got} vs {want}): console output was spliced into it",
                            begin.seq
                        ));
                    }
                }
                let mut block = StatusBlock {
                    seq: begin.seq,
                    t,
                    uptime_s: begin.uptime_s,
                    is_final: begin.is_final,
                    ..Default::default()
                };
                for r in records {
                    match r {
                        Record::Engine(e) => block.engine = Some(e),
                        Record::Image(i) => block.images.push(i),
                        Record::Container(c) => block.containers.push(*c),
                        Record::Unit(u) => block.units.push(u),
                    }
                }
                self.complete += 1;
                Assembled::Block(Box::new(block))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &[&str] = &[
        r#"AIRBOOT-STATUS v1 begin {"seq":4,"uptime_s":40.5,"final":true}"#,
        r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"up","version":"20.10.24"}"#,
        r#"AIRBOOT-STATUS v1 image {"repository":"fixture/redis","tag":"1","id":"sha256:aa"}"#,
        r#"AIRBOOT-STATUS v1 container {"name":"redis","image":"fixture/redis:1","state":"running","health":"healthy"}"#,
        r#"AIRBOOT-STATUS v1 unit {"name":"container-redis.service","state":"active"}"#,
        r#"AIRBOOT-STATUS v1 end {"seq":4,"records":4,"cksum":"CKSUM"}"#,
    ];

    /// The block with the right checksum filled in, as the reporter prints it.
    fn block() -> Vec<String> {
        let text: String = BLOCK[1..5].iter().map(|l| format!("{l}\n")).collect();
        let mut v: Vec<String> = BLOCK.iter().map(|s| s.to_string()).collect();
        v[5] = v[5].replace("CKSUM", &posix_cksum(text.as_bytes()));
        v
    }

    fn feed<S: AsRef<str>>(a: &mut Assembler, lines: &[S]) -> Vec<Assembled> {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| a.push(i as f64, l.as_ref()))
            .filter(|r| *r != Assembled::Nothing)
            .collect()
    }

    #[test]
    fn assembles_a_block_among_other_lines() {
        let mut a = Assembler::new();
        let mut lines = vec!["[  OK  ] Started docker.service".to_string()];
        lines.extend(block());
        let out = feed(&mut a, &lines);
        assert_eq!(out.len(), 1);
        let Assembled::Block(b) = &out[0] else { panic!("{out:?}") };
        assert_eq!(b.seq, 4);
        assert_eq!(b.t, 6.0);
        assert_eq!(b.uptime_s, Some(40.5), "the guest's own clock, from `begin`");
        assert!(b.is_final);
        assert_eq!(b.engine.as_ref().unwrap().version.as_deref(), Some("20.10.24"));
        assert_eq!(b.images.len(), 1);
        assert_eq!(b.containers[0].health.as_deref(), Some("healthy"));
        assert_eq!(b.units.len(), 1);
    }

    #[test]
    fn every_lost_or_damaged_line_drops_the_block() {
        for skip in 0..BLOCK.len() {
            let mut a = Assembler::new();
            let lines: Vec<String> =
                block().into_iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, l)| l).collect();
            let out = feed(&mut a, &lines);
            assert!(out.iter().all(|r| matches!(r, Assembled::Damaged(_))), "dropping line {skip} gave {out:?}");
            // Every damaged report is counted, once.
            assert_eq!(a.damaged, out.len() as u64, "dropping line {skip}");
            // The next intact block is still taken.
            let out = feed(&mut a, &block());
            assert!(matches!(out.last(), Some(Assembled::Block(_))), "after dropping {skip}: {out:?}");
        }
        for damage in 1..BLOCK.len() - 1 {
            let mut a = Assembler::new();
            let mut lines = block();
            // Inside a JSON string: still valid JSON, caught by the checksum.
            lines[damage].insert_str(40, "[ 12.3] eth0: link up");
            let out = feed(&mut a, &lines);
            assert!(!out.iter().any(|r| matches!(r, Assembled::Block(_))), "damaged line {damage}: {out:?}");
        }
    }

    /// An `end` that disagrees with its `begin` on the sequence number, or
    /// with what arrived on the count of records, drops the block, each alone.
    #[test]
    fn an_end_that_disagrees_drops_the_block() {
        for (seq, records) in [(5, 4), (4, 3), (4, 5)] {
            let mut a = Assembler::new();
            let mut lines = block();
            lines[5] = format!(r#"AIRBOOT-STATUS v1 end {{"seq":{seq},"records":{records}}}"#);
            let out = feed(&mut a, &lines);
            assert!(
                matches!(out.last(), Some(Assembled::Damaged(m)) if m.contains("incomplete")),
                "{seq} {records}: {out:?}"
            );
            assert_eq!(a.damaged, 1);
        }
    }

    #[test]
    fn checksum_is_optional() {
        let mut a = Assembler::new();
        let mut lines: Vec<String> = BLOCK.iter().map(|s| s.to_string()).collect();
        lines[5] = r#"AIRBOOT-STATUS v1 end {"seq":4,"records":4}"#.into();
        assert!(matches!(feed(&mut a, &lines).last(), Some(Assembled::Block(_))));
    }

    #[test]
    fn unknown_version_is_reported() {
        let mut a = Assembler::new();
        assert!(matches!(a.push(0.0, "AIRBOOT-STATUS v2 begin {}"), Assembled::Unsupported(_)));
    }
}
