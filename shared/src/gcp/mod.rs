//! Google Cloud edges: the Pub/Sub push envelope the sender receives, and the
//! publisher the fan-out sends tasks with.

pub mod publish;
pub mod pubsub;
pub mod push;

pub use publish::{PublishError, SendTask, TaskPublisher};
pub use pubsub::{PubSubConfig, PubSubPublisher};
pub use push::{PushEnvelope, PushError};
