//! Reading: a version's bytes streamed back segment by segment, each fetched, checked and
//! decoded from any sufficient set of its shards, within the read budget; shards found
//! corrupt or gone are queued for repair.

use std::ops::Range as ByteRange;
use std::sync::Arc;

use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;

use super::Node;
use super::inflight::ReadGuard;
use crate::datapath::codec::CustomerKey;
use crate::datapath::stripes::ObjectReader;
use crate::error::{Error, Result};
use crate::meta::ObjectVersion;

/// Segment indices and the byte range within each that a plaintext range touches.
fn segment_slices(segments: &[u64], range: &ByteRange<u64>) -> Vec<(usize, ByteRange<usize>)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for (i, &len) in segments.iter().enumerate() {
        let end = start + len;
        if end > range.start && start < range.end {
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            let from = usize::try_from(from).unwrap_or(usize::MAX);
            let to = usize::try_from(to).unwrap_or(usize::MAX);
            out.push((i, from..to));
        }
        start = end;
        if start >= range.end {
            break;
        }
    }
    out
}

/// A stream of an object version's bytes, as GET sends them and copies read them.
pub struct ByteStream(Body);

enum Body {
    /// Everything the read touches, read already: an object kept in metadata, or a range
    /// within one segment (every 4 KiB GET). No task, no channel, no hand-off between
    /// threads; the read's guard goes with the bytes.
    Ready(Option<(Bytes, ReadGuard)>),
    /// Later segments, from the task reading them ahead.
    Streamed(ReceiverStream<std::result::Result<Bytes, std::io::Error>>),
}

impl futures::Stream for ByteStream {
    type Item = std::result::Result<Bytes, std::io::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match &mut self.get_mut().0 {
            // The guard is dropped with the last bytes handed on.
            Body::Ready(rest) => std::task::Poll::Ready(rest.take().map(|(bytes, _)| Ok(bytes))),
            Body::Streamed(rx) => std::pin::Pin::new(rx).poll_next(cx),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            Body::Ready(rest) => {
                let n = usize::from(rest.is_some());
                (n, Some(n))
            }
            Body::Streamed(rx) => futures::Stream::size_hint(rx),
        }
    }
}

impl Node {
    /// Streams `range` of a version. Reads the first segment before returning,
    /// so a dead object gets a proper error instead of a truncated body.
    pub async fn read_range(&self, v: &ObjectVersion, range: ByteRange<u64>) -> Result<ByteStream> {
        self.read_range_keyed(v, range, None).await
    }

    /// [`Node::read_range`] of a version that may be encrypted with a customer's key
    /// (SSE-C): `customer` must then be that key (the S3 layer checks it first and answers
    /// the client's errors).
    pub async fn read_range_keyed(
        &self,
        v: &ObjectVersion,
        range: ByteRange<u64>,
        customer: Option<&CustomerKey>,
    ) -> Result<ByteStream> {
        let name = format!("{}/{}", v.bucket, v.key);
        let size = v.size;
        // Until the stream ends, an overwrite or delete of `v` leaves its shards in place.
        let map = self.providers();
        let guard = self.inflight.start(
            v,
            Box::new(move |layouts| {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    // Shutting down: garbage collection takes them later.
                    return;
                };
                let map = map.clone();
                runtime.spawn(async move {
                    for layout in layouts {
                        crate::datapath::stripes::delete_shards(&layout, |n: &str| {
                            map.get(n).cloned()
                        })
                        .await;
                    }
                });
            }),
        );
        let layout = v
            .layout
            .as_ref()
            .ok_or_else(|| Error::internal(format!("object {name} has no data layout")))?;
        if layout.plain_length() != size {
            return Err(Error::internal(format!(
                "object {name} is unreadable: its layout holds {} bytes, not {size}",
                layout.plain_length()
            )));
        }
        // Every segment of every piece (part), in byte order.
        let mut readers = Vec::new();
        let mut segments = Vec::new();
        let mut lengths = Vec::new();
        for (p, piece) in layout.pieces().enumerate() {
            readers.push(Arc::new(
                ObjectReader::with_customer_key(&self.master, piece.clone(), customer)
                    .map_err(|e| Error::internal(format!("object {name} is unreadable: {e}")))?
                    .with_bad_shard_report(self.bad_shard_report(v, p, piece)),
            ));
            for (i, seg) in piece.segments.iter().enumerate() {
                segments.push((p, i));
                lengths.push(seg.plain_length);
            }
        }
        let slices: Vec<(Arc<ObjectReader>, usize, ByteRange<usize>)> =
            segment_slices(&lengths, &range)
                .into_iter()
                .filter_map(|(n, r)| {
                    let (p, i) = *segments.get(n)?;
                    Some((Arc::clone(readers.get(p)?), i, r))
                })
                .collect();
        let backend_for = self.backend_for();
        // While a segment is fetched and decoded, its shards and the result are in memory
        // (an object kept in metadata fetches nothing: small reads never wait on large ones).
        let budget = self.read_budget.clone();
        let hold = move |reader: &ObjectReader, i: usize| {
            let budget = budget.clone();
            let plain = reader
                .layout()
                .segments
                .get(i)
                .map_or(0, |s| s.plain_length);
            let inline = reader.layout().inline.is_some();
            async move {
                if inline {
                    return Ok(None);
                }
                let bytes = usize::try_from(plain.saturating_mul(2)).unwrap_or(usize::MAX);
                budget.take(bytes).await.map(Some)
            }
        };

        let mut pending = slices.into_iter();
        let first = match pending.next() {
            Some((reader, i, r)) => {
                let held = hold(&reader, i).await?;
                let seg = reader
                    .read_segment(i, &backend_for)
                    .await
                    .map_err(|e| Error::internal(format!("object {name} is unreadable: {e}")))?;
                drop(held);
                Some(slice(seg, r).ok_or_else(|| {
                    Error::internal(format!("object {name} is unreadable: short segment {i}"))
                })?)
            }
            None => None,
        };
        let rest: Vec<_> = pending.collect();
        if rest.is_empty() {
            // Read whole already (one segment, or none): handed on as it is.
            return Ok(ByteStream(Body::Ready(first.map(|bytes| (bytes, guard)))));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(1);
        let backend_for = Arc::new(backend_for);
        let hold = Arc::new(hold);
        let read = move |(reader, i, r): (Arc<ObjectReader>, usize, ByteRange<usize>)| {
            let (backend_for, hold, name) =
                (Arc::clone(&backend_for), Arc::clone(&hold), name.clone());
            async move {
                let held = hold(&reader, i)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let read = reader.read_segment(i, |n: &str| backend_for(n)).await;
                drop(held);
                match read {
                    Ok(seg) => slice(seg, r).ok_or_else(|| {
                        std::io::Error::other(format!(
                            "object {name} is unreadable: short segment {i}"
                        ))
                    }),
                    Err(e) => {
                        tracing::error!(object = %name, error = %e, "object read failed mid-stream");
                        Err(std::io::Error::other(format!(
                            "object {name} is unreadable: {e}"
                        )))
                    }
                }
            }
        };
        tokio::spawn(async move {
            let _guard = guard;
            if let Some(first) = first
                && tx.send(Ok(first)).await.is_err()
            {
                return;
            }
            stream_segments(rest, READ_AHEAD, &tx, read).await;
        });
        Ok(ByteStream(Body::Streamed(ReceiverStream::new(rx))))
    }

    /// Flags shards of piece `piece` of `v` (whose layout is `layout`) that a read found
    /// corrupt or gone, for repair, and counts each against its provider's health.
    fn bad_shard_report(
        &self,
        v: &ObjectVersion,
        piece: usize,
        layout: &crate::datapath::layout::Layout,
    ) -> crate::datapath::stripes::BadShardReport {
        let meta = Arc::clone(&self.meta);
        let health = Arc::clone(self.health());
        let (bucket, key, id) = (v.bucket.clone(), v.key.clone(), v.version_id.clone());
        let ids: Vec<Vec<(String, String)>> = layout
            .segments
            .iter()
            .map(|s| {
                s.shards
                    .iter()
                    .map(|l| (l.shard_id.clone(), l.provider.clone()))
                    .collect()
            })
            .collect();
        Arc::new(move |segment, idx| {
            let Some((shard_id, provider)) = ids.get(segment).and_then(|s| s.get(idx)).cloned()
            else {
                return;
            };
            // Its provider answered with something other than the shard it was given.
            health.record_bad_shard(&provider);
            let meta = Arc::clone(&meta);
            let (bucket, key, id) = (bucket.clone(), key.clone(), id.clone());
            tokio::task::spawn_blocking(move || {
                let now = crate::node::health::now_ms();
                let at = [((piece, segment, idx), shard_id)];
                match meta.mark_bad_shards(&bucket, &key, &id, &at, now) {
                    Ok(()) => tracing::info!(
                        bucket,
                        key,
                        version = id,
                        piece,
                        segment,
                        idx,
                        "shard queued for repair"
                    ),
                    Err(e) => {
                        tracing::warn!(bucket, key, error = %e, "recording a bad shard failed")
                    }
                }
            });
        })
    }
}

/// Segments of one GET read at once, ahead of the one waiting for the client: enough to
/// keep both cores busy on one long GET (fetching one segment's shards while another
/// decodes and opens), few enough that memory per GET stays a small fixed number of
/// segments. Each read also holds its share of the read budget while it runs.
pub const READ_AHEAD: usize = 2;

/// A segment read running on its own task, cancelled when dropped (the client went away).
struct Reading(tokio::task::JoinHandle<std::result::Result<Bytes, std::io::Error>>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the results of `read` over `items` to `tx` in order, with up to `depth` reads in
/// flight (each on its own task, so they use every core). A slow client holds at most
/// `depth` segments here (read or being read) and one in the channel: no read starts
/// until an earlier segment was taken. Stops at the first failed read (after sending its
/// error) or when the receiver is gone (cancelling the reads in flight).
async fn stream_segments<T, F, Fut>(
    items: Vec<T>,
    depth: usize,
    tx: &tokio::sync::mpsc::Sender<std::result::Result<Bytes, std::io::Error>>,
    read: F,
) where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Bytes, std::io::Error>> + Send + 'static,
{
    let mut items = items.into_iter();
    let mut queue = std::collections::VecDeque::with_capacity(depth.max(1));
    loop {
        while queue.len() < depth.max(1) {
            let Some(item) = items.next() else { break };
            queue.push_back(Reading(tokio::spawn(read(item))));
        }
        let Some(mut head) = queue.pop_front() else {
            return;
        };
        let Ok(slot) = tx.reserve().await else {
            return;
        };
        let item = (&mut head.0)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("a segment read failed: {e}"))));
        let failed = item.is_err();
        slot.send(item);
        if failed {
            return;
        }
    }
}

fn slice(seg: Vec<u8>, r: ByteRange<usize>) -> Option<Bytes> {
    if r.end > seg.len() || r.start > r.end {
        return None;
    }
    Some(Bytes::from(seg).slice(r))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;

    use super::{Body, ByteStream, segment_slices, stream_segments};

    /// A segment read that counts how many started and how many run at once.
    fn counting_read(
        started: &Arc<AtomicUsize>,
        running: &Arc<AtomicUsize>,
        most: &Arc<AtomicUsize>,
    ) -> impl Fn(
        usize,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Bytes>> + Send>,
    > + use<> {
        let (started, running, most) = (Arc::clone(started), Arc::clone(running), Arc::clone(most));
        move |i| {
            started.fetch_add(1, Ordering::SeqCst);
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            Box::pin(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if i == 7 {
                    return Err(std::io::Error::other("segment 7 is unreadable"));
                }
                Ok(Bytes::from(vec![i as u8; 3]))
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segments_are_read_ahead_in_order_and_stop_at_the_first_failure() {
        let counters: [Arc<AtomicUsize>; 3] = Default::default();
        let [started, running, most] = &counters;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let read = counting_read(started, running, most);
        let pipe =
            tokio::spawn(async move { stream_segments((0..20).collect(), 3, &tx, read).await });
        let mut got = Vec::new();
        while let Some(item) = rx.recv().await {
            got.push(item.map(|b| b[0]).map_err(|e| e.to_string()));
        }
        pipe.await.unwrap();
        let want: Vec<Result<u8, String>> = (0..7)
            .map(Ok)
            .chain([Err("segment 7 is unreadable".to_string())])
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "three segments were read at once"
        );
        assert!(
            started.load(Ordering::SeqCst) <= 10,
            "nothing past the failure plus the read-ahead"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_holds_at_most_the_read_ahead() {
        let counters: [Arc<AtomicUsize>; 3] = Default::default();
        let [started, running, most] = &counters;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let read = counting_read(started, running, most);
        let pipe =
            tokio::spawn(async move { stream_segments((0..100).collect(), 2, &tx, read).await });
        assert_eq!(rx.recv().await.unwrap().unwrap()[0], 0);
        // The client stops reading: one segment in the channel, two read ahead, no more.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            4,
            "taken 1 + channel 1 + read-ahead 2"
        );
        // It goes away: the pipeline ends and cancels what it had in flight.
        drop(rx);
        tokio::time::timeout(std::time::Duration::from_secs(10), pipe)
            .await
            .expect("the pipeline outlived its client")
            .unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_read_of_one_segment_hands_its_bytes_on_once_and_ends_its_read_with_them() {
        use futures::StreamExt;

        use crate::node::inflight::InFlight;
        let v = crate::meta::ObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            version_id: "v1".into(),
            delete_marker: false,
            size: 5,
            etag: String::new(),
            content_type: None,
            user_metadata: Default::default(),
            last_modified: 0,
            plan: "p".into(),
            layout: None,
            attrs: Default::default(),
        };
        let inflight = InFlight::default();
        let freed = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&freed);
        let guard = inflight.start(
            &v,
            Box::new(move |l| {
                counted.fetch_add(l.len(), Ordering::SeqCst);
            }),
        );
        let mut stream = ByteStream(Body::Ready(Some((Bytes::from_static(b"hello"), guard))));
        assert_eq!(futures::Stream::size_hint(&stream), (1, Some(1)));
        // Overwritten meanwhile: its shards wait for the bytes to be taken.
        let layout = crate::datapath::layout::Layout {
            scheme: crate::datapath::layout::Scheme::Replicas { copies: 1 },
            encryption: crate::datapath::layout::Encryption::None,
            segment_size: 1,
            segments: Vec::new(),
            inline: None,
            parts: Vec::new(),
        };
        assert!(inflight.defer(&v, &layout), "the read is not counted");
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"hello");
        assert_eq!(inflight.reading(), 0, "the read outlives its bytes");
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        assert!(stream.next().await.is_none());
        assert!(stream.next().await.is_none());
        // A read of nothing ends at once.
        let mut empty = ByteStream(Body::Ready(None));
        assert!(empty.next().await.is_none());
    }

    #[test]
    fn slices_touch_only_needed_segments() {
        let segs = [10, 10, 5];
        assert_eq!(
            segment_slices(&segs, &(0..25)),
            vec![(0, 0..10), (1, 0..10), (2, 0..5)]
        );
        assert_eq!(segment_slices(&segs, &(12..14)), vec![(1, 2..4)]);
        assert_eq!(segment_slices(&segs, &(9..11)), vec![(0, 9..10), (1, 0..1)]);
        assert_eq!(segment_slices(&segs, &(24..25)), vec![(2, 4..5)]);
        assert!(segment_slices(&segs, &(0..0)).is_empty());
    }
}
