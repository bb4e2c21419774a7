//! Pure domain types: no I/O, parsed at the edge and trusted inside.

pub mod campaign;
pub mod consent;
pub mod event;
pub mod phone;
pub mod quiet_hours;
pub mod status;

pub use campaign::{CampaignAction, CampaignState, InvalidTransition};
pub use consent::{Consent, ConsentKeywords, ConsentSource, Topic};
pub use event::{EventName, EventSource};
pub use phone::{PhoneError, PhoneNumber, Region};
pub use quiet_hours::{QuietHours, QuietHoursError};
pub use status::MessageStatus;
