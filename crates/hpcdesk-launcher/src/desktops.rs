//! The desktops users choose from at create: [`DesktopChoice`] (`[[launcher.desktops]]`: a
//! name, a title and the command lines that start it), the default list built from what is
//! installed ([`installed`]), and the screen size of a desktop ([`Geometry`]).
//!
//! A choice is only ever a name from this list: what runs is the operator's command line,
//! split like a shell would but never run by one; a user's input never reaches it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// One desktop users can choose (`[[launcher.desktops]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopChoice {
    /// What a create names (`{"desktop": "xfce"}`): 1-32 lower-case letters, digits, `-`, `_`.
    pub name: DesktopName,
    /// What the portal shows.
    pub title: String,
    /// The command line(s) started in the desktop, in order: the first is the session (run
    /// in its own D-Bus session when `dbus-launch` is installed), the others run beside it
    /// (an xterm beside a bare window manager). A string or a list of strings.
    #[serde(deserialize_with = "one_or_many")]
    pub command: Vec<String>,
}

impl DesktopChoice {
    /// The one desktop of the older `launcher.desktop = "<command line>"`, named `default`.
    pub fn single(command: &str) -> Result<Self, String> {
        Ok(DesktopChoice {
            name: DesktopName("default".into()),
            title: "Desktop".into(),
            command: checked(vec![command.to_owned()])?,
        })
    }
}

/// `lines` if there is at least one and each splits into words.
fn checked(lines: Vec<String>) -> Result<Vec<String>, String> {
    if lines.is_empty() || lines.iter().any(|c| c.trim().is_empty()) {
        return Err("a desktop needs at least one non-empty command line".into());
    }
    for c in &lines {
        shell_words::split(c).map_err(|e| format!("cannot split the command line {c:?}: {e}"))?;
    }
    Ok(lines)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let v = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    checked(v).map_err(serde::de::Error::custom)
}

/// The name of a [`DesktopChoice`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DesktopName(String);

impl DesktopName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DesktopName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DesktopName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(DesktopName(s.to_owned()))
        } else {
            Err("a desktop name is 1-32 lower-case letters, digits, '-' or '_'".into())
        }
    }
}

impl<'de> Deserialize<'de> for DesktopName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The desktops offered, and which one a create that names none gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desktops {
    list: Vec<DesktopChoice>,
    default: usize,
}

/// Why a list of desktops cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesktopsError {
    #[error("the desktop name {0:?} is used twice")]
    Twice(String),
    #[error("{name:?} is not one of the desktops ({names})")]
    NoSuchDefault { name: String, names: String },
}

impl Desktops {
    /// `list` with `default` (by name; the first when `None`). Names must be unique.
    pub fn new(
        list: Vec<DesktopChoice>,
        default: Option<&DesktopName>,
    ) -> Result<Self, DesktopsError> {
        for (i, d) in list.iter().enumerate() {
            if list[..i].iter().any(|e| e.name == d.name) {
                return Err(DesktopsError::Twice(d.name.0.clone()));
            }
        }
        let default = match default {
            None => 0,
            Some(name) => list.iter().position(|d| &d.name == name).ok_or_else(|| {
                DesktopsError::NoSuchDefault {
                    name: name.0.clone(),
                    names: names(&list),
                }
            })?,
        };
        Ok(Desktops { list, default })
    }

    /// Every desktop, in the configured order.
    pub fn list(&self) -> &[DesktopChoice] {
        &self.list
    }

    /// The default desktop (`None` when nothing is installed or configured: the agent then
    /// starts what it finds on the node).
    pub fn default_choice(&self) -> Option<&DesktopChoice> {
        self.list.get(self.default)
    }

    /// The desktop named `name`.
    pub fn find(&self, name: &str) -> Option<&DesktopChoice> {
        self.list.iter().find(|d| d.name.as_str() == name)
    }

    /// The desktop a create asked for (`None`: the default). The error says which names
    /// there are.
    pub fn choose(&self, asked: Option<&str>) -> Result<Option<&DesktopChoice>, String> {
        let Some(asked) = asked else {
            return Ok(self.default_choice());
        };
        self.list
            .iter()
            .find(|d| d.name.as_str() == asked)
            .map(Some)
            .ok_or_else(|| match self.list.is_empty() {
                true => "this site offers no choice of desktop; send no desktop".to_owned(),
                false => format!(
                    "desktop must be one of {}, not {:?}",
                    names(&self.list),
                    truncate(asked, 40)
                ),
            })
    }
}

fn names(list: &[DesktopChoice]) -> String {
    list.iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most `n` characters of `s`, for error messages that repeat input.
fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The desktops found on this machine, best first, when `[[launcher.desktops]]` is not
/// configured: XFCE, MATE, KDE Plasma, Openbox, twm. A bare window manager gets an xterm
/// beside it. Sites whose nodes differ from the server configure the list instead.
pub fn installed(path: &str) -> Vec<DesktopChoice> {
    let found = |name: &str| find_in(path, name).is_some();
    let xterm = found("xterm").then(|| "xterm -geometry 100x30+20+20".to_owned());
    let with_term = |wm: &str| {
        std::iter::once(wm.to_owned())
            .chain(xterm.clone())
            .collect()
    };
    let known: [(&str, &str, &str, bool); 5] = [
        ("xfce", "XFCE", "xfce4-session", false),
        ("mate", "MATE", "mate-session", false),
        ("kde", "KDE Plasma", "startplasma-x11", false),
        ("openbox", "Openbox", "openbox-session", true),
        ("twm", "twm (minimal)", "twm", true),
    ];
    let mut out: Vec<DesktopChoice> = known
        .into_iter()
        .filter(|(_, _, program, _)| found(program))
        .map(|(name, title, program, bare)| DesktopChoice {
            name: DesktopName(name.into()),
            title: title.into(),
            command: if bare {
                with_term(program)
            } else {
                vec![program.to_owned()]
            },
        })
        .collect();
    if out.is_empty()
        && let Some(x) = xterm
    {
        out.push(DesktopChoice {
            name: DesktopName("xterm".into()),
            title: "A terminal".into(),
            command: vec![x],
        });
    }
    out
}

/// The first file named `name` in the directories of `path` (`PATH` syntax).
pub fn find_in(path: &str, name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .map(|p| p.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A desktop's screen size, `WIDTHxHEIGHT`, within [`Geometry::MIN`] and [`Geometry::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: u16,
    pub height: u16,
}

impl Geometry {
    pub const MIN: Geometry = Geometry {
        width: 640,
        height: 480,
    };
    pub const MAX: Geometry = Geometry {
        width: 7680,
        height: 4320,
    };
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for Geometry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "geometry must be WIDTHxHEIGHT between {} and {} (e.g. 1920x1080), not {s:?}",
                Geometry::MIN,
                Geometry::MAX
            )
        };
        let (w, h) = s.split_once('x').ok_or_else(bad)?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(w) || !digits(h) {
            return Err(bad());
        }
        let g = Geometry {
            width: w.parse().map_err(|_| bad())?,
            height: h.parse().map_err(|_| bad())?,
        };
        let within = |v: u16, lo: u16, hi: u16| (lo..=hi).contains(&v);
        if !within(g.width, Self::MIN.width, Self::MAX.width)
            || !within(g.height, Self::MIN.height, Self::MAX.height)
        {
            return Err(bad());
        }
        Ok(g)
    }
}

impl Serialize for Geometry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Geometry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometries_are_checked_for_form_and_bounds() {
        assert_eq!(
            "1280x720".parse::<Geometry>().unwrap(),
            Geometry {
                width: 1280,
                height: 720
            }
        );
        for bad in [
            "",
            "1280",
            "1280x",
            "x720",
            "1280X720",
            "+1280x720",
            "1280x720x3",
            "99999x720",
            "100x100",
            "8000x720",
            " 1280x720",
            "1280x 720",
            "١٢٨٠x720",
        ] {
            let e = bad.parse::<Geometry>().unwrap_err();
            assert!(e.contains("between 640x480 and 7680x4320"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn names_are_plain_words() {
        assert!("xfce".parse::<DesktopName>().is_ok());
        assert!("my-desk_2".parse::<DesktopName>().is_ok());
        for bad in ["", "XFCE", "a b", "a/b", "x;rm", &"a".repeat(33)] {
            assert!(bad.parse::<DesktopName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_command_is_a_string_or_a_list() {
        let one: DesktopChoice =
            toml::from_str("name = \"a\"\ntitle = \"A\"\ncommand = \"twm\"").unwrap();
        assert_eq!(one.command, ["twm"]);
        let two: DesktopChoice =
            toml::from_str("name = \"a\"\ntitle = \"A\"\ncommand = [\"twm\", \"xterm -e top\"]")
                .unwrap();
        assert_eq!(two.command.len(), 2);
        for bad in ["[]", "\"\"", "\"xterm 'open\""] {
            let text = format!("name = \"a\"\ntitle = \"A\"\ncommand = {bad}");
            assert!(toml::from_str::<DesktopChoice>(&text).is_err(), "{bad}");
        }
    }

    fn choice(name: &str) -> DesktopChoice {
        DesktopChoice {
            name: name.parse().unwrap(),
            title: name.to_uppercase(),
            command: vec![name.to_owned()],
        }
    }

    #[test]
    fn a_choice_is_a_listed_name_and_the_error_lists_them() {
        let d = Desktops::new(vec![choice("xfce"), choice("twm")], None).unwrap();
        assert_eq!(d.choose(None).unwrap().unwrap().name.as_str(), "xfce");
        assert_eq!(d.choose(Some("twm")).unwrap().unwrap().name.as_str(), "twm");
        assert_eq!(
            d.choose(Some("nope")).unwrap_err(),
            "desktop must be one of xfce, twm, not \"nope\""
        );
        let long = "x".repeat(100);
        assert!(d.choose(Some(&long)).unwrap_err().len() < 100);
        let twm = "twm".parse().unwrap();
        let d = Desktops::new(vec![choice("xfce"), choice("twm")], Some(&twm)).unwrap();
        assert_eq!(d.choose(None).unwrap().unwrap().name.as_str(), "twm");
        let kde = "kde".parse().unwrap();
        assert!(Desktops::new(vec![choice("xfce")], Some(&kde)).is_err());
        assert!(Desktops::new(vec![choice("a"), choice("a")], None).is_err());
        let none = Desktops::new(vec![], None).unwrap();
        assert!(none.choose(None).unwrap().is_none());
        assert!(none.choose(Some("xfce")).is_err());
    }

    #[test]
    fn the_default_list_follows_what_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let exe = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join(name);
            std::fs::write(&p, "").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let path = dir.path().to_str().unwrap().to_owned();
        assert!(installed(&path).is_empty());
        exe("xterm");
        let l = installed(&path);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name.as_str(), "xterm");
        exe("twm");
        exe("xfce4-session");
        let l = installed(&path);
        let names: Vec<_> = l.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["xfce", "twm"]);
        assert_eq!(l[0].command, ["xfce4-session"]);
        assert_eq!(l[1].command, ["twm", "xterm -geometry 100x30+20+20"]);
        // Not executable: not installed.
        std::fs::write(dir.path().join("mate-session"), "").unwrap();
        assert_eq!(installed(&path).len(), 2);
    }
}
