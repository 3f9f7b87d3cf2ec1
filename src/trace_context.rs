//! W3C trace context of a task request, from ttrpc metadata to our log lines and to runc.
//!
//! containerd 2.x sends `traceparent` (and `tracestate`) in each request's ttrpc metadata (its
//! `otelttrpc` client interceptor) when its own request is traced. We export nothing: the
//! trace id goes into the request's span, so every log line of the request names it, and the
//! context goes on to the runtime as the `TRACEPARENT`/`TRACESTATE` environment variables
//! (OpenTelemetry's environment carrier, the form containerd 2.4's Go shim passes to runc and
//! its hooks), so a traced runc or hook can join the trace. No thread, no exporter, nothing at
//! idle.

use std::collections::HashMap;
use std::future::Future;

/// A request's trace context, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `version-traceid-parentid-flags`, e.g. `00-4bf9...4736-00f0...02b7-01`.
    pub traceparent: String,
    /// Vendor entries, passed on untouched when they look sane.
    pub tracestate: Option<String>,
}

/// The longest `tracestate` the W3C spec asks a participant to propagate.
const MAX_TRACESTATE: usize = 512;

tokio::task_local! {
    /// The context of the request whose future is running (see [`scope`]).
    static CURRENT: Option<TraceContext>;
}

impl TraceContext {
    /// The context in ttrpc request metadata, if there is a valid `traceparent`. Keys are
    /// matched without regard to case, as gRPC-style metadata keys are case-insensitive.
    pub fn from_metadata(metadata: &HashMap<String, Vec<String>>) -> Option<TraceContext> {
        let get = |key: &str| {
            metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .and_then(|(_, v)| v.first())
        };
        let traceparent = get("traceparent")?.trim();
        if !valid_traceparent(traceparent) {
            return None;
        }
        let tracestate = get("tracestate")
            .map(|s| s.trim())
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= MAX_TRACESTATE
                    && s.bytes().all(|b| (0x20..0x7f).contains(&b))
            })
            .map(str::to_string);
        Some(TraceContext {
            traceparent: traceparent.to_ascii_lowercase(),
            tracestate,
        })
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The environment a runtime call made for this request carries.
    pub fn env(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once(("TRACEPARENT", self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|s| ("TRACESTATE", s)))
    }
}

/// `version-traceid-parentid-flags` as W3C Trace Context level 1 defines it: two hex digits of
/// version (not `ff`), 32 of trace id and 16 of parent id (neither all zeros), two of flags.
/// A later version may append `-...` fields, which are kept.
fn valid_traceparent(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
    let mut parts = s.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest_ok = version != "00" || parts.next().is_none();
    hex(version, 2)
        && !version.eq_ignore_ascii_case("ff")
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2)
        && rest_ok
}

/// Runs `request` with `context` as the current trace context of its runtime calls.
pub async fn scope<F: Future>(context: Option<TraceContext>, request: F) -> F::Output {
    CURRENT.scope(context, request).await
}

/// The trace context of the request being served, if it has one. `None` outside a request
/// (exit handling, background work).
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn md(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    #[test]
    fn a_valid_traceparent_gives_its_trace_id_and_environment() {
        let c = TraceContext::from_metadata(&md(&[
            ("traceparent", PARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]))
        .unwrap();
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let env: Vec<_> = c.env().collect();
        assert_eq!(
            env,
            [("TRACEPARENT", PARENT), ("TRACESTATE", "congo=t61rcWkgMzE")]
        );
        // Key case does not matter; upper-case hex is normalised.
        let c =
            TraceContext::from_metadata(&md(&[("TraceParent", &PARENT.to_uppercase())])).unwrap();
        assert_eq!((c.traceparent.as_str(), c.tracestate), (PARENT, None));
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        ] {
            let got = TraceContext::from_metadata(&md(&[("traceparent", bad)]));
            // A trailing newline is trimmed like any whitespace, so that one is valid.
            if bad.ends_with('\n') {
                assert!(got.is_some(), "{bad:?}");
            } else {
                assert_eq!(got, None, "{bad:?}");
            }
        }
        // A future version may carry more fields.
        assert!(TraceContext::from_metadata(&md(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        )]))
        .is_some());
        assert_eq!(TraceContext::from_metadata(&md(&[])), None);
        // A tracestate with control characters or beyond the limit is dropped, the parent kept.
        let long = "a=".to_string() + &"b".repeat(MAX_TRACESTATE);
        for state in ["x=\u{7}", long.as_str()] {
            let c =
                TraceContext::from_metadata(&md(&[("traceparent", PARENT), ("tracestate", state)]))
                    .unwrap();
            assert_eq!(c.tracestate, None, "{state:?}");
        }
    }

    #[tokio::test]
    async fn the_context_is_current_only_inside_its_request() {
        let c = TraceContext::from_metadata(&md(&[("traceparent", PARENT)]));
        assert_eq!(current(), None);
        let inside = scope(c.clone(), async { current() }).await;
        assert_eq!(inside, c);
        assert_eq!(scope(None, async { current() }).await, None);
        assert_eq!(current(), None);
    }
}
