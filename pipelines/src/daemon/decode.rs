//! Message values to records, and dead letters. A batch's values are decoded on the
//! threads of [`crate::decode::pool`].

use anning_detector::{Enricher, Record, RecordBuilder};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

use super::{Out, Topic};
use crate::decode::Bad;
pub(super) use crate::decode::pool::{CHUNK, Decoded, Decoders};

/// Decodes one message value (a JSON object, the record contract).
pub(super) fn decode(payload: Option<&[u8]>, b: &mut RecordBuilder, en: Enricher<'_>) -> Result<Record, Bad> {
    crate::decode::pool::decode_value(payload.unwrap_or_default(), "message", b, en)
}

pub(super) fn dead_letter(m: &BorrowedMessage<'_>, reason: &str, detail: &str, col: Option<u64>) -> Out {
    dead_letter_of(
        (m.topic(), m.partition(), m.offset()),
        m.key().unwrap_or_default(),
        m.payload().unwrap_or_default(),
        (reason, detail, col),
    )
}

/// A dead letter: the original key and bytes, with the reason, detail, source
/// (`topic/partition@offset`) and column as headers.
pub(super) fn dead_letter_of(
    (topic, partition, offset): (&str, i32, i64),
    key: &[u8],
    payload: &[u8],
    (reason, detail, col): (&str, &str, Option<u64>),
) -> Out {
    let mut headers = vec![
        ("anning.reason", reason.as_bytes().to_vec()),
        ("anning.detail", detail.as_bytes().to_vec()),
        ("anning.source", format!("{topic}/{partition}@{offset}").into_bytes()),
    ];
    if let Some(c) = col {
        headers.push(("anning.col", c.to_string().into_bytes()));
    }
    Out {
        topic: Topic::Dlq,
        key: key.to_vec(),
        payload: payload.to_vec(),
        headers,
        action: None,
    }
}
