//! The runtime's command lines: global flags and each verb's arguments. Pure.

use std::ffi::OsString;
use std::path::Path;

use super::{CheckpointOptions, Runc};

impl Runc {
    /// The argv after the binary name: global flags, then the subcommand's. Pure, for tests.
    pub fn argv(&self, sub: &[OsString]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format".into(),
            "json".into(),
        ];
        if self.systemd_cgroup {
            v.push("--systemd-cgroup".into());
        }
        v.extend(sub.iter().cloned());
        v
    }

    pub fn create_args(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console: Option<&Path>,
    ) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if let Some(c) = console {
            v.extend(["--console-socket".into(), c.into()]);
        }
        if self.no_pivot_root {
            v.push("--no-pivot".into());
        }
        if self.no_new_keyring {
            v.push("--no-new-keyring".into());
        }
        v.push(id.into());
        v
    }

    pub fn exec_args(
        &self,
        id: &str,
        process: &Path,
        pid_file: &Path,
        console: Option<&Path>,
    ) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "exec".into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.into(),
            "--process".into(),
            process.into(),
        ];
        if let Some(c) = console {
            v.extend(["--console-socket".into(), c.into()]);
        }
        v.push(id.into());
        v
    }

    pub fn checkpoint_args(&self, id: &str, o: &CheckpointOptions) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "checkpoint".into(),
            "--image-path".into(),
            o.image_path.clone().into(),
            "--work-path".into(),
            o.work_path.clone().into(),
        ];
        let flags = [
            (!o.exit, "--leave-running"),
            (o.open_tcp, "--tcp-established"),
            (o.external_unix_sockets, "--ext-unix-sk"),
            (o.terminal, "--shell-job"),
            (o.file_locks, "--file-locks"),
        ];
        v.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| OsString::from(f)),
        );
        if !o.parent_path.is_empty() {
            v.extend(["--parent-path".into(), o.parent_path.clone().into()]);
        }
        if !o.cgroups_mode.is_empty() {
            v.extend([
                "--manage-cgroups-mode".into(),
                o.cgroups_mode.clone().into(),
            ]);
        }
        for ns in &o.empty_namespaces {
            v.extend(["--empty-ns".into(), ns.into()]);
        }
        v.push(id.into());
        v
    }

    pub fn restore_args(
        &self,
        id: &str,
        bundle: &Path,
        image: &Path,
        work: &Path,
        pid_file: &Path,
    ) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "restore".into(),
            "--detach".into(),
            "--no-subreaper".into(),
            "--image-path".into(),
            image.into(),
            "--work-path".into(),
            work.into(),
            "--pid-file".into(),
            pid_file.into(),
            "--bundle".into(),
            bundle.into(),
        ];
        if self.no_pivot_root {
            v.push("--no-pivot".into());
        }
        v.push(id.into());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuncOptions;

    #[test]
    fn create_args_carry_pid_file_and_flags() {
        let opts = RuncOptions {
            no_pivot_root: true,
            no_new_keyring: true,
            ..Default::default()
        };
        let r = Runc::new(&opts, "n", Path::new("/b"));
        let a = r.create_args("c1", Path::new("/b"), Path::new("/b/init.pid"), None);
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/b/init.pid",
                "--no-pivot",
                "--no-new-keyring",
                "c1"
            ]
        );
        let a = r.exec_args(
            "c1",
            Path::new("/b/x.json"),
            Path::new("/b/x.pid"),
            Some(Path::new("/tmp/p.sock")),
        );
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "exec",
                "--detach",
                "--pid-file",
                "/b/x.pid",
                "--process",
                "/b/x.json",
                "--console-socket",
                "/tmp/p.sock",
                "c1"
            ]
        );
    }

    #[test]
    fn checkpoint_args_follow_options() {
        let r = Runc::new(&RuncOptions::default(), "n", Path::new("/b"));
        let o = CheckpointOptions {
            image_path: "/img".into(),
            work_path: "/w".into(),
            ..Default::default()
        };
        let a: Vec<_> = r
            .checkpoint_args("c", &o)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "checkpoint",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--leave-running",
                "c"
            ]
        );
        let o = CheckpointOptions {
            image_path: "/img".into(),
            work_path: "/w".into(),
            parent_path: "/p".into(),
            exit: true,
            open_tcp: true,
            external_unix_sockets: true,
            terminal: true,
            file_locks: true,
            empty_namespaces: vec!["network".into()],
            cgroups_mode: "soft".into(),
        };
        let a: Vec<_> = r
            .restore_args(
                "c",
                Path::new("/b"),
                Path::new("/img"),
                Path::new("/w"),
                Path::new("/b/init.pid"),
            )
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "restore",
                "--detach",
                "--no-subreaper",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--pid-file",
                "/b/init.pid",
                "--bundle",
                "/b",
                "c"
            ]
        );
        let a: Vec<_> = r
            .checkpoint_args("c", &o)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "checkpoint",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--tcp-established",
                "--ext-unix-sk",
                "--shell-job",
                "--file-locks",
                "--parent-path",
                "/p",
                "--manage-cgroups-mode",
                "soft",
                "--empty-ns",
                "network",
                "c"
            ]
        );
    }
}
