//! What each Twilio error means for us: the one table the sender, the status
//! webhook, reconciliation and the API read (DESIGN §3.4, §5).

use serde::Serialize;

/// The recipient has opted out (replied STOP); sending again is refused.
pub const OPTED_OUT: i32 = 21610;
/// Outside the WhatsApp 24-hour window a free-form message is refused.
pub const OUTSIDE_WINDOW: i32 = 63016;

/// What the engine does about a refused or failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reaction {
    /// Not now: send again later with backoff; the attempt counts.
    Retry,
    /// Twilio may hold the message: never send it again before reconciliation
    /// has asked Twilio's Messages API.
    Reconcile,
    /// This message can never be sent: it fails with the code.
    FailMessage,
    /// The person unsubscribed: the message fails and the person is opted out.
    OptOut,
    /// The account cannot send at all (credentials, suspension, daily limits):
    /// recipients are not failed; their messages wait, and repeated holds pause
    /// the campaign.
    HoldAccount,
}

/// One row of the table: a code, what we do about it and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ErrorMeaning {
    pub code: i32,
    pub reaction: Reaction,
    pub meaning: &'static str,
}

const fn row(code: i32, reaction: Reaction, meaning: &'static str) -> ErrorMeaning {
    ErrorMeaning {
        code,
        reaction,
        meaning,
    }
}

/// Every Twilio error code whose meaning changes what we do. A code not here
/// is read from its HTTP status ([`reaction`]).
pub const ERRORS: &[ErrorMeaning] = &[
    // The account.
    row(
        20003,
        Reaction::HoldAccount,
        "authentication failed: wrong or rotated auth token",
    ),
    row(
        20005,
        Reaction::HoldAccount,
        "the account is suspended or not active",
    ),
    row(
        20404,
        Reaction::HoldAccount,
        "the account or resource was not found: wrong account SID",
    ),
    row(
        21606,
        Reaction::HoldAccount,
        "the From number is not a valid sender of this account",
    ),
    row(
        63007,
        Reaction::HoldAccount,
        "no WhatsApp channel for the From address",
    ),
    row(
        63018,
        Reaction::HoldAccount,
        "the WhatsApp sender exceeded its rate limit",
    ),
    row(
        63038,
        Reaction::HoldAccount,
        "the account's daily message limit is reached",
    ),
    row(
        30001,
        Reaction::HoldAccount,
        "the sender's queue overflowed",
    ),
    // Not now.
    row(20429, Reaction::Retry, "too many concurrent requests"),
    row(20500, Reaction::Retry, "Twilio internal error"),
    row(20503, Reaction::Retry, "Twilio is temporarily unavailable"),
    row(
        21611,
        Reaction::Retry,
        "the sender's queue of messages is full",
    ),
    row(14107, Reaction::Retry, "message rate limit exceeded"),
    // The person.
    row(
        OPTED_OUT,
        Reaction::OptOut,
        "the recipient unsubscribed (replied STOP)",
    ),
    // This message.
    row(
        OUTSIDE_WINDOW,
        Reaction::FailMessage,
        "outside the 24-hour window a free-form message is refused",
    ),
    row(21211, Reaction::FailMessage, "the To number is not valid"),
    row(
        21408,
        Reaction::FailMessage,
        "sending to this region is not enabled",
    ),
    row(
        21614,
        Reaction::FailMessage,
        "the To number is not a mobile number",
    ),
    row(
        63003,
        Reaction::FailMessage,
        "the recipient cannot be reached on WhatsApp",
    ),
    row(63024, Reaction::FailMessage, "invalid message recipient"),
    row(
        63032,
        Reaction::FailMessage,
        "the recipient is in a WhatsApp experiment that blocks marketing",
    ),
    row(
        63049,
        Reaction::FailMessage,
        "Meta chose not to deliver this marketing message",
    ),
    row(
        30003,
        Reaction::FailMessage,
        "unreachable destination handset",
    ),
    row(30005, Reaction::FailMessage, "unknown destination handset"),
    row(
        30006,
        Reaction::FailMessage,
        "landline or unreachable carrier",
    ),
    row(
        30007,
        Reaction::FailMessage,
        "filtered as spam by the carrier",
    ),
    row(30008, Reaction::FailMessage, "unknown delivery error"),
];

/// The table's row for `code`.
pub fn meaning(code: i32) -> Option<&'static ErrorMeaning> {
    ERRORS.iter().find(|e| e.code == code)
}

/// What to do about a send Twilio answered with `http_status` (and, when its
/// body said so, `code`). A code in [`ERRORS`] decides; otherwise the status
/// does: 401/403 are the account's, 429 is "not now", a 5xx without a code may
/// have been accepted before it failed, and any other 4xx is about the message.
pub fn reaction(http_status: u16, code: Option<i32>) -> Reaction {
    if let Some(row) = code.and_then(meaning) {
        return row.reaction;
    }
    match http_status {
        401 | 403 => Reaction::HoldAccount,
        429 => Reaction::Retry,
        500.. if code.is_none() => Reaction::Reconcile,
        500.. => Reaction::Retry,
        _ => Reaction::FailMessage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_has_one_row() {
        for (i, a) in ERRORS.iter().enumerate() {
            assert!(
                ERRORS[i + 1..].iter().all(|b| b.code != a.code),
                "{} twice",
                a.code
            );
        }
    }

    #[test]
    fn account_errors_hold_the_account_and_never_fail_a_recipient() {
        assert_eq!(reaction(401, Some(20003)), Reaction::HoldAccount);
        assert_eq!(reaction(401, None), Reaction::HoldAccount);
        assert_eq!(reaction(403, None), Reaction::HoldAccount);
        assert_eq!(reaction(401, Some(20005)), Reaction::HoldAccount);
        assert_eq!(reaction(429, Some(63038)), Reaction::HoldAccount);
        assert_eq!(reaction(400, Some(63018)), Reaction::HoldAccount);
    }

    #[test]
    fn rate_limits_and_coded_server_errors_are_retried() {
        assert_eq!(reaction(429, Some(20429)), Reaction::Retry);
        assert_eq!(reaction(429, None), Reaction::Retry);
        assert_eq!(reaction(503, Some(20503)), Reaction::Retry);
        assert_eq!(reaction(400, Some(21611)), Reaction::Retry);
        assert_eq!(reaction(502, Some(99999)), Reaction::Retry);
    }

    #[test]
    fn a_server_error_without_a_code_is_reconciled_not_retried() {
        assert_eq!(reaction(500, None), Reaction::Reconcile);
        assert_eq!(reaction(502, None), Reaction::Reconcile);
        assert_eq!(reaction(504, None), Reaction::Reconcile);
    }

    #[test]
    fn refusals_about_the_message_fail_it() {
        for code in [21211, OUTSIDE_WINDOW, 63024, 21408, 21614] {
            assert_eq!(reaction(400, Some(code)), Reaction::FailMessage, "{code}");
        }
        assert_eq!(reaction(400, None), Reaction::FailMessage);
        assert_eq!(reaction(400, Some(12345)), Reaction::FailMessage);
    }

    #[test]
    fn an_opted_out_recipient_is_opted_out() {
        assert_eq!(reaction(400, Some(OPTED_OUT)), Reaction::OptOut);
    }

    #[test]
    fn every_row_says_what_it_means() {
        assert!(ERRORS.iter().all(|e| !e.meaning.is_empty()));
        assert_eq!(
            meaning(63038).map(|e| e.reaction),
            Some(Reaction::HoldAccount)
        );
        assert_eq!(meaning(1), None);
    }
}
