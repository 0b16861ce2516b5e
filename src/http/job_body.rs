//! The reply of a running job as a streamed body. actix-web does not stop a handler when
//! its client disconnects, but it drops a body it cannot write. So once the job runs, the
//! reply goes out as `200` with a body that sends one space per denoising step (JSON allows
//! leading whitespace) and then the JSON document: a client that went away makes the write
//! fail, the body is dropped and with it the `RunningJob`, which cancels the job. A failure
//! after that point is reported in the JSON body (the status is already sent).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use actix_web::HttpResponse;

use super::bridge::{JobResult, RunningJob, Step};
use super::error::ApiError;

/// Turns the job's end into the final JSON document.
pub(crate) type Finish = Box<dyn FnOnce(Result<JobResult, ApiError>) -> Vec<u8>>;

pub(crate) struct JobBody {
    job: RunningJob,
    finish: Option<Finish>,
}

impl MessageBody for JobBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if this.finish.is_none() {
                return Poll::Ready(None);
            }
            match this.job.poll_step(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Step::Waiting) => {}
                Poll::Ready(Step::Working) => {
                    return Poll::Ready(Some(Ok(Bytes::from_static(b" "))))
                }
                Poll::Ready(Step::End(end)) => {
                    let finish = this.finish.take();
                    let doc = finish.map(|f| f(end)).unwrap_or_default();
                    return Poll::Ready(Some(Ok(Bytes::from(doc))));
                }
            }
        }
    }
}

/// Runs `job` to a reply: errors before it runs get their own status; once it runs the
/// reply streams (see the module header). `finish` renders the end either way.
pub(crate) async fn respond(mut job: RunningJob, finish: Finish) -> Result<HttpResponse, ApiError> {
    match job.until_running().await {
        Some(Err(e)) => Err(e),
        Some(Ok(result)) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(finish(Ok(result)))),
        None => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(JobBody {
                job,
                finish: Some(finish),
            })),
    }
}
