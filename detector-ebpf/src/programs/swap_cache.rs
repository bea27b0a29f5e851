//! Swap cache: lookups, insertion and deletion, the swap-in pin
//! (`swapcache_prepare` / `swapcache_clear` and their 7.x successors), and
//! the swap-in fault and read that go through it (seeds 000, 002).

use super::*;

exit_probe!(
    fexit_swap_cache_lookup,
    kprobe_swap_cache_lookup,
    kretprobe_swap_cache_lookup,
    ProbeId::SwapCacheLookup
);
exit_probe!(
    fexit_swap_cache_insert,
    kprobe_swap_cache_insert,
    kretprobe_swap_cache_insert,
    ProbeId::SwapCacheInsert
);
enter_probe!(
    fentry_swap_cache_delete,
    kprobe_swap_cache_delete,
    ProbeId::SwapCacheDelete
);
exit_probe!(
    fexit_swapcache_prepare,
    kprobe_swapcache_prepare,
    kretprobe_swapcache_prepare,
    ProbeId::SwapcachePrepare
);
enter_probe!(
    fentry_swapcache_clear,
    kprobe_swapcache_clear,
    ProbeId::SwapcacheClear
);
enter_exit_probe!(
    fentry_do_swap_page,
    fexit_do_swap_page,
    kprobe_do_swap_page,
    kretprobe_do_swap_page,
    ProbeId::DoSwapPage
);
enter_probe!(fentry_swap_read, kprobe_swap_read, ProbeId::SwapRead);
