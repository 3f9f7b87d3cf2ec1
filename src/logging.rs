//! Logging for the server: `tracing` into the bundle's `log` FIFO, which containerd reads and
//! copies into its own log.
//!
//! The FIFO is dup'ed onto stderr (so a panic message lands there too) in non-blocking mode: if
//! containerd is down the FIFO fills up, and a blocked log write must never stall the shim.
//! Lines that do not fit are dropped.
//!
//! The subscriber is our own, not `tracing-subscriber`'s: its span registry preallocates and
//! zeroes a table for 4,096 threads, which every idle shim on a node would carry in memory.
//! The server has two kinds of span (the shim's and one per task RPC) and one thread that
//! logs, so a list of live spans under a mutex does the job. Lines keep `tracing-subscriber`'s
//! plain format: `<RFC 3339 time> <LEVEL> span{fields}:span{fields}: message key=value`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Points stderr at the bundle's `log` FIFO if there is one, and installs the subscriber.
pub fn init(bundle: &Path, debug: bool) {
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"));
    if let Ok(f) = fifo {
        let _ = crate::sys::dup_onto(&f, libc::STDERR_FILENO);
    }
    let max = if debug { Level::DEBUG } else { Level::INFO };
    let _ = tracing::subscriber::set_global_default(Lines::new(max, |line: &str| {
        // One attempt, one write(2): a full FIFO or a closed reader loses the line, by design.
        let _ = nix::unistd::write(io::stderr(), line.as_bytes());
    }));
}

/// A subscriber that writes one line per event through `sink`.
pub struct Lines<W> {
    max: Level,
    spans: Mutex<Vec<Option<SpanData>>>,
    sink: W,
}

struct SpanData {
    name: &'static str,
    /// `key=value` pairs, already formatted.
    fields: String,
    parent: Option<Id>,
    /// Handles to this span, plus one per live child (which names it as parent).
    refs: usize,
}

thread_local! {
    /// The spans this thread has entered, innermost last.
    static ENTERED: RefCell<Vec<Id>> = const { RefCell::new(Vec::new()) };
}

impl<W: Fn(&str) + Send + Sync + 'static> Lines<W> {
    pub fn new(max: Level, sink: W) -> Self {
        Lines {
            max,
            spans: Mutex::new(Vec::new()),
            sink,
        }
    }

    fn spans(&self) -> std::sync::MutexGuard<'_, Vec<Option<SpanData>>> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current() -> Option<Id> {
        ENTERED.with(|e| e.borrow().last().cloned())
    }

    /// Drops one reference to `id`, and to its ancestors as each one is freed.
    fn release(spans: &mut [Option<SpanData>], id: &Id) -> bool {
        let mut next = Some(id.clone());
        let mut closed_first = false;
        let mut first = true;
        while let Some(id) = next.take() {
            let Some(slot) = spans.get_mut(index(&id)) else {
                break;
            };
            let Some(span) = slot.as_mut() else { break };
            span.refs -= 1;
            if span.refs == 0 {
                next = span.parent.take();
                *slot = None;
                closed_first |= first;
            }
            first = false;
        }
        closed_first
    }
}

fn index(id: &Id) -> usize {
    id.into_u64() as usize - 1
}

impl<W: Fn(&str) + Send + Sync + 'static> Subscriber for Lines<W> {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max.into())
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = match attrs.parent() {
            Some(p) => Some(p.clone()),
            None if attrs.is_contextual() => Self::current(),
            None => None,
        };
        let mut spans = self.spans();
        if let Some(p) = parent.as_ref().and_then(|p| spans.get_mut(index(p))) {
            if let Some(p) = p.as_mut() {
                p.refs += 1;
            }
        }
        let data = SpanData {
            name: attrs.metadata().name(),
            fields: fields.0,
            parent,
            refs: 1,
        };
        let at = match spans.iter().position(Option::is_none) {
            Some(free) => {
                spans[free] = Some(data);
                free
            }
            None => {
                spans.push(Some(data));
                spans.len() - 1
            }
        };
        Id::from_u64(at as u64 + 1)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        // Formatted before the lock is taken: a field's Debug may itself log.
        let mut added = Fields::default();
        values.record(&mut added);
        if added.0.is_empty() {
            return;
        }
        if let Some(Some(span)) = self.spans().get_mut(index(span)) {
            if !span.fields.is_empty() {
                span.fields.push(' ');
            }
            span.fields.push_str(&added.0);
        }
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = String::with_capacity(128);
        let meta = event.metadata();
        let _ = write!(line, "{} {:>5} ", Rfc3339(SystemTime::now()), meta.level());
        let leaf = match event.parent() {
            Some(p) => Some(p.clone()),
            None if event.is_contextual() => Self::current(),
            None => None,
        };
        if leaf.is_some() {
            let spans = self.spans();
            let mut scope = Vec::new();
            let mut next = leaf;
            while let Some(Some(span)) = next.and_then(|id| spans.get(index(&id))) {
                scope.push(span);
                next = span.parent.clone();
            }
            for span in scope.iter().rev() {
                line.push_str(span.name);
                if !span.fields.is_empty() {
                    let _ = write!(line, "{{{}}}", span.fields);
                }
                line.push(':');
            }
            if !scope.is_empty() {
                line.push(' ');
            }
        }
        let mut fields = Fields(line);
        event.record(&mut fields);
        let mut line = fields.0;
        line.push('\n');
        (self.sink)(&line);
    }

    fn enter(&self, span: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(span.clone()));
    }

    fn exit(&self, span: &Id) {
        ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            if let Some(at) = e.iter().rposition(|s| s == span) {
                e.remove(at);
            }
        });
    }

    fn clone_span(&self, id: &Id) -> Id {
        if let Some(Some(span)) = self.spans().get_mut(index(id)) {
            span.refs += 1;
        }
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        Self::release(&mut self.spans(), &id)
    }
}

/// Formats fields as `tracing-subscriber` does: the message bare, the rest as `key=value`,
/// separated by spaces.
#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let sep = !self.0.is_empty() && !self.0.ends_with(' ');
        if sep {
            self.0.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.0, "{value:?}")
        } else {
            write!(self.0, "{}={value:?}", field.name())
        };
    }
}

/// UTC time as RFC 3339 with microseconds, e.g. `2026-12-05T02:46:52.123456Z`.
struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, day) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            d.subsec_micros()
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    type Captured = Arc<Mutex<Vec<String>>>;

    fn capture(max: Level) -> (Lines<impl Fn(&str) + Send + Sync>, Captured) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        (
            Lines::new(max, move |l: &str| o.lock().unwrap().push(l.to_string())),
            out,
        )
    }

    #[test]
    fn dates() {
        let at = |s| Rfc3339(UNIX_EPOCH + Duration::from_micros(s)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-05T02:46:52.123456Z
        assert_eq!(at(1_796_438_812_123_456), "2026-12-05T02:46:52.123456Z");
        // A leap day.
        assert_eq!(at(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn lines_carry_level_spans_message_and_fields() {
        let (sub, out) = capture(Level::INFO);
        tracing::subscriber::with_default(sub, || {
            let shim = tracing::info_span!("shim", namespace = "k8s.io", id = "c1");
            let _s = shim.enter();
            tracing::info!(pid = 7, "serving");
            {
                let task = tracing::info_span!("task", rpc = "Create", id = %"c1");
                let _t = task.enter();
                tracing::warn!(error = %"boom", "create failed");
                tracing::debug!("not at info");
            }
            tracing::error!(topic = ?"/tasks/exit", "after");
        });
        let out = out.lock().unwrap();
        assert_eq!(out.len(), 3, "{out:?}");
        let rest = |l: &str| l.split_once(' ').unwrap().1.to_string();
        assert!(
            out[0].starts_with("20") && out[0].ends_with('\n'),
            "{out:?}"
        );
        assert_eq!(
            rest(&out[0]),
            " INFO shim{namespace=\"k8s.io\" id=\"c1\"}: serving pid=7\n"
        );
        assert_eq!(
            rest(&out[1]),
            " WARN shim{namespace=\"k8s.io\" id=\"c1\"}:task{rpc=\"Create\" id=c1}: create failed error=boom\n"
        );
        assert_eq!(
            rest(&out[2]),
            "ERROR shim{namespace=\"k8s.io\" id=\"c1\"}: after topic=\"/tasks/exit\"\n"
        );
    }

    #[test]
    fn closed_spans_are_freed_and_their_slots_reused() {
        let (sub, _out) = capture(Level::DEBUG);
        let sub = Arc::new(sub);
        let dispatch = tracing::Dispatch::from(sub.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            let outer = tracing::info_span!("outer");
            let _o = outer.enter();
            for _ in 0..100 {
                let inner = tracing::info_span!("inner", n = 1);
                let clone = inner.clone();
                inner.in_scope(|| tracing::debug!("x"));
                drop(inner);
                drop(clone);
            }
            // outer and the last inner's slot, reused each time.
            assert_eq!(sub.spans().len(), 2);
            assert_eq!(sub.spans().iter().flatten().count(), 1);
        });
        // The outer span closed too.
        assert_eq!(sub.spans().iter().flatten().count(), 0);
    }

    #[test]
    fn fields_recorded_later_join_the_span() {
        let (sub, out) = capture(Level::INFO);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("task", id = "c1", pid = tracing::field::Empty);
            let _t = span.enter();
            span.record("pid", 42);
            tracing::info!("started");
        });
        let out = out.lock().unwrap();
        assert!(
            out[0].ends_with(" INFO task{id=\"c1\" pid=42}: started\n"),
            "{out:?}"
        );
    }

    #[test]
    fn a_parent_lives_while_a_child_does() {
        let (sub, out) = capture(Level::INFO);
        tracing::subscriber::with_default(sub, || {
            let child = {
                let parent = tracing::info_span!("parent", p = 1);
                let _p = parent.enter();
                tracing::info_span!("child")
            };
            child.in_scope(|| tracing::info!("inside"));
        });
        let out = out.lock().unwrap();
        assert!(
            out[0].ends_with(" INFO parent{p=1}:child: inside\n"),
            "{out:?}"
        );
    }
}
