//! Records as librdkafka returned them, on their way from the poll loop to a worker.
//!
//! The poll loop is the consumer's one serial step. Copying a record out of librdkafka (and
//! parsing its headers, which librdkafka does on first access, with an allocation per header)
//! is most of the work per record, so the poll loop hands workers librdkafka's own messages
//! and each worker copies its records on its own thread, in parallel with the next poll.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::Message as _;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;

use super::context::RuntimeContext;
use crate::record::Message;

/// Records of one partition in offset order, still owned by librdkafka.
pub(crate) struct FetchedChunk {
    // Declared first, so dropped first: the messages go back to librdkafka while the consumer
    // that owns them is alive.
    messages: Vec<BorrowedMessage<'static>>,
    /// Their size as [`size`] counts it.
    bytes: usize,
    /// Keeps the consumer (and so the messages' memory) alive as long as the messages.
    _consumer: Arc<StreamConsumer<RuntimeContext>>,
}

impl FetchedChunk {
    /// An empty chunk of records read by `consumer`.
    pub(crate) fn new(consumer: Arc<StreamConsumer<RuntimeContext>>) -> Self {
        FetchedChunk {
            messages: Vec::new(),
            bytes: 0,
            _consumer: consumer,
        }
    }

    /// Adds a message read by this chunk's consumer; returns its size as [`size`] counts it.
    ///
    /// # Safety
    /// `message` must come from the consumer given to [`FetchedChunk::new`]: the chunk keeps
    /// that consumer alive, which is what makes holding the message past its borrow sound.
    pub(crate) unsafe fn push(&mut self, message: BorrowedMessage<'_>) -> usize {
        let size = size(&message);
        // SAFETY: a message borrows its consumer only to outlive it; `_consumer` is that
        // consumer and is dropped after `messages`. librdkafka lets any thread destroy a
        // message (the event that owns it).
        let message = unsafe {
            std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(message)
        };
        self.messages.push(message);
        self.bytes += size;
        size
    }

    /// The first record, which names the chunk's topic and partition.
    pub(crate) fn first(&self) -> Option<&BorrowedMessage<'static>> {
        self.messages.first()
    }

    /// Records in the chunk.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Their size as [`size`] counts it.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Copies the records of `topic` out of librdkafka, in order, and gives the originals back.
    /// A record that cannot be copied as it is (a header key that is not UTF-8, copied lossily)
    /// is noted in `unreadable` with the reason: the runtime refuses it as invalid instead of
    /// handing its handler a record that is not what was produced.
    pub(crate) fn into_messages(
        self,
        topic: &str,
        unreadable: &mut HashMap<i64, String>,
    ) -> std::vec::IntoIter<Message> {
        let FetchedChunk {
            messages,
            bytes: _,
            _consumer,
        } = self;
        let copied: Vec<Message> = messages
            .iter()
            .map(|message| {
                let (message, problem) = Message::checked(message, topic.to_owned());
                if let Some(problem) = problem {
                    unreadable.insert(message.offset, problem);
                }
                message
            })
            .collect();
        drop(messages);
        copied.into_iter()
    }
}

/// What a record counts against its partition's byte bound: its key and value. Headers are
/// left out, as counting them would mean parsing them in the poll loop; they travel in the
/// same fetch buffers as the values, which the bound on records also limits.
pub(crate) fn size(message: &BorrowedMessage<'_>) -> usize {
    message.payload_len() + message.key().map_or(0, <[u8]>::len)
}
