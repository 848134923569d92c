//! PostObject: browser form uploads. s3s (patched, vendor/README.md) reads the form fields
//! (at most [`MAX_FORM_FIELDS`] bytes before the file, as S3), checks the SigV4 form
//! signature, the policy's expiration and its conditions on the fields, and the key's write
//! grant; the file part then streams into the PutObject path under the same upload budget,
//! never gathered whole. The policy's `content-length-range` is checked here, as the file
//! streams: a file past its maximum is cut off at that byte.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use s3s::dto::*;
use s3s::stream::ByteStream;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Gateway;

/// The most bytes of form fields taken before the file part (S3's limit is 20 KB).
pub const MAX_FORM_FIELDS: usize = 20 << 10;

/// Why a file broke its policy's `content-length-range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeFault {
    #[error("the file is larger than the {max} bytes the policy allows (content-length-range)")]
    TooLarge { max: u64 },
    #[error(
        "the file is {size} bytes, smaller than the {min} bytes the policy asks for (content-length-range)"
    )]
    TooSmall { size: u64, min: u64 },
}

impl RangeFault {
    fn to_s3(self) -> S3Error {
        match self {
            RangeFault::TooLarge { max } => S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!(
                    "Your proposed upload exceeds the maximum allowed size ({max} bytes by the policy's content-length-range)"
                ),
            ),
            RangeFault::TooSmall { size, min } => S3Error::with_message(
                S3ErrorCode::EntityTooSmall,
                format!(
                    "Your proposed upload is smaller than the minimum allowed size ({size} bytes; the policy's content-length-range asks for at least {min})"
                ),
            ),
        }
    }
}

/// A form's file that fails once more than `max` bytes came, or at its end when fewer than
/// `min` did; the fault is left in a slot for the handler to answer with.
struct RangedFile {
    inner: StreamingBlob,
    received: u64,
    min: u64,
    max: u64,
    fault: Arc<OnceLock<RangeFault>>,
}

impl RangedFile {
    fn fail(&mut self, fault: RangeFault) -> Poll<Option<Result<Bytes, s3s::StdError>>> {
        let fault = *self.fault.get_or_init(|| fault);
        Poll::Ready(Some(Err(Box::new(fault))))
    }
}

impl Stream for RangedFile {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(fault) = self.fault.get() {
            return Poll::Ready(Some(Err(Box::new(*fault))));
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.received = self.received.saturating_add(bytes.len() as u64);
                if self.received > self.max {
                    let max = self.max;
                    return self.fail(RangeFault::TooLarge { max });
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(None) if self.received < self.min => {
                let (size, min) = (self.received, self.min);
                self.fail(RangeFault::TooSmall { size, min })
            }
            other => other,
        }
    }
}

impl ByteStream for RangedFile {}

impl Gateway {
    pub(super) async fn do_post_object(
        &self,
        req: S3Request<PostObjectInput>,
    ) -> S3Result<S3Response<PostObjectOutput>> {
        let fault = Arc::new(OnceLock::new());
        let range = req
            .input
            .policy
            .as_ref()
            .and_then(|p| p.content_length_range());
        let req = req.map_input(|mut input| {
            if let Some((min, max)) = range {
                input.body = input.body.take().map(|inner| {
                    StreamingBlob::new(RangedFile {
                        inner,
                        received: 0,
                        min,
                        max,
                        fault: Arc::clone(&fault),
                    })
                });
            }
            s3s::dto::post_object_input_into_put_object_input(input)
        });
        let result = self.do_put_object(req).await;
        if let Some(fault) = fault.get() {
            tracing::info!(reason = %fault, "a form upload broke its policy");
            return Err(fault.to_s3());
        }
        Ok(result?.map_output(s3s::dto::put_object_output_into_post_object_output))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn ranged(chunks: &[usize], min: u64, max: u64) -> (u64, Option<RangeFault>) {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; *n])))
            .collect();
        let fault = Arc::new(OnceLock::new());
        let mut file = RangedFile {
            inner: StreamingBlob::wrap(futures::stream::iter(chunks)),
            received: 0,
            min,
            max,
            fault: Arc::clone(&fault),
        };
        let mut passed = 0;
        while let Some(Ok(b)) = file.next().await {
            passed += b.len() as u64;
        }
        (passed, fault.get().copied())
    }

    #[tokio::test]
    async fn a_file_within_its_range_passes_whole() {
        assert_eq!(ranged(&[3, 4], 7, 7).await, (7, None));
        assert_eq!(ranged(&[], 0, 10).await, (0, None));
    }

    #[tokio::test]
    async fn a_file_past_its_maximum_is_cut_off_at_the_chunk_that_crosses_it() {
        let (passed, fault) = ranged(&[5, 5, 5], 0, 8).await;
        assert_eq!((passed, fault), (5, Some(RangeFault::TooLarge { max: 8 })));
        assert_eq!(*fault.unwrap().to_s3().code(), S3ErrorCode::EntityTooLarge);
    }

    #[tokio::test]
    async fn a_file_short_of_its_minimum_fails_at_its_end() {
        let (passed, fault) = ranged(&[2, 2], 5, 10).await;
        assert_eq!(
            (passed, fault),
            (4, Some(RangeFault::TooSmall { size: 4, min: 5 }))
        );
        assert_eq!(*fault.unwrap().to_s3().code(), S3ErrorCode::EntityTooSmall);
    }
}
