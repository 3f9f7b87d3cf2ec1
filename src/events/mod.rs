//! Task events to containerd, in order.
//!
//! Events are queued on one channel at the moment the supervisor decides them (under its table
//! lock), and one task forwards them to containerd's `Events/Forward` over ttrpc at
//! `TTRPC_ADDRESS`. A failed delivery is retried in place: the head of the queue blocks the rest,
//! so a retry can never reorder events (the Go shim re-queues failures behind later events).
//! A gate (`publish_after`) holds the queue until some work is done: an init's exit record is
//! in the bundle before its `TaskExit` leaves.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task as pb;
use containerd_shim_protos::protobuf::well_known_types::{any::Any, timestamp::Timestamp};
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch, Notify};

mod handoff;

use crate::io::StdioConfig;
use crate::mount::Mount;

/// A task event, in domain terms.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    Create {
        container_id: String,
        bundle: String,
        rootfs: Vec<Mount>,
        io: StdioConfig,
        checkpoint: String,
        pid: u32,
    },
    Start {
        container_id: String,
        pid: u32,
    },
    /// `id` is the container id for the init process, the exec id otherwise.
    Exit {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    Delete {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
    ExecAdded {
        container_id: String,
        exec_id: String,
    },
    ExecStarted {
        container_id: String,
        exec_id: String,
        pid: u32,
    },
    Paused {
        container_id: String,
    },
    Resumed {
        container_id: String,
    },
    Oom {
        container_id: String,
    },
}

impl Event {
    pub fn topic(&self) -> &'static str {
        match self {
            Event::Create { .. } => "/tasks/create",
            Event::Start { .. } => "/tasks/start",
            Event::Exit { .. } => "/tasks/exit",
            Event::Delete { .. } => "/tasks/delete",
            Event::ExecAdded { .. } => "/tasks/exec-added",
            Event::ExecStarted { .. } => "/tasks/exec-started",
            Event::Paused { .. } => "/tasks/paused",
            Event::Resumed { .. } => "/tasks/resumed",
            Event::Oom { .. } => "/tasks/oom",
        }
    }

    /// The event as containerd's `Any` (type URL = full message name, as containerd's typeurl
    /// registry expects for its own events).
    pub(crate) fn to_any(&self) -> Any {
        fn pack<M: Message>(name: &str, m: M) -> Any {
            Any {
                type_url: name.to_string(),
                value: m.write_to_bytes().unwrap_or_default(),
                ..Default::default()
            }
        }
        match self.clone() {
            Event::Create {
                container_id,
                bundle,
                rootfs,
                io,
                checkpoint,
                pid,
            } => pack(
                "containerd.events.TaskCreate",
                pb::TaskCreate {
                    container_id,
                    bundle,
                    rootfs: rootfs
                        .into_iter()
                        .map(|m| containerd_shim_protos::types::mount::Mount {
                            type_: m.kind,
                            source: m.source,
                            options: m.options,
                            ..Default::default()
                        })
                        .collect(),
                    io: MessageField::some(pb::TaskIO {
                        stdin: io.stdin,
                        stdout: io.stdout,
                        stderr: io.stderr,
                        terminal: io.terminal,
                        ..Default::default()
                    }),
                    checkpoint,
                    pid,
                    ..Default::default()
                },
            ),
            Event::Start { container_id, pid } => pack(
                "containerd.events.TaskStart",
                pb::TaskStart {
                    container_id,
                    pid,
                    ..Default::default()
                },
            ),
            Event::Exit {
                container_id,
                id,
                pid,
                exit_status,
                exited_at,
            } => pack(
                "containerd.events.TaskExit",
                pb::TaskExit {
                    container_id,
                    id,
                    pid,
                    exit_status,
                    exited_at: MessageField::some(timestamp(exited_at)),
                    ..Default::default()
                },
            ),
            Event::Delete {
                container_id,
                id,
                pid,
                exit_status,
                exited_at,
            } => pack(
                "containerd.events.TaskDelete",
                pb::TaskDelete {
                    container_id,
                    id,
                    pid,
                    exit_status,
                    exited_at: exited_at.map(timestamp).into(),
                    ..Default::default()
                },
            ),
            Event::ExecAdded {
                container_id,
                exec_id,
            } => pack(
                "containerd.events.TaskExecAdded",
                pb::TaskExecAdded {
                    container_id,
                    exec_id,
                    ..Default::default()
                },
            ),
            Event::ExecStarted {
                container_id,
                exec_id,
                pid,
            } => pack(
                "containerd.events.TaskExecStarted",
                pb::TaskExecStarted {
                    container_id,
                    exec_id,
                    pid,
                    ..Default::default()
                },
            ),
            Event::Paused { container_id } => pack(
                "containerd.events.TaskPaused",
                pb::TaskPaused {
                    container_id,
                    ..Default::default()
                },
            ),
            Event::Resumed { container_id } => pack(
                "containerd.events.TaskResumed",
                pb::TaskResumed {
                    container_id,
                    ..Default::default()
                },
            ),
            Event::Oom { container_id } => pack(
                "containerd.events.TaskOOM",
                pb::TaskOOM {
                    container_id,
                    ..Default::default()
                },
            ),
        }
    }
}

/// protobuf `Timestamp` of a wall-clock time.
pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

enum Msg {
    Event(Event, SystemTime),
    /// Answered once every earlier event was delivered or given up on.
    Flush(oneshot::Sender<()>),
    /// Nothing after this leaves before it is answered (or dropped, or [`GATE_LIMIT`] passed):
    /// the init's exit record is written before its `TaskExit` goes out.
    Gate(oneshot::Receiver<()>),
}

/// How long a [`Msg::Gate`] may hold the queue: a write to the bundle that hangs (a wedged
/// disk) must not stop every later event.
const GATE_LIMIT: Duration = Duration::from_secs(10);

/// At most this many events wait for containerd (a few MB at worst). Beyond it the oldest
/// event that is not an exit is dropped: exits are what containerd cannot learn again cheaply
/// (create/start/exec events it can reconstruct with `State`). A create or start whose exit is
/// queued goes only when nothing else can, so a consumer rarely sees an exit without its start.
pub(crate) const QUEUE_LIMIT: usize = 10_000;

/// The (container, process) an event announces the birth of; exits name theirs the same way.
fn born(e: &Event) -> Option<(&str, &str)> {
    match e {
        Event::Create { container_id, .. } | Event::Start { container_id, .. } => {
            Some((container_id, container_id))
        }
        Event::ExecAdded {
            container_id,
            exec_id,
        }
        | Event::ExecStarted {
            container_id,
            exec_id,
            ..
        } => Some((container_id, exec_id)),
        _ => None,
    }
}

/// The queued messages and how many of them are events, kept as they change so publishing
/// never walks the queue (up to [`QUEUE_LIMIT`] long while containerd is away).
#[derive(Default)]
struct Pending {
    items: VecDeque<Msg>,
    /// Number of `Msg::Event` in `items`.
    events: usize,
}

impl Pending {
    fn pop_front(&mut self) -> Option<Msg> {
        let m = self.items.pop_front()?;
        if matches!(m, Msg::Event(..)) {
            self.events -= 1;
        }
        Some(m)
    }
}

/// Appends `msg`, keeping at most `limit` events. Returns the topic of an event dropped to make
/// room, if any. Flush markers are never dropped and do not count.
fn push_bounded(pending: &mut Pending, msg: Msg, limit: usize) -> Option<&'static str> {
    let mut dropped = None;
    let is_event = matches!(msg, Msg::Event(..));
    let items = &mut pending.items;
    if pending.events >= limit && is_event {
        let exits: std::collections::HashSet<(&str, &str)> = items
            .iter()
            .filter_map(|m| match m {
                Msg::Event(
                    Event::Exit {
                        container_id, id, ..
                    },
                    _,
                ) => Some((container_id.as_str(), id.as_str())),
                _ => None,
            })
            .collect();
        let droppable = |m: &Msg, spare_births: bool| match m {
            Msg::Event(Event::Exit { .. }, _) | Msg::Flush(_) | Msg::Gate(_) => false,
            Msg::Event(e, _) => !spare_births || born(e).is_none_or(|k| !exits.contains(&k)),
        };
        let victim = items
            .iter()
            .position(|m| droppable(m, true))
            .or_else(|| items.iter().position(|m| droppable(m, false)));
        match victim {
            Some(i) => {
                if let Some(Msg::Event(e, _)) = items.remove(i) {
                    pending.events -= 1;
                    dropped = Some(e.topic());
                }
            }
            None => {
                // Nothing but exits queued: the newest event goes instead.
                if let Msg::Event(e, _) = &msg {
                    return Some(e.topic());
                }
            }
        }
    }
    items.push_back(msg);
    if is_event {
        pending.events += 1;
    }
    dropped
}

struct Queue {
    items: Mutex<Pending>,
    ready: Notify,
    /// The event being delivered (it has left `items`), kept so an upgrade can carry it.
    current: Mutex<Option<QueuedEvent>>,
    /// An upgrade's handoff holds delivery: nothing leaves and nothing is being sent.
    paused: watch::Sender<bool>,
    /// A delivery call is in flight: the handoff waits for its answer, so an event is never
    /// both delivered and carried.
    sending: watch::Sender<bool>,
}

/// An undelivered event and when it happened: what an upgrade carries to the next image.
pub(crate) type QueuedEvent = (Event, SystemTime);

/// The sending side; cheap to clone. Publishing never blocks.
#[derive(Clone)]
pub(crate) struct EventSink {
    queue: Arc<Queue>,
}

impl EventSink {
    pub(crate) fn publish(&self, event: Event) {
        tracing::debug!(topic = event.topic(), ?event, "queue event");
        self.push(Msg::Event(event, SystemTime::now()));
    }

    /// Publishes `event` once `gate` is answered; events published later wait behind it.
    pub(crate) fn publish_after(&self, gate: oneshot::Receiver<()>, event: Event) {
        tracing::debug!(topic = event.topic(), ?event, "queue event behind a gate");
        let mut items = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        // A gate is not an event: it is never dropped and does not count.
        push_bounded(&mut items, Msg::Gate(gate), QUEUE_LIMIT);
        let dropped = push_bounded(
            &mut items,
            Msg::Event(event, SystemTime::now()),
            QUEUE_LIMIT,
        );
        drop(items);
        if let Some(topic) = dropped {
            tracing::error!(
                topic,
                limit = QUEUE_LIMIT,
                "event queue full; dropped an event"
            );
        }
        self.queue.ready.notify_one();
    }

    fn push(&self, msg: Msg) {
        let dropped = push_bounded(
            &mut self.queue.items.lock().unwrap_or_else(|p| p.into_inner()),
            msg,
            QUEUE_LIMIT,
        );
        if let Some(topic) = dropped {
            tracing::error!(
                topic,
                limit = QUEUE_LIMIT,
                "event queue full; dropped an event"
            );
        }
        self.queue.ready.notify_one();
    }

    /// Waits (at most `limit`) until everything queued so far has left.
    pub(crate) async fn flush(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        self.push(Msg::Flush(tx));
        let _ = tokio::time::timeout(limit, rx).await;
    }

    async fn wait_unpaused(&self) {
        let mut paused = self.queue.paused.subscribe();
        let _ = paused.wait_for(|p| !p).await;
    }

    async fn next(&self) -> Msg {
        loop {
            self.wait_unpaused().await;
            // A notify_one without a waiter leaves a permit, so no wake-up is lost between
            // the check and the wait.
            if let Some(m) = self
                .queue
                .items
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
            {
                return m;
            }
            self.queue.ready.notified().await;
        }
    }
}

/// Where events go.
pub enum Destination {
    /// containerd's ttrpc socket path (`TTRPC_ADDRESS`) and our namespace.
    Containerd { address: String, namespace: String },
    /// Collected in memory (tests).
    Memory(mpsc::UnboundedSender<(String, Event)>),
    /// Nobody listens (CRI-O's VM runtime path gives no address).
    Discard,
}

/// Starts the forwarding task on the current runtime.
pub(crate) fn start(dest: Destination) -> EventSink {
    let sink = EventSink {
        queue: Arc::new(Queue {
            items: Mutex::new(Pending::default()),
            ready: Notify::new(),
            current: Mutex::new(None),
            paused: watch::channel(false).0,
            sending: watch::channel(false).0,
        }),
    };
    tokio::spawn(forward(sink.clone(), dest));
    sink
}

/// Delivers events one at a time, in order. The event being delivered has left the queue, so
/// making room never touches it; a failed delivery is retried until it succeeds.
async fn forward(queue: EventSink, dest: Destination) {
    let mut client: Option<EventsClient> = None;
    loop {
        let (event, at) = match queue.next().await {
            Msg::Event(e, at) => (e, at),
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Msg::Gate(gate) => {
                if tokio::time::timeout(GATE_LIMIT, gate).await.is_err() {
                    tracing::warn!(limit = ?GATE_LIMIT, "gate not opened in time; sending on");
                }
                continue;
            }
        };
        match &dest {
            Destination::Discard => {}
            Destination::Memory(tx) => {
                let _ = tx.send((event.topic().to_string(), event));
            }
            Destination::Containerd { address, namespace } => {
                let req = ForwardRequest {
                    envelope: MessageField::some(Envelope {
                        timestamp: MessageField::some(timestamp(at)),
                        namespace: namespace.clone(),
                        topic: event.topic().to_string(),
                        event: MessageField::some(event.to_any()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let mut backoff = Duration::from_millis(50);
                *queue
                    .queue
                    .current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some((event.clone(), at));
                loop {
                    queue.wait_unpaused().await;
                    queue.queue.sending.send_replace(true);
                    let sent = send(&mut client, address, namespace, &req).await;
                    queue.queue.sending.send_replace(false);
                    match sent {
                        Ok(()) => {
                            *queue
                                .queue
                                .current
                                .lock()
                                .unwrap_or_else(|p| p.into_inner()) = None;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(topic = event.topic(), error = %e, retry_in = ?backoff, "event delivery failed");
                            client = None;
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
        }
    }
}

async fn send(
    client: &mut Option<EventsClient>,
    address: &str,
    namespace: &str,
    req: &ForwardRequest,
) -> Result<(), String> {
    if client.is_none() {
        let addr = if address.contains("://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        let c = ttrpc::asynchronous::Client::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        *client = Some(EventsClient::new(c));
    }
    let c = client.as_ref().expect("connected above");
    let mut ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    ctx.add(
        "containerd-namespace-ttrpc".to_string(),
        namespace.to_string(),
    );
    c.forward(ctx, req)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_event_encodes_containerd_type_and_fields() {
        let at = UNIX_EPOCH + Duration::new(100, 5);
        let e = Event::Exit {
            container_id: "c".into(),
            id: "c".into(),
            pid: 42,
            exit_status: 137,
            exited_at: at,
        };
        assert_eq!(e.topic(), "/tasks/exit");
        let any = e.to_any();
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let back = pb::TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(
            (back.container_id.as_str(), back.pid, back.exit_status),
            ("c", 42, 137)
        );
        assert_eq!((back.exited_at.seconds, back.exited_at.nanos), (100, 5));
    }

    fn start_event(pid: u32) -> Msg {
        Msg::Event(
            Event::Start {
                container_id: "c".into(),
                pid,
            },
            UNIX_EPOCH,
        )
    }

    fn exit_event(pid: u32) -> Msg {
        Msg::Event(
            Event::Exit {
                container_id: "c".into(),
                id: "c".into(),
                pid,
                exit_status: 0,
                exited_at: UNIX_EPOCH,
            },
            UNIX_EPOCH,
        )
    }

    fn pids(q: &Pending) -> Vec<u32> {
        q.items
            .iter()
            .filter_map(|m| match m {
                Msg::Event(Event::Start { pid, .. } | Event::Exit { pid, .. }, _) => Some(*pid),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_non_exit_and_keeps_order() {
        let mut q = Pending::default();
        assert_eq!(push_bounded(&mut q, exit_event(1), 3), None);
        assert_eq!(push_bounded(&mut q, start_event(2), 3), None);
        assert_eq!(push_bounded(&mut q, exit_event(3), 3), None);
        // Full: the start event (oldest non-exit) makes room; exits and order are kept.
        assert_eq!(push_bounded(&mut q, exit_event(4), 3), Some("/tasks/start"));
        assert_eq!(pids(&q), [1, 3, 4]);
        // Only exits left: the newest one is refused rather than an older exit lost.
        assert_eq!(
            push_bounded(&mut q, start_event(5), 3),
            Some("/tasks/start")
        );
        assert_eq!(pids(&q), [1, 3, 4]);
        // Flush markers neither count nor get dropped.
        let (tx, _rx) = oneshot::channel();
        assert_eq!(push_bounded(&mut q, Msg::Flush(tx), 3), None);
        assert_eq!((q.items.len(), q.events), (4, 3));
        // Taking from the front keeps the count.
        assert!(matches!(q.pop_front(), Some(Msg::Event(..))));
        assert_eq!(q.events, 2);
    }

    fn topics(q: &Pending) -> Vec<String> {
        q.items
            .iter()
            .filter_map(|m| match m {
                Msg::Event(e @ Event::Exit { id, .. }, _) => Some(format!("{} {id}", e.topic())),
                Msg::Event(e, _) => born(e).map(|(_, id)| format!("{} {id}", e.topic())),
                Msg::Flush(_) | Msg::Gate(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_spares_the_start_of_a_queued_exit() {
        let ev = |e: Event| Msg::Event(e, UNIX_EPOCH);
        let start = |c: &str| {
            ev(Event::Start {
                container_id: c.into(),
                pid: 1,
            })
        };
        let exit = |c: &str, id: &str| {
            ev(Event::Exit {
                container_id: c.into(),
                id: id.into(),
                pid: 1,
                exit_status: 0,
                exited_at: UNIX_EPOCH,
            })
        };
        let exec_started = |c: &str, id: &str| {
            ev(Event::ExecStarted {
                container_id: c.into(),
                exec_id: id.into(),
                pid: 1,
            })
        };
        let mut q = Pending::default();
        for m in [
            start("a"),
            exec_started("a", "e"),
            exit("a", "e"),
            start("b"),
            exit("a", "a"),
        ] {
            assert_eq!(push_bounded(&mut q, m, 5), None);
        }
        // a's start and exec-started have their exits queued; b's start is the oldest spare.
        assert_eq!(push_bounded(&mut q, start("c"), 5), Some("/tasks/start"));
        assert_eq!(
            topics(&q),
            [
                "/tasks/start a",
                "/tasks/exec-started e",
                "/tasks/exit e",
                "/tasks/exit a",
                "/tasks/start c"
            ]
        );
        assert_eq!(
            push_bounded(&mut q, exit("c", "c"), 5),
            Some("/tasks/start")
        );
        assert_eq!(
            topics(&q),
            [
                "/tasks/start a",
                "/tasks/exec-started e",
                "/tasks/exit e",
                "/tasks/exit a",
                "/tasks/exit c"
            ]
        );
        // Only births of queued exits left: the oldest of them goes before any exit would.
        assert_eq!(
            push_bounded(&mut q, exit("d", "d"), 5),
            Some("/tasks/start")
        );
        assert_eq!(
            topics(&q),
            [
                "/tasks/exec-started e",
                "/tasks/exit e",
                "/tasks/exit a",
                "/tasks/exit c",
                "/tasks/exit d"
            ]
        );
    }

    #[tokio::test]
    async fn memory_destination_keeps_order_and_flush_waits() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = start(Destination::Memory(tx));
        for pid in 0..100 {
            sink.publish(Event::Start {
                container_id: "c".into(),
                pid,
            });
        }
        sink.flush(Duration::from_secs(5)).await;
        for pid in 0..100 {
            let (topic, e) = rx.try_recv().expect("flushed events are delivered");
            assert_eq!(topic, "/tasks/start");
            assert_eq!(
                e,
                Event::Start {
                    container_id: "c".into(),
                    pid
                }
            );
        }
    }
}
