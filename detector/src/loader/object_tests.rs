//! The embedded BPF object against what userspace looks up in it by name:
//! the maps and globals (`detector_common::MAPS`, `GLOBALS`) and every
//! program the loader may attach for a role. A renamed static or program
//! in the BPF crate fails here instead of at attach time on some kernel.

use std::collections::BTreeSet;

use detector_common::{GLOBALS, MAPS};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::BPF_OBJECT;
use crate::plan::{program_base, Hook, ROLES};

/// `(section, symbol)` of every global symbol of `kind` outside `.text`
/// (which holds only the compiler's memcpy/memset).
fn symbols(file: &object::File<'_>, kind: SymbolKind) -> BTreeSet<(String, String)> {
    file.symbols()
        .filter(|s| s.kind() == kind && s.is_global())
        .filter_map(|s| {
            let section = file.section_by_index(s.section_index()?).ok()?;
            let section = section.name().ok()?.to_string();
            let name = s.name().ok()?.to_string();
            (section != ".text").then_some((section, name))
        })
        .collect()
}

/// The programs the loader attaches for a role, with their sections:
/// `loader::attach`'s `try_trampoline`, `try_kprobe` and `try_tracepoint`.
fn role_programs(base: &str, hook: Hook, candidates: &[&str]) -> Vec<(String, String)> {
    let p = |kind: &str| (kind.to_string(), format!("{kind}_{base}"));
    match hook {
        Hook::Enter => vec![p("fentry"), p("kprobe")],
        Hook::Exit => vec![p("fexit"), p("kprobe"), p("kretprobe")],
        Hook::Both => vec![p("fentry"), p("fexit"), p("kprobe"), p("kretprobe")],
        Hook::Tracepoint => candidates
            .iter()
            .map(|tp| {
                let name = tp.split(':').nth(1).unwrap_or(tp);
                (format!("tp_btf/{name}"), base.to_string())
            })
            .collect(),
    }
}

#[test]
fn bpf_object_names() {
    if BPF_OBJECT.is_empty() {
        eprintln!("no BPF object embedded (run `cargo xtask build-ebpf`); skipped");
        return;
    }
    let file = object::File::parse(BPF_OBJECT).expect("the embedded BPF object parses");
    let data = symbols(&file, SymbolKind::Data);

    let maps: BTreeSet<&str> = data
        .iter()
        .filter(|(sec, _)| sec == "maps")
        .map(|(_, name)| name.as_str())
        .collect();
    assert_eq!(maps, MAPS.iter().copied().collect(), "maps of the object");

    let globals: BTreeSet<&str> = data
        .iter()
        .filter(|(sec, _)| sec == ".rodata")
        .map(|(_, name)| name.as_str())
        .collect();
    assert_eq!(
        globals,
        GLOBALS.iter().copied().collect(),
        "read-only globals of the object"
    );

    let programs = symbols(&file, SymbolKind::Text);
    let wanted: BTreeSet<(String, String)> = ROLES
        .iter()
        .flat_map(|r| role_programs(program_base(r.probe), r.hook, r.candidates))
        .collect();
    let missing: Vec<_> = wanted.difference(&programs).collect();
    let unused: Vec<_> = programs.difference(&wanted).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "programs the loader looks for but the object lacks: {missing:?}; \
         programs no role attaches: {unused:?}"
    );
}
