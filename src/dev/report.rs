//! Reporters the loop puts between core code and the printer.

use std::sync::Mutex;

use crate::events::{Event, Reporter, RolloutWhat};

/// Sends events over a channel: the build runs on a blocking thread and its events reach
/// the printer through the loop, in order.
pub struct Channel(pub tokio::sync::mpsc::UnboundedSender<Event>);

impl Reporter for Channel {
    fn event(&self, event: Event) {
        let _ = self.0.send(event);
    }
}

/// Passes every event on and keeps the log lines a failed or aborted rollout reported
/// (the failing candidate's last lines), for the loop's `rolled_back` event.
pub struct Tap<'a> {
    pub inner: &'a dyn Reporter,
    pub failure_logs: Mutex<Option<Vec<String>>>,
}

impl<'a> Tap<'a> {
    pub fn new(inner: &'a dyn Reporter) -> Tap<'a> {
        Tap {
            inner,
            failure_logs: Mutex::new(None),
        }
    }

    pub fn take_logs(&self) -> Option<Vec<String>> {
        self.failure_logs.lock().ok()?.take()
    }
}

impl Reporter for Tap<'_> {
    fn event(&self, event: Event) {
        if let Event::Rollout(r) = &event {
            if matches!(r.what, RolloutWhat::Failed | RolloutWhat::Aborted) {
                if let Some(logs) = r.logs.as_ref().filter(|l| !l.is_empty()) {
                    if let Ok(mut kept) = self.failure_logs.lock() {
                        *kept = Some(logs.clone());
                    }
                }
            }
        }
        self.inner.event(event);
    }
}
