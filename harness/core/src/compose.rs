//! What docker-compose says when it gives up on a service's dependency,
//! read from its output (the console or its unit's journal): which service
//! waited, and for which container.

use std::sync::LazyLock;

use regex::Regex;

/// One service compose did not start because a dependency failed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyFailure {
    /// The service that waited (compose v1 names it; v2 does not).
    pub waiter: Option<String>,
    /// The dependency's container: an ID prefix (v1) or a name (v2).
    pub container: String,
    /// What the dependency did: `unhealthy`, or how it exited.
    pub why: String,
    /// The line, as compose printed it (cut to 300 characters).
    pub line: String,
}

// v1 (1.29): `ERROR: for web  Container "4c1d2e3f4a5b" is unhealthy.`
// and, for `service_completed_successfully`, `... exited with code 1.`
static V1: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"ERROR: for (\S+)\s+Container "([0-9a-f]{6,64})" (is unhealthy|exited with code -?\d+)"#).unwrap()
});
// v2: `dependency failed to start: container fixture-redis-1 is unhealthy`
static V2: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"dependency failed to start: container (\S+) (is unhealthy|exited \(\d+\))").unwrap());

pub fn dependency_failure(line: &str) -> Option<DependencyFailure> {
    let cut = || line.trim().chars().take(300).collect::<String>();
    let why = |w: &str| w.trim_start_matches("is ").to_string();
    if let Some(c) = V1.captures(line) {
        return Some(DependencyFailure {
            waiter: Some(c[1].to_string()),
            container: c[2].to_string(),
            why: why(&c[3]),
            line: cut(),
        });
    }
    V2.captures(line).map(|c| DependencyFailure {
        waiter: None,
        container: c[1].to_string(),
        why: why(&c[2]),
        line: cut(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_v1_and_v2_words_give_the_waiter_and_the_dependency() {
        let d = dependency_failure("ERROR: for web  Container \"4c1d2e3f4a5b\" is unhealthy.").unwrap();
        assert_eq!(
            (d.waiter.as_deref(), d.container.as_str(), d.why.as_str()),
            (Some("web"), "4c1d2e3f4a5b", "unhealthy")
        );
        // As the console shows a unit's output: prefixed.
        let d = dependency_failure(
            "[  41.2] docker-compose[512]: ERROR: for web  Container \"4c1d2e3f4a5b\" exited with code 3.",
        )
        .unwrap();
        assert_eq!((d.waiter.as_deref(), d.why.as_str()), (Some("web"), "exited with code 3"));
        assert!(d.line.starts_with("[  41.2]"));
        let d = dependency_failure(
            "Error response from daemon: dependency failed to start: container fixture-redis-1 is unhealthy",
        )
        .unwrap();
        assert_eq!((d.waiter, d.container.as_str()), (None, "fixture-redis-1"));
        // Compose's summary names nothing; other errors are not this.
        assert_eq!(dependency_failure("ERROR: Encountered errors while bringing up the project."), None);
        assert_eq!(dependency_failure("ERROR: for web  Cannot start service web: oci runtime error"), None);
        assert_eq!(dependency_failure("container web is unhealthy"), None);
    }
}
