//! Signals as readiness on a pipe: signal-hook's handler writes a byte, tokio waits for it.
//!
//! Not `tokio::signal`: its registry keeps a channel for every signal number (65 of them) from
//! the first use on, a cost every idle shim on a node would carry for the three signals the
//! server listens to.

use std::io;
use std::os::fd::IntoRawFd;

use tokio::net::unix::pipe;

/// Deliveries of a set of signals. Several deliveries between two [`Signals::recv`] calls
/// count as one, as with any signal; the handlers are removed on drop.
pub struct Signals {
    rx: pipe::Receiver,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// Installs a handler for each of `signals`. Needs a tokio runtime (the pipe's reader is
    /// registered with it).
    pub fn new(signals: &[i32]) -> io::Result<Signals> {
        let (tx, rx) = pipe::pipe()?;
        let tx = tx.into_nonblocking_fd()?;
        let mut me = Signals {
            rx,
            ids: Vec::new(),
        };
        for &signal in signals {
            // Each registration owns (and closes on removal) its own write end.
            let fd = tx.try_clone()?.into_raw_fd();
            me.ids
                .push(signal_hook::low_level::pipe::register_raw(signal, fd)?);
        }
        Ok(me)
    }

    /// Waits for the next delivery (or one that came since the last call).
    pub async fn recv(&mut self) -> io::Result<()> {
        loop {
            self.rx.readable().await?;
            let mut buf = [0u8; 64];
            let mut got = false;
            loop {
                match self.rx.try_read(&mut buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => got = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn a_signal_wakes_the_reader_and_repeats_coalesce() {
        let mut s = Signals::new(&[libc::SIGUSR2]).unwrap();
        // Nothing delivered yet.
        assert!(tokio::time::timeout(Duration::from_millis(50), s.recv())
            .await
            .is_err());
        for _ in 0..3 {
            signal_hook::low_level::raise(libc::SIGUSR2).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), s.recv())
            .await
            .expect("delivery seen")
            .unwrap();
        // The three were read as one.
        assert!(tokio::time::timeout(Duration::from_millis(50), s.recv())
            .await
            .is_err());
    }
}
