//! The streaming body: writes prepared events with real delays, injects faults, bills the
//! content actually written and notices clients that go away.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use crate::behavior::StreamFault;
use crate::state::{LedgerSlot, MockHandle};

/// One event of a stream, already encoded (`data: ...\n\n`, `event: ...`, a JSON array element).
pub(crate) struct Ev {
    pub(crate) bytes: Bytes,
    /// A content event (text or tool-argument delta): delayed by ttft/itl, counted by faults.
    pub(crate) content: bool,
    /// Reply chars carried (for partial billing).
    pub(crate) chars: usize,
}

impl Ev {
    pub(crate) fn meta(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            content: false,
            chars: 0,
        }
    }

    pub(crate) fn content(bytes: impl Into<Bytes>, chars: usize) -> Self {
        Self {
            bytes: bytes.into(),
            content: true,
            chars,
        }
    }
}

/// Everything the driver needs.
pub(crate) struct StreamSpec {
    pub(crate) events: Vec<Ev>,
    pub(crate) fault: Option<StreamFault>,
    /// Written by `malformed_after`.
    pub(crate) malformed: Bytes,
    /// Written by `error_event_after`.
    pub(crate) error_event: Bytes,
    pub(crate) ttft_ms: u64,
    pub(crate) itl_ms: u64,
    pub(crate) split: bool,
    /// Completion tokens billed once every content event is out.
    pub(crate) completion_tokens: u32,
}

/// Marks the stream finished; if dropped unfinished, the client went away.
struct Guard {
    h: MockHandle,
    slot: Option<LedgerSlot>,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.finished {
            // The ledger entry keeps its partial completion tokens and `completed: false`.
            self.h.count_disconnect();
        }
    }
}

struct Driver {
    spec: StreamSpec,
    /// Next event to write.
    pos: usize,
    /// Byte offset inside `events[pos]` while writing it in pieces.
    offset: usize,
    pieces: usize,
    /// Index of the event before which the fault fires.
    fault_at: Option<usize>,
    contents_written: usize,
    chars_written: usize,
    total_chars: usize,
    /// A fault replaced the tail: the stream cannot complete.
    incomplete: bool,
    ended: bool,
    guard: Guard,
}

/// Builds the response body for a stream. `slot` is the ledger entry billed so far with the
/// prompt tokens only.
pub(crate) fn body(h: MockHandle, slot: Option<LedgerSlot>, mut spec: StreamSpec) -> Body {
    let total_chars = spec
        .events
        .iter()
        .filter(|e| e.content)
        .map(|e| e.chars)
        .sum();
    let fault_at = spec.fault.map(|f| fault_index(&spec.events, f.after()));
    if fault_at.is_none() {
        spec.fault = None;
    }
    let driver = Driver {
        spec,
        pos: 0,
        offset: 0,
        pieces: 0,
        fault_at,
        contents_written: 0,
        chars_written: 0,
        total_chars,
        incomplete: false,
        ended: false,
        guard: Guard {
            h,
            slot,
            finished: false,
        },
    };
    let stream = futures_util::stream::unfold(driver, |mut d| async move {
        let item = d.next().await?;
        Some((item, d))
    });
    Body::from_stream(stream)
}

/// The event index after the n-th content event (n clamped to the number of content events;
/// n = 0: before the first content event).
fn fault_index(events: &[Ev], n: usize) -> usize {
    let mut seen = 0;
    let mut last_content_end = None;
    for (i, ev) in events.iter().enumerate() {
        if ev.content {
            if seen == n {
                return i;
            }
            seen += 1;
            last_content_end = Some(i + 1);
        }
    }
    last_content_end.unwrap_or(events.len())
}

/// Output tokens billed once `written` of `total` reply chars are out.
fn partial_tokens(full: u32, written: usize, total: usize) -> u32 {
    if written >= total {
        return full;
    }
    let num = u64::from(full) * written as u64;
    let den = total as u64;
    u32::try_from(num.div_ceil(den)).unwrap_or(full)
}

impl Driver {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.ended {
                return None;
            }
            if self.offset > 0 {
                tokio::task::yield_now().await;
                return Some(Ok(self.next_piece()));
            }
            if self.fault_at == Some(self.pos) {
                self.fault_at = None;
                let fault = self.spec.fault.take()?;
                match fault {
                    StreamFault::CutAfter(_) => {
                        self.finish(false);
                        return None;
                    }
                    StreamFault::StallAfter(_) => {
                        std::future::pending::<()>().await;
                    }
                    StreamFault::MalformedAfter(_) | StreamFault::ErrorEventAfter(_) => {
                        let bytes = if matches!(fault, StreamFault::MalformedAfter(_)) {
                            self.spec.malformed.clone()
                        } else {
                            self.spec.error_event.clone()
                        };
                        self.spec.events.truncate(self.pos);
                        self.spec.events.push(Ev::meta(bytes));
                        self.incomplete = true;
                        continue;
                    }
                    StreamFault::AbortAfter(_) => {
                        // Let the connection flush what was written (headers included) first,
                        // so the client sees a body broken off, not a missing response.
                        tokio::task::yield_now().await;
                        self.finish(false);
                        return Some(Err(std::io::Error::other("mock: stream aborted")));
                    }
                }
            }
            let Some(ev) = self.spec.events.get(self.pos) else {
                self.finish(!self.incomplete);
                return None;
            };
            if ev.content {
                let ms = if self.contents_written == 0 {
                    self.spec.ttft_ms
                } else {
                    self.spec.itl_ms
                };
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            if self.spec.split {
                return Some(Ok(self.next_piece()));
            }
            let bytes = ev.bytes.clone();
            self.event_written();
            return Some(Ok(bytes));
        }
    }

    /// The next 1-3 byte piece of the current event.
    fn next_piece(&mut self) -> Bytes {
        let Some(ev) = self.spec.events.get(self.pos) else {
            return Bytes::new();
        };
        let size = 1 + self.pieces % 3;
        self.pieces += 1;
        let end = (self.offset + size).min(ev.bytes.len());
        let piece = ev.bytes.slice(self.offset..end);
        if end >= ev.bytes.len() {
            self.offset = 0;
            self.event_written();
        } else {
            self.offset = end;
        }
        piece
    }

    /// Book-keeping once `events[pos]` is fully handed to the connection.
    fn event_written(&mut self) {
        let Some(ev) = self.spec.events.get(self.pos) else {
            return;
        };
        let (content, chars) = (ev.content, ev.chars);
        self.pos += 1;
        if content {
            self.contents_written += 1;
            self.chars_written += chars;
            if let Some(slot) = self.guard.slot {
                let tokens = partial_tokens(
                    self.spec.completion_tokens,
                    self.chars_written,
                    self.total_chars,
                );
                self.guard.h.update_bill(slot, tokens, false);
            }
        }
        if self.pos == self.spec.events.len() && self.fault_at.is_none() {
            // Mark completion as soon as the last byte is handed over, not on the final poll.
            self.finish(!self.incomplete);
        }
    }

    fn finish(&mut self, completed: bool) {
        self.ended = self.pos >= self.spec.events.len() || !completed;
        if self.guard.finished {
            return;
        }
        self.guard.finished = true;
        if completed && let Some(slot) = self.guard.slot {
            self.guard
                .h
                .update_bill(slot, self.spec.completion_tokens, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evs(kinds: &str) -> Vec<Ev> {
        kinds
            .chars()
            .map(|k| {
                if k == 'c' {
                    Ev::content("x", 1)
                } else {
                    Ev::meta("m")
                }
            })
            .collect()
    }

    #[test]
    fn fault_index_counts_content_events() {
        let e = evs("mmcccmm");
        assert_eq!(fault_index(&e, 0), 2);
        assert_eq!(fault_index(&e, 1), 3);
        assert_eq!(fault_index(&e, 3), 5);
        assert_eq!(
            fault_index(&e, 9),
            5,
            "clamped to after the last content event"
        );
        assert_eq!(fault_index(&evs("mm"), 1), 2);
    }

    #[test]
    fn partial_tokens_round_up_and_reach_full() {
        assert_eq!(partial_tokens(10, 0, 40), 0);
        assert_eq!(partial_tokens(10, 1, 40), 1);
        assert_eq!(partial_tokens(10, 20, 40), 5);
        assert_eq!(partial_tokens(10, 40, 40), 10);
        assert_eq!(partial_tokens(7, 3, 3), 7);
    }
}
