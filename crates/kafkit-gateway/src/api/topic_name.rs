//! The schemas of the topic names the API takes in a path or a body: [`TopicName`] (any topic)
//! and [`DeadLetterTopicName`] (a dead-letter topic that names the topic it serves).

use kafkit::redrive::KNOWN_TEMPLATES;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// What a topic name may be, as `kafkit::record::validate_topic` checks it: 1 to 249 letters,
/// digits, `.`, `_` and `-`, but not `.` or `..`. Written without look-around, so that any
/// JSON Schema validator's regex engine reads it.
pub const TOPIC_NAME_PATTERN: &str = r"^([a-zA-Z0-9._-]*[a-zA-Z0-9_-][a-zA-Z0-9._-]*|\.{3,})$";

/// The schema of every topic name the API takes, in a path or a body.
pub struct TopicName;

impl PartialSchema for TopicName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(kafkit::record::MAX_TOPIC_NAME_LEN))
            .pattern(Some(TOPIC_NAME_PATTERN))
            .description(Some(
                "A Kafka topic name: letters, digits, `.`, `_` and `-`, not `.` or `..`",
            ))
            .examples(["orders"])
            .into()
    }
}

impl ToSchema for TopicName {}

/// The name of a dead-letter topic that can be replayed: it follows one of
/// [`kafkit::redrive::KNOWN_TEMPLATES`], which tells the topic it serves (the only destination
/// of its records).
pub struct DeadLetterTopicName;

impl DeadLetterTopicName {
    /// `^(…)$` with one alternative per template, `{topic}` standing for a non-empty name.
    pub fn pattern() -> String {
        let alternatives: Vec<String> = KNOWN_TEMPLATES
            .iter()
            .filter_map(|template| template.split_once("{topic}"))
            // Templates hold topic-name characters only, of which `.` alone means something
            // in a regular expression.
            .map(|(prefix, suffix)| {
                let literal = |text: &str| text.replace('.', r"\.");
                format!("{}[a-zA-Z0-9._-]+{}", literal(prefix), literal(suffix))
            })
            .collect();
        format!("^({})$", alternatives.join("|"))
    }
}

impl PartialSchema for DeadLetterTopicName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(kafkit::record::MAX_TOPIC_NAME_LEN))
            .pattern(Some(DeadLetterTopicName::pattern()))
            .description(Some(
                "A dead-letter topic named after the topic it serves: `{topic}.dlq`, \
                 `{topic}_dlt`, `{topic}-dlt` or `{topic}.DLT`",
            ))
            .examples(["orders.dlq"])
            .into()
    }
}

impl ToSchema for DeadLetterTopicName {}
