//! A 0.3 response on its way out: its head sent with what of its body is there at
//! once, then the rest of the body pumped into the channel the server writes from,
//! while the store that makes it is driven. Both 0.3 paths use it (a fresh store on
//! the loop, and a concurrent instance's).

use http_body_util::BodyExt as _;
use tokio::sync::oneshot;

use crate::runtime::error::RequestError;
use crate::worker::body::ChannelBody;
use crate::worker::run::reply::Head;

/// How long a response head waits for the start of its body .
const FIRST_FLUSH: std::time::Duration = std::time::Duration::from_millis(1);
/// How much body a response head waits for at most.
const PRELOAD_LIMIT: usize = 64 * 1024;

/// Sends a 0.3 response's head, with what of its body comes at once, then pumps the
/// rest of the body into the channel the server writes from.
pub async fn send_and_pump<B>(
    parts: http::response::Parts,
    mut guest_body: B,
    tx: oneshot::Sender<Head>,
) -> Result<(), RequestError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    // A short body usually follows its head within microseconds. Collecting
    // what comes before the head goes out lets hyper write head, body and
    // end in one syscall instead of three; a guest that takes longer gets
    // its head sent after FIRST_FLUSH, and the body streams from there.
    let mut channel = ChannelBody::default();
    let first_flush = tokio::time::sleep(FIRST_FLUSH);
    tokio::pin!(first_flush);
    let mut preloaded = 0;
    loop {
        tokio::select! {
            biased;
            frame = guest_body.frame() => match frame {
                None => {
                    channel.preload_end();
                    break;
                }
                Some(Ok(frame)) => {
                    preloaded += frame.data_ref().map_or(0, |d| d.len());
                    channel.preload(frame);
                    if preloaded >= PRELOAD_LIMIT {
                        break;
                    }
                }
                Some(Err(e)) => {
                    return Err(RequestError::GuestError(format!(
                        "response body failed: {e:?}"
                    )));
                }
            },
            () = &mut first_flush => break,
        }
    }
    let complete = http_body::Body::is_end_stream(&channel);
    let frames = (!complete).then(|| channel.open());
    if tx
        .send(Ok(http::Response::from_parts(
            parts,
            channel.boxed_unsync(),
        )))
        .is_err()
    {
        return Ok(()); // the client went away
    }
    let Some(frames) = frames else {
        return Ok(());
    };
    while let Some(frame) = guest_body.frame().await {
        match frame {
            Ok(frame) => {
                if frames.send(Some(Ok(frame))).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                return Err(RequestError::GuestError(format!(
                    "response body failed: {e:?}"
                )));
            }
        }
    }
    let _ = frames.send(None).await;
    Ok(())
}
