//! A delivery's id: the record's coordinates `topic/partition/offset`, the same on every
//! attempt, so an endpoint can drop a repeat. The request, the CloudEvent and the status page
//! all name a delivery by it.

use kafkit::Message;

/// `topic/partition/offset`.
pub fn delivery_id(message: &Message) -> String {
    format!("{}/{}/{}", message.topic, message.partition, message.offset)
}
