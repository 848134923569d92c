//! The `PutShard` body the provider client frames by hand (`put_body`): for any header and
//! any cut of the shard into chunks, the frames must be whole gRPC messages end to end,
//! byte for byte what prost (tonic's encoder) makes of the same messages, decoding to the
//! header and then to data pieces of at most `CHUNK_SIZE` bytes that are the shard in order.
//! Input: [id length, id.., hash length, hash.., length (8 bytes), then (chunk length byte,
//! chunk..)*].
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use sublet_provider::CHUNK_SIZE;
use sublet_provider::proto::{PutShardHeader, PutShardRequest, put_shard_request::Part};
use sublet_provider::put_body::{data_frames, header_frame, split_messages};

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(input.len());
    let (head, rest) = input.split_at(n);
    *input = rest;
    head
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let id_len = take(&mut input, 1).first().copied().unwrap_or(0) as usize;
    let shard_id = String::from_utf8_lossy(take(&mut input, id_len)).into_owned();
    let hash_len = take(&mut input, 1).first().copied().unwrap_or(0) as usize % 40;
    let expected_hash = Bytes::copy_from_slice(take(&mut input, hash_len));
    let mut length = [0u8; 8];
    let got = take(&mut input, 8);
    length[..got.len()].copy_from_slice(got);
    let header = PutShardHeader {
        shard_id,
        length: u64::from_le_bytes(length),
        expected_hash,
    };
    let mut chunks = Vec::new();
    while !input.is_empty() {
        let n = take(&mut input, 1)[0] as usize;
        chunks.push(Bytes::copy_from_slice(take(&mut input, n)));
    }

    let Ok(first) = header_frame(header.clone()) else {
        return; // only a header over CHUNK_SIZE is refused, and inputs are far smaller
    };
    let mut body = first.to_vec();
    let mut expected = Vec::new();
    let mut push = |m: PutShardRequest| {
        let encoded = m.encode_to_vec();
        expected.push(0);
        expected.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        expected.extend_from_slice(&encoded);
    };
    push(PutShardRequest {
        part: Some(Part::Header(header.clone())),
    });
    for chunk in &chunks {
        for frame in data_frames(chunk.clone()) {
            body.extend_from_slice(&frame);
        }
        push(PutShardRequest {
            part: Some(Part::Data(chunk.clone())),
        });
    }
    assert_eq!(body, expected, "not what tonic would send");

    let messages = split_messages(&body).expect("whole messages end to end");
    assert_eq!(messages.len(), 1 + chunks.len());
    let decoded = PutShardRequest::decode(messages[0]).expect("the header decodes");
    assert_eq!(decoded.part, Some(Part::Header(header)));
    let mut shard = Vec::new();
    for m in &messages[1..] {
        match PutShardRequest::decode(*m).expect("data decodes").part {
            Some(Part::Data(piece)) => {
                assert!(piece.len() <= CHUNK_SIZE);
                shard.extend_from_slice(&piece);
            }
            other => panic!("not a data message: {other:?}"),
        }
    }
    assert_eq!(shard, chunks.concat());
});
