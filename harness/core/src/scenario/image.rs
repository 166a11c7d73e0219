//! `[image]`: what to boot (a fixture, or the user's own disk image) and how.

use std::ops::Range;
use std::path::PathBuf;

use airboot_model::{BootMode, DiskFormat};
use serde::Deserialize;

use super::ScenarioError;
use super::error::Ctx;

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A fixture airboot builds itself (`airboot images list`).
    Fixture(String),
    /// A disk image the user's build produced; absolute after validation.
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    pub source: ImageSource,
    /// Disk format; detected from the file when absent.
    pub format: Option<DiskFormat>,
    /// `None`: the fixture's own mode, `direct` for a `path` image.
    pub boot: Option<BootMode>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// Kernel arguments added to the fixture's or `append`'s command line.
    pub append_extra: Option<String>,
    /// Whether the image carries airboot-probe (`None`: fixtures do, a
    /// `path` image is assumed not to).
    pub probe: Option<bool>,
    /// For an image without the probe: write it into the run's overlay
    /// (`None`: yes).
    pub inject: Option<bool>,
    /// For an image with no probe (none injected): log in on the serial
    /// console and start the reference reporter from the shell.
    pub login: Option<LoginSpec>,
}

/// `[image] login`: credentials for the serial getty. The password is
/// never written into a report.
#[derive(Clone, PartialEq)]
pub struct LoginSpec {
    pub user: String,
    pub password: Password,
}

#[derive(Clone, PartialEq)]
pub enum Password {
    Inline(String),
    /// Read when the run starts (first line, without its newline).
    File(PathBuf),
}

impl std::fmt::Debug for LoginSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match &self.password {
            Password::Inline(_) => "(inline, not shown)".to_string(),
            Password::File(p) => format!("(from {})", p.display()),
        };
        write!(f, "LoginSpec {{ user: {:?}, password: {p} }}", self.user)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogin {
    user: String,
    password: Option<String>,
    password_file: Option<String>,
}

impl ImageSpec {
    /// Whether the image carries airboot-probe: what the scenario says,
    /// else what the fixture's build record says (`fixture_probe`, for a
    /// fixture), else no (a user's image).
    pub fn has_probe(&self, fixture_probe: Option<bool>) -> bool {
        match (&self.source, self.probe) {
            (_, Some(said)) => said,
            (ImageSource::Fixture(_), None) => fixture_probe.unwrap_or(true),
            (ImageSource::Path(_), None) => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImage {
    fixture: Option<String>,
    path: Option<String>,
    format: Option<DiskFormat>,
    boot: Option<BootMode>,
    kernel: Option<String>,
    initrd: Option<String>,
    append: Option<String>,
    append_extra: Option<String>,
    probe: Option<bool>,
    inject: Option<bool>,
    login: Option<RawLogin>,
}

pub(super) fn validate(ri: RawImage, span: Range<usize>, cx: &Ctx) -> Result<ImageSpec, ScenarioError> {
    let err = |key: &str, message: String| cx.err(Some(span.clone()), Some(key.into()), message);
    let source = match (&ri.fixture, &ri.path) {
        (Some(f), None) => {
            for (k, v) in [("kernel", &ri.kernel), ("initrd", &ri.initrd), ("append", &ri.append)] {
                if v.is_some() {
                    return Err(err(
                        &format!("image.{k}"),
                        format!(
                            "a fixture brings its own kernel, initrd and command line: remove `{k}` or use `path` for your own image"
                        ),
                    ));
                }
            }
            ImageSource::Fixture(f.clone())
        }
        (None, Some(p)) => ImageSource::Path(cx.resolve(p)),
        (Some(_), Some(_)) => return Err(err("image", "give either `fixture` or `path`, not both".into())),
        (None, None) => {
            return Err(err(
                "image",
                "say what to boot: `fixture = \"debian-preseeded-x86_64\"` or `path = \"out/device.qcow2\"`".into(),
            ));
        }
    };
    let boot = ri.boot;
    let kernel = ri.kernel.as_deref().map(|p| cx.resolve(p));
    let initrd = ri.initrd.as_deref().map(|p| cx.resolve(p));
    if let Some(b @ (BootMode::Uefi | BootMode::Bios | BootMode::Board)) = boot {
        let why = match b {
            BootMode::Uefi => {
                "with boot = \"uefi\" the firmware boots the disk's own loader (the kernel command line is the loader entry's)"
            }
            BootMode::Bios => {
                "with boot = \"bios\" SeaBIOS boots the disk's own boot loader (the kernel command line is its configuration's)"
            }
            _ => {
                "with boot = \"board\" airboot supplies the generic kernel, its initramfs and the command line (add arguments with `append_extra`)"
            }
        };
        for (key, given) in
            [("kernel", kernel.is_some()), ("initrd", initrd.is_some()), ("append", ri.append.is_some())]
        {
            if given {
                return Err(err(&format!("image.{key}"), format!("{why}: remove `{key}`")));
            }
        }
    }
    if let ImageSource::Path(_) = source
        && boot == Some(BootMode::Direct)
        && kernel.is_none()
    {
        return Err(err(
            "image.kernel",
            "boot = \"direct\" needs `kernel` (and usually `initrd` and `append`); remove `boot` to let airboot tell how the disk boots (EFI loader: uefi, MBR boot code: bios)".into(),
        ));
    }
    if let ImageSource::Path(_) = source
        && boot.is_none()
        && kernel.is_none()
    {
        for (key, given) in [("initrd", initrd.is_some()), ("append", ri.append.is_some())] {
            if given {
                return Err(err(
                    &format!("image.{key}"),
                    format!(
                        "`{key}` is for a kernel QEMU loads itself: add `kernel`, or remove `{key}` and let the disk's own loader boot it"
                    ),
                ));
            }
        }
    }
    let image_path = match &source {
        ImageSource::Path(p) => Some(p),
        ImageSource::Fixture(_) => None,
    };
    for (key, p) in [("image.path", image_path), ("image.kernel", kernel.as_ref()), ("image.initrd", initrd.as_ref())] {
        if let Some(p) = p
            && !(cx.files)(p)
        {
            return Err(err(
                key,
                format!(
                    "{} does not exist or is not a file (relative paths are taken from the scenario's folder)",
                    p.display()
                ),
            ));
        }
    }
    let login = match ri.login {
        None => None,
        Some(l) => {
            if l.user.is_empty() || l.user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err("image.login.user", format!("{:?} is not a user name (no spaces, not empty)", l.user)));
            }
            let password = match (l.password, l.password_file) {
                (Some(p), None) if p.chars().any(|c| c == '\n' || c == '\r') => {
                    return Err(err("image.login.password", "a password is one line".into()));
                }
                (Some(p), None) => Password::Inline(p),
                (None, Some(f)) => {
                    let f = cx.resolve(&f);
                    if !(cx.files)(&f) {
                        return Err(err(
                            "image.login.password_file",
                            format!("{} does not exist or is not a file", f.display()),
                        ));
                    }
                    Password::File(f)
                }
                _ => {
                    return Err(err(
                        "image.login",
                        "give exactly one of `password` (\"\" for none) and `password_file`".into(),
                    ));
                }
            };
            Some(LoginSpec { user: l.user, password })
        }
    };
    Ok(ImageSpec {
        login,
        source,
        format: ri.format,
        boot,
        kernel,
        initrd,
        append: ri.append,
        append_extra: ri.append_extra,
        probe: ri.probe,
        inject: ri.inject,
    })
}
