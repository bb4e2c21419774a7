//! Google Cloud plumbing: Pub/Sub push envelopes and the task publisher,
//! CloudEvents as Eventarc delivers them, Cloud Storage object events, and
//! reading objects.

pub mod cloudevent;
pub mod objects;
pub mod publish;
pub mod pubsub;
pub mod push;
pub mod storage_event;
pub mod uploads;

pub use cloudevent::CloudEvent;
pub use objects::{ObjectError, ObjectSource, ObjectsConfig, OpenedObject};
pub use publish::{PublishError, SendTask, TaskPublisher};
pub use pubsub::{PubSubConfig, PubSubPublisher};
pub use push::{PushEnvelope, PushError, PushMessage};
pub use storage_event::{ObjectEvent, ObjectRef};
