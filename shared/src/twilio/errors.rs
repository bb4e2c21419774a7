//! Twilio error codes that change what we do.

/// The recipient has opted out (replied STOP); sending again is refused.
pub const OPTED_OUT: i32 = 21610;
