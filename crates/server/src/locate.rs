//! The localiser thread behind `POST /v1/find`.
//!
//! Why its own thread and queue: the localiser runs the trunk on a whole (letterboxed) image, a
//! far larger forward pass than a logo crop, so it must not hold up the embedding worker's
//! micro-batches; and like the embedding worker it owns its libtorch model, which never leaves
//! the thread. A full queue is refused at once (429), never buffered without bound.

use std::sync::mpsc::{SyncSender, TrySendError};

use image::RgbImage;
use proxima_detect::{Detection, Localiser};
use tokio::sync::oneshot;

use crate::worker::SubmitError;

/// Loads the localiser inside its thread.
pub type LocaliserLoader = Box<dyn FnOnce() -> proxima_detect::Result<Localiser> + Send>;

/// Detections of one job, or why the forward pass failed.
pub type LocateResult = Result<Vec<Detection>, proxima_detect::DetectError>;

struct Job {
    image: RgbImage,
    reply: oneshot::Sender<LocateResult>,
}

/// A cheap handle that queues images for the localiser thread.
#[derive(Clone)]
pub struct LocaliserHandle {
    tx: SyncSender<Job>,
}

impl LocaliserHandle {
    /// Queues one image; the receiver yields its detections (image pixels, best first).
    pub fn submit(&self, image: RgbImage) -> Result<oneshot::Receiver<LocateResult>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Job { image, reply }).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })?;
        Ok(rx)
    }
}

/// Starts the localiser thread, loads the localiser in it, and returns once it is ready.
pub fn spawn(load: LocaliserLoader, capacity: usize) -> Result<LocaliserHandle, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(capacity.max(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("proxima-localiser".into())
        .spawn(move || {
            let loc = match load() {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("loading the localiser: {e}")));
                    return;
                }
            };
            if ready_tx.send(Ok(())).is_err() {
                return;
            }
            while let Ok(job) = rx.recv() {
                let r = loc.detect(&job.image).map(|(d, _)| d);
                let _ = job.reply.send(r);
            }
        })
        .map_err(|e| format!("cannot start the localiser thread: {e}"))?;
    ready_rx.recv().map_err(|_| "the localiser thread stopped while loading".to_string())??;
    Ok(LocaliserHandle { tx })
}
