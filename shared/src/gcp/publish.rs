//! Publishing send tasks: ids only, the sender re-reads the row.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One send task: the message to claim and send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTask {
    pub message_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
#[error("publishing failed: {0}")]
pub struct PublishError(pub String);

/// Where the fan-out puts send tasks: Pub/Sub in production, an in-process
/// queue in the local stack, a counter in the benchmarks.
pub trait TaskPublisher: Send + Sync + 'static {
    /// Publishes every task; returns once all are accepted, or the first error.
    fn publish(
        &self,
        tasks: &[SendTask],
    ) -> impl std::future::Future<Output = Result<(), PublishError>> + Send;
}

/// One publisher shared by several functions (the local stack's queue serves
/// the fan-out and the events function).
impl<P: TaskPublisher> TaskPublisher for std::sync::Arc<P> {
    async fn publish(&self, tasks: &[SendTask]) -> Result<(), PublishError> {
        P::publish(self, tasks).await
    }
}
