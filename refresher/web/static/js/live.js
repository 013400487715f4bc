// Live state of a job: Server-Sent Events from /api/jobs/<id>/events while it
// runs, and polling of its status when a stream cannot be kept open.

import { getJSON } from './api.js';
import { isFinal } from './format.js';

const STREAM_FAILURES_BEFORE_GIVING_UP = 3;

// Calls onUpdate(job) with every new state until the job is final; calls
// onFailure() once if the stream cannot be kept open. Returns close().
export function streamJob(jobId, { onUpdate, onGone, onFailure }) {
  if (!('EventSource' in window)) {
    onFailure();
    return () => {};
  }
  const source = new EventSource(`/api/jobs/${encodeURIComponent(jobId)}/events`);
  let failures = 0;
  let closed = false;
  const close = () => {
    closed = true;
    source.close();
  };
  source.addEventListener('message', (event) => {
    failures = 0;
    const job = JSON.parse(event.data);
    onUpdate(job);
    if (isFinal(job.status)) close();
  });
  source.addEventListener('deleted', () => {
    close();
    onGone();
  });
  source.addEventListener('error', () => {
    if (closed) return;
    failures += 1;
    if (source.readyState === EventSource.CLOSED || failures >= STREAM_FAILURES_BEFORE_GIVING_UP) {
      close();
      onFailure();
    }
  });
  return close;
}

// Follows one job until it is final: a stream first, polling if that fails.
export function followJob(jobId, { onUpdate, onGone, onError, pollSeconds = 3 }) {
  let stopped = false;
  let timer = null;
  let closeStream = () => {};
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    closeStream();
  };
  const poll = async () => {
    if (stopped) return;
    try {
      const job = await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`);
      onUpdate(job);
      onError(null);
      if (isFinal(job.status)) {
        stop();
        return;
      }
    } catch (error) {
      if (error.status === 404) {
        stop();
        onGone();
        return;
      }
      onError(error);
    }
    if (!stopped) timer = setTimeout(poll, pollSeconds * 1000);
  };
  closeStream = streamJob(jobId, {
    onUpdate: (job) => {
      onUpdate(job);
      if (isFinal(job.status)) stop();
    },
    onGone: () => {
      stop();
      onGone();
    },
    onFailure: poll,
  });
  return stop;
}
