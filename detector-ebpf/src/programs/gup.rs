//! GUP references and pins: grabs (slow and lockless), releases, and the
//! COW fault that must not copy away from a pinned folio (seed 001).

use super::*;

exit_probe!(
    fexit_gup_grab,
    kprobe_gup_grab,
    kretprobe_gup_grab,
    ProbeId::GupGrab
);
exit_probe!(
    fexit_gup_grab_fast,
    kprobe_gup_grab_fast,
    kretprobe_gup_grab_fast,
    ProbeId::GupGrabFast
);
enter_probe!(fentry_gup_put, kprobe_gup_put, ProbeId::GupPut);
enter_probe!(
    fentry_unpin_user_page,
    kprobe_unpin_user_page,
    ProbeId::UnpinUserPage
);
enter_probe!(fentry_do_wp_page, kprobe_do_wp_page, ProbeId::DoWpPage);
