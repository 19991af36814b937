//! The environment a desktop session starts in, as a display manager would give it: a D-Bus
//! session bus, the XDG variables, and a virtual display's defaults (no screen locker, no
//! screensaver, no power manager, no compositor, no first-run dialog of the panel).
//!
//! The defaults are files in the desktop's own directory, listed first in
//! `XDG_CONFIG_DIRS`: the user's own settings (`~/.config`) still win over them, and stopping
//! the desktop removes them. Nothing here reads a user's files.

use std::fs;
use std::path::{Path, PathBuf};

use super::{AgentError, make_private_dir, write_private};

/// Autostart entries hidden in a virtual display: a locker or screensaver would lock the user
/// out of a desktop they reach only through hpcdesk, and a power manager has no power to
/// manage.
const HIDDEN_AUTOSTART: &[&str] = &[
    "xfce4-screensaver",
    "xscreensaver",
    "light-locker",
    "gnome-screensaver",
    "mate-screensaver",
    "xfce4-power-manager",
    "mate-power-manager",
    "org.kde.powerdevil",
];

/// xfconf system defaults (`xfce4/xfconf/xfce-perchannel-xml/<channel>.xml`): no compositor
/// (every frame would be drawn twice in software), no lock on suspend, no session saving
/// prompt, screensaver and its lock off, and no ssh-agent or gpg-agent started by the
/// session: both make themselves undumpable, so their environment (and the desktop's
/// marker in it) cannot be read, and stopping the desktop could not find them.
const XFCONF: &[(&str, &str)] = &[
    (
        "xfwm4",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfwm4" version="1.0">
  <property name="general" type="empty">
    <property name="use_compositing" type="bool" value="false"/>
  </property>
</channel>
"#,
    ),
    (
        "xfce4-session",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-session" version="1.0">
  <property name="general" type="empty">
    <property name="SaveOnExit" type="bool" value="false"/>
    <property name="LockCommand" type="string" value=""/>
  </property>
  <property name="shutdown" type="empty">
    <property name="LockScreen" type="bool" value="false"/>
  </property>
  <property name="startup" type="empty">
    <property name="ssh-agent" type="empty">
      <property name="enabled" type="bool" value="false"/>
    </property>
    <property name="gpg-agent" type="empty">
      <property name="enabled" type="bool" value="false"/>
    </property>
  </property>
</channel>
"#,
    ),
    (
        "xfce4-screensaver",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-screensaver" version="1.0">
  <property name="saver" type="empty">
    <property name="enabled" type="bool" value="false"/>
  </property>
  <property name="lock" type="empty">
    <property name="enabled" type="bool" value="false"/>
  </property>
</channel>
"#,
    ),
];

/// The panel's packaged layout. Without a configuration of its own the panel asks, in a
/// dialog, whether to use it; given as the channel's system default it just does.
const PANEL_DEFAULT: &str = "/etc/xdg/xfce4/panel/default.xml";

/// Writes the session defaults into `dir/xdg` and returns the variables of the session.
pub fn prepare(dir: &Path, uid: u32) -> Result<Vec<(String, String)>, AgentError> {
    let xdg = dir.join("xdg");
    let autostart = xdg.join("autostart");
    make_private_dir(&autostart)?;
    for name in HIDDEN_AUTOSTART {
        write_private(
            &autostart.join(format!("{name}.desktop")),
            b"[Desktop Entry]\nType=Application\nHidden=true\n",
        )?;
    }
    let channels = xdg.join("xfce4/xfconf/xfce-perchannel-xml");
    make_private_dir(&channels)?;
    for (channel, xml) in XFCONF {
        write_private(&channels.join(format!("{channel}.xml")), xml.as_bytes())?;
    }
    // A system file (root's), not the user's; bounded all the same.
    if let Ok(layout) = crate::capped::small_file(Path::new(PANEL_DEFAULT), 1 << 20) {
        write_private(&channels.join("xfce4-panel.xml"), &layout)?;
    }
    let runtime = runtime_dir(dir, uid)?;
    Ok(vec![
        ("XDG_SESSION_TYPE".into(), "x11".into()),
        ("XDG_SESSION_CLASS".into(), "user".into()),
        (
            "XDG_CONFIG_DIRS".into(),
            format!("{}:/etc/xdg", xdg.display()),
        ),
        ("XDG_DATA_DIRS".into(), "/usr/local/share:/usr/share".into()),
        ("XDG_RUNTIME_DIR".into(), runtime.display().to_string()),
    ])
}

/// `/run/user/<uid>` when systemd-logind made it for this account, otherwise a private
/// directory of the desktop's own.
fn runtime_dir(dir: &Path, uid: u32) -> Result<PathBuf, AgentError> {
    use std::os::unix::fs::MetadataExt;
    let system = PathBuf::from(format!("/run/user/{uid}"));
    if fs::symlink_metadata(&system)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
    {
        return Ok(system);
    }
    let own = dir.join("run");
    make_private_dir(&own)?;
    Ok(own)
}

/// The argv that starts the session command `argv` in a D-Bus session of its own, ended
/// with it (`dbus-launch --exit-with-session`), when dbus-launch is installed.
pub fn in_dbus_session(argv: &[String], path: &str) -> Vec<String> {
    match crate::desktops::find_in(path, "dbus-launch") {
        Some(dbus) => [
            dbus.to_string_lossy().into_owned(),
            "--exit-with-session".to_owned(),
        ]
        .into_iter()
        .chain(argv.iter().cloned())
        .collect(),
        None => argv.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hide_lockers_and_keep_to_the_desktop_directory() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let env = prepare(dir.path(), uid).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let dirs = get("XDG_CONFIG_DIRS").unwrap();
        assert!(dirs.starts_with(&dir.path().join("xdg").display().to_string()));
        assert!(dirs.ends_with(":/etc/xdg"));
        let locker =
            fs::read_to_string(dir.path().join("xdg/autostart/light-locker.desktop")).unwrap();
        assert!(locker.contains("Hidden=true"));
        let wm = fs::read_to_string(
            dir.path()
                .join("xdg/xfce4/xfconf/xfce-perchannel-xml/xfwm4.xml"),
        )
        .unwrap();
        assert!(wm.contains("use_compositing\" type=\"bool\" value=\"false\""));
        let run = get("XDG_RUNTIME_DIR").unwrap();
        assert!(
            run == format!("/run/user/{uid}")
                || run == dir.path().join("run").display().to_string()
        );
    }

    #[test]
    fn the_session_gets_a_bus_of_its_own_when_dbus_launch_exists() {
        let argv = vec!["xfce4-session".to_owned()];
        assert_eq!(in_dbus_session(&argv, "/nonexistent"), argv);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dbus-launch");
        std::fs::write(&p, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wrapped = in_dbus_session(&argv, dir.path().to_str().unwrap());
        assert_eq!(
            wrapped,
            [
                p.display().to_string(),
                "--exit-with-session".into(),
                "xfce4-session".into()
            ]
        );
    }
}
