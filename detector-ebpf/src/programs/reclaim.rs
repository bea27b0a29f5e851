//! Reclaim and MADV_FREE: the lazyfree mark, reclaim's unmap and removal
//! from the mapping (seed 003).

use super::*;

enter_probe!(
    fentry_madvise_free,
    kprobe_madvise_free,
    ProbeId::MadviseFree
);
enter_probe!(
    fentry_lazyfree_mark,
    kprobe_lazyfree_mark,
    ProbeId::LazyfreeMark
);
enter_exit_probe!(
    fentry_try_to_unmap_one,
    fexit_try_to_unmap_one,
    kprobe_try_to_unmap_one,
    kretprobe_try_to_unmap_one,
    ProbeId::TryToUnmapOne
);
enter_exit_probe!(
    fentry_remove_mapping,
    fexit_remove_mapping,
    kprobe_remove_mapping,
    kretprobe_remove_mapping,
    ProbeId::RemoveMapping
);
