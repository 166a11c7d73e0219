//! The console-login transport, as a pure state machine: for an image with
//! no probe and no reporter (a read-only root cannot take an injected
//! file), log in on the serial getty with the scenario's credentials and
//! start airboot's reference status reporter from the shell. Its status
//! blocks then come over the console like any reporter's.
//!
//! The machine sees console lines (and the unfinished line a prompt
//! leaves, once the console stalls) and says what to type. It never puts
//! the password into anything but the bytes it returns.

use crate::console::TimedLine;
use crate::run::is_login_prompt;

/// The reference reporter (images/reference/airboot-status), typed into
/// the guest's /run.
pub const REPORTER: &str = include_str!("../../../images/reference/airboot-status");
/// Where the guest keeps the typed reporter and its configuration.
pub const GUEST_SCRIPT: &str = "/run/airboot-status";
pub const GUEST_CONF: &str = "/run/airboot-status.conf";

/// How long to wait for a password prompt or a shell prompt after the
/// user name or password before giving up, on a native-speed guest.
/// Under emulation it is scaled (at most 3x): a login shell reading its
/// profile on a loaded 2-core host took over 20 s.
pub const PROMPT_WAIT_S: f64 = 20.0;
/// The most the prompt wait is scaled by.
const PROMPT_WAIT_MAX_SCALE: f64 = 3.0;
/// From `stty -echo` to the script: the shell must have run it, or the
/// script would be echoed onto the console the reporter writes to.
const ECHO_OFF_WAIT_S: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Waiting for `login:`.
    Login,
    /// User name sent at `t`; a password prompt or a shell may follow.
    User {
        t: f64,
    },
    /// Password sent (or none asked) at `t`: waiting for the shell.
    Shell {
        t: f64,
    },
    /// `stty -echo` sent at `t`.
    EchoOff {
        t: f64,
    },
    /// The reporter runs; nothing more to type.
    Started,
    Failed,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Type these bytes on the serial console.
    Type(Vec<u8>),
    /// Type these bytes: they start the reporter (the run counts its
    /// silence from now).
    Start(Vec<u8>),
    /// Logging in failed: why (never the password).
    Fail(String),
}

pub struct Login {
    /// Seconds to wait for a prompt (see [`PROMPT_WAIT_S`]).
    prompt_wait_s: f64,
    user: String,
    password: String,
    conf: String,
    state: State,
    prompts: u32,
    /// When the reporter was started, for the report.
    pub started_t: Option<f64>,
}

impl Login {
    /// `conf` is the reporter's configuration (status.conf lines);
    /// `scale` the run's slowdown factor (1 at native speed).
    pub fn new(user: &str, password: &str, conf: String, scale: f64) -> Login {
        Login {
            prompt_wait_s: PROMPT_WAIT_S * scale.clamp(1.0, PROMPT_WAIT_MAX_SCALE),
            user: user.into(),
            password: password.into(),
            conf,
            state: State::Login,
            prompts: 0,
            started_t: None,
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn on_line(&mut self, line: &TimedLine) -> Action {
        let text = line.text.trim_end();
        let t = line.t;
        match self.state {
            State::Login if is_login_prompt(text) => {
                self.prompts += 1;
                self.state = State::User { t };
                Action::Type(format!("{}\n", self.user).into_bytes())
            }
            // "Password:" may be finished by a kernel message on its line.
            State::User { .. } if text.ends_with("assword:") || text.trim_start().starts_with("Password:") => {
                self.state = State::Shell { t };
                Action::Type(format!("{}\n", self.password).into_bytes())
            }
            State::User { .. } | State::Shell { .. } if text.contains("Login incorrect") => {
                self.state = State::Failed;
                Action::Fail(format!(
                    "the guest said \"Login incorrect\" for user {:?}: check `[image] login` (user, password or password_file)",
                    self.user
                ))
            }
            State::User { .. } | State::Shell { .. } if is_shell_prompt(text) => self.echo_off(t),
            // A login prompt again after the password: rejected without a
            // word. (Not after the user name alone: a prompt scanned while
            // unfinished comes again once a kernel message ends its line.)
            State::Shell { .. } if is_login_prompt(text) => {
                self.state = State::Failed;
                Action::Fail(format!(
                    "the guest asked to log in again after user {:?}: check `[image] login`",
                    self.user
                ))
            }
            _ => Action::Nothing,
        }
    }

    pub fn on_tick(&mut self, t: f64) -> Action {
        match self.state {
            // Never type the script blind: into a login prompt it would be
            // echoed onto the console.
            State::User { t: since } | State::Shell { t: since } if t - since >= self.prompt_wait_s => {
                self.state = State::Failed;
                Action::Fail(format!(
                    "logged in as {:?}, but no shell prompt (ending in #, $, > or %) came within {:.0}s: check `[image] login`, or the image's shell prompt",
                    self.user, self.prompt_wait_s
                ))
            }
            State::EchoOff { t: since } if t - since >= ECHO_OFF_WAIT_S => {
                self.state = State::Started;
                self.started_t = Some(t);
                Action::Start(self.payload())
            }
            _ => Action::Nothing,
        }
    }

    fn echo_off(&mut self, t: f64) -> Action {
        self.state = State::EchoOff { t };
        Action::Type(b"stty -echo\n".to_vec())
    }

    /// The reporter and its configuration written into /run (writable on a
    /// read-only root), then started in the background, detached from the
    /// login shell, writing its blocks to the console.
    fn payload(&self) -> Vec<u8> {
        let mut s = String::new();
        s.push_str(&format!("cat > {GUEST_CONF} <<'AIRBOOT_CONF_END'\n{}\nAIRBOOT_CONF_END\n", self.conf.trim_end()));
        s.push_str(&format!(
            "cat > {GUEST_SCRIPT} <<'AIRBOOT_SCRIPT_END'\n{}\nAIRBOOT_SCRIPT_END\n",
            REPORTER.trim_end()
        ));
        s.push_str(&format!(
            "AIRBOOT_STATUS_CONF={GUEST_CONF} setsid sh {GUEST_SCRIPT} </dev/null >/dev/null 2>&1 &\n"
        ));
        s.into_bytes()
    }
}

/// A shell's prompt: `root@device:~#`, `$`, `#`, `~ #` (busybox).
fn is_shell_prompt(text: &str) -> bool {
    let t = before_kernel_message(text).trim_end();
    (t.ends_with('#') || t.ends_with('$') || t.ends_with('>') || t.ends_with('%'))
        && t.len() < 200
        && !t.contains("AIRBOOT-STATUS")
        && !is_login_prompt(t)
}

/// `text` up to a kernel message that finished its line (`[   25.93]
/// …`): a prompt ends no line, so the next kernel message lands on it.
fn before_kernel_message(text: &str) -> &str {
    let mut from = 0;
    while let Some(i) = text[from..].find('[') {
        let at = from + i;
        let rest = &text[at + 1..];
        if let Some(end) = rest.find(']') {
            let stamp = rest[..end].trim_start();
            let mut parts = stamp.splitn(2, '.');
            let (whole, frac) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !whole.is_empty()
                && !frac.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
            {
                return &text[..at];
            }
        }
        from = at + 1;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell prompt finished on its line by a kernel message (dockerd
    /// starting while the login shell comes up) is still a prompt.
    #[test]
    fn a_shell_prompt_with_a_kernel_message_after_it_is_seen() {
        let mut m = Login::new("root", "", String::new(), 1.0);
        typed(m.on_line(&l(20.7, "airboot-fixture login:")));
        assert_eq!(
            typed(m.on_line(&l(23.4, "root@airboot-fixture:~# [   21.093] Initializing XFRM netlink socket"))),
            "stty -echo\n"
        );
        assert_eq!(before_kernel_message("a [x] b [  1.5] c"), "a [x] b ");
        assert_eq!(before_kernel_message("no stamp [1.] [.5] [a.b]"), "no stamp [1.] [.5] [a.b]");
        assert!(!is_shell_prompt("[   21.093] systemd[1]: Started docker.service #"));
    }

    fn l(t: f64, s: &str) -> TimedLine {
        TimedLine { t, text: s.into(), truncated: false }
    }

    fn typed(a: Action) -> String {
        match a {
            Action::Type(b) | Action::Start(b) => String::from_utf8(b).unwrap(),
            other => panic!("expected typing, got {other:?}"),
        }
    }

    #[test]
    fn logs_in_turns_echo_off_and_starts_the_reporter() {
        let mut m = Login::new("root", "s3cret", "STACK_CONTAINERS=\"redis web\"".into(), 1.0);
        assert_eq!(m.on_line(&l(1.0, "Welcome to Debian")), Action::Nothing);
        assert_eq!(typed(m.on_line(&l(20.0, "device login: "))), "root\n");
        assert_eq!(typed(m.on_line(&l(21.0, "Password: "))), "s3cret\n");
        assert_eq!(m.on_line(&l(22.0, "Linux device 6.1.0 #1 SMP")), Action::Nothing);
        assert_eq!(typed(m.on_line(&l(23.0, "root@device:~#"))), "stty -echo\n");
        assert_eq!(m.on_tick(24.0), Action::Nothing, "stty needs a moment");
        let p = typed(m.on_tick(25.5));
        assert!(
            p.contains("STACK_CONTAINERS=\"redis web\"") && p.contains("AIRBOOT_STATUS_CONF=/run/airboot-status.conf")
        );
        assert!(p.contains("AIRBOOT-STATUS v1 begin") && p.ends_with("&\n"), "the whole reporter, started detached");
        assert!(!p.contains("s3cret"));
        assert_eq!(m.started_t, Some(25.5));
        // Nothing more to type, whatever comes.
        assert_eq!(m.on_line(&l(30.0, "device login:")), Action::Nothing);
        assert_eq!(m.on_tick(99.0), Action::Nothing);
    }

    #[test]
    fn an_empty_password_is_not_asked_and_no_prompt_is_a_failure_not_blind_typing() {
        let mut m = Login::new("root", "", String::new(), 1.0);
        typed(m.on_line(&l(10.0, "airboot-fixture login: [   16.69] Initializing XFRM netlink socket")));
        // No "Password:", and a busybox-style prompt.
        assert_eq!(typed(m.on_line(&l(11.0, "~ >"))), "stty -echo\n");
        let mut m = Login::new("root", "", String::new(), 1.0);
        typed(m.on_line(&l(10.0, "device login:")));
        assert_eq!(m.on_line(&l(11.0, "Welcome!")), Action::Nothing);
        assert_eq!(m.on_tick(29.9), Action::Nothing);
        assert!(matches!(m.on_tick(30.0), Action::Fail(why) if why.contains("no shell prompt")));
        assert_eq!(m.on_tick(99.0), Action::Nothing, "nothing typed after giving up");
        // Emulated, the wait is scaled, at most 3x: 60 s, not 200.
        let mut m = Login::new("root", "", String::new(), 10.0);
        typed(m.on_line(&l(10.0, "device login:")));
        assert_eq!(m.on_tick(69.9), Action::Nothing);
        assert!(matches!(m.on_tick(70.0), Action::Fail(why) if why.contains("within 60s")));
    }

    /// A password prompt finished on its line by a kernel message (seen on
    /// a real boot) is still a password prompt.
    #[test]
    fn a_password_prompt_with_a_kernel_message_after_it_is_answered() {
        let mut m = Login::new("nobody", "pw", String::new(), 1.0);
        typed(m.on_line(&l(21.3, "airboot-fixture login:")));
        assert_eq!(typed(m.on_line(&l(22.0, "Password: [   18.645766] Initializing XFRM netlink socket"))), "pw\n");
    }

    #[test]
    fn a_wrong_password_fails_naming_the_user_not_the_password() {
        let mut m = Login::new("admin", "wrong", String::new(), 1.0);
        typed(m.on_line(&l(1.0, "device login:")));
        typed(m.on_line(&l(2.0, "Password:")));
        match m.on_line(&l(5.0, "Login incorrect")) {
            Action::Fail(why) => assert!(why.contains("\"admin\"") && !why.contains("wrong"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut m = Login::new("admin", "x", String::new(), 1.0);
        typed(m.on_line(&l(1.0, "device login:")));
        typed(m.on_line(&l(2.0, "Password:")));
        assert!(matches!(m.on_line(&l(9.0, "device login:")), Action::Fail(_)));
    }

    /// The console scans a prompt while it is unfinished, then once more
    /// when a kernel message ends its line: one prompt, one user name.
    #[test]
    fn a_prompt_seen_twice_is_answered_once() {
        let mut m = Login::new("root", "", String::new(), 1.0);
        assert_eq!(typed(m.on_line(&l(19.1, "airboot-fixture login:"))), "root\n");
        assert_eq!(
            m.on_line(&l(19.2, "airboot-fixture login: [   15.85] Initializing XFRM netlink socket")),
            Action::Nothing
        );
        assert_eq!(typed(m.on_line(&l(21.0, "root@airboot-fixture:~#"))), "stty -echo\n");
    }
}
