//! The package's metadata: the control file, the shared libraries the
//! binary needs as `Depends`, the installed size, and the maintainer
//! scripts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// What goes into `DEBIAN/control` besides the fixed fields.
pub(super) struct Control<'a> {
    pub(super) version: &'a str,
    pub(super) arch: &'a str,
    pub(super) maintainer: &'a str,
    pub(super) installed_size_kib: u64,
    pub(super) depends: &'a str,
}

/// The package description: a synopsis, then paragraphs indented by one
/// space, lines under 80 columns (Debian policy 5.6.13).
const DESCRIPTION: &str = "\
race detector for Linux anonymous memory (eBPF)
 detector attaches BPF probes to an unmodified running kernel and watches
 the swap cache, swap entries, folios, PTEs and GUP pins. It reports, with
 the evidence, swap-entry reuse in UFFDIO_MOVE windows (ABA), stale folio
 moves, MADV_FREE reclaim racing direct I/O, refcount, mapcount and pin
 invariants, and swap-cache pin contention.
 .
 It runs as a live terminal UI (detector live), captures to a file
 (detector record), analyzes captures anywhere without privileges
 (detector replay), and runs as a long-lived agent under systemd
 (detector.service, installed but not enabled).";

impl Control<'_> {
    pub(super) fn render(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "Package: detector\n\
             Version: {}\n\
             Architecture: {}\n\
             Maintainer: {}\n\
             Installed-Size: {}\n",
            self.version, self.arch, self.maintainer, self.installed_size_kib
        );
        if !self.depends.is_empty() {
            let _ = writeln!(s, "Depends: {}", self.depends);
        }
        let _ = writeln!(
            s,
            "Section: admin\nPriority: optional\nDescription: {DESCRIPTION}"
        );
        s
    }
}

/// `Installed-Size` as dpkg-gencontrol computes it: every regular file's
/// size rounded up to KiB, plus 1 KiB for every other inode (directories,
/// symlinks), `DEBIAN/` left out.
pub(super) fn installed_size_kib(root: &Path) -> std::io::Result<u64> {
    fn walk(dir: &Path, top: bool, total: &mut u64) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if top && e.file_name() == "DEBIAN" {
                continue;
            }
            let meta = e.path().symlink_metadata()?;
            if meta.is_file() {
                *total += meta.len().div_ceil(1024);
            } else {
                *total += 1;
                if meta.is_dir() {
                    walk(&e.path(), false, total)?;
                }
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(root, true, &mut total)?;
    Ok(total)
}

/// The `Depends` field for the binary's shared libraries: what
/// dpkg-shlibdeps says (versioned by the symbols it uses) when dpkg-dev is
/// installed, else the packages owning what `ldd` resolves (unversioned).
/// `pkgdir` is the debhelper-style directory holding `debian/control` and
/// `debian/detector/` (the staged tree the binary is in).
pub(super) fn depends(pkgdir: &Path, binary: &Path) -> Result<String> {
    if super::has("dpkg-shlibdeps") {
        let out = Command::new("dpkg-shlibdeps")
            .current_dir(pkgdir)
            .arg("-O")
            .arg(format!("-e{}", binary.display()))
            .output()
            .context("running dpkg-shlibdeps")?;
        if !out.status.success() {
            bail!(
                "dpkg-shlibdeps failed on {}: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return shlibdeps_depends(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
            format!(
                "dpkg-shlibdeps printed no shlibs:Depends for {}",
                binary.display()
            )
        });
    }
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (install dpkg-dev for dpkg-shlibdeps instead)")?;
    if !out.status.success() {
        bail!("ldd failed on {}", binary.display());
    }
    let mut packages = Vec::new();
    for lib in ldd_paths(&String::from_utf8_lossy(&out.stdout)) {
        let pkg = owner(&lib).or_else(|| owner(&std::fs::canonicalize(&lib).ok()?));
        let Some(pkg) = pkg else {
            bail!(
                "no installed package owns {} (the binary links it); install dpkg-dev so that \
                 dpkg-shlibdeps can work it out",
                lib.display()
            );
        };
        if !packages.contains(&pkg) {
            packages.push(pkg);
        }
    }
    Ok(packages.join(", "))
}

/// `shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)` -> the list.
fn shlibdeps_depends(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(|d| d.trim().to_string())
}

/// The resolved paths in `ldd` output (`libc.so.6 => /lib/.../libc.so.6
/// (0x...)`); the vDSO and the loader's own line have none to own.
fn ldd_paths(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("=> ")?;
            let path = rest.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The package `dpkg -S` names as owning `path`, without the architecture.
fn owner(path: &Path) -> Option<String> {
    let out = Command::new("dpkg").arg("-S").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    dpkg_s_package(&String::from_utf8_lossy(&out.stdout))
}

/// `libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6` -> `libc6`.
fn dpkg_s_package(out: &str) -> Option<String> {
    let line = out.lines().next()?;
    let (pkgs, _) = line.split_once(": ")?;
    let first = pkgs.split(", ").next()?;
    let name = first.split(':').next()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The maintainer scripts: systemd learns about the unit on install and
/// forgets it on removal; the service is never enabled or started by the
/// package (attaching kernel probes is the operator's decision), restarted
/// on upgrade only if it was running, stopped before removal; purge deletes
/// its state (findings, snapshots) and the link `systemctl enable` made.
/// The systemd calls only run when systemd is the running init
/// (`/run/systemd/system`), so installing into a container or chroot works.
pub(super) const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    # $2 is the version being upgraded from: restart a running agent so
    # that it runs the new binary.
    if [ -n "$2" ]; then
        deb-systemd-invoke try-restart detector.service >/dev/null || true
    fi
fi
exit 0
"#;

pub(super) const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop detector.service >/dev/null || true
fi
exit 0
"#;

pub(super) const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ]; then
    # The agent's findings and snapshots: systemd keeps a dynamic user's
    # state under /var/lib/private and links it from /var/lib.
    rm -rf /var/lib/private/detector /var/lib/detector
    rm -f /etc/systemd/system/multi-user.target.wants/detector.service
fi
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_file_has_the_fields_dpkg_requires() {
        let c = Control {
            version: "0.1.0",
            arch: "amd64",
            maintainer: "A <a@example.org>",
            installed_size_kib: 4321,
            depends: "libc6 (>= 2.34)",
        }
        .render();
        for field in [
            "Package: detector\n",
            "Version: 0.1.0\n",
            "Architecture: amd64\n",
            "Maintainer: A <a@example.org>\n",
            "Installed-Size: 4321\n",
            "Depends: libc6 (>= 2.34)\n",
            "Description: race detector",
        ] {
            assert!(c.contains(field), "{field:?} in {c}");
        }
        assert!(c.ends_with('\n'));
        // Continuation lines start with a space, none longer than 80.
        let desc = c.split("Description: ").nth(1).unwrap();
        for l in desc.lines().skip(1) {
            assert!(l.starts_with(' ') && l.len() <= 80, "{l:?}");
        }
    }

    #[test]
    fn shared_library_owners_are_read_from_each_tool() {
        assert_eq!(
            shlibdeps_depends(
                "shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)\nmisc:Depends=\n"
            )
            .as_deref(),
            Some("libc6 (>= 2.34), libgcc-s1 (>= 4.2)")
        );
        assert_eq!(shlibdeps_depends("warning: nothing\n"), None);
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(ldd),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
            ]
        );
        assert_eq!(
            dpkg_s_package("libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6\n").as_deref(),
            Some("libc6")
        );
        assert_eq!(
            dpkg_s_package("libfoo1:amd64, libfoo1:i386: /usr/lib/libfoo.so.1\n").as_deref(),
            Some("libfoo1")
        );
    }

    #[test]
    fn installed_size_rounds_each_file_up_and_skips_debian() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(root.join("usr/bin/a"), vec![0u8; 1025]).unwrap();
        std::fs::write(root.join("usr/b"), b"x").unwrap();
        std::fs::write(root.join("DEBIAN/control"), vec![0u8; 5000]).unwrap();
        // usr, usr/bin: 2; a: 2 KiB; b: 1 KiB.
        assert_eq!(installed_size_kib(root).unwrap(), 5);
    }
}
