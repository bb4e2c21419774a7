//! Google Cloud plumbing: Pub/Sub push envelopes, CloudEvents as Eventarc
//! delivers them, Cloud Storage object events, and reading objects.

pub mod cloudevent;
pub mod objects;
pub mod pubsub;
pub mod storage_event;

pub use cloudevent::CloudEvent;
pub use objects::{ObjectError, ObjectSource, ObjectsConfig, OpenedObject};
pub use pubsub::{PushEnvelope, PushMessage};
pub use storage_event::{ObjectEvent, ObjectRef};
