#!/usr/bin/env bash
# The VM lane's crun run: a chosen set of the integration tests, in the same cgroup v2 guest as
# scripts/vm-test.sh, with crun as tether's OCI runtime. crun is chosen the way users choose it:
# `BinaryName = "/usr/bin/crun"` in the options file ctr hands the shim
# (TETHER_VM_RUNTIME_BINARY -> TETHER_TEST_RUNTIME_CONFIG -> `ctr run --runtime-config-path`).
#
# Why in the guest: on the CI host crun (Debian 12: 1.8.1) refuses every container ("cgroups in
# hybrid mode not supported"), for every shim. Why a selection: TCG runs the suites 5-10x slower
# than the host, and the crun run gets about 10 minutes of CI time, boot included. The tests
# are the ones where the OCI runtime does the work: lifecycle, exit codes, stdin,
# stdout/stderr, exec with its status, a terminal and its resize, events in order, reaping,
# `kill --all` after an init without its own pid namespace (its exec dies with it), a
# containerd restart, the `delete` action after a killed shim, a Delete after the runtime
# forgot the container (crun words that differently), bad input, grouping, and on cgroup v2
# Stats, OOM before the exit, Update and Pause/Resume, and SIGKILL of a paused task; plus
# `-info` answering for crun. docs/testing.md says how long it takes.
#
# Usage: scripts/vm-crun.sh [TEST-BINARY-ARGS...]   (scripts/test.sh runs it after vm-test.sh)
#   TETHER_VM_OUT  where the guest's logs go (default target/vm-lane-crun; emptied first)
#   Every other TETHER_VM_* setting of scripts/vm-test.sh applies.
# Ends with vm-test.sh's `vm: N passed, N failed`.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"  # before the exports: sudo would drop them
cd "$(dirname "$0")/.."

tests=(
    # tests/versions.rs: -info names crun and carries crun's own answer (1.8.1 has no
    # `features`; 1.8.6+ would print its own).
    info_answers_for_the_configured_runtime
    # tests/core.rs
    exit_codes_are_passed_through
    sigkill_gives_137
    sigterm_gives_143
    stdin_round_trip
    stdout_and_stderr_stay_separate
    detached_task_lifecycle
    task_events_in_order
    no_zombies_from_orphans
    task_survives_containerd_restart
    shim_sigkill_is_cleaned_up
    delete_after_the_runtime_forgot_the_container
    missing_binary_fails_cleanly
    # tests/exec.rs
    exec_prints_output_and_passes_exit_status
    exec_of_missing_binary_fails_and_container_keeps_running
    exec_tty_gets_window_size_and_resize
    exec_exit_published_before_init_exit_host_pid_ns
    # tests/node_cgroup_v2.rs (#[ignore]d on the host; the default VM run runs them with runc)
    stats_are_v2_metrics_of_the_live_cgroup
    oom_kill_is_reported_from_memory_events_before_the_exit
    update_writes_memory_max_pids_max_and_cpu_max
    pause_and_resume_use_cgroup_freeze
    # tests/resources.rs (runtime-agnostic; its other tests read cgroup v1 files): SIGKILL of a
    # paused task, which tether resumes after signalling
    paused_task_can_be_killed_and_deleted
    # tests/robustness.rs
    grouped_containers_share_one_shim
)

export TETHER_VM_RUNTIME_BINARY=/usr/bin/crun
export TETHER_VM_BINARIES="versions core exec node_cgroup_v2:--ignored resources robustness"
export TETHER_VM_OUT=${TETHER_VM_OUT:-$PWD/target/vm-lane-crun}
# A binary here holds up to ten tests (core): more room than the default 480 s before it is
# taken for hung, for a CI machine slower than this one.
export TETHER_VM_BINARY_TIMEOUT=${TETHER_VM_BINARY_TIMEOUT:-900}

# `--exact` names: each binary runs the ones it has. vm-test.sh's note of how many of its tests
# are #[ignore]d on the host is reworded: those (node_cgroup_v2) were counted as run by the
# default VM run already, so scripts/test.sh's closing line must not count them twice.
scripts/vm-test.sh "$@" --exact "${tests[@]}" 2>&1 |
    sed -u 's/^vm lane: \([0-9]*\) of these tests are #\[ignore\]d on the host$/vm lane (crun): \1 of these are #[ignore]d on the host and ran in the default VM run too/'
