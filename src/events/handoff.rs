//! An upgrade's part of the event queue: delivery held during the handoff, the undelivered
//! events carried to the new image in order, and queued there ahead of anything new.

use std::time::Duration;

use super::{EventSink, Msg, QueuedEvent};

impl EventSink {
    /// Holds delivery (true) for an upgrade's handoff, waiting (at most `limit`) for a call in
    /// flight to be answered; false if one still is. `false` resumes.
    pub(crate) async fn pause(&self, on: bool, limit: Duration) -> bool {
        self.queue.paused.send_replace(on);
        if !on {
            self.queue.ready.notify_one();
            return true;
        }
        let mut sending = self.queue.sending.subscribe();
        let idle = tokio::time::timeout(limit, sending.wait_for(|s| !s))
            .await
            .is_ok();
        idle
    }

    /// The undelivered events, oldest first (delivery must be paused).
    pub(crate) fn export(&self) -> Vec<QueuedEvent> {
        let current = self.queue.current.lock().unwrap_or_else(|p| p.into_inner());
        let items = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        current
            .iter()
            .cloned()
            .chain(items.items.iter().filter_map(|m| match m {
                Msg::Event(e, at) => Some((e.clone(), *at)),
                // A gate is an exit record this image wrote: the handoff waited for every
                // write before the export (`Supervisor::records_written`), so it is open.
                Msg::Flush(_) | Msg::Gate(_) => None,
            }))
            .collect()
    }

    /// Queues events carried from the previous image, ahead of anything new.
    pub(crate) fn import(&self, events: Vec<QueuedEvent>) {
        for (e, at) in events {
            self.push(Msg::Event(e, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::time::Duration;

    /// An upgrade's view: nothing leaves while paused, the export is the queue in order, and
    /// the next image delivers the imported events before anything newer.
    #[tokio::test]
    async fn paused_events_are_exported_in_order_and_delivered_first_after_import() {
        let start_of = |pid| Event::Start {
            container_id: "c".into(),
            pid,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let old = start(Destination::Memory(tx));
        assert!(old.pause(true, Duration::from_secs(1)).await);
        (0..5).for_each(|pid| old.publish(start_of(pid)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(rx.try_recv().is_err(), "an event left while paused");
        let carried = old.export();
        let pids: Vec<_> = carried.iter().map(|(e, _)| e.clone()).collect();
        assert_eq!(pids, (0..5).map(start_of).collect::<Vec<_>>());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let new = start(Destination::Memory(tx));
        new.import(carried);
        new.publish(start_of(5));
        new.flush(Duration::from_secs(5)).await;
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok().map(|(_, e)| e)).collect();
        assert_eq!(got, (0..6).map(start_of).collect::<Vec<_>>());
    }
}
