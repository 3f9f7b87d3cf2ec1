//! `-v` / `--version`: what an operator or a bug report needs to know about this binary.
//!
//! The first lines follow the Go shim's `-v` (`containerd-shim-runc-v2:`, `Version:`,
//! `Revision:`), so tools that scrape it keep working; the rest says which containerd
//! protocols the binary speaks. Commit and date are stamped by build.rs.

/// The git commit the binary was built from ("unknown" outside a checkout; "-dirty" when the
/// tree had uncommitted changes).
pub const GIT_COMMIT: &str = env!("TETHER_GIT_COMMIT");
/// Build time in UTC, from `SOURCE_DATE_EPOCH` when the build set it.
pub const BUILD_DATE: &str = env!("TETHER_BUILD_DATE");

/// The text `--version` prints.
pub fn text() -> String {
    format!(
        "containerd-shim-tether-v2:\n  \
         Version:  {version}\n  \
         Revision: {GIT_COMMIT}\n  \
         Built:    {BUILD_DATE}\n  \
         Runtime:  io.containerd.tether.v2\n  \
         Protocols:\n    \
         task API: {v2}, {v3}\n    \
         bootstrap: stdout address (containerd 1.6-2.2), BootstrapParams/Result version 2 (containerd 2.3+)\n    \
         transport: ttrpc over a unix socket\n",
        version = crate::VERSION,
        v2 = crate::service::TASK_SERVICE_V2,
        v3 = crate::service::TASK_SERVICE_V3,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_version_commit_date_and_protocols() {
        let t = super::text();
        for want in [
            "Version:  0.",
            "Revision: ",
            "Built:    ",
            "containerd.task.v2.Task",
            "containerd.task.v3.Task",
            "BootstrapParams",
            "ttrpc",
        ] {
            assert!(t.contains(want), "{want:?} missing from:\n{t}");
        }
        assert!(!super::GIT_COMMIT.is_empty());
        // YYYY-MM-DDTHH:MM:SSZ
        assert_eq!(super::BUILD_DATE.len(), 20, "{}", super::BUILD_DATE);
        assert!(super::BUILD_DATE.ends_with('Z'));
    }
}
