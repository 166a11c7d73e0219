//! The vocabulary shared by every crate of airboot, at the bottom of the
//! dependency graph: architectures, verdicts, failure codes, boot modes,
//! accelerators, transports, engines and cut modes.
//!
//! Each is a closed enum with one spelling, used in scenario files, in
//! `report.json` and in messages alike (`as_str`, `parse`, serde and
//! `Display` all come from one table per type). Nothing here knows how an
//! architecture is emulated, which Debian package provides what, or how a
//! transport is wired: those facts live with the code that acts on them.

/// Defines a closed enum of words with one spelling each: `ALL`, `as_str`,
/// `parse`, `Display`, and serde as that string.
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one spelling used in files, reports and messages.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value spelt `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            /// Every spelling, for messages: `"a", "b" or "c"`.
            pub fn choices() -> String {
                let all: Vec<String> = Self::ALL.iter().map(|v| format!("{:?}", v.as_str())).collect();
                match all.split_last() {
                    Some((last, [])) => last.clone(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => String::new(),
                }
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

/// `Deserialize` from the one spelling, with an error listing the others.
macro_rules! deserialize_words {
    ($name:ident, $what:literal) => {
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("unknown ", $what, " {:?}: use {}"), s, $name::choices()))
                })
            }
        }
    };
}

mod diagnosis;
mod failure;
mod words;

pub use diagnosis::{Confidence, DiagEvidence, Diagnosis, DiagnosisCode, FAIL_FAST_S};
pub use failure::{Failure, FailureCode, Problem, edits as edit_distance};
pub use words::{Accel, Arch, BootMode, CutMode, DiskFormat, Engine, TransportKind, Verdict};
