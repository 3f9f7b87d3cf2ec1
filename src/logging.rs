//! Logging for the server: `tracing` into the bundle's `log` FIFO, which containerd reads and
//! copies into its own log.
//!
//! The FIFO is dup'ed onto stderr (so a panic message lands there too) in non-blocking mode: if
//! containerd is down the FIFO fills up, and a blocked log write must never stall the shim.
//! Lines that do not fit are dropped.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing::Level;

/// Points stderr at the bundle's `log` FIFO if there is one, and installs the subscriber.
pub fn init(bundle: &Path, debug: bool) {
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"));
    if let Ok(f) = fifo {
        let _ = crate::sys::dup_onto(&f, libc::STDERR_FILENO);
    }
    let level = if debug { Level::DEBUG } else { Level::INFO };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .with_writer(|| StderrNonBlocking)
        .try_init();
}

/// Writes each formatted line with one `write(2)`; EAGAIN drops it instead of blocking.
struct StderrNonBlocking;

impl Write for StderrNonBlocking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One attempt; a full FIFO or a closed reader loses the line, by design.
        let _ = nix::unistd::write(io::stderr(), buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
