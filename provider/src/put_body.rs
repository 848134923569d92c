//! The request body of a `PutShard` call, framed by hand: the gRPC prefix and protobuf key
//! of each data message are written here and the shard's bytes follow as the `Bytes` they
//! already are, so a shard reaches the connection without being copied into tonic's
//! encode buffer. The provider decodes it like any tonic client's (`tests` check the
//! frames decode to the messages tonic would have sent).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::CHUNK_SIZE;
use crate::proto::{self, put_shard_request::Part};

/// gRPC's message prefix: a compression flag (0: none) and the message length (u32, big-endian).
const PREFIX_LEN: usize = 5;
/// Protobuf key of `PutShardRequest.data`: field 2, length-delimited.
const DATA_KEY: u8 = (2 << 3) | 2;

/// The frame of the first message, the header; small, so encoded by prost.
pub fn header_frame(header: proto::PutShardHeader) -> Result<Bytes, String> {
    let message = proto::PutShardRequest {
        part: Some(Part::Header(header)),
    };
    let len = message.encoded_len();
    if len > CHUNK_SIZE {
        return Err(format!(
            "the PutShard header is {len} bytes, over the {CHUNK_SIZE} a message may carry"
        ));
    }
    let mut out = BytesMut::with_capacity(PREFIX_LEN + len);
    put_prefix(&mut out, len);
    message
        .encode(&mut out)
        .map_err(|e| format!("encoding the PutShard header: {e}"))?;
    Ok(out.freeze())
}

/// The frames of the data messages carrying `chunk`: for each piece of at most
/// [`CHUNK_SIZE`] bytes (what a provider accepts in one message), a prefix (the gRPC
/// prefix, the `data` field's key and length) and then the piece itself, not copied.
pub fn data_frames(chunk: Bytes) -> Vec<Bytes> {
    if chunk.is_empty() {
        return vec![data_prefix(0)];
    }
    let mut frames = Vec::with_capacity(2 * chunk.len().div_ceil(CHUNK_SIZE));
    let mut at = 0;
    while at < chunk.len() {
        let end = (at + CHUNK_SIZE).min(chunk.len());
        frames.push(data_prefix(end - at));
        frames.push(chunk.slice(at..end));
        at = end;
    }
    frames
}

/// What precedes a data piece of `len` (at most [`CHUNK_SIZE`]) bytes.
fn data_prefix(len: usize) -> Bytes {
    let message_len = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
    let mut out = BytesMut::with_capacity(PREFIX_LEN + 1 + 10);
    put_prefix(&mut out, message_len);
    out.put_u8(DATA_KEY);
    prost::encoding::encode_varint(len as u64, &mut out);
    out.freeze()
}

/// `len` is at most [`CHUNK_SIZE`] plus a few bytes (checked by the callers), so it fits.
fn put_prefix(out: &mut BytesMut, len: usize) {
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Splits a gRPC message stream into its messages' bytes (for tests and the fuzz target):
/// `None` unless it is whole, uncompressed messages end to end.
pub fn split_messages(mut body: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < PREFIX_LEN || body[0] != 0 {
            return None;
        }
        let len = u32::from_be_bytes(body[1..PREFIX_LEN].try_into().ok()?) as usize;
        let rest = &body[PREFIX_LEN..];
        if rest.len() < len {
            return None;
        }
        out.push(&rest[..len]);
        body = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(id: &str, length: u64, hash: &[u8]) -> proto::PutShardHeader {
        proto::PutShardHeader {
            shard_id: id.to_string(),
            length,
            expected_hash: Bytes::copy_from_slice(hash),
        }
    }

    /// The body tonic's own encoder would send for these messages.
    fn tonic_body(messages: &[proto::PutShardRequest]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            let encoded = m.encode_to_vec();
            out.push(0);
            out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
            out.extend_from_slice(&encoded);
        }
        out
    }

    fn data(bytes: Bytes) -> proto::PutShardRequest {
        proto::PutShardRequest {
            part: Some(Part::Data(bytes)),
        }
    }

    #[test]
    fn frames_are_the_bytes_tonic_would_send_and_decode_back() {
        let chunk_sizes = [0, 1, 127, 128, 16_383, 16_384, CHUNK_SIZE - 1, CHUNK_SIZE];
        for size in chunk_sizes {
            let chunk = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>());
            let head = header("bucket/obj.0.3", size as u64, &[7; 32]);
            let mut body = header_frame(head.clone()).unwrap().to_vec();
            for frame in data_frames(chunk.clone()) {
                body.extend_from_slice(&frame);
            }
            let expected = tonic_body(&[
                proto::PutShardRequest {
                    part: Some(Part::Header(head)),
                },
                data(chunk.clone()),
            ]);
            assert_eq!(body, expected, "chunk of {size} bytes");
            let messages = split_messages(&body).unwrap();
            assert_eq!(messages.len(), 2);
            let decoded = proto::PutShardRequest::decode(messages[1]).unwrap();
            assert_eq!(decoded, data(chunk));
        }
    }

    #[test]
    fn a_chunk_over_the_message_limit_goes_in_several_messages_without_copying() {
        let size = 2 * CHUNK_SIZE + 3;
        let chunk = Bytes::from(vec![9u8; size]);
        let frames = data_frames(chunk.clone());
        assert_eq!(frames.len(), 6);
        // The pieces are the chunk's own memory.
        for (piece, at) in frames
            .iter()
            .skip(1)
            .step_by(2)
            .zip([0, CHUNK_SIZE, 2 * CHUNK_SIZE])
        {
            assert_eq!(piece.as_ptr(), chunk[at..].as_ptr());
        }
        let body: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let lens: Vec<usize> = split_messages(&body)
            .unwrap()
            .into_iter()
            .map(|m| match proto::PutShardRequest::decode(m).unwrap().part {
                Some(Part::Data(d)) => d.len(),
                other => panic!("not data: {other:?}"),
            })
            .collect();
        assert_eq!(lens, [CHUNK_SIZE, CHUNK_SIZE, 3]);
    }

    #[test]
    fn an_oversized_header_is_refused_by_name() {
        let head = header(&"x".repeat(CHUNK_SIZE + 1), 1, &[]);
        let err = header_frame(head).unwrap_err();
        assert!(err.contains("PutShard header"), "{err}");
    }
}
