//! Message statuses: our outbox states and Twilio's whole set, with a rank that
//! only ever moves forward.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a message is. Our own states come first (`pending`, `queued` for
/// dispatched to Pub/Sub, `sending` for claimed by a sender); after Twilio has
/// accepted it, Twilio's statuses take over. `queued` and `sending` mean the
/// same step in both vocabularies, which is why they share one variant each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Pending,
    Skipped,
    Accepted,
    Scheduled,
    Queued,
    Sending,
    Sent,
    PartiallyDelivered,
    Delivered,
    Read,
    Undelivered,
    Failed,
    Canceled,
}

/// The rank of every terminal status: nothing moves a message out of one.
pub const TERMINAL_RANK: i16 = 100;

impl MessageStatus {
    pub const ALL: [MessageStatus; 13] = [
        Self::Pending,
        Self::Skipped,
        Self::Accepted,
        Self::Scheduled,
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::PartiallyDelivered,
        Self::Delivered,
        Self::Read,
        Self::Undelivered,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Skipped => "skipped",
            Self::Accepted => "accepted",
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::PartiallyDelivered => "partially_delivered",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// How far along the message is: `queued < sending < sent < delivered < read`.
    /// Stored beside the status (`messages.status_rank`).
    pub fn rank(self) -> i16 {
        match self {
            Self::Pending => 0,
            Self::Accepted | Self::Scheduled | Self::Queued => 1,
            Self::Sending => 2,
            Self::Sent => 3,
            Self::PartiallyDelivered => 4,
            Self::Delivered => 5,
            Self::Read => 6,
            Self::Skipped | Self::Undelivered | Self::Failed | Self::Canceled => TERMINAL_RANK,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == TERMINAL_RANK
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Self::Undelivered | Self::Failed | Self::Canceled)
    }

    /// A message whose current rank is below this moves to `self`; any other stays.
    ///
    /// A progress status needs a lower rank. A failure ends any message that
    /// has not been delivered yet: once delivered or read, a late failure report
    /// is kept as an event but cannot undo the delivery.
    pub fn advances_below(self) -> i16 {
        if self.is_failure() {
            Self::PartiallyDelivered.rank()
        } else if self == Self::Skipped {
            // Only our own sender skips, and only before anything was sent.
            Self::Sending.rank() + 1
        } else {
            self.rank()
        }
    }

    /// The status after `incoming` is reported for a message at `self`, or
    /// `None` when the report changes nothing (late, duplicate or after the end).
    pub fn advance(self, incoming: MessageStatus) -> Option<MessageStatus> {
        (self.rank() < incoming.advances_below()).then_some(incoming)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of Twilio's or ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for MessageStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == lower)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Compares with the stored name (`status == "sent"`), as rows and tests read.
impl PartialEq<&str> for MessageStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;
    use proptest::prelude::*;

    fn fold(start: MessageStatus, reports: &[MessageStatus]) -> MessageStatus {
        reports
            .iter()
            .fold(start, |cur, &r| cur.advance(r).unwrap_or(cur))
    }

    #[test]
    fn names_round_trip() {
        for s in MessageStatus::ALL {
            assert_eq!(s.as_str().parse::<MessageStatus>().unwrap(), s);
        }
        assert_eq!("DELIVERED".parse::<MessageStatus>().unwrap(), Delivered);
        assert!("receiving_maybe".parse::<MessageStatus>().is_err());
    }

    #[test]
    fn every_ordering_of_progress_ends_in_read() {
        let reports = [Queued, Sent, Delivered, Read];
        let mut perms = vec![];
        permute(&mut reports.to_vec(), 0, &mut perms);
        assert_eq!(perms.len(), 24);
        for p in perms {
            assert_eq!(fold(Sending, &p), Read, "order {p:?}");
        }
    }

    fn permute(v: &mut Vec<MessageStatus>, k: usize, out: &mut Vec<Vec<MessageStatus>>) {
        if k == v.len() {
            out.push(v.clone());
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, out);
            v.swap(k, i);
        }
    }

    #[test]
    fn late_sent_after_delivered_changes_nothing() {
        assert_eq!(Delivered.advance(Sent), None);
        assert_eq!(Delivered.advance(Delivered), None);
        assert_eq!(Sent.advance(Delivered), Some(Delivered));
    }

    #[test]
    fn failures_are_terminal() {
        for end in [Failed, Undelivered, Canceled] {
            assert_eq!(Sent.advance(end), Some(end));
            for later in MessageStatus::ALL {
                assert_eq!(end.advance(later), None, "{end} then {later}");
            }
        }
    }

    #[test]
    fn a_delivery_is_not_undone_by_a_late_failure() {
        assert_eq!(Delivered.advance(Undelivered), None);
        assert_eq!(Read.advance(Failed), None);
    }

    proptest! {
        #[test]
        fn rank_never_decreases_except_into_a_terminal(
            start in proptest::sample::select(MessageStatus::ALL.to_vec()),
            reports in proptest::collection::vec(proptest::sample::select(MessageStatus::ALL.to_vec()), 0..12),
        ) {
            let mut cur = start;
            for r in reports {
                if let Some(next) = cur.advance(r) {
                    prop_assert!(next.rank() > cur.rank() || next.is_terminal());
                    prop_assert!(!cur.is_terminal());
                    cur = next;
                }
            }
        }
    }
}
