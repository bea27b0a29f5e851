//! Swap entries: allocation, duplication (fork) and free, whose
//! generations the ABA rule compares (seed 000).

use super::*;

exit_probe!(
    fexit_swap_entry_alloc,
    kprobe_swap_entry_alloc,
    kretprobe_swap_entry_alloc,
    ProbeId::SwapEntryAlloc
);
exit_probe!(
    fexit_swap_entry_dup,
    kprobe_swap_entry_dup,
    kretprobe_swap_entry_dup,
    ProbeId::SwapEntryDup
);
enter_probe!(
    fentry_swap_entry_free,
    kprobe_swap_entry_free,
    ProbeId::SwapEntryFree
);
