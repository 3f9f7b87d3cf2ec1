//! tether: a containerd runtime v2 shim for runc.
//!
//! # Layout
//!
//! The binary has three actions (see [`cli`]): `start` and `delete` are short-lived commands
//! containerd runs; without an action word the binary is the long-lived server. A second
//! binary, `tether-install` (`src/bin/`), puts the shim on a node: [`install`].
//!
//! - [`cli`]: Go-flag style argument parsing; pure.
//! - [`shim`]: the three actions: `start` (via `daemonize`), `delete` (crash cleanup) and
//!   `serve` (the daemon's process set-up: fds, logging, subreaper, fd 3, signals).
//! - [`server`]: `run`, the server itself on a given listener and event destination; what a
//!   test calls in-process.
//! - `info`: the `-info` flag (containerd 2.0+): a `RuntimeInfo` with the OCI runtime's own
//!   `features`.
//! - `daemonize`: socket address, bind, re-exec of the server with the listener on fd 3.
//! - `bootstrap`: `start`'s stdin and stdout formats (legacy address or containerd 2.3's
//!   `BootstrapParams`/`BootstrapResult`).
//! - [`service`]: the ttrpc task API edge. The only module that knows task-API protobuf types
//!   and the only place errors become ttrpc status codes.
//! - `supervisor`: the process table, exit routing and event ordering rules; inside it,
//!   `init` (a container's create/start/restore/delete), `exec`, `exits` (exit routing, the
//!   init's exit last), `oom`, `spec` (what Create reads from the bundle) and `teardown`
//!   (killing and deleting without a runtime that misses its deadline).
//! - `process`: process ids (`ProcessId`, `Pid`), the per-process state machine and id
//!   validation; pure.
//! - `runtime`: invoking runc: its options and options file (`options`), command lines
//!   (`argv`), running a call under its deadline with `log.json` errors and their
//!   classification (`call`), and priming the kernel's cgroup attach lock while runc starts
//!   (`primer`).
//! - `io`: container stdio: pipes to runc, spliced (or copied) to containerd's FIFOs.
//! - [`mount`]: mounting the rootfs a `Create` carries (idmapped where it asks), and
//!   unmounting it.
//! - [`cgroups`]: finding a container's cgroup (v1 or v2), its metrics for `Stats`, its OOM
//!   kills, and killing all of it without the runtime (`cgroup.kill`, or pidfds). It returns containerd's cgroups `Metrics` messages directly: they are a data format
//!   with hundreds of fields, and a mirror type would only copy them.
//! - `reaper`: the one `waitpid(-1)` loop and spawn-and-wait for every child we fork.
//! - [`events`]: the ordered publisher of task events to containerd.
//! - `trace_context`: a request's W3C trace context (ttrpc metadata) into its log lines and the
//!   runtime's environment.
//! - `exit_record`: the init's exit status in the bundle (`exitstatus.json`), for `delete`.
//! - `logging`: `tracing` output into the bundle's `log` FIFO, never blocking; its own small
//!   subscriber.
//! - `signals`: SIGCHLD, SIGTERM and SIGINT as readiness on a pipe.
//! - [`upgrade`]: replacing the running code of a server in place (same pid, state handed
//!   over in a memfd), and the `upgrade` command that asks servers to do it.
//! - `sys`: the few raw OS calls that need `unsafe`.
//! - [`error`]: the one error type.
//! - [`install`]: `tether-install install`/`uninstall`: the shim binary and a runtime handler
//!   in containerd's config (`install/config.rs`, edited with `toml_edit`), reversibly. Not
//!   linked into the shim.
//! - [`version`]: the `-v` text: version, commit, build date and the protocols spoken.
#![deny(unsafe_code)]

// The public surface is what the binary, the tests and the benchmark use: the actions
// (`shim::run`), the in-process server (`server`, `events`), argument and option parsing
// (`cli`, `service::decode_options`, and the validators re-exported below), `error`.
// `cgroups`, `mount`, the attach-lock `primer` and the generated `protos` are reachable for the
// test tiers (the root-only tests, `-info` decoding) but are not an API.
pub(crate) mod bootstrap;
#[doc(hidden)]
pub mod cgroups;
pub mod cli;
pub(crate) mod daemonize;
pub mod error;
pub mod events;
pub(crate) mod exit_record;
pub(crate) mod info;
pub mod install;
pub(crate) mod io;
pub(crate) mod logging;
#[doc(hidden)]
pub mod mount;
pub(crate) mod process;
#[doc(hidden)]
pub mod protos;
pub(crate) mod reaper;
pub(crate) mod runtime;
pub mod server;
pub mod service;
pub mod shim;
pub(crate) mod signals;
pub(crate) mod supervisor;
pub(crate) mod sys;
pub(crate) mod trace_context;
pub mod upgrade;
pub mod version;

pub use io::{parse_target, Target};
pub use process::{validate_id, MAX_ID_LEN};
#[doc(hidden)]
pub use runtime::primer;
/// A process's core-scheduling cookie, for the `SCHED_CORE` tests.
#[doc(hidden)]
pub use sys::sched_core_cookie;

/// Version reported by `-v` (with the commit and build date of [`version`]) and `Connect`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
