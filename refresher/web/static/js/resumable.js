// Each video goes up as a resumable upload (the tus protocol the server
// speaks at /api/uploads), through tus-js-client (vendor/tus-js-client,
// loaded as a plain script: window.tus). A dropped connection is retried
// from where the server says the upload got to; the upload's address is kept
// in localStorage under the file's fingerprint (name, type, size, date), so
// a file picked again after a reload goes on where it stopped.

import { ApiError, UploadStopped, asSentence, csrfToken, signInAgain } from './api.js';

const CHUNK_BYTES = 10 * 1024 * 1024;  // one PATCH: two whole parts in object storage
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000, 30000];

export const resumableUploads = () => Boolean(window.tus?.isSupported);

function problemFrom(error) {
  const response = error?.originalResponse;
  if (!response) {
    return new ApiError('The upload was interrupted. Check the connection and try again.', 0, null);
  }
  const status = response.getStatus();
  if (status === 401) {
    signInAgain();
    return new ApiError('Your session has ended. Please sign in again.', 401, null);
  }
  let body = null;
  try {
    body = JSON.parse(response.getBody());
  } catch {
    body = null;
  }
  const message = typeof body?.error === 'string'
    ? asSentence(body.error)
    : `The server answered with an error (HTTP ${status}). Please try again.`;
  return new ApiError(message, status, body);
}

// Send one file; `onProgress(sent, total)` as it goes. Returns
// { promise (the upload's id), abort }.
export function sendFile(endpoint, file, onProgress) {
  let upload = null;
  let stopped = false;
  let rejectStopped = null;
  const promise = new Promise((resolve, reject) => {
    rejectStopped = reject;
    upload = new window.tus.Upload(file, {
      endpoint,
      chunkSize: CHUNK_BYTES,
      retryDelays: RETRY_DELAYS,
      headers: { 'X-CSRF-Token': csrfToken },
      metadata: { filename: file.name, filetype: file.type || 'video/mp4' },
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress,
      onSuccess: () => resolve(upload.url.split('/').pop()),
      onError: (error) => reject(problemFrom(error)),
    });
    upload.findPreviousUploads().then((previous) => {
      if (stopped) return;
      if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    }, (error) => reject(problemFrom(error)));
  });
  const abort = () => {
    stopped = true;
    upload?.abort();  // the upload stays on the server: sending the file again goes on from there
    rejectStopped?.(new UploadStopped('The upload was stopped.', 0, null));
  };
  return { promise, abort };
}
