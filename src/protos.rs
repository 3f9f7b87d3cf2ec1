//! Messages generated at build time from the `.proto` files under `protos/` (`build.rs`):
//! the ones containerd-shim-protos does not generate.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
}

/// `runtimeoptions.v1`: the runtime options containerd's CRI plugin sends a non-runc runtime.
pub use generated::api as runtimeoptions;

/// `containerd.types.RuntimeInfo`: what `-info` prints (containerd 2.0+).
pub use generated::introspection;

/// `containerd.runc.v1.CheckpointOptions` with containerd 2.4's `parent_path` (field 10),
/// which containerd-shim-protos 0.12 lacks.
pub use generated::checkpoint;
