//! tether: a containerd runtime v2 shim for runc.
//!
//! # Layout
//!
//! The binary has three actions (see [`cli`]): `start` and `delete` are short-lived commands
//! containerd runs; without an action word the binary is the long-lived server.
//!
//! - [`cli`]: Go-flag style argument parsing; pure.
//! - [`shim`]: the three actions: `start` (via [`daemonize`]), `delete` (crash cleanup) and
//!   `serve` (the daemon's main).
//! - [`daemonize`]: socket address, bind, re-exec of the server with the listener on fd 3.
//! - [`bootstrap`]: `start`'s stdin and stdout formats (legacy address or containerd 2.3's
//!   `BootstrapParams`/`BootstrapResult`).
//! - [`service`]: the ttrpc task API edge. The only module that knows task-API protobuf types
//!   and the only place errors become ttrpc status codes.
//! - [`supervisor`]: the process table, exit routing and event ordering rules.
//! - [`process`]: per-process state machine and id validation; pure.
//! - [`runtime`]: invoking runc (argv, timeouts, `log.json` errors, error classification).
//! - [`io`]: container stdio: pipes to runc, spliced (or copied) to containerd's FIFOs.
//! - [`mount`]: mounting the rootfs a `Create` carries, and unmounting it.
//! - [`cgroups`]: finding a container's cgroup (v1 or v2), its metrics for `Stats` and its OOM
//!   kills; priming the kernel's cgroup attach lock while runc starts. It returns containerd's cgroups `Metrics` messages directly: they are a data
//!   format with hundreds of fields, and a mirror type would only copy them.
//! - [`reaper`]: the one `waitpid(-1)` loop and spawn-and-wait for every child we fork.
//! - [`events`]: the ordered publisher of task events to containerd.
//! - [`logging`]: `tracing` output into the bundle's `log` FIFO, never blocking.
//! - [`sys`]: the few raw OS calls that need `unsafe`.
//! - [`error`]: the one error type.
#![deny(unsafe_code)]

pub mod bootstrap;
pub mod cgroups;
pub mod cli;
pub mod daemonize;
pub mod error;
pub mod events;
pub mod info;
pub mod io;
pub mod logging;
pub mod mount;
pub mod process;
pub mod protos;
pub mod reaper;
pub mod runtime;
pub mod service;
pub mod shim;
pub mod supervisor;
pub mod sys;

/// Version reported by `-v` and `Connect`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
