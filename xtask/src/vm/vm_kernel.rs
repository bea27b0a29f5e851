//! The guest kernels: Debian cloud kernels fetched with `apt-get download`,
//! unpacked once under `target/vm/<kernel>/`, and the kernel modules a test
//! needs (with their dependencies, decompressed for busybox `insmod`).
//!
//! 6.1 and 6.12 come from the host's own apt sources (bookworm,
//! bookworm-backports). The newer lines come from Debian suites the host
//! does not use (trixie-backports, sid): those are read through a private
//! apt configuration under `target/vm/apt/`, so the host's apt stays on
//! bookworm. Newer images are split: the `linux-image-*` package of 7.x is a
//! stub that depends on `linux-binary-*` (the kernel), `linux-modules-*`
//! and `linux-base-*` (`modules.builtin`), all downloaded and unpacked into
//! one tree.
//!
//! `6.12-inject` is not fetched: it is Debian's 6.12 source built by
//! `cargo xtask build-kernel` with the race-injection patches (no modules).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

/// A kernel line the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum KernelLine {
    /// Debian 6.12 (bookworm-backports / bookworm-security): has UFFDIO_MOVE.
    #[value(name = "6.12")]
    V6_12,
    /// Debian 6.1 LTS (bookworm): no UFFDIO_MOVE, older symbol names.
    #[value(name = "6.1")]
    V6_1,
    /// Debian 6.18 (trixie-backports): the swap cache in per-cluster swap
    /// tables, SWAP_HAS_CACHE still in `swap_map`.
    #[value(name = "6.18")]
    V6_18,
    /// Debian 7.2 (sid, and trixie-backports): swap tables only; the
    /// swap-cache folio is the swap-in pin, `swapcache_prepare` is gone.
    #[value(name = "7.2")]
    V7_2,
    /// Debian's 6.12 source built by `cargo xtask build-kernel` with the
    /// race-injection patches (active only for tasks named `inj-*`).
    #[value(name = "6.12-inject")]
    V6_12Inject,
}

/// Where apt finds a line's packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The host's apt sources (`.ci/setup` adds bookworm-backports).
    Host,
    /// The private apt configuration under `target/vm/apt/`, which lists
    /// these suites of the Debian archive.
    Private,
}

/// Suites of the private apt configuration: every line that uses it
/// searches all of them and takes the newest package of its line.
const PRIVATE_SUITES: &[&str] = &["trixie-backports", "sid"];

/// The private package lists are refreshed when older than this, so a
/// version the archive has since dropped (sid moves fast) is not asked for.
const LISTS_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

impl KernelLine {
    /// Every line, oldest first.
    pub(crate) const ALL: &'static [KernelLine] = &[
        KernelLine::V6_1,
        KernelLine::V6_12,
        KernelLine::V6_18,
        KernelLine::V7_2,
    ];

    /// The Debian lines and the injected kernel: what a test may name.
    pub(crate) const EVERY: &'static [KernelLine] = &[
        KernelLine::V6_1,
        KernelLine::V6_12,
        KernelLine::V6_18,
        KernelLine::V7_2,
        KernelLine::V6_12Inject,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KernelLine::V6_12 => "6.12",
            KernelLine::V6_1 => "6.1",
            KernelLine::V6_18 => "6.18",
            KernelLine::V7_2 => "7.2",
            KernelLine::V6_12Inject => "6.12-inject",
        }
    }

    /// Regex over package names for `apt-cache search --names-only`, and the
    /// version part of a matching name used to pick the newest.
    fn package_pattern(self) -> &'static str {
        match self {
            KernelLine::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
            KernelLine::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
            KernelLine::V6_18 => r"^linux-image-6\.18\.[0-9]+\+deb[0-9]+-cloud-amd64$",
            KernelLine::V7_2 => r"^linux-image-7\.2\.[0-9]+\+deb[0-9]+-cloud-amd64$",
            KernelLine::V6_12Inject => r"^$",
        }
    }

    fn source(self) -> Source {
        match self {
            KernelLine::V6_12 | KernelLine::V6_1 => Source::Host,
            KernelLine::V6_18 | KernelLine::V7_2 => Source::Private,
            // Built locally: `fetch` never asks apt for it.
            KernelLine::V6_12Inject => Source::Host,
        }
    }
}

/// An unpacked kernel package.
pub(crate) struct Kernel {
    pub(crate) line: KernelLine,
    pub(crate) package: String,
    /// Debian version of the package (`6.18.15-1~bpo13+1`), or empty when
    /// a cached package is used without apt.
    pub(crate) version: String,
    /// `uname -r` of the kernel (the directory under `lib/modules`).
    pub(crate) release: String,
    pub(crate) vmlinuz: PathBuf,
    modules_dir: PathBuf,
    /// Everything the guest needs is built in (the injected kernel).
    no_modules: bool,
}

impl Kernel {
    /// One line naming the kernel exactly, for every result.
    pub(crate) fn describe(&self) -> String {
        if self.version.is_empty() {
            format!("{}, package {}", self.release, self.package)
        } else {
            format!(
                "{}, package {} {}",
                self.release, self.package, self.version
            )
        }
    }
}

/// Numeric components of a package name (`6.12.113` -> [6, 12, 113]), so the
/// newest point release sorts last without a Debian version comparator.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// `apt-get` / `apt-cache` with the options that select a line's source.
struct Apt {
    /// `-o` options; empty for the host's configuration.
    opts: Vec<String>,
    /// Where the private configuration lives (None: the host's).
    dir: Option<PathBuf>,
}

impl Apt {
    fn for_line(line: KernelLine, vm_root: &Path) -> Result<Apt> {
        match line.source() {
            Source::Host => Ok(Apt {
                opts: Vec::new(),
                dir: None,
            }),
            Source::Private => Apt::private(&vm_root.join("apt")),
        }
    }

    /// The private configuration: its own sources list, package lists,
    /// cache and an empty dpkg status, so nothing of the host's apt state is
    /// read or written. Signatures are checked against the host's Debian
    /// archive keyring (bookworm's `debian-archive-keyring` carries the
    /// trixie keys, which sign trixie-backports and sid).
    fn private(dir: &Path) -> Result<Apt> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let sources = dir.join("sources.list");
        let text: String = PRIVATE_SUITES
            .iter()
            .map(|s| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                     http://deb.debian.org/debian {s} main\n"
                )
            })
            .collect();
        if fs::read_to_string(&sources).ok().as_deref() != Some(text.as_str()) {
            fs::write(&sources, &text)?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let p = |k: &str, v: &Path| format!("{k}={}", v.display());
        let opts = vec![
            p("Dir::Etc::sourcelist", &sources),
            "Dir::Etc::sourceparts=-".into(),
            p("Dir::State::Lists", &dir.join("lists")),
            p("Dir::Cache", &dir.join("cache")),
            p("Dir::State::status", &status),
            // Only the package lists: no translations, no AppStream data.
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            // Downloads land in target/, which the _apt sandbox user may not
            // be able to write.
            "APT::Sandbox::User=root".into(),
        ];
        Ok(Apt {
            opts,
            dir: Some(dir.to_path_buf()),
        })
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        c
    }

    /// Age of the private package lists (None: never fetched).
    fn lists_age(&self) -> Option<Duration> {
        let dir = self.dir.as_ref()?.join("lists");
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("InRelease"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    /// `apt-get update` of the private configuration (the host's is left
    /// alone: `.ci/setup` maintains it). Failure is reported, not fatal:
    /// lists from an earlier update, or an unpacked kernel, may still do.
    fn update(&self, force: bool) -> bool {
        if self.dir.is_none() {
            return false;
        }
        if !force && self.lists_age().is_some_and(|a| a < LISTS_MAX_AGE) {
            return true;
        }
        eprintln!(
            "vm: apt-get update of the private sources ({})",
            PRIVATE_SUITES.join(", ")
        );
        let out = self.command("apt-get").args(["update", "-q"]).output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => {
                eprintln!(
                    "vm: apt-get update failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                false
            }
            Err(e) => {
                eprintln!("vm: cannot run apt-get: {e}");
                false
            }
        }
    }

    fn newest(&self, line: KernelLine) -> Result<Option<String>> {
        let out = self
            .command("apt-cache")
            .args(["search", "--names-only", line.package_pattern()])
            .output()
            .context("running apt-cache (is this a Debian system?)")?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        names.sort_by_key(|n| version_key(n));
        Ok(names.last().map(std::string::ToString::to_string))
    }

    /// The candidate version apt would download.
    fn version_of(&self, package: &str) -> String {
        let Ok(out) = self
            .command("apt-cache")
            .args(["show", "--no-all-versions", package])
            .output()
        else {
            return String::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The image package and the real packages it depends on that belong to
    /// the same kernel build (their names carry the same release string):
    /// `linux-binary-*`, `linux-modules-*`, `linux-base-*` on 7.x. Virtual
    /// dependencies (`<...>`) and generic ones (`kmod`, `linux-base`) are
    /// not part of the kernel.
    fn kernel_packages(&self, image: &str) -> Result<Vec<String>> {
        let release = image
            .trim_start_matches("linux-image-")
            .trim_end_matches("-unsigned");
        let out = self
            .command("apt-cache")
            .args(["depends", image])
            .output()
            .context("running apt-cache depends")?;
        let mut v = vec![image.to_string()];
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let l = l.trim().trim_start_matches('|');
            let Some(dep) = l.strip_prefix("Depends: ") else {
                continue;
            };
            let dep = dep.trim();
            if !dep.starts_with('<') && dep.contains(release) && !v.iter().any(|x| x == dep) {
                v.push(dep.to_string());
            }
        }
        Ok(v)
    }

    fn download(&self, packages: &[String], dir: &Path) -> Result<()> {
        let st = self
            .command("apt-get")
            .args(["download", "-q"])
            .args(packages)
            .current_dir(dir)
            .status()
            .context("running apt-get download")?;
        if !st.success() {
            bail!(
                "`apt-get download {}` failed; check network access and apt sources",
                packages.join(" ")
            );
        }
        Ok(())
    }
}

/// Already unpacked packages of this line, newest last.
fn cached_packages(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("unpacked.ok").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort_by_key(|n| version_key(n));
    v
}

/// Downloads `image` and its kernel packages into `dir` and unpacks them
/// into `dir/root`.
fn download_and_unpack(apt: &Apt, image: &str, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let packages = apt.kernel_packages(image)?;
    eprintln!("vm: downloading {}", packages.join(" "));
    if apt.download(&packages, dir).is_err() && apt.dir.is_some() {
        // Lists older than the archive name versions it no longer has.
        apt.update(true);
        apt.download(&apt.kernel_packages(image)?, dir)?;
    }
    let debs: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if debs.is_empty() {
        bail!("apt-get download left no .deb in {}", dir.display());
    }
    for deb in &debs {
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(dir.join("root"))
            .status()
            .context("running dpkg-deb")?;
        if !st.success() {
            bail!("`dpkg-deb -x {}` failed", deb.display());
        }
        fs::remove_file(deb)?;
    }
    Ok(())
}

/// The kernel image and modules directory of an unpacked tree: `boot/` and
/// `lib/modules/` on bookworm packages, `usr/lib/modules/<release>/` (with
/// `vmlinuz` inside) on merged-/usr packages.
fn locate(unpacked: &Path) -> Result<(PathBuf, String, PathBuf)> {
    let boot = unpacked.join("boot");
    let in_boot = fs::read_dir(&boot)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some((e.path(), release))
        });
    let module_roots = [
        unpacked.join("lib/modules"),
        unpacked.join("usr/lib/modules"),
    ];
    if let Some((vmlinuz, release)) = in_boot {
        let modules = module_roots
            .iter()
            .map(|r| r.join(&release))
            .find(|p| p.is_dir())
            .unwrap_or_else(|| module_roots[0].join(&release));
        return Ok((vmlinuz, release, modules));
    }
    for r in &module_roots {
        for e in fs::read_dir(r).into_iter().flatten().flatten() {
            if e.path().join("vmlinuz").is_file() {
                let release = e.file_name().to_string_lossy().into_owned();
                return Ok((e.path().join("vmlinuz"), release, e.path()));
            }
        }
    }
    bail!(
        "no vmlinuz in {} (neither boot/vmlinuz-* nor usr/lib/modules/*/vmlinuz)",
        unpacked.display()
    )
}

/// The injected kernel, built (or taken from the cache) by
/// `cargo xtask build-kernel`.
fn built_inject() -> Result<Kernel> {
    let b = crate::kernel_build::ensure(&crate::kernel_build::Args {
        source: PathBuf::from(crate::kernel_build::SOURCE_TARBALL),
        ..Default::default()
    })?;
    Ok(Kernel {
        line: KernelLine::V6_12Inject,
        package: format!(
            "linux-source-6.12 {} + {} patches, {}",
            b.source_version,
            b.patches,
            b.dir.display()
        ),
        version: String::new(),
        release: b.release,
        vmlinuz: b.bzimage,
        modules_dir: PathBuf::new(),
        no_modules: true,
    })
}

/// Resolves, downloads (once) and unpacks the newest kernel of `line`.
pub(crate) fn fetch(line: KernelLine, vm_root: &Path) -> Result<Kernel> {
    if line == KernelLine::V6_12Inject {
        return built_inject();
    }
    let root = vm_root.join(line.as_str()).join("kernels");
    fs::create_dir_all(&root)?;
    let apt = Apt::for_line(line, vm_root)?;
    apt.update(false);
    let newest = apt.newest(line)?;
    let (package, version) = match newest {
        Some(p) => {
            let v = apt.version_of(&p);
            (p, v)
        }
        None => match cached_packages(&root).pop() {
            Some(p) => {
                eprintln!(
                    "vm: apt-cache knows no {} cloud kernel; using cached {p}",
                    line.as_str()
                );
                let v = fs::read_to_string(root.join(&p).join("version")).unwrap_or_default();
                (p, v.trim().to_string())
            }
            None => bail!(
                "no Debian {} cloud kernel package is known to apt; {}",
                line.as_str(),
                match line.source() {
                    Source::Host =>
                        "add bookworm-backports to the apt sources and run \
                                     `apt-get update` (or `bash .ci/setup`)",
                    Source::Private =>
                        "the package lists under target/vm/apt/ could not be fetched: \
                         check network access to deb.debian.org and that debian-archive-keyring \
                         carries the trixie keys (2023.3+deb12u2 or newer)",
                }
            ),
        },
    };
    let dir = root.join(&package);
    if !dir.join("unpacked.ok").exists() {
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        download_and_unpack(&apt, &package, &dir)?;
        fs::write(dir.join("version"), &version)?;
        fs::write(dir.join("unpacked.ok"), &package)?;
    }
    let (vmlinuz, release, modules_dir) = locate(&dir.join("root"))?;
    Ok(Kernel {
        line,
        package,
        version,
        release,
        vmlinuz,
        modules_dir,
        no_modules: false,
    })
}

/// Module name as the kernel spells it in `depends=` (dashes become underscores).
fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name
        .strip_suffix(".ko.xz")
        .or_else(|| file_name.strip_suffix(".ko"))?;
    Some(stem.replace('-', "_"))
}

fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            index_modules(&p, out)?;
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str()).and_then(module_name) {
            out.insert(n, p);
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|x| x == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("running xz (install xz-utils)")?;
        if !out.status.success() {
            bail!("xz could not decompress {}", path.display());
        }
        Ok(out.stdout)
    } else {
        Ok(fs::read(path)?)
    }
}

/// The `depends=` list of a module's `.modinfo` section.
fn depends_of(image: &[u8]) -> Vec<String> {
    image
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// A decompressed module ready for `insmod`.
pub(crate) struct Module {
    pub(crate) name: String,
    pub(crate) image: Vec<u8>,
}

impl Kernel {
    /// Built-in modules (`modules.builtin`), which need no loading.
    fn builtin(&self) -> HashSet<String> {
        fs::read_to_string(self.modules_dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next().and_then(module_name))
            .collect()
    }

    /// `wanted` modules and everything they depend on, dependencies first.
    /// Names that are built into this kernel are skipped; a name ending in
    /// `?` is loaded only where this kernel ships it as a module.
    pub(crate) fn modules(&self, wanted: &[&str]) -> Result<Vec<Module>> {
        if self.no_modules {
            return Ok(Vec::new());
        }
        let mut index = BTreeMap::new();
        index_modules(&self.modules_dir.join("kernel"), &mut index)?;
        let builtin = self.builtin();
        let mut done = HashSet::new();
        let mut out = Vec::new();
        for w in wanted {
            let name = w.replace('-', "_");
            let name = match name.strip_suffix('?') {
                Some(n) if !index.contains_key(n) => continue,
                Some(n) => n.to_string(),
                None => name,
            };
            self.visit(&name, &index, &builtin, &mut done, &mut out, 0)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &HashSet<String>,
        done: &mut HashSet<String>,
        out: &mut Vec<Module>,
        depth: usize,
    ) -> Result<()> {
        if depth > 32 {
            bail!("module dependency loop at {name}");
        }
        if !done.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = index.get(name) else {
            if builtin.contains(name) {
                return Ok(());
            }
            bail!(
                "module {name} is neither built into {} nor shipped in {}",
                self.release,
                self.package
            );
        };
        let image = read_module(path)?;
        for dep in depends_of(&image) {
            self.visit(&dep, index, builtin, done, out, depth + 1)?;
        }
        out.push(Module {
            name: name.to_string(),
            image,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_point_release_sorts_last() {
        let mut v = [
            "linux-image-6.12.113+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.107+deb12-cloud-amd64-unsigned",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v[2], "linux-image-6.12.113+deb12-cloud-amd64-unsigned");
        let mut w = [
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
        ];
        w.sort_by_key(|n| version_key(n));
        assert_eq!(w[1], "linux-image-6.1.0-56-cloud-amd64-unsigned");
    }

    #[test]
    fn modinfo_depends_is_parsed() {
        let img = b"\x7fELF junk\0license=GPL\0depends=virtio,virtio-ring\0vermagic=6.1\0";
        assert_eq!(depends_of(img), vec!["virtio", "virtio_ring"]);
        assert!(depends_of(b"depends=\0").is_empty());
        assert_eq!(
            module_name("lz4hc_compress.ko.xz").as_deref(),
            Some("lz4hc_compress")
        );
        assert_eq!(module_name("virtio-blk.ko").as_deref(), Some("virtio_blk"));
        assert_eq!(module_name("modules.dep"), None);
    }
}
