//! The guest kernels: Debian cloud kernels fetched with `apt-get download`,
//! unpacked once under `target/vm/<kernel>/`, and the kernel modules a test
//! needs (with their dependencies, decompressed for busybox `insmod`); or
//! the fault-injected kernel `cargo xtask build-kernel` builds (no modules).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A kernel line the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum KernelLine {
    /// Debian 6.12 (bookworm-backports / bookworm-security): has UFFDIO_MOVE.
    #[value(name = "6.12")]
    V6_12,
    /// Debian 6.1 LTS (bookworm): no UFFDIO_MOVE, older symbol names.
    #[value(name = "6.1")]
    V6_1,
    /// Debian's 6.12 source built by `cargo xtask build-kernel` with the
    /// race-injection patches (active only for tasks named `inj-*`).
    #[value(name = "6.12-inject")]
    V6_12Inject,
}

impl KernelLine {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelLine::V6_12 => "6.12",
            KernelLine::V6_1 => "6.1",
            KernelLine::V6_12Inject => "6.12-inject",
        }
    }

    /// Lines the default suite (no `--kernel`, no `--test`) leaves out: the
    /// injected kernel is built locally (minutes) and its tests expect the
    /// races it injects.
    pub fn on_request_only(self) -> bool {
        self == KernelLine::V6_12Inject
    }

    /// Whether a test listing `kernels` runs on this line. The injected
    /// kernel is a 6.12 kernel: asked for by name, it also runs every 6.12
    /// test, whose tasks do not opt in and must see the stock kernel.
    pub fn runs(self, kernels: &[KernelLine]) -> bool {
        kernels.contains(&self)
            || (self == KernelLine::V6_12Inject && kernels.contains(&KernelLine::V6_12))
    }

    /// Regex over package names for `apt-cache search --names-only`, and the
    /// version part of a matching name used to pick the newest.
    fn package_pattern(self) -> &'static str {
        match self {
            KernelLine::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
            KernelLine::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
            // Built locally: `fetch` never asks apt for it.
            KernelLine::V6_12Inject => r"^$",
        }
    }
}

/// An unpacked kernel package.
pub struct Kernel {
    pub line: KernelLine,
    pub package: String,
    /// `uname -r` of the kernel (the directory under `lib/modules`).
    pub release: String,
    pub vmlinuz: PathBuf,
    modules_dir: PathBuf,
    /// Everything the guest needs is built in (the injected kernel).
    no_modules: bool,
}

/// Numeric components of a package name (`6.12.113` -> [6, 12, 113]), so the
/// newest point release sorts last without a Debian version comparator.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn newest_available(line: KernelLine) -> Result<Option<String>> {
    let out = Command::new("apt-cache")
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
    Ok(names.last().map(|s| s.to_string()))
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
        release: b.release,
        vmlinuz: b.bzimage,
        modules_dir: PathBuf::new(),
        no_modules: true,
    })
}

/// Resolves, downloads (once) and unpacks the newest kernel of `line`.
pub fn fetch(line: KernelLine, vm_root: &Path) -> Result<Kernel> {
    if line == KernelLine::V6_12Inject {
        return built_inject();
    }
    let root = vm_root.join(line.as_str()).join("kernels");
    fs::create_dir_all(&root)?;
    let package = match newest_available(line)? {
        Some(p) => p,
        None => match cached_packages(&root).pop() {
            Some(p) => {
                eprintln!(
                    "vm: apt-cache knows no {} cloud kernel; using cached {p}",
                    line.as_str()
                );
                p
            }
            None => bail!(
                "no Debian {} cloud kernel package is known to apt; add bookworm-backports to \
                 the apt sources and run `apt-get update` (or `bash .ci/setup`)",
                line.as_str()
            ),
        },
    };
    let dir = root.join(&package);
    if !dir.join("unpacked.ok").exists() {
        fs::create_dir_all(&dir)?;
        eprintln!("vm: downloading {package}");
        let st = Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&dir)
            .status()
            .context("running apt-get download")?;
        if !st.success() {
            bail!("`apt-get download {package}` failed; check network access and apt sources");
        }
        let deb = fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))?;
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root"))
            .status()
            .context("running dpkg-deb")?;
        if !st.success() {
            bail!("`dpkg-deb -x {}` failed", deb.display());
        }
        fs::remove_file(&deb)?;
        fs::write(dir.join("unpacked.ok"), &package)?;
    }
    let unpacked = dir.join("root");
    let boot = unpacked.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    let modules_dir = unpacked.join("lib/modules").join(&release);
    Ok(Kernel {
        line,
        package,
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
pub struct Module {
    pub name: String,
    pub image: Vec<u8>,
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
    /// Names that are built into this kernel are skipped.
    pub fn modules(&self, wanted: &[&str]) -> Result<Vec<Module>> {
        if self.no_modules {
            return Ok(Vec::new());
        }
        let mut index = BTreeMap::new();
        index_modules(&self.modules_dir.join("kernel"), &mut index)?;
        let builtin = self.builtin();
        let mut done = HashSet::new();
        let mut out = Vec::new();
        for w in wanted {
            self.visit(
                &w.replace('-', "_"),
                &index,
                &builtin,
                &mut done,
                &mut out,
                0,
            )?;
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
