//! Upgrading a running server in place: same pid, new code, nothing dropped (issue 19;
//! docs/upgrade.md).
//!
//! - `state`: the versioned, checksummed snapshot the old image hands the new one.
//! - `conn`: ttrpc connections that stop at a frame boundary, so they can cross the exec.
//! - `handoff`: the server's side (quiesce, snapshot, pre-flight, exec; take over or go back).
//! - `client`: the `upgrade` command, which finds servers through `/proc` and asks each one.
//!
//! How a server is asked: an extra ttrpc service, `tether.upgrade.v1.Upgrade`, on the socket
//! it already serves containerd on (containerd never calls it). The socket is 0600 in a
//! root-only directory and the listener checks the peer's uid, so only root or the socket's
//! owner can ask, and the answer comes back on the same connection with no file to clean up.

pub mod client;
pub(crate) mod conn;
pub(crate) mod handoff;
pub(crate) mod state;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ttrpc::asynchronous::{MethodHandler, Service, TtrpcContext};

/// The service name on the shim's socket.
pub const SERVICE: &str = "tether.upgrade.v1.Upgrade";
/// The hidden action the old image runs the new binary with, to pre-flight a state.
pub const CHECK_ACTION: &str = "upgrade-check";

/// What `Status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub build: String,
    /// Upgrades asked of this server so far.
    pub attempt: u64,
    /// How the latest attempt ended, once it has.
    pub outcome: Option<Outcome>,
}

/// The end of one upgrade attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub attempt: u64,
    pub ok: bool,
    pub old_version: String,
    pub old_build: String,
    pub new_version: String,
    pub new_build: String,
    /// From the moment the server stopped reading requests to the moment the new image
    /// serves again, in microseconds.
    pub handoff_us: u64,
    pub error: String,
}

impl Outcome {
    fn failed(attempt: u64, build: &str, error: String) -> Outcome {
        Outcome {
            attempt,
            ok: false,
            old_version: crate::VERSION.into(),
            old_build: build.into(),
            new_version: crate::VERSION.into(),
            new_build: build.into(),
            handoff_us: 0,
            error,
        }
    }
}

/// A short id of the running executable (12 hex digits of a SHA-256 over its length, its
/// first and its last 64 KiB): two builds of one version, or a rebuilt binary, tell apart by
/// it, without hashing megabytes on every start. Hashed through a stack buffer: a heap
/// buffer of that size, freed, stayed resident in the server (glibc's heap does not shrink
/// below live allocations).
pub fn build_id() -> String {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    const PART: u64 = 64 * 1024;
    let hash = || -> std::io::Result<Sha256> {
        let mut f = std::fs::File::open("/proc/self/exe")?;
        let len = f.metadata()?.len();
        let mut h = Sha256::new();
        h.update(len.to_le_bytes());
        let mut buf = [0u8; 8192];
        let mut part = |f: &mut std::fs::File, h: &mut Sha256| -> std::io::Result<()> {
            let mut left = PART;
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = f.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                left -= n as u64;
            }
            Ok(())
        };
        part(&mut f, &mut h)?;
        f.seek(SeekFrom::Start(len.saturating_sub(PART)))?;
        part(&mut f, &mut h)?;
        Ok(h)
    };
    match hash() {
        Ok(h) => h
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect(),
        Err(_) => String::new(),
    }
}

/// `upgrade-check`: reads a state on stdin and says whether this binary can take it over.
pub fn check() -> i32 {
    use std::io::Read;
    hold_for_test();
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("read state: {e}");
        return 1;
    }
    match state::decode(&bytes) {
        Ok(_) => {
            println!("ok {}", crate::VERSION);
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Test-only knob: the pre-flight waits (at most a minute) until the file this names exists,
/// so a test can make things happen while a handoff is under way (tests/upgrade.rs).
const CHECK_WAIT_ENV: &str = "TETHER_TEST_CHECK_WAIT_FILE";

fn hold_for_test() {
    let Some(file) = std::env::var_os(CHECK_WAIT_ENV) else {
        return;
    };
    let file = std::path::PathBuf::from(file);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

struct Method {
    up: Arc<handoff::Upgrader>,
    upgrade: bool,
}

#[async_trait::async_trait]
impl MethodHandler for Method {
    async fn handler(
        &self,
        _ctx: TtrpcContext,
        _req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        let mut res = ttrpc::Response::new();
        let payload = if self.upgrade {
            match self.up.begin() {
                Ok(attempt) => serde_json::to_vec(&attempt),
                Err(e) => {
                    res.set_status(ttrpc::get_status(ttrpc::Code::FAILED_PRECONDITION, e));
                    return Ok(res);
                }
            }
        } else {
            serde_json::to_vec(&self.up.status())
        };
        res.payload = payload.unwrap_or_default();
        res.set_status(ttrpc::get_status(ttrpc::Code::OK, ""));
        Ok(res)
    }
}

/// The upgrade service, to register next to the task API.
pub(crate) fn service(up: Arc<handoff::Upgrader>) -> (String, Service) {
    let mut methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    for (name, upgrade) in [("Upgrade", true), ("Status", false)] {
        methods.insert(
            name.to_string(),
            Box::new(Method {
                up: up.clone(),
                upgrade,
            }),
        );
    }
    (
        SERVICE.to_string(),
        Service {
            methods,
            streams: HashMap::new(),
        },
    )
}
