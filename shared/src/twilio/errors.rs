//! Twilio error codes that change what we do.

use super::client::SendError;

/// The recipient has opted out (replied STOP); sending again is refused.
pub const OPTED_OUT: i32 = 21610;
/// Outside the WhatsApp 24-hour window a free-form message is refused.
pub const OUTSIDE_WINDOW: i32 = 63016;

/// Codes that say "not now" rather than "never": rate limits and full queues.
const TRANSIENT_CODES: &[i32] = &[
    20429, // too many requests
    20500, // internal server error
    20503, // service unavailable
    21611, // the sender's queue of messages is full
    63018, // WhatsApp rate limit for the sender exceeded
    14107, // message rate limit exceeded
];

/// Sorts a refused send by whether retrying can help.
pub fn classify(http_status: u16, code: Option<i32>, message: String) -> SendError {
    let transient = http_status == 429
        || http_status >= 500
        || code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
    if transient {
        SendError::Transient {
            code,
            message,
            ambiguous: http_status >= 500 && code.is_none(),
        }
    } else {
        SendError::Permanent { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_transient(status: u16, code: Option<i32>) -> bool {
        matches!(
            classify(status, code, String::new()),
            SendError::Transient { .. }
        )
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient() {
        assert!(is_transient(429, Some(20429)));
        assert!(is_transient(429, None));
        assert!(is_transient(500, None));
        assert!(is_transient(503, Some(20503)));
        assert!(is_transient(400, Some(63018)));
        assert!(is_transient(400, Some(21611)));
    }

    #[test]
    fn refusals_about_the_message_are_permanent() {
        for code in [21211, OPTED_OUT, OUTSIDE_WINDOW, 63024, 21408, 21614] {
            assert!(!is_transient(400, Some(code)), "{code}");
        }
        assert!(!is_transient(401, Some(20003)));
    }

    #[test]
    fn a_server_error_without_a_code_may_have_been_accepted() {
        assert!(matches!(
            classify(502, None, String::new()),
            SendError::Transient {
                ambiguous: true,
                ..
            }
        ));
        assert!(matches!(
            classify(429, Some(20429), String::new()),
            SendError::Transient {
                ambiguous: false,
                ..
            }
        ));
    }
}
