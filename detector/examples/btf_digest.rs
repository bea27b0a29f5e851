//! Writes the BTF digest the role-table tests resolve against
//! (`detector/testdata/btf/<line>.json`): the prototype of every candidate
//! symbol of every role (null when the kernel has none), the typed
//! tracepoints' presence, and the layout the loader would hand the BPF
//! programs.
//!
//! ```sh
//! # A raw BTF blob: /sys/kernel/btf/vmlinux of a running kernel, or from a
//! # Debian package's vmlinuz:
//! #   scripts/extract-vmlinux vmlinuz > vmlinux   (kernel source tree)
//! #   objcopy -O binary --only-section=.BTF vmlinux vmlinux.btf
//! cargo run -p detector --example btf_digest -- vmlinux.btf \
//!     7.2.13+deb14-cloud-amd64 "linux-image-7.2.13+deb14-cloud-amd64 7.2.13-1" \
//!     > detector/testdata/btf/7.2.json
//! ```

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use detector::btf::KernelBtf;
use detector::plan::{Hook, ROLES};
use detector::trace::layout_to_map;

/// Symbols recorded besides the role candidates: where the roles may move
/// next, and what the 7.x mapping and its notes in docs/probes.md rely on.
const EXTRA: &[&str] = &[
    "__swap_cache_add_folio",
    "__swap_cache_replace_folio",
    "__swap_cluster_put_entry",
    "folio_dup_swap",
    "folio_put_swap",
    "folio_free_swap",
    "swap_put_entries_direct",
    "swap_cache_has_folio",
    "swapin_sync",
    "zswap_invalidate",
    "__filemap_get_folio_mpol",
    "vm_normal_folio",
    "double_pt_lock",
    "ptep_clear_flush",
    "folio_mark_lazyfree",
    "move_pages_huge_pmd",
    "userfaultfd_ioctl",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [btf_path, release, source] = args.as_slice() else {
        bail!("usage: btf_digest VMLINUX.BTF RELEASE SOURCE");
    };
    let btf = KernelBtf::open(Path::new(btf_path)).context("reading the BTF")?;
    let mut names = BTreeSet::new();
    let mut tracepoints = BTreeSet::new();
    for r in ROLES {
        for c in r.candidates {
            if r.hook == Hook::Tracepoint {
                tracepoints.insert(*c);
            } else {
                names.insert(*c);
            }
        }
    }
    names.extend(EXTRA.iter().copied());
    // One function per line keeps regenerated digests easy to diff.
    let mut out = String::from("{\n");
    out += &format!("  \"kernel\": {},\n", serde_json::to_string(release)?);
    out += &format!("  \"source\": {},\n", serde_json::to_string(source)?);
    out += "  \"functions\": {\n";
    let fns: Vec<String> = names
        .iter()
        .map(|n| {
            let p = serde_json::to_string(&btf.func_proto(n)).unwrap_or_default();
            format!("    {}: {p}", serde_json::to_string(n).unwrap_or_default())
        })
        .collect();
    out += &fns.join(",\n");
    out += "\n  },\n  \"tracepoints\": {\n";
    let tps: Vec<String> = tracepoints
        .iter()
        .map(|tp| {
            let name = tp.split(':').nth(1).unwrap_or(tp);
            let present = btf.has_tracepoint(name);
            format!(
                "    {}: {present}",
                serde_json::to_string(tp).unwrap_or_default()
            )
        })
        .collect();
    out += &tps.join(",\n");
    let (layout, _) = btf.layout()?;
    out += &format!(
        "\n  }},\n  \"layout\": {}\n}}\n",
        serde_json::to_string(&layout_to_map(&layout))?
    );
    print!("{out}");
    Ok(())
}
