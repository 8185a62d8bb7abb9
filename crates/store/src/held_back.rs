//! A blob's body passed through while a check watches its bytes, with the
//! last chunk held back until the check passes at the end: a reader never
//! sees the whole of a body that turns out wrong (and by the
//! [`ByteStream`] contract, a stream ending in an error is discarded).

use bytes::Bytes;
use futures::StreamExt;

use crate::{ByteStream, StoreError, StoreResult};

/// What a body must satisfy, watched chunk by chunk.
pub(crate) trait BodyCheck: Send + 'static {
    /// Sees each (non-empty) chunk; an error ends the stream at once, for
    /// what can already be told wrong (more bytes than can be right).
    fn chunk(&mut self, chunk: &Bytes) -> StoreResult<()>;
    /// At the end of the body; an error takes the place of the last chunk.
    fn end(&mut self) -> StoreResult<()>;
}

pub(crate) fn held_back(data: ByteStream, check: impl BodyCheck) -> ByteStream {
    struct State<C> {
        data: ByteStream,
        check: C,
        held: Option<Bytes>,
        done: bool,
    }
    futures::stream::unfold(State { data, check, held: None, done: false }, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.data.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    if let Err(e) = st.check.chunk(&chunk) {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    if let Some(prev) = st.held.replace(chunk) {
                        return Some((Ok(prev), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    if let Err(e) = st.check.end() {
                        return Some((Err(e), st));
                    }
                    return st.held.take().map(|last| (Ok(last), st));
                }
            }
        }
    })
    .fuse()
    .boxed()
}

/// Exactly `want` bytes; `wrong(seen)` is the error otherwise (called with
/// `seen > want` as soon as the body runs long, at the end when short).
pub(crate) struct ExactLength<F> {
    pub want: u64,
    pub seen: u64,
    pub wrong: F,
}

pub(crate) fn exact_length<F>(data: ByteStream, want: u64, wrong: F) -> ByteStream
where
    F: Fn(u64) -> StoreError + Send + 'static,
{
    held_back(data, ExactLength { want, seen: 0, wrong })
}

impl<F: Fn(u64) -> StoreError + Send + 'static> BodyCheck for ExactLength<F> {
    fn chunk(&mut self, chunk: &Bytes) -> StoreResult<()> {
        self.seen += chunk.len() as u64;
        if self.seen > self.want { Err((self.wrong)(self.seen)) } else { Ok(()) }
    }

    fn end(&mut self) -> StoreResult<()> {
        if self.seen != self.want { Err((self.wrong)(self.seen)) } else { Ok(()) }
    }
}
