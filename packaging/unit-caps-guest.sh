#!/bin/sh
# Not installed: the guest side of the measurements in docs/packaging.md,
# the systemd unit's capability set (uid nobody, ambient CAP_BPF,
# CAP_PERFMON and CAP_SYSLOG only, no new privileges, memlock unlimited) on
# a Debian 6.12 kernel, where fentry and kprobes are allowed. Run with
#   flock /tmp/vm.lock cargo xtask bench --guest-script packaging/unit-caps-guest.sh \
#     --extra-bin /usr/bin/setpriv --extra-bin /usr/bin/prlimit --extra-bin /usr/bin/strace
# and read target/vm/6.12/bench/out/unitcaps.log and the strace logs
# (st-fentry/, st-kprobe/) there.
# Out of the workload cgroup the harness starts the script in.
echo $$ > /sys/fs/cgroup/cgroup.procs
O=/out/unitcaps.log
D=$(command -v detector)
mkdir -p /tmp/u && chown 65534:65534 /tmp/u && chmod 700 /tmp/u
cd /tmp/u
run() {
  L=$1; C=$2; shift 2
  echo "== $L caps=$C: $*" >> $O
  prlimit --memlock=unlimited:unlimited setpriv --reuid=65534 --regid=65534 --clear-groups \
    --inh-caps=-all$C --ambient-caps=-all$C --bounding-set=-all$C --no-new-privs \
    $D "$@" >> $O 2>&1
  echo "exit $?" >> $O
}
ALL=,+bpf,+perfmon,+syslog
echo "perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid) kptr_restrict=$(cat /proc/sys/kernel/kptr_restrict) tracefs=$(ls -ld /sys/kernel/tracing 2>&1)" >> $O
run doctor-unit $ALL doctor
run record-unit $ALL record --duration 5s -o /tmp/u/a.trace
run doctor-kprobe-unit $ALL doctor --attach kprobe
run doctor-tracepoint-unit $ALL doctor --attach tracepoint
run doctor-no-bpf ,+perfmon,+syslog doctor
run doctor-no-perfmon ,+bpf,+syslog doctor
run doctor-no-syslog ,+bpf,+perfmon doctor
run doctor-kprobe-no-syslog ,+bpf,+perfmon doctor --attach kprobe
echo "== root reads the unit user's capture" >> $O
detector replay /tmp/u/a.trace --fail-on never 2>&1 | head -20 >> $O

# The system calls of fentry- and kprobe-mode captures as the unit's user.
for m in fentry kprobe; do
  mkdir -p /out/st-$m
  strace -f -ff -qq -o /out/st-$m/st prlimit --memlock=unlimited:unlimited setpriv --reuid=65534 --regid=65534 --clear-groups \
    --inh-caps=-all$ALL --ambient-caps=-all$ALL --bounding-set=-all$ALL --no-new-privs \
    $D record --attach $m --duration 3s -o /tmp/u/s-$m.trace >> /out/st-$m.log 2>&1
  echo "strace $m exit $?" >> $O
done
echo finished >> $O
