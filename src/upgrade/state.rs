//! The state an upgrade hands to the next image, in a versioned, checked form.
//!
//! On the wire: `TETHERUP` (8 bytes), the format version (u32 LE), the body's length (u64 LE),
//! the body's SHA-256 (32 bytes), then the body: JSON of [`Snapshot`]. A reader refuses any
//! magic, version, length or checksum it does not expect before it parses a byte of JSON, so
//! a truncated, corrupted or newer state is an error the old image survives, never a
//! half-imported server.

use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::QueuedEvent;
use crate::supervisor::TableState;

const MAGIC: &[u8; 8] = b"TETHERUP";

/// The format this binary writes and the newest it reads. Bump it whenever a field changes
/// meaning or a reader would need a field it cannot default.
pub const VERSION: u32 = 1;

/// The oldest format this binary still reads (a downgrade hands an older binary what it
/// wrote; an upgrade hands a newer binary what an older one wrote).
pub const OLDEST_READ: u32 = 1;

const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// Test-only knob: write this version number instead of [`VERSION`] (what a newer binary's
/// state looks like to this one), so a test can show an older binary refusing it.
const WRITE_VERSION_ENV: &str = "TETHER_TEST_STATE_VERSION";

/// Everything the next image needs to carry on as this server.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The version of the tether that wrote this state.
    pub tether_version: String,
    pub namespace: String,
    /// The listening socket's path (removed at shutdown).
    pub socket: PathBuf,
    /// The listening socket.
    pub listener: RawFd,
    /// Accepted ttrpc connections, each stopped at a frame boundary with nothing in flight.
    pub connections: Vec<crate::upgrade::conn::Handed>,
    /// The executable this server ran before the upgrade, open: where a failed start goes back.
    pub old_exe: RawFd,
    pub handoff: Handoff,
    pub table: TableState,
    /// Events not yet delivered to containerd, oldest first.
    pub events: Vec<QueuedEvent>,
}

/// About the handoff itself, for the `upgrade` command's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    /// Counts upgrades asked of this server (the process's life, across images).
    pub attempt: u64,
    pub old_version: String,
    /// The old executable's build id (see `upgrade::build_id`).
    #[serde(default)]
    pub old_build: String,
    /// CLOCK_MONOTONIC when the server stopped taking requests, in ns: the new image measures
    /// the handoff against it.
    pub paused_at_ns: u64,
}

/// Why a state was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Truncated { have: usize, need: usize },
    NotTether,
    Version(u32),
    Checksum,
    Body(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Truncated { have, need } => {
                write!(f, "state truncated: {have} bytes of {need}")
            }
            Refused::NotTether => f.write_str("not a tether upgrade state (bad magic)"),
            Refused::Version(v) => write!(
                f,
                "state format {v} is not one this binary reads ({OLDEST_READ}..={VERSION})"
            ),
            Refused::Checksum => f.write_str("state checksum mismatch (corrupted)"),
            Refused::Body(e) => write!(f, "state body unreadable: {e}"),
        }
    }
}

/// Serialises `snap` with its header.
pub fn encode(snap: &Snapshot) -> Vec<u8> {
    let version = std::env::var(WRITE_VERSION_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(VERSION);
    encode_as(snap, version)
}

fn encode_as(snap: &Snapshot, version: u32) -> Vec<u8> {
    // Serialising plain structs of strings, numbers and vectors cannot fail.
    let body = serde_json::to_vec(snap).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    out
}

/// Checks the header and the checksum, then parses the body.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, Refused> {
    if bytes.len() < HEADER_LEN {
        if bytes.len() >= 8 && &bytes[..8] != MAGIC {
            return Err(Refused::NotTether);
        }
        return Err(Refused::Truncated {
            have: bytes.len(),
            need: HEADER_LEN,
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(Refused::NotTether);
    }
    let word =
        |r: std::ops::Range<usize>| bytes[r].iter().rev().fold(0u64, |a, b| a << 8 | *b as u64);
    let version = word(8..12) as u32;
    if !(OLDEST_READ..=VERSION).contains(&version) {
        return Err(Refused::Version(version));
    }
    let len = word(12..20);
    let body = &bytes[HEADER_LEN..];
    if (body.len() as u64) < len {
        return Err(Refused::Truncated {
            have: bytes.len(),
            need: HEADER_LEN.saturating_add(len as usize),
        });
    }
    let body = &body[..len as usize];
    if Sha256::digest(body).as_slice() != &bytes[20..HEADER_LEN] {
        return Err(Refused::Checksum);
    }
    let snap: Snapshot = serde_json::from_slice(body).map_err(|e| Refused::Body(e.to_string()))?;
    let fds = [snap.listener, snap.old_exe]
        .into_iter()
        .chain(snap.connections.iter().map(|c| c.fd));
    if let Some(fd) = fds.into_iter().find(|&fd| fd < 3) {
        return Err(Refused::Body(format!(
            "descriptor {fd} cannot be inherited"
        )));
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            tether_version: "0.1.0".into(),
            namespace: "ns".into(),
            socket: "/run/s".into(),
            listener: 3,
            connections: [7, 9]
                .map(|fd| crate::upgrade::conn::Handed {
                    fd,
                    replay: Vec::new(),
                })
                .to_vec(),
            old_exe: 5,
            handoff: Handoff {
                attempt: 1,
                old_version: "0.1.0".into(),
                old_build: String::new(),
                paused_at_ns: 42,
            },
            table: TableState::default(),
            events: Vec::new(),
        }
    }

    #[test]
    fn a_state_round_trips() {
        let bytes = encode_as(&sample(), VERSION);
        let back = decode(&bytes).unwrap();
        let fds: Vec<RawFd> = back.connections.iter().map(|c| c.fd).collect();
        assert_eq!((back.listener, fds), (3, vec![7, 9]));
        assert_eq!(back.handoff.paused_at_ns, 42);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode_as(&sample(), VERSION);
        for n in 0..bytes.len() {
            let e = decode(&bytes[..n]).unwrap_err();
            assert!(matches!(e, Refused::Truncated { .. }), "{n} bytes: {e}");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let bytes = encode_as(&sample(), VERSION);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn newer_and_foreign_states_are_refused() {
        let newer = encode_as(&sample(), VERSION + 1);
        assert_eq!(decode(&newer).unwrap_err(), Refused::Version(VERSION + 1));
        assert_eq!(
            decode(b"#!/bin/sh\nexit 0\n garbage garbage garbage garbage garbage").unwrap_err(),
            Refused::NotTether
        );
        assert_eq!(
            decode(&encode_as(&sample(), 0)).unwrap_err(),
            Refused::Version(0)
        );
    }

    #[test]
    fn a_low_descriptor_is_refused() {
        let mut s = sample();
        s.connections.push(crate::upgrade::conn::Handed {
            fd: 1,
            replay: Vec::new(),
        });
        assert!(matches!(
            decode(&encode_as(&s, VERSION)),
            Err(Refused::Body(_))
        ));
    }
}
